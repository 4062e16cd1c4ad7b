//! The TOML config, in NLB's vocabulary: types and defaults (the only place
//! they are written). Validation is in `validate`; every error names the
//! field path (and `locate` finds its line) so an operator can find it.

pub mod import;
mod locate;
mod syntax;
pub mod tls;
mod validate;

use std::{
    fmt,
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Deserializer, Serialize};

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

impl DataplaneKind {
    /// As written in the config.
    pub fn name(self) -> &'static str {
        match self {
            DataplaneKind::Auto => "auto",
            DataplaneKind::Xdp => "xdp",
            DataplaneKind::XdpGeneric => "xdp-generic",
            DataplaneKind::Proxy => "proxy",
        }
    }
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
    /// Where targets registered at runtime are kept (`targets.json`).
    pub state_dir: PathBuf,
    /// Maglev table size (prime).
    pub ring_size: u32,
    /// Most listeners (VIP, protocol) the maps are sized for.
    pub max_vips: u32,
    /// Most targets, over all target groups.
    pub max_targets: u32,
    /// Conntrack entries (LRU), per family: IPv4 and IPv6 flows each
    /// have a table of this size.
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
    /// A TCP flow lives this long until the client completes the
    /// handshake (a spoofed SYN never does).
    #[serde(deserialize_with = "duration")]
    pub tcp_syn_timeout: Duration,
    /// New flows tracked per second; beyond, they are balanced untracked.
    pub new_flow_limit: FlowLimit,
    /// The flow hash's secret key, 16 hex digits, the same on every gateway
    /// of a scale-out set; "" (alone): one generated into state_dir.
    pub hash_seed: String,
    /// Sources refused on every listener (wins over a listener's allow).
    pub deny: Vec<ipnet::IpNet>,
    /// Translate a target's packet only when it arrives on the interface
    /// leading to the target (off for asymmetric routing).
    pub reply_source_check: bool,
    /// Answer ICMP echo requests to the VIPs' addresses (in XDP).
    pub answer_ping: bool,
    /// XDP data plane: an `unreachable` route for each VIP address the host
    /// does not have, so what XDP leaves to the kernel is refused, not
    /// forwarded by the default route.
    pub unreachable_routes: bool,
}

/// `gateway.new_flow_limit`: "auto" (what fills half of conntrack with
/// half-open flows in one `tcp_syn_timeout`), "off", or flows a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlowLimit {
    #[default]
    Auto,
    Off,
    PerSecond(u32),
}

impl<'de> Deserialize<'de> for FlowLimit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            N(u32),
            S(String),
        }
        match Repr::deserialize(d)? {
            Repr::N(0) => Err(serde::de::Error::custom(
                "0 would track nothing: a number of flows a second, \"auto\" or \"off\"",
            )),
            Repr::N(n) => Ok(FlowLimit::PerSecond(n)),
            Repr::S(s) if s == "auto" => Ok(FlowLimit::Auto),
            Repr::S(s) if s == "off" => Ok(FlowLimit::Off),
            Repr::S(s) => Err(serde::de::Error::custom(format!(
                "{s:?}: a number of flows a second, \"auto\" or \"off\""
            ))),
        }
    }
}

impl Gateway {
    /// New flows tracked per second over the whole gateway (0: no cap).
    pub fn new_flows_per_second(&self) -> u32 {
        match self.new_flow_limit {
            FlowLimit::Off => 0,
            FlowLimit::PerSecond(n) => n,
            FlowLimit::Auto => {
                let syn = self.tcp_syn_timeout.as_secs().max(1) as u32;
                (self.conntrack_size / 2 / syn).max(1)
            }
        }
    }

    /// `hash_seed` as the program's key (`None`: unset or malformed).
    pub fn hash_key(&self) -> Option<[u32; 2]> {
        let s = self.hash_seed.trim();
        if s.len() != 16 {
            return None;
        }
        let v = u64::from_str_radix(s, 16).ok()?;
        Some([(v >> 32) as u32, v as u32])
    }
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
            state_dir,
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
            state_dir: "/var/lib/lb".into(),
            ring_size: lb_common::DEFAULT_RING_SIZE,
            max_vips: 16,
            max_targets: 1024,
            conntrack_size: 262_144,
            snat_table_size: 262_144,
            passthrough_table_size: 65_536,
            snat_ports: format!("{}-{}", DEFAULT_SNAT_PORTS.0, DEFAULT_SNAT_PORTS.1),
            tcp_idle_timeout: Duration::from_secs(350),
            udp_idle_timeout: Duration::from_secs(120),
            tcp_closing_timeout: Duration::from_secs(10),
            proxy_connect_timeout: Duration::from_secs(3),
            proxy_udp_sessions: 65_536,
            fib_cache: Duration::from_secs(1),
            tcp_syn_timeout: Duration::from_secs(5),
            new_flow_limit: FlowLimit::Auto,
            hash_seed: String::new(),
            deny: Vec::new(),
            reply_source_check: true,
            answer_ping: true,
            unreachable_routes: true,
        }
    }
}

