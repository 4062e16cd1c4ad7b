//! The `lb status` table.

use std::{fmt::Write as _, net::SocketAddr, time::UNIX_EPOCH};

use serde_json::{json, Value};

use super::View;
use crate::{config::proto_name, dataplane::Stats};

pub fn render(v: &View) -> String {
    let mut o = String::new();
    header(v, &mut o);
    let _ = writeln!(
        o,
        "\n{:<16} {:<28} {:<5} {:<16} {:>10} {:>12} {:>9}",
        "LISTENER", "ADDRESS", "PROTO", "TARGET GROUP", "PKT/S", "BYTES/S", "FLOWS/S"
    );
    for vip in &v.model.vips {
        let (p, b, f) = v.sampler.rate(Stats::Vip, vip.vip_id);
        let _ = writeln!(
            o,
            "{:<16} {:<28} {:<5} {:<16} {:>10.1} {:>12.1} {:>9.1}",
            vip.listener,
            SocketAddr::new(vip.lkey.address, vip.lkey.port).to_string(),
            proto_name(vip.lkey.proto),
            vip.target_group,
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
    for t in v.model.backends.values() {
        let (p, b, _) = v.sampler.rate(Stats::Backend, t.id);
        let last =
            v.targets
                .get(&t.key)
                .map_or(String::new(), |x| match (x.drain_left, &x.passive) {
                    (Some(left), _) => {
                        format!("{}s of the drain left; {}", left.as_secs(), x.last_check)
                    }
                    (None, Some(p)) => format!("{p}; last check: {}", x.last_check),
                    (None, None) => x.last_check.clone(),
                });
        let _ = writeln!(
            o,
            "{:<16} {:<28} {:<6} {:>6} {:<10} {:>7} {:>10.1} {:>12.1}  {}",
            t.key.target_group,
            SocketAddr::new(t.key.address, t.key.port).to_string(),
            t.zone,
            t.weight,
            v.state(&t.key),
            v.flows.per_backend.get(&t.id).copied().unwrap_or(0),
            p,
            b,
            last
        );
    }
    o
}

/// The data plane line, and the announcement's.
fn header(v: &View, o: &mut String) {
    let planes: Vec<String> = v
        .planes
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
    let memory = v
        .planes
        .memory()
        .map(|m| format!("; map memory {:.1} MiB", m as f64 / (1 << 20) as f64))
        .unwrap_or_default();
    let fallback = v
        .fallback
        .map(|(_, why)| format!(" (fallback: {why})"))
        .unwrap_or_default();
    let _ = writeln!(
        o,
        "data plane: {}{fallback}; zone {:?}{memory}; {} flows tracked",
        planes.join(", "),
        v.model.zone,
        v.flows.total
    );
    for (g, (healthy, n)) in v.failed_open {
        let _ = writeln!(
            o,
            "FAIL-OPEN: target group {g}: {healthy} of {n} targets healthy, below its minimum; new flows go to all {n}"
        );
    }
    if let Some(r) = v.last_reload {
        let ago = r.at.elapsed().unwrap_or_default().as_secs();
        let _ = match (&r.result, r.applied) {
            (Ok(m), _) => writeln!(o, "last reload: ok {ago}s ago ({m})"),
            (Err(m), false) => writeln!(
                o,
                "last reload: FAILED {ago}s ago, the running config is the one before: {m}"
            ),
            (Err(m), true) => writeln!(
                o,
                "last reload: FAILED {ago}s ago, applied but not programmed: {m}"
            ),
        };
    }
    if let Some((a, set)) = &v.announced {
        let list: Vec<String> = set.iter().map(|a| a.to_string()).collect();
        let _ = writeln!(
            o,
            "announced: {} (kernel table {} via {})",
            if list.is_empty() {
                "none".into()
            } else {
                list.join(", ")
            },
            a.table,
            a.device
        );
    }
}

/// `lb status --json`: the same facts, for scripts.
pub fn render_json(v: &View) -> String {
    let listeners: Vec<Value> = v
        .model
        .vips
        .iter()
        .map(|vip| {
            let (p, b, f) = v.sampler.rate(Stats::Vip, vip.vip_id);
            json!({
                "name": vip.listener,
                "address": vip.lkey.address,
                "port": vip.lkey.port,
                "protocol": proto_name(vip.lkey.proto),
                "target_group": vip.target_group,
                "packets_per_s": p,
                "bytes_per_s": b,
                "flows_per_s": f,
            })
        })
        .collect();
    let targets: Vec<Value> = v
        .model
        .backends
        .values()
        .map(|t| {
            let (p, b, _) = v.sampler.rate(Stats::Backend, t.id);
            json!({
                "target_group": t.key.target_group,
                "address": t.key.address,
                "port": t.key.port,
                "zone": t.zone,
                "weight": t.weight,
                "state": v.state(&t.key),
                "active_flows": v.flows.per_backend.get(&t.id).copied().unwrap_or(0),
                "packets_per_s": p,
                "bytes_per_s": b,
                "last_check": v.targets.get(&t.key).map(|x| x.last_check.as_str()),
                "drain_left_s": v.targets.get(&t.key).and_then(|x| x.drain_left).map(|d| d.as_secs()),
                "passive": v.planes.passive(t.id).map(|h| json!({
                    "refused": h.refused,
                    "unanswered": h.unanswered,
                    "answered": h.answered,
                    "trips": h.trips,
                    "reason": v.targets.get(&t.key).and_then(|x| x.passive.as_deref()),
                })),
            })
        })
        .collect();
    let planes: Vec<Value> = v
        .planes
        .modes()
        .into_iter()
        .map(|(i, m)| json!({"interface": i, "mode": m}))
        .collect();
    let last_reload = v.last_reload.map(|r| {
        json!({
            "at_unix_s": r.at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs(),
            "ok": r.result.is_ok(),
            "applied": r.applied,
            "message": match &r.result { Ok(m) | Err(m) => m },
        })
    });
    let out = json!({
        "data_plane": planes,
        "fallback": v.fallback.map(|(_, why)| why),
        "zone": v.model.zone,
        "map_memory_bytes": v.planes.memory(),
        "active_flows": v.flows.total,
        "announced": v.announced.as_ref().map(|(_, set)| set),
        "reloads": {"ok": v.reloads.0, "error": v.reloads.1},
        "failed_open": v.failed_open,
        "last_reload": last_reload,
        "listeners": listeners,
        "targets": targets,
    });
    format!("{out:#}\n")
}
