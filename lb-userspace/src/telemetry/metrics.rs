//! `/metrics`, encoded by `prometheus-client` (OpenMetrics text). Every
//! scrape builds its families from the daemon's `View`: the counters live
//! in the data planes (per-CPU maps), so there is nothing to keep here.
//! The README maps each CloudWatch `AWS/NetworkELB` metric to these.

use std::{collections::BTreeMap, net::SocketAddr};

use lb_common::{Counters, Reason};
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use super::View;
use crate::{
    config::{proto_name, DataplaneKind},
    dataplane::{proxy::tls::TlsCounts, Stats},
    model::BackendModel,
};

type Labels = Vec<(String, String)>;
/// A counter family's name, help, and the field it reads.
type CounterFamily = (&'static str, &'static str, fn(&Counters) -> u64);

/// The content type of what `render` returns.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Label pairs, their values escaped as the text format wants
/// (prometheus-client 0.24 writes them as given).
fn l(pairs: &[(&str, String)]) -> Labels {
    let esc = |v: &str| {
        v.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    };
    pairs.iter().map(|(k, v)| (k.to_string(), esc(v))).collect()
}

fn target_labels(b: &BackendModel) -> Labels {
    l(&[
        ("target_group", b.key.target_group.clone()),
        (
            "target",
            SocketAddr::new(b.key.address, b.key.port).to_string(),
        ),
        ("zone", b.zone.clone()),
    ])
}

/// A counter family (`name` gets `_total` when encoded).
fn counter(
    r: &mut Registry,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Labels, u64)>,
) {
    let f = Family::<Labels, Counter>::default();
    for (labels, v) in rows {
        f.get_or_create(&labels).inc_by(v);
    }
    r.register(name, help, f);
}

fn gauge(r: &mut Registry, name: &str, help: &str, rows: impl IntoIterator<Item = (Labels, i64)>) {
    let f = Family::<Labels, Gauge>::default();
    for (labels, v) in rows {
        f.get_or_create(&labels).set(v);
    }
    r.register(name, help, f);
}

/// A gauge without labels (a family would write `name{} v`).
fn gauge_one(r: &mut Registry, name: &str, help: &str, v: i64) {
    let g = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
    g.set(v);
    r.register(name, help, g);
}

fn gauge_f(
    r: &mut Registry,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Labels, f64)>,
) {
    let f = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    for (labels, v) in rows {
        f.get_or_create(&labels).set(v);
    }
    r.register(name, help, f);
}

pub fn render(v: &View) -> String {
    let mut r = Registry::default();
    listeners(v, &mut r);
    targets(v, &mut r);
    groups(v, &mut r);
    data_plane(v, &mut r);
    daemon(v, &mut r);
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &r);
    out
}

fn listeners(v: &View, r: &mut Registry) {
    let rows = |f: fn(&Counters) -> u64| {
        v.model
            .vips
            .iter()
            .map(move |x| {
                let c = v.sampler.current(Stats::Vip, x.vip_id);
                let labels = l(&[
                    ("listener", x.listener.clone()),
                    ("address", x.lkey.address.to_string()),
                    ("port", x.lkey.port.to_string()),
                    ("protocol", proto_name(x.lkey.proto).to_string()),
                ]);
                (labels, f(&c))
            })
            .collect::<Vec<_>>()
    };
    let families: [CounterFamily; 8] = [
        ("lb_listener_packets", "Packets forwarded to targets, per listener.", |c| c.packets),
        ("lb_listener_bytes", "Bytes (IP length) forwarded to targets, per listener.", |c| c.bytes),
        ("lb_listener_new_flows", "Flows created, per listener (CloudWatch NewFlowCount_TCP/_UDP).", |c| c.new_flows),
        ("lb_listener_reply_packets", "Replies translated back to clients, per listener (XDP).", |c| c.reply_packets),
        ("lb_listener_reply_bytes", "Bytes (IP length) of the replies translated back to clients (XDP).", |c| c.reply_bytes),
        ("lb_listener_client_resets", "TCP RSTs sent by clients (CloudWatch TCP_Client_Reset_Count; XDP).", |c| c.client_resets),
        ("lb_listener_target_resets", "TCP RSTs sent by targets (CloudWatch TCP_Target_Reset_Count; XDP), including refusals redispatched.", |c| c.target_resets),
        ("lb_listener_blocked_flows", "New flows (their packets) refused by the listener's allow list or the gateway's deny list (CloudWatch SecurityGroupBlockedFlowCount_Inbound_TCP/_UDP).", |c| c.blocked),
    ];
    for (name, help, f) in families {
        counter(r, name, help, rows(f));
    }
    type TlsFamily = (&'static str, &'static str, fn(&TlsCounts) -> u64);
    let tls: [TlsFamily; 3] = [
        ("lb_listener_tls_handshakes", "TLS handshakes completed with clients, per TLS listener.", |c| c.handshakes),
        ("lb_listener_client_tls_negotiation_errors", "TLS handshakes with clients that failed or timed out (CloudWatch ClientTLSNegotiationErrorCount).", |c| c.client_errors),
        ("lb_listener_target_tls_negotiation_errors", "TLS handshakes with targets that failed (target_tls; CloudWatch TargetTLSNegotiationErrorCount).", |c| c.target_errors),
    ];
    for (name, help, f) in tls {
        let rows = v.model.vips.iter().filter(|x| x.tls.is_some()).map(|x| {
            let c = v.planes.tls_counts(x.vip_id).unwrap_or_default();
            (l(&[("listener", x.listener.clone())]), f(&c))
        });
        counter(r, name, help, rows);
    }
    gauge_f(
        r,
        "lb_listener_peak_packets_per_second",
        "Packets per second to targets in the busiest 10 s window of the last minute (CloudWatch PeakPacketsPerSecond).",
        v.model.vips.iter().map(|x| {
            let labels = l(&[
                ("listener", x.listener.clone()),
                ("protocol", proto_name(x.lkey.proto).to_string()),
            ]);
            (labels, v.sampler.peak_pps(Stats::Vip, x.vip_id))
        }),
    );
}

