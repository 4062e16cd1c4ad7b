//! The Prometheus endpoint and the admin API (`lb status`, `lb reload`,
//! `lb targets`), served over HTTP/1.1 by hyper with axum's routing, on
//! TCP (`/metrics`) and on the admin Unix socket. Both ask the main loop
//! (which owns all state) over a channel and serve its answer; nothing here
//! holds state. Each connection is bounded: its request head in size and
//! time, the whole exchange in time, and clients at once per endpoint.

use std::{future::Future, net::SocketAddr, path::Path, sync::Arc, time::Duration};

use anyhow::{bail, Context as _, Result};
use axum::{
    body::Bytes,
    extract::{Query, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post, MethodRouter},
    Router,
};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use log::{info, warn};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream, UnixListener, UnixStream},
    sync::{mpsc, oneshot, Semaphore},
};

use super::elbv2::{ApiError, Call, DescribeRequest, FlowsRequest};

/// Clients served at once by each endpoint; more are closed at once.
const MAX_CLIENTS: usize = 16;
/// How long one client may take to send its request head.
const CLIENT_TIME: Duration = Duration::from_secs(5);
/// How long one connection may last in all (a reload is answered when done).
const CONN_TIME: Duration = Duration::from_secs(60);
/// Request head limit (hyper's smallest buffer); bodies: `MAX_BODY`.
const MAX_HEAD: usize = 8192;
const MAX_BODY: usize = 1 << 20;

/// After a failed accept (e.g. no file descriptor left): wait, so the loop
/// never spins, and say so once in a while.
async fn accept_failed(what: &str, e: &std::io::Error, count: &mut u64) {
    if count.is_multiple_of(100) {
        warn!("{what}: accept failed ({e}); retrying");
    }
    *count += 1;
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// What a client asks the main loop for; the answer is the text to send.
pub enum AdminReq {
    Metrics(oneshot::Sender<String>),
    /// `lb status` (`json`: `lb status --json`).
    Status {
        json: bool,
        tx: oneshot::Sender<String>,
    },
    /// `lb reload`: re-read the config file, answer how it went. `file`:
    /// the file the operator means (refused when it is not the daemon's).
    Reload {
        file: Option<std::path::PathBuf>,
        tx: oneshot::Sender<String>,
    },
    /// `lb targets` and the elbv2-shaped API.
    Api {
        call: Call,
        tx: oneshot::Sender<Result<serde_json::Value, ApiError>>,
    },
}

async fn ask<T>(
    tx: &mpsc::Sender<AdminReq>,
    make: impl FnOnce(oneshot::Sender<T>) -> AdminReq,
) -> Option<T> {
    let (otx, orx) = oneshot::channel();
    tx.send(make(otx)).await.ok()?;
    orx.await.ok()
}

fn shutting_down() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "daemon is shutting down\n").into_response()
}

/// One connection, served by `router` with the limits above.
async fn serve_http<S>(s: S, router: Router)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(CLIENT_TIME)
        .max_buf_size(MAX_HEAD)
        .keep_alive(false)
        .serve_connection(TokioIo::new(s), TowerToHyperService::new(router));
    let _ = tokio::time::timeout(CONN_TIME, conn).await;
}

/// A listening socket whose clients the accept loop serves.
trait Accept: Send + 'static {
    type Stream: Send + 'static;
    fn next(&self) -> impl Future<Output = std::io::Result<Self::Stream>> + Send;
    /// Best effort: a short message to a client that is turned away.
    fn refuse(s: &Self::Stream, msg: &[u8]);
}

impl Accept for TcpListener {
    type Stream = TcpStream;
    async fn next(&self) -> std::io::Result<TcpStream> {
        self.accept().await.map(|(s, _)| s)
    }
    fn refuse(s: &TcpStream, msg: &[u8]) {
        let _ = s.try_write(msg);
    }
}

impl Accept for UnixListener {
    type Stream = UnixStream;
    async fn next(&self) -> std::io::Result<UnixStream> {
        self.accept().await.map(|(s, _)| s)
    }
    fn refuse(s: &UnixStream, msg: &[u8]) {
        let _ = s.try_write(msg);
    }
}

/// Accepts clients for the life of the process, at most `MAX_CLIENTS` at
/// once (`busy` tells the others), each served by `serve` on a task of its
/// own; `admit` may turn one away with a message.
fn accept_loop<L, F, Fut>(
    what: &'static str,
    l: L,
    busy: &'static [u8],
    admit: impl Fn(&L::Stream) -> Result<(), &'static [u8]> + Send + 'static,
    serve: F,
) where
    L: Accept,
    F: Fn(L::Stream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    tokio::spawn(async move {
        let mut failed = 0;
        loop {
            let s = match l.next().await {
                Ok(s) => s,
                Err(e) => {
                    accept_failed(what, &e, &mut failed).await;
                    continue;
                }
            };
            if let Err(msg) = admit(&s) {
                L::refuse(&s, msg);
                continue;
            }
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                if !busy.is_empty() {
                    L::refuse(&s, busy);
                }
                continue;
            };
            let task = serve(s);
            tokio::spawn(async move {
                let _slot = slot;
                task.await;
            });
        }
    });
}

