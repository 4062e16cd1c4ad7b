//! The daemon's state and its event loop: config, targets, health results,
//! drains and reloads in; one `Desired` state out to the data planes.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    time::Duration,
};

use anyhow::Result;
use log::{error, info, warn};
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::mpsc,
    time::Instant,
};

use super::{
    announce::{self, Announcer},
    host,
    registry::Registry,
    targets::{target_name, DrainEnd, Targets},
    vip_routes::{self, VipRoutes},
};
use crate::{
    config::Config,
    dataplane::{Dataplane, Planes},
    health::CheckResult,
    model::{AdoptedIds, Desired, Ids, ListenerKey, Model, RingCache, TargetKey},
    telemetry::{
        admin::AdminReq,
        elbv2::{self, ApiError, Call},
        metrics, notify,
        sampler::Sampler,
        status, LastReload, View,
    },
};

/// How a reload failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The file does not validate: nothing applied.
    Invalid,
    /// It does not fit beside the draining targets: nothing applied.
    Refused,
    /// Applied, but the data plane could not be programmed.
    Unprogrammed,
}

impl Failure {
    fn prefix(self) -> &'static str {
        match self {
            Failure::Invalid => "reload failed, keeping the running config: ",
            Failure::Refused => "reload refused, keeping the running config: ",
            Failure::Unprogrammed => {
                "config reload applied, but programming the data plane failed: "
            }
        }
    }
}

pub struct Daemon {
    /// The config in effect: the file's, with the registered targets.
    pub cfg: Config,
    /// The config file as read (restart-only settings as running).
    file_cfg: Config,
    /// Targets registered at runtime (`gateway.state_dir`).
    pub registry: Registry,
    vip_ids: Ids<ListenerKey>,
    pub model: Model,
    pub targets: Targets,
    rings: RingCache,
    pub planes: Planes,
    pub sampler: Sampler,
    /// Config reloads: (ok, failed).
    pub reloads: (u64, u64),
    /// The last reload's result.
    pub last_reload: Option<LastReload>,
    /// Target groups failing open now (with their target count), and how
    /// often each started to.
    failed_open: BTreeMap<String, (usize, usize)>,
    fail_open_total: BTreeMap<String, u64>,
    /// Route announcement (`[announce]`).
    pub announcer: Option<Announcer>,
    /// The data plane forwards: VIPs may be announced.
    pub serving: bool,
    /// Why `auto` fell back to the proxy: (label, text).
    pub fallback: Option<(&'static str, String)>,
    /// When to try again to start an announcer that failed to start.
    announce_retry: Option<Instant>,
    /// The VIPs' unreachable routes (XDP), once netlink is open.
    pub vip_routes: Option<VipRoutes>,
    /// The last error of theirs, logged once.
    vip_routes_error: Option<String>,
    /// Passive health as last read, by backend id.
    passive_seen: std::collections::HashMap<u32, lb_common::BackendHealth>,
}

/// SIGTERM, SIGINT and SIGHUP, taken over before the start: one that
/// arrives while the daemon starts waits for the loop (the default action
/// would kill it before it could say what stays attached).
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    pub fn install() -> Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }
}

