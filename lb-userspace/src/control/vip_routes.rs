//! Unreachable routes for the VIPs XDP serves (`gateway.unreachable_routes`).
//!
//! XDP balances a VIP's listener ports and passes the rest (other ports,
//! protocols, non-first fragments) to the kernel, which has no such address.
//! Without a route of its own, the kernel forwards such a packet by its
//! default route, often back where it came from, until its TTL runs out. An
//! `unreachable` host route in the main table makes the kernel answer with
//! ICMP "host unreachable" instead, as a host without the port would.
//!
//! Our routes carry protocol `RTPROT_LB`, so they are found again after a
//! restart and never confused with the operator's. A route the operator
//! already has for a VIP is left alone. The routes outlive the daemon as the
//! pinned program does; they go with the program (`--detach-on-exit`, `lb
//! detach`).

use std::{collections::BTreeSet, net::IpAddr};

use anyhow::{Context as _, Result};
use futures_util::TryStreamExt as _;
use log::{info, warn};
use rtnetlink::{
    packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteType},
    Handle, RouteMessageBuilder,
};
use tokio::task::JoinHandle;

use crate::{dataplane::netlink::is_errno, model::Model};

/// Route protocol of our routes (`ip route show proto 245`); unassigned
/// in iproute2's `rt_protos`.
pub const RTPROT_LB: u8 = 245;

/// The main routing table.
const MAIN: u32 = 254;

/// VIP addresses that need a route: those of the model's listeners that are
/// not addresses of this host (a local VIP, as the proxy's, is the kernel's
/// own already).
pub fn wanted(model: &Model, local: &[IpAddr]) -> BTreeSet<IpAddr> {
    model
        .vips
        .iter()
        .map(|v| v.lkey.address)
        .filter(|a| !local.contains(a))
        .collect()
}

/// Our routes in the kernel, as last made or found.
pub struct VipRoutes {
    handle: Handle,
    conn: JoinHandle<()>,
    ours: BTreeSet<IpAddr>,
    /// VIPs that had a route of the operator's: left alone, logged once.
    theirs: BTreeSet<IpAddr>,
    /// The last set asked for (a change is applied once).
    last: Option<BTreeSet<IpAddr>>,
}

impl Drop for VipRoutes {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

impl VipRoutes {
    /// Opens netlink and finds the routes an earlier run left.
    pub async fn open() -> Result<VipRoutes> {
        let (conn, handle, _) = rtnetlink::new_connection().context("opening rtnetlink")?;
        let conn = tokio::spawn(conn);
        let ours = find_ours(&handle).await?;
        Ok(VipRoutes {
            handle,
            conn,
            ours,
            theirs: BTreeSet::new(),
            last: None,
        })
    }

