//! Validation, one function per config section. Every error names its field
//! path; `Config::parse` adds the line.

use std::{collections::HashMap, net::IpAddr, time::Duration};

use super::{
    parse_matcher, proto_name, Config, ConfigError, DataplaneKind, Gateway, HealthCheck, Mode,
    Port, TargetGroup, MAX_TABLE,
};

/// The errors found so far.
#[derive(Default)]
struct Errors(Vec<ConfigError>);

impl Errors {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigError {
            path: path.into(),
            message: message.into(),
            line: None,
        });
    }

    /// `value` outside `lo..=hi`, printed as a duration.
    fn duration_range(
        &mut self,
        path: String,
        v: Duration,
        lo: Duration,
        hi: Duration,
        what: &str,
    ) {
        if !(lo..=hi).contains(&v) {
            self.push(
                path,
                format!("{} is out of range ({what})", humantime::format_duration(v)),
            );
        }
    }
}

pub fn validate(cfg: &Config) -> Vec<ConfigError> {
    let mut errs = Errors::default();
    if cfg.listeners.is_empty() {
        errs.push(
            "config",
            "no [[listener]]: a config serves at least one listener (and its [[target_group]])",
        );
    }
    gateway(cfg, &mut errs);
    names(cfg, &mut errs);
    announce(cfg, &mut errs);
    let tg_index = target_groups(cfg, &mut errs);
    udp_checks(cfg, &mut errs);
    tls(cfg, &mut errs);
    let keys = listeners(cfg, &tg_index, &mut errs);
    capacity(cfg, keys, &mut errs);
    errs.0
}

fn gateway(cfg: &Config, errs: &mut Errors) {
    let g = &cfg.gateway;
    if !lb_common::maglev::is_prime(g.ring_size) || g.ring_size < 3 {
        errs.push(
            "gateway.ring_size",
            format!("{} is not a prime number (e.g. 65537, 251)", g.ring_size),
        );
    }
    if g.max_vips == 0 || g.max_vips > 4096 {
        errs.push(
            "gateway.max_vips",
            format!("{} is out of range (1-4096)", g.max_vips),
        );
    }
    if (g.max_vips as u64) * (lb_common::RINGS_PER_VIP as u64) * (g.ring_size as u64)
        > u32::MAX as u64
    {
        errs.push(
            "gateway.max_vips",
            "max_vips x 4 x ring_size exceeds the ring map's u32 index",
        );
    }
    if g.max_targets == 0 || g.max_targets > 1 << 20 {
        errs.push(
            "gateway.max_targets",
            format!("{} is out of range (1-1048576)", g.max_targets),
        );
    }
    if g.interfaces.is_empty() && g.dataplane != DataplaneKind::Proxy {
        errs.push(
            "gateway.interfaces",
            format!(
                "is empty, but dataplane = {:?} attaches XDP to these interfaces: name them (e.g. interfaces = [\"eth0\"]), or set dataplane = \"proxy\"",
                g.dataplane.name()
            ),
        );
    }
    tables(cfg, errs);
    timeouts(g, errs);
    if !g.metrics_address.is_empty() && g.metrics_address.parse::<std::net::SocketAddr>().is_err() {
        errs.push(
            "gateway.metrics_address",
            format!(
                "{:?} is not an address:port like \"127.0.0.1:9650\"",
                g.metrics_address
            ),
        );
    }
    if g.proxy_udp_sessions == 0 {
        errs.push("gateway.proxy_udp_sessions", "must be at least 1");
    }
    if g.fib_cache > Duration::from_secs(60) {
        errs.push(
            "gateway.fib_cache",
            "must be at most 60s (neighbour changes apply only after it)",
        );
    }
    if !g.hash_seed.is_empty() && g.hash_key().is_none() {
        errs.push(
            "gateway.hash_seed",
            "must be 16 hex digits (64 bits; e.g. from `openssl rand -hex 8`)",
        );
    }
    if g.hash_seed.is_empty() && cfg.announce.is_some() {
        errs.push(
            "gateway.hash_seed",
            "is needed with [announce]: every gateway of a scale-out set must hash flows alike; set the same secret on each (`openssl rand -hex 8`)",
        );
    }
    let acl = g.deny.len() + cfg.listeners.iter().map(|l| l.allow.len()).sum::<usize>();
    if acl > lb_common::MAX_ACL_ENTRIES as usize {
        errs.push(
            "gateway.deny",
            format!(
                "the deny list and the listeners' allow lists hold {acl} prefixes; at most {} (merge prefixes)",
                lb_common::MAX_ACL_ENTRIES
            ),
        );
    }
    if cfg.snat_port_range().is_none() {
        errs.push(
            "gateway.snat_ports",
            format!(
                "{:?} is not a port range like \"20000-32767\"",
                g.snat_ports
            ),
        );
    }
}

