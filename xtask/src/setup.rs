//! Toolchain bootstrap. Says what it installs; where it cannot install
//! (not root, not Debian), says exactly what to run.

use anyhow::{bail, Result};

use crate::util::{have, is_root, run_cmd, step};

pub const BPF_LINKER_VERSION: &str = "0.13";
const LLVM: &str = "llvm-22";

#[derive(Clone, Copy)]
pub struct Needs {
    /// nightly + rust-src + bpf-linker (building the XDP program).
    pub bpf: bool,
    /// ip, ethtool, ss (tests and the demo); bird (the scale-out tests);
    /// strace and systemd-analyze (the unit's syscall filter test), openssl
    /// (the HTTPS check test's TLS server).
    pub netns: bool,
    /// iperf3, wrk, nginx, haproxy (benchmarks).
    pub bench: bool,
}

impl Needs {
    pub const ALL: Needs = Needs {
        bpf: true,
        netns: true,
        bench: false,
    };
}

fn apt_install(pkgs: &[&str]) -> Result<()> {
    if !is_root() || !have("apt-get") {
        bail!(
            "missing packages {pkgs:?}; install them as root, e.g. `apt-get install -y {}`",
            pkgs.join(" ")
        );
    }
    step(&format!("installing Debian packages: {}", pkgs.join(" ")));
    // An old or missing package list makes apt-get find nothing.
    run_cmd("apt-get", &["update", "-qq"], &[])?;
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    args.extend_from_slice(pkgs);
    run_cmd("apt-get", &args, &[("DEBIAN_FRONTEND", "noninteractive")])
}

fn nightly_has_rust_src() -> bool {
    std::process::Command::new("rustup")
        .args(["component", "list", "--toolchain", "nightly", "--installed"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.starts_with("rust-src"))
        })
        .unwrap_or(false)
}

fn bpf_linker_ok() -> bool {
    std::process::Command::new("bpf-linker")
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout).contains(&format!("bpf-linker {BPF_LINKER_VERSION}"))
        })
        .unwrap_or(false)
}

pub fn setup(needs: Needs) -> Result<()> {
    if needs.bpf {
        if !have("rustup") {
            bail!("rustup not found: install Rust with rustup (https://rustup.rs), then `rustup toolchain install nightly`");
        }
        let nightly = std::process::Command::new("rustup")
            .args(["run", "nightly", "rustc", "--version"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !nightly {
            step("installing the nightly toolchain (the XDP program builds with it)");
            run_cmd(
                "rustup",
                &["toolchain", "install", "nightly", "--profile", "minimal"],
                &[],
            )?;
        }
        if !nightly_has_rust_src() {
            step("adding rust-src to nightly (needed for -Z build-std=core)");
            run_cmd(
                "rustup",
                &["component", "add", "rust-src", "--toolchain", "nightly"],
                &[],
            )?;
        }
        if !bpf_linker_ok() {
            let llvm_bin = format!("/usr/lib/{LLVM}/bin");
            if !std::path::Path::new(&llvm_bin).join("llvm-config").exists() {
                apt_install(&[&format!("{LLVM}-dev")])?;
            }
            step(&format!(
                "building bpf-linker {BPF_LINKER_VERSION} against {LLVM} (1-4 minutes)"
            ));
            let path = format!("{llvm_bin}:{}", std::env::var("PATH").unwrap_or_default());
            run_cmd(
                "cargo",
                &[
                    "install",
                    "bpf-linker",
                    "--locked",
                    "--version",
                    &format!("~{BPF_LINKER_VERSION}"),
                    "--no-default-features",
                    "--features",
                    LLVM,
                ],
                &[("PATH", &path)],
            )?;
        }
    }
    let mut pkgs = Vec::new();
    if needs.netns {
        for (bin, pkg) in [
            ("ip", "iproute2"),
            ("ethtool", "ethtool"),
            ("ss", "iproute2"),
            ("bird", "bird2"),
            ("strace", "strace"),
            ("systemd-analyze", "systemd"),
            ("openssl", "openssl"),
            ("curl", "curl"),
        ] {
            if !have(bin) && !pkgs.contains(&pkg) {
                pkgs.push(pkg);
            }
        }
    }
    if needs.bench {
        for (bin, pkg) in [
            ("iperf3", "iperf3"),
            ("wrk", "wrk"),
            ("nginx", "nginx-light"),
            ("haproxy", "haproxy"),
        ] {
            if !have(bin) {
                pkgs.push(pkg);
            }
        }
        // The chart's font (text is drawn from a TTF).
        if !std::path::Path::new("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf").exists() {
            pkgs.push("fonts-dejavu-core");
        }
    }
    if !pkgs.is_empty() {
        apt_install(&pkgs)?;
    }
    Ok(())
}
