//! The XDP data plane: loads the program, sizes its maps from the config,
//! attaches it, and keeps the maps in sync with the desired state
//! (double-buffered rings).

pub mod ctwalk;
mod health;
mod loader;
pub mod maps;
mod mmap;
pub mod pins;
mod ring;
mod sync;

use std::{
    collections::{BTreeSet, HashMap},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use anyhow::Result;
use aya::{
    maps::{MapData, ProgramArray},
    Ebpf,
};
use lb_common::{BackendHealth, Counters, VipKey, REASON_COUNT};

use super::{Dataplane, Flows, Stats};
use crate::{
    config::DataplaneKind,
    model::{AdoptedIds, Desired, ReverseKeyOrd},
};
use health::HealthMmap;
pub use loader::{unavailable, Unavailable};
pub use maps::{Maps, Sizes};
use ring::RingMmap;

/// The XDP object built by build.rs (empty when built without a BPF toolchain).
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb"));

pub const PROG_LB: &str = "lb_xdp";
pub const PROG_PASS: &str = "xdp_pass";
pub const PROG_ICMP: &str = "lb_icmp";
pub const PROG_REPLY: &str = "lb_reply";

/// Where the program ended up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    Native,
    Generic,
}

impl AttachMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
        }
    }
}

pub struct XdpDataplane {
    pub ebpf: Ebpf,
    pin_dir: Option<PathBuf>,
    /// Held for the plane's life: no second daemon on these pins.
    _pin_lock: Option<std::fs::File>,
    /// The maps came from pins (a restart).
    pub adopted: bool,
    /// What the adopted maps held (empty when not adopted).
    found: AdoptedIds,
    ring_mem: RingMmap,
    health_mem: HealthMmap,
    /// Backends in a ring at the last sync: one that comes back has its
    /// passive suspect mark cleared.
    in_ring: BTreeSet<u32>,
    pub maps: Maps,
    /// Holds the tail-call table (its slots live as long as the map).
    jump: ProgramArray<MapData>,
    /// Whether `jump` points at this instance's programs yet (see `attach`).
    tail_calls_set: bool,
    pub sizes: Sizes,
    /// Active (zone ring id, all ring id) and their content, per vip_id.
    rings: HashMap<u32, RingState>,
    vips: HashMap<VipKey, u32>,
    reverse: BTreeSet<ReverseKeyOrd>,
    /// The `ACL` entries as last written.
    acl: BTreeSet<(u32, lb_common::AclData)>,
    /// The `VIP_ADDRS` keys as last written.
    vip_addrs: BTreeSet<lb_common::VipAddr>,
    /// The `ADDR_BITS` filter as last written.
    addr_bits: Vec<u8>,
    backends: BTreeSet<u32>,
    /// The `PORTS` bitmap as last written.
    port_bits: Vec<u8>,
    pub attached: Vec<(String, AttachMode)>,
    /// Links this run attached and pinned (not taken over from pins): what
    /// a failed start must take down again.
    new_links: Vec<PathBuf>,
    /// Where `start` attaches, and how.
    pub interfaces: Vec<String>,
    pub kind: DataplaneKind,
    /// Detach and remove the pinned state when the daemon exits.
    pub detach_on_exit: bool,
    /// The conntrack walker's counts, once `count_flows_every` started it.
    live: Option<Arc<ctwalk::Shared>>,
    /// Adopted pins: IPv4 flows an older build left in `CONNTRACK` leave
    /// it once every interface runs this build (`start`).
    v4_moves: bool,
}

/// A VIP's active ring slots and the tables last written there (`None`:
/// unknown, e.g. adopted after a restart: written on the next sync).
struct RingState {
    zone_id: u32,
    all_id: u32,
    zone: Option<Arc<Vec<u32>>>,
    all: Option<Arc<Vec<u32>>>,
}

impl XdpDataplane {
    /// Copies of the conntrack maps' fds, for walks off the main loop.
    pub fn flow_tables(&self) -> Result<ctwalk::FlowTables> {
        use aya::maps::IterableMap as _;
        Ok(ctwalk::FlowTables {
            v4: ctwalk::dup(self.maps.conntrack4.map())?,
            v6: ctwalk::dup(self.maps.conntrack.map())?,
        })
    }

    /// Deletes the conntrack entries that point at `backend_id` (a target
    /// whose draining ended). Returns how many.
    pub fn purge_backend(&mut self, backend_id: u32) -> usize {
        // Removes every entry of the target (and walks in batches), but
        // counts only the live flows: those a client notices.
        let g = self.maps.globals.get(&0, 0).ok();
        let Ok(tables) = self.flow_tables() else {
            return 0;
        };
        let now = ctwalk::coarse_now_ns();
        let mut doomed = Vec::new();
        let _ = tables.for_each(|k, st| {
            if st.backend_id == backend_id {
                let live = g.as_ref().is_some_and(|g| {
                    let age = now.saturating_sub(st.last_seen_ns);
                    lb_common::flow::live(g, k.proto, st.idle_timeout_s, st.flags, age)
                });
                doomed.push((*k, live));
            }
        });
        doomed
            .iter()
            .filter(|(k, live)| {
                let gone = if k.is_v4() {
                    // An older build's copy may still be in CONNTRACK
                    // until `start` moves it: it must not come back.
                    let _ = self.maps.conntrack.remove(k);
                    self.maps.conntrack4.remove(&k.v4())
                } else {
                    self.maps.conntrack.remove(k)
                };
                gone.is_ok() && *live
            })
            .count()
    }