/// Map sizes: bounded, with what the bound costs in memory.
fn tables(cfg: &Config, errs: &mut Errors) {
    let g = &cfg.gateway;
    for (name, v, bytes) in [
        // Two tables of it: IPv4 and IPv6 flows (see `Sizes::memory`).
        ("conntrack_size", g.conntrack_size, 232u64),
        ("snat_table_size", g.snat_table_size, 152),
        ("passthrough_table_size", g.passthrough_table_size, 112),
    ] {
        if !(1024..=MAX_TABLE).contains(&v) {
            errs.push(
                format!("gateway.{name}"),
                format!(
                    "{v} is out of range (1024-{MAX_TABLE}; {MAX_TABLE} entries take about {} MiB)",
                    (MAX_TABLE as u64 * bytes) >> 20
                ),
            );
        }
    }
    if cfg.target_groups.iter().any(|t| t.mode == Mode::Snat)
        && g.snat_table_size < g.conntrack_size
    {
        errs.push(
            "gateway.snat_table_size",
            format!(
                "{} is smaller than conntrack_size = {}: every tracked snat flow holds one entry",
                g.snat_table_size, g.conntrack_size
            ),
        );
    }
}

fn timeouts(g: &Gateway, errs: &mut Errors) {
    for (name, v, lo, hi) in [
        ("tcp_idle_timeout", g.tcp_idle_timeout, 1, 6000),
        ("udp_idle_timeout", g.udp_idle_timeout, 1, 6000),
        ("tcp_closing_timeout", g.tcp_closing_timeout, 1, 300),
        ("tcp_syn_timeout", g.tcp_syn_timeout, 1, 120),
    ] {
        errs.duration_range(
            format!("gateway.{name}"),
            v,
            Duration::from_secs(lo),
            Duration::from_secs(hi),
            &format!("{lo}s-{hi}s"),
        );
    }
}

fn announce(cfg: &Config, errs: &mut Errors) {
    let Some(a) = &cfg.announce else {
        return;
    };
    // 253-255 are the kernel's default, main and local tables.
    if a.table == 0 || (253..=255).contains(&a.table) {
        errs.push(
            "announce.table",
            format!(
                "{} is a reserved table (0, 253 default, 254 main, 255 local); use a dedicated one such as 100",
                a.table
            ),
        );
    }
    if a.withdraw_grace > Duration::from_secs(60) {
        errs.push(
            "announce.withdraw_grace",
            "must be at most 60s (a stop waits that long)",
        );
    }
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
    if a.device.is_empty() || a.device.len() > 15 || !a.device.chars().all(ok_char) {
        errs.push(
            "announce.device",
            format!(
                "{:?} is not an interface name (1-15 of a-z, A-Z, 0-9, '-', '_', '.')",
                a.device
            ),
        );
    }
}

