//! `cargo xtask bench` (in-kernel part): ns/packet of the XDP program via
//! BPF_PROG_TEST_RUN, against a do-nothing XDP_PASS program measured in the
//! same run, plus Maglev build times. `LB_BENCH_OBJECT=<file>` measures
//! another build of the program beside this one (an A/B in one run);
//! `--profile hit|reply|notvip` shows where one path's time goes.
//!
//! With `repeat`, the kernel runs the program again on the buffer that the
//! previous run rewrote. So the forwarding paths are measured on a VIP whose
//! only target is the VIP's own address and port: the rewrite is an identity
//! doing the full work (conntrack hit, FIB lookup, checksum updates,
//! redirect), and the next run sees the same flow again. TTL 255 leaves
//! room for REPEAT runs.
use std::time::{Duration, Instant};

use lb_common::maglev::{self, MaglevTarget};
use tests::{
    fixture::{Env, CLIENT_MAC, GW_BK_MAC, GW_CL_MAC, XDP_REDIRECT},
    packet::{raw_frame, Spec, ACK, SYN},
};

const CONFIG: &str = r#"
[gateway]
interfaces = ["cl", "bk"]
zone = "a"
conntrack_size = 65536
snat_table_size = 65536

[[listener]]
name = "bench"
address = "10.100.0.1"
port = 80
protocol = "tcp"
target_group = "self"

[[target_group]]
name = "self"
cross_zone = true
[[target_group.targets]]
address = "10.100.0.1"
port = 80
"#;

const REPEAT: u32 = 200;
const CALLS: usize = 400;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Prints and keeps a line for target/bench/xdp-nspacket.md.
macro_rules! out {
    ($buf:expr, $($t:tt)*) => {{
        let line = format!($($t)*);
        println!("{line}");
        $buf.push_str(&line);
        $buf.push('\n');
    }};
}

/// Row names, in the order `Bench::sample` measures them.
const ROWS: [&str; 11] = [
    "baseline: XDP_PASS program",
    "conntrack hit (client -> VIP)",
    "return path (target -> client, nat)",
    "return path, reply_source_check = false",
    "new flow (SYN: ring lookup + conntrack insert)",
    "ACK without a flow (ring lookup, untracked)",
    "not for a VIP (to port 80, a VIP port): XDP_PASS",
    "the same, its address's filter slot set (as without the filter)",
    "not a reply (from port 80, a target port): XDP_PASS",
    "the same, its address's filter slot set (as without the filter)",
    "not IP (ARP): XDP_PASS",
];

/// The conntrack hit's row in `ROWS` (the one the budget is for).
const ROW_HIT: usize = 1;

/// One loaded program with the bench's VIP, its packets and its globals.
struct Bench {
    env: Env,
    syn: Vec<u8>,
    ack: Vec<u8>,
    reply: Vec<u8>,
    other: Vec<u8>,
    from_other: Vec<u8>,
    arp: Vec<u8>,
    other_slot: u32,
    fresh: lb_common::Globals,
    stale: lb_common::Globals,
    unchecked: lb_common::Globals,
}

impl Bench {
    fn new(object: Option<&[u8]>) -> anyhow::Result<Bench> {
        // Not validated: a VIP that is its own target is refused by `lb
        // check`, and is what lets the kernel rerun the rewritten packet.
        let mut env = Env::with_object(toml::from_str(CONFIG)?, object)?;
        // The identity target is reached through the backend-side interface.
        env.ns.ip(&["route", "add", "10.100.0.1/32", "dev", "bk"])?;
        env.ns.ip(&[
            "neigh",
            "replace",
            "10.100.0.1",
            "lladdr",
            "02:00:00:00:01:64",
            "dev",
            "bk",
            "nud",
            "permanent",
        ])?;
        let spec = |sport: u16, l4| {
            let mut s =
                Spec::new("10.0.0.2", sport, "10.100.0.1", 80, l4).macs(CLIENT_MAC, GW_CL_MAC);
            s.ttl = 255;
            s
        };
        let syn = spec(40000, SYN).build();
        let ack = spec(40000, ACK).build();
        let mut r = Spec::new("10.100.0.1", 80, "10.0.0.2", 40000, ACK)
            .macs([2, 0, 0, 0, 1, 100], GW_BK_MAC);
        r.ttl = 255;
        let reply = r.build();
        let other = Spec {
            dst: "10.9.9.9".parse()?,
            ..spec(40000, ACK)
        }
        .build();
        // Ordinary traffic: a web server's reply to a host behind the gateway.
        let mut f = Spec::new("10.9.9.9", 80, "10.0.0.2", 40000, ACK).macs(CLIENT_MAC, GW_CL_MAC);
        f.ttl = 255;
        let from_other = f.build();
        let slot = |a: &str| -> anyhow::Result<u32> {
            let (w, _) = lb_userspace::model::addr_words(a.parse()?);
            Ok(lb_common::addr_slot(&w))
        };
        let other_slot = slot("10.9.9.9")?;
        anyhow::ensure!(
            other_slot != slot("10.100.0.1")?,
            "the bench's non-VIP address shares the VIP's filter slot"
        );
        // The identity target's reply arrives on the target side.
        for (what, p, dev) in [
            ("flow", &syn, "cl"),
            ("hit", &ack, "cl"),
            ("reply", &reply, "bk"),
        ] {
            let (a, out) = env.run_on(p, dev)?;
            anyhow::ensure!(
                a == XDP_REDIRECT,
                "bench {what} packet is not forwarded (action {a})"
            );
            anyhow::ensure!(
                out[14 + 16..14 + 20] == p[14 + 16..14 + 20],
                "bench {what}: rewrite is not an identity"
            );
        }
        let fresh = env.model.globals;
        let mut stale = fresh;
        // Zero timeouts make every SYN of the flow a new flow again (no
        // cap: the bench opens far more than a second's share).
        stale.tcp_timeout_s = 0;
        stale.syn_timeout_s = 0;
        stale.new_flows_per_cpu = 0;
        let mut unchecked = fresh;
        unchecked.flags &= !lb_common::GLOBAL_F_REPLY_SIDE;
        Ok(Bench {
            env,
            syn,
            ack,
            reply,
            other,
            from_other,
            arp: raw_frame(0x0806, &[0u8; 46]),
            other_slot,
            fresh,
            stale,
            unchecked,
        })
    }

