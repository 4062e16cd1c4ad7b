//! Read-only views of the running daemon: the Prometheus endpoint and the
//! `lb status` Unix socket. Both ask the main loop (which owns all state)
//! over a channel and serve its answer; nothing here holds state.

use std::{net::SocketAddr, path::Path, time::Duration};

use anyhow::{Context as _, Result};
use log::{info, warn};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};

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
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                // The request head may arrive in pieces: read to its end.
                let mut buf = [0u8; 2048];
                let mut n = 0;
                while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") && n < buf.len() {
                    match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf[n..])).await
                    {
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
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(body.as_bytes()).await;
            });
        }
    });
    Ok(())
}

/// Serves the status table on a Unix socket (root-only by default: the
/// directory is created 0700 when missing).
pub async fn serve_status(path: &Path, tx: mpsc::Sender<AdminReq>) -> Result<()> {
    if let Some(dir) = path.parent() {
        if !dir.exists() {
            std::fs::create_dir_all(dir)?;
            std::os::unix::fs::PermissionsExt::set_mode(
                &mut std::fs::metadata(dir)?.permissions(),
                0o700,
            );
        }
    }
    // A socket left by a killed daemon.
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path)
        .with_context(|| format!("binding gateway.admin_socket {}", path.display()))?;
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let body = ask(&tx, AdminReq::Status).await;
                let _ = s.write_all(body.as_bytes()).await;
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
