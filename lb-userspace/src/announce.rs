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
use log::{error, info, warn};
use rtnetlink::{
    packet_route::route::{RouteMessage, RouteScope},
    Handle, LinkUnspec, RouteMessageBuilder,
};
use tokio::{sync::watch, task::JoinHandle};

use crate::{config::Announce, model::Model};

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

/// Keeps the announced routes equal to the last `set`, from a task of its
/// own (netlink calls are async; the daemon's state changes are not).
pub struct Announcer {
    pub cfg: Announce,
    tx: watch::Sender<Option<BTreeSet<IpAddr>>>,
    task: JoinHandle<()>,
    /// What is in the kernel table now (for metrics and `lb status`).
    pub announced: Arc<Mutex<BTreeSet<IpAddr>>>,
}

impl Announcer {
    /// Creates the device (failing if it exists: another daemon may own it)
    /// and starts with nothing announced.
    pub async fn start(cfg: &Announce) -> Result<Announcer> {
        let routes = Routes::open(cfg).await?;
        info!(
            "announcing VIPs through routes in kernel table {} via device {} (for BIRD's kernel protocol)",
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

    /// The addresses that should be announced from now on.
    pub fn set(&self, wanted: BTreeSet<IpAddr>) {
        self.tx.send_if_modified(|cur| {
            let changed = cur.as_ref() != Some(&wanted);
            *cur = Some(wanted);
            changed
        });
    }

    /// Withdraws every route and removes the device.
    pub async fn shutdown(self) {
        let _ = self.tx.send(None);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

/// The tun device and the netlink handle that manages its routes.
struct Routes {
    cfg: Announce,
    handle: Handle,
    /// Holding it keeps the device (and so the routes) alive.
    tun: Option<OwnedFd>,
    ifindex: u32,
}

impl Routes {
    async fn open(cfg: &Announce) -> Result<Routes> {
        let (conn, handle, _) = rtnetlink::new_connection().context("opening rtnetlink")?;
        tokio::spawn(conn);
        let mut r = Routes {
            cfg: cfg.clone(),
            handle,
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
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(ifindex).up().build())
            .execute()
            .await
            .with_context(|| format!("setting {name} up"))?;
        self.tun = Some(tun);
        self.ifindex = ifindex;
        Ok(())
    }

    /// True while our device still exists (someone may delete it by hand).
    fn device_alive(&self) -> bool {
        let Ok(cname) = std::ffi::CString::new(self.cfg.device.as_str()) else {
            return false;
        };
        self.tun.is_some() && unsafe { libc::if_nametoindex(cname.as_ptr()) } == self.ifindex
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
        self.handle
            .route()
            .add(self.message(addr))
            .replace()
            .execute()
            .await
            .with_context(|| format!("adding the route for {addr} to table {}", self.cfg.table))
    }

    async fn del(&self, addr: IpAddr) -> Result<()> {
        match self.handle.route().del(self.message(addr)).execute().await {
            // Already gone (deleted by hand, or with the device).
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code().abs() == libc::ESRCH => Ok(()),
            r => r.with_context(|| format!("deleting the route for {addr}")),
        }
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
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    // TUN_EXCL: never attach to an existing (e.g. persistent) device, which
    // would outlive us and keep the routes.
    req.ifr_ifru.ifru_flags =
        (libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_TUN_EXCL) as libc::c_short;
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fd)
}

/// Applies every new wanted set; retries failures and re-creates a device
/// deleted by hand every few seconds; on `None`, withdraws all and ends.
async fn run(
    mut routes: Routes,
    mut rx: watch::Receiver<Option<BTreeSet<IpAddr>>>,
    announced: Arc<Mutex<BTreeSet<IpAddr>>>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(3));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        let wanted = rx.borrow_and_update().clone();
        let Some(wanted) = wanted else { break };
        if !routes.device_alive() {
            warn!(
                "announce: device {} is gone (deleted by hand?): re-creating it",
                routes.cfg.device
            );
            announced.lock().unwrap().clear();
            if let Err(e) = routes.create_device().await {
                error!("announce: {e:#}");
            }
        }
        let current = announced.lock().unwrap().clone();
        let mut ok = true;
        for addr in wanted.difference(&current) {
            match routes.add(*addr).await {
                Ok(()) => {
                    announced.lock().unwrap().insert(*addr);
                    info!(
                        "announce: {addr} announced (it has a healthy target; table {} via {})",
                        routes.cfg.table, routes.cfg.device
                    );
                }
                Err(e) => {
                    ok = false;
                    if !failing {
                        error!("announce: {e:#} (retrying every 3s)");
                    }
                }
            }
        }
        for addr in current.difference(&wanted) {
            match routes.del(*addr).await {
                Ok(()) => {
                    announced.lock().unwrap().remove(addr);
                    warn!("announce: {addr} withdrawn (no healthy target left)");
                }
                Err(e) => {
                    ok = false;
                    if !failing {
                        error!("announce: {e:#} (retrying every 3s)");
                    }
                }
            }
        }
        failing = !ok;
        tokio::select! {
            r = rx.changed() => if r.is_err() { break },
            _ = tick.tick() => {}
        }
    }
    let current = std::mem::take(&mut *announced.lock().unwrap());
    for addr in &current {
        if let Err(e) = routes.del(*addr).await {
            warn!("announce: {e:#}");
        }
    }
    drop(routes.tun.take());
    if !current.is_empty() {
        info!(
            "announce: withdrew {} VIP address(es) and removed device {}",
            current.len(),
            routes.cfg.device
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{config::Config, model::Ids};

    const CFG: &str = r#"[gateway]
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
    fn a_healthy_target_of_weight_zero_does_not_count() {
        let m = model();
        assert_eq!(healthy(&m, &["10.1.0.2"]), set(&[]));
    }
}
