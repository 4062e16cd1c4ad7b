//! `lb stop` (stop the daemon; XDP keeps forwarding unless asked to
//! detach) and `lb detach` (take the data plane down; never under a
//! running daemon).

use std::{path::Path, time::Duration};

use anyhow::{bail, Result};

use super::instance::{self, Holder};
use crate::dataplane::xdp::pins;

/// How long `lb stop` waits for the daemon to exit: its shutdown may wait
/// `announce.withdraw_grace` (at most 60 s).
const EXIT_WAIT: Duration = Duration::from_secs(75);

/// Stops the `lb run` serving `pin` (SIGTERM, then waits for it to exit);
/// with `detach`, then detaches XDP and removes the pinned state. Returns
/// what it did.
pub fn stop(socket: &Path, pin: &Path, detach: bool) -> Result<Vec<String>> {
    let mut done = Vec::new();
    match instance::holder(socket, pin)? {
        Holder::Held(None) => bail!(
            "an `lb run` serves gateway.pin_path {}, but its pid is unknown (it holds the pin directory's lock, and no lock file names it): stop it with its service manager",
            pin.display()
        ),
        Holder::Held(Some(pid)) => {
            if unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) } != 0 {
                bail!(
                    "signalling `lb run` (pid {pid}): {}",
                    std::io::Error::last_os_error()
                );
            }
            let deadline = std::time::Instant::now() + EXIT_WAIT;
            while instance::holder(socket, pin)? != Holder::Free {
                if std::time::Instant::now() > deadline {
                    bail!("`lb run` (pid {pid}) did not exit within {EXIT_WAIT:?} of SIGTERM");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            done.push(format!("stopped lb run (pid {pid})"));
        }
        Holder::Free => done.push(format!(
            "no lb run serves gateway.pin_path {}",
            pin.display()
        )),
    }
    if detach {
        done.extend(detach_all(pin)?);
    } else if pin.join("links").exists() {
        done.push(
            "XDP stays attached and forwards with the last state; `lb detach` takes it down".into(),
        );
    }
    Ok(done)
}

/// Detaches XDP and removes the pinned state, unless a daemon serves it.
pub fn detach(socket: &Path, pin: &Path) -> Result<Vec<String>> {
    if let Holder::Held(pid) = instance::holder(socket, pin)? {
        let pid = pid.map_or("pid unknown".into(), |p| format!("pid {p}"));
        bail!(
            "`lb run` ({pid}) is serving gateway.pin_path {}: detaching under it would leave it reporting a data plane that is gone. `lb stop --detach` stops it and detaches; `lb stop` stops it and keeps forwarding",
            pin.display()
        );
    }
    detach_all(pin)
}

/// The pinned program and state, and the VIPs' unreachable routes with
/// them (the kernel would refuse the VIPs' traffic otherwise).
fn detach_all(pin: &Path) -> Result<Vec<String>> {
    let mut done = pins::detach(pin)?;
    match super::vip_routes::remove_left() {
        Ok(0) => {}
        Ok(n) => done.push(format!("removed {n} unreachable VIP route(s)")),
        Err(e) => done.push(format!("warning: {e:#}")),
    }
    Ok(done)
}
