//! Counter samples taken by the main loop's tick; rates come from the last
//! two.

use std::{collections::HashMap, time::Instant};

use lb_common::Counters;

use crate::{
    dataplane::{Dataplane, Stats},
    model::Model,
};

/// Counters of every VIP and backend at one moment.
#[derive(Clone)]
pub struct Sample {
    pub at: Instant,
    pub vips: HashMap<u32, Counters>,
    pub backends: HashMap<u32, Counters>,
}

impl Sample {
    fn get(&self, kind: Stats, id: u32) -> Counters {
        match kind {
            Stats::Vip => self.vips.get(&id),
            Stats::Backend => self.backends.get(&id),
        }
        .copied()
        .unwrap_or_default()
    }
}

/// The last two samples.
#[derive(Default)]
pub struct Sampler {
    prev: Option<Sample>,
    cur: Option<Sample>,
}

impl Sampler {
    /// Reads all counters of `model`'s VIPs and backends.
    pub fn take(&mut self, model: &Model, planes: &dyn Dataplane) {
        let vips = model
            .vips
            .iter()
            .map(|v| (v.vip_id, planes.counters(Stats::Vip, v.vip_id)))
            .collect();
        let backends = model
            .backends
            .keys()
            .map(|&id| (id, planes.counters(Stats::Backend, id)))
            .collect();
        let s = Sample {
            at: Instant::now(),
            vips,
            backends,
        };
        self.prev = self.cur.replace(s);
    }

    /// The counters as last sampled.
    pub fn current(&self, kind: Stats, id: u32) -> Counters {
        self.cur
            .as_ref()
            .map(|s| s.get(kind, id))
            .unwrap_or_default()
    }

    /// Per-second (packets, bytes, new flows) between the last two samples.
    pub fn rate(&self, kind: Stats, id: u32) -> (f64, f64, f64) {
        let (Some(a), Some(b)) = (&self.prev, &self.cur) else {
            return (0.0, 0.0, 0.0);
        };
        let dt = b.at.duration_since(a.at).as_secs_f64().max(1e-3);
        let (x, y) = (a.get(kind, id), b.get(kind, id));
        (
            y.packets.saturating_sub(x.packets) as f64 / dt,
            y.bytes.saturating_sub(x.bytes) as f64 / dt,
            y.new_flows.saturating_sub(x.new_flows) as f64 / dt,
        )
    }
}