/// Checks every target group; returns name -> index.
fn target_groups<'a>(cfg: &'a Config, errs: &mut Errors) -> HashMap<&'a str, usize> {
    let mut tg_index = HashMap::new();
    for (i, tg) in cfg.target_groups.iter().enumerate() {
        let p = format!("target_group[{i}]");
        if tg.name.is_empty() {
            errs.push(format!("{p}.name"), "must not be empty");
        }
        if tg_index.insert(tg.name.as_str(), i).is_some() {
            errs.push(
                format!("{p}.name"),
                format!("duplicate target group name {:?}", tg.name),
            );
        }
        // TLS listeners are the proxy's, beside XDP too.
        let mut users = cfg.listeners.iter().filter(|l| l.target_group == tg.name);
        let tls_only =
            users.clone().next().is_some() && users.all(|l| l.protocol == super::Protocol::Tls);
        if tg.proxy_protocol_v2 && cfg.gateway.dataplane != DataplaneKind::Proxy && !tls_only {
            errs.push(
                format!("{p}.proxy_protocol_v2"),
                "needs gateway.dataplane = \"proxy\", or only TLS listeners using the group (the XDP data plane forwards packets and cannot insert the header)",
            );
        }
        errs.duration_range(
            format!("{p}.deregistration_delay"),
            tg.deregistration_delay,
            Duration::ZERO,
            Duration::from_secs(3600),
            "0s-3600s, as NLB's",
        );
        if tg.mode == Mode::Snat && tg.snat_address.is_none() {
            errs.push(
                format!("{p}.snat_address"),
                "is required when mode = \"snat\"",
            );
        }
        errs.duration_range(
            format!("{p}.unhealthy_draining_interval"),
            tg.unhealthy_draining_interval,
            Duration::ZERO,
            Duration::from_secs(360_000),
            "0s-360000s, as NLB's",
        );
        let r = &tg.unhealthy_state_routing;
        if r.minimum_healthy_targets == 0 {
            errs.push(
                format!("{p}.unhealthy_state_routing.minimum_healthy_targets"),
                "0 is out of range (1 or more, as NLB's)",
            );
        }
        if r.minimum_healthy_percentage > 100 {
            errs.push(
                format!("{p}.unhealthy_state_routing.minimum_healthy_percentage"),
                format!(
                    "{} is out of range (0-100; 0 is off)",
                    r.minimum_healthy_percentage
                ),
            );
        }
        let n = tg.passive_health.consecutive_failures;
        if !(1..=255).contains(&n) {
            errs.push(
                format!("{p}.passive_health.consecutive_failures"),
                format!("{n} is out of range (1-255; `enabled = false` turns passive health off)"),
            );
        }
        targets(tg, &p, errs);
        health_check(&tg.health_check, &format!("{p}.health_check"), errs);
    }
    tg_index
}

fn targets(tg: &TargetGroup, p: &str, errs: &mut Errors) {
    let mut seen = HashMap::new();
    for (j, t) in tg.targets.iter().enumerate() {
        let tp = format!("{p}.targets[{j}]");
        if t.weight > 1000 {
            errs.push(
                format!("{tp}.weight"),
                format!("{} is out of range (0-1000)", t.weight),
            );
        }
        if seen.insert((t.address, t.port), j).is_some() {
            errs.push(
                tp.clone(),
                format!("duplicate target {}:{}", t.address, t.port),
            );
        }
        if let Some(s) = tg.snat_address {
            if s.is_ipv4() != t.address.is_ipv4() {
                errs.push(
                    format!("{tp}.address"),
                    format!("{} is not of the family of snat_address {s}", t.address),
                );
            }
        }
    }
}

fn health_check(hc: &HealthCheck, p: &str, errs: &mut Errors) {
    // NLB allows 5s-300s; shorter intervals are allowed here (the data path
    // reacts faster than NLB's fastest check).
    errs.duration_range(
        format!("{p}.interval"),
        hc.interval,
        Duration::from_millis(100),
        Duration::from_secs(300),
        "100ms-300s",
    );
    let t = hc.timeout();
    // A default timeout follows the interval: a bad interval is its error.
    if t.is_zero() && (hc.timeout.is_some() || !hc.interval.is_zero()) {
        errs.push(format!("{p}.timeout"), "0s: must be above 0");
    } else if t > hc.interval && !hc.interval.is_zero() {
        errs.push(
            format!("{p}.timeout"),
            format!(
                "{} > interval {}: must be at most the interval",
                humantime::format_duration(t),
                humantime::format_duration(hc.interval)
            ),
        );
    }
    for (name, v) in [
        ("healthy_threshold", hc.healthy_threshold),
        ("unhealthy_threshold", hc.unhealthy_threshold),
    ] {
        // NLB's range: one result alone never flips a target.
        if !(2..=10).contains(&v) {
            errs.push(format!("{p}.{name}"), format!("{v} is out of range (2-10)"));
        }
    }
    if parse_matcher(&hc.matcher).is_none() {
        errs.push(
            format!("{p}.matcher"),
            format!(
                "{:?} is not a status list like \"200-399\" or \"200,204\"",
                hc.matcher
            ),
        );
    }
    if !hc.path.starts_with('/') {
        errs.push(
            format!("{p}.path"),
            format!("{:?} must start with '/'", hc.path),
        );
    }
}

