//! BPF_PROG_TEST_RUN fixtures in Katran's table style: description, input
//! packet, expected action, expected output packet. The program runs inside
//! a namespace with fixed routes and permanent neighbours, so its FIB
//! lookups (and so the output MACs) are deterministic.

use std::collections::HashMap;

use anyhow::{Context as _, Result};
use aya::programs::{TestRun, TestRunOptions};
use lb_common::{Reason, REASON_COUNT};
use lb_userspace::{
    config::Config,
    dataplane::{
        xdp::{Sizes, XdpDataplane, PROG_LB, PROG_PASS},
        Dataplane as _,
    },
    model::{Desired, Ids, ListenerKey, Model, RingCache, TargetKey, TargetState},
};

use crate::{
    netns::{veth, Netns},
    packet::{Spec, L4},
};
use lb_common::select::{flow_key_hash, pick_avoiding};
use lb_userspace::model::addr_words;

pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

pub fn action_name(a: u32) -> &'static str {
    [
        "XDP_ABORTED",
        "XDP_DROP",
        "XDP_PASS",
        "XDP_TX",
        "XDP_REDIRECT",
    ]
    .get(a as usize)
    .copied()
    .unwrap_or("?")
}

/// MAC of the fixture gateway's client-side interface `cl`.
pub const GW_CL_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
/// MAC of the fixture gateway's backend-side interface `bk`.
pub const GW_BK_MAC: [u8; 6] = [2, 0, 0, 0, 1, 1];
/// Neighbour MAC of the client (10.0.0.2, fd00::2).
pub const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];

/// Neighbour MAC of a backend by the last byte of its address (10.1.0.11
/// -> 11, fd01::11 -> 0x11).
pub fn backend_mac(n: u8) -> [u8; 6] {
    [2, 0, 0, 0, 1, n]
}

