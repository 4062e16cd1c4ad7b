//! Network namespaces for tests. Every namespace, veth and process made here
//! is removed by a guard's `Drop`, also when a test panics. Traffic stays
//! inside these namespaces.

use std::{
    fs::File,
    os::fd::AsRawFd,
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Runs a command, failing with its stderr when it fails.
pub fn sh(args: &[&str]) -> Result<Output> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("spawning {args:?}"))?;
    if !out.status.success() {
        bail!(
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// Fails unless we are root (namespaces, XDP and BPF_PROG_TEST_RUN need it).
pub fn require_root() {
    assert!(
        unsafe { libc::geteuid() } == 0,
        "this test needs root (namespaces, XDP); run it through `cargo xtask test`"
    );
}

/// A network namespace, deleted (with its processes) on drop.
pub struct Netns {
    pub name: String,
    children: Vec<Child>,
}

impl Netns {
    /// Creates `lbt<pid>-<n>-<tag>` with loopback up.
    pub fn new(tag: &str) -> Result<Netns> {
        let name = format!(
            "lbt{}-{}-{tag}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        sh(&["ip", "netns", "add", &name])?;
        let ns = Netns {
            name,
            children: Vec::new(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip -n NS ...`
    pub fn ip(&self, args: &[&str]) -> Result<Output> {
        let mut v = vec!["ip", "-n", &self.name];
        v.extend_from_slice(args);
        sh(&v)
    }

    /// Runs a command inside the namespace and waits for it.
    pub fn exec(&self, args: &[&str]) -> Result<Output> {
        let mut v = vec!["ip", "netns", "exec", &self.name];
        v.extend_from_slice(args);
        sh(&v)
    }

    /// Adds addresses ("10.0.0.1/24", "fd00::1/64": IPv6 without DAD, so
    /// they work at once) to `dev` and sets it up.
    pub fn addrs(&self, dev: &str, cidrs: &[&str]) -> Result<()> {
        for c in cidrs {
            if c.contains(':') {
                self.ip(&["-6", "addr", "add", c, "dev", dev, "nodad"])?;
            } else {
                self.ip(&["addr", "add", c, "dev", dev])?;
            }
        }
        self.ip(&["link", "set", dev, "up"]).map(|_| ())
    }

    /// Default routes via the given next hops (IPv4 and/or IPv6).
    pub fn default_via(&self, hops: &[&str]) -> Result<()> {
        for h in hops {
            let fam = if h.contains(':') { "-6" } else { "-4" };
            self.ip(&[fam, "route", "add", "default", "via", h])?;
        }
        Ok(())
    }

    pub fn sysctl(&self, key: &str, val: &str) -> Result<()> {
        self.exec(&["sysctl", "-qw", &format!("{key}={val}")])
            .map(|_| ())
    }

    /// Starts a process inside the namespace; it is killed on drop.
    pub fn spawn(&mut self, args: &[&str]) -> Result<&mut Child> {
        let child = self
            .command(args)
            .spawn()
            .with_context(|| format!("spawning {args:?}"))?;
        self.children.push(child);
        Ok(self.children.last_mut().expect("just pushed"))
    }

    /// A `Command` that runs inside the namespace (not tracked: the caller
    /// owns the child).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name])
            .args(args)
            .stdin(Stdio::null());
        c
    }

    /// An XDP program is attached to `dev` (as `ip link` shows it).
    pub fn xdp_attached(&self, dev: &str) -> bool {
        self.ip(&["link", "show", dev])
            .map(|o| String::from_utf8_lossy(&o.stdout).contains("xdp"))
            .unwrap_or(false)
    }

    /// Moves the calling thread into this namespace until the guard drops.
    pub fn enter(&self) -> Result<NetnsEnter> {
        let orig = File::open("/proc/thread-self/ns/net")?;
        let target = File::open(format!("/run/netns/{}", self.name))?;
        if unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns: {}", std::io::Error::last_os_error());
        }
        Ok(NetnsEnter { orig })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.kill_all();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

impl Netns {
    /// Kills every process in the namespace (e.g. a backend's servers).
    pub fn kill_all(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.children.clear();
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
    }
}

/// Restores the thread's original namespace on drop.
pub struct NetnsEnter {
    orig: File,
}

impl Drop for NetnsEnter {
    fn drop(&mut self) {
        unsafe { libc::setns(self.orig.as_raw_fd(), libc::CLONE_NEWNET) };
    }
}

/// Creates a veth pair with ends `a_dev` in `a` and `b_dev` in `b` (which
/// may be the same namespace). Deleted with its namespace.
pub fn veth(a: &Netns, a_dev: &str, b: &Netns, b_dev: &str) -> Result<()> {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let (ta, tb) = (
        format!("lbv{n}a{}", std::process::id() % 10000),
        format!("lbv{n}b{}", std::process::id() % 10000),
    );
    sh(&[
        "ip", "link", "add", &ta, "type", "veth", "peer", "name", &tb,
    ])?;
    let r = (|| {
        sh(&["ip", "link", "set", &ta, "netns", &a.name])?;
        sh(&["ip", "link", "set", &tb, "netns", &b.name])?;
        a.ip(&["link", "set", &ta, "name", a_dev])?;
        b.ip(&["link", "set", &tb, "name", b_dev])?;
        Ok(())
    })();
    if r.is_err() {
        let _ = Command::new("ip").args(["link", "del", &ta]).status();
    }
    r
}

/// Polls `f` until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sh_fails_with_stderr() {
        assert_eq!(sh(&["echo", "hi"]).unwrap().stdout, b"hi\n");
        let e = sh(&["sh", "-c", "echo oops >&2; exit 3"]).unwrap_err();
        assert!(e.to_string().contains("oops"), "{e}");
    }

    #[test]
    fn wait_until_polls_until_true_or_timeout() {
        let mut n = 0;
        assert!(wait_until(Duration::from_secs(5), || {
            n += 1;
            n == 3
        }));
        assert_eq!(n, 3);
        assert!(!wait_until(Duration::from_millis(120), || false));
    }
}
