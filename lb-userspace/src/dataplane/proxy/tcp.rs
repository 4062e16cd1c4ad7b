//! TCP: bulk bytes move socket -> pipe -> socket with splice(2), never
//! through user memory; short messages take one copy (see `pump`). At most
//! one pipe per direction is in flight. Half-close
//! is passed on (shutdown of the write side), idle flows are closed, and a
//! failed connect tries the next target along the ring.

use std::{
    io,
    net::SocketAddr,
    os::fd::{AsRawFd, RawFd},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::Result;
use lb_common::PROTO_TCP;
use tokio::{
    io::{AsyncWriteExt, Interest},
    net::{TcpListener, TcpStream},
    time::timeout,
};

use super::{bind_socket, ppv2, warn_once, Event, Shared, Snapshot, VipView};

/// What one splice moves at most; also the pipe's size.
const CHUNK: usize = 1 << 20;

pub fn listen(addr: SocketAddr) -> Result<TcpListener> {
    let s = bind_socket(addr, socket2::Type::STREAM)?;
    s.listen(1024)?;
    Ok(TcpListener::from_std(s.into())?)
}

pub async fn serve(l: TcpListener, local: SocketAddr, shared: Arc<Shared>) {
    loop {
        match l.accept().await {
            Ok((s, peer)) => {
                let shared = shared.clone();
                tokio::spawn(async move { handle(s, peer, local, shared).await });
            }
            Err(e) => {
                // EMFILE and friends: count, back off, keep serving.
                shared.event(Event::SocketError);
                warn_once("accept", &e);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn handle(client: TcpStream, peer: SocketAddr, local: SocketAddr, shared: Arc<Shared>) {
    let snap = shared.snapshot();
    let Some(vip) = snap.vips.get(&(local, PROTO_TCP)).cloned() else {
        return;
    };
    if !shared.permits(&snap, &vip, peer) {
        // The handshake is the kernel's, done before accept: reset it.
        let _ = socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO));
        return;
    }
    if let Some(tls) = vip.tls.clone() {
        return super::tls::handle(client, peer, local, shared.clone(), snap, vip, tls).await;
    }
    let Some((backend, upstream)) = connect(&shared, &snap, &vip, peer, local, &[]).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    shared.count(vip.vip_id, backend, 0, 0, 1);
    let guard = shared.register(backend);
    let count = |bytes: u64| shared.count(vip.vip_id, backend, 1, bytes, 0);
    let spliced = || shared.event(Event::SpliceStarted);
    let _ = relay(
        &client,
        &upstream,
        vip.tcp_idle.unwrap_or(shared.settings.tcp_idle),
        &guard.cancel,
        &count,
        &spliced,
    )
    .await;
}

/// Connects to the target the ring names for this flow, or, when that
/// fails, to the next ones along the ring; then sends the PROXY v2 header
/// (with `tlvs`) when the listener's group asks for one.
pub(super) async fn connect(
    shared: &Shared,
    snap: &Snapshot,
    vip: &VipView,
    peer: SocketAddr,
    local: SocketAddr,
    tlvs: &[u8],
) -> Option<(u32, TcpStream)> {
    let ids = shared.candidates(snap, vip, peer, local, PROTO_TCP);
    if ids.is_empty() {
        shared.event(Event::NoBackend);
        return None;
    }
    for id in ids {
        let addr = snap.backends[&id].addr;
        match timeout(shared.settings.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(mut s)) => {
                let _ = s.set_nodelay(true);
                if vip.ppv2
                    && s.write_all(&ppv2::header_with(peer, local, tlvs))
                        .await
                        .is_err()
                {
                    return None;
                }
                return Some((id, s));
            }
            _ => shared.event(Event::ConnectFailed),
        }
    }
    None
}

/// A pipe for splice(2), closed on drop.
struct Pipe {
    r: RawFd,
    w: RawFd,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let mut fds = [0; 2];
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // Larger pipes mean fewer splices for bulk transfers; the default
        // (64 KiB) is fine when the system caps it lower.
        unsafe { libc::fcntl(fds[1], libc::F_SETPIPE_SZ, CHUNK as libc::c_int) };
        Ok(Pipe {
            r: fds[0],
            w: fds[1],
        })
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        unsafe {
            libc::close(self.r);
            libc::close(self.w);
        }
    }
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// A read that fills this much switches a direction to splice.
const COPY_BUF: usize = 16 * 1024;

/// Moves `from` -> `to` until EOF. Short messages are copied once through a
/// 16 KiB buffer; the first read that fills it switches the direction to
/// splice(2) for the rest of the connection (bulk moves without copies).
/// This is HAProxy's splice-auto idea: two splices cost more than one copy
/// for a request of a few hundred bytes (measured: see the README), and
/// short connections never create pipes. The pipe is always drained before
/// the next read, so a read never finds it full.
async fn pump(
    from: &TcpStream,
    to: &TcpStream,
    last: &AtomicU64,
    epoch: Instant,
    count: &(dyn Fn(u64) + Sync),
    spliced: &(dyn Fn() + Sync),
) -> io::Result<()> {
    let mut buf = vec![0u8; COPY_BUF];
    let mut pipe: Option<Pipe> = None;
    loop {
        let Some(p) = pipe.as_ref() else {
            from.readable().await?;
            let n = match from.try_read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            };
            let mut off = 0;
            while off < n {
                to.writable().await?;
                match to.try_write(&buf[off..n]) {
                    Ok(m) => off += m,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            }
            last.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
            count(n as u64);
            if n == COPY_BUF {
                spliced();
                pipe = Some(Pipe::new()?);
                buf = Vec::new();
            }
            continue;
        };
        let n = loop {
            from.readable().await?;
            match from.try_io(Interest::READABLE, || splice(from.as_raw_fd(), p.w, CHUNK)) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            return Ok(());
        }
        let mut left = n;
        while left > 0 {
            to.writable().await?;
            match to.try_io(Interest::WRITABLE, || splice(p.r, to.as_raw_fd(), left)) {
                Ok(m) => left -= m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        last.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        count(n as u64);
    }
}

/// Relays both directions until both are closed, the flow idles out, or
/// the daemon cancels it.
async fn relay(
    a: &TcpStream,
    b: &TcpStream,
    idle: Duration,
    cancel: &tokio::sync::Notify,
    count: &(dyn Fn(u64) + Sync),
    spliced: &(dyn Fn() + Sync),
) -> io::Result<()> {
    let epoch = Instant::now();
    let last = AtomicU64::new(0);
    let up = pump(a, b, &last, epoch, count, spliced);
    let down = pump(b, a, &last, epoch, count, spliced);
    let shut = |s: &TcpStream| {
        let _ = socket2::SockRef::from(s).shutdown(std::net::Shutdown::Write);
    };
    both_ways(up, down, || shut(b), || shut(a), idle, cancel, &last, epoch).await
}

/// Runs the two directions of a flow until both end (`up_end` and
/// `down_end` pass each end on), one fails, the flow has been quiet
/// (`last`, in ms since `epoch`) for `idle`, or the daemon cancels it.
#[allow(clippy::too_many_arguments)]
pub(super) async fn both_ways(
    up: impl std::future::Future<Output = io::Result<()>>,
    down: impl std::future::Future<Output = io::Result<()>>,
    up_end: impl Fn(),
    down_end: impl Fn(),
    idle: Duration,
    cancel: &tokio::sync::Notify,
    last: &AtomicU64,
    epoch: Instant,
) -> io::Result<()> {
    tokio::pin!(up, down);
    let (mut up_done, mut down_done) = (false, false);
    let mut tick =
        tokio::time::interval((idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(5)));
    while !(up_done && down_done) {
        tokio::select! {
            r = &mut up, if !up_done => {
                up_done = true;
                up_end();
                r?;
            }
            r = &mut down, if !down_done => {
                down_done = true;
                down_end();
                r?;
            }
            _ = tick.tick() => {
                let quiet = epoch.elapsed().as_millis() as u64 - last.load(Ordering::Relaxed);
                if quiet > idle.as_millis() as u64 {
                    return Ok(());
                }
            }
            _ = cancel.notified() => return Ok(()),
        }
    }
    Ok(())
}
