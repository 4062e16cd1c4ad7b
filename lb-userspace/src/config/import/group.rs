//! One target group: its health check (from `describe-target-groups`) and
//! its attributes (`describe-target-group-attributes`), as lb's
//! `[[target_group]]`. Values outside lb's limits are clamped; what has no
//! equivalent is reported, naming the AWS field.

use std::{collections::BTreeMap, net::IpAddr, time::Duration};

use super::aws;
use crate::config::{
    parse_matcher, HealthCheck, HealthProtocol, Mode, PassiveHealth, Port, Stickiness, TargetGroup,
    UnhealthyStateRouting,
};

/// What the group's conversion needs besides its description.
pub struct Group<'a> {
    pub tg: &'a aws::TargetGroup,
    /// None: no attributes output was given for the group.
    pub attributes: Option<&'a [aws::Attribute]>,
    /// Only UDP listeners use the group (its check then needs a TCP port).
    pub udp_only: bool,
    /// Source address for `snat` mode, of the group's family.
    pub snat: Option<IpAddr>,
}

/// The lb target group (without targets).
pub fn convert(g: &Group, report: &mut Vec<String>) -> TargetGroup {
    let name = &g.tg.target_group_name;
    let mut r = Report {
        name,
        lines: report,
    };
    let a = attributes(g, &mut r);
    let (mode, snat_address) = match (a.preserve_client_ip, g.snat) {
        (true, _) => (Mode::Nat, None),
        (false, Some(s)) => {
            r.push(format!(
                "preserve_client_ip.enabled = false: mode = \"snat\" with snat_address = {s} (targets see that address)"
            ));
            (Mode::Snat, Some(s))
        }
        (false, None) => {
            r.push(
                "preserve_client_ip.enabled = false (targets saw the NLB's address): mode = \"nat\" is written, so targets see client addresses and must route replies through the gateway; give a snat address (--snat4/--snat6) for mode = \"snat\"".into(),
            );
            (Mode::Nat, None)
        }
    };
    TargetGroup {
        name: name.clone(),
        mode,
        snat_address,
        targets: Vec::new(),
        health_check: health_check(g, &mut r),
        cross_zone: a.cross_zone,
        stickiness: a.stickiness,
        deregistration_delay: Duration::from_secs(a.dereg_delay),
        deregistration_connection_termination: a.dereg_termination,
        proxy_protocol_v2: a.proxy_v2,
        // Not NLB settings: lb's defaults.
        fail_open: true,
        passive_health: PassiveHealth::default(),
        syn_redispatch: true,
        target_tls: false,
        target_ca: None,
        unhealthy_state_routing: UnhealthyStateRouting {
            minimum_healthy_targets: a.min_healthy,
            minimum_healthy_percentage: a.min_healthy_pct,
        },
        unhealthy_connection_termination: a.unhealthy_termination,
        // It applies only with termination off (for NLB too): not written
        // otherwise, where lb would warn that it is ignored.
        unhealthy_draining_interval: match a.unhealthy_termination {
            true => Duration::ZERO,
            false => Duration::from_secs(a.unhealthy_draining),
        },
    }
}

/// Report lines about one group, prefixed with its name.
struct Report<'a> {
    name: &'a str,
    lines: &'a mut Vec<String>,
}

impl Report<'_> {
    fn push(&mut self, line: String) {
        self.lines
            .push(format!("target group {}: {line}", self.name));
    }

    /// `v` clamped to `lo..=hi`, reported when it was outside.
    fn clamp(&mut self, field: &str, v: u64, lo: u64, hi: u64) -> u64 {
        let c = v.clamp(lo, hi);
        if c != v {
            self.push(format!(
                "{field} = {v} is outside lb's range {lo}-{hi}: {c} is used"
            ));
        }
        c
    }
}

