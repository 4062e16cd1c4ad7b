//! Config -> data plane model: VIP keys, backend ids, reverse NAT entries and
//! Maglev ring inputs; with health applied, the `Desired` state the data
//! planes are programmed with. Pure, so host tests cover it and every gateway
//! with the same config computes the same thing.

pub mod acl;
mod addr;
mod desired;
mod ids;
mod rings;

pub use addr::{addr_words, words_addr, Family};
pub use desired::{Desired, Rings, TargetState};
pub use ids::{AdoptedIds, Ids};
pub use rings::RingCache;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
};

use lb_common::{
    maglev::{self, MaglevTarget},
    Backend, Globals, ReverseEntry, ReverseKey, ReverseVal, VipKey, BACKEND_F_VALID,
    VIP_F_ALLOW_LIST, VIP_F_CROSS_ZONE, VIP_F_DENY_LIST, VIP_F_REDISPATCH, VIP_F_SNAT,
    VIP_F_STICKY,
};

use crate::config::{Config, Mode, Stickiness, TargetGroup, DEFAULT_SNAT_PORTS};

/// CLOCK_BOOTTIME in whole seconds: drain deadlines kept in the pinned
/// `BACKENDS` map, valid across daemon restarts (not across reboots, where
/// the maps are gone anyway).
pub fn boottime_s() -> u32 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out pointer; CLOCK_BOOTTIME always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u32
}

/// `ReverseKey` with an order (map bookkeeping, deterministic output).
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Clone, Copy)]
pub struct ReverseKeyOrd(pub [u32; 4], pub u16, pub u8, pub u8);

impl ReverseKeyOrd {
    pub fn of(k: &ReverseKey) -> Self {
        ReverseKeyOrd(k.addr, k.port, k.proto, k.family)
    }

    pub fn key(&self) -> ReverseKey {
        ReverseKey {
            addr: self.0,
            port: self.1,
            proto: self.2,
            family: self.3,
        }
    }
}

/// Identity of a target inside its target group.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TargetKey {
    pub target_group: String,
    pub address: IpAddr,
    pub port: u16,
}

impl TargetKey {
    pub fn of(tg: &TargetGroup, t: &crate::config::Target) -> TargetKey {
        TargetKey {
            target_group: tg.name.clone(),
            address: t.address,
            port: t.port.0,
        }
    }
}

/// Identity of a listener key (one per protocol of a listener).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ListenerKey {
    pub address: IpAddr,
    pub port: u16,
    pub proto: u8,
}

#[derive(Debug, Clone)]
pub struct BackendModel {
    pub id: u32,
    pub key: TargetKey,
    pub zone: String,
    pub weight: u32,
    /// Draining: the end of the drain in CLOCK_BOOTTIME seconds; else 0.
    pub drain_until_s: u32,
    /// Its group's passive health threshold (0: off).
    pub passive_failures: u8,
}

#[derive(Debug, Clone)]
pub struct VipModel {
    pub key: VipKey,
    pub lkey: ListenerKey,
    pub vip_id: u32,
    pub flags: u32,
    pub snat_addr: [u32; 4],
    /// TCP VIPs: the listener's idle timeout in seconds; 0: the gateway's.
    pub idle_timeout_s: u16,
    /// Sources that may open flows (empty: all); `Model::deny` wins.
    pub allow: Vec<ipnet::IpNet>,
    pub listener: String,
    pub target_group: String,
    /// The group sends a PROXY protocol v2 header (proxy data plane).
    pub ppv2: bool,
    /// A TLS listener (served by the proxy).
    pub tls: Option<crate::config::tls::TlsSpec>,
    /// Its group's `target_tls`.
    pub target_tls: Option<crate::config::tls::TargetTls>,
    /// The group fails open (`target_group.fail_open`).
    pub fail_open: bool,
    /// The group's minimum healthy targets (zone failover, fail-open).
    pub min_healthy: crate::config::UnhealthyStateRouting,
    /// Backend ids of the group's registered targets (ring members).
    pub backends: Vec<u32>,
    /// Backend ids of the group's draining targets: in no ring, but their
    /// replies are still translated.
    pub draining: Vec<u32>,
}

/// Everything the data plane is programmed with, except health.
#[derive(Debug, Clone)]
pub struct Model {
    pub globals: Globals,
    pub zone: String,
    pub vips: Vec<VipModel>,
    pub backends: BTreeMap<u32, BackendModel>,
    /// The gateway's deny list (every listener).
    pub deny: Vec<ipnet::IpNet>,
}

