//! The `lb status` table.

use std::{fmt::Write as _, net::SocketAddr};

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
        let last = v
            .targets
            .get(&t.key)
            .map(|x| x.last_check.as_str())
            .unwrap_or_default();
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
