//! Map sizes from the config, and the program's maps as typed handles.

use anyhow::{Context as _, Result};
use aya::{
    maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray},
    Ebpf,
};
use lb_common::{
    names, Backend, BackendHealth, Counters, FlowKey, FlowKey4, FlowState, Globals, ReverseKey,
    ReverseVal, SnatKey, SnatVal, VipKey, VipMeta, VipSlot, RINGS_PER_VIP,
};

use crate::config::Config;

/// Map sizes, from the config.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    pub max_vips: u32,
    pub max_targets: u32,
    pub ring_size: u32,
    pub conntrack: u32,
    pub snat: u32,
    pub passthrough: u32,
}

impl Sizes {
    pub fn from_config(cfg: &Config) -> Sizes {
        let g = &cfg.gateway;
        Sizes {
            max_vips: g.max_vips,
            max_targets: g.max_targets,
            ring_size: g.ring_size,
            conntrack: g.conntrack_size,
            snat: g.snat_table_size,
            passthrough: g.passthrough_table_size,
        }
    }

    pub fn ring_entries(&self) -> u32 {
        self.max_vips * RINGS_PER_VIP * self.ring_size
    }

    /// Approximate map memory in bytes (values + keys, no kernel overhead).
    pub fn memory(&self) -> u64 {
        let cpus = aya::util::nr_cpus().unwrap_or(1) as u64;
        // Array values take 8 bytes each.
        let ring = self.ring_entries() as u64 * 8;
        // Conntrack is two tables of `conntrack_size`: IPv4, IPv6 flows.
        let ct = self.conntrack as u64 * ((16 + 24 + 64) + (40 + 24 + 64));
        let snat = self.snat as u64 * (40 + 48 + 64);
        let passthrough = self.passthrough as u64 * (40 + 8 + 64);
        let backends = (self.max_targets as u64 + 1) * (32 + 80);
        let stats = (self.max_vips as u64 + self.max_targets as u64 + 1) * 56 * cpus;
        ring + ct + snat + passthrough + backends + stats
    }
}

/// The program's maps, taken out of the `Ebpf` once so they can be held
/// together.
pub struct Maps {
    pub globals: Array<MapData, Globals>,
    pub vips: BpfHashMap<MapData, VipKey, VipMeta>,
    pub vip_slots: Array<MapData, VipSlot>,
    pub ports: Array<MapData, u8>,
    pub ring: Array<MapData, u32>,
    pub backends: Array<MapData, Backend>,
    pub conntrack: BpfHashMap<MapData, FlowKey, FlowState>,
    pub conntrack4: BpfHashMap<MapData, FlowKey4, FlowState>,
    pub reverse: BpfHashMap<MapData, ReverseKey, ReverseVal>,
    pub snat: BpfHashMap<MapData, SnatKey, SnatVal>,
    pub vip_stats: PerCpuArray<MapData, Counters>,
    pub backend_stats: PerCpuArray<MapData, Counters>,
    pub reasons: PerCpuArray<MapData, u64>,
    pub backend_health: Array<MapData, BackendHealth>,
    pub acl: aya::maps::LpmTrie<MapData, lb_common::AclData, u8>,
    pub tx_ports: Array<MapData, u8>,
    pub vip_addrs: BpfHashMap<MapData, lb_common::VipAddr, u8>,
    pub addr_bits: Array<MapData, u8>,
    pub direct_slots: Array<MapData, u8>,
}

pub fn take<T: TryFrom<aya::maps::Map>>(ebpf: &mut Ebpf, name: &str) -> Result<T>
where
    T::Error: std::error::Error + Send + Sync + 'static,
{
    let m = ebpf
        .take_map(name)
        .with_context(|| format!("map {name} missing from object"))?;
    T::try_from(m).with_context(|| format!("map {name} has an unexpected type"))
}

/// Conntrack by family (`CONNTRACK4` for IPv4 flows, `CONNTRACK` for
/// IPv6), for one flow at a time: the daemon's walks use `ctwalk`.
impl Maps {
    pub fn ct_get(&self, k: &FlowKey) -> Result<FlowState, aya::maps::MapError> {
        if k.is_v4() {
            self.conntrack4.get(&k.v4(), 0)
        } else {
            self.conntrack.get(k, 0)
        }
    }

    pub fn ct_insert(&mut self, k: &FlowKey, st: &FlowState) -> Result<(), aya::maps::MapError> {
        if k.is_v4() {
            self.conntrack4.insert(k.v4(), st, 0)
        } else {
            self.conntrack.insert(k, st, 0)
        }
    }

    /// Every flow's key, both tables (IPv4 keys widened).
    pub fn ct_keys(&self) -> Vec<FlowKey> {
        let v4 = self
            .conntrack4
            .keys()
            .filter_map(|k| k.ok().map(|k| k.widen()));
        v4.chain(self.conntrack.keys().filter_map(|k| k.ok()))
            .collect()
    }
}

impl Maps {
    pub fn take(ebpf: &mut Ebpf) -> Result<Maps> {
        Ok(Maps {
            globals: take(ebpf, names::GLOBALS)?,
            vips: take(ebpf, names::VIPS)?,
            vip_slots: take(ebpf, names::VIP_SLOTS)?,
            ports: take(ebpf, names::PORTS)?,
            ring: take(ebpf, names::RING)?,
            backends: take(ebpf, names::BACKENDS)?,
            conntrack: take(ebpf, names::CONNTRACK)?,
            conntrack4: take(ebpf, names::CONNTRACK4)?,
            reverse: take(ebpf, names::NAT_REVERSE)?,
            snat: take(ebpf, names::SNAT)?,
            vip_stats: take(ebpf, names::VIP_STATS)?,
            backend_stats: take(ebpf, names::BACKEND_STATS)?,
            reasons: take(ebpf, names::REASONS)?,
            backend_health: take(ebpf, names::BACKEND_HEALTH)?,
            acl: take(ebpf, names::ACL)?,
            tx_ports: take(ebpf, names::TX_PORTS)?,
            vip_addrs: take(ebpf, names::VIP_ADDRS)?,
            addr_bits: take(ebpf, names::ADDR_BITS)?,
            direct_slots: take(ebpf, names::DIRECT_SLOTS)?,
        })
    }
}
