//! UDP: one session per client address, each with its own upstream socket
//! connected to the target; replies go back from the VIP socket. Sessions
//! end after `udp_idle` without traffic either way; the table is bounded.
//!
//! Datagrams move in batches (quinn-udp): up to 32 per recvmmsg(2), with
//! UDP GRO where the kernel coalesces, and each run of equal-size datagrams
//! of one session leaves as one UDP GSO send. Per-datagram syscalls were
//! what limited a flood.

use std::{
    collections::{hash_map::Entry, HashMap},
    io::IoSliceMut,
    net::SocketAddr,
    ops::Range,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::Result;
use lb_common::PROTO_UDP;
use quinn_udp::{RecvMeta, Transmit, UdpSocketState, BATCH_SIZE};
use tokio::{io::Interest, net::UdpSocket};

use super::{bind_socket, warn_once, Event, Shared, Snapshot, VipView};

/// Receive buffer of the VIP socket: absorbs bursts while a batch is sent.
const VIP_RCVBUF: usize = 4 << 20;
/// One receive slot: the largest datagram, or a GRO train (at most 64 KiB).
const SLOT: usize = 65536;
/// Bytes in one GSO send (the kernel's limit is just under 64 KiB).
const GSO_BYTES: usize = 60_000;

/// A socket with its quinn-udp state (offload support, batch I/O).
struct Sock {
    io: UdpSocket,
    state: UdpSocketState,
}

impl Sock {
    fn new(io: UdpSocket) -> std::io::Result<Sock> {
        // quinn-udp forbids fragmentation (for QUIC's MTU probing: PROBE,
        // and DONTFRAG on IPv6); a proxy passes on whatever size the client
        // sent, fragmented as the kernel would: the socket's own settings
        // (from sysctls) are put back.
        let (level, mtu_opt) = if io.local_addr()?.is_ipv4() {
            (libc::IPPROTO_IP, libc::IP_MTU_DISCOVER)
        } else {
            (libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER)
        };
        let mtu = getsockopt_int(&io, level, mtu_opt)?;
        let dontfrag = (level == libc::IPPROTO_IPV6)
            .then(|| getsockopt_int(&io, level, libc::IPV6_DONTFRAG))
            .transpose()?;
        let state = UdpSocketState::new((&io).into())?;
        setsockopt_int(&io, level, mtu_opt, mtu)?;
        if let Some(v) = dontfrag {
            setsockopt_int(&io, level, libc::IPV6_DONTFRAG, v)?;
        }
        // Receive timestamps are unused, and while any socket asks for
        // them the kernel stamps every packet of the host.
        setsockopt_int(&io, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 0)?;
        Ok(Sock { io, state })
    }

    /// Receives a batch into `bufs`; returns how many slots were filled.
    async fn recv(&self, bufs: &mut [Vec<u8>], meta: &mut [RecvMeta]) -> std::io::Result<usize> {
        loop {
            self.io.readable().await?;
            let mut iovs: Vec<IoSliceMut> = bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
            match self.io.try_io(Interest::READABLE, || {
                self.state.recv((&self.io).into(), &mut iovs, meta)
            }) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                r => return r,
            }
        }
    }

    /// Sends `segs` (datagrams, in order) to `dest`, runs of equal size as
    /// one GSO send each. Returns (datagrams, bytes) sent.
    async fn send(&self, dest: SocketAddr, segs: &[&[u8]], scratch: &mut Vec<u8>) -> (u64, u64) {
        let (mut pkts, mut bytes) = (0, 0);
        let sizes: Vec<usize> = segs.iter().map(|s| s.len()).collect();
        for run in plan(&sizes, self.state.max_gso_segments(), GSO_BYTES) {
            if run.len() > 1 {
                scratch.clear();
                for s in &segs[run.clone()] {
                    scratch.extend_from_slice(s);
                }
                if self.send_one(dest, scratch, Some(sizes[run.start])).await {
                    pkts += run.len() as u64;
                    bytes += scratch.len() as u64;
                    continue;
                }
                // Refused (e.g. a segment larger than the path MTU: EMSGSIZE;
                // quinn-udp turns GSO off for good on EINVAL/EIO and logs
                // it): the run goes again one datagram at a time.
            }
            for s in &segs[run] {
                if self.send_one(dest, s, None).await {
                    pkts += 1;
                    bytes += s.len() as u64;
                }
            }
        }
        (pkts, bytes)
    }

    async fn send_one(&self, dest: SocketAddr, contents: &[u8], segment: Option<usize>) -> bool {
        let t = Transmit {
            destination: dest,
            ecn: None,
            contents,
            segment_size: segment,
            src_ip: None,
        };
        loop {
            if self.io.writable().await.is_err() {
                return false;
            }
            match self.io.try_io(Interest::WRITABLE, || {
                self.state.try_send((&self.io).into(), &t)
            }) {
                Ok(()) => return true,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(_) => return false,
            }
        }
    }
}