impl Daemon {
    /// A daemon for `cfg` on `planes`; `adopted` is what pinned maps held
    /// (a restart), whose ids are kept.
    pub fn new(
        cfg: Config,
        registry: Registry,
        planes: Planes,
        adopted: AdoptedIds,
        tx: mpsc::Sender<CheckResult>,
    ) -> Daemon {
        let mut d = Daemon {
            cfg: Config::default(),
            file_cfg: cfg,
            registry,
            vip_ids: Ids::new(0),
            model: Model::build(
                &Config::default(),
                &mut Ids::new(0),
                &mut Ids::new(1),
                &Default::default(),
            ),
            targets: Targets::new(tx),
            rings: RingCache::default(),
            planes,
            sampler: Sampler::default(),
            reloads: (0, 0),
            last_reload: None,
            failed_open: BTreeMap::new(),
            fail_open_total: BTreeMap::new(),
            announcer: None,
            serving: false,
            fallback: None,
            announce_retry: None,
            vip_routes: None,
            vip_routes_error: None,
            passive_seen: Default::default(),
        };
        for (k, vip_id) in adopted.vips {
            let lk = ListenerKey {
                address: crate::model::words_addr(&k.addr, k.family),
                port: u16::from_be(k.port),
                proto: k.proto,
            };
            d.vip_ids.adopt(lk, vip_id);
        }
        // Registered targets are configured too: they keep their ids.
        let cfg = d.merged();
        for s in d.targets.adopt(&cfg, &adopted.backends) {
            let n = d.planes.purge(s.id);
            info!(
                "pinned target {} (backend {}) is no longer configured: {n} flows dropped",
                s.addr, s.id
            );
        }
        d.apply_config(cfg);
        d
    }

    /// The file's config with the registered targets (what cannot be
    /// placed is logged).
    /// A merge that does not validate (the file changed under runtime
    /// settings while the daemon was down) serves the file alone, loudly;
    /// the state file keeps them.
    fn merged(&self) -> Config {
        let (cfg, warnings) = self.registry.merged(&self.file_cfg);
        for w in warnings {
            warn!("{w}");
        }
        if let Some(e) = cfg.validate().into_iter().next() {
            error!(
                "the targets and attributes set at runtime do not fit the config file ({e}): serving the file's config alone; fix the file or the runtime settings (lb targets, lb attributes)"
            );
            return self.file_cfg.clone();
        }
        cfg
    }

    /// Takes a new (validated) config: deregistered targets start draining,
    /// new ones start health checks, then the model is rebuilt.
    pub fn apply_config(&mut self, cfg: Config) {
        self.targets.apply_config(&self.cfg, &cfg);
        self.cfg = cfg;
        self.rebuild();
    }

    fn rebuild(&mut self) {
        let draining = self.targets.draining();
        self.model = Model::build(
            &self.cfg,
            &mut self.vip_ids,
            &mut self.targets.ids,
            &draining,
        );
        self.targets.rebuilt(&self.model);
    }

    /// Programs the data planes from the model and the targets' state.
    pub fn sync(&mut self) -> Result<()> {
        let targets = &self.targets;
        let desired = Desired::compute(&self.model, &mut self.rings, |id| targets.state(id));
        let res = self.planes.apply(&desired);
        let failed_open = desired.failed_open.clone();
        self.note_fail_open(failed_open);
        self.announce(res.is_ok());
        res
    }

    /// Logs (loudly) and counts the groups that start or stop failing open.
    fn note_fail_open(&mut self, now: BTreeMap<String, (usize, usize)>) {
        for (g, &(healthy, n)) in &now {
            if !self.failed_open.contains_key(g) {
                *self.fail_open_total.entry(g.clone()).or_default() += 1;
                let why = match healthy {
                    0 => "every target is unhealthy".to_string(),
                    h => format!(
                        "only {h} of {n} targets healthy, below unhealthy_state_routing's minimum"
                    ),
                };
                error!(
                    "target group {g}: {why}: failing open, new flows go to all {n} of them (target_group.fail_open)"
                );
            }
        }
        for g in self.failed_open.keys() {
            if !now.contains_key(g) {
                warn!(
                    "target group {g}: fail-open ended (a target is healthy, or the group changed)"
                );
            }
        }
        self.failed_open = now;
    }

