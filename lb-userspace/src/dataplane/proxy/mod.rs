//! The proxy data plane, for hosts where XDP cannot be attached: one socket
//! per listener, TCP moved with splice(2), UDP with a session table. The
//! target is chosen from the same Maglev rings with the same code as the
//! XDP path (`lb_common::select`), so a flow lands where XDP would put it.

pub mod ppv2;
mod tcp;
pub mod tls;
mod udp;

use std::{
    collections::{BTreeSet, HashMap},
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, RwLock,
    },
    time::Duration,
};

use anyhow::{Context as _, Result};
use lb_common::{
    select::{flow_key_hash, pick},
    Counters, PROTO_TCP, PROTO_UDP,
};
use log::{info, warn};
use tokio::{sync::Notify, task::JoinHandle};

use super::{Dataplane, Flows, Stats};
use crate::{
    config::{
        proto_name,
        tls::{TargetTls, TlsSpec},
    },
    model::{addr_words, Desired},
};

/// Proxy settings (from the gateway config).
#[derive(Debug, Clone)]
pub struct Settings {
    pub connect_timeout: Duration,
    pub tcp_idle: Duration,
    pub udp_idle: Duration,
    pub max_udp_sessions: usize,
    pub max_vips: u32,
    pub max_targets: u32,
    /// Beside XDP: serves the TLS listeners only (XDP has the others).
    pub tls_only: bool,
}

#[derive(Default)]
pub struct AtomicCounters {
    packets: AtomicU64,
    bytes: AtomicU64,
    new_flows: AtomicU64,
    blocked: AtomicU64,
}

impl AtomicCounters {
    fn add(&self, packets: u64, bytes: u64, new_flows: u64) {
        self.packets.fetch_add(packets, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.new_flows.fetch_add(new_flows, Ordering::Relaxed);
    }

    fn get(&self) -> Counters {
        Counters {
            packets: self.packets.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            new_flows: self.new_flows.load(Ordering::Relaxed),
            blocked: self.blocked.load(Ordering::Relaxed),
            ..Default::default()
        }
    }
}

/// Things the proxy counts that are not traffic.
#[derive(Clone, Copy, Debug)]
pub enum Event {
    /// Connecting to a target failed (the next one in the ring was tried).
    ConnectFailed,
    /// No healthy target for a new connection or datagram.
    NoBackend,
    /// The UDP session table was full: datagram dropped.
    UdpSessionsFull,
    /// An accept or socket call failed.
    SocketError,
    /// A TCP direction switched from copying to splice(2) (bulk transfer).
    SpliceStarted,
}

pub const EVENT_NAMES: [&str; 5] = [
    "connect_failed",
    "no_backend",
    "udp_sessions_full",
    "socket_error",
    "splice_started",
];

#[derive(Clone)]
pub struct VipView {
    pub vip_id: u32,
    pub flags: u32,
    pub ppv2: bool,
    /// The listener's TCP idle timeout, if it has one.
    pub tcp_idle: Option<Duration>,
    /// Sources that may open flows (empty: all).
    pub allow: Arc<Vec<ipnet::IpNet>>,
    /// A TLS listener's certificates and settings.
    pub tls: Option<Arc<tls::TlsVip>>,
    zone: Arc<Vec<u32>>,
    all: Arc<Vec<u32>>,
}

#[derive(Clone)]
pub struct BackendView {
    pub addr: SocketAddr,
    pub in_ring: bool,
}

/// What the proxy serves, replaced whole on every sync.
#[derive(Default)]
pub struct Snapshot {
    pub ring_size: u32,
    /// The flow hash's key (as the XDP program's).
    pub hash_key: [u32; 2],
    /// The gateway's deny list.
    pub deny: Arc<Vec<ipnet::IpNet>>,
    pub vips: HashMap<(SocketAddr, u8), VipView>,
    pub backends: HashMap<u32, BackendView>,
}

struct Conn {
    backend: u32,
    cancel: Arc<Notify>,
}

/// State shared by the daemon and the proxy tasks.
pub struct Shared {
    snapshot: RwLock<Arc<Snapshot>>,
    vip_stats: Vec<AtomicCounters>,
    backend_stats: Vec<AtomicCounters>,
    conns: Mutex<HashMap<u64, Conn>>,
    next_conn: AtomicU64,
    events: [AtomicU64; 5],
    tls_stats: Vec<tls::TlsCounters>,
    pub settings: Settings,
}

/// Removes a connection from the registry when its task ends.
pub struct ConnGuard {
    shared: Arc<Shared>,
    id: u64,
    pub cancel: Arc<Notify>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.shared.conns.lock().expect("conns").remove(&self.id);
    }
}