    /// Brings our routes to `wanted` when it changed since the last call;
    /// returns the first error (the rest is still attempted).
    pub async fn set(&mut self, wanted: BTreeSet<IpAddr>) -> Result<()> {
        if self.last.as_ref() == Some(&wanted) {
            return Ok(());
        }
        let mut first = None;
        for addr in wanted.difference(&self.ours.clone()) {
            match self.handle.route().add(message(*addr)).execute().await {
                Ok(()) => {
                    self.ours.insert(*addr);
                    info!("vip route: unreachable {addr} added (its unbalanced traffic is refused, not forwarded by the default route)");
                }
                Err(e) if is_errno(&e, libc::EEXIST) => {
                    if self.theirs.insert(*addr) {
                        info!("vip route: {addr} already has a route that lb did not make: kept");
                    }
                }
                Err(e) => {
                    first.get_or_insert(
                        anyhow::Error::new(e).context(format!("adding unreachable {addr}")),
                    );
                }
            }
        }
        self.theirs.retain(|a| wanted.contains(a));
        for addr in self.ours.difference(&wanted).copied().collect::<Vec<_>>() {
            match del(&self.handle, addr).await {
                Ok(()) => {
                    self.ours.remove(&addr);
                    info!("vip route: unreachable {addr} removed (no listener has it now)");
                }
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        match first {
            None => {
                self.last = Some(wanted);
                Ok(())
            }
            // Tried again on the next call.
            Some(e) => {
                self.last = None;
                Err(e)
            }
        }
    }

    /// Removes every route of ours (the program is detached).
    pub async fn remove_all(mut self) -> Result<usize> {
        let n = self.ours.len();
        self.last = None;
        self.set(BTreeSet::new()).await?;
        Ok(n)
    }
}

/// `lb detach`: removes the routes any run left, with the program.
pub fn remove_left() -> Result<usize> {
    super::super::dataplane::netlink::ask(|h| async move {
        let ours = find_ours(&h).await.ok()?;
        let mut n = 0;
        for addr in ours {
            if del(&h, addr).await.is_ok() {
                n += 1;
            }
        }
        Some(n)
    })
    .context("removing the VIPs' unreachable routes")
}

fn message(addr: IpAddr) -> RouteMessage {
    let prefix = if addr.is_ipv4() { 32 } else { 128 };
    RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(addr, prefix)
        .expect("a host prefix is valid")
        .table_id(MAIN)
        .kind(RouteType::Unreachable)
        .protocol(RouteProtocol::Other(RTPROT_LB))
        .build()
}

async fn del(h: &Handle, addr: IpAddr) -> Result<()> {
    match h.route().del(message(addr)).execute().await {
        // Already gone (deleted by hand).
        Err(e) if is_errno(&e, libc::ESRCH) => Ok(()),
        r => r.with_context(|| format!("deleting unreachable {addr}")),
    }
}

/// Our host routes in the main table.
async fn find_ours(h: &Handle) -> Result<BTreeSet<IpAddr>> {
    let mut out = BTreeSet::new();
    for query in [
        RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(),
        RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
    ] {
        let mut dump = h.route().get(query).execute();
        while let Some(m) = dump.try_next().await? {
            if let Some(a) = ours(&m) {
                out.insert(a);
            }
        }
    }
    if !out.is_empty() {
        warn!(
            "vip route: {} unreachable route(s) from an earlier run found",
            out.len()
        );
    }
    Ok(out)
}

fn ours(m: &RouteMessage) -> Option<IpAddr> {
    if m.header.protocol != RouteProtocol::Other(RTPROT_LB) {
        return None;
    }
    let addr = m.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(a)) => Some(IpAddr::V4(*a)),
        RouteAttribute::Destination(RouteAddress::Inet6(a)) => Some(IpAddr::V6(*a)),
        _ => None,
    })?;
    let host = if addr.is_ipv4() { 32 } else { 128 };
    (m.header.destination_prefix_length == host).then_some(addr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{config::Config, model::Ids};

    #[test]
    fn every_vip_address_needs_a_route_unless_the_host_has_it() {
        let cfg = Config::parse(
            r#"[gateway]
interfaces = ["eth0"]
[[listener]]
name = "web"
address = "10.100.0.1"
port = 80
protocol = "tcp"
target_group = "web"
[[listener]]
name = "dns"
address = "10.100.0.1"
port = 53
protocol = "udp"
target_group = "web"
[[listener]]
name = "web6"
address = "fd64::1"
port = 80
protocol = "tcp"
target_group = "web6"
[[target_group]]
name = "web"
[[target_group.targets]]
address = "10.1.0.1"
port = 8080
[[target_group]]
name = "web6"
[[target_group.targets]]
address = "fd01::1"
port = 8080
"#,
        )
        .unwrap();
        let m = Model::build(
            &cfg,
            &mut Ids::new(0),
            &mut Ids::new(1),
            &Default::default(),
        );
        let set =
            |a: &[&str]| -> BTreeSet<IpAddr> { a.iter().map(|s| s.parse().unwrap()).collect() };
        assert_eq!(wanted(&m, &[]), set(&["10.100.0.1", "fd64::1"]));
        assert_eq!(
            wanted(&m, &["fd64::1".parse().unwrap()]),
            set(&["10.100.0.1"])
        );
    }
}
