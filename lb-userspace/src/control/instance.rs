//! One daemon per pinned state: `lb run` holds an exclusive lock for its
//! life (the kernel drops it when the process dies, however it dies), and
//! `lb stop` / `lb detach` find the daemon through it. The lock file lives
//! in the daemon's runtime directory (that of `gateway.admin_socket`, which
//! only its user may write), is opened without following links, and holds
//! the daemon's pid.

use std::{
    fs::File,
    io::Write as _,
    os::{fd::AsRawFd as _, unix::fs::OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _, Result};

pub use crate::dataplane::xdp::pins::Holder;
use crate::{dataplane::xdp::pins, telemetry::admin::private_dir};

/// The lock of the daemon serving `pin` whose admin socket is `socket`.
pub fn lock_path(socket: &Path, pin: &Path) -> PathBuf {
    let dir = socket.parent().unwrap_or(Path::new("/"));
    let name = pin.to_string_lossy().replace('/', "_");
    dir.join(format!("lb{name}.lock"))
}

fn open(path: &Path, create: bool) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .create(create)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

fn try_flock(f: &File, op: libc::c_int) -> bool {
    unsafe { libc::flock(f.as_raw_fd(), op | libc::LOCK_NB) == 0 }
}

/// Takes the lock for `lb run` (held while the returned file is open). A
/// brief probe by `lb stop` or `lb detach` is waited out.
pub fn lock(socket: &Path, pin: &Path) -> Result<File> {
    if let Some(dir) = socket.parent() {
        private_dir(dir, "gateway.admin_socket")?;
    }
    let path = lock_path(socket, pin);
    let f = open(&path, true).with_context(|| {
        format!(
            "opening the instance lock {} (a symbolic link there is refused)",
            path.display()
        )
    })?;
    if !(0..10).any(|_| {
        try_flock(&f, libc::LOCK_EX) || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            false
        }
    }) {
        let holder = std::fs::read_to_string(&path).unwrap_or_default();
        bail!(
            "another `lb run` (pid {}) already serves gateway.pin_path {} (lock {})",
            holder.trim(),
            pin.display(),
            path.display()
        );
    }
    let _ = f.set_len(0);
    let _ = (&f).write_all(std::process::id().to_string().as_bytes());
    Ok(f)
}

/// Whether an `lb run` serves `pin`: the pin directory's lock (any spelling
/// of the path, whatever the config says now), then the lock file of the
/// runtime directory (a daemon without XDP pins). An error (no permission
/// to look) is not taken for "none".
pub fn holder(socket: &Path, pin: &Path) -> Result<Holder> {
    let held = pins::dir_holder(pin).with_context(|| {
        format!(
            "checking gateway.pin_path {} for a running lb run",
            pin.display()
        )
    })?;
    if held != Holder::Free {
        return Ok(held);
    }
    let path = lock_path(socket, pin);
    let f = match open(&path, false) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Holder::Free),
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "opening the instance lock {} (root or the daemon's user may)",
                    path.display()
                )
            })
        }
        Ok(f) => f,
    };
    if try_flock(&f, libc::LOCK_SH) {
        // Nobody holds it (ours goes with `f`).
        return Ok(Holder::Free);
    }
    let pid = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| t.trim().parse().ok());
    Ok(Holder::Held(pid))
}