/// A TCP or UDP port, 1-65535 (0 is refused where it is read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Port(pub u16);

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Port, D::Error> {
        let v = i64::deserialize(d)?;
        match u16::try_from(v) {
            Ok(p) if p > 0 => Ok(Port(p)),
            _ => Err(serde::de::Error::custom(format!(
                "{v} is out of range (1-65535)"
            ))),
        }
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Tcp,
    Udp,
    TcpUdp,
    /// TLS terminated here (the proxy beside XDP; NLB's TLS listener).
    Tls,
}

impl Protocol {
    /// The IP protocols this listener covers.
    pub fn ip_protos(self) -> &'static [u8] {
        match self {
            Protocol::Tcp | Protocol::Tls => &[lb_common::PROTO_TCP],
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
    pub port: Port,
    pub protocol: Protocol,
    pub target_group: String,
    /// This listener's TCP idle timeout (NLB's `tcp.idle_timeout.seconds`);
    /// unset: `gateway.tcp_idle_timeout`.
    #[serde(default, deserialize_with = "opt_duration")]
    pub tcp_idle_timeout: Option<Duration>,
    /// Sources that may open flows (NLB's security group inbound rules);
    /// empty: everyone. `gateway.deny` wins over it.
    #[serde(default)]
    pub allow: Vec<ipnet::IpNet>,
    /// `tls` listeners: certificate chains and keys (PEM), chosen by SNI;
    /// the first is the default.
    #[serde(default)]
    pub certificates: Vec<tls::Certificate>,
    /// `tls` listeners: NLB's security policy name.
    pub security_policy: Option<tls::SecurityPolicy>,
    /// `tls` listeners: NLB's ALPN policy.
    pub alpn_policy: Option<tls::AlpnPolicy>,
}

impl Listener {
    /// A `tls` listener's settings.
    pub fn tls(&self) -> Option<tls::TlsSpec> {
        (self.protocol == Protocol::Tls).then(|| tls::TlsSpec {
            certificates: self.certificates.clone(),
            policy: self.security_policy.unwrap_or_default(),
            alpn: self.alpn_policy.unwrap_or_default(),
        })
    }
}

impl Listener {
    /// The TCP idle timeout in seconds the data plane keeps per flow (the
    /// listener's, else 0: the gateway's).
    pub fn tcp_idle_secs(&self) -> u16 {
        self.tcp_idle_timeout
            .map_or(0, |d| d.as_secs().clamp(1, 6000) as u16)
    }
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
    /// NLB's `deregistration_delay.connection_termination`: flows still
    /// open when the delay ends are ended (here the default), or go on
    /// until they end by themselves (`false`, NLB's default).
    #[serde(default = "default_true")]
    pub deregistration_connection_termination: bool,
    /// Send a PROXY protocol v2 header to targets (proxy data plane only).
    #[serde(default)]
    pub proxy_protocol_v2: bool,
    /// When every target is unhealthy, send new flows to all of them rather
    /// than dropping them (NLB does).
    #[serde(default = "default_true")]
    pub fail_open: bool,
    /// NLB's `unhealthy_state_routing`: the fewest healthy targets a zone
    /// (and the group) must have to be used.
    #[serde(default)]
    pub unhealthy_state_routing: UnhealthyStateRouting,
    /// NLB's `unhealthy.connection_termination`: a target that turns
    /// unhealthy loses its established flows (default), or keeps them.
    #[serde(default = "default_true")]
    pub unhealthy_connection_termination: bool,
    /// NLB's `unhealthy.draining_interval`: with termination off, how long
    /// an unhealthy target keeps its flows ("0s": until they end).
    #[serde(default, deserialize_with = "duration")]
    pub unhealthy_draining_interval: Duration,
    /// Health from the connections themselves (XDP data plane): refused or
    /// unanswered connection attempts in a row take a target out of new
    /// flows at once, until its active checks pass again.
    #[serde(default)]
    pub passive_health: PassiveHealth,
    /// A target's RST to a flow's first SYN is dropped and the client's
    /// SYN retransmission is sent to another target (XDP data plane): the
    /// client sees a delay instead of a refused connection. A target that
    /// refuses on purpose is then tried elsewhere too.
    #[serde(default = "default_true")]
    pub syn_redispatch: bool,
    /// TLS to the targets (re-encrypt; `tls` listeners only).
    #[serde(default)]
    pub target_tls: bool,
    /// With `target_tls`: CA certificates (PEM) that the targets'
    /// certificates must chain to, for their IP address; unset: not verified.
    pub target_ca: Option<PathBuf>,
}

impl TargetGroup {
    /// `target_tls` as the proxy uses it.
    pub fn target_tls(&self) -> Option<tls::TargetTls> {
        self.target_tls.then(|| tls::TargetTls {
            ca: self.target_ca.clone(),
        })
    }
}

/// `[target_group.passive_health]`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct PassiveHealth {
    pub enabled: bool,
    /// Failed connection attempts in a row (SYNs refused, or retransmitted
    /// without an answer) that make the target suspect; 1-255.
    pub consecutive_failures: u32,
}

