//! The targets the daemon knows: registered (in the config) or draining,
//! each with its health tracker and check loop, and their backend ids.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::SocketAddr,
    time::Duration,
};

use log::info;
use tokio::{sync::mpsc, time::Instant};

use crate::{
    config::{Config, Target, TargetGroup},
    dataplane::Flows,
    health::{probe, CheckResult, CheckSpec, Health, ProbeTask, Tracker},
    model::{boottime_s, words_addr, BackendModel, Ids, Model, TargetKey, TargetState},
    telemetry::TargetView,
};

/// A target the daemon knows: registered in the config, or draining.
pub struct TargetRt {
    pub zone: String,
    pub weight: u32,
    pub tracker: Tracker,
    spec: Option<CheckSpec>,
    /// The running check loop (stopped when replaced or dropped).
    task: Option<ProbeTask>,
    /// Set while deregistered: flows go on until then, no new ones.
    pub draining_until: Option<Instant>,
    /// When the drain began (or was adopted after a restart).
    drain_began: Option<Instant>,
    /// Flows still open at the drain's end are ended (else they go on).
    terminate_at_drain_end: bool,
    /// The delay is over, flows go on (termination off): said once.
    delay_over: bool,
    /// `unhealthy_connection_termination = false`: an unhealthy target keeps
    /// its flows, for this long (zero: until they end).
    keep_unhealthy: Option<Duration>,
    /// Since when it is unhealthy, and whether its kept flows were ended.
    unhealthy_since: Option<Instant>,
    keep_over: bool,
    /// Why passive health made it suspect (until its checks decide).
    passive: Option<String>,
}

pub fn target_name(k: &TargetKey) -> String {
    format!("{}/{}", k.target_group, SocketAddr::new(k.address, k.port))
}

/// The health check of `tg` for a target, and its tracker's start state.
fn check_of(tg: &TargetGroup, addr: SocketAddr, was_healthy: bool) -> (Option<CheckSpec>, Tracker) {
    let hc = &tg.health_check;
    let spec = hc.enabled.then(|| CheckSpec::new(hc, addr));
    let tracker = match (&spec, was_healthy) {
        (None, _) => Tracker::always_healthy(),
        (Some(_), true) => {
            Tracker::new(hc.healthy_threshold, hc.unhealthy_threshold).assume_healthy()
        }
        (Some(_), false) => Tracker::new(hc.healthy_threshold, hc.unhealthy_threshold),
    };
    (spec, tracker)
}

/// How a drain ended.
pub enum DrainEnd {
    /// The delay ran out: its flows are ended.
    Delay,
    /// No live flow was left this long before the delay ran out.
    Early(Duration),
    /// After the delay, its last flow ended (termination off).
    Idle,
}

/// A target whose drain ended.
pub struct Drained {
    pub key: TargetKey,
    pub id: Option<u32>,
    pub end: DrainEnd,
}

/// A pinned backend that could not be adopted: its flows must go.
pub struct Stale {
    pub id: u32,
    pub addr: SocketAddr,
}

pub struct Targets {
    pub map: BTreeMap<TargetKey, TargetRt>,
    /// Backend ids (kept across reloads and restarts).
    pub ids: Ids<TargetKey>,
    by_id: HashMap<u32, TargetKey>,
    /// Targets in service before a restart (from adopted maps).
    was_valid: BTreeSet<TargetKey>,
    tx: mpsc::Sender<CheckResult>,
}

impl Targets {
    pub fn new(tx: mpsc::Sender<CheckResult>) -> Targets {
        Targets {
            map: BTreeMap::new(),
            ids: Ids::new(1),
            by_id: HashMap::new(),
            was_valid: BTreeSet::new(),
            tx,
        }
    }