impl Model {
    /// Builds the model, assigning ids through the (persistent) allocators.
    /// `draining` targets keep their ids and `BACKENDS` entries (their flows
    /// go on) but are in no ring.
    pub fn build(
        cfg: &Config,
        vip_ids: &mut Ids<ListenerKey>,
        backend_ids: &mut Ids<TargetKey>,
        draining: &BTreeMap<TargetKey, BackendModel>,
    ) -> Model {
        let (backends, keep) = build_backends(cfg, backend_ids, draining);
        let lkeys: BTreeSet<ListenerKey> = cfg
            .listeners
            .iter()
            .flat_map(|l| {
                l.protocol.ip_protos().iter().map(|&proto| ListenerKey {
                    address: l.address,
                    port: l.port.0,
                    proto,
                })
            })
            .collect();
        vip_ids.assign(&lkeys, &BTreeSet::new());
        let tgs: HashMap<&str, _> = cfg
            .target_groups
            .iter()
            .map(|t| (t.name.as_str(), t))
            .collect();
        let mut vips = Vec::new();
        for l in &cfg.listeners {
            let Some(tg) = tgs.get(l.target_group.as_str()) else {
                continue;
            };
            for &proto in l.protocol.ip_protos() {
                let lkey = ListenerKey {
                    address: l.address,
                    port: l.port.0,
                    proto,
                };
                let vip_id = vip_ids.get(&lkey).expect("assigned");
                let mut v = vip_model(l, tg, lkey, vip_id, backend_ids, &keep);
                if !cfg.gateway.deny.is_empty() {
                    v.flags |= VIP_F_DENY_LIST;
                }
                vips.push(v);
            }
        }
        vips.sort_by_key(|v| v.vip_id);
        Model {
            globals: globals(cfg),
            zone: cfg.gateway.zone.clone(),
            vips,
            backends,
            deny: cfg.gateway.deny.clone(),
        }
    }

    /// The `BACKENDS` map value for a backend id.
    pub fn backend_value(&self, id: u32, valid: bool) -> Option<Backend> {
        let b = self.backends.get(&id)?;
        let (addr, family) = addr_words(b.key.address);
        Some(Backend {
            addr,
            port: b.key.port.to_be(),
            family,
            passive_failures: b.passive_failures,
            flags: if valid { BACKEND_F_VALID } else { 0 },
            tg_hash: lb_common::tg_hash(&b.key.target_group),
            drain_until_s: b.drain_until_s,
        })
    }

    /// `NAT_REVERSE` entries: target -> the `nat` listeners it serves (with
    /// its backend id in each), in vip_id order. Validation keeps them to
    /// `REVERSE_SLOTS`; more would be cut off here.
    pub fn reverse_entries(&self) -> Vec<(ReverseKey, ReverseVal)> {
        let mut by: BTreeMap<ReverseKeyOrd, ReverseVal> = BTreeMap::new();
        for v in self.vips.iter().filter(|v| v.flags & VIP_F_SNAT == 0) {
            for id in v.backends.iter().chain(&v.draining) {
                let b = &self.backends[id];
                let (addr, family) = addr_words(b.key.address);
                let k = ReverseKeyOrd(addr, b.key.port.to_be(), v.key.proto, family);
                let val = by.entry(k).or_default();
                if let Some(e) = val.entries.iter_mut().find(|e| e.backend_id == 0) {
                    *e = ReverseEntry {
                        vip_id: v.vip_id,
                        backend_id: *id,
                    };
                }
            }
        }
        by.into_iter().map(|(k, v)| (k.key(), v)).collect()
    }

    /// The Maglev inputs of a VIP's zone ring (targets in this gateway's
    /// zone; empty with cross-zone on, where it is unused) and of its
    /// all-zones ring, over the targets `healthy` says may take new flows.
    pub fn ring_inputs(
        &self,
        vip: &VipModel,
        healthy: &dyn Fn(u32) -> bool,
    ) -> (Vec<MaglevTarget>, Vec<MaglevTarget>) {
        let mk = |zone_only: bool| -> Vec<MaglevTarget> {
            vip.backends
                .iter()
                .map(|id| &self.backends[id])
                .filter(|b| healthy(b.id) && (!zone_only || b.zone == self.zone))
                .map(|b| {
                    let (addr, family) = addr_words(b.key.address);
                    MaglevTarget {
                        addr,
                        port: b.key.port.to_be(),
                        family,
                        id: b.id,
                        weight: b.weight,
                    }
                })
                .collect()
        };
        // A zone with fewer healthy targets than the group's minimum is not
        // used alone: an empty zone ring sends its flows to all zones.
        let zone_total = vip
            .backends
            .iter()
            .filter(|id| self.backends[*id].zone == self.zone)
            .count();
        let zone = match vip.flags & VIP_F_CROSS_ZONE {
            0 => mk(true),
            _ => Vec::new(),
        };
        let zone = match zone.len() < vip.min_healthy.needed(zone_total) {
            true => Vec::new(),
            false => zone,
        };
        (zone, mk(false))
    }

    /// The zone ring and the all-zones ring of a VIP (see `ring_inputs`).
    pub fn rings(&self, vip: &VipModel, healthy: &dyn Fn(u32) -> bool) -> (Vec<u32>, Vec<u32>) {
        let m = self.globals.ring_size;
        let (zone, all) = self.ring_inputs(vip, healthy);
        (maglev::build(&zone, m), maglev::build(&all, m))
    }
}

