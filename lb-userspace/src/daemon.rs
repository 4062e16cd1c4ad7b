//! `lb run`: owns the config, the targets (registered and draining), their
//! health, and the data plane; re-syncs the maps on every change.

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{bail, Context as _, Result};
use log::{error, info, warn};
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::mpsc,
    time::Instant,
};

use crate::{
    announce::Announcer,
    checker::{self, CheckResult, CheckSpec},
    config::{Config, DataplaneKind},
    health::{Health, Tracker},
    model::{BackendModel, Ids, ListenerKey, Model, TargetKey},
    plane::Plane,
    proxy::{ProxyDataplane, Settings},
    xdp::{Sizes, XdpDataplane},
};

/// Takes an exclusive lock named after `pin_path` (held until exit; the
/// kernel releases it if the process dies).
fn lock_instance(pin: &Path) -> Result<std::fs::File> {
    use std::os::fd::AsRawFd as _;
    let dir = Path::new("/run/lock");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = pin.to_string_lossy().replace('/', "_");
    let path = dir.join(format!("lb{name}.lock"));
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let holder = std::fs::read_to_string(&path).unwrap_or_default();
        bail!(
            "another `lb run` (pid {}) already serves gateway.pin_path {} (lock {})",
            holder.trim(),
            pin.display(),
            path.display()
        );
    }
    let _ = f.set_len(0);
    let _ = std::io::Write::write_all(&mut &f, std::process::id().to_string().as_bytes());
    Ok(f)
}

/// Addresses of the interfaces named in `ifaces` (getifaddrs).
fn interface_addresses(ifaces: &[String]) -> Vec<(String, std::net::IpAddr)> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut p = head;
    while !p.is_null() {
        // SAFETY: a list getifaddrs built; freed below.
        let ifa = unsafe { &*p };
        p = ifa.ifa_next;
        if ifa.ifa_addr.is_null() {
            continue;
        }
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        if !ifaces.contains(&name) {
            continue;
        }
        let fam = unsafe { (*ifa.ifa_addr).sa_family } as i32;
        let ip: std::net::IpAddr = match fam {
            libc::AF_INET => {
                let a = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)).into()
            }
            libc::AF_INET6 => {
                let a = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                std::net::Ipv6Addr::from(a.sin6_addr.s6_addr).into()
            }
            _ => continue,
        };
        out.push((name, ip));
    }
    unsafe { libc::freeifaddrs(head) };
    out
}

/// Checks of the config against this host, before anything is attached.
fn check_host(cfg: &Config) -> Result<()> {
    // A VIP that is an address of an attached interface would take the
    // gateway's own traffic on that port (ssh, BGP, health checks).
    let own = interface_addresses(&cfg.gateway.interfaces);
    for (i, l) in cfg.listeners.iter().enumerate() {
        if let Some((dev, _)) = own.iter().find(|(_, a)| *a == l.address) {
            bail!(
                "listener[{i}].address: {} is an address of {dev}, an interface in gateway.interfaces; a VIP must be an address of its own",
                l.address
            );
        }
    }
    // SNAT source ports the kernel may also hand to local sockets.
    if cfg
        .target_groups
        .iter()
        .any(|t| t.mode == crate::config::Mode::Snat)
    {
        let local = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|t| {
                let mut it = t.split_whitespace().map(|v| v.parse::<u16>().ok());
                Some((it.next()??, it.next()??))
            });
        if let (Some((lo, hi)), Some((a, b))) = (local, cfg.snat_port_range()) {
            if a <= hi && lo <= b {
                warn!(
                    "gateway.snat_ports {a}-{b} overlaps net.ipv4.ip_local_port_range {lo}-{hi}: the gateway's own connections may collide with SNAT flows; move one of them"
                );
            }
        }
    }
    Ok(())
}

