//! The Prometheus text exposition (`/metrics`).

use std::{collections::BTreeSet, fmt::Write as _, net::SocketAddr};

use lb_common::Reason;

use super::View;
use crate::{
    config::{proto_name, DataplaneKind},
    dataplane::Stats,
    model::BackendModel,
};

/// A label value, escaped as the exposition format wants.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// `target_group`, `target` and `zone` labels.
fn target_labels(b: &BackendModel) -> String {
    format!(
        "target_group=\"{}\",target=\"{}\",zone=\"{}\"",
        label(&b.key.target_group),
        SocketAddr::new(b.key.address, b.key.port),
        label(&b.zone)
    )
}

pub fn render(v: &View) -> String {
    let mut o = String::new();
    listener_counters(v, &mut o);
    target_counters(v, &mut o);
    target_gauges(v, &mut o);
    target_passive(v, &mut o);
    fail_open(v, &mut o);
    data_plane(v, &mut o);
    daemon(v, &mut o);
    announce(v, &mut o);
    dataplane_info(v, &mut o);
    o
}

const COUNTERS: [&str; 3] = ["packets", "bytes", "new_flows"];

fn pick(c: &lb_common::Counters, f: usize) -> u64 {
    [c.packets, c.bytes, c.new_flows][f]
}

fn listener_counters(v: &View, o: &mut String) {
    for (f, what) in COUNTERS.iter().enumerate() {
        let name = format!("lb_listener_{what}_total");
        let help = match f {
            0 => "Packets forwarded to targets, per listener.",
            1 => "Bytes (IP length) forwarded to targets, per listener.",
            _ => "Flows created, per listener.",
        };
        family(o, &name, "counter", help);
        for vip in &v.model.vips {
            let c = v.sampler.current(Stats::Vip, vip.vip_id);
            let _ = writeln!(
                o,
                "{name}{{listener=\"{}\",address=\"{}\",port=\"{}\",protocol=\"{}\"}} {}",
                label(&vip.listener),
                vip.lkey.address,
                vip.lkey.port,
                proto_name(vip.lkey.proto),
                pick(&c, f)
            );
        }
    }
}

fn target_counters(v: &View, o: &mut String) {
    for (f, what) in COUNTERS.iter().enumerate() {
        let name = format!("lb_target_{what}_total");
        let help = match f {
            0 => "Packets forwarded to a target.",
            1 => "Bytes (IP length) forwarded to a target.",
            _ => "Flows assigned to a target.",
        };
        family(o, &name, "counter", help);
        for b in v.model.backends.values() {
            let c = v.sampler.current(Stats::Backend, b.id);
            let _ = writeln!(o, "{name}{{{}}} {}", target_labels(b), pick(&c, f));
        }
    }
}

/// Passive health: the data path's view of connection attempts (XDP).
fn target_passive(v: &View, o: &mut String) {
    let rows: Vec<_> = v
        .model
        .backends
        .values()
        .filter_map(|b| Some((b, v.planes.passive(b.id)?)))
        .collect();
    if rows.is_empty() {
        return;
    }
    family(
        o,
        "lb_target_connection_attempts_total",
        "counter",
        "New connections' first SYNs as the target answered them (passive health): answered, refused (RST) or unanswered (retransmitted).",
    );
    for (b, h) in &rows {
        for (result, n) in [
            ("answered", h.answered),
            ("refused", h.refused),
            ("unanswered", h.unanswered),
        ] {
            let _ = writeln!(
                o,
                "lb_target_connection_attempts_total{{{},result=\"{result}\"}} {n}",
                target_labels(b)
            );
        }
    }
    family(
        o,
        "lb_target_passive_trips_total",
        "counter",
        "Times failed connection attempts in a row made the target suspect (passive health).",
    );
    for (b, h) in &rows {
        let _ = writeln!(
            o,
            "lb_target_passive_trips_total{{{}}} {}",
            target_labels(b),
            h.trips
        );
    }
}

