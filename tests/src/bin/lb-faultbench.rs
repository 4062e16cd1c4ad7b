//! `cargo xtask bench` (fault part): a target killed under `Connection:
//! close` load, through native XDP, the proxy and HAProxy, with the same
//! active checks (every 1 s, 2 failures to go unhealthy, 2 passes back;
//! HAProxy `check inter 1s fall 2 rise 2`, `retries 3`, `option
//! redispatch`). Client-visible connection errors, connections delayed by
//! a SYN retransmission, and the failover time (kill to the last attempt
//! that failed or waited). One run each, in one process, same topology.
//! Writes target/bench/fault.{json,md}.
use std::{net::SocketAddr, path::PathBuf, process::Child, time::Duration};

use anyhow::{bail, Result};
use tests::{
    e2e::{self, Daemon, TempDir},
    load,
    netns::wait_until,
    topo::{Topology, VIP_V4, VIP_V6},
};

const HC: &str = "[target_group.health_check]\ninterval = \"1s\"\ntimeout = \"500ms\"\nhealthy_threshold = 2\nunhealthy_threshold = 2\n";
/// 5 s of attempts, one per 5 ms (200 conn/s), on 16 workers; the kill
/// after 1 s, so the active checks (about 2 s) act inside the window.
const ATTEMPTS: usize = 1000;
const EVERY: Duration = Duration::from_millis(5);
const KILL_AT: Duration = Duration::from_secs(1);
const SLOW: Duration = Duration::from_millis(900);
/// "XDP, checks only": passive health and redispatch off (as before them).
const PATHS: [&str; 4] = ["XDP native", "XDP, checks only", "proxy", "HAProxy"];

fn haproxy(topo: &Topology, dir: &std::path::Path) -> Result<Child> {
    let mut c = String::from(
        "global\n  maxconn 4000\ndefaults\n  mode tcp\n  timeout connect 3s\n  timeout client 10s\n  timeout server 10s\n  retries 3\n  option redispatch\nfrontend web\n  bind ",
    );
    c += &format!("{VIP_V4}:80\n  default_backend web_b\nbackend web_b\n  balance roundrobin\n");
    for b in &topo.backends {
        c += &format!(
            "  server {} {}:8080 check inter 1s fall 2 rise 2\n",
            b.name, b.v4
        );
    }
    tests::e2e::start_haproxy(
        &topo.gw,
        &dir.join("haproxy-fault.cfg"),
        &c,
        &format!("{VIP_V4}:80"),
    )
}

enum Running {
    Lb(#[allow(dead_code)] Daemon),
    Haproxy(Child),
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Running::Haproxy(c) = self {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[derive(serde::Serialize)]
struct Row {
    path: &'static str,
    attempts: usize,
    connection_errors: usize,
    other_errors: usize,
    delayed: usize,
    failover_ms: Option<u128>,
}

fn run(path: &'static str, topo: &mut Topology, dir: &std::path::Path) -> Result<Row> {
    let vip = SocketAddr::new(VIP_V4.parse()?, 80);
    e2e::serve_backends(topo, 8080)?;
    let cfg = match path {
        "XDP, checks only" => topo.config(&format!(
            "syn_redispatch = false\n[target_group.passive_health]\nenabled = false\n{HC}"
        )),
        _ => topo.config(HC),
    };
    let _running = match path {
        "XDP native" | "XDP, checks only" => Running::Lb(Daemon::start(
            &topo.gw,
            dir,
            &cfg.replacen("[gateway]\n", "[gateway]\ndataplane = \"xdp\"\n", 1),
        )?),
        "proxy" => Running::Lb(Daemon::start(
            &topo.gw,
            dir,
            &cfg.replacen("[gateway]\n", "[gateway]\ndataplane = \"proxy\"\n", 1),
        )?),
        _ => Running::Haproxy(haproxy(topo, dir)?),
    };
    // Every target serves before the fault.
    let _in = topo.client.enter()?;
    let all = wait_until(Duration::from_secs(10), || {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..30 {
            if let Ok(n) = e2e::tcp_exchange(vip, b"warm") {
                seen.insert(n);
            }
        }
        seen.len() == 3
    });
    drop(_in);
    if !all {
        bail!("{path}: not every target served before the fault");
    }
    let l = load::start(&topo.client.name, vip, ATTEMPTS, EVERY, 16);
    std::thread::sleep(KILL_AT.saturating_sub(l.start.elapsed()));
    topo.backends[1].ns.kill_all();
    let a = l.join();
    let o = load::outcome(&a, KILL_AT, SLOW);
    let connect = a
        .iter()
        .filter(|a| {
            a.result
                .as_ref()
                .err()
                .is_some_and(|e| e.starts_with("connect "))
        })
        .count();
    for b in &mut topo.backends {
        b.ns.kill_all();
    }
    Ok(Row {
        path,
        attempts: o.attempts,
        connection_errors: connect,
        other_errors: o.errors - connect,
        delayed: o.slow,
        failover_ms: o.noticed.map(|d| d.as_millis()),
    })
}

fn main() -> Result<()> {
    tests::netns::require_root();
    let mut topo = Topology::build(3)?;
    for v in [VIP_V4, VIP_V6] {
        // The proxy and HAProxy bind the VIPs.
        topo.gw.ip(&["addr", "add", v, "dev", "lo"])?;
    }
    let dir = TempDir::new("faultbench");
    let mut rows = Vec::new();
    let mut skipped = Vec::new();
    for path in PATHS {
        if path == "HAProxy" && !tests::e2e::have("haproxy") {
            skipped.push("HAProxy: not installed, comparison skipped".to_string());
            continue;
        }
        eprintln!("fault bench: {path}");
        match run(path, &mut topo, &dir.0) {
            Ok(r) => rows.push(r),
            Err(e) => skipped.push(format!("{path}: {e:#}")),
        }
    }
    let mut md = format!(
        "Target killed under `Connection: close` load: {ATTEMPTS} connections at one per {} ms from 16 workers, the target's process killed {} s in (its port then refuses). Active checks every 1 s, 2 failures / 2 passes, for all three (HAProxy: `check inter 1s fall 2 rise 2`, `retries 3`, `option redispatch`). Failover: from the kill to the start of the last connection that failed or waited for a SYN retransmission (> {} ms).\n\n| path | connection errors | other errors | delayed (SYN retry) | failover (ms) |\n|---|---:|---:|---:|---:|\n",
        EVERY.as_millis(),
        KILL_AT.as_secs(),
        SLOW.as_millis()
    );
    for r in &rows {
        md += &format!(
            "| {} | {} | {} | {} | {} |\n",
            r.path,
            r.connection_errors,
            r.other_errors,
            r.delayed,
            r.failover_ms.map_or("none".into(), |m| m.to_string())
        );
    }
    md += "\nOther errors: connections open or queued at the killed process when it died (lost behind any balancer).\n";
    for s in &skipped {
        md += &format!("\n{s}");
    }
    println!("\n{md}");
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&out)?;
    std::fs::write(out.join("fault.md"), &md)?;
    std::fs::write(out.join("fault.json"), serde_json::to_string_pretty(&rows)?)?;
    println!("wrote target/bench/fault.json, fault.md");
    Ok(())
}