    /// One sample (ns/packet) of every row of `ROWS`.
    fn sample(&mut self) -> anyhow::Result<Vec<f64>> {
        let ns = |d: Duration| d.as_nanos() as f64;
        let env = &mut self.env;
        let mut v = Vec::with_capacity(ROWS.len());
        v.push(ns(env.run_pass(&self.ack, REPEAT)?));
        v.push(ns(env.run_prog("lb_xdp", &self.ack, REPEAT)?.2));
        v.push(ns(env.run_prog_on("lb_xdp", &self.reply, REPEAT, "bk")?.2));
        env.dp.maps.globals.set(0, self.unchecked, 0)?;
        v.push(ns(env.run_prog_on("lb_xdp", &self.reply, REPEAT, "bk")?.2));
        env.dp.maps.globals.set(0, self.stale, 0)?;
        v.push(ns(env.run_prog("lb_xdp", &self.syn, REPEAT)?.2));
        v.push(ns(env.run_prog("lb_xdp", &self.ack, REPEAT)?.2));
        env.dp.maps.globals.set(0, self.fresh, 0)?;
        // The hit row's flow again (the SYNs left it half-open).
        env.run(&self.syn)?;
        env.run(&self.ack)?;
        // Each ordinary packet with its address's filter slot empty, then
        // set: what every such packet paid before the filter (and what one
        // whose address collides with a VIP's or target's slot still pays).
        for (p, bit) in [
            (&self.other, lb_common::ADDR_F_VIP),
            (&self.from_other, lb_common::ADDR_F_TARGET),
        ] {
            v.push(ns(env.run_prog("lb_xdp", p, REPEAT)?.2));
            env.dp.maps.addr_bits.set(self.other_slot, bit, 0)?;
            v.push(ns(env.run_prog("lb_xdp", p, REPEAT)?.2));
            env.dp.maps.addr_bits.set(self.other_slot, 0, 0)?;
        }
        v.push(ns(env.run_prog("lb_xdp", &self.arp, REPEAT)?.2));
        Ok(v)
    }

    /// Runs one row's packet for `secs` (what `--profile` samples).
    fn spin(&mut self, row: &str, secs: u64) -> anyhow::Result<u64> {
        let (p, dev) = match row {
            "hit" => (&self.ack, "cl"),
            "reply" => (&self.reply, "bk"),
            "notvip" => (&self.other, "cl"),
            other => anyhow::bail!("--profile takes hit, reply or notvip, not {other:?}"),
        };
        let t = Instant::now();
        let mut n = 0;
        while t.elapsed() < Duration::from_secs(secs) {
            self.env.run_prog_on("lb_xdp", p, 100_000, dev)?;
            n += 100_000;
        }
        Ok(n)
    }
}

/// Pins the bench to the last CPU: no migrations mid-sample, and a build
/// on the other CPUs disturbs it less.
fn pin() -> anyhow::Result<usize> {
    let cpu = std::thread::available_parallelism().map_or(1, |n| n.get()) - 1;
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        anyhow::ensure!(
            libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) == 0,
            "pinning to CPU {cpu}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(cpu)
}

