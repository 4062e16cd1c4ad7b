//! Read-only views of the running daemon: the Prometheus endpoint and the
//! `lb status` Unix socket. Both ask the main loop (which owns all state)
//! over a channel and serve its answer; nothing here holds state.

use std::{future::Future, net::SocketAddr, path::Path, sync::Arc, time::Duration};

use anyhow::{Context as _, Result};
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

pub enum AdminReq {
    Metrics(oneshot::Sender<String>),
    Status(oneshot::Sender<String>),
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
                L::refuse(&s, busy);
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
    let busy =
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
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
    // The request head may arrive in pieces: read to its end (2 KiB at
    // most, CLIENT_TIME in all).
    let deadline = tokio::time::Instant::now() + CLIENT_TIME;
    let mut buf = [0u8; 2048];
    let mut n = 0;
    while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") && n < buf.len() {
        match tokio::time::timeout_at(deadline, s.read(&mut buf[n..])).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
            Ok(Ok(m)) => n += m,
        }
    }
    let req = String::from_utf8_lossy(&buf[..n]);
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

/// Serves the status table on a Unix socket, to root and the daemon's own
/// user only (checked with SO_PEERCRED; the directory is created 0700 when
/// missing).
pub async fn serve_status(path: &Path, tx: mpsc::Sender<AdminReq>) -> Result<()> {
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir)?;
            let mut perm = std::fs::metadata(dir)?.permissions();
            std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o700);
            std::fs::set_permissions(dir, perm)?;
        }
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
        move |mut s| {
            let tx = tx.clone();
            async move {
                let body = ask(&tx, AdminReq::Status).await;
                let _ = tokio::time::timeout(CLIENT_TIME, s.write_all(body.as_bytes())).await;
            }
        },
    );
    Ok(())
}

/// `lb status`: prints what the daemon's socket answers.
pub async fn status_client(path: &Path) -> Result<String> {
    let mut s = UnixStream::connect(path).await.with_context(|| {
        format!(
            "connecting to {} (is `lb run` running? see gateway.admin_socket)",
            path.display()
        )
    })?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out))
        .await
        .context("no answer from the daemon")??;
    if out.is_empty() {
        warn!("empty status");
    }
    Ok(out)
}