/// Loads (or adopts) the XDP program, after checking what it needs.
fn load_xdp(cfg: &Config, pin: &Path) -> Result<XdpDataplane> {
    if cfg.gateway.interfaces.is_empty() {
        bail!("gateway.interfaces is empty: no interface to attach XDP to");
    }
    check_host(cfg)?;
    check_privileges()?;
    let sizes = Sizes::from_config(cfg);
    info!(
        "map memory about {:.1} MiB (ring {} x {} slots, conntrack {} entries, snat {} entries)",
        sizes.memory() as f64 / (1 << 20) as f64,
        sizes.max_vips * lb_common::RINGS_PER_VIP,
        sizes.ring_size,
        sizes.conntrack,
        sizes.snat
    );
    let dp = XdpDataplane::load_pinned(sizes, Some(pin))?;
    if dp.adopted {
        info!(
            "adopted the pinned maps in {} (tracked flows and counters carry on)",
            pin.display()
        );
    }
    Ok(dp)
}

/// An XDP failure under `auto` that the operator can fix: stop with it.
fn fixable(e: anyhow::Error) -> anyhow::Error {
    e.context(
        "XDP failed for a reason that can be fixed (see below), so dataplane = \"auto\" does not \
         fall back; fix it, or set gateway.dataplane = \"proxy\" to run without XDP",
    )
}

fn attach_all(d: &mut Daemon) -> Result<()> {
    let Plane::Xdp(x) = &mut d.plane else {
        return Ok(());
    };
    for iface in d.cfg.gateway.interfaces.clone() {
        x.attach(&iface, d.cfg.gateway.dataplane)?;
    }
    for iface in x.detach_unconfigured(&d.cfg.gateway.interfaces) {
        info!("{iface}: no longer in gateway.interfaces: XDP detached");
    }
    Ok(())
}

/// Capabilities needed to load and attach XDP programs.
pub fn check_privileges() -> Result<()> {
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_BPF: u32 = 39;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let has = |c: u32| eff & (1u64 << c) != 0;
    let fix = "(e.g. `setcap cap_bpf,cap_net_admin,cap_perfmon+ep lb`, or AmbientCapabilities= in the systemd unit)";
    if !(has(CAP_BPF) || has(CAP_SYS_ADMIN)) {
        // No BPF at all (a container, say): XDP is structurally out.
        return Err(crate::xdp::Unavailable {
            code: "no_cap_bpf",
            why: format!(
                "lb run has no CAP_BPF (nor CAP_SYS_ADMIN) to load XDP programs; grant CAP_BPF and CAP_NET_ADMIN {fix}; effective capabilities are {eff:#x}"
            ),
        }
        .into());
    }
    if !has(CAP_NET_ADMIN) {
        bail!("lb run has CAP_BPF but not CAP_NET_ADMIN, which attaching XDP needs; grant it {fix}; effective capabilities are {eff:#x}");
    }
    Ok(())
}

pub fn load_config(path: &Path) -> Result<Config> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Config::parse(&text).map_err(|e| anyhow::anyhow!("{}: invalid config:\n{e}", path.display()))
}

/// A target the daemon knows: registered in the config, or draining.
pub struct TargetRt {
    pub zone: String,
    pub weight: u32,
    pub tracker: Tracker,
    spec: Option<CheckSpec>,
    /// The running check loop (stopped when replaced or dropped).
    task: Option<checker::ProbeTask>,
    /// Set while deregistered: flows go on until then, no new ones.
    pub draining_until: Option<Instant>,
}

pub fn target_name(k: &TargetKey) -> String {
    format!("{}/{}", k.target_group, SocketAddr::new(k.address, k.port))
}

