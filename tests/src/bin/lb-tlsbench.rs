//! `cargo xtask bench` (TLS part): a TLS listener of `lb` (rustls, in the
//! proxy beside XDP) against HAProxy terminating TLS with the same
//! certificate (ECDSA P-256) on the same topology, in one run: handshakes/s
//! (wrk, `Connection: close`), keep-alive requests/s, and one bulk download
//! (curl), each with the terminating process's CPU time. nginx serves the
//! targets. Medians of repeats. Writes target/bench/tls.md.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context as _, Result};
use tests::{
    e2e::{have, Daemon, TempDir},
    measure::{cpu_secs, median, wrk},
    netns::{wait_until, Netns},
    topo::{Topology, VIP_V4},
};

const SECS: u32 = 3;
const REPEATS: usize = 5;
/// The bulk download's size.
const BIG_MB: u64 = 256;
const PATHS: [&str; 2] = ["lb (rustls)", "HAProxy (OpenSSL)"];

fn nginx(topo: &Topology, dir: &Path) -> Result<Vec<Child>> {
    let mut out = Vec::new();
    for b in &topo.backends {
        let root = dir.join(&b.name);
        std::fs::create_dir_all(&root)?;
        std::fs::write(root.join("index.html"), format!("{}\n", b.name))?;
        let big = std::fs::File::create(root.join("big.bin"))?;
        big.set_len(BIG_MB << 20)?;
        let conf = root.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "worker_processes 1;\npid {pid};\nerror_log /dev/null;\nevents {{ worker_connections 4096; }}\nhttp {{\n access_log off;\n sendfile on;\n server {{ listen 8080; root {root}; }}\n}}\n",
                pid = root.join("nginx.pid").display(),
                root = root.display()
            ),
        )?;
        out.push(
            b.ns.command(&["nginx", "-c", conf.to_str().unwrap(), "-g", "daemon off;"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        );
        let ns = &b.ns;
        if !wait_until(Duration::from_secs(10), || listening(ns, 8080)) {
            bail!("nginx did not start in {}", b.name);
        }
    }
    Ok(out)
}

fn listening(ns: &Netns, port: u16) -> bool {
    ns.exec(&["ss", "-ltn"])
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(&format!(":{port} ")))
        .unwrap_or(false)
}

fn lb_config(topo: &Topology, dir: &Path) -> String {
    let mut s = format!(
        "[gateway]\ninterfaces = [{}]\nzone = \"a\"\npin_path = \"{}\"\nadmin_socket = \"/run/{}.sock\"\nstate_dir = \"{}\"\n\n",
        topo.gw_interfaces().iter().map(|i| format!("{i:?}")).collect::<Vec<_>>().join(", "),
        topo.pin_path(),
        topo.gw.name,
        topo.state_dir(),
    );
    s += &format!(
        "[[listener]]\nname = \"tls\"\naddress = \"{VIP_V4}\"\nport = 443\nprotocol = \"tls\"\ntarget_group = \"web\"\ncertificates = [{{ cert = \"{d}/bench.crt\", key = \"{d}/bench.key\" }}]\n\n[[target_group]]\nname = \"web\"\ncross_zone = true\n",
        d = dir.display()
    );
    s + &topo.targets(false, 8080)
}

fn haproxy(topo: &Topology, dir: &Path) -> Result<Child> {
    let pem = dir.join("bench.pem");
    let mut both = std::fs::read(dir.join("bench.crt"))?;
    both.extend(std::fs::read(dir.join("bench.key"))?);
    std::fs::write(&pem, both)?;
    let mut c = format!(
        "global\n  maxconn 8000\n  nbthread {}\ndefaults\n  mode tcp\n  timeout connect 3s\n  timeout client 60s\n  timeout server 60s\nfrontend tls\n  bind {VIP_V4}:443 ssl crt {} ssl-min-ver TLSv1.2\n  default_backend web\nbackend web\n  balance roundrobin\n",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        pem.display()
    );
    for b in &topo.backends {
        c += &format!("  server {} {}:8080\n", b.name, b.v4);
    }
    tests::e2e::start_haproxy(
        &topo.gw,
        &dir.join("haproxy.cfg"),
        &c,
        &format!("{VIP_V4}:443"),
    )
}

