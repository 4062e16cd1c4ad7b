//! Orchestration: `cargo xtask setup | test | lint | run | bench`.
//! Kept light (no aya) so it builds on a machine without the BPF toolchain
//! and can install it.

mod bench;
mod demo;
mod setup;
mod util;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "xtask",
    about = "Build, test, run and benchmark the load balancer"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what is missing: nightly rust-src, llvm-22-dev, bpf-linker,
    /// and the tools the tests and the demo use.
    Setup,
    /// Host unit tests, then the root tests (BPF_PROG_TEST_RUN fixtures and
    /// network-namespace runs), serially.
    Test {
        /// Extra filter passed to the root tests.
        filter: Option<String>,
    },
    /// rustfmt check and clippy for the host crates and the eBPF crate.
    Lint,
    /// Demo: client, gateway and three backends in namespaces, `lb run` in
    /// the gateway; Ctrl-C removes everything.
    Run {
        /// Send a few requests, check the answers and exit (for CI).
        #[arg(long)]
        smoke: bool,
    },
    /// Benchmarks (ns/packet of the XDP program against an XDP_PASS
    /// baseline measured in the same run).
    Bench,
}

/// `cargo install` puts bpf-linker in cargo's bin directory; make sure
/// every child (and aya-build's nested cargo) finds it.
fn cargo_bin_on_path() {
    let home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cargo")));
    let Some(bin) = home.map(|h| h.join("bin")) else {
        return;
    };
    let path = std::env::var_os("PATH").unwrap_or_default();
    if !std::env::split_paths(&path).any(|p| p == bin) {
        let mut v = vec![bin];
        v.extend(std::env::split_paths(&path));
        if let Ok(joined) = std::env::join_paths(v) {
            std::env::set_var("PATH", joined);
        }
    }
}

fn main() -> std::process::ExitCode {
    cargo_bin_on_path();
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Setup => setup::setup(setup::Needs::ALL),
        Cmd::Test { filter } => util::test(filter.as_deref()),
        Cmd::Lint => util::lint(),
        Cmd::Run { smoke } => demo::run(smoke),
        Cmd::Bench => bench::run(),
    };
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