/// Serves `GET /metrics` (OpenMetrics text).
pub async fn serve_metrics(addr: SocketAddr, tx: mpsc::Sender<AdminReq>) -> Result<()> {
    let l = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding gateway.metrics_address {addr}"))?;
    info!("metrics on http://{addr}/metrics");
    let router = Router::new()
        .route("/metrics", get(metrics))
        .fallback(|| async { (StatusCode::NOT_FOUND, "try /metrics\n") })
        .with_state(tx);
    // Beyond the limit a client is closed: it retries, as after any reset.
    let busy = b"";
    accept_loop(
        "metrics endpoint",
        l,
        busy,
        |_| Ok(()),
        move |s| serve_http(s, router.clone()),
    );
    Ok(())
}

async fn metrics(State(tx): State<mpsc::Sender<AdminReq>>) -> Response {
    match ask(&tx, AdminReq::Metrics).await {
        Some(text) => {
            ([(header::CONTENT_TYPE, super::metrics::CONTENT_TYPE)], text).into_response()
        }
        None => shutting_down(),
    }
}

/// Creates `dir` (0700) when missing; refuses one that other users may
/// write (they could take or replace the lock and the socket).
pub fn private_dir(dir: &Path, key: &str) -> Result<()> {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    if !dir.exists() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let md = std::fs::symlink_metadata(dir).with_context(|| format!("{key}: {}", dir.display()))?;
    if !md.is_dir() {
        bail!(
            "{key}: {} is not a directory (a symbolic link is not followed)",
            dir.display()
        );
    }
    let me = unsafe { libc::geteuid() };
    if md.uid() != me && md.uid() != 0 {
        bail!(
            "{key}: {} belongs to uid {}, not to the daemon's user (uid {me}) or root: that user could take the lock or the socket",
            dir.display(),
            md.uid()
        );
    }
    if md.mode() & 0o022 != 0 {
        bail!(
            "{key}: {} is writable by other users (mode {:o}); put the daemon's socket and lock in a directory only its user writes, such as /run/lb (systemd's RuntimeDirectory=lb)",
            dir.display(),
            md.mode() & 0o7777
        );
    }
    Ok(())
}

/// Serves the status table on a Unix socket, to root and the daemon's own
/// user only (checked with SO_PEERCRED; the directory is created 0700 when
/// missing).
pub async fn serve_status(path: &Path, tx: mpsc::Sender<AdminReq>) -> Result<()> {
    if let Some(dir) = path.parent() {
        private_dir(dir, "gateway.admin_socket")?;
    }
    // A socket left by a killed daemon.
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path)
        .with_context(|| format!("binding gateway.admin_socket {}", path.display()))?;
    let me = unsafe { libc::geteuid() };
    let router = admin_router(tx);
    // Others get an HTTP answer that says why, and nothing else.
    let denied = Router::new().fallback(|| async {
        (
            StatusCode::FORBIDDEN,
            "permission denied: root or the daemon's user only\n",
        )
    });
    accept_loop(
        "admin socket",
        l,
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 23\r\nConnection: close\r\n\r\nbusy: too many clients\n",
        |_| Ok(()),
        move |s: UnixStream| {
            let uid = s.peer_cred().map(|c| c.uid()).ok();
            let ok = matches!(uid, Some(u) if u == 0 || u == me);
            if !ok {
                warn!("admin socket: refused a client of uid {uid:?} (root or uid {me} only)");
            }
            serve_http(s, if ok { router.clone() } else { denied.clone() })
        },
    );
    Ok(())
}

/// The admin API (paths under `/v1`; the elbv2-shaped calls are named as
/// the AWS actions).
fn admin_router(tx: mpsc::Sender<AdminReq>) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/reload", post(reload))
        .route("/v1/RegisterTargets", api_post(Call::Register, None))
        .route("/v1/DeregisterTargets", api_post(Call::Deregister, None))
        .route(
            "/v1/DescribeTargetHealth",
            api_post(Call::Describe, Some(DescribeRequest::default)),
        )
        .route(
            "/v1/ModifyTargetGroupAttributes",
            api_post(Call::ModifyAttributes, None),
        )
        .route(
            "/v1/DescribeTargetGroupAttributes",
            api_post(Call::DescribeAttributes, None),
        )
        .route(
            "/v1/ResetTargetGroupAttributes",
            api_post(Call::ResetAttributes, None),
        )
        // The same calls with a `ListenerArn` (the listener's config name).
        .route(
            "/v1/ModifyListenerAttributes",
            api_post(Call::ModifyAttributes, None),
        )
        .route(
            "/v1/DescribeListenerAttributes",
            api_post(Call::DescribeAttributes, None),
        )
        .route(
            "/v1/ResetListenerAttributes",
            api_post(Call::ResetAttributes, None),
        )
        .route("/v1/flows", api_post(Call::Flows, Some(FlowsRequest::default)))
        .route("/v1/explain", api_post(Call::Explain, None))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                "unknown request: GET /v1/status, POST /v1/reload, POST /v1/RegisterTargets, /v1/DeregisterTargets, /v1/DescribeTargetHealth, /v1/ModifyTargetGroupAttributes, /v1/DescribeTargetGroupAttributes, /v1/ResetTargetGroupAttributes, /v1/{Modify,Describe,Reset}ListenerAttributes, /v1/flows, /v1/explain\n",
            )
        })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(tx)
}

