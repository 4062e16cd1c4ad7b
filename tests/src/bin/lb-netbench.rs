//! `cargo xtask bench` (network part): real traffic through the namespace
//! topology, comparing the proxy data plane with HAProxy (TCP mode, splice)
//! and with plain kernel forwarding, all measured in the same run. Medians
//! of repeats; a missing tool skips its comparison with a message.
use std::{
    collections::BTreeMap,
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context as _, Result};
use tests::{
    e2e::{self, Daemon, TempDir},
    netns::{wait_until, Netns},
    topo::{Topology, VIP_V4},
};

const SECS: u32 = 4;

/// One measurement of a test (a figure).
type Measure<'a> = Box<dyn Fn() -> Result<f64> + 'a>;
const REPEATS: usize = 3;

fn have(bin: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// CPU seconds (user + system) of a process so far.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let v = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 of stat (utime, stime) are 11 and 12 after ')'.
    (v(11) + v(12)) / tick
}

struct Backends {
    _children: Vec<Child>,
}

fn start_backends(topo: &Topology, dir: &Path) -> Result<Backends> {
    let mut children = Vec::new();
    for b in &topo.backends {
        let root = dir.join(&b.name);
        std::fs::create_dir_all(&root)?;
        std::fs::write(root.join("index.html"), format!("{}\n", b.name))?;
        let conf = root.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "worker_processes 1;\npid {pid};\nerror_log /dev/null;\nevents {{ worker_connections 4096; }}\nhttp {{\n access_log off;\n server {{ listen 8080; listen [::]:8080; root {root}; }}\n}}\n",
                pid = root.join("nginx.pid").display(),
                root = root.display()
            ),
        )?;
        children.push(
            b.ns.command(&["nginx", "-c", conf.to_str().unwrap(), "-g", "daemon off;"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        );
        children.push(
            b.ns.command(&["iperf3", "-s", "-p", "5201"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        );
        let ns = &b.ns;
        if !wait_until(Duration::from_secs(10), || {
            ns.exec(&["ss", "-ltn"])
                .map(|o| {
                    let t = String::from_utf8_lossy(&o.stdout).to_string();
                    t.contains(":8080 ") && t.contains(":5201 ")
                })
                .unwrap_or(false)
        }) {
            bail!("nginx/iperf3 did not start in {}", b.name);
        }
    }
    Ok(Backends {
        _children: children,
    })
}

/// A running load balancer (or none, for direct forwarding).
enum Path_ {
    Direct,
    Lb(Daemon),
    Haproxy(Child),
}

impl Path_ {
    fn pid(&self) -> Option<u32> {
        match self {
            Path_::Direct => None,
            Path_::Lb(d) => Some(d.child.id()),
            Path_::Haproxy(c) => Some(c.id()),
        }
    }
}

impl Drop for Path_ {
    fn drop(&mut self) {
        if let Path_::Haproxy(c) = self {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn lb_config(topo: &Topology, dataplane: &str) -> String {
    let mut s = format!(
        "[gateway]\ninterfaces = [{}]\nzone = \"a\"\ndataplane = \"{dataplane}\"\npin_path = \"{}\"\nadmin_socket = \"/run/{}.sock\"\n\n",
        topo.gw_interfaces().iter().map(|i| format!("{i:?}")).collect::<Vec<_>>().join(", "),
        topo.pin_path(),
        topo.gw.name
    );
    for (name, port, sticky) in [("web", 8080, "none"), ("iperf", 5201, "source_ip")] {
        let vport = if port == 8080 { 80 } else { 5201 };
        s += &format!("[[listener]]\nname = \"{name}\"\naddress = \"{VIP_V4}\"\nport = {vport}\nprotocol = \"tcp\"\ntarget_group = \"{name}\"\n\n");
        s += &format!(
            "[[target_group]]\nname = \"{name}\"\ncross_zone = true\nstickiness = \"{sticky}\"\n"
        );
        for b in &topo.backends {
            s += &format!(
                "[[target_group.targets]]\naddress = \"{}\"\nport = {port}\nzone = \"{}\"\n",
                b.v4, b.zone
            );
        }
        s += "\n";
    }
    s
}

fn haproxy(topo: &Topology, dir: &Path) -> Result<Child> {
    let mut c = String::from(
        "global\n  maxconn 4000\ndefaults\n  mode tcp\n  timeout connect 3s\n  timeout client 60s\n  timeout server 60s\n  option splice-auto\n",
    );
    for (name, vport, port, balance) in [
        ("web", 80, 8080, "roundrobin"),
        ("iperf", 5201, 5201, "source"),
    ] {
        c += &format!("frontend {name}\n  bind {VIP_V4}:{vport}\n  default_backend {name}_b\nbackend {name}_b\n  balance {balance}\n");
        for b in &topo.backends {
            c += &format!("  server {} {}:{port}\n", b.name, b.v4);
        }
    }
    let conf = dir.join("haproxy.cfg");
    std::fs::write(&conf, c)?;
    let child = topo
        .gw
        .command(&["haproxy", "-db", "-f", conf.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let gw = &topo.gw;
    if !wait_until(Duration::from_secs(10), || {
        gw.exec(&["ss", "-ltn"])
            .map(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("{VIP_V4}:80 ")))
            .unwrap_or(false)
    }) {
        bail!("haproxy did not start");
    }
    Ok(child)
}

fn iperf(client: &Netns, host: &str, streams: u32) -> Result<f64> {
    let out = client.exec(&[
        "iperf3",
        "-c",
        host,
        "-p",
        "5201",
        "-t",
        &SECS.to_string(),
        "-P",
        &streams.to_string(),
        "-J",
    ])?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("iperf3 json")?;
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .context("iperf3: no sum_received")
}

/// wrk: (requests/s, p50 ms, p99 ms).
fn wrk(client: &Netns, url: &str, conns: u32, close: bool) -> Result<(f64, f64, f64)> {
    let c = conns.to_string();
    let d = format!("{SECS}s");
    let mut args = vec!["wrk", "-t2", "-c", &c, "-d", &d, "--latency"];
    if close {
        args.extend(["-H", "Connection: close"]);
    }
    args.push(url);
    let out = client.exec(&args)?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let field = |prefix: &str| -> Option<f64> {
        let l = text.lines().find(|l| l.trim_start().starts_with(prefix))?;
        let v = l.split_whitespace().nth(1)?;
        let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len()));
        let n: f64 = num.parse().ok()?;
        Some(match unit {
            "us" => n / 1000.0,
            "s" => n * 1000.0,
            _ => n,
        })
    };
    let rps = field("Requests/sec:").context("wrk: no Requests/sec")?;
    Ok((
        rps,
        field("50%").unwrap_or(0.0),
        field("99%").unwrap_or(0.0),
    ))
}

fn main() -> Result<()> {
    let missing: Vec<&str> = ["iperf3", "wrk", "nginx"]
        .into_iter()
        .filter(|b| !have(b))
        .collect();
    if !missing.is_empty() {
        println!(
            "network benchmark skipped: {} not installed (cargo xtask setup installs them)",
            missing.join(", ")
        );
        return Ok(());
    }
    let topo = Topology::build(3)?;
    topo.gw
        .ip(&["addr", "add", &format!("{VIP_V4}/32"), "dev", "lo"])?;
    let dir = TempDir::new("netbench");
    let _backends = start_backends(&topo, &dir.0)?;
    let mut paths: Vec<&str> = vec!["direct", "proxy"];
    if have("haproxy") {
        paths.push("haproxy");
    } else {
        println!("haproxy not installed: that comparison is skipped");
    }
    // results[test][path] = (value, cpu seconds)
    let mut results: BTreeMap<String, BTreeMap<String, (f64, f64)>> = BTreeMap::new();
    for path in &paths {
        eprintln!("netbench: {path}");
        let p = match *path {
            "direct" => Path_::Direct,
            "proxy" => Path_::Lb(Daemon::start(&topo.gw, &dir.0, &lb_config(&topo, "proxy"))?),
            _ => Path_::Haproxy(haproxy(&topo, &dir.0)?),
        };
        // Direct: straight to one backend through the gateway's kernel.
        let host = if *path == "direct" {
            topo.backends[0].v4.clone()
        } else {
            VIP_V4.to_string()
        };
        let url = if *path == "direct" {
            format!("http://{host}:8080/")
        } else {
            format!("http://{host}/")
        };
        let tests: Vec<(&str, Measure)> = vec![
            (
                "iperf3 TCP 1 stream, Gbit/s",
                Box::new(|| Ok(iperf(&topo.client, &host, 1)? / 1e9)),
            ),
            (
                "iperf3 TCP 8 streams, Gbit/s",
                Box::new(|| Ok(iperf(&topo.client, &host, 8)? / 1e9)),
            ),
            (
                "wrk keep-alive -c64, req/s",
                Box::new(|| Ok(wrk(&topo.client, &url, 64, false)?.0)),
            ),
            (
                "wrk Connection: close -c32, req/s",
                Box::new(|| Ok(wrk(&topo.client, &url, 32, true)?.0)),
            ),
            (
                "wrk Connection: close -c32, p99 ms",
                Box::new(|| Ok(wrk(&topo.client, &url, 32, true)?.2)),
            ),
        ];
        for (name, f) in &tests {
            let mut vals = Vec::new();
            let mut cpus = Vec::new();
            for _ in 0..REPEATS {
                let c0 = p.pid().map(cpu_secs).unwrap_or(0.0);
                vals.push(f()?);
                cpus.push(p.pid().map(cpu_secs).unwrap_or(0.0) - c0);
            }
            results
                .entry(name.to_string())
                .or_default()
                .insert(path.to_string(), (median(vals), median(cpus)));
        }
        drop(p);
        let _ = std::fs::remove_dir_all(topo.pin_path());
    }
    println!("\nNetwork benchmark: client -> gateway -> 3 backends (namespaces, veth), {SECS}s runs, median of {REPEATS}");
    println!("| test | direct (kernel forwarding) | lb proxy | HAProxy 2.6 TCP splice | proxy / HAProxy | proxy CPU | HAProxy CPU |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, r) in &results {
        let g = |p: &str| r.get(p).copied();
        let fmt = |v: Option<(f64, f64)>| v.map(|(x, _)| format!("{x:.2}")).unwrap_or("-".into());
        let ratio = match (g("proxy"), g("haproxy")) {
            (Some((a, _)), Some((b, _))) if b > 0.0 => format!("{:.2}x", a / b),
            _ => "-".into(),
        };
        // CPU per unit of work, so a faster path is not charged for it.
        let cpu = |v: Option<(f64, f64)>| match v {
            Some((x, c)) if x > 0.0 && name.contains("Gbit/s") => {
                format!("{:.2} s/GB", c / (x * SECS as f64 / 8.0))
            }
            Some((x, c)) if x > 0.0 && name.contains("req/s") => {
                format!("{:.1} us/req", c / (x * SECS as f64) * 1e6)
            }
            Some((_, c)) => format!("{c:.2} s"),
            None => "-".into(),
        };
        println!(
            "| {name} | {} | {} | {} | {ratio} | {} | {} |",
            fmt(g("direct")),
            fmt(g("proxy")),
            fmt(g("haproxy")),
            cpu(g("proxy")),
            cpu(g("haproxy"))
        );
    }
    let json = serde_json::to_string_pretty(&results)?;
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("netbench.json"), json)?;
    println!("\n(results also in target/bench/netbench.json; CPU = user+system time of the balancer process, per GB moved or per request; the p99 row shows seconds per run)");
    let _ = e2e::bin;
    Ok(())
}
