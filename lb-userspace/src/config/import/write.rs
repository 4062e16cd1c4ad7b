//! An imported `Config` as `lb.toml` text. Gateway settings are written
//! when the import set them; every NLB setting of a target group is
//! written, defaults included, so the file shows what the NLB had. Targets
//! are not written (they go to the state file).

use std::{fmt::Write as _, net::IpAddr, time::Duration};

use crate::config::{
    Config, Gateway, HealthCheck, HealthProtocol, Listener, Mode, Protocol, Stickiness, TargetGroup,
};

/// `cfg` as TOML, after `header` as `#` comment lines.
pub fn render(cfg: &Config, header: &[String]) -> String {
    let mut out = String::new();
    for h in header {
        match h.is_empty() {
            true => out.push_str("#\n"),
            false => out.push_str(&format!("# {h}\n")),
        }
    }
    gateway(&mut out, &cfg.gateway);
    for l in &cfg.listeners {
        listener(&mut out, l);
    }
    for tg in &cfg.target_groups {
        target_group(&mut out, tg);
    }
    out
}

/// `key = value` (value already in TOML syntax).
fn kv(out: &mut String, key: &str, value: impl std::fmt::Display) {
    // Writing to a String cannot fail.
    let _ = writeln!(out, "{key} = {value}");
}

fn gateway(out: &mut String, g: &Gateway) {
    let d = Gateway::default();
    out.push_str("\n[gateway]\n");
    let ifs: Vec<String> = g.interfaces.iter().map(|i| quote(i)).collect();
    kv(out, "interfaces", format!("[{}]", ifs.join(", ")));
    kv(out, "zone", quote(&g.zone));
    if g.dataplane != d.dataplane {
        kv(out, "dataplane", quote(g.dataplane.name()));
    }
    if g.max_vips != d.max_vips {
        kv(out, "max_vips", g.max_vips);
    }
    if g.max_targets != d.max_targets {
        kv(out, "max_targets", g.max_targets);
    }
}

fn listener(out: &mut String, l: &Listener) {
    out.push_str("\n[[listener]]\n");
    kv(out, "name", quote(&l.name));
    kv(out, "address", address(l.address));
    kv(out, "port", l.port);
    let proto = match l.protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::TcpUdp => "tcp_udp",
        Protocol::Tls => "tls",
    };
    kv(out, "protocol", quote(proto));
    kv(out, "target_group", quote(&l.target_group));
}

fn target_group(out: &mut String, tg: &TargetGroup) {
    out.push_str("\n[[target_group]]\n");
    kv(out, "name", quote(&tg.name));
    match tg.mode {
        Mode::Nat => kv(out, "mode", quote("nat")),
        Mode::Snat => kv(out, "mode", quote("snat")),
    }
    if let Some(a) = tg.snat_address {
        kv(out, "snat_address", address(a));
    }
    kv(out, "cross_zone", tg.cross_zone);
    let sticky = match tg.stickiness {
        Stickiness::None => "none",
        Stickiness::SourceIp => "source_ip",
    };
    kv(out, "stickiness", quote(sticky));
    kv(
        out,
        "deregistration_delay",
        duration(tg.deregistration_delay),
    );
    kv(
        out,
        "deregistration_connection_termination",
        tg.deregistration_connection_termination,
    );
    // Only where it is on: it needs the proxy data plane.
    if tg.proxy_protocol_v2 {
        kv(out, "proxy_protocol_v2", true);
    }
    kv(
        out,
        "unhealthy_connection_termination",
        tg.unhealthy_connection_termination,
    );
    if !tg.unhealthy_connection_termination {
        kv(
            out,
            "unhealthy_draining_interval",
            duration(tg.unhealthy_draining_interval),
        );
    }
    let r = &tg.unhealthy_state_routing;
    out.push_str("\n[target_group.unhealthy_state_routing]\n");
    kv(out, "minimum_healthy_targets", r.minimum_healthy_targets);
    kv(
        out,
        "minimum_healthy_percentage",
        r.minimum_healthy_percentage,
    );
    health_check(out, &tg.health_check);
}

fn health_check(out: &mut String, hc: &HealthCheck) {
    out.push_str("\n[target_group.health_check]\n");
    kv(out, "enabled", hc.enabled);
    let proto = match hc.protocol {
        HealthProtocol::Tcp => "tcp",
        HealthProtocol::Http => "http",
        HealthProtocol::Https => "https",
    };
    kv(out, "protocol", quote(proto));
    if let Some(p) = hc.port {
        kv(out, "port", p);
    }
    // lb warns about path and matcher on a TCP check.
    if hc.protocol != HealthProtocol::Tcp {
        kv(out, "path", quote(&hc.path));
        kv(out, "matcher", quote(&hc.matcher));
    }
    kv(out, "interval", duration(hc.interval));
    if let Some(t) = hc.timeout {
        kv(out, "timeout", duration(t));
    }
    kv(out, "healthy_threshold", hc.healthy_threshold);
    kv(out, "unhealthy_threshold", hc.unhealthy_threshold);
}

fn address(a: IpAddr) -> String {
    quote(&a.to_string())
}

/// A duration as the config reads it: "30s" (or "250ms").
fn duration(d: Duration) -> String {
    match d.subsec_millis() {
        0 => quote(&format!("{}s", d.as_secs())),
        _ => quote(&format!("{}ms", d.as_millis())),
    }
}

/// A TOML basic string.
fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            c if c.is_control() => q.push_str(&format!("\\u{:04X}", c as u32)),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every setting the import writes, in each of its forms.
    const RICH: &str = r#"
[gateway]
interfaces = ["eth0", "eth1"]
zone = "eu-west-1a"
dataplane = "proxy"
max_vips = 40
max_targets = 4096

[[listener]]
name = "tcp-80"
address = "2001:db8::10"
port = 80
protocol = "tcp_udp"
target_group = "web"

[[target_group]]
name = "web"
mode = "snat"
snat_address = "2001:db8::1"
cross_zone = true
stickiness = "source_ip"
deregistration_delay = "30s"
deregistration_connection_termination = false
proxy_protocol_v2 = true
unhealthy_connection_termination = false
unhealthy_draining_interval = "600s"

[target_group.unhealthy_state_routing]
minimum_healthy_targets = 2
minimum_healthy_percentage = 50

[target_group.health_check]
enabled = false
protocol = "https"
port = 8443
path = "/healthz"
matcher = "200,204"
interval = "10s"
timeout = "5s"
healthy_threshold = 3
unhealthy_threshold = 4
"#;

    #[test]
    fn what_is_written_reads_back_the_same() {
        let cfg = Config::parse(RICH).unwrap();
        let text = render(&cfg, &["imported".into(), String::new()]);
        assert!(text.starts_with("# imported\n#\n\n[gateway]\n"), "{text}");
        let back = Config::parse(&text).unwrap_or_else(|e| panic!("{text}\n{e}"));
        assert_eq!(format!("{back:?}"), format!("{cfg:?}"), "{text}");
        assert!(back.warnings(&text).is_empty());
    }

    #[test]
    fn strings_and_durations() {
        assert_eq!(quote("web"), "\"web\"");
        assert_eq!(quote("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000A\"");
        assert_eq!(duration(Duration::from_secs(30)), "\"30s\"");
        assert_eq!(duration(Duration::ZERO), "\"0s\"");
        assert_eq!(duration(Duration::from_millis(250)), "\"250ms\"");
        let v: toml::Value = toml::from_str(&format!("k = {}", quote("a\"b\\c\n\té"))).unwrap();
        assert_eq!(v["k"].as_str(), Some("a\"b\\c\n\té"));
    }
}