/// The program's global settings from the gateway's.
fn globals(cfg: &Config) -> Globals {
    let (pmin, pmax) = cfg.snat_port_range().unwrap_or(DEFAULT_SNAT_PORTS);
    Globals {
        ring_size: cfg.gateway.ring_size,
        snat_port_min: pmin,
        snat_port_max: pmax,
        tcp_timeout_s: cfg.gateway.tcp_idle_timeout.as_secs().max(1) as u32,
        udp_timeout_s: cfg.gateway.udp_idle_timeout.as_secs().max(1) as u32,
        closing_timeout_s: cfg.gateway.tcp_closing_timeout.as_secs().max(1) as u32,
        fib_cache_ms: cfg.gateway.fib_cache.as_millis() as u32,
        // Shared out over the CPUs, each of which counts its own.
        new_flows_per_cpu: (cfg.gateway.new_flows_per_second())
            .div_ceil(aya::util::nr_cpus().unwrap_or(1).max(1) as u32),
        snat_strides: lb_common::snat::strides(pmax.saturating_sub(pmin) as u32 + 1),
        syn_timeout_s: cfg.gateway.tcp_syn_timeout.as_secs().max(1) as u32,
        // Unset: the daemon fills in the gateway's own (`control::seed`).
        hash_key: cfg.gateway.hash_key().unwrap_or_default(),
        flags: if cfg.gateway.reply_source_check {
            lb_common::GLOBAL_F_REPLY_SIDE
        } else {
            0
        } | if cfg.gateway.answer_ping {
            lb_common::GLOBAL_F_PING
        } else {
            0
        },
    }
}

/// Backends by id: the config's targets, then the draining ones that left
/// it (returned as well: they keep their ids).
fn build_backends(
    cfg: &Config,
    backend_ids: &mut Ids<TargetKey>,
    draining: &BTreeMap<TargetKey, BackendModel>,
) -> (BTreeMap<u32, BackendModel>, BTreeSet<TargetKey>) {
    let tkeys: BTreeSet<TargetKey> = cfg
        .target_groups
        .iter()
        .flat_map(|tg| tg.targets.iter().map(|t| TargetKey::of(tg, t)))
        .collect();
    let keep: BTreeSet<TargetKey> = draining
        .keys()
        .filter(|k| !tkeys.contains(*k))
        .cloned()
        .collect();
    backend_ids.assign(&tkeys, &keep);
    let mut backends = BTreeMap::new();
    for k in &keep {
        let id = backend_ids.get(k).expect("kept");
        let mut b = draining[k].clone();
        b.id = id;
        backends.insert(id, b);
    }
    for tg in &cfg.target_groups {
        for t in &tg.targets {
            let key = TargetKey::of(tg, t);
            let id = backend_ids.get(&key).expect("assigned");
            backends.insert(
                id,
                BackendModel {
                    id,
                    key,
                    zone: t.zone.clone(),
                    weight: t.weight,
                    drain_until_s: 0,
                    passive_failures: tg.passive_health.threshold(),
                },
            );
        }
    }
    (backends, keep)
}

/// One listener key of listener `l` (served by `tg`).
fn vip_model(
    l: &crate::config::Listener,
    tg: &TargetGroup,
    lkey: ListenerKey,
    vip_id: u32,
    backend_ids: &Ids<TargetKey>,
    draining: &BTreeSet<TargetKey>,
) -> VipModel {
    let (addr, family) = addr_words(l.address);
    let mut flags = 0;
    if tg.cross_zone {
        flags |= VIP_F_CROSS_ZONE;
    }
    if tg.stickiness == Stickiness::SourceIp {
        flags |= VIP_F_STICKY;
    }
    if tg.mode == Mode::Snat {
        flags |= VIP_F_SNAT;
    }
    if tg.syn_redispatch {
        flags |= VIP_F_REDISPATCH;
    }
    if !l.allow.is_empty() {
        flags |= VIP_F_ALLOW_LIST;
    }
    let idle_timeout_s = if lkey.proto == lb_common::PROTO_TCP {
        l.tcp_idle_secs()
    } else {
        0
    };
    VipModel {
        key: VipKey {
            addr,
            port: lkey.port.to_be(),
            proto: lkey.proto,
            family,
        },
        vip_id,
        lkey,
        flags,
        snat_addr: tg.snat_address.map(|a| addr_words(a).0).unwrap_or_default(),
        idle_timeout_s,
        allow: l.allow.clone(),
        listener: l.name.clone(),
        target_group: tg.name.clone(),
        ppv2: tg.proxy_protocol_v2,
        tls: l.tls(),
        target_tls: tg.target_tls(),
        fail_open: tg.fail_open,
        min_healthy: tg.unhealthy_state_routing,
        backends: tg
            .targets
            .iter()
            .filter_map(|t| backend_ids.get(&TargetKey::of(tg, t)))
            .collect(),
        draining: draining
            .iter()
            .filter(|k| k.target_group == tg.name)
            .filter_map(|k| backend_ids.get(k))
            .collect(),
    }
}