fn getsockopt_int(s: &UdpSocket, level: i32, opt: i32) -> std::io::Result<i32> {
    use std::os::fd::AsRawFd as _;
    let mut val: i32 = 0;
    let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            level,
            opt,
            (&mut val as *mut i32).cast(),
            &mut len,
        )
    };
    if r == 0 {
        Ok(val)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn setsockopt_int(s: &UdpSocket, level: i32, opt: i32, val: i32) -> std::io::Result<()> {
    use std::os::fd::AsRawFd as _;
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            level,
            opt,
            (&val as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Splits datagrams (their sizes, in order) into sends: each a run of
/// equal sizes, at most `max_segs` datagrams and `max_bytes` bytes (a
/// single datagram may exceed it: it goes alone).
pub fn plan(sizes: &[usize], max_segs: usize, max_bytes: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < sizes.len() {
        let size = sizes[start];
        let mut end = start + 1;
        // Empty datagrams go one by one (GSO cannot carry them).
        while size > 0
            && end < sizes.len()
            && sizes[end] == size
            && end - start < max_segs.max(1)
            && (end - start + 1) * size <= max_bytes
        {
            end += 1;
        }
        out.push(start..end);
        start = end;
    }
    out
}

pub fn listen(addr: SocketAddr) -> Result<UdpSocket> {
    let s = bind_socket(addr, socket2::Type::DGRAM)?;
    // As root (CAP_NET_ADMIN) past net.core.rmem_max; else up to it.
    if s.set_recv_buffer_size(VIP_RCVBUF).is_ok() {
        use std::os::fd::AsRawFd as _;
        let val = VIP_RCVBUF as i32;
        unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&val as *const i32).cast(),
                std::mem::size_of::<i32>() as libc::socklen_t,
            )
        };
    }
    Ok(UdpSocket::from_std(s.into())?)
}

struct Session {
    up: Arc<Sock>,
    target: SocketAddr,
    backend: u32,
    last: Arc<AtomicU64>,
}

type Sessions = Arc<Mutex<HashMap<SocketAddr, Session>>>;

/// One session's share of a received batch: (upstream, target, backend id,
/// datagrams in order).
type Outgoing<'a> = (Arc<Sock>, SocketAddr, u32, Vec<&'a [u8]>);

fn slots(n: usize) -> (Vec<Vec<u8>>, Vec<RecvMeta>) {
    (vec![vec![0u8; SLOT]; n], vec![RecvMeta::default(); n])
}

/// The datagrams in a received slot: one, or a GRO train of `stride`-byte
/// datagrams (an empty datagram is one empty slice).
fn datagrams<'a>(buf: &'a [u8], m: &RecvMeta) -> impl Iterator<Item = &'a [u8]> {
    let data = &buf[..m.len];
    let empty = data.is_empty().then_some(data);
    data.chunks(m.stride.max(1)).chain(empty)
}