fn health_check(g: &Group, r: &mut Report) -> HealthCheck {
    let tg = g.tg;
    let mut hc = HealthCheck {
        enabled: tg.health_check_enabled.unwrap_or(true),
        ..HealthCheck::default()
    };
    hc.protocol = match tg.health_check_protocol.as_deref() {
        None | Some("TCP") => HealthProtocol::Tcp,
        Some("HTTP") => HealthProtocol::Http,
        Some("HTTPS") => HealthProtocol::Https,
        Some(p) => {
            r.push(format!(
                "HealthCheckProtocol = {p} is not tcp, http or https: a TCP check is used"
            ));
            HealthProtocol::Tcp
        }
    };
    hc.port = match tg.health_check_port.as_deref() {
        None | Some("traffic-port") => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => Some(Port(n)),
            _ => {
                r.push(format!(
                    "HealthCheckPort = {p:?} is not a port: the traffic port is checked"
                ));
                None
            }
        },
    };
    // lb refuses a TCP check of a UDP traffic port (nothing answers it);
    // NLB makes that very check, so its targets answer TCP on that number.
    if g.udp_only && hc.enabled && hc.port.is_none() {
        match tg.port {
            Some(p) if p > 0 => {
                hc.port = Some(Port(p));
                r.push(format!(
                    "HealthCheckPort = traffic-port on a group only UDP listeners use: lb needs a TCP port, so port = {p} (the group's Port) is written; targets registered on other ports are checked on {p} too"
                ));
            }
            _ => {
                hc.enabled = false;
                r.push("HealthCheckPort = traffic-port on a group only UDP listeners use, and the group has no Port: health checks are turned off (enabled = false)".into());
            }
        }
    }
    if let Some(v) = tg.health_check_interval_seconds {
        hc.interval = Duration::from_secs(r.clamp("HealthCheckIntervalSeconds", v, 1, 300));
    }
    if let Some(v) = tg.health_check_timeout_seconds {
        let interval = hc.interval.as_secs();
        let t = match v {
            0 => r.clamp("HealthCheckTimeoutSeconds", v, 1, interval),
            _ if v > interval => {
                r.push(format!(
                    "HealthCheckTimeoutSeconds = {v} is above the interval ({interval}s), which lb does not allow: {interval} is used"
                ));
                interval
            }
            _ => v,
        };
        hc.timeout = Some(Duration::from_secs(t));
    }
    if let Some(v) = tg.healthy_threshold_count {
        hc.healthy_threshold = r.clamp("HealthyThresholdCount", v, 2, 10) as u32;
    }
    if let Some(v) = tg.unhealthy_threshold_count {
        hc.unhealthy_threshold = r.clamp("UnhealthyThresholdCount", v, 2, 10) as u32;
    }
    // Path and matcher are only written for HTTP(S) checks (lb warns about
    // them on a TCP check).
    if hc.protocol != HealthProtocol::Tcp {
        if let Some(p) = &tg.health_check_path {
            if p.starts_with('/') {
                hc.path = p.clone();
            } else {
                r.push(format!(
                    "HealthCheckPath = {p:?} does not start with '/': \"/\" is used"
                ));
            }
        }
        if let Some(m) = tg.matcher.as_ref().and_then(|m| m.http_code.as_ref()) {
            if parse_matcher(m).is_some() {
                hc.matcher = m.clone();
            } else {
                r.push(format!(
                    "Matcher.HttpCode = {m:?} is not a status list like \"200-399\": \"200-399\" is used"
                ));
            }
        }
    }
    hc
}

/// The attributes as lb's settings; NLB's defaults where one is absent.
struct Attrs {
    dereg_delay: u64,
    dereg_termination: bool,
    stickiness: Stickiness,
    cross_zone: bool,
    proxy_v2: bool,
    preserve_client_ip: bool,
    unhealthy_termination: bool,
    unhealthy_draining: u64,
    min_healthy: u32,
    min_healthy_pct: u32,
}

