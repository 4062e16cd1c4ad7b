//! The data planes: XDP (native or generic) and the userspace proxy. Each
//! is programmed with the same `Desired` state and reports through the same
//! trait, so the daemon, health checks, metric names and `lb status` are the
//! same for both, and more than one can run at once (`Planes`).

pub mod netlink;
pub mod proxy;
pub mod xdp;

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
};

use anyhow::Result;
use lb_common::{BackendHealth, Counters, REASON_COUNT};

use crate::model::{Desired, VipModel};

/// Which counters: a listener key's (by vip_id) or a target's (by backend id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stats {
    Vip,
    Backend,
}

/// Live flows in total and per backend id.
#[derive(Debug, Clone, Default)]
pub struct Flows {
    pub total: u64,
    /// Of those, TCP flows whose handshake the client has not completed.
    pub half_open: u64,
    pub per_backend: HashMap<u32, u64>,
    /// When they were counted (`None`: not yet).
    pub at: Option<std::time::Instant>,
}

pub trait Dataplane {
    /// Programs the plane: VIPs, rings, targets; ends flows to targets that
    /// are no longer valid (where the plane must).
    fn apply(&mut self, d: &Desired) -> Result<()>;

    /// Whether this plane serves the listener key `v` (XDP: not the TLS
    /// listeners, the proxy beside it: only those). `Planes` hands each
    /// plane only what it takes.
    fn takes(&self, _v: &VipModel) -> bool {
        true
    }

    /// A TLS listener's handshake counts (the proxy).
    fn tls_counts(&self, _vip: u32) -> Option<proxy::tls::TlsCounts> {
        None
    }

    /// Starts forwarding once programmed (XDP: attaches to the interfaces).
    fn start(&mut self) -> Result<()> {
        Ok(())
    }

    /// A start that failed: takes down what `start` set up, keeping an
    /// earlier run's state.
    fn undo_start(&mut self) {}

    fn counters(&self, kind: Stats, id: u32) -> Counters;

    /// Live flows: conntrack entries fresh by their timeout and not closed
    /// (XDP), or open connections and UDP sessions (proxy).
    fn flows(&self) -> Flows;

    /// Ends the flows to `backend` (its drain is over); returns how many
    /// live ones.
    fn purge(&mut self, backend: u32) -> usize;

    /// (interface, mode) pairs for `lb_dataplane_info` and `lb status`.
    fn modes(&self) -> Vec<(String, String)>;

    /// XDP pass/drop reasons.
    fn reasons(&self) -> Option<[u64; REASON_COUNT as usize]> {
        None
    }

    /// BPF map memory.
    fn memory(&self) -> Option<u64> {
        None
    }

    /// What the plane saw of a target's answers to new connections
    /// (passive health; XDP).
    fn passive(&self, _backend: u32) -> Option<BackendHealth> {
        None
    }

    /// A handle on the flow table, for listing flows (XDP's conntrack).
    fn flow_table(&self) -> Option<xdp::ctwalk::FlowTables> {
        None
    }

    /// VIP addresses this plane actually serves, when not every VIP of the
    /// last `apply` (the proxy: those with an open listener).
    fn served_addresses(&self) -> Option<BTreeSet<IpAddr>> {
        None
    }

    /// Proxy events by name.
    fn events(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }

    /// The plane leaves a VIP's unbalanced traffic to a kernel that does not
    /// have the address (XDP), so the VIPs want unreachable routes.
    fn passes_vip_traffic(&self) -> bool {
        false
    }

    /// Forwarding goes on after the process exits (XDP, pinned).
    fn stays_after_exit(&self) -> bool {
        false
    }

    /// Forwarding ends with the process (the proxy; XDP detached on exit).
    fn ends_with_process(&self) -> bool;

    /// The process exits; returns what to log.
    fn exit(&mut self) -> Result<Vec<String>>;
}

/// The planes that run, as one.
#[derive(Default)]
pub struct Planes(pub Vec<Box<dyn Dataplane>>);

impl Dataplane for Planes {
    fn apply(&mut self, d: &Desired) -> Result<()> {
        let errs: Vec<String> = self
            .0
            .iter_mut()
            .filter_map(|p| {
                let res = match d.model.vips.iter().all(|v| p.takes(v)) {
                    true => p.apply(d),
                    false => {
                        let (model, rings) = d.only(|v| p.takes(v));
                        p.apply(&d.with(&model, rings))
                    }
                };
                res.err().map(|e| format!("{e:#}"))
            })
            .collect();
        match errs.is_empty() {
            true => Ok(()),
            false => anyhow::bail!("{}", errs.join("; ")),
        }
    }

    fn start(&mut self) -> Result<()> {
        self.0.iter_mut().try_for_each(|p| p.start())
    }

    fn undo_start(&mut self) {
        self.0.iter_mut().for_each(|p| p.undo_start());
    }

    fn counters(&self, kind: Stats, id: u32) -> Counters {
        let mut c = Counters::default();
        for p in &self.0 {
            let x = p.counters(kind, id);
            c.add(&x);
        }
        c
    }

    fn flows(&self) -> Flows {
        let mut f = Flows::default();
        for (i, p) in self.0.iter().enumerate() {
            let x = p.flows();
            // As old as the oldest count.
            f.at = if i == 0 { x.at } else { f.at.min(x.at) };
            f.total += x.total;
            f.half_open += x.half_open;
            for (id, n) in x.per_backend {
                *f.per_backend.entry(id).or_default() += n;
            }
        }
        f
    }

    fn purge(&mut self, backend: u32) -> usize {
        self.0.iter_mut().map(|p| p.purge(backend)).sum()
    }

    fn modes(&self) -> Vec<(String, String)> {
        self.0.iter().flat_map(|p| p.modes()).collect()
    }

    fn reasons(&self) -> Option<[u64; REASON_COUNT as usize]> {
        self.0.iter().find_map(|p| p.reasons())
    }

    fn passive(&self, backend: u32) -> Option<BackendHealth> {
        self.0.iter().find_map(|p| p.passive(backend))
    }

    fn flow_table(&self) -> Option<xdp::ctwalk::FlowTables> {
        self.0.iter().find_map(|p| p.flow_table())
    }

    fn memory(&self) -> Option<u64> {
        self.0
            .iter()
            .filter_map(|p| p.memory())
            .reduce(|a, b| a + b)
    }

    fn served_addresses(&self) -> Option<BTreeSet<IpAddr>> {
        // One plane serving all its VIPs makes the set unbounded.
        let sets: Option<Vec<_>> = self.0.iter().map(|p| p.served_addresses()).collect();
        sets.map(|s| s.into_iter().flatten().collect())
    }

    fn events(&self) -> Vec<(&'static str, u64)> {
        self.0.iter().flat_map(|p| p.events()).collect()
    }

    fn passes_vip_traffic(&self) -> bool {
        self.0.iter().any(|p| p.passes_vip_traffic())
    }

    fn stays_after_exit(&self) -> bool {
        self.0.iter().any(|p| p.stays_after_exit())
    }

    fn tls_counts(&self, vip: u32) -> Option<proxy::tls::TlsCounts> {
        self.0.iter().find_map(|p| p.tls_counts(vip))
    }

    fn ends_with_process(&self) -> bool {
        self.0.iter().any(|p| p.ends_with_process())
    }

    fn exit(&mut self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for p in &mut self.0 {
            out.extend(p.exit()?);
        }
        Ok(out)
    }
}