    /// Tells the announcer which VIP addresses have a healthy target and
    /// are served. After a failed sync (`synced` false) only withdrawals
    /// apply.
    fn announce(&self, synced: bool) {
        let Some(a) = self.announcer.as_ref().filter(|_| self.serving) else {
            return;
        };
        // By real health, not fail-open: a gateway whose targets all fail
        // withdraws, so that others carry the traffic (NLB's DNS failover).
        let mut wanted = announce::wanted(&self.model, &|id| self.targets.state(id).in_ring);
        if let Some(open) = self.planes.served_addresses() {
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

    /// Ends the drains that are over (delay run out, or no live flow
    /// left). True if any.
    pub fn expire_drains(&mut self) -> bool {
        let kept = self.targets.take_keep_over();
        if !kept.is_empty() {
            self.sync_logged();
            for k in kept {
                info!(
                    "target {}: unhealthy_draining_interval over: its flows end",
                    target_name(&k)
                );
            }
        }
        // Counting flows may walk conntrack: only while something drains.
        if !self.targets.any_draining() {
            return false;
        }
        let done = self.targets.take_drained(&self.planes.flows());
        if done.is_empty() {
            return false;
        }
        self.rebuild();
        self.sync_logged();
        for t in done {
            let n = t.id.map_or(0, |id| self.planes.purge(id));
            match t.end {
                DrainEnd::Delay => info!(
                    "target {} drained: removed, {n} remaining live flows dropped",
                    target_name(&t.key)
                ),
                DrainEnd::Early(left) => info!(
                    "target {} drained early: no live flow left, {}s before deregistration_delay ran out; removed",
                    target_name(&t.key),
                    left.as_secs()
                ),
                DrainEnd::Idle => info!(
                    "target {} drained: its last flow ended after deregistration_delay; removed",
                    target_name(&t.key)
                ),
            }
        }
        true
    }

    /// Reads the data path's passive health: a target it tripped since the
    /// last look becomes suspect (out of the rings, which the program
    /// already avoids on its own). The first look only learns the counts.
    pub fn poll_passive(&mut self) {
        let mut seen = std::collections::HashMap::new();
        let mut msgs = Vec::new();
        for &id in self.model.backends.keys() {
            let Some(now) = self.planes.passive(id) else {
                return;
            };
            if let Some(prev) = self.passive_seen.get(&id) {
                // Fewer than before: the id's counts were reset (a new
                // target took it); nothing tripped.
                if now.trips > prev.trips
                    && now.refused + now.unanswered >= prev.refused + prev.unanswered
                {
                    let why = crate::health::passive::describe(prev, &now);
                    msgs.extend(self.targets.on_passive(id, why));
                }
            }
            seen.insert(id, now);
        }
        self.passive_seen = seen;
        self.apply_results(msgs);
    }

    /// Waits for the first result of every checked target (bounded by the
    /// longest check timeout), so the first rings reflect real health.
    pub async fn first_round(&mut self, rx: &mut mpsc::Receiver<CheckResult>) {
        let longest = self
            .cfg
            .target_groups
            .iter()
            .filter(|tg| tg.health_check.enabled)
            .map(|tg| tg.health_check.timeout())
            .max()
            .unwrap_or_default();
        let deadline = Instant::now() + longest + Duration::from_millis(500);
        while self.targets.any_initial() {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(r)) => {
                    if let Some((_, m)) = self.targets.on_result(r) {
                        info!("{m}");
                    }
                }
                _ => break,
            }
        }
    }

    /// Re-reads the config file: applied whole, or not at all. Logs and
    /// records the result, and returns it as a line for `lb reload`.
    fn reload(&mut self, path: &Path) -> Result<String, String> {
        let res = self.try_reload(path);
        let applied = matches!(res, Ok(_) | Err((Failure::Unprogrammed, _)));
        let line = match &res {
            Ok(m) => {
                self.reloads.0 += 1;
                info!("{m}");
                Ok(m.clone())
            }
            Err((kind, why)) => {
                self.reloads.1 += 1;
                let m = format!("{}{why}", kind.prefix());
                error!("{m}");
                Err(m)
            }
        };
        self.last_reload = Some(LastReload {
            at: std::time::SystemTime::now(),
            result: res.map_err(|(_, why)| why),
            applied,
        });
        line
    }

