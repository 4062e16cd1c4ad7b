//! The data plane in use: XDP (native or generic) or the proxy. Same
//! config, health checks, metric names and `lb status` for both.

use std::collections::HashMap;

use anyhow::Result;
use lb_common::{Counters, REASON_COUNT};

use crate::{
    model::Model,
    proxy::ProxyDataplane,
    xdp::{AdoptedIds, XdpDataplane},
};

pub enum Plane {
    // Boxed: the XDP side holds all its maps inline.
    Xdp(Box<XdpDataplane>),
    Proxy(ProxyDataplane),
}

impl Plane {
    pub fn sync(
        &mut self,
        model: &Model,
        in_ring: &dyn Fn(u32) -> bool,
        valid: &dyn Fn(u32) -> bool,
        ppv2: &dyn Fn(&str) -> bool,
    ) -> Result<()> {
        match self {
            Plane::Xdp(x) => x.sync(model, in_ring, valid),
            Plane::Proxy(p) => p.sync(model, in_ring, valid, ppv2),
        }
    }

    pub fn counters(&self, backend: bool, id: u32) -> Counters {
        match self {
            Plane::Xdp(x) => x.counters(backend, id).unwrap_or_default(),
            Plane::Proxy(p) => p.counters(backend, id),
        }
    }

    /// XDP pass/drop reasons (none for the proxy).
    pub fn reasons(&self) -> Option<[u64; REASON_COUNT as usize]> {
        match self {
            Plane::Xdp(x) => x.reasons().ok(),
            Plane::Proxy(_) => None,
        }
    }

    /// Tracked flows in total and per target: conntrack entries (XDP), or
    /// open connections and UDP sessions (proxy).
    pub fn flows(&self) -> (u64, HashMap<u32, u64>) {
        match self {
            // The daemon reads the conntrack thread's count; this is the
            // same count (live flows, batched), taken on the spot.
            Plane::Xdp(x) => {
                let counted = x
                    .maps
                    .globals
                    .get(&0, 0)
                    .ok()
                    .and_then(|g| crate::ctwalk::count(&x.conntrack_fd().ok()?, &g).ok());
                counted.map_or((0, HashMap::new()), |c| (c.total, c.per_backend))
            }
            Plane::Proxy(p) => p.flows(),
        }
    }

    /// Ends the flows to `backend` (its drain is over).
    pub fn purge_backend(&mut self, backend: u32) -> usize {
        match self {
            Plane::Xdp(x) => x.purge_backend(backend),
            Plane::Proxy(p) => p.purge_backend(backend),
        }
    }

    /// BPF map memory (XDP only).
    pub fn memory(&self) -> Option<u64> {
        match self {
            Plane::Xdp(x) => Some(x.sizes.memory()),
            Plane::Proxy(_) => None,
        }
    }

    /// (interface, mode) pairs for `lb_dataplane_info` and `lb status`.
    pub fn modes(&self) -> Vec<(String, String)> {
        match self {
            Plane::Xdp(x) => x
                .attached
                .iter()
                .map(|(i, m)| (i.clone(), format!("xdp-{}", m.as_str())))
                .collect(),
            Plane::Proxy(_) => vec![("*".into(), "proxy".into())],
        }
    }

    pub fn adopted_ids(&self) -> AdoptedIds {
        match self {
            Plane::Xdp(x) => x.adopted_ids().clone(),
            Plane::Proxy(_) => AdoptedIds::default(),
        }
    }

    /// VIP addresses with an open proxy listener; `None` under XDP, where
    /// a successful sync serves every VIP of the model.
    pub fn proxy_addresses(&self) -> Option<std::collections::BTreeSet<std::net::IpAddr>> {
        match self {
            Plane::Xdp(_) => None,
            // A listener may be open on an address the host does not own
            // (IP_FREEBIND): announcing it would draw traffic the kernel
            // does not deliver to the proxy.
            Plane::Proxy(p) => Some(
                p.open_listeners()
                    .map(|(a, _)| a.ip())
                    .filter(|&ip| crate::proxy::is_local(ip))
                    .collect(),
            ),
        }
    }

    pub fn proxy_events(&self) -> Vec<(&'static str, u64)> {
        match self {
            Plane::Xdp(_) => Vec::new(),
            Plane::Proxy(p) => p.events(),
        }
    }
}
