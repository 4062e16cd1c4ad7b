//! Loads the XDP program, sizes its maps from the config, attaches it, and
//! keeps the maps in sync with the model (double-buffered rings).

use std::{
    collections::{BTreeSet, HashMap},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _, Result};
use aya::{
    maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, ProgramArray},
    programs::{
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
        ProgramError, Xdp, XdpMode,
    },
    Ebpf, EbpfLoader,
};
use lb_common::{
    Backend, Counters, FlowKey, FlowState, Globals, Passthrough, ReverseKey, ReverseVal, SnatKey,
    SnatVal, VipKey, VipMeta, VipSlot, PORT_TARGET_TCP, PORT_TARGET_UDP, PORT_VIP_TCP,
    PORT_VIP_UDP, PROTO_TCP, REASON_COUNT, RINGS_PER_VIP, VIP_F_SNAT,
};
use log::{info, warn};

use crate::{
    config::{Config, DataplaneKind},
    model::{CachedRing, Model, ReverseKeyOrd},
};

/// The XDP object built by build.rs (empty when built without a BPF toolchain).
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb"));

pub const PROG_LB: &str = "lb_xdp";
pub const PROG_PASS: &str = "xdp_pass";
pub const PROG_ICMP: &str = "lb_icmp";

/// Map sizes, from the config.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    pub max_vips: u32,
    pub max_targets: u32,
    pub ring_size: u32,
    pub conntrack: u32,
    pub snat: u32,
    pub passthrough: u32,
}

impl Sizes {
    pub fn from_config(cfg: &Config) -> Sizes {
        let g = &cfg.gateway;
        Sizes {
            max_vips: g.max_vips,
            max_targets: g.max_targets,
            ring_size: g.ring_size,
            conntrack: g.conntrack_size,
            snat: g.snat_table_size,
            passthrough: g.passthrough_table_size,
        }
    }

    pub fn ring_entries(&self) -> u32 {
        self.max_vips * RINGS_PER_VIP * self.ring_size
    }

    /// Approximate map memory in bytes (values + keys, no kernel overhead).
    pub fn memory(&self) -> u64 {
        let cpus = aya::util::nr_cpus().unwrap_or(1) as u64;
        // Array values take 8 bytes each.
        let ring = self.ring_entries() as u64 * 8;
        let ct = self.conntrack as u64 * (40 + 24 + 64);
        let snat = self.snat as u64 * (40 + 48 + 64);
        let passthrough = self.passthrough as u64 * (40 + 8 + 64);
        let backends = (self.max_targets as u64 + 1) * 32;
        let stats = (self.max_vips as u64 + self.max_targets as u64 + 1) * 24 * cpus;
        ring + ct + snat + passthrough + backends + stats
    }
}

/// Where the program ended up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    Native,
    Generic,
}

impl AttachMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
        }
    }
}

/// The program's maps, taken out of the `Ebpf` once so they can be held
/// together.
pub struct Maps {
    pub globals: Array<MapData, Globals>,
    pub vips: BpfHashMap<MapData, VipKey, VipMeta>,
    pub vip_slots: Array<MapData, VipSlot>,
    pub ports: Array<MapData, u8>,
    pub ring: Array<MapData, u32>,
    pub backends: Array<MapData, Backend>,
    pub conntrack: BpfHashMap<MapData, FlowKey, FlowState>,
    pub reverse: BpfHashMap<MapData, ReverseKey, ReverseVal>,
    pub snat: BpfHashMap<MapData, SnatKey, SnatVal>,
    pub vip_stats: PerCpuArray<MapData, Counters>,
    pub backend_stats: PerCpuArray<MapData, Counters>,
    pub reasons: PerCpuArray<MapData, u64>,
}