/// `--profile ROW`: perf's cpu-clock samples of the kernel while one row's
/// packet runs, by symbol: what a path's cost is made of (the program's
/// own instructions, each map's lookup, the test harness). The program
/// runs pinned to one CPU, and perf samples only that CPU.
fn profile(row: &str) -> anyhow::Result<()> {
    let mut b = Bench::new(None)?;
    let cpu = pin()?;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir)?;
    let data = dir.join(format!("{row}.perf.data"));
    let mut perf = std::process::Command::new("perf")
        .args(["record", "-q", "-e", "cpu-clock", "-F", "20000", "-C"])
        .arg(cpu.to_string())
        .arg("-o")
        .arg(&data)
        .args(["--", "sleep", "5"])
        .spawn()
        .map_err(|e| anyhow::anyhow!("running perf: {e}"))?;
    let n = b.spin(row, 6)?;
    anyhow::ensure!(perf.wait()?.success(), "perf record failed");
    let rep = std::process::Command::new("perf")
        .args(["report", "--stdio", "--no-children", "--sort", "sym", "-i"])
        .arg(&data)
        .output()?;
    println!(
        "{row}: {n} runs; kernel cpu-clock samples on CPU {cpu} by symbol (perf report, top 15):"
    );
    for l in String::from_utf8_lossy(&rep.stdout)
        .lines()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .take(15)
    {
        println!("{l}");
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, row] = &args[..] {
        anyhow::ensure!(
            flag == "--profile",
            "usage: lb-bench [--profile hit|reply|notvip]"
        );
        return profile(row);
    }
    pin()?;
    let mut md = String::new();
    // LB_BENCH_OBJECT: another build of the program (e.g. the object of the
    // commit before a change), measured in the same run: drift on a shared
    // machine moves both alike. LB_BENCH_OBJECT_A replaces this build as A:
    // the same pair with A and B swapped cancels what the side itself adds
    // (an A/A run showed A 3-22 ns faster).
    let object = |var: &str| {
        std::env::var_os(var)
            .map(|p| std::fs::read(&p).map_err(|e| anyhow::anyhow!("{}: {e}", p.to_string_lossy())))
            .transpose()
    };
    let (own, other) = (object("LB_BENCH_OBJECT_A")?, object("LB_BENCH_OBJECT")?);
    let mut benches = vec![Bench::new(own.as_deref())?];
    if let Some(o) = other.as_deref() {
        benches.push(Bench::new(Some(o))?);
    }
    // samples[bench][row]: one sample per call.
    let mut samples = vec![vec![Vec::with_capacity(CALLS); ROWS.len()]; benches.len()];
    for i in 0..CALLS {
        // Interleaved, so drift on a shared machine hits every row alike;
        // A and B take turns going first.
        for k in 0..benches.len() {
            let j = (i + k) % benches.len();
            for (row, x) in samples[j].iter_mut().zip(benches[j].sample()?) {
                row.push(x);
            }
        }
    }
    let medians: Vec<Vec<f64>> = samples
        .into_iter()
        .map(|rows| rows.into_iter().map(median).collect())
        .collect();
    let a = &medians[0];
    let base = a[0];
    out!(
        md,
        "\nXDP program cost, BPF_PROG_TEST_RUN, repeat {REPEAT}, median of {CALLS} calls"
    );
    out!(md, "| path | ns/packet | ratio to baseline |");
    out!(md, "|---|---:|---:|");
    let mut json_rows = Vec::new();
    for (name, m) in ROWS.iter().zip(a) {
        out!(md, "| {name} | {m:.1} | {:.2}x |", m / base);
        json_rows.push(serde_json::json!({"path": name, "ns": m, "ratio": m / base}));
    }
    let hit = a[ROW_HIT];
    if let Some(b) = medians.get(1) {
        out!(
            md,
            "\nSame run: B (LB_BENCH_OBJECT) against A (this build, or LB_BENCH_OBJECT_A), ns/packet, medians"
        );
        out!(md, "| path | A | B | A - B |");
        out!(md, "|---|---:|---:|---:|");
        for ((name, ma), mb) in ROWS.iter().zip(a).zip(b) {
            out!(md, "| {name} | {ma:.1} | {mb:.1} | {:+.1} |", ma - mb);
        }
    }
    let budget = 1.5 * base + 40.0;
    out!(
        md,
        "\nconntrack hit {hit:.1} ns vs target 1.5 x baseline + 40 ns = {budget:.1} ns: {}",
        if hit <= budget { "met" } else { "NOT met" }
    );

    // What is left of the verifier's budget (each program verifies alone).
    out!(
        md,
        "\nVerified instructions, of the kernel's 1,000,000 per program"
    );
    out!(md, "| program | instructions |");
    out!(md, "|---|---:|");
    for p in ["lb_xdp", "lb_reply", "lb_icmp"] {
        let n = benches[0]
            .env
            .dp
            .program(p)?
            .info()?
            .verified_instruction_count();
        out!(md, "| {p} | {} |", n.map_or("?".into(), |n| n.to_string()));
    }

    out!(md, "\nMaglev table build (M = 65537)");
    out!(md, "| targets | ms |");
    out!(md, "|---:|---:|");
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
        out!(md, "| {n} | {:.2} |", median(v));
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("xdp-nspacket.md"), md.trim_start())?;
    // The regression guard's input: the same figures, machine-readable.
    let json = serde_json::json!({
        "unix_time": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs(),
        "repeat": REPEAT,
        "calls": CALLS,
        "baseline_ns": base,
        "hit_budget_ns": budget,
        "rows": json_rows,
    });
    std::fs::write(
        dir.join("xdp-nspacket.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    Ok(())
}