    /// Per-reason counters summed over CPUs.
    pub fn read_reasons(&self) -> Result<[u64; REASON_COUNT as usize]> {
        let arr = &self.maps.reasons;
        let mut out = [0u64; REASON_COUNT as usize];
        for (i, o) in out.iter_mut().enumerate() {
            *o = arr.get(&(i as u32), 0)?.iter().sum();
        }
        Ok(out)
    }

    /// Counters of a VIP or a backend, summed over CPUs.
    pub fn read_counters(&self, kind: Stats, index: u32) -> Result<Counters> {
        let arr = if kind == Stats::Backend {
            &self.maps.backend_stats
        } else {
            &self.maps.vip_stats
        };
        let mut c = Counters::default();
        for v in arr.get(&index, 0)?.iter() {
            c.add(v);
        }
        Ok(c)
    }

    /// Counts live flows every `every` on a thread of its own; `flows()`
    /// then reports its last count instead of walking the table.
    pub fn count_flows_every(&mut self, every: Duration) -> Result<()> {
        let shared = Arc::new(ctwalk::Shared::default());
        *shared.globals.lock().unwrap() = self.maps.globals.get(&0, 0).ok();
        ctwalk::spawn(self.flow_tables()?, shared.clone(), every);
        self.live = Some(shared);
        Ok(())
    }
}

impl Dataplane for XdpDataplane {
    fn apply(&mut self, d: &Desired) -> Result<()> {
        self.sync(d)
    }

    fn start(&mut self) -> Result<()> {
        for iface in self.interfaces.clone() {
            self.attach(&iface, self.kind)?;
        }
        for iface in self.detach_unconfigured(&self.interfaces.clone()) {
            log::info!("{iface}: no longer in gateway.interfaces: XDP detached");
        }
        // After the detaches too: the old program must be gone everywhere.
        if std::mem::take(&mut self.v4_moves) {
            let (copied, removed) = self.move_v4_flows(true);
            if removed > 0 {
                log::info!(
                    "upgrade: {removed} IPv4 flows moved out of CONNTRACK ({copied} copied or refreshed now)"
                );
            }
        }
        Ok(())
    }

    fn undo_start(&mut self) {
        self.undo_attach();
    }

    fn counters(&self, kind: Stats, id: u32) -> Counters {
        self.read_counters(kind, id).unwrap_or_default()
    }

    fn flows(&self) -> Flows {
        let counted = match &self.live {
            Some(l) => Some(l.last.lock().unwrap().clone()),
            // The same count, taken on the spot.
            None => self
                .maps
                .globals
                .get(&0, 0)
                .ok()
                .and_then(|g| ctwalk::count(&self.flow_tables().ok()?, &g).ok()),
        };
        counted.unwrap_or_default()
    }

    fn purge(&mut self, backend: u32) -> usize {
        self.purge_backend(backend)
    }

    fn modes(&self) -> Vec<(String, String)> {
        self.attached
            .iter()
            .map(|(i, m)| (i.clone(), format!("xdp-{}", m.as_str())))
            .collect()
    }

    fn reasons(&self) -> Option<[u64; REASON_COUNT as usize]> {
        self.read_reasons().ok()
    }

    fn passive(&self, backend: u32) -> Option<BackendHealth> {
        Some(self.health_mem.read(backend))
    }

    fn flow_table(&self) -> Option<ctwalk::FlowTables> {
        self.flow_tables().ok()
    }

    fn memory(&self) -> Option<u64> {
        Some(self.sizes.memory())
    }

    fn passes_vip_traffic(&self) -> bool {
        true
    }

    fn stays_after_exit(&self) -> bool {
        !self.detach_on_exit
    }

    /// TLS listeners are the proxy's: their packets go to the kernel.
    fn takes(&self, v: &crate::model::VipModel) -> bool {
        v.tls.is_none()
    }

    fn ends_with_process(&self) -> bool {
        self.detach_on_exit
    }

    fn exit(&mut self) -> Result<Vec<String>> {
        match (&self.pin_dir, self.detach_on_exit) {
            (Some(dir), true) => pins::detach(dir),
            (Some(dir), false) => Ok(vec![format!(
                "exiting; XDP stays attached and keeps forwarding with the last state (pins in {}); `lb detach` takes it down",
                dir.display()
            )]),
            (None, _) => Ok(Vec::new()),
        }
    }
}
