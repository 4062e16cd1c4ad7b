//! Small helpers: commands, steps, the test and lint sequences.

use std::process::Command;

use anyhow::{bail, Context as _, Result};

use crate::setup::{setup, Needs};

pub fn step(msg: &str) {
    eprintln!("\x1b[1mxtask:\x1b[0m {msg}");
}

pub fn have(bin: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false)
}

pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

pub fn run_cmd(prog: &str, args: &[&str], env: &[(&str, &str)]) -> Result<()> {
    let mut c = Command::new(prog);
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let st = c.status().with_context(|| format!("running {prog}"))?;
    if !st.success() {
        bail!("`{prog} {}` failed ({st})", args.join(" "));
    }
    Ok(())
}

/// cargo with the eBPF build made mandatory (no silent stub).
pub fn cargo(args: &[&str]) -> Result<()> {
    run_cmd("cargo", args, &[("LB_REQUIRE_EBPF", "1")])
}

/// Totals of cargo's "test result:" lines.
#[derive(Default)]
struct Tally {
    passed: u64,
    failed: u64,
}

/// Runs `cargo test ...`, echoing its output and adding up its results.
fn cargo_test(args: &[&str], tally: &mut Tally) -> Result<()> {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new("cargo")
        .args(args)
        .env("LB_REQUIRE_EBPF", "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running cargo test")?;
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            let num = |word: &str| -> u64 {
                rest.split([';', '.'])
                    .find_map(|p| {
                        p.trim()
                            .strip_suffix(word)
                            .and_then(|n| n.trim().parse().ok())
                    })
                    .unwrap_or(0)
            };
            tally.passed += num("passed");
            tally.failed += num("failed");
        }
    }
    let st = child.wait()?;
    if !st.success() {
        bail!("`cargo {}` failed ({st})", args.join(" "));
    }
    Ok(())
}

pub fn test(filter: Option<&str>) -> Result<()> {
    setup(Needs::ALL)?;
    step("building (the XDP program is built by lb-userspace/build.rs)");
    cargo(&["build", "--all-targets"])?;
    let mut tally = Tally::default();
    step("host unit tests");
    // Everything but lb-ebpf (a BPF-target crate) and the root tests.
    let host = [
        "test",
        "--workspace",
        "--exclude",
        "lb-ebpf",
        "--exclude",
        "tests",
    ];
    let r = cargo_test(&host, &mut tally).and_then(|()| {
        if !is_root() {
            bail!("the fixture and namespace tests need root (BPF_PROG_TEST_RUN, XDP, netns): run `sudo -E cargo xtask test`");
        }
        step("root tests, serially: BPF_PROG_TEST_RUN fixtures and network namespaces");
        let mut args = vec!["test", "-p", "tests", "--", "--test-threads=1"];
        if let Some(f) = filter {
            args.push(f);
        }
        cargo_test(&args, &mut tally)
    });
    // One plain closing line over every test binary.
    println!("tests: {} passed, {} failed", tally.passed, tally.failed);
    r
}

pub fn lint() -> Result<()> {
    setup(Needs {
        bpf: true,
        netns: false,
        bench: false,
    })?;
    step("cargo fmt --check");
    cargo(&["fmt", "--all", "--", "--check"])?;
    step("clippy (host crates)");
    cargo(&[
        "clippy",
        "--workspace",
        "--exclude",
        "lb-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    step("clippy (eBPF crate, nightly)");
    run_cmd(
        "cargo",
        &[
            "+nightly",
            "clippy",
            "-p",
            "lb-ebpf",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )
}