fn targets(v: &View, r: &mut Registry) {
    let backends = || v.model.backends.values();
    let families: [CounterFamily; 3] = [
        ("lb_target_packets", "Packets forwarded to a target.", |c| {
            c.packets
        }),
        (
            "lb_target_bytes",
            "Bytes (IP length) forwarded to a target.",
            |c| c.bytes,
        ),
        ("lb_target_new_flows", "Flows assigned to a target.", |c| {
            c.new_flows
        }),
    ];
    for (name, help, f) in families {
        let rows = backends().map(|b| {
            (
                target_labels(b),
                f(&v.sampler.current(Stats::Backend, b.id)),
            )
        });
        counter(r, name, help, rows);
    }
    gauge(
        r,
        "lb_target_healthy",
        "1 when the target passes its health checks.",
        backends().map(|b| {
            let h = v.targets.get(&b.key).is_some_and(|t| t.healthy);
            (target_labels(b), i64::from(h))
        }),
    );
    gauge(
        r,
        "lb_target_state",
        "1 for the target's current state (initial, healthy, suspect, unhealthy, draining).",
        backends().map(|b| {
            let mut labels = target_labels(b);
            labels.push(("state".into(), v.state(&b.key).to_string()));
            (labels, 1)
        }),
    );
    gauge(
        r,
        "lb_target_active_flows",
        "Live flows on the target: conntrack entries fresh by their timeout, not closed (counted every 5s).",
        backends().map(|b| {
            let n = v.flows.per_backend.get(&b.id).copied().unwrap_or(0);
            (target_labels(b), n as i64)
        }),
    );
    let passive: Vec<_> = backends()
        .filter_map(|b| Some((b, v.planes.passive(b.id)?)))
        .collect();
    if passive.is_empty() {
        return;
    }
    counter(
        r,
        "lb_target_connection_attempts",
        "New connections' first SYNs as the target answered them (passive health): answered, refused (RST) or unanswered (retransmitted).",
        passive.iter().flat_map(|(b, h)| {
            [
                ("answered", h.answered),
                ("refused", h.refused),
                ("unanswered", h.unanswered),
            ]
            .map(|(result, n)| {
                let mut labels = target_labels(b);
                labels.push(("result".into(), result.into()));
                (labels, n)
            })
        }),
    );
    counter(
        r,
        "lb_target_passive_trips",
        "Times failed connection attempts in a row made the target suspect (passive health).",
        passive.iter().map(|(b, h)| (target_labels(b), h.trips)),
    );
}

