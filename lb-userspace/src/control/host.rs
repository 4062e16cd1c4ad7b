//! Checks of the host before anything is attached: capabilities, and the
//! config against the host's own addresses.

use anyhow::{bail, Result};
use log::warn;

use crate::{config::Config, dataplane::xdp::Unavailable};

/// Addresses of the interfaces named in `ifaces`.
fn interface_addresses(ifaces: &[String]) -> Vec<(String, std::net::IpAddr)> {
    let mut all = local_addresses();
    all.retain(|(name, _)| ifaces.contains(name));
    all
}

/// Every interface's addresses in this network namespace (getifaddrs).
pub fn local_addresses() -> Vec<(String, std::net::IpAddr)> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut p = head;
    while !p.is_null() {
        // SAFETY: a list getifaddrs built; freed below.
        let ifa = unsafe { &*p };
        p = ifa.ifa_next;
        if ifa.ifa_addr.is_null() {
            continue;
        }
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        let fam = unsafe { (*ifa.ifa_addr).sa_family } as i32;
        let ip: std::net::IpAddr = match fam {
            libc::AF_INET => {
                let a = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)).into()
            }
            libc::AF_INET6 => {
                let a = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                std::net::Ipv6Addr::from(a.sin6_addr.s6_addr).into()
            }
            _ => continue,
        };
        out.push((name, ip));
    }
    unsafe { libc::freeifaddrs(head) };
    out
}

/// Checks of the config against this host, before anything is attached.
pub fn check_host(cfg: &Config) -> Result<()> {
    // A VIP that is an address of an attached interface would take the
    // gateway's own traffic on that port (ssh, BGP, health checks).
    let own = interface_addresses(&cfg.gateway.interfaces);
    for (i, l) in cfg.listeners.iter().enumerate() {
        if let Some((dev, _)) = own.iter().find(|(_, a)| *a == l.address) {
            bail!(
                "listener[{i}].address: {} is an address of {dev}, an interface in gateway.interfaces; a VIP must be an address of its own",
                l.address
            );
        }
    }
    targets_behind_attached(cfg);
    // SNAT source ports the kernel may also hand to local sockets.
    if cfg
        .target_groups
        .iter()
        .any(|t| t.mode == crate::config::Mode::Snat)
    {
        let local = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|t| {
                let mut it = t.split_whitespace().map(|v| v.parse::<u16>().ok());
                Some((it.next()??, it.next()??))
            });
        if let (Some((lo, hi)), Some((a, b))) = (local, cfg.snat_port_range()) {
            if a <= hi && lo <= b {
                warn!(
                    "gateway.snat_ports {a}-{b} overlaps net.ipv4.ip_local_port_range {lo}-{hi}: the gateway's own connections may collide with SNAT flows; move one of them"
                );
            }
        }
    }
    Ok(())
}

/// Capabilities needed to load and attach XDP programs.
pub fn check_privileges() -> Result<()> {
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_BPF: u32 = 39;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let has = |c: u32| eff & (1u64 << c) != 0;
    let fix = "(e.g. `setcap cap_bpf,cap_net_admin,cap_perfmon+ep lb`, or AmbientCapabilities= in the systemd unit)";
    if !(has(CAP_BPF) || has(CAP_SYS_ADMIN)) {
        // No BPF at all (a container, say): XDP is structurally out.
        return Err(Unavailable {
            code: "no_cap_bpf",
            why: format!(
                "lb run has no CAP_BPF (nor CAP_SYS_ADMIN) to load XDP programs; grant CAP_BPF and CAP_NET_ADMIN {fix}; effective capabilities are {eff:#x}"
            ),
        }
        .into());
    }
    if !has(CAP_NET_ADMIN) {
        bail!("lb run has CAP_BPF but not CAP_NET_ADMIN, which attaching XDP needs; grant it {fix}; effective capabilities are {eff:#x}");
    }
    Ok(())
}

/// Warns about targets the gateway reaches through an interface it does not
/// attach to: their replies arrive where the program does not run, and are
/// not translated back.
fn targets_behind_attached(cfg: &Config) {
    let ifaces = &cfg.gateway.interfaces;
    if ifaces.is_empty() {
        return;
    }
    let targets: Vec<(usize, usize, std::net::IpAddr)> = cfg
        .target_groups
        .iter()
        .enumerate()
        .flat_map(|(i, tg)| {
            tg.targets
                .iter()
                .enumerate()
                .map(move |(j, t)| (i, j, t.address))
        })
        .collect();
    let devs = route_devs(targets.iter().map(|t| t.2).collect());
    for ((i, j, addr), dev) in targets.iter().zip(devs) {
        let Some(dev) = dev.filter(|d| !ifaces.contains(d)) else {
            continue;
        };
        warn!(
            "target_group[{i}].targets[{j}]: {addr} is reached via {dev}, which is not in gateway.interfaces: its replies arrive where XDP does not run and are not translated back; add {dev} to interfaces"
        );
    }
}

/// The interfaces the kernel routes each address out of (`ip route get`),
/// over one rtnetlink connection.
fn route_devs(addrs: Vec<std::net::IpAddr>) -> Vec<Option<String>> {
    use futures_util::TryStreamExt as _;
    use rtnetlink::{packet_route::route::RouteAttribute, RouteMessageBuilder};
    let n = addrs.len();
    let oifs = crate::dataplane::netlink::ask(move |handle| async move {
        let mut out = Vec::with_capacity(addrs.len());
        for ip in addrs {
            let msg = match ip {
                std::net::IpAddr::V4(a) => RouteMessageBuilder::<std::net::Ipv4Addr>::new()
                    .destination_prefix(a, 32)
                    .build(),
                std::net::IpAddr::V6(a) => RouteMessageBuilder::<std::net::Ipv6Addr>::new()
                    .destination_prefix(a, 128)
                    .build(),
            };
            let r = handle
                .route()
                .get(msg)
                .execute()
                .try_next()
                .await
                .ok()
                .flatten();
            out.push(r.and_then(|r| {
                r.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Oif(i) => Some(*i),
                    _ => None,
                })
            }));
        }
        Some(out)
    })
    .unwrap_or_else(|| vec![None; n]);
    oifs.into_iter().map(|o| o.and_then(if_name)).collect()
}

fn if_name(index: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: a buffer of IF_NAMESIZE, as the call requires.
    if unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) }.is_null() {
        return None;
    }
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}