    fn try_reload(&mut self, path: &Path) -> Result<String, (Failure, String)> {
        let mut file = Config::load(path).map_err(|e| {
            // One log line per event, whatever the number of errors.
            let msg = format!("{e:#}")
                .replace(":\n", ": ")
                .replace("\n    ", " ")
                .replace('\n', "; ");
            (Failure::Invalid, msg)
        })?;
        let kept = file.gateway.keep_restart_only(&self.cfg.gateway);
        super::seed::fill(&mut file.gateway).map_err(|e| (Failure::Invalid, format!("{e:#}")))?;
        let (new, placed) = self.registry.merged(&file);
        if let Some(e) = new.validate().into_iter().next() {
            return Err((
                Failure::Refused,
                format!(
                    "with the targets and attributes set at runtime, the new config is invalid: {e} (lb targets deregister / lb attributes reset, or change the file)"
                ),
            ));
        }
        let kept = if kept.is_empty() {
            String::new()
        } else {
            let w = format!(
                "gateway.{} changed: restart-only, the running values stay until a restart",
                kept.join(", gateway.")
            );
            warn!("{w}");
            format!("; {w}")
        };
        self.fits(&new)
            .map_err(|why| (Failure::Refused, format!("the new config's {why}")))?;
        for w in placed {
            warn!("{w}");
        }
        self.file_cfg = file;
        self.apply_config(new);
        self.sync()
            .map_err(|e| (Failure::Unprogrammed, format!("{e:#}")))?;
        let registered = match self.registry.count() {
            0 => String::new(),
            n => format!(" ({n} registered at runtime)"),
        };
        Ok(format!(
            "config reloaded: {} listener keys, {} targets{registered}{kept}",
            self.model.vips.len(),
            self.model.backends.len()
        ))
    }

    /// Draining targets keep their ids: a new config must fit beside them.
    fn fits(&self, new: &Config) -> Result<(), String> {
        let mut ids: BTreeSet<TargetKey> = self.targets.map.keys().cloned().collect();
        for tg in &new.target_groups {
            ids.extend(tg.targets.iter().map(|t| TargetKey::of(tg, t)));
        }
        let max = self.cfg.gateway.max_targets as usize;
        if ids.len() > max {
            return Err(format!(
                "targets and those draining (or starting to drain) need {} ids, but gateway.max_targets = {max}; wait for the drains to end, lower deregistration_delay, or raise max_targets (a restart)",
                ids.len()
            ));
        }
        Ok(())
    }