pub struct Daemon {
    pub cfg: Config,
    vip_ids: Ids<ListenerKey>,
    backend_ids: Ids<TargetKey>,
    pub model: Model,
    pub targets: BTreeMap<TargetKey, TargetRt>,
    by_id: HashMap<u32, TargetKey>,
    pub plane: Plane,
    tx: mpsc::Sender<CheckResult>,
    /// Targets in service before a restart (from adopted maps).
    was_valid: std::collections::BTreeSet<TargetKey>,
    /// The last two counter samples (for rates).
    pub samples: (Option<crate::status::Sample>, Option<crate::status::Sample>),
    pub flow_count: Option<crate::status::FlowCount>,
    /// Live conntrack flows, counted by a thread of their own (XDP).
    pub live_flows: Option<Arc<crate::ctwalk::Shared>>,
    /// Config reloads: (ok, failed).
    pub reloads: (u64, u64),
    /// Route announcement (`[announce]`).
    pub announcer: Option<Announcer>,
    /// The data plane forwards: VIPs may be announced.
    pub serving: bool,
    /// Why `auto` fell back to the proxy: (label, text).
    pub fallback: Option<(&'static str, String)>,
    /// When to try again to start an announcer that failed to start.
    announce_retry: Option<Instant>,
}

impl Daemon {
    pub fn new(cfg: Config, plane: Plane, tx: mpsc::Sender<CheckResult>) -> Result<Daemon> {
        let adopted = plane.adopted_ids();
        let mut d = Daemon {
            cfg: Config::default(),
            vip_ids: Ids::new(0),
            backend_ids: Ids::new(1),
            model: Model::build(
                &Config::default(),
                &mut Ids::new(0),
                &mut Ids::new(1),
                &BTreeMap::new(),
            ),
            targets: BTreeMap::new(),
            by_id: HashMap::new(),
            plane,
            tx,
            was_valid: Default::default(),
            samples: (None, None),
            flow_count: None,
            live_flows: None,
            reloads: (0, 0),
            announcer: None,
            serving: false,
            fallback: None,
            announce_retry: None,
        };
        // A restart: keep the ids the pinned maps (and conntrack) use.
        for (k, vip_id) in adopted.vips {
            let lk = ListenerKey {
                address: crate::model::words_addr(&k.addr, k.family),
                port: u16::from_be(k.port),
                proto: k.proto,
            };
            d.vip_ids.map.insert(lk, vip_id);
        }
        let (now, boot) = (Instant::now(), crate::model::boottime_s());
        for (id, b) in adopted.backends {
            let addr = crate::model::words_addr(&b.addr, b.family);
            let port = u16::from_be(b.port);
            let group = cfg
                .target_groups
                .iter()
                .find(|tg| lb_common::tg_hash(&tg.name) == b.tg_hash);
            let key = group.map(|tg| TargetKey {
                target_group: tg.name.clone(),
                address: addr,
                port,
            });
            let configured = group.is_some_and(|tg| {
                tg.targets
                    .iter()
                    .any(|t| t.address == addr && t.port as u16 == port)
            });
            let valid = b.flags & lb_common::BACKEND_F_VALID != 0;
            match (key, group) {
                (Some(key), Some(_)) if configured => {
                    d.backend_ids.map.insert(key.clone(), id);
                    if valid {
                        d.was_valid.insert(key);
                    }
                }
                // Draining when the daemon stopped: the drain goes on for
                // the time it had left, its flows with it.
                (Some(key), Some(tg)) if valid && b.drain_until_s > boot => {
                    let left = Duration::from_secs((b.drain_until_s - boot) as u64);
                    info!(
                        "target {} was draining: adopted, {left:?} left",
                        target_name(&key)
                    );
                    let hc = &tg.health_check;
                    let spec = hc
                        .enabled
                        .then(|| CheckSpec::new(hc, SocketAddr::new(addr, port)));
                    let tracker = if spec.is_none() {
                        Tracker::always_healthy()
                    } else {
                        Tracker::new(hc.healthy_threshold, hc.unhealthy_threshold).assume_healthy()
                    };
                    d.backend_ids.map.insert(key.clone(), id);
                    d.targets.insert(
                        key,
                        TargetRt {
                            zone: String::new(),
                            weight: 1,
                            tracker,
                            spec,
                            task: None,
                            draining_until: Some(now + left),
                        },
                    );
                }
                // Gone from the config (or its drain is over): its id may be
                // given to another target, so its flows must not stay.
                _ => {
                    let n = d.plane.purge_backend(id);
                    info!(
                        "pinned target {} (backend {id}) is no longer configured: {n} flows dropped",
                        SocketAddr::new(addr, port)
                    );
                }
            }
        }
        d.apply_config(cfg);
        Ok(d)
    }