fn attributes(g: &Group, r: &mut Report) -> Attrs {
    let tg = g.tg;
    let proto = tg.protocol.as_deref().unwrap_or("TCP");
    let udp = matches!(proto, "UDP" | "TCP_UDP");
    let mut a = Attrs {
        dereg_delay: 300,
        // NLB: on for new UDP and TCP_UDP groups, off otherwise.
        dereg_termination: udp,
        stickiness: Stickiness::None,
        cross_zone: false,
        proxy_v2: false,
        // NLB: off for ip groups of TCP and TLS, on otherwise.
        preserve_client_ip: !(tg.target_type() == "ip" && matches!(proto, "TCP" | "TLS")),
        unhealthy_termination: true,
        unhealthy_draining: 0,
        min_healthy: 1,
        min_healthy_pct: 0,
    };
    let Some(list) = g.attributes else {
        r.push(
            "no describe-target-group-attributes output was given: NLB's defaults are assumed"
                .into(),
        );
        return a;
    };
    // Sorted, so the report's order does not depend on AWS's.
    let map: BTreeMap<&str, &str> = list
        .iter()
        .map(|x| (x.key.as_str(), x.value.as_str()))
        .collect();
    let mut sticky = (false, "source_ip");
    for (&key, &v) in &map {
        let bad = |r: &mut Report, what: &str| {
            r.push(format!("{key} = {v:?} is not {what}: ignored"));
        };
        match key {
            "deregistration_delay.timeout_seconds" => match v.parse() {
                Ok(n) => a.dereg_delay = r.clamp(key, n, 0, 3600),
                Err(_) => bad(r, "a number of seconds"),
            },
            "deregistration_delay.connection_termination.enabled" => match flag(v) {
                Some(b) => a.dereg_termination = b,
                None => bad(r, "true or false"),
            },
            "stickiness.enabled" => match flag(v) {
                Some(b) => sticky.0 = b,
                None => bad(r, "true or false"),
            },
            "stickiness.type" => sticky.1 = v,
            "load_balancing.cross_zone.enabled" => match v {
                "use_load_balancer_configuration" => r.push(format!(
                    "{key} = {v}: the load balancer's own setting (describe-load-balancer-attributes) is not read; NLB's default, cross_zone = false, is written"
                )),
                _ => match flag(v) {
                    Some(b) => a.cross_zone = b,
                    None => bad(r, "true, false or use_load_balancer_configuration"),
                },
            },
            "proxy_protocol_v2.enabled" => match flag(v) {
                Some(b) => a.proxy_v2 = b,
                None => bad(r, "true or false"),
            },
            "preserve_client_ip.enabled" => match flag(v) {
                Some(b) => a.preserve_client_ip = b,
                None => bad(r, "true or false"),
            },
            "target_health_state.unhealthy.connection_termination.enabled" => match flag(v) {
                Some(b) => a.unhealthy_termination = b,
                None => bad(r, "true or false"),
            },
            "target_health_state.unhealthy.draining_interval_seconds" => match v.parse() {
                Ok(n) => a.unhealthy_draining = r.clamp(key, n, 0, 360_000),
                Err(_) => bad(r, "a number of seconds"),
            },
            "target_group_health.unhealthy_state_routing.minimum_healthy_targets.count" => {
                match number_or_off(v) {
                    // AWS's own range starts at 1; "off" is its default of 1.
                    Some(n) => a.min_healthy = r.clamp(key, n.unwrap_or(1), 1, u32::MAX as u64) as u32,
                    None => bad(r, "a number or off"),
                }
            }
            "target_group_health.unhealthy_state_routing.minimum_healthy_targets.percentage" => {
                match number_or_off(v) {
                    Some(n) => a.min_healthy_pct = r.clamp(key, n.unwrap_or(0), 0, 100) as u32,
                    None => bad(r, "a number or off"),
                }
            }
            "target_group_health.dns_failover.minimum_healthy_targets.count"
            | "target_group_health.dns_failover.minimum_healthy_targets.percentage" => {
                if v != "off" {
                    r.push(format!(
                        "{key} = {v}: no DNS failover here (a VIP is withdrawn by [announce] only when no target is healthy)"
                    ));
                }
            }
            _ => r.push(format!("{key} = {v:?}: not known here, ignored")),
        }
    }
    a.stickiness = match sticky {
        (false, _) => Stickiness::None,
        (true, "source_ip") => Stickiness::SourceIp,
        (true, t) => {
            r.push(format!(
                "stickiness.type = {t:?}: only source_ip exists here; stickiness = \"none\" is written"
            ));
            Stickiness::None
        }
    };
    a
}

/// An attribute's `true` or `false`.
fn flag(v: &str) -> Option<bool> {
    match v {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

/// A count or percentage: `off` (None) or a number.
fn number_or_off(v: &str) -> Option<Option<u64>> {
    match v {
        "off" => Some(None),
        _ => v.parse().ok().map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_values() {
        assert_eq!(flag("true"), Some(true));
        assert_eq!(flag("false"), Some(false));
        assert_eq!(flag("True"), None);
        assert_eq!(number_or_off("off"), Some(None));
        assert_eq!(number_or_off("50"), Some(Some(50)));
        assert_eq!(number_or_off("-1"), None);
    }

    #[test]
    fn out_of_range_values_are_clamped_and_reported() {
        let mut lines = Vec::new();
        let mut r = Report {
            name: "web",
            lines: &mut lines,
        };
        assert_eq!(r.clamp("HealthyThresholdCount", 12, 2, 10), 10);
        assert_eq!(r.clamp("UnhealthyThresholdCount", 3, 2, 10), 3);
        assert_eq!(
            lines,
            ["target group web: HealthyThresholdCount = 12 is outside lb's range 2-10: 10 is used"]
        );
    }
}