/// A new session's upstream socket, connected to `target`.
fn upstream(target: SocketAddr) -> std::io::Result<Sock> {
    let bind: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    };
    let s = std::net::UdpSocket::bind(bind)?;
    s.connect(target)?;
    s.set_nonblocking(true)?;
    Sock::new(UdpSocket::from_std(s)?)
}

/// What opening a session needs.
struct Ctx {
    sock: Arc<Sock>,
    local: SocketAddr,
    sessions: Sessions,
    epoch: Instant,
    shared: Arc<Shared>,
}

impl Ctx {
    /// A new session for `peer`: its target picked, an upstream socket
    /// connected, the reply task started. `None` (counted) when the table
    /// is full, no target is healthy or the socket fails.
    fn open(
        &self,
        snap: &Snapshot,
        vip: &VipView,
        peer: SocketAddr,
        now: u64,
        open: usize,
    ) -> Option<Session> {
        let shared = &self.shared;
        if open >= shared.settings.max_udp_sessions {
            shared.event(Event::UdpSessionsFull);
            return None;
        }
        let Some(&backend) = shared
            .candidates(snap, vip, peer, self.local, PROTO_UDP)
            .first()
        else {
            shared.event(Event::NoBackend);
            return None;
        };
        let target = snap.backends[&backend].addr;
        let up = match upstream(target) {
            Ok(u) => Arc::new(u),
            Err(e) => {
                shared.event(Event::SocketError);
                warn_once("udp upstream socket", &e);
                return None;
            }
        };
        let last = Arc::new(AtomicU64::new(now));
        shared.count(vip.vip_id, backend, 0, 0, 1);
        tokio::spawn(replies(
            self.sock.clone(),
            up.clone(),
            peer,
            backend,
            vip.vip_id,
            last.clone(),
            self.epoch,
            self.sessions.clone(),
            shared.clone(),
        ));
        Some(Session {
            up,
            target,
            backend,
            last,
        })
    }
}

pub async fn serve(sock: UdpSocket, local: SocketAddr, shared: Arc<Shared>) {
    let sock = match Sock::new(sock) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            shared.event(Event::SocketError);
            warn_once("udp socket setup", &e);
            return;
        }
    };
    let sessions: Sessions = Arc::new(Mutex::new(HashMap::new()));
    let epoch = Instant::now();
    let ctx = Ctx {
        sock: sock.clone(),
        local,
        sessions: sessions.clone(),
        epoch,
        shared: shared.clone(),
    };
    let (mut bufs, mut meta) = slots(BATCH_SIZE);
    let mut scratch = Vec::with_capacity(SLOT);
    loop {
        let n = match sock.recv(&mut bufs, &mut meta).await {
            Ok(n) => n,
            Err(e) => {
                shared.event(Event::SocketError);
                warn_once("udp recv", &e);
                continue;
            }
        };
        let snap = shared.snapshot();
        let Some(vip) = snap.vips.get(&(local, PROTO_UDP)).cloned() else {
            continue;
        };
        let now = epoch.elapsed().as_millis() as u64;
        // Per session, its datagrams in arrival order (a GRO slot holds
        // several of `stride` bytes each).
        let mut work: Vec<Outgoing> = Vec::new();
        let mut index: HashMap<SocketAddr, usize> = HashMap::new();
        {
            let mut table = sessions.lock().expect("sessions");
            for (buf, m) in bufs.iter().zip(&meta).take(n) {
                let peer = m.addr;
                let w = match index.get(&peer) {
                    Some(&w) => w,
                    None => {
                        let open = table.len();
                        let s = match table.entry(peer) {
                            Entry::Occupied(e) => e.into_mut(),
                            Entry::Vacant(e) => {
                                if !shared.permits(&snap, &vip, peer) {
                                    continue;
                                }
                                let Some(s) = ctx.open(&snap, &vip, peer, now, open) else {
                                    continue;
                                };
                                e.insert(s)
                            }
                        };
                        s.last.store(now, Ordering::Relaxed);
                        work.push((s.up.clone(), s.target, s.backend, Vec::new()));
                        index.insert(peer, work.len() - 1);
                        work.len() - 1
                    }
                };
                work[w].3.extend(datagrams(buf, m));
            }
        }
        for (up, target, backend, segs) in &work {
            let (p, b) = up.send(*target, segs, &mut scratch).await;
            shared.count(vip.vip_id, *backend, p, b, 0);
        }
    }
}

