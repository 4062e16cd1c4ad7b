//! Builds lb-ebpf for the BPF target with aya-build and leaves the object in
//! OUT_DIR. Without a BPF toolchain (bpf-linker, nightly rust-src) it writes an
//! empty stub so `cargo check`/`clippy` still work; `lb run` then refuses to
//! start with a clear message. `LB_REQUIRE_EBPF=1` (set by xtask) turns a
//! failed eBPF build into a build error instead.
use std::{env, fs, path::PathBuf};

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=LB_REQUIRE_EBPF");
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let ebpf_dir = root.join("../lb-ebpf").canonicalize()?;
    let ebpf_dir = ebpf_dir.to_str().expect("utf-8 path");
    let require = env::var("LB_REQUIRE_EBPF").is_ok_and(|v| v == "1");
    let pkg = aya_build::Package {
        name: "lb-ebpf",
        root_dir: ebpf_dir,
        ..Default::default()
    };
    match aya_build::build_ebpf([pkg], aya_build::Toolchain::default()) {
        Ok(()) => Ok(()),
        Err(e) if !require => {
            println!(
                "cargo:warning=eBPF object not built ({e:#}); `lb run` will refuse to start. \
                 Run `cargo xtask setup` to install the BPF toolchain."
            );
            fs::write(out.join("lb"), [])?;
            Ok(())
        }
        Err(e) => Err(e),
    }
}
