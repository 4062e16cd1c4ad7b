//! What the daemon reports: Prometheus metrics and the `lb status` table.
//! Rates come from two counter samples taken by the main loop's tick.

use std::{collections::HashMap, fmt::Write as _, net::SocketAddr, time::Instant};

use lb_common::{Counters, REASON_NAMES};

use crate::{
    config::proto_name,
    daemon::{target_name, Daemon},
    health::Health,
};

/// Counters of every VIP and backend at one moment.
#[derive(Clone)]
pub struct Sample {
    pub at: Instant,
    pub vips: HashMap<u32, Counters>,
    pub backends: HashMap<u32, Counters>,
}

/// Live flows per backend id.
#[derive(Clone)]
pub struct FlowCount {
    pub at: Instant,
    pub total: u64,
    pub per_backend: HashMap<u32, u64>,
}

fn sub(a: &Counters, b: &Counters) -> Counters {
    Counters {
        packets: a.packets.saturating_sub(b.packets),
        bytes: a.bytes.saturating_sub(b.bytes),
        new_flows: a.new_flows.saturating_sub(b.new_flows),
    }
}

fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"")
}

impl Daemon {
    /// Reads all counters (called every tick; keeps the last two).
    pub fn take_sample(&mut self) {
        let vips = self
            .model
            .vips
            .iter()
            .map(|v| (v.vip_id, self.plane.counters(false, v.vip_id)))
            .collect();
        let backends = self
            .model
            .backends
            .keys()
            .map(|&id| (id, self.plane.counters(true, id)))
            .collect();
        let s = Sample {
            at: Instant::now(),
            vips,
            backends,
        };
        self.samples = (self.samples.1.take(), Some(s));
    }

    /// Per-second rates between the last two samples.
    fn rate(&self, backend: bool, id: u32) -> (f64, f64, f64) {
        let (Some(a), Some(b)) = (&self.samples.0, &self.samples.1) else {
            return (0.0, 0.0, 0.0);
        };
        let dt = b.at.duration_since(a.at).as_secs_f64().max(1e-3);
        let pick = |s: &Sample| {
            if backend {
                s.backends.get(&id).copied()
            } else {
                s.vips.get(&id).copied()
            }
            .unwrap_or_default()
        };
        let d = sub(&pick(b), &pick(a));
        (
            d.packets as f64 / dt,
            d.bytes as f64 / dt,
            d.new_flows as f64 / dt,
        )
    }

    /// Live flows per backend. Under XDP, counted every 5 s by the
    /// conntrack thread (`ctwalk`): only entries fresh by their timeout,
    /// neither closed nor expired. The proxy counts its open connections
    /// and sessions.
    fn flows(&mut self) -> FlowCount {
        if let Some(l) = &self.live_flows {
            let c = l.last.lock().unwrap().clone();
            return FlowCount {
                at: c.at.unwrap_or_else(Instant::now),
                total: c.total,
                per_backend: c.per_backend,
            };
        }
        if let Some(f) = &self.flow_count {
            if f.at.elapsed().as_secs() < 5 {
                return f.clone();
            }
        }
        let (total, per_backend) = self.plane.flows();
        let f = FlowCount {
            at: Instant::now(),
            total,
            per_backend,
        };
        self.flow_count = Some(f.clone());
        f
    }

