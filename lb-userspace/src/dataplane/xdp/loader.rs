//! Loading the program (adopting pinned maps), attaching it to interfaces
//! (taking over pinned links), and undoing a start that failed.

use std::{
    collections::{BTreeSet, HashMap},
    path::Path,
};

use anyhow::{Context as _, Result};
use aya::{
    maps::{MapData, ProgramArray},
    programs::{
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
        ProgramError, Xdp, XdpMode,
    },
    Ebpf, EbpfLoader,
};
use lb_common::{names, FlowKey};
use log::{info, warn};

use super::{
    ctwalk,
    health::HealthMmap,
    maps::{take, Maps, Sizes},
    pins,
    ring::RingMmap,
    AttachMode, RingState, XdpDataplane, EBPF_OBJECT, PROG_ICMP, PROG_LB, PROG_PASS, PROG_REPLY,
};
use crate::{
    config::DataplaneKind,
    model::{AdoptedIds, ReverseKeyOrd},
};

fn missing_object() -> anyhow::Error {
    Unavailable {
        code: "no_xdp_program",
        why: "this lb binary was built without its XDP program (bpf-linker or the nightly \
              toolchain with rust-src was missing at build time); run `cargo xtask setup`, \
              then rebuild, or use `dataplane = \"proxy\"`"
            .into(),
    }
    .into()
}

/// XDP cannot run on this host at all (no CAP_BPF, a kernel without BPF,
/// a binary without the program): the only failures `dataplane = "auto"`
/// falls back to the proxy for. Any other failure (a missing permission
/// beside CAP_BPF, an unknown interface, pinned maps of other sizes) is the
/// operator's to fix, and `lb run` stops with it.
#[derive(Debug)]
pub struct Unavailable {
    /// Short label for `lb_dataplane_info{reason}`.
    pub code: &'static str,
    pub why: String,
}

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.why)
    }
}

impl std::error::Error for Unavailable {}

/// The structural reason behind `e`, if it is one (see `Unavailable`).
pub fn unavailable(e: &anyhow::Error) -> Option<(&'static str, String)> {
    if let Some(u) = e.downcast_ref::<Unavailable>() {
        return Some((u.code, u.why.clone()));
    }
    // A kernel built without the bpf() system call.
    e.chain()
        .filter_map(|c| c.downcast_ref::<std::io::Error>())
        .any(|io| io.raw_os_error() == Some(libc::ENOSYS))
        .then(|| {
            (
                "no_bpf_syscall",
                format!("the kernel has no bpf() system call ({e:#})"),
            )
        })
}

impl XdpDataplane {
    /// Loads the program and its maps (not attached yet), without pinning
    /// (tests, benchmarks).
    pub fn load(sizes: Sizes) -> Result<Self> {
        Self::load_pinned(sizes, None)
    }

    /// Loads another build of the program, unpinned: the benchmark's
    /// same-run A/B of two objects (maps and sync must be the same).
    pub fn load_object(sizes: Sizes, object: &[u8]) -> Result<Self> {
        Self::load_from(sizes, None, object)
    }

    /// Loads the program; with `pin_dir`, its state maps live under
    /// `pin_dir/maps` and are adopted when already there (a restart or an
    /// upgrade keeps conntrack, SNAT and counters). `adopted` tells which.
    pub fn load_pinned(sizes: Sizes, pin_dir: Option<&Path>) -> Result<Self> {
        if EBPF_OBJECT.is_empty() {
            return Err(missing_object());
        }
        Self::load_from(sizes, pin_dir, EBPF_OBJECT)
    }

