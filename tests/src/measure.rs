//! What the benchmarks measure with: medians, a process's CPU time, and
//! wrk's figures.

use anyhow::{Context as _, Result};

use crate::{
    netns::Netns,
    topo::{Topology, VIP_V4},
};

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

pub fn tick() -> f64 {
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

/// CPU seconds (user + system) of a process so far.
pub fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let v = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    (v(11) + v(12)) / tick()
}

/// wrk in `client` for `secs`: (requests/s, p50 ms, p99 ms).
pub fn wrk(client: &Netns, url: &str, conns: u32, close: bool, secs: u32) -> Result<[f64; 3]> {
    let (c, d) = (conns.to_string(), format!("{secs}s"));
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
    Ok([
        field("Requests/sec:").with_context(|| format!("wrk: no Requests/sec: {text}"))?,
        field("50%").unwrap_or(0.0),
        field("99%").unwrap_or(0.0),
    ])
}

/// The benchmarks' topology (3 backends), the VIP an address of the
/// gateway, and the same hygiene for every path: tens of thousands of short
/// connections per run must not exhaust 4-tuples in TIME_WAIT (backends
/// keep none; the gateway's own connects may reuse them). wrk closes first
/// and keeps TIME_WAIT: without reuse its 28k ports last about 1.5s at 20k
/// conn/s, and every path (plain forwarding too) fell to about 1,000
/// conn/s in runs longer than that.
pub fn bench_topology() -> Result<Topology> {
    let topo = Topology::build(3)?;
    topo.gw
        .ip(&["addr", "add", &format!("{VIP_V4}/32"), "dev", "lo"])?;
    for b in &topo.backends {
        b.ns.sysctl("net.ipv4.tcp_max_tw_buckets", "0")?;
    }
    topo.gw.sysctl("net.ipv4.tcp_tw_reuse", "1")?;
    topo.client.sysctl("net.ipv4.tcp_tw_reuse", "1")?;
    topo.client
        .sysctl("net.ipv4.ip_local_port_range", "1024 65000")?;
    Ok(topo)
}