    /// An API call (`lb targets`): registrations are validated, written to
    /// the state file, then applied as a reload would (one rebuild for the
    /// whole call); a refused call changes nothing.
    fn api(&mut self, call: Call) -> Result<serde_json::Value, ApiError> {
        let names = |ts: &[elbv2::TargetDescription]| {
            let n: Vec<String> = ts
                .iter()
                .map(|t| match t.port {
                    Some(p) => format!("{}:{p}", t.id),
                    None => t.id.clone(),
                })
                .collect();
            format!("{} target(s): {}", n.len(), n.join(", "))
        };
        let pairs = |r: &elbv2::AttributesRequest| -> Vec<(String, String)> {
            r.attributes
                .iter()
                .map(|a| (a.key.clone(), a.value.clone()))
                .collect()
        };
        let (next, verb, what, owner) = match call {
            Call::Describe(r) => {
                return Ok(serde_json::to_value(self.describe(&r)?).unwrap_or_default())
            }
            Call::Explain(r) => {
                let targets = &self.targets;
                let d = Desired::compute(&self.model, &mut self.rings, |id| targets.state(id));
                let now = crate::dataplane::xdp::ctwalk::coarse_now_ns();
                let planes = &self.planes;
                let suspect = |id| planes.passive(id).is_some_and(|h| h.suspect_until_ns > now);
                return super::inspect::explain(&d, &r, &suspect);
            }
            Call::Flows(_) => unreachable!("answered off the main loop"),
            Call::DescribeAttributes(r) => return self.attributes_of(&r.owner()?),
            Call::Register(r) => (
                self.registry
                    .register(&self.file_cfg, &r.target_group_arn, &r.targets)?,
                "registered",
                names(&r.targets),
                elbv2::Owner::Group(elbv2::group_name(&r.target_group_arn).to_string()),
            ),
            Call::Deregister(r) => (
                self.registry
                    .deregister(&self.file_cfg, &r.target_group_arn, &r.targets)?,
                "deregistered",
                names(&r.targets),
                elbv2::Owner::Group(elbv2::group_name(&r.target_group_arn).to_string()),
            ),
            Call::ModifyAttributes(r) => (
                self.registry
                    .modify(&self.file_cfg, &r.owner()?, &pairs(&r), false)?,
                "modified",
                format!(
                    "attributes {}",
                    r.attributes
                        .iter()
                        .map(|a| format!("{}={}", a.key, a.value))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                r.owner()?,
            ),
            Call::ResetAttributes(r) => (
                self.registry
                    .modify(&self.file_cfg, &r.owner()?, &pairs(&r), true)?,
                "reset",
                format!(
                    "attributes {} (to the config file's values)",
                    r.attributes
                        .iter()
                        .map(|a| a.key.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                r.owner()?,
            ),
        };
        let (merged, _) = next.merged(&self.file_cfg);
        self.fits(&merged)
            .map_err(|why| ApiError::new("TooManyTargets", why))?;
        let dir = &self.cfg.gateway.state_dir;
        next.save(dir)
            .map_err(|e| ApiError::new("InternalFailure", format!("{e:#} (nothing was {verb})")))?;
        self.registry = next;
        self.apply_config(merged);
        info!("{owner}: {verb} {what} (API)");
        self.sync().map_err(|e| {
            ApiError::new(
                "InternalFailure",
                format!("{verb} and saved, but programming the data plane failed: {e:#}"),
            )
        })?;
        match verb {
            "modified" | "reset" => self.attributes_of(&owner),
            _ => Ok(serde_json::json!({})),
        }
    }

    /// `Describe{TargetGroup,Listener}Attributes`: the attributes in
    /// effect, and which were set at runtime.
    fn attributes_of(&self, owner: &elbv2::Owner) -> Result<serde_json::Value, ApiError> {
        let all = match owner {
            elbv2::Owner::Group(g) => super::attributes::all(
                (self.cfg.target_groups.iter())
                    .find(|t| &t.name == g)
                    .ok_or_else(|| ApiError::not_found(g))?,
            ),
            elbv2::Owner::Listener(l) => super::attributes::listener_all(
                (self.cfg.listeners.iter())
                    .find(|x| &x.name == l)
                    .ok_or_else(|| ApiError::listener_not_found(l))?,
                self.cfg.gateway.tcp_idle_timeout,
            ),
        };
        let runtime = self.registry.attributes_of(owner);
        let attrs: Vec<serde_json::Value> = all
            .into_iter()
            .map(|(k, v)| {
                let set = runtime.is_some_and(|r| r.contains_key(&k));
                serde_json::json!({ "Key": k, "Value": v, "SetAtRuntime": set })
            })
            .collect();
        Ok(serde_json::json!({ "Attributes": attrs }))
    }

    /// What a conntrack walk for `lb flows` needs.
    fn flows_job(&self) -> Result<super::inspect::FlowsJob, ApiError> {
        let tables = self.planes.flow_table().ok_or_else(|| {
            ApiError::new(
                "UnsupportedOperation",
                "flows are listed from XDP's conntrack; this daemon runs the proxy data plane",
            )
        })?;
        Ok(super::inspect::FlowsJob {
            tables,
            globals: self.model.globals,
            targets: self
                .model
                .backends
                .iter()
                .map(|(id, b)| {
                    let addr = std::net::SocketAddr::new(b.key.address, b.key.port);
                    (*id, (b.key.target_group.clone(), addr))
                })
                .collect(),
            listeners: self
                .model
                .vips
                .iter()
                .map(|v| (v.vip_id, v.listener.clone()))
                .collect(),
        })
    }

    /// `DescribeTargetHealth`: every target of the group (or of all),
    /// registered, from the config, or draining.
    fn describe(&self, r: &elbv2::DescribeRequest) -> Result<elbv2::DescribeResponse, ApiError> {
        let group = r.target_group_arn.as_deref().map(elbv2::group_name);
        if let Some(g) = group {
            if !self.cfg.target_groups.iter().any(|t| t.name == g) {
                return Err(ApiError::not_found(g));
            }
        }
        let views = self.targets.view();
        let mut out = Vec::new();
        for (k, v) in &views {
            if group.is_some_and(|g| g != k.target_group) {
                continue;
            }
            if let Some(only) = &r.targets {
                if !only.iter().any(|t| {
                    t.address().ok() == Some(k.address) && t.port.is_none_or(|p| p == k.port)
                }) {
                    continue;
                }
            }
            let tg = self
                .cfg
                .target_groups
                .iter()
                .find(|t| t.name == k.target_group);
            let hc = tg.map(|t| &t.health_check);
            let zone = self.targets.map.get(k).map(|rt| rt.zone.clone());
            let registered = self
                .registry
                .target_groups
                .get(&k.target_group)
                .is_some_and(|l| {
                    l.iter()
                        .any(|t| t.address == k.address && t.port.0 == k.port)
                });
            let in_file = self.file_cfg.target_groups.iter().any(|t| {
                t.name == k.target_group
                    && t.targets
                        .iter()
                        .any(|x| x.address == k.address && x.port.0 == k.port)
            });
            out.push(elbv2::TargetHealthDescription {
                target: elbv2::TargetDescription {
                    id: k.address.to_string(),
                    port: Some(k.port),
                    availability_zone: zone,
                    weight: self.targets.map.get(k).map(|rt| rt.weight),
                },
                health_check_port: hc.map(|h| h.port.map_or(k.port, |p| p.0).to_string()),
                target_health: elbv2::target_health(v, hc.is_none_or(|h| h.enabled)),
                target_group: k.target_group.clone(),
                source: match (in_file, registered) {
                    (true, _) => "config",
                    (false, true) => "registered",
                    (false, false) => "deregistered",
                }
                .into(),
            });
        }
        Ok(elbv2::DescribeResponse {
            target_health_descriptions: out,
        })
    }

    /// Keeps the VIPs' unreachable routes equal to the listeners' addresses
    /// (netlink only when they change).
    pub async fn reconcile_vip_routes(&mut self) {
        if !self.serving || !self.planes.passes_vip_traffic() {
            return;
        }
        let res = async {
            if self.vip_routes.is_none() {
                self.vip_routes = Some(VipRoutes::open().await?);
            }
            let wanted = match self.cfg.gateway.unreachable_routes {
                true => {
                    let local: Vec<_> = host::local_addresses()
                        .into_iter()
                        .map(|(_, a)| a)
                        .collect();
                    vip_routes::wanted(&self.model, &local)
                }
                false => Default::default(),
            };
            self.vip_routes.as_mut().expect("opened").set(wanted).await
        }
        .await;
        match res {
            Ok(()) => {
                if self.vip_routes_error.take().is_some() {
                    info!("vip route: in sync again");
                }
            }
            Err(e) => {
                let msg = format!("{e:#}");
                if self.vip_routes_error.as_ref() != Some(&msg) {
                    error!("vip route: {msg} (gateway.unreachable_routes; retrying)");
                }
                self.vip_routes_error = Some(msg);
            }
        }
    }

    /// SIGHUP or `lb reload`: reload, then (re)start the announcer as the
    /// new config says.
    async fn reload_all(&mut self, path: &Path) -> Result<String, String> {
        let _ = notify::notify("RELOADING=1");
        let res = self.reload(path);
        // A new config is tried at once, even while retrying.
        self.announce_retry = None;
        self.reconcile_announcer().await;
        self.reconcile_vip_routes().await;
        let _ = notify::notify("READY=1");
        res
    }

    /// What metrics and status read.
    fn view(&self) -> View<'_> {
        View {
            model: &self.model,
            targets: self.targets.view(),
            planes: &self.planes,
            sampler: &self.sampler,
            flows: self.planes.flows(),
            reloads: self.reloads,
            last_reload: self.last_reload.as_ref(),
            failed_open: &self.failed_open,
            fail_open_total: &self.fail_open_total,
            announced: self
                .announcer
                .as_ref()
                .map(|a| (&a.cfg, a.announced.lock().unwrap().clone())),
            fallback: self.fallback.as_ref(),
            dataplane: self.cfg.gateway.dataplane,
        }
    }

    pub fn take_sample(&mut self) {
        self.sampler.take(&self.model, &self.planes);
    }

    async fn answer(&mut self, req: AdminReq, config_path: &Path) {
        match req {
            AdminReq::Metrics(tx) => {
                let _ = tx.send(metrics::render(&self.view()));
            }
            AdminReq::Status { json: false, tx } => {
                let _ = tx.send(status::render(&self.view()));
            }
            AdminReq::Status { json: true, tx } => {
                let _ = tx.send(status::render_json(&self.view()));
            }
            AdminReq::Api {
                call: Call::Flows(r),
                tx,
            } => match self.flows_job() {
                // The walk may take a while on a large table: off the loop.
                Ok(job) => {
                    tokio::task::spawn_blocking(move || {
                        let _ = tx.send(super::inspect::flows(&job, &r));
                    });
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            },
            AdminReq::Api { call, tx } => {
                let _ = tx.send(self.api(call));
            }
            AdminReq::Reload { file, tx } => {
                let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.into());
                let line = match file {
                    Some(f) if canon(&f) != canon(config_path) => format!(
                        "error: this daemon runs with {}, not {}: a reload re-reads the daemon's own file (edit that one, or restart it with -c {})\n",
                        config_path.display(),
                        f.display(),
                        f.display()
                    ),
                    _ => match self.reload_all(config_path).await {
                        Ok(m) => format!("ok: {m} (from {})\n", config_path.display()),
                        Err(m) => format!("error: {m}\n"),
                    },
                };
                let _ = tx.send(line);
            }
        }
    }

    /// Serves until SIGTERM or SIGINT: reloads on SIGHUP, health results,
    /// drains, admin requests, counter samples, watchdog pings.
    pub async fn serve(
        &mut self,
        config_path: &Path,
        rx: &mut mpsc::Receiver<CheckResult>,
        admin_rx: &mut mpsc::Receiver<AdminReq>,
        signals: Signals,
    ) -> Result<()> {
        let mut sample_tick = tokio::time::interval(Duration::from_secs(2));
        let Signals {
            mut term,
            mut int,
            mut hup,
        } = signals;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        // The program reacts to failures itself; this only makes it last.
        let mut passive_tick = tokio::time::interval(Duration::from_millis(100));
        // A hung main loop stops the pings; systemd then kills the daemon,
        // and with it the announced routes.
        let watchdog = notify::watchdog_interval();
        let mut watchdog_tick =
            tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
        loop {
            tokio::select! {
                _ = term.recv() => { info!("SIGTERM"); break; }
                _ = int.recv() => { info!("SIGINT"); break; }
                _ = hup.recv() => { let _ = self.reload_all(config_path).await; }
                _ = tick.tick() => {
                    self.expire_drains();
                    self.reconcile_announcer().await;
                    self.reconcile_vip_routes().await;
                }
                _ = sample_tick.tick() => self.take_sample(),
                _ = passive_tick.tick() => self.poll_passive(),
                _ = watchdog_tick.tick(), if watchdog.is_some() => {
                    let _ = notify::notify("WATCHDOG=1");
                }
                Some(req) = admin_rx.recv() => self.answer(req, config_path).await,
                Some(r) = rx.recv() => {
                    let mut msgs: Vec<_> = self.targets.on_result(r).into_iter().collect();
                    while let Ok(r) = rx.try_recv() {
                        msgs.extend(self.targets.on_result(r));
                    }
                    self.apply_results(msgs);
                }
            }
        }
        Ok(())
    }
}
