//! The Prometheus endpoint and the admin socket (`lb status`, `lb reload`).
//! Both ask the main loop (which owns all state) over a channel and serve
//! its answer; nothing here holds state.

use std::{future::Future, net::SocketAddr, path::Path, sync::Arc, time::Duration};

use anyhow::{bail, Context as _, Result};
use log::{info, warn};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UnixListener, UnixStream},
    sync::{mpsc, oneshot, Semaphore},
};

/// Clients served at once by each endpoint; more are closed at once.
const MAX_CLIENTS: usize = 16;
/// How long one client may take to send its request or read the answer.
const CLIENT_TIME: Duration = Duration::from_secs(5);

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
}

type MakeReq = Box<dyn FnOnce(oneshot::Sender<String>) -> AdminReq + Send>;

/// A request line on the admin socket, as `lb` sends it: `status`,
/// `status json`, `reload [FILE]`.
pub fn parse_request(line: &str) -> Option<MakeReq> {
    let line = line.trim();
    match line.split_once(' ').unwrap_or((line, "")) {
        ("status", "") => Some(Box::new(|tx| AdminReq::Status { json: false, tx })),
        ("status", "json") => Some(Box::new(|tx| AdminReq::Status { json: true, tx })),
        ("reload", file) => {
            let file = (!file.is_empty()).then(|| std::path::PathBuf::from(file));
            Some(Box::new(move |tx| AdminReq::Reload { file, tx }))
        }
        _ => None,
    }
}

async fn ask(
    tx: &mpsc::Sender<AdminReq>,
    make: impl FnOnce(oneshot::Sender<String>) -> AdminReq,
) -> String {
    let (otx, orx) = oneshot::channel();
    if tx.send(make(otx)).await.is_err() {
        return "daemon is shutting down\n".into();
    }
    orx.await.unwrap_or_default()
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

/// Serves `GET /metrics` (Prometheus text format 0.0.4).
pub async fn serve_metrics(addr: SocketAddr, tx: mpsc::Sender<AdminReq>) -> Result<()> {
    let l = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding gateway.metrics_address {addr}"))?;
    info!("metrics on http://{addr}/metrics");
    // Beyond the limit a client is closed: it retries, as after any reset.
    let busy = b"";
    accept_loop(
        "metrics endpoint",
        l,
        busy,
        |_| Ok(()),
        move |s| metrics_client(s, tx.clone()),
    );
    Ok(())
}

/// One HTTP request: `/metrics`, or 404.
async fn metrics_client(mut s: TcpStream, tx: mpsc::Sender<AdminReq>) {
    // The request head may arrive in pieces: read to its end.
    let Some(req) = read_request::<2048>(&mut s, |b| b.windows(4).any(|w| w == b"\r\n\r\n")).await
    else {
        return;
    };
    let path = req.split_whitespace().nth(1).unwrap_or("");
    let (status, ctype, body) = if path == "/metrics" {
        (
            "200 OK",
            "text/plain; version=0.0.4",
            ask(&tx, AdminReq::Metrics).await,
        )
    } else {
        ("404 Not Found", "text/plain", "try /metrics\n".to_string())
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = tokio::time::timeout(CLIENT_TIME, async {
        s.write_all(head.as_bytes()).await?;
        s.write_all(body.as_bytes()).await
    })
    .await;
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
    let admit = move |s: &UnixStream| {
        let uid = s.peer_cred().map(|c| c.uid()).ok();
        if matches!(uid, Some(u) if u == 0 || u == me) {
            return Ok(());
        }
        warn!("admin socket: refused a client of uid {uid:?} (root or uid {me} only)");
        Err(&b"permission denied: root or the daemon's user only\n"[..])
    };
    accept_loop(
        "admin socket",
        l,
        b"busy: too many clients\n",
        admit,
        move |s| admin_client(s, tx.clone()),
    );
    Ok(())
}

/// Reads until `done` says the request is complete, N bytes at most and
/// CLIENT_TIME in all. `None`: the client went away or was too slow. A
/// client that closes its side has sent all it will.
async fn read_request<const N: usize>(
    s: &mut (impl AsyncReadExt + Unpin),
    done: impl Fn(&[u8]) -> bool,
) -> Option<String> {
    let deadline = tokio::time::Instant::now() + CLIENT_TIME;
    let mut buf = [0u8; N];
    let mut n = 0;
    while !done(&buf[..n]) && n < N {
        match tokio::time::timeout_at(deadline, s.read(&mut buf[n..])).await {
            Ok(Ok(0)) => break,
            Ok(Ok(m)) => n += m,
            Ok(Err(_)) | Err(_) => return None,
        }
    }
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// One request line, one answer.
async fn admin_client(mut s: UnixStream, tx: mpsc::Sender<AdminReq>) {
    let Some(line) = read_request::<256>(&mut s, |b| b.contains(&b'\n')).await else {
        return;
    };
    let body = match parse_request(&line) {
        Some(make) => ask(&tx, make).await,
        None => format!(
            "error: unknown request {:?} (status, status json, reload)\n",
            line.trim()
        ),
    };
    let _ = tokio::time::timeout(CLIENT_TIME, s.write_all(body.as_bytes())).await;
}

/// Sends `request` to the daemon's socket; returns its answer.
pub async fn request(path: &Path, request: &str) -> Result<String> {
    let mut s = UnixStream::connect(path).await.with_context(|| {
        format!(
            "connecting to {} (is `lb run` running with this gateway.admin_socket? A socket left by a daemon that died refuses connections; XDP may still forward from its pins, which `lb detach` removes)",
            path.display()
        )
    })?;
    // A refusal (permission, busy) may come before the request is read:
    // a failed write still leaves the answer to read.
    let _ = s.write_all(format!("{request}\n").as_bytes()).await;
    let mut out = Vec::new();
    // A reload may take a while (health checks are not waited for).
    let read = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut out))
        .await
        .context("no answer from the daemon")?;
    // A refusal closes without reading the request: the kernel then resets
    // the connection after the refusal's text, which has been read.
    match read {
        Err(e) if out.is_empty() || e.kind() != std::io::ErrorKind::ConnectionReset => {
            return Err(e).context("reading the daemon's answer")
        }
        _ => {}
    }
    if out.is_empty() {
        bail!("the daemon closed the socket without an answer");
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}