fn take<T: TryFrom<aya::maps::Map>>(ebpf: &mut Ebpf, name: &str) -> Result<T>
where
    T::Error: std::error::Error + Send + Sync + 'static,
{
    let m = ebpf
        .take_map(name)
        .with_context(|| format!("map {name} missing from object"))?;
    T::try_from(m).with_context(|| format!("map {name} has an unexpected type"))
}

impl Maps {
    fn take(ebpf: &mut Ebpf) -> Result<Maps> {
        Ok(Maps {
            globals: take(ebpf, "GLOBALS")?,
            vips: take(ebpf, "VIPS")?,
            vip_slots: take(ebpf, "VIP_SLOTS")?,
            ports: take(ebpf, "PORTS")?,
            ring: take(ebpf, "RING")?,
            backends: take(ebpf, "BACKENDS")?,
            conntrack: take(ebpf, "CONNTRACK")?,
            reverse: take(ebpf, "NAT_REVERSE")?,
            snat: take(ebpf, "SNAT")?,
            vip_stats: take(ebpf, "VIP_STATS")?,
            backend_stats: take(ebpf, "BACKEND_STATS")?,
            reasons: take(ebpf, "REASONS")?,
        })
    }
}

/// The `RING` array mapped into our memory (it is `BPF_F_MMAPABLE`): a
/// spare ring is written with one copy instead of M map updates.
struct RingMmap {
    /// Array maps store each value in an 8-byte slot (value size rounded
    /// up to 8), so a u32 slot is the low half of a u64.
    ptr: *mut u64,
    entries: usize,
    len: usize,
}

// The mapping is owned by this struct alone.
unsafe impl Send for RingMmap {}

impl RingMmap {
    fn new(map: &Array<MapData, u32>, entries: u32) -> Result<RingMmap> {
        use aya::maps::IterableMap as _;
        use std::os::fd::AsRawFd as _;
        // The fd aya already holds: asking the kernel for one by id
        // (`info()?.fd()`, BPF_MAP_GET_FD_BY_ID) needs CAP_SYS_ADMIN, which
        // the systemd unit does not grant.
        let fd = map.map().fd();
        let page = 4096usize;
        let len = (entries as usize * 8).div_ceil(page) * page;
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                std::os::fd::AsFd::as_fd(&fd).as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            bail!("mmap of the RING map: {}", std::io::Error::last_os_error());
        }
        Ok(RingMmap {
            ptr: ptr as *mut u64,
            entries: entries as usize,
            len,
        })
    }

    fn write(&mut self, start: usize, slots: &[u32]) -> Result<()> {
        if start + slots.len() > self.entries {
            bail!("ring write out of bounds");
        }
        // SAFETY: in bounds of the mapping; the kernel only reads it, and the
        // VIP flip (a syscall) orders these stores before any packet uses them.
        let wide: Vec<u64> = slots.iter().map(|&s| u64::from(s)).collect();
        unsafe { std::ptr::copy_nonoverlapping(wide.as_ptr(), self.ptr.add(start), wide.len()) };
        Ok(())
    }
}

impl Drop for RingMmap {
    fn drop(&mut self) {
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
    }
}

/// What a restarted daemon finds in pinned maps.
#[derive(Debug, Default, Clone)]
pub struct AdoptedIds {
    pub vips: Vec<(VipKey, u32)>,
    pub backends: Vec<(u32, Backend)>,
}

/// Maps that outlive the daemon (everything but the next-hop cache and the
/// tail-call table, which belong to one program instance).
pub const PINNED_MAPS: [&str; 13] = [
    "GLOBALS",
    "VIPS",
    "VIP_SLOTS",
    "PORTS",
    "RING",
    "BACKENDS",
    "CONNTRACK",
    "NAT_REVERSE",
    "SNAT",
    "PASSTHROUGH",
    "VIP_STATS",
    "BACKEND_STATS",
    "REASONS",
];

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