    fn state_name(&self, k: &crate::model::TargetKey) -> &'static str {
        match self.targets.get(k) {
            Some(rt) if rt.draining_until.is_some() => "draining",
            Some(rt) => rt.tracker.state.as_str(),
            None => "removed",
        }
    }

    pub fn render_metrics(&mut self) -> String {
        let flows = self.flows();
        let mut o = String::new();
        let family = |o: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        let cur = self.samples.1.clone();
        let vip_c = |id: u32| {
            cur.as_ref()
                .and_then(|s| s.vips.get(&id).copied())
                .unwrap_or_default()
        };
        let be_c = |id: u32| {
            cur.as_ref()
                .and_then(|s| s.backends.get(&id).copied())
                .unwrap_or_default()
        };
        for (name, help, f) in [
            (
                "lb_listener_packets_total",
                "Packets forwarded to targets, per listener.",
                0,
            ),
            (
                "lb_listener_bytes_total",
                "Bytes (IP length) forwarded to targets, per listener.",
                1,
            ),
            (
                "lb_listener_new_flows_total",
                "Flows created, per listener.",
                2,
            ),
        ] {
            family(&mut o, name, "counter", help);
            for v in &self.model.vips {
                let c = vip_c(v.vip_id);
                let val = [c.packets, c.bytes, c.new_flows][f];
                let _ = writeln!(
                    o,
                    "{name}{{listener=\"{}\",address=\"{}\",port=\"{}\",protocol=\"{}\"}} {val}",
                    label(&v.listener),
                    v.lkey.address,
                    v.lkey.port,
                    proto_name(v.lkey.proto)
                );
            }
        }
        let targets: Vec<(u32, crate::model::TargetKey, String, u32)> = self
            .model
            .backends
            .values()
            .map(|b| (b.id, b.key.clone(), b.zone.clone(), b.weight))
            .collect();
        for (name, help, f) in [
            (
                "lb_target_packets_total",
                "Packets forwarded to a target.",
                0,
            ),
            (
                "lb_target_bytes_total",
                "Bytes (IP length) forwarded to a target.",
                1,
            ),
            (
                "lb_target_new_flows_total",
                "Flows assigned to a target.",
                2,
            ),
        ] {
            family(&mut o, name, "counter", help);
            for (id, k, zone, _) in &targets {
                let c = be_c(*id);
                let val = [c.packets, c.bytes, c.new_flows][f];
                let _ = writeln!(
                    o,
                    "{name}{{target_group=\"{}\",target=\"{}\",zone=\"{}\"}} {val}",
                    label(&k.target_group),
                    SocketAddr::new(k.address, k.port),
                    label(zone)
                );
            }
        }
        family(
            &mut o,
            "lb_target_healthy",
            "gauge",
            "1 when the target passes its health checks.",
        );
        for (_, k, zone, _) in &targets {
            let h = self
                .targets
                .get(k)
                .is_some_and(|rt| rt.tracker.state == Health::Healthy) as u8;
            let _ = writeln!(
                o,
                "lb_target_healthy{{target_group=\"{}\",target=\"{}\",zone=\"{}\"}} {h}",
                label(&k.target_group),
                SocketAddr::new(k.address, k.port),
                label(zone)
            );
        }
        family(
            &mut o,
            "lb_target_state",
            "gauge",
            "1 for the target's current state (initial, healthy, unhealthy, draining).",
        );
        for (_, k, zone, _) in &targets {
            let st = self.state_name(k);
            let _ = writeln!(
                o,
                "lb_target_state{{target_group=\"{}\",target=\"{}\",zone=\"{}\",state=\"{st}\"}} 1",
                label(&k.target_group),
                SocketAddr::new(k.address, k.port),
                label(zone)
            );
        }
        family(
            &mut o,
            "lb_target_active_flows",
            "gauge",
            "Live flows on the target: conntrack entries fresh by their timeout, not closed (counted every 5s).",
        );
        for (id, k, zone, _) in &targets {
            let n = flows.per_backend.get(id).copied().unwrap_or(0);
            let _ = writeln!(
                o,
                "lb_target_active_flows{{target_group=\"{}\",target=\"{}\",zone=\"{}\"}} {n}",
                label(&k.target_group),
                SocketAddr::new(k.address, k.port),
                label(zone)
            );
        }
        family(
            &mut o,
            "lb_active_flows",
            "gauge",
            "Conntrack entries in use.",
        );
        let _ = writeln!(o, "lb_active_flows {}", flows.total);
        family(
            &mut o,
            "lb_xdp_packets_total",
            "counter",
            "Packets by what the XDP program did with them (pass/drop reasons and forwarding).",
        );
        if let Some(r) = self.plane.reasons() {
            for (i, n) in r.iter().enumerate() {
                let _ = writeln!(
                    o,
                    "lb_xdp_packets_total{{reason=\"{}\"}} {n}",
                    REASON_NAMES[i]
                );
            }
        }
        family(
            &mut o,
            "lb_config_reloads_total",
            "counter",
            "Config reloads by result.",
        );
        let _ = writeln!(
            o,
            "lb_config_reloads_total{{result=\"ok\"}} {}",
            self.reloads.0
        );
        let _ = writeln!(
            o,
            "lb_config_reloads_total{{result=\"error\"}} {}",
            self.reloads.1
        );
        family(
            &mut o,
            "lb_map_memory_bytes",
            "gauge",
            "BPF map memory the config sizes (approximate).",
        );
        let _ = writeln!(
            o,
            "lb_map_memory_bytes {}",
            self.plane.memory().unwrap_or(0)
        );
        family(&mut o, "lb_proxy_events_total", "counter", "Proxy data plane events (connect_failed, no_backend, udp_sessions_full, socket_error, splice_started).");
        for (name, n) in self.plane.proxy_events() {
            let _ = writeln!(o, "lb_proxy_events_total{{event=\"{name}\"}} {n}");
        }
        // Only with [announce]: a 0 would otherwise look like an outage.
        if let Some(announced) = self.announced() {
            family(
                &mut o,
                "lb_vip_announced",
                "gauge",
                "1 while the VIP address's route is in the [announce] table (read back from the kernel), else 0.",
            );
            let addrs: std::collections::BTreeSet<_> =
                self.model.vips.iter().map(|v| v.lkey.address).collect();
            for a in addrs {
                let _ = writeln!(
                    o,
                    "lb_vip_announced{{address=\"{a}\"}} {}",
                    u8::from(announced.contains(&a))
                );
            }
        }
        family(
            &mut o,
            "lb_dataplane_info",
            "gauge",
            "The data plane in use, per interface.",
        );
        // reason: why this data plane (a fallback's cause, or "configured").
        let reason = match (&self.fallback, self.cfg.gateway.dataplane) {
            (Some((code, _)), _) => *code,
            (None, crate::config::DataplaneKind::Auto) => "auto",
            (None, _) => "configured",
        };
        for (iface, mode) in self.plane.modes() {
            let _ = writeln!(
                o,
                "lb_dataplane_info{{interface=\"{}\",mode=\"{mode}\",reason=\"{reason}\"}} 1",
                label(&iface)
            );
        }
        o
    }

    /// The announced addresses, when announcing is on.
    fn announced(&self) -> Option<std::collections::BTreeSet<std::net::IpAddr>> {
        self.announcer
            .as_ref()
            .map(|a| a.announced.lock().unwrap().clone())
    }

    pub fn render_status(&mut self) -> String {
        let flows = self.flows();
        let mut o = String::new();
        let planes: Vec<String> = self
            .plane
            .modes()
            .iter()
            .map(|(i, m)| {
                if i == "*" {
                    m.clone()
                } else {
                    format!("{i} ({m})")
                }
            })
            .collect();
        let memory = self
            .plane
            .memory()
            .map(|m| format!("; map memory {:.1} MiB", m as f64 / (1 << 20) as f64))
            .unwrap_or_default();
        let fallback = self
            .fallback
            .as_ref()
            .map(|(_, why)| format!(" (fallback: {why})"))
            .unwrap_or_default();
        let _ = writeln!(
            o,
            "data plane: {}{fallback}; zone {:?}{memory}; {} flows tracked",
            planes.join(", "),
            self.model.zone,
            flows.total
        );
        if let (Some(set), Some(a)) = (self.announced(), &self.announcer) {
            let list: Vec<String> = set.iter().map(|a| a.to_string()).collect();
            let _ = writeln!(
                o,
                "announced: {} (kernel table {} via {})",
                if list.is_empty() {
                    "none".into()
                } else {
                    list.join(", ")
                },
                a.cfg.table,
                a.cfg.device
            );
        }
        let _ = writeln!(
            o,
            "\n{:<16} {:<28} {:<5} {:<16} {:>10} {:>12} {:>9}",
            "LISTENER", "ADDRESS", "PROTO", "TARGET GROUP", "PKT/S", "BYTES/S", "FLOWS/S"
        );
        for v in &self.model.vips {
            let (p, b, f) = self.rate(false, v.vip_id);
            let _ = writeln!(
                o,
                "{:<16} {:<28} {:<5} {:<16} {:>10.1} {:>12.1} {:>9.1}",
                v.listener,
                SocketAddr::new(v.lkey.address, v.lkey.port).to_string(),
                proto_name(v.lkey.proto),
                v.target_group,
                p,
                b,
                f
            );
        }
        let _ = writeln!(
            o,
            "\n{:<16} {:<28} {:<6} {:>6} {:<10} {:>7} {:>10} {:>12}  LAST CHECK",
            "TARGET GROUP", "TARGET", "ZONE", "WEIGHT", "STATE", "FLOWS", "PKT/S", "BYTES/S"
        );
        let rows: Vec<_> = self
            .model
            .backends
            .values()
            .map(|b| (b.id, b.key.clone(), b.zone.clone(), b.weight))
            .collect();
        for (id, k, zone, weight) in rows {
            let (p, b, _) = self.rate(true, id);
            let last = self
                .targets
                .get(&k)
                .map(|rt| rt.tracker.last_reason.clone())
                .unwrap_or_default();
            let _ = writeln!(
                o,
                "{:<16} {:<28} {:<6} {:>6} {:<10} {:>7} {:>10.1} {:>12.1}  {}",
                k.target_group,
                SocketAddr::new(k.address, k.port).to_string(),
                zone,
                weight,
                self.state_name(&k),
                flows.per_backend.get(&id).copied().unwrap_or(0),
                p,
                b,
                last
            );
        }
        let _ = target_name;
        o
    }
}