/// Listener keys (address, port, IP protocol) -> listener index.
type Keys = HashMap<(IpAddr, Port, u8), usize>;

fn listeners(cfg: &Config, tg_index: &HashMap<&str, usize>, errs: &mut Errors) -> Keys {
    let mut names = HashMap::new();
    let mut keys = Keys::new();
    let mut reverse: HashMap<(IpAddr, Port, u8), Vec<usize>> = HashMap::new();
    for (i, l) in cfg.listeners.iter().enumerate() {
        let p = format!("listener[{i}]");
        if names.insert(l.name.as_str(), i).is_some() {
            errs.push(
                format!("{p}.name"),
                format!("duplicate listener name {:?}", l.name),
            );
        }
        listener_address(cfg, i, errs);
        for (j, n) in l.allow.iter().enumerate() {
            if n.addr().is_ipv4() != l.address.is_ipv4() {
                errs.push(
                    format!("{p}.allow[{j}]"),
                    format!(
                        "{n} is of the other family than the listener's address {} (a v4 and a v6 listener each take their own)",
                        l.address
                    ),
                );
            }
        }
        if let Some(t) = l.tcp_idle_timeout {
            if l.protocol == super::Protocol::Udp {
                errs.push(
                    format!("{p}.tcp_idle_timeout"),
                    "a UDP listener has no TCP idle timeout (UDP flows use gateway.udp_idle_timeout)",
                );
            }
            // NLB takes 60s-6000s; shorter, as the gateway's key takes, too.
            errs.duration_range(
                format!("{p}.tcp_idle_timeout"),
                t,
                Duration::from_secs(1),
                Duration::from_secs(6000),
                "1s-6000s",
            );
        }
        for &proto in l.protocol.ip_protos() {
            if let Some(j) = keys.insert((l.address, l.port, proto), i) {
                errs.push(
                    p.clone(),
                    format!(
                        "{}:{} {} is already used by listener[{j}]",
                        l.address,
                        l.port,
                        proto_name(proto)
                    ),
                );
            }
        }
        let Some(&ti) = tg_index.get(l.target_group.as_str()) else {
            errs.push(
                format!("{p}.target_group"),
                format!("unknown target group {:?}", l.target_group),
            );
            continue;
        };
        listener_targets(cfg, i, ti, &mut reverse, errs);
    }
    keys
}

/// A VIP must be an address of its own.
fn listener_address(cfg: &Config, i: usize, errs: &mut Errors) {
    let l = &cfg.listeners[i];
    let p = format!("listener[{i}].address");
    if l.address.is_unspecified() || l.address.is_multicast() || l.address.is_loopback() {
        errs.push(
            p.clone(),
            format!(
                "{} cannot be a VIP (unspecified, multicast or loopback)",
                l.address
            ),
        );
    }
    if let Some((ti, j)) = cfg.target_groups.iter().enumerate().find_map(|(ti, tg)| {
        tg.targets
            .iter()
            .position(|t| t.address == l.address)
            .map(|j| (ti, j))
    }) {
        errs.push(
            p,
            format!(
                "{} is also target_group[{ti}].targets[{j}]'s address: a VIP must not be a target",
                l.address
            ),
        );
    }
}