    fn load_from(sizes: Sizes, pin_dir: Option<&Path>, object: &[u8]) -> Result<Self> {
        let mut adopted = false;
        let mut direct_new = false;
        let mut pin_lock = None;
        if let Some(dir) = pin_dir {
            pins::prepare_pin_dir(dir)?;
            pin_lock = Some(pins::lock_dir(dir)?);
            adopted = dir.join("maps").join(names::GLOBALS).exists();
            if adopted {
                direct_new = !dir.join("maps").join(names::DIRECT_SLOTS).exists();
                pins::check_pinned_sizes(dir, &sizes)?;
                for m in pins::renew_counters(dir, &sizes)? {
                    log::info!("{m}");
                }
            }
        }
        let mut loader = EbpfLoader::new();
        if let Some(dir) = pin_dir {
            for name in names::PINNED {
                loader.map_pin_path(name, dir.join("maps").join(name));
            }
        }
        let mut ebpf = loader
            .map_max_entries(names::VIPS, sizes.max_vips)
            .map_max_entries(names::VIP_ADDRS, sizes.max_vips)
            .map_max_entries(names::VIP_SLOTS, sizes.max_vips)
            .map_max_entries(names::RING, sizes.ring_entries())
            .map_max_entries(names::BACKENDS, sizes.max_targets + 1)
            .map_max_entries(names::CONNTRACK, sizes.conntrack)
            .map_max_entries(names::CONNTRACK4, sizes.conntrack)
            .map_max_entries(names::NAT_REVERSE, sizes.max_targets.max(1) * 2)
            .map_max_entries(names::SNAT, sizes.snat)
            .map_max_entries(names::PASSTHROUGH, sizes.passthrough)
            .map_max_entries(names::VIP_STATS, sizes.max_vips)
            .map_max_entries(names::BACKEND_STATS, sizes.max_targets + 1)
            .map_max_entries(names::BACKEND_HEALTH, sizes.max_targets + 1)
            .load(object)
            .context("loading the XDP object")?;
        for name in [PROG_LB, PROG_ICMP, PROG_REPLY, PROG_PASS] {
            let p: &mut Xdp = ebpf
                .program_mut(name)
                .with_context(|| format!("program {name} missing from object"))?
                .try_into()?;
            p.load()
                .with_context(|| format!("verifier rejected {name}"))?;
        }
        let maps = Maps::take(&mut ebpf)?;
        let ring_mem = RingMmap::new(&maps.ring, sizes.ring_entries())?;
        let health_mem = HealthMmap::new(&maps.backend_health, sizes.max_targets + 1)?;
        let mut jump: ProgramArray<MapData> = take(&mut ebpf, names::JUMP)?;
        // On a restart the table is the pinned one the running program
        // calls through: filled at the first attach, after the first sync,
        // not now (the new programs read this instance's maps, still empty).
        if !adopted {
            install_tail_calls(&mut jump, &ebpf)?;
        }
        let mut dp = XdpDataplane {
            ebpf,
            ring_mem,
            health_mem,
            in_ring: BTreeSet::new(),
            maps,
            jump,
            tail_calls_set: !adopted,
            sizes,
            rings: HashMap::new(),
            vips: HashMap::new(),
            reverse: BTreeSet::new(),
            acl: BTreeSet::new(),
            vip_addrs: BTreeSet::new(),
            addr_bits: vec![0; lb_common::ADDR_SLOTS as usize],
            backends: BTreeSet::new(),
            port_bits: vec![0; 65536],
            attached: Vec::new(),
            new_links: Vec::new(),
            pin_dir: pin_dir.map(Path::to_path_buf),
            _pin_lock: pin_lock,
            adopted,
            found: AdoptedIds::default(),
            interfaces: Vec::new(),
            kind: DataplaneKind::Auto,
            detach_on_exit: false,
            live: None,
            v4_moves: adopted,
        };
        if adopted {
            dp.read_back()?;
            if direct_new {
                dp.mark_direct_targets()?;
            }
            let (n, _) = dp.move_v4_flows(false);
            if n > 0 {
                log::info!("upgrade: {n} IPv4 flows copied from CONNTRACK to CONNTRACK4");
            }
        }
        Ok(dp)
    }

    /// Pins of a build before `DIRECT_SLOTS`: its `PASSTHROUGH` may hold
    /// direct flows to any target, so every target's slot is marked (the
    /// program marks slots only as it sees direct flows).
    fn mark_direct_targets(&mut self) -> Result<()> {
        let addrs: Vec<[u32; 4]> = self
            .maps
            .reverse
            .keys()
            .filter_map(|k| k.ok())
            .map(|k| k.addr)
            .collect();
        for a in &addrs {
            self.maps.direct_slots.set(lb_common::addr_slot(a), 1, 0)?;
        }
        log::info!(
            "upgrade: {} targets' replies checked against direct flows",
            addrs.len()
        );
        Ok(())
    }

    /// Moves the IPv4 flows an older build kept in `CONNTRACK` (before
    /// `CONNTRACK4`) to `CONNTRACK4`, where this build looks them up; this
    /// build never writes IPv4 flows to `CONNTRACK`, so any found there are
    /// an older build's, and the move can run on every adopt (a start that
    /// failed half-way leaves them to the next). At load (`remove` false)
    /// they are copied only: the old program runs until every interface is
    /// attached and still reads them there. The newer copy of a flow wins
    /// (the old program may have moved it on since the load). Returns
    /// (copied, removed).
    pub(super) fn move_v4_flows(&mut self, remove: bool) -> (usize, usize) {
        let mut v4 = Vec::new();
        let walked = self.flow_tables().and_then(|t| {
            Ok(ctwalk::walk::<FlowKey>(&t.v6, |k, st| {
                if k.is_v4() {
                    v4.push((*k, *st));
                }
            })?)
        });
        if let Err(e) = walked {
            log::warn!("moving IPv4 flows out of CONNTRACK: walking it failed: {e:#}");
        }
        let (mut copied, mut removed) = (0, 0);
        for (k, st) in &v4 {
            let newer = match self.maps.conntrack4.get(&k.v4(), 0) {
                Ok(cur) => st.last_seen_ns > cur.last_seen_ns,
                Err(_) => true,
            };
            if newer {
                match self.maps.conntrack4.insert(k.v4(), st, 0) {
                    Ok(()) => copied += 1,
                    Err(e) => log::warn!("copying an IPv4 flow to CONNTRACK4: {e}"),
                }
            }
            if remove && self.maps.conntrack.remove(k).is_ok() {
                removed += 1;
            }
        }
        (copied, removed)
    }

