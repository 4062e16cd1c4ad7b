//! Builds lb-ebpf for the BPF target and leaves the object in OUT_DIR. Without
//! a BPF toolchain (bpf-linker, nightly rust-src) it writes an empty stub so
//! `cargo check`/`clippy` still work; `lb run` then refuses to start with a
//! clear message. `LB_REQUIRE_EBPF=1` (set by xtask) turns a failed eBPF build
//! into a build error instead.
//!
//! This runs the same inner cargo as `aya_build::build_ebpf` (aya-build 0.2.0:
//! same toolchain, arguments, RUSTFLAGS and target directory), but
//! `aya_build` relays every line of the inner cargo's stderr as a
//! `cargo:warning`, so each build printed the eBPF crates' `Compiling` lines
//! as warnings. Here the output is captured and only rustc/cargo diagnostics
//! (`warning:`/`error:` and their context lines) are relayed; a failed build
//! prints its full log.
use std::{
    env,
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{anyhow, Context as _};

/// The inner package and its binary target, whose object `lb-userspace`
/// includes as `$OUT_DIR/lb`.
const EBPF_PACKAGE: &str = "lb-ebpf";
const EBPF_BIN: &str = "lb";
/// The rustup toolchain aya-build uses by default (`Toolchain::Nightly`).
const TOOLCHAIN: &str = "nightly";

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=LB_REQUIRE_EBPF");
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let ebpf_dir = root.join("../lb-ebpf").canonicalize()?;
    let common_dir = root.join("../lb-common").canonicalize()?;
    // The build-dependency on lb-ebpf reruns us when its library or lb-common
    // change; these cover its binary (src/main.rs) too, as aya-build does.
    println!("cargo:rerun-if-changed={}", ebpf_dir.display());
    println!("cargo:rerun-if-changed={}", common_dir.display());
    let require = env::var("LB_REQUIRE_EBPF").is_ok_and(|v| v == "1");
    let object = out.join(EBPF_BIN);

    if env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
        println!("cargo:warning=AYA_BUILD_SKIP is set; skipping the eBPF build");
        if !object.exists() {
            fs::write(&object, [])?;
        }
        return Ok(());
    }

    match build_ebpf(&out) {
        Ok(diagnostics) => {
            for line in diagnostics {
                println!("cargo:warning={line}");
            }
            Ok(())
        }
        Err(failure) => {
            // Shown by cargo when the build script fails, and with `-vv`.
            if !failure.log.is_empty() {
                eprintln!("{}", failure.log.trim_end());
            }
            if require {
                // Not `Err` from main: that would add a backtrace under RUST_BACKTRACE.
                eprintln!(
                    "error: eBPF build failed (full log above): {:#}",
                    failure.error
                );
                std::process::exit(1);
            }
            println!(
                "cargo:warning=eBPF object not built ({:#}); `lb run` will refuse to start. \
                 Run `cargo xtask setup` to install the BPF toolchain; \
                 `LB_REQUIRE_EBPF=1` or `-vv` shows the full log.",
                failure.error
            );
            fs::write(&object, [])?;
            Ok(())
        }
    }
}

struct Failure {
    error: anyhow::Error,
    /// Everything the failed command printed, for the build script's stderr.
    log: String,
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Failure {
            error,
            log: String::new(),
        }
    }
}