impl Default for PassiveHealth {
    fn default() -> Self {
        PassiveHealth {
            enabled: true,
            consecutive_failures: 3,
        }
    }
}

impl PassiveHealth {
    /// The `Backend::passive_failures` value (0: off).
    pub fn threshold(&self) -> u8 {
        match self.enabled {
            true => self.consecutive_failures.clamp(1, 255) as u8,
            false => 0,
        }
    }
}

/// Below these, a zone's targets are not used on their own (traffic goes
/// to all zones' healthy targets), and below them in the whole group, the
/// group fails open. The larger of the two applies.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct UnhealthyStateRouting {
    /// NLB default: 1.
    pub minimum_healthy_targets: u32,
    /// Percent of the targets (of the zone, or the group); NLB default off (0).
    pub minimum_healthy_percentage: u32,
}

impl Default for UnhealthyStateRouting {
    fn default() -> Self {
        UnhealthyStateRouting {
            minimum_healthy_targets: 1,
            minimum_healthy_percentage: 0,
        }
    }
}

impl UnhealthyStateRouting {
    /// Healthy targets needed out of `total`.
    pub fn needed(&self, total: usize) -> usize {
        let pct = (total * self.minimum_healthy_percentage as usize).div_ceil(100);
        (self.minimum_healthy_targets as usize).max(pct)
    }
}

fn default_true() -> bool {
    true
}

fn default_dereg() -> Duration {
    Duration::from_secs(300)
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub address: IpAddr,
    pub port: Port,
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
    /// A TLS handshake (certificate not verified), then the HTTP check.
    Https,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheck {
    pub enabled: bool,
    pub protocol: HealthProtocol,
    /// Defaults to the target's port ("traffic-port").
    pub port: Option<Port>,
    pub path: String,
    /// Status codes that count as healthy, e.g. "200-399" or "200,204".
    pub matcher: String,
    #[serde(deserialize_with = "duration")]
    pub interval: Duration,
    /// As written; `timeout()` applies the default.
    #[serde(deserialize_with = "opt_duration")]
    pub timeout: Option<Duration>,
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
            timeout: None,
            healthy_threshold: 5,
            unhealthy_threshold: 2,
        }
    }
}

impl HealthCheck {
    /// The timeout: as written, or NLB's default for the protocol (HTTP 6 s,
    /// TCP and HTTPS 10 s) but never above the interval.
    pub fn timeout(&self) -> Duration {
        self.timeout
            .unwrap_or_else(|| self.default_timeout().min(self.interval))
    }

    pub fn default_timeout(&self) -> Duration {
        match self.protocol {
            HealthProtocol::Http => Duration::from_secs(6),
            HealthProtocol::Tcp | HealthProtocol::Https => Duration::from_secs(10),
        }
    }
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
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
        let cfg: Config = syntax::from_str(text).map_err(|e| ConfigErrors(vec![e]))?;
        let mut errs = validate::validate(&cfg);
        for e in &mut errs {
            e.line = e.line.or_else(|| locate::locate(text, &e.path));
        }
        if errs.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigErrors(errs))
        }
    }

    /// Reads and parses the file at `path`; warnings are logged.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let (cfg, warnings) = Config::load_checked(path)?;
        for w in warnings {
            log::warn!("{w}");
        }
        Ok(cfg)
    }

    /// Reads and parses the file at `path`, with its warnings (settings
    /// that have no effect where they are), each naming the file.
    pub fn load_checked(path: &Path) -> anyhow::Result<(Config, Vec<String>)> {
        use anyhow::Context as _;
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let cfg = Config::parse(&text)
            .map_err(|e| anyhow::anyhow!("{}: invalid config:\n{e}", path.display()))?;
        let warnings = cfg
            .warnings(&text)
            .iter()
            .map(|w| format!("{}: {w}", path.display()))
            .collect();
        Ok((cfg, warnings))
    }

    pub fn validate(&self) -> Vec<ConfigError> {
        validate::validate(self)
    }

    /// Settings that are accepted but have no effect where they are, with
    /// their lines.
    pub fn warnings(&self, text: &str) -> Vec<ConfigError> {
        let mut w = validate::warnings(self);
        for e in &mut w {
            e.line = e.line.or_else(|| locate::locate(text, &e.path));
        }
        w
    }

    pub fn snat_port_range(&self) -> Option<(u16, u16)> {
        let (a, b) = self.gateway.snat_ports.split_once('-')?;
        let (a, b) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
        (a >= 1 && a <= b).then_some((a, b))
    }
}

/// `gateway.snat_ports` by default.
pub const DEFAULT_SNAT_PORTS: (u16, u16) = (20000, 32767);

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

#[cfg(test)]
mod tests;