/// Per target group (and zone): CloudWatch's HealthyHostCount and
/// UnHealthyHostCount, and fail-open.
fn groups(v: &View, r: &mut Registry) {
    let mut hosts: BTreeMap<(String, String), (i64, i64)> = BTreeMap::new();
    for b in v.model.backends.values() {
        let Some(t) = v.targets.get(&b.key) else {
            continue;
        };
        if t.state == "draining" {
            continue;
        }
        let e = hosts
            .entry((b.key.target_group.clone(), b.zone.clone()))
            .or_default();
        match t.healthy {
            true => e.0 += 1,
            false => e.1 += 1,
        }
    }
    let gz = |g: &str, z: &str| l(&[("target_group", g.to_string()), ("zone", z.to_string())]);
    gauge(
        r,
        "lb_target_group_healthy_targets",
        "Registered targets passing their health checks, per group and zone (CloudWatch HealthyHostCount).",
        hosts.iter().map(|((g, z), (h, _))| (gz(g, z), *h)),
    );
    gauge(
        r,
        "lb_target_group_unhealthy_targets",
        "Registered targets not passing them (initial, suspect, unhealthy), per group and zone (CloudWatch UnHealthyHostCount).",
        hosts.iter().map(|((g, z), (_, u))| (gz(g, z), *u)),
    );
    let groups: std::collections::BTreeSet<&str> = v
        .model
        .vips
        .iter()
        .map(|x| x.target_group.as_str())
        .collect();
    let g = |name: &str| l(&[("target_group", name.to_string())]);
    gauge(
        r,
        "lb_target_group_fail_open",
        "1 while the group has fewer healthy targets than its minimum and new flows go to all of them.",
        groups.iter().map(|n| (g(n), i64::from(v.failed_open.contains_key(*n)))),
    );
    counter(
        r,
        "lb_target_group_fail_open_starts",
        "Times the group started to fail open.",
        groups
            .iter()
            .map(|n| (g(n), v.fail_open_total.get(*n).copied().unwrap_or(0))),
    );
}

fn data_plane(v: &View, r: &mut Registry) {
    gauge_one(
        r,
        "lb_active_flows",
        "Live flows (CloudWatch ActiveFlowCount).",
        v.flows.total as i64,
    );
    gauge_one(
        r,
        "lb_half_open_flows",
        "Live TCP flows whose client has not completed the handshake (a SYN flood shows here; they live tcp_syn_timeout).",
        v.flows.half_open as i64,
    );
    if let Some(reasons) = v.planes.reasons() {
        counter(
            r,
            "lb_xdp_packets",
            "Packets by what the XDP program did with them (pass/drop reasons and forwarding).",
            Reason::ALL
                .iter()
                .zip(reasons)
                .map(|(reason, n)| (l(&[("reason", reason.name().to_string())]), n)),
        );
    }
    gauge_one(
        r,
        "lb_map_memory_bytes",
        "BPF map memory the config sizes (approximate).",
        v.planes.memory().unwrap_or(0) as i64,
    );
    counter(
        r,
        "lb_proxy_events",
        "Proxy data plane events (connect_failed, no_backend, udp_sessions_full, socket_error, splice_started).",
        v.planes
            .events()
            .into_iter()
            .map(|(name, n)| (l(&[("event", name.to_string())]), n)),
    );
    // reason: why this data plane (a fallback's cause, or "configured").
    let reason = match (v.fallback, v.dataplane) {
        (Some((code, _)), _) => *code,
        (None, DataplaneKind::Auto) => "auto",
        (None, _) => "configured",
    };
    gauge(
        r,
        "lb_dataplane_info",
        "The data plane in use, per interface.",
        v.planes.modes().into_iter().map(|(iface, mode)| {
            let labels = l(&[
                ("interface", iface),
                ("mode", mode),
                ("reason", reason.to_string()),
            ]);
            (labels, 1)
        }),
    );
}

fn daemon(v: &View, r: &mut Registry) {
    counter(
        r,
        "lb_config_reloads",
        "Config reloads by result.",
        [
            (l(&[("result", "ok".into())]), v.reloads.0),
            (l(&[("result", "error".into())]), v.reloads.1),
        ],
    );
    // Only with [announce]: a 0 would otherwise look like an outage.
    if let Some((_, announced)) = &v.announced {
        let addrs: std::collections::BTreeSet<_> =
            v.model.vips.iter().map(|x| x.lkey.address).collect();
        gauge(
            r,
            "lb_vip_announced",
            "1 while the VIP address's route is in the [announce] table (read back from the kernel), else 0.",
            addrs
                .into_iter()
                .map(|a| (l(&[("address", a.to_string())]), i64::from(announced.contains(&a)))),
        );
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::{encoding::text::encode, registry::Registry};

    #[test]
    fn label_values_are_escaped_and_counters_get_total() {
        let mut r = Registry::default();
        super::counter(
            &mut r,
            "lb_x",
            "help",
            [(super::l(&[("listener", "a\"b\\c\nd".into())]), 3)],
        );
        let mut out = String::new();
        encode(&mut out, &r).unwrap();
        assert!(
            out.contains(r#"lb_x_total{listener="a\"b\\c\nd"} 3"#),
            "{out}"
        );
        assert!(out.ends_with("# EOF\n"), "{out}");
        let mut r = Registry::default();
        super::gauge_one(&mut r, "lb_y", "help", 7);
        let mut out = String::new();
        encode(&mut out, &r).unwrap();
        assert!(out.contains("\nlb_y 7\n"), "no labels, no braces: {out}");
    }
}