fn target_gauges(v: &View, o: &mut String) {
    family(
        o,
        "lb_target_healthy",
        "gauge",
        "1 when the target passes its health checks.",
    );
    for b in v.model.backends.values() {
        let h = v.targets.get(&b.key).is_some_and(|t| t.healthy) as u8;
        let _ = writeln!(o, "lb_target_healthy{{{}}} {h}", target_labels(b));
    }
    family(
        o,
        "lb_target_state",
        "gauge",
        "1 for the target's current state (initial, healthy, suspect, unhealthy, draining).",
    );
    for b in v.model.backends.values() {
        let _ = writeln!(
            o,
            "lb_target_state{{{},state=\"{}\"}} 1",
            target_labels(b),
            v.state(&b.key)
        );
    }
    family(
        o,
        "lb_target_active_flows",
        "gauge",
        "Live flows on the target: conntrack entries fresh by their timeout, not closed (counted every 5s).",
    );
    for b in v.model.backends.values() {
        let n = v.flows.per_backend.get(&b.id).copied().unwrap_or(0);
        let _ = writeln!(o, "lb_target_active_flows{{{}}} {n}", target_labels(b));
    }
}

fn data_plane(v: &View, o: &mut String) {
    family(o, "lb_active_flows", "gauge", "Conntrack entries in use.");
    let _ = writeln!(o, "lb_active_flows {}", v.flows.total);
    family(
        o,
        "lb_xdp_packets_total",
        "counter",
        "Packets by what the XDP program did with them (pass/drop reasons and forwarding).",
    );
    if let Some(r) = v.planes.reasons() {
        for (reason, n) in Reason::ALL.iter().zip(r) {
            let _ = writeln!(
                o,
                "lb_xdp_packets_total{{reason=\"{}\"}} {n}",
                reason.name()
            );
        }
    }
    family(
        o,
        "lb_map_memory_bytes",
        "gauge",
        "BPF map memory the config sizes (approximate).",
    );
    let _ = writeln!(o, "lb_map_memory_bytes {}", v.planes.memory().unwrap_or(0));
    family(o, "lb_proxy_events_total", "counter", "Proxy data plane events (connect_failed, no_backend, udp_sessions_full, socket_error, splice_started).");
    for (name, n) in v.planes.events() {
        let _ = writeln!(o, "lb_proxy_events_total{{event=\"{name}\"}} {n}");
    }
}

fn fail_open(v: &View, o: &mut String) {
    let groups: BTreeSet<&str> = v
        .model
        .vips
        .iter()
        .map(|x| x.target_group.as_str())
        .collect();
    family(
        o,
        "lb_target_group_fail_open",
        "gauge",
        "1 while every target of the group is unhealthy and new flows go to all of them.",
    );
    for g in &groups {
        let on = u8::from(v.failed_open.contains_key(*g));
        let _ = writeln!(
            o,
            "lb_target_group_fail_open{{target_group=\"{}\"}} {on}",
            label(g)
        );
    }
    family(
        o,
        "lb_target_group_fail_open_total",
        "counter",
        "Times the group started to fail open.",
    );
    for g in &groups {
        let n = v.fail_open_total.get(*g).copied().unwrap_or(0);
        let _ = writeln!(
            o,
            "lb_target_group_fail_open_total{{target_group=\"{}\"}} {n}",
            label(g)
        );
    }
}

fn daemon(v: &View, o: &mut String) {
    family(
        o,
        "lb_config_reloads_total",
        "counter",
        "Config reloads by result.",
    );
    let _ = writeln!(
        o,
        "lb_config_reloads_total{{result=\"ok\"}} {}",
        v.reloads.0
    );
    let _ = writeln!(
        o,
        "lb_config_reloads_total{{result=\"error\"}} {}",
        v.reloads.1
    );
}

/// Only with [announce]: a 0 would otherwise look like an outage.
fn announce(v: &View, o: &mut String) {
    let Some((_, announced)) = &v.announced else {
        return;
    };
    family(
        o,
        "lb_vip_announced",
        "gauge",
        "1 while the VIP address's route is in the [announce] table (read back from the kernel), else 0.",
    );
    let addrs: BTreeSet<_> = v.model.vips.iter().map(|v| v.lkey.address).collect();
    for a in addrs {
        let _ = writeln!(
            o,
            "lb_vip_announced{{address=\"{a}\"}} {}",
            u8::from(announced.contains(&a))
        );
    }
}

fn dataplane_info(v: &View, o: &mut String) {
    family(
        o,
        "lb_dataplane_info",
        "gauge",
        "The data plane in use, per interface.",
    );
    // reason: why this data plane (a fallback's cause, or "configured").
    let reason = match (v.fallback, v.dataplane) {
        (Some((code, _)), _) => *code,
        (None, DataplaneKind::Auto) => "auto",
        (None, _) => "configured",
    };
    for (iface, mode) in v.planes.modes() {
        let _ = writeln!(
            o,
            "lb_dataplane_info{{interface=\"{}\",mode=\"{mode}\",reason=\"{reason}\"}} 1",
            label(&iface)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::label;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