fn mac_str(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// One row of a fixture table.
pub struct Fixture {
    pub desc: String,
    pub input: Vec<u8>,
    pub action: u32,
    /// Expected output; `None` means "unchanged".
    pub output: Option<Vec<u8>>,
    /// A reason counter that must grow by exactly one.
    pub reason: Option<Reason>,
}

impl Fixture {
    /// A target's reply `r` that must leave, translated, for the client
    /// `c:cport` from `vip:80` (out of the client-side interface), counted
    /// as `reason`.
    pub fn reply(
        desc: impl Into<String>,
        r: &Spec,
        vip: &str,
        c: &str,
        cport: u16,
        reason: Reason,
    ) -> Fixture {
        Fixture {
            desc: desc.into(),
            input: r.build(),
            action: XDP_REDIRECT,
            output: Some(
                r.forwarded(vip, 80, c, cport, GW_CL_MAC, CLIENT_MAC)
                    .build(),
            ),
            reason: Some(reason),
        }
    }
}

/// A loaded program in a namespace with the fixture routes.
pub struct Env {
    pub ns: Netns,
    pub dp: XdpDataplane,
    pub cfg: Config,
    pub model: Model,
    vip_ids: Ids<ListenerKey>,
    backend_ids: Ids<TargetKey>,
    /// Backend ids out of the rings (unhealthy), and invalid ones.
    pub unhealthy: HashMap<u32, bool>,
    pub invalid: HashMap<u32, bool>,
}

impl Env {
    /// Namespace with `cl` (10.0.0.1/24, fd00::1/64, client neighbour .2)
    /// and `bk` (10.1.0.1/24, fd01::1/64, backend neighbours .11-.13).
    pub fn new(config: &str) -> Result<Env> {
        let cfg = Config::parse(config).map_err(|e| anyhow::anyhow!("fixture config: {e}"))?;
        Self::with(cfg)
    }

    /// As `new`, with a config as given (the benchmark's identity target is
    /// no config an operator could write).
    pub fn with(cfg: Config) -> Result<Env> {
        Self::with_object(cfg, None)
    }

    /// As `with`, running `object` (another build of the program) instead
    /// of the one built in: the benchmark's A/B.
    pub fn with_object(cfg: Config, object: Option<&[u8]>) -> Result<Env> {
        crate::netns::require_root();
        let ns = Netns::new("fx")?;
        veth(&ns, "cl", &ns, "cl-p")?;
        veth(&ns, "bk", &ns, "bk-p")?;
        ns.ip(&["link", "set", "cl", "address", &mac_str(GW_CL_MAC)])?;
        ns.ip(&["link", "set", "bk", "address", &mac_str(GW_BK_MAC)])?;
        for d in ["cl", "cl-p", "bk", "bk-p"] {
            ns.ip(&["link", "set", d, "up"])?;
        }
        ns.ip(&["addr", "add", "10.0.0.1/24", "dev", "cl"])?;
        ns.ip(&["-6", "addr", "add", "fd00::1/64", "dev", "cl", "nodad"])?;
        ns.ip(&["addr", "add", "10.1.0.1/24", "dev", "bk"])?;
        ns.ip(&["-6", "addr", "add", "fd01::1/64", "dev", "bk", "nodad"])?;
        ns.sysctl("net.ipv4.conf.all.forwarding", "1")?;
        ns.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        let perm = |ip: &str, mac: [u8; 6], dev: &str| {
            ns.ip(&[
                "neigh",
                "replace",
                ip,
                "lladdr",
                &mac_str(mac),
                "dev",
                dev,
                "nud",
                "permanent",
            ])
        };
        perm("10.0.0.2", CLIENT_MAC, "cl")?;
        perm("fd00::2", CLIENT_MAC, "cl")?;
        for n in 11..=13u8 {
            perm(&format!("10.1.0.{n}"), backend_mac(n), "bk")?;
            // fd01::11 ends in byte 0x11.
            perm(
                &format!("fd01::{n}"),
                backend_mac(((n / 10) << 4) | (n % 10)),
                "bk",
            )?;
        }
        let dp = match object {
            Some(o) => XdpDataplane::load_object(Sizes::from_config(&cfg), o)?,
            None => XdpDataplane::load(Sizes::from_config(&cfg))?,
        };
        let mut vip_ids = Ids::new(0);
        let mut backend_ids = Ids::new(1);
        let model = Model::build(&cfg, &mut vip_ids, &mut backend_ids, &Default::default());
        let mut env = Env {
            ns,
            dp,
            cfg,
            model,
            vip_ids,
            backend_ids,
            unhealthy: HashMap::new(),
            invalid: HashMap::new(),
        };
        env.sync()?;
        // As attaching natively does.
        for dev in ["cl", "bk"] {
            let _in = env.ns.enter()?;
            env.dp.mark_tx(dev, true);
        }
        Ok(env)
    }

    /// Re-programs the maps from the model and the health overrides.
    pub fn sync(&mut self) -> Result<()> {
        let state = |id: u32| TargetState {
            in_ring: !self.unhealthy.contains_key(&id),
            valid: !self.invalid.contains_key(&id),
        };
        let d = Desired::compute(&self.model, &mut RingCache::default(), state);
        self.dp.apply(&d)
    }

    /// Applies a new config (as a SIGHUP reload does).
    pub fn reload(&mut self, config: &str) -> Result<()> {
        self.cfg = Config::parse(config).map_err(|e| anyhow::anyhow!("fixture config: {e}"))?;
        self.model = Model::build(
            &self.cfg,
            &mut self.vip_ids,
            &mut self.backend_ids,
            &Default::default(),
        );
        self.sync()
    }

    /// Backend id of a target address (first target group holding it).
    pub fn backend_id(&self, addr: &str) -> u32 {
        let a: std::net::IpAddr = addr.parse().expect("addr");
        self.model
            .backends
            .values()
            .find(|b| b.key.address == a)
            .map(|b| b.id)
            .unwrap_or_else(|| panic!("no backend {addr}"))
    }

    /// Runs `prog` once on `input` inside the namespace.
    pub fn run_prog(
        &mut self,
        prog: &str,
        input: &[u8],
        repeat: u32,
    ) -> Result<(u32, Vec<u8>, std::time::Duration)> {
        // The packet arrives where its source lives: targets behind "bk",
        // everyone else behind "cl" (as on a gateway).
        self.run_prog_on(prog, input, repeat, ingress_of(input))
    }

    /// As `run_prog`, arriving on interface `dev` ("cl" or "bk").
    pub fn run_prog_on(
        &mut self,
        prog: &str,
        input: &[u8],
        repeat: u32,
        dev: &str,
    ) -> Result<(u32, Vec<u8>, std::time::Duration)> {
        let dev = self.ifindex(dev)?;
        let _in = self.ns.enter()?;
        let p = self.dp.program(prog)?;
        let mut out = vec![0u8; input.len() + 256];
        let ctx = xdp_md(input.len(), dev);
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(input);
        opts.data_out = Some(&mut out);
        opts.ctx_in = Some(&ctx);
        opts.repeat = repeat;
        let r = p.test_run(opts).context("BPF_PROG_TEST_RUN")?;
        out.truncate(r.data_size_out as usize);
        Ok((r.return_value, out, r.duration))
    }

    /// The fixture interface's index ("cl" or "bk").
    pub fn ifindex(&self, dev: &str) -> Result<u32> {
        let _in = self.ns.enter()?;
        let name = std::ffi::CString::new(dev)?;
        match unsafe { libc::if_nametoindex(name.as_ptr()) } {
            0 => anyhow::bail!("no interface {dev}"),
            i => Ok(i),
        }
    }

    /// Runs `lb_xdp` on `input` arriving on `dev`.
    pub fn run_on(&mut self, input: &[u8], dev: &str) -> Result<(u32, Vec<u8>)> {
        let (a, o, _) = self.run_prog_on(PROG_LB, input, 1, dev)?;
        Ok((a, o))
    }

    pub fn run(&mut self, input: &[u8]) -> Result<(u32, Vec<u8>)> {
        let (a, o, _) = self.run_prog(PROG_LB, input, 1)?;
        Ok((a, o))
    }

    /// Runs the do-nothing program (benchmark baseline).
    pub fn run_pass(&mut self, input: &[u8], repeat: u32) -> Result<std::time::Duration> {
        Ok(self.run_prog(PROG_PASS, input, repeat)?.2)
    }

    pub fn reasons(&self) -> [u64; REASON_COUNT as usize] {
        self.dp.reasons().expect("reading REASONS")
    }

    /// Runs one fixture and asserts action, output bytes and counter.
    pub fn check(&mut self, f: &Fixture) -> Vec<u8> {
        let before = self.reasons();
        let (action, out) = self
            .run(&f.input)
            .unwrap_or_else(|e| panic!("{}: {e:#}", f.desc));
        let after = self.reasons();
        assert_eq!(
            action_name(action),
            action_name(f.action),
            "{}: action (counters moved: {})",
            f.desc,
            moved(&before, &after)
        );
        let want = f.output.as_ref().unwrap_or(&f.input);
        if &out != want {
            panic!("{}: output differs\n{}", f.desc, diff(want, &out));
        }
        if let Some(r) = f.reason {
            let i = r as usize;
            assert_eq!(
                after[i] - before[i],
                1,
                "{}: counter {} should grow by 1 (moved: {})",
                f.desc,
                Reason::ALL[i].name(),
                moved(&before, &after)
            );
        }
        out
    }

    pub fn check_all(&mut self, table: &[Fixture]) {
        for f in table {
            self.check(f);
        }
    }
}

fn moved(a: &[u64], b: &[u64]) -> String {
    let v: Vec<String> = a
        .iter()
        .zip(b)
        .enumerate()
        .filter(|(_, (x, y))| x != y)
        .map(|(i, (x, y))| format!("{}+{}", Reason::ALL[i].name(), y - x))
        .collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// The interface a frame arrives on: "bk" for sources in the targets'
/// subnets (10.1.0.0/24, fd01::/64), else "cl".
pub fn ingress_of(frame: &[u8]) -> &'static str {
    let et = frame.get(12..14).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let target = match et {
        Some(0x0800) => frame.get(26..29) == Some(&[10, 1, 0][..]),
        Some(0x86dd) => frame.get(22..30) == Some(&[0xfd, 0x01, 0, 0, 0, 0, 0, 0][..]),
        _ => false,
    };
    if target {
        "bk"
    } else {
        "cl"
    }
}

/// An `xdp_md` for BPF_PROG_TEST_RUN: the whole frame, from `ifindex`.
fn xdp_md(len: usize, ifindex: u32) -> Vec<u8> {
    [0, len as u32, 0, ifindex, 0, 0]
        .iter()
        .flat_map(|w: &u32| w.to_ne_bytes())
        .collect()
}

/// Byte diff of two frames, with offsets.
pub fn diff(want: &[u8], got: &[u8]) -> String {
    let mut s = format!("want {} bytes, got {} bytes\n", want.len(), got.len());
    for i in 0..want.len().max(got.len()) {
        let (w, g) = (want.get(i), got.get(i));
        if w != g {
            s += &format!("  @{i}: want {w:02x?} got {g:02x?}\n");
        }
    }
    s
}

/// The fixture config: `nat` and `snat` listeners, v4 and v6, TCP and
/// UDP, a sticky one; zone "a" with one target of the nat groups in "b".
pub const CONFIG: &str = r#"
[gateway]
interfaces = ["cl", "bk"]
zone = "a"
ring_size = 251
max_vips = 16
max_targets = 64
conntrack_size = 4096
snat_table_size = 4096
snat_ports = "20000-32767"
# Fixtures send hundreds of flows at once; the cap has its own.
new_flow_limit = "off"

[[listener]]
name = "nat4"
address = "10.100.0.1"
port = 80
protocol = "tcp_udp"
target_group = "nat4"

[[listener]]
name = "nat6"
address = "fd64::1"
port = 80
protocol = "tcp_udp"
target_group = "nat6"

[[listener]]
name = "snat4"
address = "10.100.0.2"
port = 80
protocol = "tcp_udp"
target_group = "snat4"

[[listener]]
name = "snat6"
address = "fd64::2"
port = 80
protocol = "tcp_udp"
target_group = "snat6"

[[listener]]
name = "sticky4"
address = "10.100.0.3"
port = 80
protocol = "tcp"
target_group = "sticky4"

[[target_group]]
name = "nat4"
[[target_group.targets]]
address = "10.1.0.11"
port = 8080
zone = "a"
[[target_group.targets]]
address = "10.1.0.12"
port = 8080
zone = "a"
[[target_group.targets]]
address = "10.1.0.13"
port = 8080
zone = "b"

[[target_group]]
name = "nat6"
[[target_group.targets]]
address = "fd01::11"
port = 8080
zone = "a"
[[target_group.targets]]
address = "fd01::12"
port = 8080
zone = "a"
[[target_group.targets]]
address = "fd01::13"
port = 8080
zone = "b"

[[target_group]]
name = "snat4"
mode = "snat"
snat_address = "10.1.0.1"
[[target_group.targets]]
address = "10.1.0.11"
port = 9090
zone = "a"
[[target_group.targets]]
address = "10.1.0.12"
port = 9090
zone = "a"

[[target_group]]
name = "snat6"
mode = "snat"
snat_address = "fd01::1"
[[target_group.targets]]
address = "fd01::11"
port = 9090
zone = "a"
[[target_group.targets]]
address = "fd01::12"
port = 9090
zone = "a"

[[target_group]]
name = "sticky4"
stickiness = "source_ip"
cross_zone = true
[[target_group.targets]]
address = "10.1.0.11"
port = 7070
zone = "a"
[[target_group.targets]]
address = "10.1.0.12"
port = 7070
zone = "a"
[[target_group.targets]]
address = "10.1.0.13"
port = 7070
zone = "b"
"#;

/// An environment with `CONFIG`.
pub fn env() -> Env {
    Env::new(CONFIG).expect("fixture environment")
}

/// The conntrack key of a flow from `c:sport` to `vip:80` (`l4` gives the
/// protocol).
pub fn flow_key(c: &str, sport: u16, vip: &str, l4: L4) -> lb_common::FlowKey {
    let (src, family) = addr_words(c.parse().unwrap());
    lb_common::FlowKey {
        src,
        dst: addr_words(vip.parse().unwrap()).0,
        sport: sport.to_be(),
        dport: 80u16.to_be(),
        proto: proto(l4),
        family,
        _pad: [0; 2],
    }
}

pub fn proto(l4: L4) -> u8 {
    match l4 {
        L4::Udp => 17,
        _ => 6,
    }
}

/// The target the ring names for a packet (what the program must pick).
pub fn expected_target(env: &Env, p: &Spec) -> (String, u16) {
    let id = ring_pick(env, p, &|_| false);
    let b = &env.model.backends[&id];
    (b.key.address.to_string(), b.key.port)
}

/// The backend id the program must pick for a new flow of `p` when the
/// targets `avoid` names are passed over (`select::pick_avoiding`, as the
/// program's suspect marks and retries use it).
pub fn ring_pick(env: &Env, p: &Spec, avoid: &dyn Fn(u32) -> bool) -> u32 {
    let (src, _) = addr_words(p.src);
    let (dst, _) = addr_words(p.dst);
    let vip = env
        .model
        .vips
        .iter()
        .find(|v| v.key.addr == dst && v.key.port == p.dport.to_be() && v.key.proto == proto(p.l4))
        .expect("packet is for a VIP");
    let h = flow_key_hash(
        env.model.globals.hash_key,
        vip.flags,
        &src,
        &dst,
        p.sport.to_be(),
        p.dport.to_be(),
        proto(p.l4),
    );
    let unhealthy = env.unhealthy.clone();
    let (zone, all) = env.model.rings(vip, &|id| !unhealthy.contains_key(&id));
    let (id, _) = pick_avoiding(
        vip.flags,
        env.model.globals.ring_size,
        h,
        |i| zone[i as usize],
        |i| all[i as usize],
        avoid,
    );
    assert_ne!(id, 0, "ring is empty");
    id
}

pub fn last_byte(addr: &str) -> u8 {
    match addr.parse::<std::net::IpAddr>().unwrap() {
        std::net::IpAddr::V4(a) => a.octets()[3],
        std::net::IpAddr::V6(a) => {
            // fd01::11 -> 0x11
            a.octets()[15]
        }
    }
}

pub fn client_ip(v6: bool) -> &'static str {
    if v6 {
        "fd00::2"
    } else {
        "10.0.0.2"
    }
}