fn prepare_pin_dir(dir: &Path) -> Result<()> {
    let parent = dir.parent().unwrap_or(Path::new("/"));
    let c = std::ffi::CString::new(parent.as_os_str().as_encoded_bytes())?;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 || st.f_type as i64 != BPF_FS_MAGIC {
        bail!(
            "gateway.pin_path {}: {} is not a bpf filesystem (mount it: `mount -t bpf bpf /sys/fs/bpf`)",
            dir.display(),
            parent.display()
        );
    }
    std::fs::create_dir_all(dir.join("maps"))
        .with_context(|| format!("creating {}", dir.display()))?;
    std::fs::create_dir_all(dir.join("links"))?;
    Ok(())
}

/// Pinned maps made for other sizes cannot be adopted: say so instead of
/// running the program against them.
fn check_pinned_sizes(dir: &Path, s: &Sizes) -> Result<()> {
    use std::mem::size_of;
    let want: [(&str, u32, usize); 9] = [
        ("GLOBALS", 1, size_of::<Globals>()),
        (
            "NAT_REVERSE",
            s.max_targets.max(1) * 2,
            size_of::<ReverseVal>(),
        ),
        ("PASSTHROUGH", s.passthrough, size_of::<Passthrough>()),
        ("RING", s.ring_entries(), 4),
        ("VIPS", s.max_vips, size_of::<VipMeta>()),
        ("BACKENDS", s.max_targets + 1, size_of::<Backend>()),
        ("CONNTRACK", s.conntrack, size_of::<FlowState>()),
        ("SNAT", s.snat, size_of::<SnatVal>()),
        ("VIP_SLOTS", s.max_vips, size_of::<VipSlot>()),
    ];
    for (name, entries, value) in want {
        let path = dir.join("maps").join(name);
        if !path.exists() {
            // Added by a newer version: created fresh and pinned.
            continue;
        }
        let info = aya::maps::MapInfo::from_pin(&path)
            .with_context(|| format!("reading pinned map {}", path.display()))?;
        if info.max_entries() != entries || info.value_size() as usize != value {
            bail!(
                "pinned map {} has {} entries of {} bytes, this config and build need {entries} of {value}: \
                 restart with the sizes it was made with, or run `lb stop` first (drops tracked flows)",
                path.display(),
                info.max_entries(),
                info.value_size()
            );
        }
    }
    Ok(())
}

/// `lb stop`: detaches the pinned links and removes the pinned maps.
pub fn stop(dir: &Path) -> Result<Vec<String>> {
    let mut done = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir.join("links")) {
        for e in rd.flatten() {
            let link = aya::programs::links::PinnedLink::from_pin(e.path())
                .with_context(|| format!("opening pinned link {}", e.path().display()))?;
            // Unpinned and dropped: the last reference goes, XDP detaches.
            drop(link.unpin()?);
            done.push(format!("detached from {}", e.file_name().to_string_lossy()));
        }
    }
    if dir.join("maps").exists() {
        std::fs::remove_dir_all(dir.join("maps"))?;
        done.push("removed pinned maps".into());
    }
    let _ = std::fs::remove_dir(dir.join("links"));
    let _ = std::fs::remove_dir(dir);
    Ok(done)
}

pub struct XdpDataplane {
    pub ebpf: Ebpf,
    pin_dir: Option<PathBuf>,
    /// The maps came from pins (a restart).
    pub adopted: bool,
    /// What the adopted maps held (empty when not adopted).
    found: AdoptedIds,
    ring_mem: RingMmap,
    pub maps: Maps,
    /// Holds the tail-call table (its slots live as long as the map).
    _jump: ProgramArray<MapData>,
    pub sizes: Sizes,
    /// Active (zone ring id, all ring id) and their content, per vip_id.
    rings: HashMap<u32, RingState>,
    vips: HashMap<VipKey, u32>,
    reverse: BTreeSet<ReverseKeyOrd>,
    backends: BTreeSet<u32>,
    /// The `PORTS` bitmap as last written.
    port_bits: Vec<u8>,
    pub attached: Vec<(String, AttachMode)>,
    /// Links this run attached and pinned (not taken over from pins): what
    /// a failed start must take down again.
    new_links: Vec<PathBuf>,
}

