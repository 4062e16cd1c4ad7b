//! The scale-out topology: two gateways behind a router that balances over
//! them with ECMP, learned through BGP (BIRD everywhere, configured from the
//! documented `dist/bird/*.conf`).
//!
//! ```text
//!  client (10.0.0.2, fd00::2)
//!     | eth0 -- eth0
//!  router (10.0.0.1; BIRD, ECMP)                        VIPs learned by BGP
//!     | gK -- eth0          (10.2.K.1 -- 10.2.K.2, fd02:K::1 -- fd02:K::2)
//!  gateway K = 1, 2 (lb + BIRD)
//!     | bN -- gK            (10.1K.N.1 -- 10.1K.N.2, fd1K:N::1 -- fd1K:N::2)
//!  backend N = 1..3: 10.1.0.N / fd01::N on lo, default route over both
//!  gateways (multipath, L4 hash; a nexthop whose link is down is skipped)
//! ```

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use anyhow::{bail, Context as _, Result};

use crate::{
    e2e::{self, Daemon},
    netns::{veth, wait_until, Netns},
    topo::{link_to_hub, prepare_host_dev, TEST_BPFFS, VIP_V4, VIP_V6},
};

pub const GATEWAY_BIRD: &str = include_str!("../../dist/bird/gateway.conf");
pub const ROUTER_BIRD: &str = include_str!("../../dist/bird/router.conf");
/// The scale-out set's shared flow hash key (`gateway.hash_seed`).
pub const HASH_SEED: &str = "6c62207365656421";

pub struct Gateway {
    pub ns: Netns,
    /// 1 or 2.
    pub k: usize,
    pub dir: e2e::TempDir,
    pub lb: Option<Daemon>,
}

pub struct EcmpTopology {
    pub client: Netns,
    pub router: Netns,
    pub gws: Vec<Gateway>,
    /// (namespace, name); the target address of backend N is 10.1.0.N.
    pub backends: Vec<(Netns, String)>,
    pub dir: e2e::TempDir,
}

pub fn backend_v4(n: usize) -> String {
    format!("10.1.0.{n}")
}

pub fn backend_v6(n: usize) -> String {
    format!("fd01::{n}")
}

/// Test-only BGP timers: connect at once and retry every second (the
/// defaults wait 5s, then 120s).
fn fast_bgp(conf: &str) -> String {
    assert!(conf.contains("  local as "), "BIRD config changed shape");
    conf.replace(
        "  local as ",
        "  connect delay time 1; connect retry time 1; error wait time 1, 5;\n  local as ",
    )
}

fn bird(ns: &mut Netns, dir: &std::path::Path, conf: &str) -> Result<()> {
    let path = dir.join("bird.conf");
    let conf = format!("log \"{}\" all;\n{conf}", dir.join("bird.log").display());
    std::fs::write(&path, conf)?;
    let ctl = dir.join("bird.ctl");
    crate::netns::sh(&["bird", "--version"]).context("bird is missing (apt-get install bird2)")?;
    ns.spawn(&[
        "bird",
        "-f",
        "-c",
        path.to_str().unwrap(),
        "-s",
        ctl.to_str().unwrap(),
    ])
    .context("starting bird (apt-get install bird2)")?;
    Ok(())
}