/// Builds the eBPF binary into `out/lb`; returns the diagnostics to relay
/// (empty on a clean build).
fn build_ebpf(out: &Path) -> Result<Vec<String>, Failure> {
    let endian = env::var("CARGO_CFG_TARGET_ENDIAN").context("CARGO_CFG_TARGET_ENDIAN")?;
    let target = match endian.as_str() {
        "little" => "bpfel-unknown-none",
        "big" => "bpfeb-unknown-none",
        other => return Err(anyhow!("unsupported endian={other}").into()),
    };
    let arch = env::var("CARGO_CFG_TARGET_ARCH").context("CARGO_CFG_TARGET_ARCH")?;
    let arch = if arch.starts_with("riscv64") {
        "riscv64"
    } else {
        &arch
    };

    // `rustup run nightly <program>`, or the current toolchain without rustup.
    let rustup = find_in_path("rustup");
    let tool = |program: &str| match &rustup {
        Some(rustup) => {
            let mut cmd = Command::new(rustup);
            cmd.args(["run", TOOLCHAIN, program]);
            cmd
        }
        None => Command::new(program),
    };
    let toolchain = if rustup.is_some() {
        format!("the {TOOLCHAIN} toolchain")
    } else {
        "the current toolchain (rustup not found)".to_string()
    };

    let mut rustc = tool("rustc");
    rustc.arg("-vV");
    let version = run(&mut rustc, "rustc -vV").map_err(|mut f| {
        f.error = f.error.context(format!("rustc of {toolchain}"));
        f
    })?;
    let nightly = version
        .lines()
        .find_map(|l| l.strip_prefix("release: "))
        .is_some_and(|release| release.trim().ends_with("-nightly"));
    // RUSTC_BOOTSTRAP decides whether -Z flags are available, as in aya-build.
    let build_std = match env::var_os("RUSTC_BOOTSTRAP") {
        Some(v) if v == "1" || v == EBPF_PACKAGE => true,
        Some(v) if v == "-1" => false,
        _ => nightly,
    };

    let target_dir = out.join("aya-build").join("target").join(EBPF_PACKAGE);
    let mut cargo = tool("cargo");
    cargo
        .args(["build", "--package", EBPF_PACKAGE, "--bins", "--release"])
        .args(["--target", target, "--color", "never"]);
    if build_std {
        cargo.args(["-Z", "build-std=core"]);
    }
    cargo.arg("--target-dir").arg(&target_dir);
    let mut rustflags = OsString::new();
    for flag in [
        &format!("--cfg=bpf_target_arch=\"{arch}\""),
        "-Cdebuginfo=2",
        "-Clink-arg=--btf",
    ] {
        if !rustflags.is_empty() {
            rustflags.push("\x1f");
        }
        rustflags.push(flag);
    }
    cargo.env("CARGO_ENCODED_RUSTFLAGS", rustflags);
    // Make sure the toolchain's own rustc is used.
    cargo
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER");

    let log = run(&mut cargo, "cargo build").map_err(|mut f| {
        f.error = f
            .error
            .context(format!("building {EBPF_PACKAGE} with {toolchain}"));
        f
    })?;

    let binary = target_dir.join(target).join("release").join(EBPF_BIN);
    let dst = out.join(EBPF_BIN);
    fs::copy(&binary, &dst)
        .with_context(|| format!("copying {} to {}", binary.display(), dst.display()))?;
    Ok(diagnostics(&log))
}

/// Runs `cmd` (`name` in messages); its stdout and stderr together on success.
fn run(cmd: &mut Command, name: &str) -> Result<String, Failure> {
    let output = cmd
        .output()
        .with_context(|| format!("failed to run {cmd:?}"))?;
    let mut log = String::from_utf8_lossy(&output.stdout).into_owned();
    log.push_str(&String::from_utf8_lossy(&output.stderr));
    if output.status.success() {
        return Ok(log);
    }
    log.insert_str(0, &format!("$ {cmd:?}\n"));
    // The first error line says what is missing (linker, rust-src, toolchain).
    let reason = log
        .lines()
        .find(|l| l.starts_with("error"))
        .map(|l| format!(": {}", l.trim()))
        .unwrap_or_default();
    Err(Failure {
        error: anyhow!("`{name}` failed ({}){reason}", output.status),
        log,
    })
}

/// The diagnostics in cargo's human-readable output: each block starts with a
/// `warning`/`error` line and runs to the next blank line or cargo status line
/// (`   Compiling ...`, `    Finished ...`), which are dropped.
fn diagnostics(log: &str) -> Vec<String> {
    let mut kept = Vec::new();
    let mut in_block = false;
    for line in log.lines() {
        if line.starts_with("warning") || line.starts_with("error") {
            in_block = true;
        } else if line.trim().is_empty() || is_status(line) {
            in_block = false;
        }
        if in_block {
            kept.push(line.to_string());
        }
    }
    kept
}

/// A cargo status line: a capitalised word right-aligned in 12 columns.
fn is_status(line: &str) -> bool {
    let Some((head, _)) = line.split_at_checked(12) else {
        return false;
    };
    let word = head.trim_start();
    line.as_bytes().get(12) == Some(&b' ')
        && word.starts_with(|c: char| c.is_ascii_uppercase())
        && word.chars().all(|c| c.is_ascii_alphabetic())
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    env::split_paths(&env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}
