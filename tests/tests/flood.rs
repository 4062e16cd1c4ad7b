//! A spoofed-SYN flood through the gateway (namespaces, `lb run`, native
//! XDP): 200,000 SYNs from 131,072 forged sources while 40 long-lived
//! connections sit idle behind the VIP and a target joins the ring. Every
//! connection survives (none was evicted and re-hashed onto the new
//! target), the half-open flows in conntrack stay within what
//! `new_flow_limit` and `tcp_syn_timeout` allow, and the metrics show the
//! flood. Root only; serial; bounded.

use std::{
    net::{SocketAddr, SocketAddrV4},
    time::{Duration, Instant},
};

use aya::maps::{Array, MapData};
use lb_userspace::dataplane::xdp::ctwalk;
use tests::{
    e2e::{self, Conn, Daemon, TempDir, FAST_HC},
    flood::syn_flood,
    netns::wait_until,
    topo::VIP_V4,
};

const B3: &str = "[[target_group.targets]]\naddress = \"10.1.3.2\"\nport = 8080\nzone = \"b\"\n\n";
const LIMIT: u64 = 4000;
const SYN_TIMEOUT_S: u64 = 2;

#[test]
fn established_flows_survive_a_spoofed_syn_flood() {
    let topo = e2e::served_topology();
    let dir = TempDir::new("flood");
    let cfg = topo
        .config(FAST_HC)
        .replacen(B3, "", 1)
        .replacen(
            "[gateway]\n",
            &format!(
                "[gateway]\nnew_flow_limit = {LIMIT}\ntcp_syn_timeout = \"{SYN_TIMEOUT_S}s\"\n"
            ),
            1,
        )
        .replace(
            &format!("state_dir = \"{}\"", topo.state_dir()),
            &format!("state_dir = \"{}\"", dir.0.join("state").display()),
        );
    let d = Daemon::start(&topo.gw, &dir.0, &cfg).expect("lb run");
    let sock = format!("/run/{}.sock", topo.gw.name);
    let vip = SocketAddr::new(VIP_V4.parse().unwrap(), 80);
    let mut conns: Vec<Conn> = {
        let _in = topo.client.enter().unwrap();
        (0..40).map(|_| Conn::open(vip).unwrap()).collect()
    };
    for c in &mut conns {
        c.exchange(b"before\n").unwrap();
    }
    let pins = e2e::pin_path_of(&cfg).unwrap().join("maps");
    let tables = ctwalk::FlowTables::from_pins(&pins).unwrap();
    let globals: Array<_, lb_common::Globals> = Array::try_from(aya::maps::Map::Array(
        MapData::from_pin(pins.join("GLOBALS")).unwrap(),
    ))
    .unwrap();
    let g = globals.get(&0, 0).unwrap();

    let (sent, most_half_open, took) = std::thread::scope(|s| {
        let client = &topo.client;
        let flood = s.spawn(move || {
            let _in = client.enter().unwrap();
            let to = SocketAddrV4::new(VIP_V4.parse().unwrap(), 80);
            let t = Instant::now();
            (syn_flood(to, 200_000, Duration::from_secs(60)).unwrap(), t)
        });
        let mut most = 0;
        let mut registered = false;
        while !flood.is_finished() {
            let f = ctwalk::count(&tables, &g).unwrap();
            most = most.max(f.half_open);
            if !registered && f.half_open > 1000 {
                // A ring change while the flood runs: a long-lived flow
                // evicted from conntrack would be re-hashed, and the third
                // of them whose slots move to b3 reset.
                let (st, v) = e2e::admin_post(
                    &sock,
                    "/v1/RegisterTargets",
                    r#"{"TargetGroupArn":"tg4","Targets":[{"Id":"10.1.3.2","Port":8080,"AvailabilityZone":"b"}]}"#,
                );
                assert_eq!(st, 200, "{v}");
                registered = true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let (sent, t) = flood.join().unwrap();
        assert!(registered, "the flood never showed half-open flows");
        (sent, most, t.elapsed())
    });
    eprintln!(
        "measured: {sent} spoofed SYNs in {took:?} ({:.0}/s); at most {most_half_open} half-open flows tracked (limit {LIMIT}/s x ({SYN_TIMEOUT_S} s + 1 s))",
        sent as f64 / took.as_secs_f64()
    );
    assert!(sent >= 100_000, "the flood sent only {sent}");
    assert!(
        most_half_open <= LIMIT * (SYN_TIMEOUT_S + 1),
        "{most_half_open} half-open flows"
    );
    // b3 is in the ring now: new flows reach it.
    assert!(
        wait_until(Duration::from_secs(10), || {
            e2e::spread(&topo, &d, vip, 30).contains_key("b3")
        }),
        "b3 takes new flows"
    );
    for (i, c) in conns.iter_mut().enumerate() {
        c.exchange(b"after the flood\n")
            .unwrap_or_else(|e| panic!("connection {i} ({}) lost: {e:#}", c.name));
    }
    let m = e2e::metrics(&topo.gw).unwrap();
    let flood_untracked = e2e::xdp_count(&m, "flood_untracked");
    assert!(flood_untracked > 0, "the flood is counted:\n{m}");
    assert!(m.contains("lb_half_open_flows "), "{m}");
    eprintln!("measured: {flood_untracked} SYNs balanced untracked past the limit");
}
