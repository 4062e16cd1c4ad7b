//! Counter samples taken by the main loop's tick: rates come from the last
//! two; the peak packet rate (CloudWatch's PeakPacketsPerSecond) from the
//! busiest 10 s window of the last minute.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

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

/// The samples of the last minute, newest last.
#[derive(Default)]
pub struct Sampler {
    recent: VecDeque<Sample>,
}

const KEEP: Duration = Duration::from_secs(62);
const PEAK_WINDOW: Duration = Duration::from_secs(10);

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
        while self
            .recent
            .front()
            .is_some_and(|f| s.at.duration_since(f.at) > KEEP)
        {
            self.recent.pop_front();
        }
        self.recent.push_back(s);
    }

    /// Packets per second of the busiest window of about 10 s in the last
    /// minute (the widest there is, early on).
    pub fn peak_pps(&self, kind: Stats, id: u32) -> f64 {
        let mut peak = 0f64;
        for (i, a) in self.recent.iter().enumerate() {
            let Some(b) = self
                .recent
                .iter()
                .skip(i + 1)
                .find(|b| b.at.duration_since(a.at) >= PEAK_WINDOW)
                .or_else(|| (i == 0).then(|| self.recent.back()).flatten())
            else {
                continue;
            };
            let dt = b.at.duration_since(a.at).as_secs_f64();
            if dt > 0.0 {
                let n = b
                    .get(kind, id)
                    .packets
                    .saturating_sub(a.get(kind, id).packets);
                peak = peak.max(n as f64 / dt);
            }
        }
        peak
    }

    /// The counters as last sampled.
    pub fn current(&self, kind: Stats, id: u32) -> Counters {
        self.recent
            .back()
            .map(|s| s.get(kind, id))
            .unwrap_or_default()
    }

    /// Per-second (packets, bytes, new flows) between the last two samples.
    pub fn rate(&self, kind: Stats, id: u32) -> (f64, f64, f64) {
        let n = self.recent.len();
        let (Some(a), Some(b)) = (self.recent.get(n.wrapping_sub(2)), self.recent.back()) else {
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