    /// After adopting pinned maps: learn what they hold, so the next sync
    /// removes what is stale and flips rings from their current slots.
    fn read_back(&mut self) -> Result<()> {
        for r in self.maps.vip_slots.iter() {
            let slot = r?;
            if slot.key.family != 0 {
                self.found.vips.push((slot.key, slot.meta.vip_id));
                self.vips.insert(slot.key, slot.meta.vip_id);
                self.rings.insert(
                    slot.meta.vip_id,
                    RingState {
                        zone_id: slot.meta.ring_zone,
                        all_id: slot.meta.ring_all,
                        zone: None,
                        all: None,
                    },
                );
            }
        }
        for k in self.maps.reverse.keys() {
            self.reverse.insert(ReverseKeyOrd::of(&k?));
        }
        for (id, b) in self.maps.backends.iter().enumerate() {
            let b = b?;
            if b.family != 0 {
                self.found.backends.push((id as u32, b));
                self.backends.insert(id as u32);
            }
        }
        for (port, bits) in self.maps.ports.iter().enumerate() {
            self.port_bits[port] = bits?;
        }
        Ok(())
    }

    /// Ids found in adopted maps (read once, by `read_back`).
    pub fn adopted_ids(&self) -> &AdoptedIds {
        &self.found
    }

    pub fn program(&mut self, name: &str) -> Result<&mut Xdp> {
        Ok(self
            .ebpf
            .program_mut(name)
            .context("no such program")?
            .try_into()?)
    }

    /// Attaches the balancer to `iface`: native mode first (unless generic is
    /// forced), then generic mode, logging why native failed. With pins, an
    /// existing pinned link is taken over (the new program replaces the old
    /// one atomically, no packet unhandled), and a new link is pinned.
    pub fn attach(&mut self, iface: &str, kind: DataplaneKind) -> Result<AttachMode> {
        if !self.tail_calls_set {
            install_tail_calls(&mut self.jump, &self.ebpf)?;
            self.tail_calls_set = true;
        }
        let link_pin = self.pin_dir.as_ref().map(|d| d.join("links").join(iface));
        if let Some(pin) = link_pin.as_ref().filter(|p| p.exists()) {
            let pinned =
                PinnedLink::from_pin(pin).with_context(|| format!("opening {}", pin.display()))?;
            let link = XdpLink::try_from(FdLink::from(pinned))
                .context("pinned link is not an XDP link")?;
            let prog = self.program(PROG_LB)?;
            let id = prog
                .attach_to_link(link)
                .with_context(|| format!("{iface}: replacing the program in the pinned link"))?;
            // The pin keeps it attached; the program must not detach it.
            let _ = prog.take_link(id)?;
            // The link keeps the mode it was made in: ask the kernel.
            let mode = kernel_mode(iface).unwrap_or(AttachMode::Native);
            info!(
                "{iface}: took over the pinned XDP link ({} mode; program replaced in place)",
                mode.as_str()
            );
            let wanted = match kind {
                DataplaneKind::Xdp => Some(AttachMode::Native),
                DataplaneKind::XdpGeneric => Some(AttachMode::Generic),
                _ => None,
            };
            if let Some(w) = wanted.filter(|&w| w != mode) {
                warn!(
                    "{iface}: the pinned link runs {} XDP, but dataplane = {:?} asks for {}: that applies once the pins are gone (`lb stop --detach`, then start; tracked flows are dropped)",
                    mode.as_str(),
                    kind.name(),
                    w.as_str()
                );
            }
            self.attached.push((iface.to_string(), mode));
            self.mark_tx(iface, mode == AttachMode::Native);
            return Ok(mode);
        }
        let prog = self.program(PROG_LB)?;
        let (id, mode) = match kind {
            DataplaneKind::XdpGeneric => (
                prog.attach(iface, XdpMode::Skb)
                    .with_context(|| format!("attaching generic XDP to {iface}"))?,
                AttachMode::Generic,
            ),
            DataplaneKind::Xdp => (
                prog.attach(iface, XdpMode::Driver)
                    .with_context(|| format!("attaching native XDP to {iface}"))?,
                AttachMode::Native,
            ),
            DataplaneKind::Auto | DataplaneKind::Proxy => match prog.attach(iface, XdpMode::Driver)
            {
                Ok(id) => (id, AttachMode::Native),
                Err(e) => {
                    warn!(
                        "{iface}: native XDP failed ({}), trying generic mode",
                        chain(&e)
                    );
                    (
                        prog.attach(iface, XdpMode::Skb)
                            .with_context(|| format!("attaching generic XDP to {iface}"))?,
                        AttachMode::Generic,
                    )
                }
            },
        };
        if let Some(pin) = link_pin {
            let link = prog.take_link(id)?;
            match FdLink::try_from(link) {
                Ok(fd) => {
                    fd.pin(&pin)
                        .with_context(|| format!("pinning the link at {}", pin.display()))?;
                    self.new_links.push(pin);
                }
                // Legacy netlink attachment (old kernels): not pinnable.
                Err(_) => {
                    warn!("{iface}: attached without a BPF link; a restart will briefly detach it")
                }
            }
        }
        info!("{iface}: XDP attached in {} mode", mode.as_str());
        self.attached.push((iface.to_string(), mode));
        self.mark_tx(iface, mode == AttachMode::Native);
        Ok(mode)
    }