/// A VIP's active ring ids and the Maglev inputs they were built from
/// (`None`: unknown, e.g. adopted after a restart: rebuild).
struct RingState {
    zone_id: u32,
    all_id: u32,
    zone: CachedRing,
    all: CachedRing,
}

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

    /// Loads the program; with `pin_dir`, its state maps live under
    /// `pin_dir/maps` and are adopted when already there (a restart or an
    /// upgrade keeps conntrack, SNAT and counters). `adopted` tells which.
    pub fn load_pinned(sizes: Sizes, pin_dir: Option<&Path>) -> Result<Self> {
        if EBPF_OBJECT.is_empty() {
            return Err(missing_object());
        }
        let mut adopted = false;
        if let Some(dir) = pin_dir {
            prepare_pin_dir(dir)?;
            adopted = dir.join("maps").join("GLOBALS").exists();
            if adopted {
                check_pinned_sizes(dir, &sizes)?;
            }
        }
        let mut loader = EbpfLoader::new();
        if let Some(dir) = pin_dir {
            for name in PINNED_MAPS {
                loader.map_pin_path(name, dir.join("maps").join(name));
            }
        }
        let mut ebpf = loader
            .map_max_entries("VIPS", sizes.max_vips)
            .map_max_entries("VIP_SLOTS", sizes.max_vips)
            .map_max_entries("RING", sizes.ring_entries())
            .map_max_entries("BACKENDS", sizes.max_targets + 1)
            .map_max_entries("CONNTRACK", sizes.conntrack)
            .map_max_entries("NAT_REVERSE", sizes.max_targets.max(1) * 2)
            .map_max_entries("SNAT", sizes.snat)
            .map_max_entries("PASSTHROUGH", sizes.passthrough)
            .map_max_entries("VIP_STATS", sizes.max_vips)
            .map_max_entries("BACKEND_STATS", sizes.max_targets + 1)
            .load(EBPF_OBJECT)
            .context("loading the XDP object")?;
        for name in [PROG_LB, PROG_ICMP, PROG_PASS] {
            let p: &mut Xdp = ebpf
                .program_mut(name)
                .with_context(|| format!("program {name} missing from object"))?
                .try_into()?;
            p.load()
                .with_context(|| format!("verifier rejected {name}"))?;
        }
        let maps = Maps::take(&mut ebpf)?;
        let ring_mem = RingMmap::new(&maps.ring, sizes.ring_entries())?;
        let mut jump: ProgramArray<MapData> = take(&mut ebpf, "JUMP")?;
        let icmp: &Xdp = ebpf
            .program(PROG_ICMP)
            .context("lb_icmp missing")?
            .try_into()?;
        jump.set(0, icmp.fd()?, 0)
            .context("installing the ICMP tail call")?;
        let mut dp = XdpDataplane {
            ebpf,
            ring_mem,
            maps,
            _jump: jump,
            sizes,
            rings: HashMap::new(),
            vips: HashMap::new(),
            reverse: BTreeSet::new(),
            backends: BTreeSet::new(),
            port_bits: vec![0; 65536],
            attached: Vec::new(),
            new_links: Vec::new(),
            pin_dir: pin_dir.map(Path::to_path_buf),
            adopted,
            found: AdoptedIds::default(),
        };
        if adopted {
            dp.read_back()?;
        }
        Ok(dp)
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
                        zone: CachedRing::default(),
                        all: CachedRing::default(),
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
            info!("{iface}: took over the pinned XDP link (program replaced in place)");
            self.attached.push((iface.to_string(), AttachMode::Native));
            return Ok(AttachMode::Native);
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
        Ok(mode)
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
    pub fn undo_start(&mut self) {
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
        }
    }

    /// Programs the maps from the model. `valid(id)`: the backend may keep
    /// its flows; `in_ring(id)`: it may take new flows.
    pub fn sync(
        &mut self,
        model: &Model,
        in_ring: &dyn Fn(u32) -> bool,
        valid: &dyn Fn(u32) -> bool,
    ) -> Result<()> {
        if model.globals.ring_size != self.sizes.ring_size {
            bail!(
                "ring_size changed from {} to {}: needs a restart",
                self.sizes.ring_size,
                model.globals.ring_size
            );
        }
        let bits = port_bits(model);
        // Bits first widen (so a new VIP is never filtered out), and are
        // narrowed only after stale VIPs are gone.
        let union: Vec<u8> = bits
            .iter()
            .zip(&self.port_bits)
            .map(|(a, b)| a | b)
            .collect();
        write_ports(&mut self.maps.ports, &mut self.port_bits, &union)?;
        let maps = &mut self.maps;
        maps.globals.set(0, model.globals, 0)?;

        // Backends first, so a flipped ring never names an unknown backend.
        let mut now = BTreeSet::new();
        for &id in model.backends.keys() {
            if id > self.sizes.max_targets {
                bail!(
                    "backend id {id} exceeds max_targets {}",
                    self.sizes.max_targets
                );
            }
            let v = model.backend_value(id, valid(id)).expect("known id");
            maps.backends.set(id, v, 0)?;
            now.insert(id);
        }
        for &gone in self.backends.difference(&now) {
            maps.backends.set(gone, Backend::default(), 0)?;
        }
        self.backends = now;

        let maps = &mut self.maps;
        let m = self.sizes.ring_size;
        // Stale VIPs go first: a VIP that moves must not need a second
        // entry (the map is sized for max_vips), and a released vip_id must
        // not keep an old key pointing at the listener that takes it over.
        let want: HashMap<VipKey, u32> = model.vips.iter().map(|v| (v.key, v.vip_id)).collect();
        for (k, id) in &self.vips {
            if want.get(k) != Some(id) {
                let _ = maps.vips.remove(k);
            }
            if !want.values().any(|v| v == id) {
                self.rings.remove(id);
                maps.vip_slots.set(*id, VipSlot::default(), 0)?;
            }
        }
        self.vips.retain(|k, id| want.get(k) == Some(id));
        let mut seen = HashMap::new();
        for v in &model.vips {
            if v.vip_id >= self.sizes.max_vips {
                bail!(
                    "vip id {} exceeds max_vips {}",
                    v.vip_id,
                    self.sizes.max_vips
                );
            }
            // Only rings whose inputs changed are rebuilt and written.
            let (zone, all) = model.ring_inputs(v, in_ring);
            let base = v.vip_id * RINGS_PER_VIP;
            let st = self.rings.entry(v.vip_id).or_insert(RingState {
                zone_id: base + 1,
                all_id: base + 3,
                zone: CachedRing::default(),
                all: CachedRing::default(),
            });
            // Write changed rings into the spare slot, then flip below.
            if st.zone.refresh(zone, m) {
                let spare = if st.zone_id == base { base + 1 } else { base };
                self.ring_mem.write((spare * m) as usize, &st.zone.table)?;
                st.zone_id = spare;
            }
            if st.all.refresh(all, m) {
                let spare = if st.all_id == base + 2 {
                    base + 3
                } else {
                    base + 2
                };
                self.ring_mem.write((spare * m) as usize, &st.all.table)?;
                st.all_id = spare;
            }
            let meta = VipMeta {
                vip_id: v.vip_id,
                flags: v.flags,
                ring_zone: st.zone_id,
                ring_all: st.all_id,
                snat_addr: v.snat_addr,
            };
            let slot = VipSlot {
                key: v.key,
                _pad: 0,
                meta,
            };
            maps.vip_slots.set(v.vip_id, slot, 0)?;
            maps.vips.insert(v.key, meta, 0)?;
            seen.insert(v.key, v.vip_id);
        }
        self.vips = seen;

        let mut now = BTreeSet::new();
        for (k, v) in model.reverse_entries() {
            maps.reverse.insert(k, v, 0)?;
            now.insert(ReverseKeyOrd::of(&k));
        }
        for gone in self.reverse.difference(&now) {
            let _ = maps.reverse.remove(&gone.key());
        }
        self.reverse = now;
        write_ports(&mut self.maps.ports, &mut self.port_bits, &bits)?;
        Ok(())
    }

    /// A copy of the conntrack map's fd, for counting off the main loop.
    pub fn conntrack_fd(&self) -> Result<std::os::fd::OwnedFd> {
        use aya::maps::IterableMap as _;
        use std::os::fd::AsFd as _;
        Ok(self
            .maps
            .conntrack
            .map()
            .fd()
            .as_fd()
            .try_clone_to_owned()?)
    }

    /// Deletes the conntrack entries that point at `backend_id` (a target
    /// whose draining ended). Returns how many.
    pub fn purge_backend(&mut self, backend_id: u32) -> usize {
        // Removes every entry of the target (and walks in batches), but
        // counts only the live flows: those a client notices.
        let g = self.maps.globals.get(&0, 0).ok();
        let Ok(fd) = self.conntrack_fd() else {
            return 0;
        };
        let now = crate::ctwalk::coarse_now_ns();
        let mut doomed = Vec::new();
        let _ = crate::ctwalk::for_each(&fd, |k, st| {
            if st.backend_id == backend_id {
                let live = g.as_ref().is_some_and(|g| {
                    lb_common::flow::live(g, k.proto, st.flags, now.saturating_sub(st.last_seen_ns))
                });
                doomed.push((*k, live));
            }
        });
        doomed
            .iter()
            .filter(|(k, live)| self.maps.conntrack.remove(k).is_ok() && *live)
            .count()
    }

    /// Per-reason counters summed over CPUs.
    pub fn reasons(&self) -> Result<[u64; REASON_COUNT as usize]> {
        let arr = &self.maps.reasons;
        let mut out = [0u64; REASON_COUNT as usize];
        for (i, o) in out.iter_mut().enumerate() {
            *o = arr.get(&(i as u32), 0)?.iter().sum();
        }
        Ok(out)
    }

    /// Counters of a VIP or a backend, summed over CPUs.
    pub fn counters(&self, backend: bool, index: u32) -> Result<Counters> {
        let arr = if backend {
            &self.maps.backend_stats
        } else {
            &self.maps.vip_stats
        };
        let mut c = Counters::default();
        for v in arr.get(&index, 0)?.iter() {
            c.packets += v.packets;
            c.bytes += v.bytes;
            c.new_flows += v.new_flows;
        }
        Ok(c)
    }
}

/// The `PORTS` bitmap a model needs.
fn port_bits(model: &Model) -> Vec<u8> {
    let mut bits = vec![0u8; 65536];
    for v in &model.vips {
        let tcp = v.key.proto == PROTO_TCP;
        bits[u16::from_be(v.key.port) as usize] |= if tcp { PORT_VIP_TCP } else { PORT_VIP_UDP };
        if v.flags & VIP_F_SNAT == 0 {
            for id in v.backends.iter().chain(&v.draining) {
                let port = model.backends[id].key.port as usize;
                bits[port] |= if tcp {
                    PORT_TARGET_TCP
                } else {
                    PORT_TARGET_UDP
                };
            }
        }
    }
    bits
}

fn write_ports(map: &mut Array<MapData, u8>, cur: &mut [u8], want: &[u8]) -> Result<()> {
    for (port, (c, w)) in cur.iter_mut().zip(want).enumerate() {
        if c != w {
            map.set(port as u32, *w, 0)?;
            *c = *w;
        }
    }
    Ok(())
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