impl EcmpTopology {
    pub fn build() -> Result<EcmpTopology> {
        crate::topo::ensure_test_bpffs()?;
        let dir = e2e::TempDir::new("ecmp");
        let client = Netns::new("client")?;
        let mut router = Netns::new("router")?;
        link_to_hub(&router, "eth0", &client, "10.0.0", "fd00:")?;
        prepare_host_dev(&client, "eth0")?;
        for (k, v) in [
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv6.conf.all.forwarding", "1"),
            // L4 hashing, so one client's connections spread.
            ("net.ipv4.fib_multipath_hash_policy", "1"),
            ("net.ipv6.fib_multipath_hash_policy", "1"),
        ] {
            router.sysctl(k, v)?;
        }
        let mut gws = Vec::new();
        for k in 1..=2 {
            let ns = Netns::new(&format!("gw{k}"))?;
            let dev = format!("g{k}");
            link_to_hub(
                &router,
                &dev,
                &ns,
                &format!("10.2.{k}"),
                &format!("fd02:{k}:"),
            )?;
            // Frames a gateway redirects (XDP) towards the client land here.
            prepare_host_dev(&router, &dev)?;
            ns.sysctl("net.ipv4.ip_forward", "1")?;
            ns.sysctl("net.ipv6.conf.all.forwarding", "1")?;
            gws.push(Gateway {
                ns,
                k,
                dir: e2e::TempDir::new(&format!("ecmp-gw{k}")),
                lb: None,
            });
        }
        let mut backends = Vec::new();
        for n in 1..=3 {
            let b = Netns::new(&format!("b{n}"))?;
            // A gateway whose link is down is left out of the multipath
            // (IPv6 reads it per device: set it before the links exist).
            for k in ["ipv4", "ipv6"] {
                for scope in ["all", "default"] {
                    b.sysctl(
                        &format!("net.{k}.conf.{scope}.ignore_routes_with_linkdown"),
                        "1",
                    )?;
                }
            }
            b.ip(&["addr", "add", &format!("{}/32", backend_v4(n)), "dev", "lo"])?;
            b.ip(&[
                "-6",
                "addr",
                "add",
                &format!("{}/128", backend_v6(n)),
                "dev",
                "lo",
            ])?;
            for gw in &gws {
                let k = gw.k;
                let (bdev, gdev) = (format!("g{k}"), format!("b{n}"));
                veth(&gw.ns, &gdev, &b, &bdev)?;
                let (g4, b4) = (format!("10.1{k}.{n}.1"), format!("10.1{k}.{n}.2"));
                let (g6, b6) = (format!("fd1{k}:{n}::1"), format!("fd1{k}:{n}::2"));
                gw.ns
                    .addrs(&gdev, &[&format!("{g4}/24"), &format!("{g6}/64")])?;
                gw.ns.ip(&["route", "add", &backend_v4(n), "via", &b4])?;
                gw.ns
                    .ip(&["-6", "route", "add", &backend_v6(n), "via", &b6])?;
                b.addrs(&bdev, &[&format!("{b4}/24"), &format!("{b6}/64")])?;
                prepare_host_dev(&b, &bdev)?;
            }
            for (k, v) in [
                ("net.ipv4.fib_multipath_hash_policy", "1"),
                ("net.ipv6.fib_multipath_hash_policy", "1"),
            ] {
                b.sysctl(k, v)?;
            }
            // Replies leave from the target address on lo (as an anycast
            // server's do), so a UDP server's replies come from the address
            // its clients sent to.
            let hops = |v6: bool| -> Vec<String> {
                let src = if v6 { backend_v6(n) } else { backend_v4(n) };
                let mut a = vec![
                    "route".into(),
                    "add".into(),
                    "default".into(),
                    "src".into(),
                    src,
                ];
                if v6 {
                    a.insert(0, "-6".into());
                }
                for k in 1..=2 {
                    let via = if v6 {
                        format!("fd1{k}:{n}::1")
                    } else {
                        format!("10.1{k}.{n}.1")
                    };
                    a.extend(["nexthop", "via", &via, "dev", &format!("g{k}")].map(String::from));
                }
                a
            };
            for v6 in [false, true] {
                let args = hops(v6);
                b.ip(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
            }
            backends.push((b, format!("b{n}")));
        }
        let rdir = dir.0.join("router");
        std::fs::create_dir_all(&rdir)?;
        bird(&mut router, &rdir, &fast_bgp(ROUTER_BIRD))?;
        let mut topo = EcmpTopology {
            client,
            router,
            gws,
            backends,
            dir,
        };
        for i in 0..topo.gws.len() {
            let gw = &mut topo.gws[i];
            let k = gw.k;
            let conf = fast_bgp(GATEWAY_BIRD)
                .replace("10.2.1.", &format!("10.2.{k}."))
                .replace("fd02:1::", &format!("fd02:{k}::"));
            bird(&mut gw.ns, &gw.dir.0.clone(), &conf)?;
        }
        Ok(topo)
    }

    pub fn pin_path(gw: &Gateway) -> PathBuf {
        PathBuf::from(format!("{TEST_BPFFS}/{}", gw.ns.name))
    }

    /// The `lb` config of gateway `gw`: a TCP+UDP listener on both VIPs over the
    /// three backends, cross-zone (every gateway builds the same rings),
    /// fast health checks, announcement on.
    pub fn config(gw: &Gateway) -> String {
        let mut s = format!(
            "[gateway]\ninterfaces = [\"eth0\", \"b1\", \"b2\", \"b3\"]\nzone = \"a\"\nconntrack_size = 65536\nsnat_table_size = 65536\nhash_seed = \"{HASH_SEED}\"\npin_path = \"{}\"\nadmin_socket = \"/run/{}.sock\"\n\n[announce]\ntable = 100\n\n",
            Self::pin_path(gw).display(),
            gw.ns.name
        );
        for (name, vip, fam) in [("web4", VIP_V4, 4), ("web6", VIP_V6, 6)] {
            s += &format!(
                "[[listener]]\nname = \"{name}\"\naddress = \"{vip}\"\nport = 80\nprotocol = \"tcp_udp\"\ntarget_group = \"tg{fam}\"\n\n"
            );
        }
        for fam in [4, 6] {
            s += &format!(
                "[[target_group]]\nname = \"tg{fam}\"\ncross_zone = true\n{}\n",
                e2e::FAST_HC
            );
            for n in 1..=3 {
                let a = if fam == 4 {
                    backend_v4(n)
                } else {
                    backend_v6(n)
                };
                s += &format!("[[target_group.targets]]\naddress = \"{a}\"\nport = 8080\n\n");
            }
        }
        s
    }

    /// Starts the test servers on every backend.
    pub fn start_servers(&mut self) -> Result<()> {
        e2e::start_servers(
            self.backends.iter_mut().map(|(ns, n)| (ns, n.clone())),
            8080,
        )
    }

    /// Starts `lb run` on gateway index `i` (0 or 1).
    pub fn start_lb(&mut self, i: usize) -> Result<()> {
        let gw = &mut self.gws[i];
        let cfg = Self::config(gw);
        gw.lb = Some(Daemon::start(&gw.ns, &gw.dir.0, &cfg)?);
        Ok(())
    }

    /// The router's next hops (gateway addresses) for `vip`.
    pub fn next_hops(&self, vip: &str) -> Result<Vec<String>> {
        let fam = if vip.contains(':') { "-6" } else { "-4" };
        let out = self.router.ip(&[fam, "route", "show", vip])?;
        let out = String::from_utf8_lossy(&out.stdout).into_owned();
        let words: Vec<&str> = out.split_whitespace().collect();
        let mut hops: Vec<String> = words
            .windows(2)
            .filter(|w| w[0] == "via")
            .map(|w| w[1].to_string())
            .collect();
        hops.sort();
        Ok(hops)
    }

    /// Waits until the router's route for `vip` goes to exactly `want`
    /// (gateway uplink addresses, e.g. "10.2.1.2").
    /// Returns how long it took.
    pub fn wait_next_hops(&self, vip: &str, want: &[&str], timeout: Duration) -> Result<Duration> {
        let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        want.sort();
        let start = std::time::Instant::now();
        // A failing `ip` never counts as a match.
        if !wait_until(timeout, || self.next_hops(vip).is_ok_and(|h| h == want)) {
            bail!(
                "router's next hops for {vip}: {:?}, expected {want:?}\n{}",
                self.next_hops(vip),
                self.logs()
            );
        }
        Ok(start.elapsed())
    }

    /// Waits until the router routes both VIPs via exactly the gateways
    /// `ks` (1, 2; none: no route), IPv4 first; returns how long IPv4 took.
    pub fn wait_routed_via(&self, ks: &[usize], timeout: Duration) -> Result<Duration> {
        let v4: Vec<String> = ks.iter().map(|k| format!("10.2.{k}.2")).collect();
        let v6: Vec<String> = ks.iter().map(|k| format!("fd02:{k}::2")).collect();
        fn refs(v: &[String]) -> Vec<&str> {
            v.iter().map(String::as_str).collect()
        }
        let took = self.wait_next_hops(VIP_V4, &refs(&v4), timeout)?;
        self.wait_next_hops(VIP_V6, &refs(&v6), timeout)?;
        Ok(took)
    }

    /// BIRD and lb logs, for failure messages.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
        s += &format!(
            "--- router bird:\n{}",
            read(self.dir.0.join("router/bird.log"))
        );
        for gw in &self.gws {
            s += &format!("--- gw{} bird:\n{}", gw.k, read(gw.dir.0.join("bird.log")));
            s += &format!("--- gw{} lb:\n{}", gw.k, read(gw.dir.0.join("lb.log")));
        }
        s
    }
}