impl Shared {
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.read().expect("snapshot").clone()
    }

    pub fn tls_stats(&self, vip: u32) -> Option<&tls::TlsCounters> {
        self.tls_stats.get(vip as usize)
    }

    pub fn event(&self, e: Event) {
        self.events[e as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Whether `peer` may open a flow to `vip` (the lists, as in XDP);
    /// a refusal is counted for the listener.
    pub fn permits(&self, snap: &Snapshot, vip: &VipView, peer: SocketAddr) -> bool {
        if crate::model::acl::permits(&vip.allow, &snap.deny, peer.ip()) {
            return true;
        }
        if let Some(c) = self.vip_stats.get(vip.vip_id as usize) {
            c.blocked.fetch_add(1, Ordering::Relaxed);
        }
        false
    }

    pub fn count(&self, vip: u32, backend: u32, packets: u64, bytes: u64, new_flows: u64) {
        if let Some(c) = self.vip_stats.get(vip as usize) {
            c.add(packets, bytes, new_flows);
        }
        if let Some(c) = self.backend_stats.get(backend as usize) {
            c.add(packets, bytes, new_flows);
        }
    }

    /// Registers a flow to `backend`, so the daemon can end it (target
    /// unhealthy, drain over).
    pub fn register(self: &Arc<Self>, backend: u32) -> ConnGuard {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let cancel = Arc::new(Notify::new());
        self.conns.lock().expect("conns").insert(
            id,
            Conn {
                backend,
                cancel: cancel.clone(),
            },
        );
        ConnGuard {
            shared: self.clone(),
            id,
            cancel,
        }
    }

    /// Targets for a new flow from `client` to `local`: the one the ring
    /// names (exactly as the XDP program picks it), then, for retries after
    /// a failed connect, the next different targets along the ring.
    pub fn candidates(
        &self,
        snap: &Snapshot,
        vip: &VipView,
        client: SocketAddr,
        local: SocketAddr,
        proto: u8,
    ) -> Vec<u32> {
        let (src, _) = addr_words(client.ip());
        let (dst, _) = addr_words(local.ip());
        let h = flow_key_hash(
            snap.hash_key,
            vip.flags,
            &src,
            &dst,
            client.port().to_be(),
            local.port().to_be(),
            proto,
        );
        let m = snap.ring_size;
        let slot = |r: &Vec<u32>, i: u32| r.get(i as usize).copied().unwrap_or(0);
        let mut out = Vec::new();
        for step in 0..m.min(4096) {
            let id = pick(
                vip.flags,
                m,
                h.wrapping_add(step),
                |i| slot(&vip.zone, i),
                |i| slot(&vip.all, i),
            );
            if id != 0 && !out.contains(&id) && snap.backends.get(&id).is_some_and(|b| b.in_ring) {
                out.push(id);
                if out.len() == 3 {
                    break;
                }
            }
        }
        out
    }
}

/// The proxy data plane as the daemon drives it.
pub struct ProxyDataplane {
    pub shared: Arc<Shared>,
    listeners: HashMap<(SocketAddr, u8), JoinHandle<()>>,
    /// TLS listeners by vip_id: what they were built from, and the result.
    tls: HashMap<u32, (TlsInputs, Arc<tls::TlsVip>)>,
    /// The last failed load per vip_id (logged once).
    tls_failed: HashMap<u32, TlsInputs>,
}

/// What a TLS listener is built from: its settings and its files as they
/// are now (a certificate renewed in place is loaded on the next sync, as
/// SIGHUP makes one).
#[derive(Debug, Clone, PartialEq, Eq)]
struct TlsInputs {
    spec: TlsSpec,
    target: Option<TargetTls>,
    files: Vec<Option<(std::time::SystemTime, u64, u64)>>,
}

impl TlsInputs {
    fn of(spec: &TlsSpec, target: &Option<TargetTls>) -> TlsInputs {
        use std::os::unix::fs::MetadataExt as _;
        let paths = spec
            .certificates
            .iter()
            .flat_map(|c| [&c.cert, &c.key])
            .chain(target.iter().flat_map(|t| t.ca.as_ref()));
        let files = paths
            .map(|p| {
                std::fs::metadata(p).ok().map(|m| {
                    (
                        m.modified().unwrap_or(std::time::UNIX_EPOCH),
                        m.len(),
                        m.ino(),
                    )
                })
            })
            .collect();
        TlsInputs {
            spec: spec.clone(),
            target: target.clone(),
            files,
        }
    }

    fn build(&self) -> Result<tls::TlsVip, crate::config::tls::TlsError> {
        let server = crate::config::tls::server_config(&self.spec)?;
        let target = match &self.target {
            Some(t) => Some(crate::config::tls::target_config(t)?),
            None => None,
        };
        Ok(tls::TlsVip::new(server, target))
    }
}

impl ProxyDataplane {
    pub fn new(settings: Settings) -> ProxyDataplane {
        let stats = |n: u32| (0..n).map(|_| AtomicCounters::default()).collect();
        ProxyDataplane {
            shared: Arc::new(Shared {
                snapshot: RwLock::new(Arc::new(Snapshot::default())),
                vip_stats: stats(settings.max_vips),
                backend_stats: stats(settings.max_targets + 1),
                conns: Mutex::new(HashMap::new()),
                next_conn: AtomicU64::new(0),
                events: Default::default(),
                tls_stats: (0..settings.max_vips)
                    .map(|_| tls::TlsCounters::default())
                    .collect(),
                settings,
            }),
            listeners: HashMap::new(),
            tls: HashMap::new(),
            tls_failed: HashMap::new(),
        }
    }

    /// A TLS listener's config: the one built from its current inputs, or,
    /// when those do not load (a bad certificate put in place), the one it
    /// had (kept serving, the error returned).
    fn tls_vip(
        &mut self,
        v: &crate::model::VipModel,
        spec: &TlsSpec,
    ) -> (Option<Arc<tls::TlsVip>>, Option<String>) {
        let inputs = TlsInputs::of(spec, &v.target_tls);
        let had = self.tls.get(&v.vip_id);
        if let Some((_, t)) = had.filter(|(i, _)| *i == inputs) {
            return (Some(t.clone()), None);
        }
        let had = had.map(|(_, t)| t.clone());
        match inputs.build() {
            Ok(t) => {
                let t = Arc::new(t);
                info!(
                    "proxy: TLS listener {}: {} certificate(s) loaded ({}, ALPN {:?})",
                    v.listener,
                    spec.certificates.len(),
                    spec.policy.name(),
                    spec.alpn
                );
                self.tls_failed.remove(&v.vip_id);
                self.tls.insert(v.vip_id, (inputs, t.clone()));
                (Some(t), None)
            }
            Err(e) => {
                let msg = format!("TLS listener {}: {e}", v.listener);
                if self.tls_failed.insert(v.vip_id, inputs.clone()).as_ref() != Some(&inputs) {
                    match had {
                        Some(_) => log::error!("proxy: {msg}: keeping the certificates it has"),
                        None => log::error!("proxy: {msg}: not served"),
                    }
                }
                (had, Some(msg))
            }
        }
    }

    /// Serves `d`: new rings and targets for new flows, listeners opened
    /// and closed, flows to targets that are no longer valid ended.
    fn sync(&mut self, d: &Desired) -> Result<()> {
        let mut snap = Snapshot {
            ring_size: d.model.globals.ring_size,
            hash_key: d.model.globals.hash_key,
            deny: Arc::new(d.model.deny.clone()),
            ..Default::default()
        };
        let mut tls_errors = Vec::new();
        for (v, rings) in d.vips() {
            let local = SocketAddr::new(v.lkey.address, v.lkey.port);
            let tls = match &v.tls {
                Some(spec) => {
                    let (t, e) = self.tls_vip(v, spec);
                    tls_errors.extend(e);
                    // Never loaded: not served until it does.
                    let Some(t) = t else { continue };
                    Some(t)
                }
                None => None,
            };
            snap.vips.insert(
                (local, v.lkey.proto),
                VipView {
                    vip_id: v.vip_id,
                    flags: v.flags,
                    ppv2: v.ppv2,
                    tcp_idle: (v.idle_timeout_s != 0)
                        .then(|| Duration::from_secs(v.idle_timeout_s as u64)),
                    allow: Arc::new(v.allow.clone()),
                    tls,
                    zone: rings.zone.clone(),
                    all: rings.all.clone(),
                },
            );
        }
        for (id, b) in &d.model.backends {
            snap.backends.insert(
                *id,
                BackendView {
                    addr: SocketAddr::new(b.key.address, b.key.port),
                    in_ring: d.in_ring(*id),
                },
            );
        }
        self.tls.retain(|id, _| {
            snap.vips
                .values()
                .any(|v| v.vip_id == *id && v.tls.is_some())
        });
        let wanted: Vec<(SocketAddr, u8)> = snap.vips.keys().copied().collect();
        *self.shared.snapshot.write().expect("snapshot") = Arc::new(snap);
        let mut errors = self.listen(wanted);
        errors.extend(tls_errors);
        // Flows to targets that may no longer keep them end now (XDP would
        // move them to another target, which a TCP stream cannot survive).
        for c in self.shared.conns.lock().expect("conns").values() {
            if !d.valid(c.backend) {
                c.cancel.notify_one();
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("proxy listeners failed: {}", errors.join("; "))
        }
    }

    /// Listeners: closes the gone, opens the new; returns what failed.
    fn listen(&mut self, wanted: Vec<(SocketAddr, u8)>) -> Vec<String> {
        self.listeners.retain(|k, h| {
            let keep = wanted.contains(k);
            if !keep {
                h.abort();
                info!("proxy: closed {} {}", proto_name(k.1), k.0);
            }
            keep
        });
        let mut errors = Vec::new();
        for k in wanted {
            if self.listeners.contains_key(&k) {
                continue;
            }
            let shared = self.shared.clone();
            let task = match k.1 {
                PROTO_TCP => tcp::listen(k.0).map(|l| tokio::spawn(tcp::serve(l, k.0, shared))),
                PROTO_UDP => udp::listen(k.0).map(|s| tokio::spawn(udp::serve(s, k.0, shared))),
                _ => continue,
            };
            match task {
                Ok(t) => {
                    info!("proxy: listening on {} {}", proto_name(k.1), k.0);
                    if self.shared.settings.tls_only && !is_local(k.0.ip()) {
                        warn!(
                            "proxy: TLS listener address {} is not an address of this host: the kernel does not deliver its connections (add it, e.g. `ip addr add {}/{} dev lo`)",
                            k.0.ip(),
                            k.0.ip(),
                            if k.0.is_ipv4() { 32 } else { 128 }
                        );
                    }
                    self.listeners.insert(k, t);
                }
                Err(e) => errors.push(format!("{} {}: {e:#}", proto_name(k.1), k.0)),
            }
        }
        errors
    }
}

impl Dataplane for ProxyDataplane {
    fn apply(&mut self, d: &Desired) -> Result<()> {
        self.sync(d)
    }

    fn counters(&self, kind: Stats, id: u32) -> Counters {
        let v = match kind {
            Stats::Backend => &self.shared.backend_stats,
            Stats::Vip => &self.shared.vip_stats,
        };
        v.get(id as usize)
            .map(AtomicCounters::get)
            .unwrap_or_default()
    }

    /// Open connections and UDP sessions per target.
    fn flows(&self) -> Flows {
        let mut per = HashMap::new();
        let conns = self.shared.conns.lock().expect("conns");
        for c in conns.values() {
            *per.entry(c.backend).or_insert(0) += 1;
        }
        Flows {
            total: conns.len() as u64,
            per_backend: per,
            // The kernel completes handshakes before accept.
            half_open: 0,
            at: Some(std::time::Instant::now()),
        }
    }

    /// Ends every flow to `backend` (its drain is over).
    fn purge(&mut self, backend: u32) -> usize {
        let conns = self.shared.conns.lock().expect("conns");
        let mut n = 0;
        for c in conns.values().filter(|c| c.backend == backend) {
            c.cancel.notify_one();
            n += 1;
        }
        n
    }

    fn takes(&self, v: &crate::model::VipModel) -> bool {
        !self.shared.settings.tls_only || v.tls.is_some()
    }

    fn tls_counts(&self, vip: u32) -> Option<tls::TlsCounts> {
        self.shared.tls_stats(vip).map(tls::TlsCounters::get)
    }

    fn modes(&self) -> Vec<(String, String)> {
        match self.shared.settings.tls_only {
            false => vec![("*".into(), "proxy".into())],
            true if self.listeners.is_empty() => vec![],
            true => vec![("*".into(), "proxy (TLS listeners)".into())],
        }
    }

    /// A listener may be open on an address the host does not own
    /// (IP_FREEBIND): announcing it would draw traffic the kernel does not
    /// deliver to the proxy.
    fn served_addresses(&self) -> Option<BTreeSet<IpAddr>> {
        Some(
            self.listeners
                .keys()
                .map(|(a, _)| a.ip())
                .filter(|&ip| is_local(ip))
                .collect(),
        )
    }

    fn events(&self) -> Vec<(&'static str, u64)> {
        EVENT_NAMES
            .iter()
            .zip(&self.shared.events)
            .map(|(n, c)| (*n, c.load(Ordering::Relaxed)))
            .collect()
    }

    fn ends_with_process(&self) -> bool {
        !self.shared.settings.tls_only || !self.listeners.is_empty()
    }

    fn exit(&mut self) -> Result<Vec<String>> {
        Ok(vec![
            "exiting (proxy data plane: connections end with the process)".into(),
        ])
    }
}

impl Drop for ProxyDataplane {
    fn drop(&mut self) {
        for h in self.listeners.values() {
            h.abort();
        }
    }
}

/// The host delivers packets for `ip` locally (an address on an interface,
/// or in a `local` route): a bind without IP_FREEBIND succeeds.
pub fn is_local(ip: IpAddr) -> bool {
    std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// A socket bound to a VIP that may not be (yet) a local address.
pub fn bind_socket(addr: SocketAddr, ty: socket2::Type) -> Result<socket2::Socket> {
    use socket2::{Domain, Socket};
    let s = Socket::new(Domain::for_address(addr), ty, None)?;
    s.set_reuse_address(true)?;
    match addr.ip() {
        IpAddr::V4(_) => s.set_freebind_v4(true)?,
        IpAddr::V6(_) => {
            s.set_only_v6(true)?;
            s.set_freebind_v6(true)?;
        }
    }
    s.bind(&addr.into())
        .with_context(|| format!("binding {addr}"))?;
    s.set_nonblocking(true)?;
    Ok(s)
}

pub(crate) fn warn_once(what: &str, e: &std::io::Error) {
    warn!("proxy: {what}: {e}");
}

#[cfg(test)]
mod tests {
    use super::is_local;

    #[test]
    fn only_addresses_the_host_delivers_are_local() {
        assert!(is_local("127.0.0.1".parse().unwrap()));
        assert!(is_local("::1".parse().unwrap()));
        // TEST-NET-1 and the documentation prefix are on no host.
        assert!(!is_local("192.0.2.1".parse().unwrap()));
        assert!(!is_local("2001:db8::1".parse().unwrap()));
    }
}
