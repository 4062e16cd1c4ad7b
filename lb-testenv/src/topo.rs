//! The namespace topology of the end-to-end tests and the demo:
//!
//! ```text
//!  client (10.0.0.2, fd00::2)
//!     | eth0 -- eth0
//!  gateway (10.0.0.1 / fd00::1; 10.1.N.1 / fd01:N::1 on ethN)     VIPs routed here
//!     | eth1..ethN -- eth0
//!  backend N (10.1.N.2, fd01:N::2), zone "a" for N <= 2, else "b"
//! ```
//! Client and backends have GRO on (veth only delivers frames that XDP
//! redirected into it when the peer has GRO or an XDP program) and TX
//! checksum offload off (see `prepare_host_dev`).

use anyhow::{Context as _, Result};

use crate::netns::{veth, Netns};

pub const CLIENT_V4: &str = "10.0.0.2";
pub const CLIENT_V6: &str = "fd00::2";
pub const GW_V4: &str = "10.0.0.1";
pub const GW_V6: &str = "fd00::1";
pub const VIP_V4: &str = "10.100.0.1";
pub const VIP_V6: &str = "fd64::1";

pub struct Topology {
    pub client: Netns,
    pub gw: Netns,
    pub backends: Vec<Backend>,
}

pub struct Backend {
    pub ns: Netns,
    pub name: String,
    pub zone: &'static str,
    pub v4: String,
    pub v6: String,
    /// Gateway interface towards this backend.
    pub gw_dev: String,
}

pub fn backend_zone(i: usize) -> &'static str {
    if i <= 2 {
        "a"
    } else {
        "b"
    }
}

/// GRO on (so veth delivers redirected frames) and TX checksum offload off:
/// a veth sends CHECKSUM_PARTIAL packets whose checksum the kernel would
/// finish later, which an XDP redirect cannot carry along. Real NICs hand
/// XDP complete checksums, as this makes the veth do.
pub fn prepare_host_dev(ns: &Netns, dev: &str) -> Result<()> {
    ns.exec(&["ethtool", "-K", dev, "gro", "on", "tx", "off"])
        .context("setting offloads with ethtool (apt-get install ethtool)")?;
    Ok(())
}

/// A bpffs that processes started with `ip netns exec` still see.
pub const TEST_BPFFS: &str = "/run/lbt-bpf";

pub fn ensure_test_bpffs() -> Result<()> {
    let mounted = std::fs::read_to_string("/proc/self/mounts")?
        .lines()
        .any(|l| {
            l.split_whitespace().nth(1) == Some(TEST_BPFFS)
                && l.split_whitespace().nth(2) == Some("bpf")
        });
    if !mounted {
        std::fs::create_dir_all(TEST_BPFFS)?;
        crate::netns::sh(&["mount", "-t", "bpf", "bpf", TEST_BPFFS])?;
    }
    Ok(())
}

/// Links `ns` to `hub` with a veth (`hub_dev` in `hub`, `eth0` in `ns`):
/// `{v4}.1/24` and `{v6}:1/64` on the hub's end, `{v4}.2/24` and
/// `{v6}:2/64` on the other, whose default routes go to the hub. `v4` is
/// a /24 prefix such as "10.1.2", `v6` a /64 one such as "fd01:2:".
pub fn link_to_hub(hub: &Netns, hub_dev: &str, ns: &Netns, v4: &str, v6: &str) -> Result<()> {
    veth(hub, hub_dev, ns, "eth0")?;
    hub.addrs(hub_dev, &[&format!("{v4}.1/24"), &format!("{v6}:1/64")])?;
    ns.addrs("eth0", &[&format!("{v4}.2/24"), &format!("{v6}:2/64")])?;
    ns.default_via(&[&format!("{v4}.1"), &format!("{v6}:1")])
}

impl Topology {
    pub fn build(n_backends: usize) -> Result<Topology> {
        ensure_test_bpffs()?;
        let client = Netns::new("client")?;
        let gw = Netns::new("gw")?;
        link_to_hub(&gw, "eth0", &client, "10.0.0", "fd00:")?;
        prepare_host_dev(&client, "eth0")?;
        gw.sysctl("net.ipv4.ip_forward", "1")?;
        gw.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        let mut backends = Vec::new();
        for i in 1..=n_backends {
            let ns = Netns::new(&format!("b{i}"))?;
            let gw_dev = format!("eth{i}");
            link_to_hub(
                &gw,
                &gw_dev,
                &ns,
                &format!("10.1.{i}"),
                &format!("fd01:{i}:"),
            )?;
            prepare_host_dev(&ns, "eth0")?;
            let (v4, v6) = (format!("10.1.{i}.2"), format!("fd01:{i}::2"));
            backends.push(Backend {
                ns,
                name: format!("b{i}"),
                zone: backend_zone(i),
                v4,
                v6,
                gw_dev,
            });
        }
        Ok(Topology {
            client,
            gw,
            backends,
        })
    }

    /// Where this topology's daemon pins its state (removed by the owner).
    /// Not under /sys/fs/bpf: `ip netns exec` remounts /sys, hiding it.
    pub fn pin_path(&self) -> String {
        format!("{TEST_BPFFS}/{}", self.gw.name)
    }

    /// The daemon's `gateway.state_dir` (registered targets), per topology.
    pub fn state_dir(&self) -> String {
        format!("/run/{}.state", self.gw.name)
    }

    /// Gateway interfaces the balancer attaches to.
    pub fn gw_interfaces(&self) -> Vec<String> {
        std::iter::once("eth0".to_string())
            .chain(self.backends.iter().map(|b| b.gw_dev.clone()))
            .collect()
    }

    /// A config for `lb run` in the gateway: one TCP+UDP listener on the v4
    /// and the v6 VIP, port 80 -> 8080 on every backend, zone "a".
    pub fn config(&self, extra_tg: &str) -> String {
        let ifaces: Vec<String> = self
            .gw_interfaces()
            .iter()
            .map(|i| format!("{i:?}"))
            .collect();
        let mut s = format!(
            "[gateway]\ninterfaces = [{}]\nzone = \"a\"\nconntrack_size = 65536\nsnat_table_size = 65536\npin_path = \"{}\"\nadmin_socket = \"/run/{}.sock\"\nstate_dir = \"{}\"\n\n",
            ifaces.join(", "),
            self.pin_path(),
            self.gw.name,
            self.state_dir()
        );
        for (name, vip, fam) in [("web4", VIP_V4, 4), ("web6", VIP_V6, 6)] {
            s += &format!(
                "[[listener]]\nname = \"{name}\"\naddress = \"{vip}\"\nport = 80\nprotocol = \"tcp_udp\"\ntarget_group = \"tg{fam}\"\n\n"
            );
        }
        for fam in [4, 6] {
            s += &format!("[[target_group]]\nname = \"tg{fam}\"\ncross_zone = true\n{extra_tg}\n");
            s += &self.targets(fam == 6, 8080);
        }
        s
    }

    /// Every backend as a `[[target_group.targets]]` (its IPv4 or IPv6
    /// address, `port`, its zone), to follow a `[[target_group]]`.
    pub fn targets(&self, v6: bool, port: u16) -> String {
        self.backends
            .iter()
            .map(|b| {
                let a = if v6 { &b.v6 } else { &b.v4 };
                format!(
                    "[[target_group.targets]]\naddress = \"{a}\"\nport = {port}\nzone = \"{}\"\n\n",
                    b.zone
                )
            })
            .collect()
    }
}
