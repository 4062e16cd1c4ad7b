//! The TOML config, in NLB's vocabulary, and its validation. Every error names
//! the field path so an operator can find it.

use std::{collections::HashMap, fmt, net::IpAddr, path::PathBuf, time::Duration};

use serde::{Deserialize, Deserializer};

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub gateway: Gateway,
    #[serde(default, rename = "listener")]
    pub listeners: Vec<Listener>,
    #[serde(default, rename = "target_group")]
    pub target_groups: Vec<TargetGroup>,
    /// Route announcement for a BGP daemon; absent = not announced.
    #[serde(default)]
    pub announce: Option<Announce>,
}

/// VIP announcement: one route per VIP address with a healthy target, in a
/// kernel table that BIRD (or any routing daemon) learns and exports. The
/// routes point at a tun device that only exists while the daemon runs, so
/// the kernel removes them when it dies, however it dies.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Announce {
    /// Kernel routing table for the VIP routes (not consulted for
    /// forwarding unless an `ip rule` says so).
    pub table: u32,
    /// Name of the tun device the routes point at.
    pub device: String,
    /// On shutdown, how long a data plane that ends with the process (the
    /// proxy, or XDP with --detach-on-exit) keeps serving after the
    /// withdrawal, while routers move the traffic.
    #[serde(deserialize_with = "duration")]
    pub withdraw_grace: Duration,
}

