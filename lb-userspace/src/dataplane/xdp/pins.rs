//! The pin directory: pinned maps (adopted by a restart) and pinned links
//! (which keep XDP attached while no daemon runs), and `lb detach`.

use std::{fs::File, os::fd::AsRawFd as _, path::Path, time::Duration};

use anyhow::{bail, Context as _, Result};
use lb_common::{
    names, Backend, BackendHealth, FlowState, Passthrough, ReverseVal, SnatVal, VipMeta, VipSlot,
};

use super::maps::Sizes;

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

pub fn prepare_pin_dir(dir: &Path) -> Result<()> {
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
pub fn check_pinned_sizes(dir: &Path, s: &Sizes) -> Result<()> {
    use std::mem::size_of;
    // GLOBALS is renewed instead (`renew_counters`).
    let want: [(&str, u32, usize); 11] = [
        (
            names::NAT_REVERSE,
            s.max_targets.max(1) * 2,
            size_of::<ReverseVal>(),
        ),
        (names::PASSTHROUGH, s.passthrough, size_of::<Passthrough>()),
        (names::RING, s.ring_entries(), 4),
        (names::VIPS, s.max_vips, size_of::<VipMeta>()),
        (names::BACKENDS, s.max_targets + 1, size_of::<Backend>()),
        (
            names::BACKEND_HEALTH,
            s.max_targets + 1,
            size_of::<BackendHealth>(),
        ),
        (names::CONNTRACK, s.conntrack, size_of::<FlowState>()),
        (names::CONNTRACK4, s.conntrack, size_of::<FlowState>()),
        (names::DIRECT_SLOTS, lb_common::ADDR_SLOTS, 1),
        (names::SNAT, s.snat, size_of::<SnatVal>()),
        (names::VIP_SLOTS, s.max_vips, size_of::<VipSlot>()),
    ];
    for (name, entries, value) in want {
        // A map added by a newer version is created fresh and pinned.
        let Some((path, info)) = pinned(dir, name)? else {
            continue;
        };
        if info.max_entries() != entries || info.value_size() as usize != value {
            bail!(
                "pinned map {} has {} entries of {} bytes, this config and build need {entries} of {value}: \
                 restart with the sizes it was made with, or run `lb detach` first (drops tracked flows)",
                path.display(),
                info.max_entries(),
                info.value_size()
            );
        }
    }
    Ok(())
}

/// The pinned map `name` in `dir` and its shape, if it is there.
fn pinned(dir: &Path, name: &str) -> Result<Option<(std::path::PathBuf, aya::maps::MapInfo)>> {
    let path = dir.join("maps").join(name);
    if !path.exists() {
        return Ok(None);
    }
    let info = aya::maps::MapInfo::from_pin(&path)
        .with_context(|| format!("reading pinned map {}", path.display()))?;
    Ok(Some((path, info)))
}

/// Pinned counter maps whose shape a newer build changed (a reason or a
/// counter added), and the settings map (a setting added): they hold no
/// flow state, so they are replaced (counts restart, settings are written
/// at start anyway) rather than refusing the upgrade. Returns what to log.
pub fn renew_counters(dir: &Path, s: &Sizes) -> Result<Vec<String>> {
    use std::mem::size_of;
    let want: [(&str, u32, usize); 5] = [
        (names::GLOBALS, 1, size_of::<lb_common::Globals>()),
        (names::JUMP, 2, 4),
        (names::REASONS, lb_common::REASON_COUNT, 8),
        (
            names::VIP_STATS,
            s.max_vips,
            size_of::<lb_common::Counters>(),
        ),
        (
            names::BACKEND_STATS,
            s.max_targets + 1,
            size_of::<lb_common::Counters>(),
        ),
    ];
    let mut done = Vec::new();
    for (name, entries, value) in want {
        let Some((path, info)) = pinned(dir, name)? else {
            continue;
        };
        if info.max_entries() == entries && info.value_size() as usize == value {
            continue;
        }
        std::fs::remove_file(&path).with_context(|| format!("replacing {}", path.display()))?;
        done.push(format!(
            "pinned map {} held {} entries of {} bytes, this build has {entries} of {value}: replaced (counters start at 0)",
            path.display(),
            info.max_entries(),
            info.value_size()
        ));
    }
    Ok(done)
}

/// `lb detach`: detaches the pinned links and removes the pinned maps.
pub fn detach(dir: &Path) -> Result<Vec<String>> {
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

/// Who holds a pin directory's lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    Free,
    /// Held by this pid (`None`: not found in /proc/locks).
    Held(Option<u32>),
}

fn open_dir(dir: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir)
}

fn try_flock(f: &File, op: libc::c_int) -> bool {
    unsafe { libc::flock(f.as_raw_fd(), op | libc::LOCK_NB) == 0 }
}

/// The pid holding a flock on `f`'s inode, from /proc/locks
/// (`1: FLOCK  ADVISORY  WRITE 4242 00:1f:1234 0 EOF`).
fn flock_pid(f: &File) -> Option<u32> {
    use std::os::unix::fs::MetadataExt as _;
    let md = f.metadata().ok()?;
    let dev = md.dev();
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let want = format!("{major:02x}:{minor:02x}:{}", md.ino());
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        // Waiters are listed as "N: -> FLOCK ...".
        (f.get(1) == Some(&"FLOCK") && f.get(5) == Some(&want.as_str()))
            .then(|| f.get(4)?.parse().ok())
            .flatten()
    })
}

/// Locks the pin directory for the life of the returned file: one daemon
/// per pinned state, whatever spelling of the path each was given. A brief
/// probe by `lb stop` or `lb detach` is waited out.
pub fn lock_dir(dir: &Path) -> Result<File> {
    let f = open_dir(dir).with_context(|| format!("opening gateway.pin_path {}", dir.display()))?;
    for _ in 0..10 {
        if try_flock(&f, libc::LOCK_EX) {
            return Ok(f);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = flock_pid(&f).map_or("unknown".into(), |p| p.to_string());
    bail!(
        "another `lb run` (pid {pid}) already serves gateway.pin_path {}",
        dir.display()
    )
}

/// Whether a daemon holds `dir`'s lock (a missing directory is free).
pub fn dir_holder(dir: &Path) -> std::io::Result<Holder> {
    let f = match open_dir(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Holder::Free),
        r => r?,
    };
    if try_flock(&f, libc::LOCK_SH) {
        // Free; the probe's lock goes with `f`.
        return Ok(Holder::Free);
    }
    Ok(Holder::Held(flock_pid(&f)))
}