    /// Takes a new (validated) config: deregistered targets start draining,
    /// new ones start health checks, then the model is rebuilt.
    pub fn apply_config(&mut self, cfg: Config) {
        let now = Instant::now();
        let mut wanted = BTreeMap::new();
        for tg in &cfg.target_groups {
            for t in &tg.targets {
                wanted.insert(TargetKey::of(tg, t), (tg, t));
            }
        }
        let old_delay: HashMap<&str, Duration> = self
            .cfg
            .target_groups
            .iter()
            .map(|tg| (tg.name.as_str(), tg.deregistration_delay))
            .collect();
        for (k, rt) in self.targets.iter_mut() {
            if !wanted.contains_key(k) && rt.draining_until.is_none() {
                let delay = old_delay
                    .get(k.target_group.as_str())
                    .copied()
                    .unwrap_or_default();
                info!(
                    "target {} deregistered: draining for {delay:?}",
                    target_name(k)
                );
                rt.draining_until = Some(now + delay);
            }
        }
        for (k, (tg, t)) in &wanted {
            let spec = tg.health_check.enabled.then(|| {
                CheckSpec::new(&tg.health_check, SocketAddr::new(t.address, t.port as u16))
            });
            let hc = &tg.health_check;
            match self.targets.get_mut(k) {
                Some(rt) => {
                    if rt.draining_until.take().is_some() {
                        info!(
                            "target {} registered again: draining cancelled",
                            target_name(k)
                        );
                    }
                    rt.zone = t.zone.clone();
                    rt.weight = t.weight;
                    if rt.spec.is_some() {
                        rt.tracker
                            .set_thresholds(hc.healthy_threshold, hc.unhealthy_threshold);
                    }
                    if rt.spec != spec {
                        // New check settings: restart the probe, keep the state.
                        rt.task = None;
                        rt.spec = spec;
                        if rt.spec.is_none() {
                            let was = rt.tracker.state;
                            rt.tracker = Tracker::always_healthy();
                            // Every transition is logged, also one that
                            // config made.
                            if was != rt.tracker.state {
                                info!(
                                    "target {} (zone {}): {was} -> {}: health checks disabled by config",
                                    target_name(k),
                                    rt.zone,
                                    rt.tracker.state
                                );
                            }
                        }
                    }
                }
                None => {
                    let tracker = if spec.is_none() {
                        Tracker::always_healthy()
                    } else if self.was_valid.remove(k) {
                        Tracker::new(hc.healthy_threshold, hc.unhealthy_threshold).assume_healthy()
                    } else {
                        Tracker::new(hc.healthy_threshold, hc.unhealthy_threshold)
                    };
                    self.targets.insert(
                        k.clone(),
                        TargetRt {
                            zone: t.zone.clone(),
                            weight: t.weight,
                            tracker,
                            spec,
                            task: None,
                            draining_until: None,
                        },
                    );
                }
            }
        }
        self.cfg = cfg;
        self.rebuild();
    }

