//! TLS listeners (NLB's): the proxy completes the client's handshake
//! (rustls), picks the target as for every TCP listener (the same ring and
//! hash), optionally speaks TLS to it (`target_tls`), sends a PROXY v2
//! header with the TLS version and SNI when the group asks for one, then
//! moves the bytes both ways. Bytes pass through user memory here: they are
//! decrypted and encrypted, so there is nothing to splice.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use rustls::{pki_types::ServerName, ClientConfig, ServerConfig};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
    sync::Notify,
    time::timeout,
};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::{ppv2, Shared, Snapshot, VipView};

/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A TLS listener as the proxy serves it (replaced whole when its
/// certificates or settings change; open connections keep theirs).
pub struct TlsVip {
    pub acceptor: TlsAcceptor,
    /// `target_tls`: the client config towards the targets.
    pub target: Option<Arc<ClientConfig>>,
}

impl TlsVip {
    pub fn new(server: ServerConfig, target: Option<Arc<ClientConfig>>) -> TlsVip {
        TlsVip {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            target,
        }
    }
}

/// Per listener: handshakes completed, and failed with clients and with
/// targets (NLB's ClientTLSNegotiationErrorCount and
/// TargetTLSNegotiationErrorCount).
#[derive(Default)]
pub struct TlsCounters {
    pub handshakes: AtomicU64,
    pub client_errors: AtomicU64,
    pub target_errors: AtomicU64,
}

/// A snapshot of `TlsCounters`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TlsCounts {
    pub handshakes: u64,
    pub client_errors: u64,
    pub target_errors: u64,
}

impl TlsCounters {
    pub fn get(&self) -> TlsCounts {
        TlsCounts {
            handshakes: self.handshakes.load(Ordering::Relaxed),
            client_errors: self.client_errors.load(Ordering::Relaxed),
            target_errors: self.target_errors.load(Ordering::Relaxed),
        }
    }
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Serves one accepted connection of a TLS listener.
pub async fn handle(
    client: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    shared: Arc<Shared>,
    snap: Arc<Snapshot>,
    vip: VipView,
    tls: Arc<TlsVip>,
) {
    let stats = shared.tls_stats(vip.vip_id);
    let _ = client.set_nodelay(true);
    let stream = match timeout(HANDSHAKE_TIMEOUT, tls.acceptor.accept(client)).await {
        Ok(Ok(s)) => s,
        _ => {
            if let Some(s) = stats {
                inc(&s.client_errors);
            }
            return;
        }
    };
    if let Some(s) = stats {
        inc(&s.handshakes);
    }
    let (_, conn) = stream.get_ref();
    let sni = conn.server_name().map(str::to_string);
    let version = conn
        .protocol_version()
        .and_then(|v| v.as_str())
        .map(|v| v.replace("TLSv1_", "TLSv1."))
        .unwrap_or_default();
    let tlvs = match vip.ppv2 {
        true => ppv2::tls_tlvs(&version, sni.as_deref()),
        false => Vec::new(),
    };
    let Some((backend, upstream)) =
        super::tcp::connect(&shared, &snap, &vip, peer, local, &tlvs).await
    else {
        return;
    };
    shared.count(vip.vip_id, backend, 0, 0, 1);
    let guard = shared.register(backend);
    let count = |bytes: u64| shared.count(vip.vip_id, backend, 1, bytes, 0);
    let idle = vip.tcp_idle.unwrap_or(shared.settings.tcp_idle);
    match &tls.target {
        None => relay(stream, upstream, idle, &guard.cancel, &count).await,
        Some(cfg) => {
            let addr = snap.backends[&backend].addr;
            let name = ServerName::IpAddress(addr.ip().into());
            let connect = TlsConnector::from(cfg.clone()).connect(name, upstream);
            match timeout(HANDSHAKE_TIMEOUT, connect).await {
                Ok(Ok(up)) => relay(stream, up, idle, &guard.cancel, &count).await,
                _ => {
                    if let Some(s) = stats {
                        inc(&s.target_errors);
                    }
                }
            }
        }
    }
}

/// Moves bytes `from` -> `to` until EOF, then closes `to`'s write side (a
/// TLS stream sends its close_notify).
async fn pump<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    mut from: R,
    mut to: W,
    last: &AtomicU64,
    epoch: Instant,
    count: &(dyn Fn(u64) + Sync),
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        to.write_all(&buf[..n]).await?;
        last.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        count(n as u64);
    }
}

/// Relays both directions until both end, the flow idles out, or the
/// daemon cancels it (target unhealthy, drain over). Each pump closes its
/// write side itself.
async fn relay<A, B>(a: A, b: B, idle: Duration, cancel: &Notify, count: &(dyn Fn(u64) + Sync))
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let epoch = Instant::now();
    let last = AtomicU64::new(0);
    let (ar, aw) = tokio::io::split(a);
    let (br, bw) = tokio::io::split(b);
    let up = pump(ar, bw, &last, epoch, count);
    let down = pump(br, aw, &last, epoch, count);
    let _ = super::tcp::both_ways(up, down, || (), || (), idle, cancel, &last, epoch).await;
}