/// Carries a session's replies back to the client until it idles out or
/// the daemon ends it; then removes the session.
#[allow(clippy::too_many_arguments)]
async fn replies(
    sock: Arc<Sock>,
    up: Arc<Sock>,
    peer: SocketAddr,
    backend: u32,
    vip: u32,
    last: Arc<AtomicU64>,
    epoch: Instant,
    sessions: Sessions,
    shared: Arc<Shared>,
) {
    let guard = shared.register(backend);
    let idle = shared.settings.udp_idle;
    let check = (idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
    // One 64 KiB slot per session while it is quiet (there may be 65,536
    // sessions); a busy one (a batch filled every slot) doubles up to the
    // full batch, and shrinks back when it goes quiet.
    let (mut bufs, mut meta) = slots(1);
    let mut scratch = Vec::new();
    loop {
        tokio::select! {
            r = tokio::time::timeout(check, up.recv(&mut bufs, &mut meta)) => match r {
                Ok(Ok(n)) => {
                    last.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
                    let segs: Vec<&[u8]> = bufs
                        .iter()
                        .zip(&meta)
                        .take(n)
                        .flat_map(|(b, m)| datagrams(b, m))
                        .collect();
                    let (p, b) = sock.send(peer, &segs, &mut scratch).await;
                    shared.count(vip, backend, p, b, 0);
                    if n == bufs.len() && n < BATCH_SIZE {
                        let more = (2 * n).min(BATCH_SIZE);
                        bufs.resize(more, vec![0u8; SLOT]);
                        meta.resize(more, RecvMeta::default());
                    }
                }
                // ICMP errors show up as errors on the connected socket.
                Ok(Err(_)) => {}
                Err(_) => {
                    if bufs.len() > 1 {
                        bufs.truncate(1);
                        meta.truncate(1);
                        scratch = Vec::new();
                    }
                    // Idle: decided under the table's lock, which the serve
                    // loop holds while it refreshes `last`, so a datagram
                    // arriving meanwhile keeps the session.
                    let mut table = sessions.lock().expect("sessions");
                    let now = epoch.elapsed().as_millis() as u64;
                    if now.saturating_sub(last.load(Ordering::Relaxed)) > idle.as_millis() as u64 {
                        table.remove(&peer);
                        return;
                    }
                }
            },
            _ = guard.cancel.notified() => break,
        }
    }
    sessions.lock().expect("sessions").remove(&peer);
}

#[cfg(test)]
mod tests {
    use super::plan;

    #[test]
    fn sends_are_runs_of_equal_sizes_within_limits() {
        assert!(plan(&[], 64, 60_000).is_empty());
        assert_eq!(plan(&[1400; 3], 64, 60_000), vec![0..3]);
        // A size change starts a new send.
        assert_eq!(
            plan(&[100, 100, 50, 100], 64, 60_000),
            vec![0..2, 2..3, 3..4]
        );
        // At most max_segs datagrams, and max_bytes bytes, per send.
        assert_eq!(plan(&[10; 5], 2, 60_000), vec![0..2, 2..4, 4..5]);
        assert_eq!(plan(&[1400; 50], 64, 60_000), vec![0..42, 42..50]);
        // No GSO: one datagram per send; an oversized one goes alone.
        assert_eq!(plan(&[7, 7], 1, 60_000), vec![0..1, 1..2]);
        assert_eq!(plan(&[0, 0], 64, 60_000), vec![0..1, 1..2]);
        assert_eq!(plan(&[65_000, 65_000], 64, 60_000), vec![0..1, 1..2]);
    }
}
