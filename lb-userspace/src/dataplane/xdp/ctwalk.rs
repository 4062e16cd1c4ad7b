//! Counting the live flows in conntrack, off the main loop: a table of
//! millions of entries takes seconds to walk one syscall per entry, which
//! would stall health results and the systemd watchdog. A thread walks it
//! every few seconds with `BPF_MAP_LOOKUP_BATCH` (thousands of entries per
//! syscall) on its own copy of the maps' fds, and publishes the count.
//! Conntrack is two maps, one per family (IPv4 with a 16-byte key, see
//! `lb_ebpf`'s `ct`); walks see both as `FlowKey`s.

use std::{
    os::fd::{AsRawFd, OwnedFd},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use lb_common::{flow, FlowKey, FlowKey4, FlowState, Globals};

use crate::dataplane::Flows;

/// What the walking thread shares with the daemon.
#[derive(Default)]
pub struct Shared {
    /// The settings the data plane runs with (timeouts), set on each sync.
    pub globals: Mutex<Option<Globals>>,
    pub last: Mutex<Flows>,
}

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
/// Entries fetched per syscall.
const BATCH: usize = 4096;

/// `union bpf_attr`'s `batch` member.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// CLOCK_MONOTONIC_COARSE, the clock of `bpf_ktime_get_coarse_ns`.
pub fn coarse_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The conntrack maps: `CONNTRACK4` (IPv4 flows) and `CONNTRACK` (IPv6).
pub struct FlowTables {
    pub v4: OwnedFd,
    pub v6: OwnedFd,
}

impl FlowTables {
    /// The pinned tables in a pin directory's `maps` folder (for tools
    /// and tests that read a running daemon's state).
    pub fn from_pins(maps: &std::path::Path) -> anyhow::Result<FlowTables> {
        let open = |name: &str| -> anyhow::Result<OwnedFd> {
            Ok(dup(&aya::maps::MapData::from_pin(maps.join(name))?)?)
        };
        Ok(FlowTables {
            v4: open(lb_common::names::CONNTRACK4)?,
            v6: open(lb_common::names::CONNTRACK)?,
        })
    }

    /// Calls `f` with every (key, value) of both maps, IPv4 keys widened
    /// to `FlowKey`s, in batches. An error other than the end of a table
    /// stops the walk.
    pub fn for_each(&self, mut f: impl FnMut(&FlowKey, &FlowState)) -> std::io::Result<()> {
        walk::<FlowKey4>(&self.v4, |k, st| f(&k.widen(), st))?;
        walk::<FlowKey>(&self.v6, f)
    }
}

/// A copy of a map's fd, for a walk of its own.
pub fn dup(m: &aya::maps::MapData) -> std::io::Result<OwnedFd> {
    use std::os::fd::AsFd as _;
    m.fd().as_fd().try_clone_to_owned()
}

/// Calls `f` with every (key, value) of the hash map behind `fd`, whose
/// keys are `K`s, in batches.
pub fn walk<K: Copy + Default>(
    fd: &OwnedFd,
    mut f: impl FnMut(&K, &FlowState),
) -> std::io::Result<()> {
    let mut keys = vec![K::default(); BATCH];
    let mut vals = vec![FlowState::default(); BATCH];
    // Hash maps' batch token is a bucket index (u32); 8 bytes are enough.
    let (mut token_in, mut token_out) = (0u64, 0u64);
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                &mut token_in as *mut u64 as u64
            },
            out_batch: &mut token_out as *mut u64 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: vals.as_mut_ptr() as u64,
            count: BATCH as u32,
            map_fd: fd.as_raw_fd() as u32,
            ..Default::default()
        };
        // SAFETY: the buffers hold BATCH keys and values of the map's sizes
        // and outlive the call; attr is the batch member of bpf_attr.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &mut attr as *mut BatchAttr,
                std::mem::size_of::<BatchAttr>() as u32,
            )
        };
        let err = (rc < 0).then(std::io::Error::last_os_error);
        for i in 0..attr.count as usize {
            f(&keys[i], &vals[i]);
        }
        match err {
            None => {}
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            Some(e) => return Err(e),
        }
        token_in = token_out;
        first = false;
    }
}

/// Counts the live flows of both conntrack maps.
pub fn count(t: &FlowTables, g: &Globals) -> std::io::Result<Flows> {
    let now = coarse_now_ns();
    let mut out = Flows {
        at: Some(Instant::now()),
        ..Default::default()
    };
    t.for_each(|k, st| {
        let age = now.saturating_sub(st.last_seen_ns);
        if flow::live(g, k.proto, st.idle_timeout_s, st.flags, age) {
            out.total += 1;
            out.half_open += u64::from(st.flags & lb_common::FLOW_F_HALF_OPEN != 0);
            *out.per_backend.entry(st.backend_id).or_insert(0) += 1;
        }
    })?;
    Ok(out)
}

/// Starts the walking thread: a count every `every`, published in
/// `shared.last`. It ends when the XDP plane drops its `Arc`.
pub fn spawn(t: FlowTables, shared: Arc<Shared>, every: Duration) {
    let weak = Arc::downgrade(&shared);
    drop(shared);
    std::thread::Builder::new()
        .name("lb-conntrack".into())
        .spawn(move || loop {
            let Some(shared) = weak.upgrade() else { return };
            let g = *shared.globals.lock().unwrap();
            if let Some(g) = g {
                match count(&t, &g) {
                    Ok(c) => *shared.last.lock().unwrap() = c,
                    Err(e) => log::warn!("counting conntrack flows failed: {e}"),
                }
            }
            drop(shared);
            std::thread::sleep(every);
        })
        .expect("spawning the conntrack thread");
}