impl Default for Announce {
    fn default() -> Self {
        Announce {
            table: 100,
            device: "lb-vips".into(),
            withdraw_grace: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DataplaneKind {
    #[default]
    Auto,
    Xdp,
    XdpGeneric,
    Proxy,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Gateway {
    /// Interfaces the XDP program is attached to.
    pub interfaces: Vec<String>,
    /// This gateway's availability zone.
    pub zone: String,
    pub dataplane: DataplaneKind,
    /// bpffs directory for pinned maps and links.
    pub pin_path: PathBuf,
    /// Prometheus text endpoint (`/metrics`); empty string disables it.
    pub metrics_address: String,
    /// Unix socket `lb status` talks to.
    pub admin_socket: PathBuf,
    /// Maglev table size (prime).
    pub ring_size: u32,
    /// Most listeners (VIP, protocol) the maps are sized for.
    pub max_vips: u32,
    /// Most targets, over all target groups.
    pub max_targets: u32,
    /// Conntrack entries (LRU).
    pub conntrack_size: u32,
    /// SNAT table entries (LRU); at least `conntrack_size` when a target
    /// group uses `snat` (every tracked flow holds one).
    pub snat_table_size: u32,
    /// Non-VIP flows to target ports that the gateway remembers (LRU), so
    /// that clients reaching a target directly keep working in `nat` mode.
    pub passthrough_table_size: u32,
    /// Source ports for `snat` mode, "MIN-MAX". Keep it outside
    /// net.ipv4.ip_local_port_range.
    pub snat_ports: String,
    #[serde(deserialize_with = "duration")]
    pub tcp_idle_timeout: Duration,
    #[serde(deserialize_with = "duration")]
    pub udp_idle_timeout: Duration,
    /// Proxy data plane: how long connecting to a target may take before
    /// the next target in the ring is tried.
    #[serde(deserialize_with = "duration")]
    pub proxy_connect_timeout: Duration,
    /// Proxy data plane: most UDP sessions at once (the table is bounded).
    pub proxy_udp_sessions: u32,
    /// A TCP flow that saw FIN or RST lives this much longer.
    #[serde(deserialize_with = "duration")]
    pub tcp_closing_timeout: Duration,
    /// How long a next hop found by the FIB is reused ("0s": every packet
    /// asks the FIB). Neighbour and route changes apply within this time.
    #[serde(deserialize_with = "duration")]
    pub fib_cache: Duration,
}

impl Gateway {
    /// Settings a running daemon cannot change (map sizes, where it is
    /// attached and pinned, its listening sockets, the proxy's settings).
    /// On a reload they keep the running values; returns the names of
    /// those the new config changed, to log them as waiting for a restart.
    pub fn keep_restart_only(&mut self, running: &Gateway) -> Vec<&'static str> {
        let mut changed = Vec::new();
        macro_rules! keep {
            ($($f:ident),*) => {$(
                if self.$f != running.$f {
                    changed.push(stringify!($f));
                    self.$f = running.$f.clone();
                }
            )*};
        }
        keep!(
            interfaces,
            dataplane,
            pin_path,
            metrics_address,
            admin_socket,
            ring_size,
            max_vips,
            max_targets,
            conntrack_size,
            snat_table_size,
            passthrough_table_size,
            proxy_connect_timeout,
            proxy_udp_sessions
        );
        changed
    }
}

impl Default for Gateway {
    fn default() -> Self {
        Gateway {
            interfaces: Vec::new(),
            zone: "default".into(),
            dataplane: DataplaneKind::Auto,
            pin_path: "/sys/fs/bpf/lb".into(),
            metrics_address: "127.0.0.1:9650".into(),
            admin_socket: "/run/lb/lb.sock".into(),
            ring_size: lb_common::DEFAULT_RING_SIZE,
            max_vips: 16,
            max_targets: 1024,
            conntrack_size: 262_144,
            snat_table_size: 262_144,
            passthrough_table_size: 65_536,
            snat_ports: "20000-32767".into(),
            tcp_idle_timeout: Duration::from_secs(350),
            udp_idle_timeout: Duration::from_secs(120),
            tcp_closing_timeout: Duration::from_secs(10),
            proxy_connect_timeout: Duration::from_secs(3),
            proxy_udp_sessions: 65_536,
            fib_cache: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Tcp,
    Udp,
    TcpUdp,
}

impl Protocol {
    /// The IP protocols this listener covers.
    pub fn ip_protos(self) -> &'static [u8] {
        match self {
            Protocol::Tcp => &[lb_common::PROTO_TCP],
            Protocol::Udp => &[lb_common::PROTO_UDP],
            Protocol::TcpUdp => &[lb_common::PROTO_TCP, lb_common::PROTO_UDP],
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    pub name: String,
    pub address: IpAddr,
    pub port: u32,
    pub protocol: Protocol,
    pub target_group: String,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Destination NAT; the client address is preserved.
    #[default]
    Nat,
    /// Full NAT to a gateway address.
    Snat,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Stickiness {
    #[default]
    None,
    SourceIp,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetGroup {
    pub name: String,
    #[serde(default)]
    pub mode: Mode,
    /// Source address for `snat` mode.
    pub snat_address: Option<IpAddr>,
    #[serde(default)]
    pub targets: Vec<Target>,
    #[serde(default)]
    pub health_check: HealthCheck,
    /// NLB default: off.
    #[serde(default)]
    pub cross_zone: bool,
    #[serde(default)]
    pub stickiness: Stickiness,
    /// NLB default: 300 s.
    #[serde(default = "default_dereg", deserialize_with = "duration")]
    pub deregistration_delay: Duration,
    /// Send a PROXY protocol v2 header to targets (proxy data plane only).
    #[serde(default)]
    pub proxy_protocol_v2: bool,
}

fn default_dereg() -> Duration {
    Duration::from_secs(300)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub address: IpAddr,
    pub port: u32,
    #[serde(default = "default_zone")]
    pub zone: String,
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_zone() -> String {
    "default".into()
}
fn default_weight() -> u32 {
    1
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum HealthProtocol {
    #[default]
    Tcp,
    Http,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheck {
    pub enabled: bool,
    pub protocol: HealthProtocol,
    /// Defaults to the target's port ("traffic-port").
    pub port: Option<u32>,
    pub path: String,
    /// Status codes that count as healthy, e.g. "200-399" or "200,204".
    pub matcher: String,
    #[serde(deserialize_with = "duration")]
    pub interval: Duration,
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
}

impl Default for HealthCheck {
    fn default() -> Self {
        // NLB's defaults.
        HealthCheck {
            enabled: true,
            protocol: HealthProtocol::Tcp,
            port: None,
            path: "/".into(),
            matcher: "200-399".into(),
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
            healthy_threshold: 5,
            unhealthy_threshold: 2,
        }
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s)
        .map_err(|e| serde::de::Error::custom(format!("bad duration {s:?}: {e} (e.g. \"5s\")")))
}

/// One problem in a config, with the field path (and line, when known).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
    pub line: Option<usize>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)?;
        if let Some(l) = self.line {
            write!(f, " at line {l}")?;
        }
        Ok(())
    }
}

/// All problems found in a config.
#[derive(Debug, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl Config {
    /// Parses and validates.
    pub fn parse(text: &str) -> Result<Config, ConfigErrors> {
        let cfg: Config = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| text[..s.start].matches('\n').count() + 1);
            ConfigErrors(vec![ConfigError {
                path: "config".into(),
                message: e.message().to_string(),
                line,
            }])
        })?;
        let mut errs = cfg.validate();
        for e in &mut errs {
            e.line = e.line.or_else(|| locate(text, &e.path));
        }
        if errs.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigErrors(errs))
        }
    }

    pub fn snat_port_range(&self) -> Option<(u16, u16)> {
        let (a, b) = self.gateway.snat_ports.split_once('-')?;
        let (a, b) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
        (a >= 1 && a <= b).then_some((a, b))
    }

    pub fn validate(&self) -> Vec<ConfigError> {
        let mut errs = Vec::new();
        let mut err = |path: String, message: String| {
            errs.push(ConfigError {
                path,
                message,
                line: None,
            })
        };
        let g = &self.gateway;
        if !lb_common::maglev::is_prime(g.ring_size) || g.ring_size < 3 {
            err(
                "gateway.ring_size".into(),
                format!("{} is not a prime number (e.g. 65537, 251)", g.ring_size),
            );
        }
        if g.max_vips == 0 || g.max_vips > 4096 {
            err(
                "gateway.max_vips".into(),
                format!("{} is out of range (1-4096)", g.max_vips),
            );
        }
        if (g.max_vips as u64) * (lb_common::RINGS_PER_VIP as u64) * (g.ring_size as u64)
            > u32::MAX as u64
        {
            err(
                "gateway.max_vips".into(),
                "max_vips x 4 x ring_size exceeds the ring map's u32 index".into(),
            );
        }
        if g.max_targets == 0 || g.max_targets > 1 << 20 {
            err(
                "gateway.max_targets".into(),
                format!("{} is out of range (1-1048576)", g.max_targets),
            );
        }
        // Map sizes: bounded, with what the bound costs in memory.
        for (name, v, bytes) in [
            ("conntrack_size", g.conntrack_size, 128u64),
            ("snat_table_size", g.snat_table_size, 152),
            ("passthrough_table_size", g.passthrough_table_size, 112),
        ] {
            if !(1024..=MAX_TABLE).contains(&v) {
                err(
                    format!("gateway.{name}"),
                    format!(
                        "{v} is out of range (1024-{MAX_TABLE}; {MAX_TABLE} entries take about {} MiB)",
                        (MAX_TABLE as u64 * bytes) >> 20
                    ),
                );
            }
        }
        for (name, v, lo, hi) in [
            ("tcp_idle_timeout", g.tcp_idle_timeout, 1, 6000),
            ("udp_idle_timeout", g.udp_idle_timeout, 1, 6000),
            ("tcp_closing_timeout", g.tcp_closing_timeout, 1, 300),
        ] {
            if !(Duration::from_secs(lo)..=Duration::from_secs(hi)).contains(&v) {
                err(
                    format!("gateway.{name}"),
                    format!(
                        "{} is out of range ({lo}s-{hi}s)",
                        humantime::format_duration(v)
                    ),
                );
            }
        }
        if self.target_groups.iter().any(|t| t.mode == Mode::Snat)
            && g.snat_table_size < g.conntrack_size
        {
            err(
                "gateway.snat_table_size".into(),
                format!(
                    "{} is smaller than conntrack_size = {}: every tracked snat flow holds one entry",
                    g.snat_table_size, g.conntrack_size
                ),
            );
        }
        if !g.metrics_address.is_empty()
            && g.metrics_address.parse::<std::net::SocketAddr>().is_err()
        {
            err(
                "gateway.metrics_address".into(),
                format!(
                    "{:?} is not an address:port like \"127.0.0.1:9650\"",
                    g.metrics_address
                ),
            );
        }
        if g.proxy_udp_sessions == 0 {
            err(
                "gateway.proxy_udp_sessions".into(),
                "must be at least 1".into(),
            );
        }
        if g.fib_cache > Duration::from_secs(60) {
            err(
                "gateway.fib_cache".into(),
                "must be at most 60s (neighbour changes apply only after it)".into(),
            );
        }
        if self.snat_port_range().is_none() {
            err(
                "gateway.snat_ports".into(),
                format!(
                    "{:?} is not a port range like \"20000-32767\"",
                    g.snat_ports
                ),
            );
        }
        if let Some(a) = &self.announce {
            // 253-255 are the kernel's default, main and local tables.
            if a.table == 0 || (253..=255).contains(&a.table) {
                err(
                    "announce.table".into(),
                    format!(
                        "{} is a reserved table (0, 253 default, 254 main, 255 local); use a dedicated one such as 100",
                        a.table
                    ),
                );
            }
            if a.withdraw_grace > Duration::from_secs(60) {
                err(
                    "announce.withdraw_grace".into(),
                    "must be at most 60s (a stop waits that long)".into(),
                );
            }
            let ok_char = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
            if a.device.is_empty() || a.device.len() > 15 || !a.device.chars().all(ok_char) {
                err(
                    "announce.device".into(),
                    format!(
                        "{:?} is not an interface name (1-15 of a-z, A-Z, 0-9, '-', '_', '.')",
                        a.device
                    ),
                );
            }
        }
        let mut tg_index = HashMap::new();
        for (i, tg) in self.target_groups.iter().enumerate() {
            let p = format!("target_group[{i}]");
            if tg.name.is_empty() {
                err(format!("{p}.name"), "must not be empty".into());
            }
            if tg_index.insert(tg.name.as_str(), i).is_some() {
                err(
                    format!("{p}.name"),
                    format!("duplicate target group name {:?}", tg.name),
                );
            }
            if tg.proxy_protocol_v2 && g.dataplane != DataplaneKind::Proxy {
                err(
                    format!("{p}.proxy_protocol_v2"),
                    "needs gateway.dataplane = \"proxy\" (the XDP data plane forwards packets and cannot insert the header)".into(),
                );
            }
            if tg.deregistration_delay > Duration::from_secs(3600) {
                err(
                    format!("{p}.deregistration_delay"),
                    format!(
                        "{} is out of range (0s-3600s, as NLB's)",
                        humantime::format_duration(tg.deregistration_delay)
                    ),
                );
            }
            if tg.mode == Mode::Snat && tg.snat_address.is_none() {
                err(
                    format!("{p}.snat_address"),
                    "is required when mode = \"snat\"".into(),
                );
            }
            let mut seen = HashMap::new();
            for (j, t) in tg.targets.iter().enumerate() {
                let tp = format!("{p}.targets[{j}]");
                if !(1..=65535).contains(&t.port) {
                    err(
                        format!("{tp}.port"),
                        format!("{} is out of range (1-65535)", t.port),
                    );
                }
                if t.weight > 1000 {
                    err(
                        format!("{tp}.weight"),
                        format!("{} is out of range (0-1000)", t.weight),
                    );
                }
                if seen.insert((t.address, t.port), j).is_some() {
                    err(
                        tp.clone(),
                        format!("duplicate target {}:{}", t.address, t.port),
                    );
                }
                if let Some(s) = tg.snat_address {
                    if s.is_ipv4() != t.address.is_ipv4() {
                        err(
                            format!("{tp}.address"),
                            format!("{} is not of the family of snat_address {s}", t.address),
                        );
                    }
                }
            }
            let hc = &tg.health_check;
            if let Some(port) = hc.port {
                if !(1..=65535).contains(&port) {
                    err(
                        format!("{p}.health_check.port"),
                        format!("{port} is out of range (1-65535)"),
                    );
                }
            }
            // NLB allows 5s-300s; shorter intervals are allowed here (the
            // data path reacts faster than NLB's fastest check).
            if !(Duration::from_millis(100)..=Duration::from_secs(300)).contains(&hc.interval) {
                err(
                    format!("{p}.health_check.interval"),
                    format!(
                        "{} is out of range (100ms-300s)",
                        humantime::format_duration(hc.interval)
                    ),
                );
            }
            if hc.timeout.is_zero() || hc.timeout > hc.interval {
                err(
                    format!("{p}.health_check.timeout"),
                    "must be above 0 and at most the interval".into(),
                );
            }
            for (name, v) in [
                ("healthy_threshold", hc.healthy_threshold),
                ("unhealthy_threshold", hc.unhealthy_threshold),
            ] {
                // NLB's range: one result alone never flips a target.
                if !(2..=10).contains(&v) {
                    err(
                        format!("{p}.health_check.{name}"),
                        format!("{v} is out of range (2-10)"),
                    );
                }
            }
            if parse_matcher(&hc.matcher).is_none() {
                err(
                    format!("{p}.health_check.matcher"),
                    format!(
                        "{:?} is not a status list like \"200-399\" or \"200,204\"",
                        hc.matcher
                    ),
                );
            }
            if !hc.path.starts_with('/') {
                err(
                    format!("{p}.health_check.path"),
                    format!("{:?} must start with '/'", hc.path),
                );
            }
        }
        let mut names = HashMap::new();
        let mut keys = HashMap::new();
        let mut reverse: HashMap<(IpAddr, u32, u8), Vec<usize>> = HashMap::new();
        for (i, l) in self.listeners.iter().enumerate() {
            let p = format!("listener[{i}]");
            if names.insert(l.name.as_str(), i).is_some() {
                err(
                    format!("{p}.name"),
                    format!("duplicate listener name {:?}", l.name),
                );
            }
            if !(1..=65535).contains(&l.port) {
                err(
                    format!("{p}.port"),
                    format!("{} is out of range (1-65535)", l.port),
                );
            }
            if l.address.is_unspecified() || l.address.is_multicast() || l.address.is_loopback() {
                err(
                    format!("{p}.address"),
                    format!(
                        "{} cannot be a VIP (unspecified, multicast or loopback)",
                        l.address
                    ),
                );
            }
            if let Some((ti, j)) = self.target_groups.iter().enumerate().find_map(|(ti, tg)| {
                tg.targets
                    .iter()
                    .position(|t| t.address == l.address)
                    .map(|j| (ti, j))
            }) {
                err(
                    format!("{p}.address"),
                    format!(
                        "{} is also target_group[{ti}].targets[{j}]'s address: a VIP must not be a target",
                        l.address
                    ),
                );
            }
            for &proto in l.protocol.ip_protos() {
                if let Some(j) = keys.insert((l.address, l.port, proto), i) {
                    err(
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
                err(
                    format!("{p}.target_group"),
                    format!("unknown target group {:?}", l.target_group),
                );
                continue;
            };
            let tg = &self.target_groups[ti];
            for (j, t) in tg.targets.iter().enumerate() {
                if t.address.is_ipv4() != l.address.is_ipv4() {
                    err(
                        format!("target_group[{ti}].targets[{j}].address"),
                        format!(
                            "{} is not of the family of listener {:?} ({})",
                            t.address, l.name, l.address
                        ),
                    );
                }
                // A reply names its target, not its listener: the data
                // plane tries each listener the target serves.
                if tg.mode == Mode::Nat {
                    for &proto in l.protocol.ip_protos() {
                        let serves = reverse.entry((t.address, t.port, proto)).or_default();
                        if !serves.contains(&i) {
                            serves.push(i);
                        }
                        if serves.len() == lb_common::REVERSE_SLOTS + 1 && serves.last() == Some(&i)
                        {
                            err(
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
        }
        if keys.len() > g.max_vips as usize {
            err(
                "gateway.max_vips".into(),
                format!(
                    "{} listener keys need more than max_vips = {}",
                    keys.len(),
                    g.max_vips
                ),
            );
        }
        let targets: usize = self.target_groups.iter().map(|t| t.targets.len()).sum();
        if targets > g.max_targets as usize {
            err(
                "gateway.max_targets".into(),
                format!(
                    "{targets} targets need more than max_targets = {}",
                    g.max_targets
                ),
            );
        }
        errs
    }
}

/// Upper bound of the hash map sizes (conntrack, SNAT, passthrough).
pub const MAX_TABLE: u32 = 1 << 24;

pub fn proto_name(p: u8) -> &'static str {
    match p {
        lb_common::PROTO_TCP => "tcp",
        lb_common::PROTO_UDP => "udp",
        _ => "?",
    }
}

/// Parses "200-399" or "200,204,301-302" into inclusive ranges.
pub fn parse_matcher(s: &str) -> Option<Vec<(u16, u16)>> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
            None => {
                let v = part.parse().ok()?;
                (v, v)
            }
        };
        if !(100..=599).contains(&a) || !(100..=599).contains(&b) || a > b {
            return None;
        }
        out.push((a, b));
    }
    Some(out)
}

/// Best-effort line of a field path like `listener[1].port` in the text.
fn locate(text: &str, path: &str) -> Option<usize> {
    let mut parts = path.split('.');
    let head = parts.next()?;
    let (table, idx) = match head.split_once('[') {
        Some((t, i)) => (t, i.trim_end_matches(']').parse::<usize>().ok()?),
        None if head == "gateway" || head == "announce" => (head, 0),
        None => return None,
    };
    let header = if table == "gateway" || table == "announce" {
        format!("[{table}]")
    } else {
        format!("[[{table}]]")
    };
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.trim() == header)
        .nth(idx)
        .map(|(n, _)| n)?;
    let mut rest: Vec<&str> = parts.collect();
    // Nested tables ("targets[1]") are searched as [[table.targets]] blocks.
    let mut from = start;
    let mut prefix = table.to_string();
    while rest.len() > 1 {
        let (sub, si) = match rest[0].split_once('[') {
            Some((s, i)) => (s, i.trim_end_matches(']').parse::<usize>().ok()?),
            None => (rest[0], 0),
        };
        prefix = format!("{prefix}.{sub}");
        let want = [format!("[[{prefix}]]"), format!("[{prefix}]")];
        from = lines
            .iter()
            .enumerate()
            .skip(from + 1)
            .filter(|(_, l)| want.iter().any(|w| l.trim() == w))
            .nth(si)
            .map(|(n, _)| n)?;
        rest.remove(0);
    }
    let Some(field) = rest.first() else {
        return Some(from + 1);
    };
    let field = field.split('[').next()?;
    for (n, l) in lines.iter().enumerate().skip(from + 1) {
        let t = l.trim();
        if t.starts_with('[') {
            break;
        }
        if t.split('=').next().map(str::trim) == Some(field) {
            return Some(n + 1);
        }
    }
    Some(from + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"[gateway]
interfaces = ["eth0"]
zone = "a"

[[listener]]
name = "web"
address = "10.0.0.1"
port = 80
protocol = "tcp"
target_group = "web"

[[target_group]]
name = "web"
[[target_group.targets]]
address = "10.1.0.1"
port = 8080
zone = "a"
"#;

    /// The single error of `text`, as printed.
    fn error(text: &str) -> String {
        match Config::parse(text) {
            Ok(_) => panic!("config should be rejected:\n{text}"),
            Err(e) => {
                assert_eq!(e.0.len(), 1, "one error expected: {e}");
                e.to_string()
            }
        }
    }

    #[test]
    fn base_is_valid_with_nlb_defaults() {
        let c = Config::parse(BASE).unwrap();
        let tg = &c.target_groups[0];
        assert_eq!(tg.deregistration_delay, Duration::from_secs(300));
        assert!(!tg.cross_zone);
        let hc = &tg.health_check;
        assert_eq!(
            (hc.interval, hc.timeout),
            (Duration::from_secs(30), Duration::from_secs(10))
        );
        assert_eq!((hc.healthy_threshold, hc.unhealthy_threshold), (5, 2));
        assert_eq!(tg.targets[0].weight, 1);
    }

    #[test]
    fn port_out_of_range_names_field_and_line() {
        let text = format!("{BASE}\n[[listener]]\nname = \"two\"\naddress = \"10.0.0.2\"\nport = 70000\nprotocol = \"udp\"\ntarget_group = \"web\"\n");
        assert_eq!(
            error(&text),
            "listener[1].port: 70000 is out of range (1-65535) at line 22"
        );
    }

    #[test]
    fn announce_defaults_and_errors() {
        assert_eq!(Config::parse(BASE).unwrap().announce, None);
        let on = Config::parse(&format!("{BASE}\n[announce]\n")).unwrap();
        assert_eq!(on.announce, Some(Announce::default()));
        assert_eq!(
            error(&format!("{BASE}\n[announce]\ntable = 254\n")),
            "announce.table: 254 is a reserved table (0, 253 default, 254 main, 255 local); use a dedicated one such as 100 at line 20"
        );
        assert_eq!(
            error(&format!("{BASE}\n[announce]\ndevice = \"way-too-long-name0\"\n")),
            "announce.device: \"way-too-long-name0\" is not an interface name (1-15 of a-z, A-Z, 0-9, '-', '_', '.') at line 20"
        );
        assert!(
            error(&format!("{BASE}\n[announce]\ntabel = 7\n")).contains("unknown field `tabel`")
        );
        assert_eq!(
            error(&format!("{BASE}\n[announce]\nwithdraw_grace = \"5m\"\n")),
            "announce.withdraw_grace: must be at most 60s (a stop waits that long) at line 20"
        );
        assert_eq!(Announce::default().withdraw_grace, Duration::from_secs(2));
    }

    #[test]
    fn unknown_target_group() {
        let text = BASE.replace("target_group = \"web\"", "target_group = \"nope\"");
        assert_eq!(
            error(&text),
            "listener[0].target_group: unknown target group \"nope\" at line 10"
        );
    }

    #[test]
    fn duplicate_names() {
        let text = format!("{BASE}\n[[target_group]]\nname = \"web\"\n");
        assert_eq!(
            error(&text),
            "target_group[1].name: duplicate target group name \"web\" at line 20"
        );
        let text = format!("{BASE}\n[[listener]]\nname = \"web\"\naddress = \"10.0.0.3\"\nport = 81\nprotocol = \"udp\"\ntarget_group = \"web\"\n");
        assert!(error(&text).starts_with("listener[1].name: duplicate listener name \"web\""));
    }

    #[test]
    fn address_family_mismatch() {
        let text = BASE.replace("address = \"10.1.0.1\"", "address = \"fd01::1\"");
        assert_eq!(
            error(&text),
            "target_group[0].targets[0].address: fd01::1 is not of the family of listener \"web\" (10.0.0.1) at line 15"
        );
    }

    #[test]
    fn listener_key_used_twice() {
        let text = format!("{BASE}\n[[listener]]\nname = \"dup\"\naddress = \"10.0.0.1\"\nport = 80\nprotocol = \"tcp_udp\"\ntarget_group = \"web\"\n");
        let e = Config::parse(&text).unwrap_err().to_string();
        assert!(
            e.contains("listener[1]: 10.0.0.1:80 tcp is already used by listener[0]"),
            "{e}"
        );
    }

    #[test]
    fn snat_needs_an_address() {
        let text = BASE.replace(
            "name = \"web\"\n[[target_group.targets]]",
            "name = \"web\"\nmode = \"snat\"\n[[target_group.targets]]",
        );
        assert!(error(&text)
            .starts_with("target_group[0].snat_address: is required when mode = \"snat\""));
    }

    #[test]
    fn health_check_ranges() {
        let hc = |extra: &str| format!("{BASE}\n[target_group.health_check]\n{extra}\n");
        assert!(error(&hc("healthy_threshold = 11")).starts_with(
            "target_group[0].health_check.healthy_threshold: 11 is out of range (2-10)"
        ));
        assert!(
            error(&hc("interval = \"5s\"\ntimeout = \"6s\"")).starts_with(
                "target_group[0].health_check.timeout: must be above 0 and at most the interval"
            )
        );
        assert!(error(&hc("matcher = \"200-600\""))
            .starts_with("target_group[0].health_check.matcher:"));
        assert!(error(&hc("path = \"health\"")).starts_with("target_group[0].health_check.path:"));
    }

    #[test]
    fn bad_values_are_parse_errors_with_lines() {
        let e = error(&BASE.replace("protocol = \"tcp\"", "protocol = \"sctp\""));
        assert!(
            e.starts_with("config: unknown variant `sctp`") && e.ends_with("at line 9"),
            "{e}"
        );
        let e = error(&BASE.replace(
            "name = \"web\"\n[[target_group.targets]]",
            "name = \"web\"\nderegistration_delay = \"five\"\n[[target_group.targets]]",
        ));
        assert!(e.contains("bad duration \"five\""), "{e}");
        let e = error(&BASE.replace("zone = \"a\"\n\n", "zone = \"a\"\ncolour = \"blue\"\n\n"));
        assert!(
            e.contains("unknown field `colour`") && e.ends_with("at line 4"),
            "{e}"
        );
    }

    #[test]
    fn gateway_settings() {
        assert!(
            error(&BASE.replace("zone = \"a\"\n\n", "zone = \"a\"\nring_size = 65536\n\n"))
                .starts_with("gateway.ring_size: 65536 is not a prime number")
        );
        assert!(
            error(&BASE.replace("zone = \"a\"\n\n", "zone = \"a\"\nsnat_ports = \"9-1\"\n\n"))
                .starts_with("gateway.snat_ports:")
        );
        assert!(error(&BASE.replace(
            "zone = \"a\"\n\n",
            "zone = \"a\"\nmetrics_address = \"localhost\"\n\n"
        ))
        .starts_with("gateway.metrics_address:"));
    }

    #[test]
    fn proxy_protocol_needs_the_proxy_data_plane() {
        let text = BASE.replace(
            "name = \"web\"\n[[target_group.targets]]",
            "name = \"web\"\nproxy_protocol_v2 = true\n[[target_group.targets]]",
        );
        assert!(error(&text)
            .starts_with("target_group[0].proxy_protocol_v2: needs gateway.dataplane = \"proxy\""));
        assert!(Config::parse(&text.replace(
            "zone = \"a\"\n\n",
            "zone = \"a\"\ndataplane = \"proxy\"\n\n"
        ))
        .is_ok());
    }

    #[test]
    fn nat_target_may_serve_up_to_four_listeners() {
        let more = |n: usize| {
            let mut t = BASE.to_string();
            for k in 0..n {
                t += &format!("\n[[listener]]\nname = \"l{k}\"\naddress = \"10.0.{k}.9\"\nport = 80\nprotocol = \"tcp\"\ntarget_group = \"web\"\n");
            }
            t
        };
        assert!(Config::parse(&more(3)).is_ok(), "four listeners");
        let e = error(&more(4));
        assert!(e.contains("serves more than 4 nat listeners"), "{e}");
    }

    #[test]
    fn restart_only_settings_keep_their_running_values() {
        let running = Config::parse(BASE).unwrap().gateway;
        let mut new = Config::parse(&BASE.replace(
            "zone = \"a\"\n\n",
            "zone = \"b\"\nring_size = 251\nmax_vips = 8\ntcp_idle_timeout = \"60s\"\n\n",
        ))
        .unwrap()
        .gateway;
        assert_eq!(new.keep_restart_only(&running), ["ring_size", "max_vips"]);
        assert_eq!(
            (new.ring_size, new.max_vips),
            (running.ring_size, running.max_vips)
        );
        // Reloadable settings take their new values.
        assert_eq!(new.zone, "b");
        assert_eq!(new.tcp_idle_timeout, Duration::from_secs(60));
    }

    #[test]
    fn bounds_an_operator_can_rely_on() {
        let gw = |k: &str| BASE.replace("zone = \"a\"\n\n", &format!("zone = \"a\"\n{k}\n\n"));
        let tg = |k: &str| {
            BASE.replace(
                "name = \"web\"\n[[target_group.targets]]",
                &format!("name = \"web\"\n{k}\n[[target_group.targets]]"),
            )
        };
        for (text, want) in [
            (
                tg("deregistration_delay = \"100000000s\""),
                "target_group[0].deregistration_delay:",
            ),
            (gw("conntrack_size = 100000000"), "gateway.conntrack_size:"),
            (gw("snat_table_size = 0"), "gateway.snat_table_size:"),
            (
                gw("passthrough_table_size = 10"),
                "gateway.passthrough_table_size:",
            ),
            (gw("tcp_idle_timeout = \"0s\""), "gateway.tcp_idle_timeout:"),
            (gw("udp_idle_timeout = \"2h\""), "gateway.udp_idle_timeout:"),
            (
                gw("tcp_closing_timeout = \"1h\""),
                "gateway.tcp_closing_timeout:",
            ),
            (
                tg("[target_group.health_check]\ninterval = \"10m\"\ntimeout = \"5s\""),
                "target_group[0].health_check.interval:",
            ),
            (
                tg("[target_group.health_check]\nunhealthy_threshold = 1"),
                "target_group[0].health_check.unhealthy_threshold: 1 is out of range (2-10)",
            ),
            (
                BASE.replace("address = \"10.0.0.1\"", "address = \"0.0.0.0\""),
                "listener[0].address: 0.0.0.0 cannot be a VIP",
            ),
            (
                BASE.replace("address = \"10.0.0.1\"", "address = \"10.1.0.1\""),
                "listener[0].address: 10.1.0.1 is also target_group[0].targets[0]'s address",
            ),
        ] {
            let e = error(&text);
            assert!(e.starts_with(want), "{want}: got {e}");
            assert!(e.contains("line "), "{e}: no line");
        }
        assert!(error(&gw("conntrack_size = 100000000")).contains("MiB"));
    }

    #[test]
    fn snat_table_must_cover_conntrack() {
        let text = BASE
            .replace(
                "name = \"web\"\n[[target_group.targets]]",
                "name = \"web\"\nmode = \"snat\"\nsnat_address = \"10.1.0.1\"\n[[target_group.targets]]",
            )
            .replace(
                "zone = \"a\"\n\n",
                "zone = \"a\"\nconntrack_size = 8192\nsnat_table_size = 4096\n\n",
            );
        assert!(error(&text)
            .starts_with("gateway.snat_table_size: 4096 is smaller than conntrack_size"));
    }
}