    /// A restart: keeps the ids the pinned maps (and conntrack) use, takes
    /// over targets that were draining for the time they had left, and
    /// returns the backends that are gone from `cfg`.
    pub fn adopt(&mut self, cfg: &Config, backends: &[(u32, lb_common::Backend)]) -> Vec<Stale> {
        let (now, boot) = (Instant::now(), boottime_s());
        let mut stale = Vec::new();
        for (id, b) in backends {
            let addr = SocketAddr::new(words_addr(&b.addr, b.family), u16::from_be(b.port));
            let group = cfg
                .target_groups
                .iter()
                .find(|tg| lb_common::tg_hash(&tg.name) == b.tg_hash);
            let valid = b.flags & lb_common::BACKEND_F_VALID != 0;
            let Some(tg) = group else {
                stale.push(Stale { id: *id, addr });
                continue;
            };
            let key = TargetKey {
                target_group: tg.name.clone(),
                address: addr.ip(),
                port: addr.port(),
            };
            let configured = tg
                .targets
                .iter()
                .any(|t| t.address == addr.ip() && t.port.0 == addr.port());
            if configured {
                self.ids.adopt(key.clone(), *id);
                if valid {
                    self.was_valid.insert(key);
                }
            } else if valid && b.drain_until_s > boot {
                // Draining when the daemon stopped: the drain goes on for
                // the time it had left, its flows with it.
                let left = Duration::from_secs((b.drain_until_s - boot) as u64);
                info!(
                    "target {} was draining: adopted, {left:?} left",
                    target_name(&key)
                );
                let (spec, tracker) = check_of(tg, addr, true);
                self.ids.adopt(key.clone(), *id);
                self.map.insert(
                    key,
                    TargetRt {
                        zone: String::new(),
                        weight: 1,
                        tracker,
                        spec,
                        task: None,
                        draining_until: Some(now + left),
                        drain_began: Some(now),
                        terminate_at_drain_end: tg.deregistration_connection_termination,
                        delay_over: false,
                        keep_unhealthy: keep_of(tg),
                        unhealthy_since: None,
                        keep_over: false,
                        passive: None,
                    },
                );
            } else {
                // Gone from the config (or its drain is over): its id may
                // be given to another target, so its flows must not stay.
                stale.push(Stale { id: *id, addr });
            }
        }
        stale
    }

    /// Takes a new (validated) config: deregistered targets start draining
    /// (for `old`'s delay), new ones start health checks.
    pub fn apply_config(&mut self, old: &Config, cfg: &Config) {
        let mut wanted = BTreeMap::new();
        for tg in &cfg.target_groups {
            for t in &tg.targets {
                wanted.insert(TargetKey::of(tg, t), (tg, t));
            }
        }
        self.deregister_missing(old, &wanted);
        for (k, (tg, t)) in &wanted {
            match self.map.get_mut(k) {
                Some(rt) => update(k, rt, tg, t),
                None => {
                    let addr = SocketAddr::new(t.address, t.port.0);
                    let (spec, tracker) = check_of(tg, addr, self.was_valid.remove(k));
                    self.map.insert(
                        k.clone(),
                        TargetRt {
                            zone: t.zone.clone(),
                            weight: t.weight,
                            tracker,
                            spec,
                            task: None,
                            draining_until: None,
                            drain_began: None,
                            terminate_at_drain_end: true,
                            delay_over: false,
                            keep_unhealthy: keep_of(tg),
                            unhealthy_since: None,
                            keep_over: false,
                            passive: None,
                        },
                    );
                }
            }
        }
    }

    /// Targets no longer in the config start draining.
    fn deregister_missing(
        &mut self,
        old: &Config,
        wanted: &BTreeMap<TargetKey, (&TargetGroup, &Target)>,
    ) {
        let now = Instant::now();
        let old_delay: HashMap<&str, (Duration, bool)> = old
            .target_groups
            .iter()
            .map(|tg| {
                let end = (
                    tg.deregistration_delay,
                    tg.deregistration_connection_termination,
                );
                (tg.name.as_str(), end)
            })
            .collect();
        for (k, rt) in self.map.iter_mut() {
            if !wanted.contains_key(k) && rt.draining_until.is_none() {
                let (delay, terminate) = old_delay
                    .get(k.target_group.as_str())
                    .copied()
                    .unwrap_or((Duration::ZERO, true));
                rt.terminate_at_drain_end = terminate;
                rt.delay_over = false;
                info!(
                    "target {} deregistered: draining for {delay:?}",
                    target_name(k)
                );
                rt.draining_until = Some(now + delay);
                rt.drain_began = Some(now);
            }
        }
    }