/// The targets of listener `i`'s group `ti`: of its family, and (nat) each
/// target port serving at most `REVERSE_SLOTS` listeners, since a reply
/// names its target, not its listener: the data plane tries each listener
/// the target serves.
fn listener_targets(
    cfg: &Config,
    i: usize,
    ti: usize,
    reverse: &mut HashMap<(IpAddr, Port, u8), Vec<usize>>,
    errs: &mut Errors,
) {
    let (l, tg) = (&cfg.listeners[i], &cfg.target_groups[ti]);
    for (j, t) in tg.targets.iter().enumerate() {
        if t.address.is_ipv4() != l.address.is_ipv4() {
            errs.push(
                format!("target_group[{ti}].targets[{j}].address"),
                format!(
                    "{} is not of the family of listener {:?} ({})",
                    t.address, l.name, l.address
                ),
            );
        }
        if tg.mode != Mode::Nat {
            continue;
        }
        for &proto in l.protocol.ip_protos() {
            let serves = reverse.entry((t.address, t.port, proto)).or_default();
            if !serves.contains(&i) {
                serves.push(i);
            }
            if serves.len() == lb_common::REVERSE_SLOTS + 1 && serves.last() == Some(&i) {
                errs.push(
                    format!("target_group[{ti}].targets[{j}]"),
                    format!(
                        "{}:{} {} serves more than {} nat listeners (listener{:?}); use another port or mode = \"snat\" for some",
                        t.address,
                        t.port,
                        proto_name(proto),
                        lb_common::REVERSE_SLOTS,
                        serves
                    ),
                );
            }
        }
    }
}

/// What the maps are sized for.
fn capacity(cfg: &Config, keys: Keys, errs: &mut Errors) {
    let g = &cfg.gateway;
    if keys.len() > g.max_vips as usize {
        errs.push(
            "gateway.max_vips",
            format!(
                "{} listener keys need more than max_vips = {}",
                keys.len(),
                g.max_vips
            ),
        );
    }
    // Maglev gives each target ring_size / N slots: fewer slots than
    // targets leaves some with none.
    if let Some((i, tg)) = cfg
        .target_groups
        .iter()
        .enumerate()
        .find(|(_, tg)| tg.targets.len() > g.ring_size as usize)
    {
        errs.push(
            "gateway.ring_size",
            format!(
                "{} is smaller than target_group[{i}]'s {} targets: every target needs ring slots (about 100 per target keeps the split even; the default is 65537)",
                g.ring_size,
                tg.targets.len()
            ),
        );
    }
    let targets: usize = cfg.target_groups.iter().map(|t| t.targets.len()).sum();
    if targets > g.max_targets as usize {
        errs.push(
            "gateway.max_targets",
            format!(
                "{targets} targets need more than max_targets = {}",
                g.max_targets
            ),
        );
    }
}

/// Names end up in logs, `lb status` and metric labels: printable, no
/// quotes or backslashes, at most 64 characters.
fn names(cfg: &Config, errs: &mut Errors) {
    let mut check = |path: String, v: &str| {
        let ok = !v.is_empty()
            && v.chars().count() <= 64
            && v.chars().all(|c| !c.is_control() && c != '"' && c != '\\');
        if !ok {
            errs.push(
                path,
                format!("{v:?} is not a name: 1-64 printable characters, no quotes or backslashes"),
            );
        }
    };
    check("gateway.zone".into(), &cfg.gateway.zone);
    for (i, l) in cfg.listeners.iter().enumerate() {
        check(format!("listener[{i}].name"), &l.name);
    }
    for (i, tg) in cfg.target_groups.iter().enumerate() {
        // An empty group name has its own message (target_groups).
        if !tg.name.is_empty() {
            check(format!("target_group[{i}].name"), &tg.name);
        }
        for (j, t) in tg.targets.iter().enumerate() {
            check(format!("target_group[{i}].targets[{j}].zone"), &t.zone);
        }
    }
}

/// A group only UDP listeners use, checked by a TCP connect to the traffic
/// port: no UDP service answers that, so every target would be unhealthy
/// and all traffic dropped. NLB requires a TCP port for it too.
fn udp_checks(cfg: &Config, errs: &mut Errors) {
    for (i, tg) in cfg.target_groups.iter().enumerate() {
        let mut users = cfg.listeners.iter().filter(|l| l.target_group == tg.name);
        let udp_only =
            users.clone().next().is_some() && users.all(|l| l.protocol == super::Protocol::Udp);
        let hc = &tg.health_check;
        if udp_only && hc.enabled && hc.port.is_none() {
            errs.push(
                format!("target_group[{i}].health_check.port"),
                "is needed: the group serves only UDP listeners, and a TCP check of the UDP traffic port fails on every target; name a TCP (or HTTP) port the targets answer on, or set enabled = false",
            );
        }
    }
}