/// The negotiated version and cipher (to show both paths use the same).
fn negotiated(client: &Netns) -> String {
    let connect = format!("{VIP_V4}:443");
    let out = client
        .command(&["timeout", "5", "openssl", "s_client", "-connect", &connect])
        .stdin(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.lines()
        .find(|l| l.starts_with("New, "))
        .unwrap_or("?")
        .trim_start_matches("New, ")
        .to_string()
}

/// One bulk download through the listener: Gbit/s.
fn bulk(client: &Netns) -> Result<f64> {
    let url = format!("https://{VIP_V4}/big.bin");
    let out = client.exec(&[
        "curl",
        "-sk",
        "--max-time",
        "60",
        "-o",
        "/dev/null",
        "-w",
        "%{speed_download}",
        &url,
    ])?;
    let bps: f64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("curl speed")?;
    Ok(bps * 8.0 / 1e9)
}

fn main() -> Result<()> {
    let missing: Vec<&str> = ["wrk", "nginx", "curl", "openssl"]
        .into_iter()
        .filter(|b| !have(b))
        .collect();
    if !missing.is_empty() {
        println!(
            "TLS benchmark skipped: {} not installed",
            missing.join(", ")
        );
        return Ok(());
    }
    let topo = tests::measure::bench_topology()?;
    let dir = TempDir::new("tlsbench");
    tests::e2e::self_signed(&dir.0, "bench", "bench.example")?;
    let _nginx = nginx(&topo, &dir.0)?;
    let url = format!("https://{VIP_V4}/");
    // figure -> path -> (median value, median CPU s of the terminating process)
    let mut figures: BTreeMap<&str, BTreeMap<&str, (f64, f64)>> = BTreeMap::new();
    let mut ciphers = BTreeMap::new();
    for path in PATHS {
        if path.starts_with("HAProxy") && !have("haproxy") {
            println!("HAProxy: not installed, comparison skipped");
            continue;
        }
        eprintln!("tls bench: {path}");
        let (mut lb, mut hap) = (None, None);
        let pid = if path.starts_with("lb") {
            let d = Daemon::start(&topo.gw, &dir.0, &lb_config(&topo, &dir.0))?;
            let pid = d.child.id();
            lb = Some(d);
            pid
        } else {
            let c = haproxy(&topo, &dir.0)?;
            let pid = c.id();
            hap = Some(c);
            pid
        };
        if !wait_until(Duration::from_secs(10), || listening(&topo.gw, 443)) {
            bail!("{path}: nothing listens on 443");
        }
        ciphers.insert(path, negotiated(&topo.client));
        type Run<'a> = Box<dyn Fn() -> Result<f64> + 'a>;
        let runs: [(&str, Run); 3] = [
            (
                "TLS handshakes/s (wrk -c32, Connection: close)",
                Box::new(|| Ok(wrk(&topo.client, &url, 32, true, SECS)?[0])),
            ),
            (
                "HTTPS keep-alive requests/s (wrk -c64)",
                Box::new(|| Ok(wrk(&topo.client, &url, 64, false, SECS)?[0])),
            ),
            (
                "bulk download, 1 stream (Gbit/s, curl)",
                Box::new(|| bulk(&topo.client)),
            ),
        ];
        for (name, run) in &runs {
            let (mut v, mut cpu) = (Vec::new(), Vec::new());
            for _ in 0..REPEATS {
                let c0 = cpu_secs(pid);
                match run() {
                    Ok(x) => v.push(x),
                    Err(e) => eprintln!("tls bench: {path} {name}: {e:#}"),
                }
                cpu.push(cpu_secs(pid) - c0);
            }
            eprintln!("tls bench:   {name}: {v:.1?}");
            if !v.is_empty() {
                figures
                    .entry(name)
                    .or_default()
                    .insert(path, (median(v), median(cpu)));
            }
        }
        if let Some(mut c) = hap {
            let _ = c.kill();
            let _ = c.wait();
        }
        drop(lb);
        let _ = std::fs::remove_dir_all(topo.pin_path());
    }
    report(&figures, &ciphers)
}

fn report(
    figures: &BTreeMap<&str, BTreeMap<&str, (f64, f64)>>,
    ciphers: &BTreeMap<&str, String>,
) -> Result<()> {
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let mut md = format!(
        "TLS benchmark {date}, {} CPUs: client -> gateway (TLS terminated) -> 3 nginx targets, {SECS}s runs, median of {REPEATS}. Ratios are lb / HAProxy in the same run; CPU is the terminating process's user+system seconds per run (wrk runs last the same time; a bulk run moves the same 256 MiB).\n\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for (p, c) in ciphers {
        md += &format!("* {p}: {c}\n");
    }
    md += &format!(
        "\n| figure | {} | ratio | CPU s per run ({}) |\n|---|---:|---:|---:|---:|\n",
        PATHS.join(" | "),
        PATHS.map(|p| p.split(' ').next().unwrap_or(p)).join(" / ")
    );
    for (name, by) in figures {
        let get = |p: &str| by.get(p).copied();
        let (a, b) = (get(PATHS[0]), get(PATHS[1]));
        let cell = |x: Option<(f64, f64)>| x.map_or("-".into(), |v| format!("{:.1}", v.0));
        let ratio = match (a, b) {
            (Some(a), Some(b)) if b.0 > 0.0 => format!("{:.2}x", a.0 / b.0),
            _ => "-".into(),
        };
        let cpu = format!(
            "{} / {}",
            a.map_or("-".into(), |v| format!("{:.2}", v.1)),
            b.map_or("-".into(), |v| format!("{:.2}", v.1))
        );
        md += &format!("| {name} | {} | {} | {ratio} | {cpu} |\n", cell(a), cell(b));
    }
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("tls.md"), &md)?;
    println!("{md}");
    Ok(())
}
