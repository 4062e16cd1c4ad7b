//! `cargo xtask bench` (in-kernel part): ns/packet of the XDP program via
//! BPF_PROG_TEST_RUN with `repeat`, against a do-nothing XDP_PASS program
//! measured in the same run, plus Maglev build times. Medians of rounds.
use std::time::{Duration, Instant};

use lb_common::maglev::{self, MaglevTarget};
use tests::{
    fixture::{Env, CLIENT_MAC, GW_BK_MAC, GW_CL_MAC, XDP_REDIRECT},
    packet::{Spec, ACK, SYN},
};

const CONFIG: &str = r#"
[gateway]
zone = "a"
conntrack_size = 65536
snat_table_size = 65536

[[listener]]
name = "web"
address = "10.100.0.1"
port = 80
protocol = "tcp"
target_group = "web"

[[target_group]]
name = "web"
cross_zone = true
[[target_group.targets]]
address = "10.1.0.11"
port = 8080
[[target_group.targets]]
address = "10.1.0.12"
port = 8080
[[target_group.targets]]
address = "10.1.0.13"
port = 8080
"#;

const REPEAT: u32 = 200_000;
const ROUNDS: usize = 7;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn ns_per_packet(d: Duration) -> f64 {
    // The kernel reports the mean duration of one run.
    d.as_nanos() as f64
}

fn main() -> anyhow::Result<()> {
    let mut env = Env::new(CONFIG)?;
    let syn = Spec::new("10.0.0.2", 40000, "10.100.0.1", 80, SYN)
        .macs(CLIENT_MAC, GW_CL_MAC)
        .build();
    let ack = Spec::new("10.0.0.2", 40000, "10.100.0.1", 80, ACK)
        .macs(CLIENT_MAC, GW_CL_MAC)
        .build();
    let (a, _) = env.run(&syn)?;
    anyhow::ensure!(
        a == XDP_REDIRECT,
        "the benchmark packet is not forwarded (action {a})"
    );
    let (a, out) = env.run(&ack)?;
    anyhow::ensure!(a == XDP_REDIRECT);
    let target = format!("10.1.0.{}", out[14 + 19]);
    let reply = Spec::new(&target, 8080, "10.0.0.2", 40000, ACK)
        .macs([2, 0, 0, 0, 1, out[14 + 19]], GW_BK_MAC)
        .build();
    let (a, _) = env.run(&reply)?;
    anyhow::ensure!(a == XDP_REDIRECT, "the reply is not forwarded");

    let mut rows: Vec<(&str, Vec<f64>)> = vec![
        ("baseline: XDP_PASS program", vec![]),
        ("conntrack hit (client -> VIP)", vec![]),
        ("return path (target -> client, nat)", vec![]),
        ("new flow (ring lookup + conntrack insert)", vec![]),
    ];
    for _ in 0..ROUNDS {
        rows[0].1.push(ns_per_packet(env.run_pass(&ack, REPEAT)?));
        rows[1]
            .1
            .push(ns_per_packet(env.run_prog("lb_xdp", &ack, REPEAT)?.2));
        rows[2]
            .1
            .push(ns_per_packet(env.run_prog("lb_xdp", &reply, REPEAT)?.2));
        // A zero TCP timeout turns every packet into a new flow.
        let mut g = env.model.globals;
        g.tcp_timeout_s = 0;
        env.dp.maps.globals.set(0, g, 0)?;
        rows[3]
            .1
            .push(ns_per_packet(env.run_prog("lb_xdp", &ack, REPEAT)?.2));
        env.dp.maps.globals.set(0, env.model.globals, 0)?;
    }
    let base = median(rows[0].1.clone());
    println!("\nXDP program cost, BPF_PROG_TEST_RUN, repeat {REPEAT}, median of {ROUNDS} rounds");
    println!("| path | ns/packet | ratio to baseline |");
    println!("|---|---:|---:|");
    let mut hit = 0.0;
    for (name, v) in &rows {
        let m = median(v.clone());
        if name.starts_with("conntrack hit") {
            hit = m;
        }
        println!("| {name} | {m:.1} | {:.2}x |", m / base);
    }
    let budget = 1.5 * base + 40.0;
    println!(
        "\nconntrack hit {hit:.1} ns vs target 1.5 x baseline + 40 ns = {budget:.1} ns: {}",
        if hit <= budget { "met" } else { "NOT met" }
    );

    println!("\nMaglev table build (M = 65537)");
    println!("| targets | ms |");
    println!("|---:|---:|");
    for n in [10u32, 100, 1000] {
        let ts: Vec<MaglevTarget> = (0..n)
            .map(|i| MaglevTarget {
                addr: [(0x0a00_0000u32 + i).to_be(), 0, 0, 0],
                port: 80u16.to_be(),
                family: 4,
                id: i + 1,
                weight: 1,
            })
            .collect();
        let mut v = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            std::hint::black_box(maglev::build(&ts, 65537));
            v.push(t.elapsed().as_secs_f64() * 1e3);
        }
        println!("| {n} | {:.2} |", median(v));
    }
    Ok(())
}
