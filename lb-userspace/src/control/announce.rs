//! VIP announcement for a BGP speaker (BIRD): one host route per VIP address
//! that has a healthy target, kept in a dedicated kernel routing table that
//! BIRD's `kernel` protocol learns and exports over BGP.
//!
//! The routes point at a tun device this process opened. A tun device that
//! is not persistent disappears when its last file descriptor closes, and the
//! kernel then deletes every route through it. So a daemon that exits, is
//! killed, or crashes withdraws its VIPs without running any code, and BIRD
//! sees the routes vanish at once (netlink), not after a scan or a timer.

use std::{
    collections::BTreeSet,
    net::IpAddr,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{bail, Context as _, Result};
use futures_util::TryStreamExt as _;
use log::{error, info, warn};
use rtnetlink::{
    packet_route::{
        link::LinkFlags,
        route::{RouteAddress, RouteAttribute, RouteMessage, RouteScope},
    },
    Handle, IpVersion, LinkUnspec, RouteMessageBuilder,
};
use tokio::{sync::watch, task::JoinHandle};

use crate::{config::Announce, dataplane::netlink::is_errno, model::Model};

/// Addresses to announce: those of listeners with at least one target that
/// may take new flows (`in_ring`) and a non-zero weight. A VIP without one
/// would only drop what ECMP sends it, so it is withdrawn.
pub fn wanted(model: &Model, in_ring: &dyn Fn(u32) -> bool) -> BTreeSet<IpAddr> {
    model
        .vips
        .iter()
        .filter(|v| {
            v.backends
                .iter()
                .any(|id| in_ring(*id) && model.backends.get(id).is_some_and(|b| b.weight > 0))
        })
        .map(|v| v.lkey.address)
        .collect()
}

/// The set to announce next: `wanted`, or with `allow_new` false only the
/// part of it already announced (`cur`).
fn next_set(
    cur: Option<&BTreeSet<IpAddr>>,
    wanted: BTreeSet<IpAddr>,
    allow_new: bool,
) -> BTreeSet<IpAddr> {
    match (allow_new, cur) {
        (false, Some(cur)) => wanted.intersection(cur).copied().collect(),
        _ => wanted,
    }
}

/// How often the kernel's state is compared with the wanted one (routes or
/// the device removed by hand, failed changes).
const RECHECK: Duration = Duration::from_secs(3);

/// Keeps the announced routes equal to the last `set`, from a task of its
/// own (netlink calls are async; the daemon's state changes are not).
pub struct Announcer {
    pub cfg: Announce,
    tx: watch::Sender<Option<BTreeSet<IpAddr>>>,
    task: JoinHandle<()>,
    /// Our routes in the kernel table, as last read back from it (for
    /// metrics and `lb status`).
    pub announced: Arc<Mutex<BTreeSet<IpAddr>>>,
}

impl Announcer {
    /// Creates the device (failing if it exists: another daemon may own it)
    /// and starts with nothing announced.
    pub async fn start(cfg: &Announce) -> Result<Announcer> {
        let routes = Routes::open(cfg).await?;
        info!(
            "announce: routes for VIPs with a healthy target go to kernel table {} via device {} (for BIRD's kernel protocol)",
            cfg.table, cfg.device
        );
        let (tx, rx) = watch::channel(Some(BTreeSet::new()));
        let announced = Arc::new(Mutex::new(BTreeSet::new()));
        let task = tokio::spawn(run(routes, rx, announced.clone()));
        Ok(Announcer {
            cfg: cfg.clone(),
            tx,
            task,
            announced,
        })
    }

    /// The addresses to announce from now on. With `allow_new` false (the
    /// data plane failed to take the last change), only withdrawals apply:
    /// no address is announced that might not be served.
    pub fn set(&self, wanted: BTreeSet<IpAddr>, allow_new: bool) {
        self.tx.send_if_modified(|cur| {
            let next = next_set(cur.as_ref(), wanted, allow_new);
            let changed = cur.as_ref() != Some(&next);
            *cur = Some(next);
            changed
        });
    }

    /// Withdraws every route and removes the device.
    pub async fn shutdown(self) {
        let _ = self.tx.send(None);
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(5), &mut task)
            .await
            .is_err()
        {
            // Dropping its state closes the tun fd: the kernel removes the
            // device and the routes.
            warn!("announce: withdrawing took over 5s; removing the device instead");
            task.abort();
        }
    }
}

/// The tun device and the netlink handle that manages its routes.
struct Routes {
    cfg: Announce,
    handle: Handle,
    /// The netlink connection's task (it does not end on its own).
    conn: JoinHandle<()>,
    /// Holding it keeps the device (and so the routes) alive.
    tun: Option<OwnedFd>,
    ifindex: u32,
}