#[derive(serde::Deserialize)]
struct StatusQuery {
    format: Option<String>,
}

async fn status(
    State(tx): State<mpsc::Sender<AdminReq>>,
    Query(q): Query<StatusQuery>,
) -> Response {
    let json = q.format.as_deref() == Some("json");
    match ask(&tx, |tx| AdminReq::Status { json, tx }).await {
        Some(text) => text.into_response(),
        None => shutting_down(),
    }
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReloadBody {
    file: Option<std::path::PathBuf>,
}

/// 200 with "ok: ..." when applied, 409 with "error: ..." when not.
async fn reload(State(tx): State<mpsc::Sender<AdminReq>>, body: Bytes) -> Response {
    let req: ReloadBody = match body.is_empty() {
        true => ReloadBody::default(),
        false => match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                return (
                    StatusCode::BAD_REQUEST,
                    format!("error: bad request: {e}\n"),
                )
                    .into_response()
            }
        },
    };
    match ask(&tx, |tx| AdminReq::Reload { file: req.file, tx }).await {
        Some(line) if line.starts_with("ok") => line.into_response(),
        Some(line) => (StatusCode::CONFLICT, line).into_response(),
        None => shutting_down(),
    }
}

fn api_error(status: StatusCode, e: &ApiError) -> Response {
    let body = serde_json::json!({ "Error": e });
    (status, axum::Json(body)).into_response()
}

/// A JSON body in elbv2's shape; a malformed one is a `ValidationError`.
fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Box<Response>> {
    serde_json::from_slice(body).map_err(|e| {
        Box::new(api_error(
            StatusCode::BAD_REQUEST,
            &ApiError::new("ValidationError", format!("request body: {e}")),
        ))
    })
}

async fn call(tx: &mpsc::Sender<AdminReq>, call: Call) -> Response {
    match ask(tx, |tx| AdminReq::Api { call, tx }).await {
        Some(Ok(v)) => axum::Json(v).into_response(),
        Some(Err(e)) if e.code == "InternalFailure" => {
            api_error(StatusCode::INTERNAL_SERVER_ERROR, &e)
        }
        Some(Err(e)) => api_error(StatusCode::BAD_REQUEST, &e),
        None => shutting_down(),
    }
}

/// A POST of the API: its JSON body as `T` (an empty body is `empty()`,
/// where the call has one), made into a call for the main loop.
fn api_post<T>(
    make: fn(T) -> Call,
    empty: Option<fn() -> T>,
) -> MethodRouter<mpsc::Sender<AdminReq>>
where
    T: serde::de::DeserializeOwned + Send + 'static,
{
    post(
        move |State(tx): State<mpsc::Sender<AdminReq>>, body: Bytes| async move {
            let r = match (body.is_empty(), empty) {
                (true, Some(empty)) => Ok(empty()),
                _ => parse::<T>(&body),
            };
            match r {
                Ok(r) => call(&tx, make(r)).await,
                Err(resp) => *resp,
            }
        },
    )
}

/// An answer of the daemon: HTTP status and body.
pub struct Answer {
    pub status: u16,
    pub body: String,
}

/// Sends one request to the daemon's socket (`body`: JSON, or none);
/// returns its answer.
pub async fn request(path: &Path, method: &str, uri: &str, body: Option<String>) -> Result<Answer> {
    use http_body_util::BodyExt as _;
    let s = UnixStream::connect(path).await.with_context(|| {
        format!(
            "connecting to {} (is `lb run` running with this gateway.admin_socket? A socket left by a daemon that died refuses connections; XDP may still forward from its pins, which `lb detach` removes)",
            path.display()
        )
    })?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake::<_, http_body_util::Full<Bytes>>(TokioIo::new(s))
            .await
            .context("talking to the daemon")?;
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, "lb")
        .header(header::CONTENT_TYPE, "application/json")
        .body(http_body_util::Full::new(Bytes::from(
            body.unwrap_or_default(),
        )))?;
    // A reload may take a while (health checks are not waited for).
    let limit = Duration::from_secs(30);
    let resp = tokio::time::timeout(limit, send.send_request(req))
        .await
        .context("no answer from the daemon")?
        .context("the daemon closed the socket without an answer")?;
    let status = resp.status().as_u16();
    let bytes = tokio::time::timeout(limit, resp.into_body().collect())
        .await
        .context("no answer from the daemon")?
        .context("reading the daemon's answer")?
        .to_bytes();
    Ok(Answer {
        status,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    })
}