    fn rebuild(&mut self) {
        let (now, boot) = (Instant::now(), crate::model::boottime_s());
        let draining: BTreeMap<TargetKey, BackendModel> = self
            .targets
            .iter()
            .filter_map(|(k, rt)| {
                let until = rt.draining_until?;
                let left = until.saturating_duration_since(now).as_secs_f64().ceil() as u32;
                Some((
                    k.clone(),
                    BackendModel {
                        id: 0,
                        key: k.clone(),
                        zone: rt.zone.clone(),
                        weight: rt.weight,
                        drain_until_s: boot.saturating_add(left).max(1),
                    },
                ))
            })
            .collect();
        self.model = Model::build(
            &self.cfg,
            &mut self.vip_ids,
            &mut self.backend_ids,
            &draining,
        );
        self.by_id = self
            .model
            .backends
            .iter()
            .map(|(id, b)| (*id, b.key.clone()))
            .collect();
        for (k, rt) in self.targets.iter_mut() {
            if rt.task.is_none() {
                if let Some(spec) = &rt.spec {
                    rt.task = Some(checker::spawn(k.clone(), spec.clone(), self.tx.clone()));
                }
            }
        }
    }

    fn target(&self, id: u32) -> Option<&TargetRt> {
        self.by_id.get(&id).and_then(|k| self.targets.get(k))
    }

    /// May take new flows: registered and healthy.
    pub fn in_ring(&self, id: u32) -> bool {
        self.target(id)
            .is_some_and(|rt| rt.draining_until.is_none() && rt.tracker.in_service())
    }

    /// May keep its flows: healthy, registered or draining.
    pub fn valid(&self, id: u32) -> bool {
        self.target(id)
            .is_some_and(|rt| rt.tracker.state == Health::Healthy)
    }

    /// Programs the data plane from the model and the targets' state.
    pub fn sync(&mut self) -> Result<()> {
        if let Some(l) = &self.live_flows {
            *l.globals.lock().unwrap() = Some(self.model.globals);
        }
        let in_ring: HashMap<u32, bool> = self
            .by_id
            .keys()
            .map(|&id| (id, self.in_ring(id)))
            .collect();
        let valid: HashMap<u32, bool> = self.by_id.keys().map(|&id| (id, self.valid(id))).collect();
        let r = |m: &HashMap<u32, bool>, id: u32| m.get(&id).copied().unwrap_or(false);
        let ppv2: HashMap<String, bool> = self
            .cfg
            .target_groups
            .iter()
            .map(|tg| (tg.name.clone(), tg.proxy_protocol_v2))
            .collect();
        let res = self.plane.sync(
            &self.model,
            &|id| r(&in_ring, id),
            &|id| r(&valid, id),
            &|tg| ppv2.get(tg).copied().unwrap_or(false),
        );
        self.announce(res.is_ok());
        res
    }

    /// Tells the announcer which VIP addresses have a healthy target and
    /// are served (proxy: a listener is open). After a failed sync
    /// (`synced` false) only withdrawals apply.
    fn announce(&self, synced: bool) {
        let Some(a) = self.announcer.as_ref().filter(|_| self.serving) else {
            return;
        };
        let mut wanted = crate::announce::wanted(&self.model, &|id| self.in_ring(id));
        if let Some(open) = self.plane.proxy_addresses() {
            wanted.retain(|addr| open.contains(addr));
        }
        a.set(wanted, synced);
    }

    /// The data plane forwards from now on: announce.
    pub fn start_serving(&mut self) {
        self.serving = true;
        self.announce(true);
    }

    /// Starts, stops or restarts the announcer to match the config.
    pub async fn update_announcer(&mut self) -> Result<()> {
        if self.announcer.as_ref().map(|a| &a.cfg) == self.cfg.announce.as_ref() {
            return Ok(());
        }
        if let Some(a) = self.announcer.take() {
            a.shutdown().await;
        }
        if let Some(cfg) = self.cfg.announce.clone() {
            self.announcer = Some(Announcer::start(&cfg).await?);
            self.announce(true);
        }
        Ok(())
    }

    /// `update_announcer` while running (after a reload, then from the tick
    /// while it fails): a failure is logged once and retried every 5s.
    async fn reconcile_announcer(&mut self) {
        let now = Instant::now();
        if self.announce_retry.is_some_and(|t| t > now) {
            return;
        }
        let failing = self.announce_retry.is_some();
        match self.update_announcer().await {
            Ok(()) => {
                if failing {
                    info!("announcement started");
                }
                self.announce_retry = None;
            }
            Err(e) => {
                if !failing {
                    error!("announcement stopped: {e:#} (retrying every 5s)");
                }
                self.announce_retry = Some(now + Duration::from_secs(5));
            }
        }
    }