/// TLS listeners and `target_tls`: the certificates and keys load (read
/// here, so that `lb check` and a reload name a bad one and the running
/// ones stay), and TLS settings only where they apply.
fn tls(cfg: &Config, errs: &mut Errors) {
    use super::{tls, Protocol};
    for (i, l) in cfg.listeners.iter().enumerate() {
        let p = format!("listener[{i}]");
        if l.protocol != Protocol::Tls {
            for (set, key) in [
                (!l.certificates.is_empty(), "certificates"),
                (l.security_policy.is_some(), "security_policy"),
                (l.alpn_policy.is_some(), "alpn_policy"),
            ] {
                if set {
                    errs.push(
                        format!("{p}.{key}"),
                        "only a protocol = \"tls\" listener takes it",
                    );
                }
            }
            continue;
        }
        if l.certificates.is_empty() {
            errs.push(
                format!("{p}.certificates"),
                "a TLS listener needs at least one: certificates = [{ cert = \"/etc/lb/tls/web.crt\", key = \"/etc/lb/tls/web.key\" }]",
            );
        }
        for (j, c) in l.certificates.iter().enumerate() {
            if let Err(e) = tls::load_certificate(c) {
                let field = if e.path == c.key && e.path != c.cert {
                    "key"
                } else {
                    "cert"
                };
                errs.push(format!("{p}.certificates[{j}].{field}"), e.to_string());
            }
        }
    }
    for (i, tg) in cfg.target_groups.iter().enumerate() {
        let p = format!("target_group[{i}]");
        if tg.target_ca.is_some() && !tg.target_tls {
            errs.push(format!("{p}.target_ca"), "is for target_tls = true");
        }
        if let Some(t) = tg.target_tls() {
            if let Err(e) = tls::target_config(&t) {
                errs.push(format!("{p}.target_ca"), e.to_string());
            }
            if let Some(l) = cfg
                .listeners
                .iter()
                .find(|l| l.target_group == tg.name && l.protocol != Protocol::Tls)
            {
                errs.push(
                    format!("{p}.target_tls"),
                    format!(
                        "listener {:?} is not a TLS listener: XDP and the TCP proxy forward the client's bytes as they are, only a protocol = \"tls\" listener can encrypt them",
                        l.name
                    ),
                );
            }
        }
    }
}

/// Settings that are accepted but do nothing where they are.
pub fn warnings(cfg: &Config) -> Vec<ConfigError> {
    let mut w = Errors::default();
    let host_bits = |path: String, n: &ipnet::IpNet, w: &mut Errors| {
        if n.trunc() != *n {
            w.push(
                path,
                format!("{n} has host bits set: it means {}", n.trunc()),
            );
        }
    };
    for (j, n) in cfg.gateway.deny.iter().enumerate() {
        host_bits(format!("gateway.deny[{j}]"), n, &mut w);
    }
    for (i, l) in cfg.listeners.iter().enumerate() {
        for (j, n) in l.allow.iter().enumerate() {
            host_bits(format!("listener[{i}].allow[{j}]"), n, &mut w);
        }
    }
    for (i, tg) in cfg.target_groups.iter().enumerate() {
        if tg.mode == Mode::Nat && tg.snat_address.is_some() {
            w.push(
                format!("target_group[{i}].snat_address"),
                "is ignored: the group's mode is \"nat\" (client addresses are kept); it is used by mode = \"snat\"",
            );
        }
        if tg.unhealthy_connection_termination && !tg.unhealthy_draining_interval.is_zero() {
            w.push(
                format!("target_group[{i}].unhealthy_draining_interval"),
                "is ignored: unhealthy_connection_termination is on (flows end when the target turns unhealthy)",
            );
        }
        let hc = &tg.health_check;
        let default = HealthCheck::default();
        if hc.protocol == super::HealthProtocol::Tcp {
            for (key, set) in [
                ("path", hc.path != default.path),
                ("matcher", hc.matcher != default.matcher),
            ] {
                if set {
                    w.push(
                        format!("target_group[{i}].health_check.{key}"),
                        "is ignored: the check's protocol is \"tcp\" (a connect); it is used by protocol = \"http\"",
                    );
                }
            }
        }
    }
    w.0
}