impl Drop for EcmpTopology {
    fn drop(&mut self) {
        // Daemons first (their Drop removes the pins unless killed), then
        // whatever pins a killed daemon left.
        for gw in &mut self.gws {
            gw.lb = None;
            let _ = std::fs::remove_dir_all(Self::pin_path(gw));
        }
    }
}

/// The `lb_listener_new_flows_total` of `listener` on gateway `gw`.
pub fn new_flows(gw: &Gateway, listener: &str) -> Result<u64> {
    let body = e2e::metrics(&gw.ns)?;
    let prefix = format!("lb_listener_new_flows_total{{listener=\"{listener}\"");
    Ok(body
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum())
}

/// What decides a gateway's choices, read from its daemon's pinned maps:
/// per VIP (key bytes) its metadata without the ring slot numbers (which
/// count flips, not content) and the content of its all-zones ring; and the
/// `BACKENDS` array.
#[derive(Debug, PartialEq, Eq)]
pub struct Choices {
    pub vips: Vec<VipChoice>,
    pub backends: Vec<lb_common::Backend>,
    /// The flow hash's key (`hash_seed`): the same on every gateway.
    pub hash_key: [u32; 2],
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct VipChoice {
    /// `VipKey` bytes.
    pub key: Vec<u8>,
    pub vip_id: u32,
    pub flags: u32,
    pub snat_addr: [u32; 4],
    pub ring: Vec<u32>,
}

impl Choices {
    /// The target address the ring of `vip:port` (protocol `proto`) picks
    /// for a flow from `client`, as every gateway computes it.
    pub fn pick(&self, vip: IpAddr, port: u16, proto: u8, client: SocketAddr) -> Option<IpAddr> {
        use lb_userspace::model::{addr_words, words_addr};
        let (va, family) = addr_words(vip);
        let v = self.vips.iter().find(|v| {
            let k: lb_common::VipKey =
                unsafe { std::ptr::read_unaligned(v.key.as_ptr().cast::<lb_common::VipKey>()) };
            k.addr == va && k.port == port.to_be() && k.proto == proto && k.family == family
        })?;
        let (ca, _) = addr_words(client.ip());
        let h = lb_common::select::flow_key_hash(
            self.hash_key,
            v.flags,
            &ca,
            &va,
            client.port().to_be(),
            port.to_be(),
            proto,
        );
        // Only the all-zones ring is read: the gateways run cross-zone.
        let id = lb_common::select::pick(
            v.flags,
            v.ring.len() as u32,
            h,
            |_| 0,
            |i| v.ring[i as usize],
        );
        let b = self.backends.get(id as usize).filter(|_| id != 0)?;
        Some(words_addr(&b.addr, b.family))
    }
}

pub fn choices(gw: &Gateway) -> Result<Choices> {
    use aya::maps::{Array, HashMap, Map, MapData};
    use lb_common::{Backend, VipKey, VipMeta};
    let dir = EcmpTopology::pin_path(gw).join("maps");
    let open = |name: &str| MapData::from_pin(dir.join(name)).with_context(|| name.to_string());
    let ring: Array<_, u32> = Array::try_from(Map::Array(open(lb_common::names::RING)?))?;
    let vips: HashMap<_, VipKey, VipMeta> =
        HashMap::try_from(Map::HashMap(open(lb_common::names::VIPS)?))?;
    let backends: Array<_, Backend> =
        Array::try_from(Map::Array(open(lb_common::names::BACKENDS)?))?;
    let globals: Array<_, lb_common::Globals> =
        Array::try_from(Map::Array(open(lb_common::names::GLOBALS)?))?;
    let m = lb_common::DEFAULT_RING_SIZE;
    let mut out = Vec::new();
    for kv in vips.iter() {
        let (k, v) = kv?;
        let slots = (0..m)
            .map(|i| ring.get(&(v.ring_all * m + i), 0))
            .collect::<Result<Vec<u32>, _>>()?;
        let key = unsafe {
            std::slice::from_raw_parts((&k as *const VipKey).cast::<u8>(), size_of::<VipKey>())
        }
        .to_vec();
        out.push(VipChoice {
            key,
            vip_id: v.vip_id,
            flags: v.flags,
            snat_addr: v.snat_addr,
            ring: slots,
        });
    }
    out.sort();
    Ok(Choices {
        vips: out,
        backends: backends.iter().collect::<Result<_, _>>()?,
        hash_key: globals.get(&0, 0)?.hash_key,
    })
}
