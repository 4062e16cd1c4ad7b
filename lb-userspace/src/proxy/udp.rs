//! UDP: one session per client address, each with its own upstream socket
//! connected to the target; replies go back from the VIP socket. Sessions
//! end after `udp_idle` without traffic either way; the table is bounded.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::Result;
use lb_common::PROTO_UDP;
use tokio::net::UdpSocket;

use super::{bind_socket, warn_once, Event, Shared};

pub fn listen(addr: SocketAddr) -> Result<UdpSocket> {
    let s = bind_socket(addr, socket2::Type::DGRAM)?;
    Ok(UdpSocket::from_std(s.into())?)
}

struct Session {
    up: Arc<UdpSocket>,
    backend: u32,
    last: Arc<AtomicU64>,
}

pub async fn serve(sock: UdpSocket, local: SocketAddr, shared: Arc<Shared>) {
    let sock = Arc::new(sock);
    let sessions: Arc<Mutex<HashMap<SocketAddr, Session>>> = Arc::new(Mutex::new(HashMap::new()));
    let epoch = Instant::now();
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok(v) => v,
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
        let existing = sessions
            .lock()
            .expect("sessions")
            .get(&peer)
            .map(|s| (s.up.clone(), s.backend, s.last.clone()));
        let (up, backend, last) = match existing {
            Some(s) => s,
            None => {
                if sessions.lock().expect("sessions").len() >= shared.settings.max_udp_sessions {
                    shared.event(Event::UdpSessionsFull);
                    continue;
                }
                let Some(&backend) = shared
                    .candidates(&snap, &vip, peer, local, PROTO_UDP)
                    .first()
                else {
                    shared.event(Event::NoBackend);
                    continue;
                };
                let target = snap.backends[&backend].addr;
                let bind: SocketAddr = if target.is_ipv4() {
                    "0.0.0.0:0".parse().unwrap()
                } else {
                    "[::]:0".parse().unwrap()
                };
                let up = match UdpSocket::bind(bind).await {
                    Ok(u) if u.connect(target).await.is_ok() => Arc::new(u),
                    _ => {
                        shared.event(Event::SocketError);
                        continue;
                    }
                };
                let last = Arc::new(AtomicU64::new(now));
                sessions.lock().expect("sessions").insert(
                    peer,
                    Session {
                        up: up.clone(),
                        backend,
                        last: last.clone(),
                    },
                );
                shared.count(vip.vip_id, backend, 0, 0, 1);
                tokio::spawn(replies(
                    sock.clone(),
                    up.clone(),
                    peer,
                    backend,
                    vip.vip_id,
                    last.clone(),
                    epoch,
                    sessions.clone(),
                    shared.clone(),
                ));
                (up, backend, last)
            }
        };
        last.store(now, Ordering::Relaxed);
        if up.send(&buf[..n]).await.is_ok() {
            shared.count(vip.vip_id, backend, 1, n as u64, 0);
        }
    }
}

/// Carries a session's replies back to the client until it idles out or
/// the daemon ends it; then removes the session.
#[allow(clippy::too_many_arguments)]
async fn replies(
    sock: Arc<UdpSocket>,
    up: Arc<UdpSocket>,
    peer: SocketAddr,
    backend: u32,
    vip: u32,
    last: Arc<AtomicU64>,
    epoch: Instant,
    sessions: Arc<Mutex<HashMap<SocketAddr, Session>>>,
    shared: Arc<Shared>,
) {
    let guard = shared.register(backend);
    let idle = shared.settings.udp_idle;
    let check = (idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
    let mut buf = vec![0u8; 65536];
    loop {
        tokio::select! {
            r = tokio::time::timeout(check, up.recv(&mut buf)) => match r {
                Ok(Ok(n)) => {
                    last.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
                    if sock.send_to(&buf[..n], peer).await.is_ok() {
                        shared.count(vip, backend, 1, n as u64, 0);
                    }
                }
                // ICMP errors show up as errors on the connected socket.
                Ok(Err(_)) => {}
                Err(_) => {
                    let quiet = epoch.elapsed().as_millis() as u64 - last.load(Ordering::Relaxed);
                    if quiet > idle.as_millis() as u64 {
                        break;
                    }
                }
            },
            _ = guard.cancel.notified() => break,
        }
    }
    sessions.lock().expect("sessions").remove(&peer);
}