impl Drop for Routes {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

impl Routes {
    async fn open(cfg: &Announce) -> Result<Routes> {
        let (conn, handle, _) = rtnetlink::new_connection().context("opening rtnetlink")?;
        let mut r = Routes {
            cfg: cfg.clone(),
            handle,
            conn: tokio::spawn(conn),
            tun: None,
            ifindex: 0,
        };
        r.create_device().await?;
        Ok(r)
    }

    async fn create_device(&mut self) -> Result<()> {
        let name = &self.cfg.device;
        self.tun = None;
        let tun = open_tun(name).with_context(|| {
            format!(
                "announce.device: creating tun device {name:?} (does an interface of that name exist, e.g. another lb's?)"
            )
        })?;
        let cname = std::ffi::CString::new(name.as_str())?;
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        if ifindex == 0 {
            bail!("tun device {name} vanished right after its creation");
        }
        self.ifindex = ifindex;
        self.set_up().await?;
        self.tun = Some(tun);
        Ok(())
    }

    async fn set_up(&self) -> Result<()> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(self.ifindex).up().build())
            .execute()
            .await
            .with_context(|| format!("setting {} up", self.cfg.device))
    }

    /// True while our device still exists (someone may delete it by hand).
    fn device_alive(&self) -> bool {
        let Ok(cname) = std::ffi::CString::new(self.cfg.device.as_str()) else {
            return false;
        };
        self.tun.is_some() && unsafe { libc::if_nametoindex(cname.as_ptr()) } == self.ifindex
    }

    /// Whether the device is administratively up (setting it down by hand
    /// flushes its routes).
    async fn is_up(&self) -> Result<bool> {
        let link = self
            .handle
            .link()
            .get()
            .match_index(self.ifindex)
            .execute()
            .try_next()
            .await?;
        Ok(link.is_some_and(|l| l.header.flags.contains(LinkFlags::Up)))
    }

    /// Our host routes in the table, read back from the kernel.
    async fn present(&self) -> Result<BTreeSet<IpAddr>> {
        let mut out = BTreeSet::new();
        for v in [IpVersion::V4, IpVersion::V6] {
            let query = match v {
                IpVersion::V4 => RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(),
                IpVersion::V6 => RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
            };
            let mut dump = self.handle.route().get(query).execute();
            while let Some(m) = dump.try_next().await? {
                if let Some(a) = self.ours(&m) {
                    out.insert(a);
                }
            }
        }
        Ok(out)
    }

    /// The address of a host route of ours (our table and device).
    fn ours(&self, m: &RouteMessage) -> Option<IpAddr> {
        let table = m
            .attributes
            .iter()
            .find_map(|a| match a {
                RouteAttribute::Table(t) => Some(*t),
                _ => None,
            })
            .unwrap_or(m.header.table as u32);
        let oif = m.attributes.contains(&RouteAttribute::Oif(self.ifindex));
        if table != self.cfg.table || !oif {
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

    fn message(&self, addr: IpAddr) -> RouteMessage {
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(addr, prefix)
            .expect("a host prefix is valid")
            .output_interface(self.ifindex)
            .table_id(self.cfg.table)
            .scope(RouteScope::Link)
            .build()
    }

    async fn add(&self, addr: IpAddr) -> Result<()> {
        // Not a replace: a route that is not ours is left alone.
        match self.handle.route().add(self.message(addr)).execute().await {
            Err(e) if is_errno(&e, libc::EEXIST) => bail!(
                "table {} already has a route for {addr} that lb did not make: give [announce] a table of its own",
                self.cfg.table
            ),
            r => r.with_context(|| format!("adding the route for {addr} to table {}", self.cfg.table)),
        }
    }

    async fn del(&self, addr: IpAddr) -> Result<()> {
        match self.handle.route().del(self.message(addr)).execute().await {
            // Already gone (deleted by hand, or with the device).
            Err(e) if is_errno(&e, libc::ESRCH) => Ok(()),
            r => r.with_context(|| format!("deleting the route for {addr}")),
        }
    }

    /// Brings the kernel to `wanted`; returns the first error (the rest is
    /// still attempted).
    async fn reconcile(
        &mut self,
        wanted: &BTreeSet<IpAddr>,
        announced: &Mutex<BTreeSet<IpAddr>>,
    ) -> Result<()> {
        if !self.device_alive() {
            warn!(
                "announce: device {} is gone (deleted by hand?): re-creating it",
                self.cfg.device
            );
            announced.lock().unwrap().clear();
            self.create_device().await?;
        }
        if !self.is_up().await? {
            warn!(
                "announce: device {} was set down (which removes its routes): setting it up",
                self.cfg.device
            );
            self.set_up().await?;
        }
        let present = self.present().await?;
        *announced.lock().unwrap() = present.clone();
        let mut first = None;
        for addr in wanted.difference(&present) {
            match self.add(*addr).await {
                Ok(()) => {
                    announced.lock().unwrap().insert(*addr);
                    info!(
                        "announce: {addr} announced (it has a healthy target; table {} via {})",
                        self.cfg.table, self.cfg.device
                    );
                }
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        for addr in present.difference(wanted) {
            match self.del(*addr).await {
                Ok(()) => {
                    announced.lock().unwrap().remove(addr);
                    warn!("announce: {addr} withdrawn (no healthy target left)");
                }
                Err(e) => {
                    first.get_or_insert(e);
                }
            }
        }
        first.map_or(Ok(()), Err)
    }
}

/// Opens a non-persistent tun device named `name`; it lives as long as the
/// returned descriptor (close-on-exec, so no child inherits it).
fn open_tun(name: &str) -> std::io::Result<OwnedFd> {
    let fd = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    // The name is at most 15 bytes (validated), so it stays NUL-terminated.
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    // TUN_EXCL: never attach to an existing (e.g. persistent) device, which
    // would outlive us and keep the routes.
    req.ifr_ifru.ifru_flags =
        (libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_TUN_EXCL) as libc::c_short;
    // The kernel writes the final name back into `req`.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

/// Applies every new wanted set, and re-checks the kernel every few
/// seconds; on `None`, withdraws all and ends.
async fn run(
    mut routes: Routes,
    mut rx: watch::Receiver<Option<BTreeSet<IpAddr>>>,
    announced: Arc<Mutex<BTreeSet<IpAddr>>>,
) {
    let mut tick = tokio::time::interval(RECHECK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_error = None;
    loop {
        let wanted = rx.borrow_and_update().clone();
        let Some(wanted) = wanted else { break };
        match routes.reconcile(&wanted, &announced).await {
            Ok(()) => {
                if last_error.take().is_some() {
                    info!("announce: in sync again");
                }
            }
            Err(e) => {
                // Logged when it changes, not every few seconds.
                let msg = format!("{e:#}");
                if last_error.as_ref() != Some(&msg) {
                    error!("announce: {msg} (retrying every {RECHECK:?})");
                }
                last_error = Some(msg);
            }
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { break },
            _ = tick.tick() => {}
        }
    }
    // Closing the device deletes every route through it, at once.
    let current = std::mem::take(&mut *announced.lock().unwrap());
    drop(routes.tun.take());
    info!(
        "announce: withdrew {} VIP address(es) and removed device {}",
        current.len(),
        routes.cfg.device
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{config::Config, model::Ids};

    const CFG: &str = r#"[gateway]
interfaces = ["eth0"]
zone = "a"
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
target_group = "dns"
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
[[target_group.targets]]
address = "10.1.0.2"
port = 8080
weight = 0
[[target_group]]
name = "dns"
[target_group.health_check]
port = 8053
[[target_group.targets]]
address = "10.1.0.3"
port = 53
[[target_group]]
name = "web6"
[[target_group.targets]]
address = "fd01::1"
port = 8080
"#;

    fn model() -> Model {
        let cfg = Config::parse(CFG).unwrap();
        Model::build(
            &cfg,
            &mut Ids::new(0),
            &mut Ids::new(1),
            &Default::default(),
        )
    }

    fn healthy(m: &Model, addrs: &[&str]) -> BTreeSet<IpAddr> {
        let ids: Vec<u32> = m
            .backends
            .values()
            .filter(|b| addrs.contains(&b.key.address.to_string().as_str()))
            .map(|b| b.id)
            .collect();
        wanted(m, &|id| ids.contains(&id))
    }

    fn set(a: &[&str]) -> BTreeSet<IpAddr> {
        a.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn an_address_is_announced_while_any_of_its_listeners_has_a_healthy_target() {
        let m = model();
        let all = ["10.1.0.1", "10.1.0.2", "10.1.0.3", "fd01::1"];
        assert_eq!(healthy(&m, &all), set(&["10.100.0.1", "fd64::1"]));
        // The web group is down, the dns one on the same address is not.
        assert_eq!(
            healthy(&m, &["10.1.0.3", "fd01::1"]),
            set(&["10.100.0.1", "fd64::1"])
        );
        assert_eq!(healthy(&m, &["fd01::1"]), set(&["fd64::1"]));
        assert_eq!(healthy(&m, &[]), set(&[]));
    }

    #[test]
    fn after_a_failed_sync_only_withdrawals_apply() {
        let cur = set(&["10.100.0.1", "10.100.0.2"]);
        let wanted = set(&["10.100.0.2", "10.100.0.3"]);
        assert_eq!(
            next_set(Some(&cur), wanted.clone(), false),
            set(&["10.100.0.2"])
        );
        assert_eq!(next_set(Some(&cur), wanted.clone(), true), wanted);
    }

    #[test]
    fn a_healthy_target_of_weight_zero_does_not_count() {
        let m = model();
        assert_eq!(healthy(&m, &["10.1.0.2"]), set(&[]));
    }
}
