//! Read-only views of the running daemon: the Prometheus endpoint and the
//! `lb status` Unix socket. Both ask the main loop (which owns all state)
//! over a channel and serve its answer; nothing here holds state.

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use anyhow::{Context as _, Result};
use log::{info, warn};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, UnixListener, UnixStream},
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

/// Serves `GET /metrics` (Prometheus text format 0.0.4).
pub async fn serve_metrics(addr: SocketAddr, tx: mpsc::Sender<AdminReq>) -> Result<()> {
    let l = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding gateway.metrics_address {addr}"))?;
    info!("metrics on http://{addr}/metrics");
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    tokio::spawn(async move {
        let mut failed = 0;
        loop {
            let mut s = match l.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    accept_failed("metrics endpoint", &e, &mut failed).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                continue; // dropped: closed
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let _slot = slot;
                // The request head may arrive in pieces: read to its end
                // (2 KiB at most, CLIENT_TIME in all).
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
                let head = format!("HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                let _ = tokio::time::timeout(CLIENT_TIME, async {
                    s.write_all(head.as_bytes()).await?;
                    s.write_all(body.as_bytes()).await
                })
                .await;
            });
        }
    });
    Ok(())
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
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    tokio::spawn(async move {
        let mut failed = 0;
        loop {
            let mut s = match l.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    accept_failed("admin socket", &e, &mut failed).await;
                    continue;
                }
            };
            let uid = s.peer_cred().map(|c| c.uid()).ok();
            if !matches!(uid, Some(u) if u == 0 || u == me) {
                warn!("admin socket: refused a client of uid {uid:?} (root or uid {me} only)");
                let _ = s.try_write(b"permission denied: root or the daemon's user only\n");
                continue;
            }
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                let _ = s.try_write(b"busy: too many clients\n");
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let body = ask(&tx, AdminReq::Status).await;
                let _ = tokio::time::timeout(CLIENT_TIME, s.write_all(body.as_bytes())).await;
            });
        }
    });
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