    fn sync_logged(&mut self) {
        if let Err(e) = self.sync() {
            error!("programming the data plane failed: {e:#}");
        }
    }

    /// Applies a check result. Returns the transition's log line (and
    /// whether it is a warning) when the target changed state; the caller
    /// logs it once the data plane reflects it.
    pub fn on_result(&mut self, r: CheckResult) -> Option<(bool, String)> {
        let rt = self.targets.get_mut(&r.key)?;
        let tr = rt.tracker.observe(r.ok, &r.reason)?;
        let msg = format!(
            "target {} (zone {}): {} -> {}: {}",
            target_name(&r.key),
            rt.zone,
            tr.from,
            tr.to,
            tr.reason
        );
        Some((tr.to == Health::Unhealthy, msg))
    }

    /// Syncs, then logs what the sync put into effect.
    pub fn apply_results(&mut self, msgs: Vec<(bool, String)>) {
        if msgs.is_empty() {
            return;
        }
        self.sync_logged();
        for (warn, m) in msgs {
            if warn {
                warn!("{m}");
            } else {
                info!("{m}");
            }
        }
    }

    /// Ends the draining of targets whose delay is over. True if any.
    pub fn expire_drains(&mut self) -> bool {
        let now = Instant::now();
        let done: Vec<TargetKey> = self
            .targets
            .iter()
            .filter(|(_, rt)| rt.draining_until.is_some_and(|t| t <= now))
            .map(|(k, _)| k.clone())
            .collect();
        if done.is_empty() {
            return false;
        }
        let ids: Vec<u32> = done
            .iter()
            .filter_map(|k| self.backend_ids.get(k))
            .collect();
        for k in &done {
            self.targets.remove(k);
        }
        self.rebuild();
        self.sync_logged();
        for (k, id) in done.iter().zip(ids) {
            let n = self.plane.purge_backend(id);
            info!(
                "target {} drained: removed, {n} remaining live flows dropped",
                target_name(k)
            );
        }
        true
    }

    /// Waits for the first result of every checked target (bounded by the
    /// longest check timeout), so the first rings reflect real health.
    pub async fn first_round(&mut self, rx: &mut mpsc::Receiver<CheckResult>) {
        let longest = self
            .cfg
            .target_groups
            .iter()
            .filter(|tg| tg.health_check.enabled)
            .map(|tg| tg.health_check.timeout)
            .max()
            .unwrap_or_default();
        let deadline = Instant::now() + longest + Duration::from_millis(500);
        while self
            .targets
            .values()
            .any(|rt| rt.tracker.state == Health::Initial)
        {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(r)) => {
                    if let Some((_, m)) = self.on_result(r) {
                        info!("{m}");
                    }
                }
                _ => break,
            }
        }
    }

    fn reload(&mut self, path: &Path) {
        match load_config(path) {
            Err(e) => {
                self.reloads.1 += 1;
                // One log line per event, whatever the number of errors.
                let msg = format!("{e:#}").replace("\n    ", " ").replace('\n', "; ");
                error!("reload failed, keeping the running config: {msg}");
            }
            Ok(mut new) => {
                let kept = new.gateway.keep_restart_only(&self.cfg.gateway);
                if !kept.is_empty() {
                    warn!(
                        "gateway.{} changed: restart-only, the running values stay until a restart",
                        kept.join(", gateway.")
                    );
                }
                // Draining targets keep their ids: the new config must fit
                // beside them, or nothing of it is applied.
                let mut ids: std::collections::BTreeSet<TargetKey> =
                    self.targets.keys().cloned().collect();
                for tg in &new.target_groups {
                    ids.extend(tg.targets.iter().map(|t| TargetKey::of(tg, t)));
                }
                let max = self.cfg.gateway.max_targets as usize;
                if ids.len() > max {
                    self.reloads.1 += 1;
                    error!(
                        "reload refused, keeping the running config: gateway.max_targets = {max}, but the new config's targets and those draining (or starting to drain) need {} ids; wait for the drains to end, lower deregistration_delay, or raise max_targets (a restart)",
                        ids.len()
                    );
                    return;
                }
                self.apply_config(new);
                match self.sync() {
                    Ok(()) => {
                        self.reloads.0 += 1;
                        info!(
                            "config reloaded: {} listener keys, {} targets",
                            self.model.vips.len(),
                            self.model.backends.len()
                        );
                    }
                    Err(e) => {
                        self.reloads.1 += 1;
                        error!(
                            "config reload applied, but programming the data plane failed: {e:#}"
                        );
                    }
                }
            }
        }
    }
}