    /// The draining targets, as the model keeps them (in no ring).
    pub fn draining(&self) -> BTreeMap<TargetKey, BackendModel> {
        let (now, boot) = (Instant::now(), boottime_s());
        self.map
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
                        // Takes no new flows: nothing to watch.
                        passive_failures: 0,
                    },
                ))
            })
            .collect()
    }

    /// After a model rebuild: indexes the ids, starts missing check loops.
    pub fn rebuilt(&mut self, model: &Model) {
        self.by_id = model
            .backends
            .iter()
            .map(|(id, b)| (*id, b.key.clone()))
            .collect();
        for (k, rt) in self.map.iter_mut() {
            if rt.task.is_none() {
                if let Some(spec) = &rt.spec {
                    rt.task = Some(probe::spawn(k.clone(), spec.clone(), self.tx.clone()));
                }
            }
        }
    }

    /// What health and registration allow backend `id`.
    pub fn state(&self, id: u32) -> TargetState {
        let rt = self.by_id.get(&id).and_then(|k| self.map.get(k));
        rt.map_or(TargetState::default(), |rt| TargetState {
            in_ring: rt.draining_until.is_none() && rt.tracker.in_service(),
            valid: rt.tracker.keeps_flows() || rt.keeps_flows(Instant::now()),
        })
    }

    /// Removes the targets whose drain is over: its delay ran out, or
    /// (NLB does the same) no live flow of it is left, by a count taken
    /// after the drain began. Returns them with their ids.
    pub fn take_drained(&mut self, flows: &Flows) -> Vec<Drained> {
        let now = Instant::now();
        let idle = |k: &TargetKey, rt: &TargetRt| {
            let counted_after = match (flows.at, rt.drain_began) {
                (Some(at), Some(began)) => at > began.into_std(),
                _ => false,
            };
            let id = self.ids.get(k);
            counted_after
                && id.is_some_and(|id| flows.per_backend.get(&id).copied().unwrap_or(0) == 0)
        };
        let mut done: Vec<(TargetKey, DrainEnd)> = Vec::new();
        for (k, rt) in self.map.iter_mut() {
            let Some(until) = rt.draining_until else {
                continue;
            };
            let end = match (until <= now, rt.terminate_at_drain_end) {
                (true, true) => Some(DrainEnd::Delay),
                (true, false) if idle(k, rt) => Some(DrainEnd::Idle),
                (true, false) => {
                    if !rt.delay_over {
                        rt.delay_over = true;
                        // A count from before the drain says nothing of it.
                        let fresh = matches!(
                            (flows.at, rt.drain_began),
                            (Some(at), Some(b)) if at > b.into_std()
                        );
                        let n = self
                            .ids
                            .get(k)
                            .filter(|_| fresh)
                            .map(|id| flows.per_backend.get(&id).copied().unwrap_or(0));
                        info!(
                            "target {}: deregistration_delay over; its {}flows go on until they end (deregistration_connection_termination = false)",
                            target_name(k),
                            n.map_or(String::new(), |n| format!("{n} live "))
                        );
                    }
                    None
                }
                (false, _) if idle(k, rt) => Some(DrainEnd::Early(until - now)),
                (false, _) => None,
            };
            if let Some(e) = end {
                done.push((k.clone(), e));
            }
        }
        done.into_iter()
            .map(|(key, end)| {
                self.map.remove(&key);
                let id = self.ids.get(&key);
                Drained { key, id, end }
            })
            .collect()
    }

    /// Applies a check result. Returns the transition's log line (and
    /// whether it is a warning) when the target changed state.
    pub fn on_result(&mut self, r: CheckResult) -> Option<(bool, String)> {
        let rt = self.map.get_mut(&r.key)?;
        let tr = rt.tracker.observe(r.ok, &r.reason)?;
        if tr.from == Health::Suspect {
            rt.passive = None;
        }
        rt.unhealthy_since = (tr.to == Health::Unhealthy).then(Instant::now);
        rt.keep_over = false;
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

    /// The data path tripped backend `id`'s passive health (`why`): a
    /// healthy target becomes suspect. Returns the log line.
    pub fn on_passive(&mut self, id: u32, why: String) -> Option<(bool, String)> {
        let k = self.by_id.get(&id)?;
        let rt = self.map.get_mut(k)?;
        if rt.draining_until.is_some() {
            return None;
        }
        let name = target_name(k);
        if rt.spec.is_none() {
            return Some((
                true,
                format!(
                    "target {name} (zone {}): {why}; it has no active checks: new flows avoid it for {}s, then try it again",
                    rt.zone,
                    lb_common::passive::SUSPECT_HOLD_NS / 1_000_000_000
                ),
            ));
        }
        let tr = rt.tracker.passive_failure(&why)?;
        rt.passive = Some(why);
        Some((
            true,
            format!(
                "target {name} (zone {}): {} -> {}: {}; new flows avoid it until {} health checks pass",
                rt.zone,
                tr.from,
                tr.to,
                tr.reason,
                rt.tracker.healthy_threshold()
            ),
        ))
    }

    /// Unhealthy targets whose kept flows must end now (their
    /// `unhealthy_draining_interval` ran out); marked so, once.
    pub fn take_keep_over(&mut self) -> Vec<TargetKey> {
        let now = Instant::now();
        let mut out = Vec::new();
        for (k, rt) in self.map.iter_mut() {
            let over = match (rt.keep_unhealthy, rt.unhealthy_since) {
                (Some(d), Some(t)) => !d.is_zero() && t + d <= now,
                _ => false,
            };
            if over && !rt.keep_over {
                rt.keep_over = true;
                out.push(k.clone());
            }
        }
        out
    }

    pub fn any_draining(&self) -> bool {
        self.map.values().any(|rt| rt.draining_until.is_some())
    }

    /// Some checked target has no result yet.
    pub fn any_initial(&self) -> bool {
        self.map
            .values()
            .any(|rt| rt.tracker.state == Health::Initial)
    }

    pub fn in_service(&self) -> usize {
        self.map.values().filter(|t| t.tracker.in_service()).count()
    }

    /// The targets as reported.
    pub fn view(&self) -> BTreeMap<TargetKey, TargetView> {
        self.map
            .iter()
            .map(|(k, rt)| {
                let v = TargetView {
                    state: match rt.draining_until {
                        Some(_) => "draining",
                        None => rt.tracker.state.as_str(),
                    },
                    healthy: rt.tracker.state == Health::Healthy,
                    last_check: rt.tracker.last_reason.clone(),
                    passive: rt.passive.clone(),
                    drain_left: rt
                        .draining_until
                        .map(|t| t.saturating_duration_since(Instant::now())),
                };
                (k.clone(), v)
            })
            .collect()
    }
}