    /// Whether XDP may transmit on `iface` (`TX_PORTS`): where the program
    /// runs natively, its driver transmits XDP frames; elsewhere (generic
    /// mode, devices lb is not on) the kernel forwards.
    pub fn mark_tx(&mut self, iface: &str, native: bool) {
        let Ok(name) = std::ffi::CString::new(iface) else {
            return;
        };
        let i = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if i != 0 && i < lb_common::TX_PORTS_SIZE {
            let _ = self.maps.tx_ports.set(i, native as u8, 0);
        }
    }

    /// Detaches the pinned links of interfaces no longer in
    /// `gateway.interfaces` (a restart with a shorter list). Returns them.
    pub fn detach_unconfigured(&mut self, configured: &[String]) -> Vec<String> {
        let Some(dir) = &self.pin_dir else {
            return Vec::new();
        };
        let mut gone = Vec::new();
        for e in std::fs::read_dir(dir.join("links"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if configured.contains(&name) {
                continue;
            }
            if let Ok(link) = PinnedLink::from_pin(e.path()) {
                if let Ok(l) = link.unpin() {
                    drop(l);
                    gone.push(name);
                }
            }
        }
        gone
    }

    /// A start that failed after attaching some interfaces: detaches what
    /// this run attached. The state of an earlier run (adopted maps, links
    /// taken over) stays as it was; without one, the maps go too, so
    /// nothing is left behind.
    pub fn undo_attach(&mut self) {
        for pin in self.new_links.drain(..) {
            if let Ok(link) = PinnedLink::from_pin(&pin) {
                // Unpinned and dropped: the last reference goes, XDP detaches.
                if let Ok(l) = link.unpin() {
                    drop(l);
                }
            }
        }
        if let (false, Some(dir)) = (self.adopted, &self.pin_dir) {
            let _ = std::fs::remove_dir_all(dir.join("maps"));
            // Empty unless an earlier run pinned links: then they stay.
            let _ = std::fs::remove_dir(dir.join("links"));
            let _ = std::fs::remove_dir(dir);
        }
    }
}

fn chain(e: &ProgramError) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// The XDP mode the kernel reports for `iface` (rtnetlink).
fn kernel_mode(iface: &str) -> Option<AttachMode> {
    use futures_util::TryStreamExt as _;
    use rtnetlink::packet_route::link::{LinkAttribute, LinkXdp, XdpAttached};
    let name = iface.to_string();
    crate::dataplane::netlink::ask(move |handle| async move {
        let mut links = handle.link().get().match_name(name).execute();
        let msg = links.try_next().await.ok()??;
        msg.attributes.iter().find_map(|a| match a {
            LinkAttribute::Xdp(x) => x.iter().find_map(|x| match x {
                LinkXdp::Attached(XdpAttached::Driver) => Some(AttachMode::Native),
                LinkXdp::Attached(XdpAttached::SocketBuffer) => Some(AttachMode::Generic),
                _ => None,
            }),
            _ => None,
        })
    })
}

/// Points the tail-call table at this instance's `lb_icmp` and `lb_reply`
/// (slots as lb-ebpf's JUMP_ICMP and JUMP_REPLY).
fn install_tail_calls(jump: &mut ProgramArray<MapData>, ebpf: &Ebpf) -> Result<()> {
    for (slot, name) in [(0, PROG_ICMP), (1, PROG_REPLY)] {
        let p: &Xdp = ebpf
            .program(name)
            .with_context(|| format!("{name} missing"))?
            .try_into()?;
        jump.set(slot, p.fd()?, 0)
            .with_context(|| format!("installing the {name} tail call"))?;
    }
    Ok(())
}