pub async fn run(config_path: PathBuf, detach_on_exit: bool) -> Result<()> {
    let cfg = load_config(&config_path)?;
    let kind = cfg.gateway.dataplane;
    let pin = cfg.gateway.pin_path.clone();
    // One daemon per pinned state: a second would fight over the maps.
    let _lock = lock_instance(&pin)?;
    let proxy = |cfg: &Config| {
        let g = &cfg.gateway;
        Plane::Proxy(ProxyDataplane::new(Settings {
            connect_timeout: g.proxy_connect_timeout,
            tcp_idle: g.tcp_idle_timeout,
            udp_idle: g.udp_idle_timeout,
            max_udp_sessions: g.proxy_udp_sessions as usize,
            max_vips: g.max_vips,
            max_targets: g.max_targets,
        }))
    };
    // auto: native XDP, then generic XDP (in attach), then the proxy only
    // where XDP cannot run at all; every step that fails says why.
    let mut fallback = None;
    let plane = match kind {
        DataplaneKind::Proxy => {
            info!("data plane: proxy (gateway.dataplane = \"proxy\")");
            proxy(&cfg)
        }
        _ => match load_xdp(&cfg, &pin) {
            Ok(x) => Plane::Xdp(Box::new(x)),
            Err(e) if kind == DataplaneKind::Auto => match crate::xdp::unavailable(&e) {
                Some(why) => {
                    warn!(
                        "XDP is not available ({}); falling back to the proxy data plane",
                        why.1
                    );
                    fallback = Some(why);
                    proxy(&cfg)
                }
                None => return Err(fixable(e)),
            },
            Err(e) => return Err(e),
        },
    };
    let (tx, mut rx) = mpsc::channel(1024);
    let mut d = Daemon::new(cfg, plane, tx)?;
    d.fallback = fallback;
    if let Plane::Xdp(x) = &d.plane {
        let shared = Arc::new(crate::ctwalk::Shared::default());
        crate::ctwalk::spawn(x.conntrack_fd()?, shared.clone(), Duration::from_secs(5));
        d.live_flows = Some(shared);
    }
    // The device is made now, so a clash stops the start before anything
    // is attached; routes come once the data plane forwards.
    d.update_announcer().await?;
    d.first_round(&mut rx).await;
    if matches!(d.plane, Plane::Xdp(_)) {
        d.sync().context("programming the maps")?;
        if let Err(e) = attach_all(&mut d) {
            // Not a fallback: the interfaces that worked are detached again
            // (an earlier run's pinned state stays as it was), and the
            // operator is told what to fix.
            if let Plane::Xdp(x) = &mut d.plane {
                x.undo_start();
            }
            return Err(if kind == DataplaneKind::Auto {
                fixable(e)
            } else {
                e
            });
        }
    }
    // XDP was programmed before attaching; the proxy starts here.
    if matches!(d.plane, Plane::Proxy(_)) {
        d.sync().context("starting the data plane")?;
    }
    let healthy = d
        .targets
        .values()
        .filter(|t| t.tracker.in_service())
        .count();
    info!(
        "serving {} listener keys, {} targets ({healthy} healthy), zone {:?}",
        d.model.vips.len(),
        d.model.backends.len(),
        d.model.zone
    );
    let mode = d
        .plane
        .modes()
        .first()
        .map(|(_, m)| m.clone())
        .unwrap_or_default();
    let _ = crate::notify::notify(&format!(
        "READY=1\nSTATUS=serving {} listener keys, {healthy} healthy targets ({mode})",
        d.model.vips.len()
    ));
    let (admin_tx, mut admin_rx) = mpsc::channel(16);
    if !d.cfg.gateway.metrics_address.is_empty() {
        let addr = d
            .cfg
            .gateway
            .metrics_address
            .parse()
            .context("gateway.metrics_address")?;
        crate::admin::serve_metrics(addr, admin_tx.clone()).await?;
    }
    crate::admin::serve_status(&d.cfg.gateway.admin_socket, admin_tx).await?;
    d.start_serving();
    d.take_sample();
    let mut sample_tick = tokio::time::interval(Duration::from_secs(2));
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    // A hung main loop stops the pings; systemd then kills the daemon, and
    // with it the announced routes.
    let watchdog = crate::notify::watchdog_interval();
    let mut watchdog_tick = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    loop {
        tokio::select! {
            _ = term.recv() => { info!("SIGTERM"); break; }
            _ = int.recv() => { info!("SIGINT"); break; }
            _ = hup.recv() => {
                let _ = crate::notify::notify("RELOADING=1");
                d.reload(&config_path);
                // A new config is tried at once, even while retrying.
                d.announce_retry = None;
                d.reconcile_announcer().await;
                let _ = crate::notify::notify("READY=1");
            }
            _ = tick.tick() => {
                d.expire_drains();
                d.reconcile_announcer().await;
            }
            _ = sample_tick.tick() => d.take_sample(),
            _ = watchdog_tick.tick(), if watchdog.is_some() => {
                let _ = crate::notify::notify("WATCHDOG=1");
            }
            Some(req) = admin_rx.recv() => match req {
                crate::admin::AdminReq::Metrics(tx) => { let _ = tx.send(d.render_metrics()); }
                crate::admin::AdminReq::Status(tx) => { let _ = tx.send(d.render_status()); }
            },
            Some(r) = rx.recv() => {
                let mut msgs: Vec<_> = d.on_result(r).into_iter().collect();
                while let Ok(r) = rx.try_recv() {
                    msgs.extend(d.on_result(r));
                }
                d.apply_results(msgs);
            }
        }
    }
    let _ = crate::notify::notify("STOPPING=1");
    // Withdrawn first: upstream routers move the traffic to other gateways
    // while this one still forwards what arrives meanwhile. XDP stays
    // attached after the exit; the proxy (or XDP with --detach-on-exit)
    // keeps serving for `withdraw_grace` so that nothing is refused while
    // the routers converge.
    if let Some(a) = d.announcer.take() {
        let grace = a.cfg.withdraw_grace;
        a.shutdown().await;
        let goes_away = detach_on_exit || matches!(d.plane, Plane::Proxy(_));
        if goes_away && !grace.is_zero() {
            info!("announce: serving {grace:?} more while routers move the traffic (announce.withdraw_grace)");
            tokio::time::sleep(grace).await;
        }
    }
    let _ = std::fs::remove_file(&d.cfg.gateway.admin_socket);
    let was_xdp = matches!(d.plane, Plane::Xdp(_));
    drop(d);
    if !was_xdp {
        info!("exiting (proxy data plane: connections end with the process)");
    } else if detach_on_exit {
        for m in crate::xdp::stop(&pin)? {
            info!("{m}");
        }
    } else {
        info!(
            "exiting; XDP stays attached and keeps forwarding with the last state (pins in {}); `lb stop` detaches",
            pin.display()
        );
    }
    Ok(())
}