/// A registered target in the new config: cancels its drain, takes the new
/// zone, weight and check settings (a changed check restarts the probe and
/// keeps the state).
/// `None`: unhealthy targets lose their flows; else how long they keep
/// them (zero: until they end).
fn keep_of(tg: &TargetGroup) -> Option<Duration> {
    (!tg.unhealthy_connection_termination).then_some(tg.unhealthy_draining_interval)
}

impl TargetRt {
    /// Unhealthy, but its group keeps such targets' flows (for now).
    fn keeps_flows(&self, now: Instant) -> bool {
        match (self.keep_unhealthy, self.unhealthy_since) {
            (Some(d), Some(t)) => d.is_zero() || t + d > now,
            _ => false,
        }
    }
}

fn update(k: &TargetKey, rt: &mut TargetRt, tg: &TargetGroup, t: &Target) {
    let hc = &tg.health_check;
    rt.keep_unhealthy = keep_of(tg);
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
    let spec = hc
        .enabled
        .then(|| CheckSpec::new(hc, SocketAddr::new(t.address, t.port.0)));
    if rt.spec == spec {
        return;
    }
    rt.task = None;
    rt.spec = spec;
    if rt.spec.is_none() {
        let was = rt.tracker.state;
        rt.tracker = Tracker::always_healthy();
        // Every transition is logged, also one that config made.
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
