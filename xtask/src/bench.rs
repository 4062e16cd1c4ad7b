//! `cargo xtask bench`: runs the benchmark binaries of the test crate
//! (they own the fixture environment) in release mode.

use anyhow::{bail, Result};

use crate::{
    setup::{setup, Needs},
    util::{cargo, is_root, step},
};

pub fn run() -> Result<()> {
    setup(Needs {
        bpf: true,
        netns: true,
        bench: true,
    })?;
    if !is_root() {
        bail!("benchmarks need root (BPF_PROG_TEST_RUN): run `sudo -E cargo xtask bench`");
    }
    step("ns/packet of the XDP program (BPF_PROG_TEST_RUN with repeat)");
    cargo(&["run", "--release", "-p", "tests", "--bin", "lb-bench"])?;
    // Optional: perf is not one of the bench's packages (linux-perf must
    // match the kernel).
    let perf = std::process::Command::new("perf")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if perf {
        step("where a conntrack hit's time goes (perf cpu-clock samples by kernel symbol)");
        cargo(&[
            "run",
            "--release",
            "-p",
            "tests",
            "--bin",
            "lb-bench",
            "--",
            "--profile",
            "hit",
        ])?;
    } else {
        println!("perf not found: the conntrack hit's profile is skipped");
    }
    step("network: iperf3 and wrk through the proxy, HAProxy and plain forwarding");
    cargo(&["build", "--release", "-p", "tests", "--bins"])?;
    cargo(&["run", "--release", "-p", "tests", "--bin", "lb-netbench"])?;
    step("TLS: a TLS listener against HAProxy terminating TLS (handshakes/s, requests/s, bulk)");
    cargo(&["run", "--release", "-p", "tests", "--bin", "lb-tlsbench"])?;
    step("faults: a target killed under load, through XDP, the proxy and HAProxy");
    cargo(&["run", "--release", "-p", "tests", "--bin", "lb-faultbench"])
}
