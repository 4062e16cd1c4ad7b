//! The proxy data plane (and the automatic fallback to it) with real
//! traffic through namespaces. Root only; serial; bounded.

use std::{collections::HashMap, time::Duration};

use tests::{
    e2e::{self, sock, tcp_exchange, udp_exchange, Conn, Daemon, TempDir, FAST_HC},
    topo::{Topology, VIP_V4, VIP_V6},
};

/// Topology with servers; in proxy mode the VIPs are local addresses of
/// the gateway (the proxy terminates connections).
fn topology() -> Topology {
    let topo = e2e::served_topology();
    e2e::make_vips_local(&topo).unwrap();
    topo
}

fn proxy_config(topo: &Topology) -> String {
    topo.config(FAST_HC)
        .replacen("[gateway]\n", "[gateway]\ndataplane = \"proxy\"\n", 1)
}

fn spread(topo: &Topology, d: &Daemon, vip: &str, n: usize) -> HashMap<String, u32> {
    e2e::spread(topo, d, sock(vip, 80), n)
}

#[test]
fn proxy_balances_tcp_and_udp_fairly() {
    let topo = topology();
    let dir = TempDir::new("pfair");
    let d = Daemon::start(&topo.gw, &dir.0, &proxy_config(&topo)).expect("lb run");
    assert!(
        d.log_text().contains("data plane: proxy"),
        "{}",
        d.log_text()
    );
    // N per kind: the 20% band is about 4.9 standard deviations of a fair
    // share wide.
    const N: usize = 1200;
    let _in = topo.client.enter().unwrap();
    for (fam, vip) in [("v4", VIP_V4), ("v6", VIP_V6)] {
        let mut tcp: HashMap<String, u32> = HashMap::new();
        let mut udp: HashMap<String, u32> = HashMap::new();
        for i in 0..N {
            // Payloads up to 200 KB cross several splice rounds.
            let payload = format!(
                "{fam} {i} {}",
                "y".repeat(if i % 100 == 0 { 200_000 } else { i % 300 })
            );
            let n = tcp_exchange(sock(vip, 80), payload.as_bytes())
                .unwrap_or_else(|e| panic!("{fam} tcp #{i}: {e:#}\n{}", d.log_text()));
            *tcp.entry(n).or_default() += 1;
            let n = udp_exchange(sock(vip, 80), format!("{fam} udp {i}").as_bytes())
                .unwrap_or_else(|e| panic!("{fam} udp #{i}: {e:#}\n{}", d.log_text()));
            *udp.entry(n).or_default() += 1;
        }
        for (proto, per) in [("tcp", &tcp), ("udp", &udp)] {
            assert_eq!(per.len(), 3, "{fam} {proto}: {per:?}");
            for (b, &c) in per {
                assert!(
                    (N * 4 / 15..=N * 6 / 15).contains(&(c as usize)),
                    "{fam} {proto}: {b} got {c} of {N}: {per:?}"
                );
            }
        }
    }
    drop(_in);
    let st = e2e::lb_status(&d.config).unwrap();
    assert!(st.starts_with("data plane: proxy"), "{st}");
    // The 200 KB payloads went through splice(2).
    let m = {
        let _in = topo.gw.enter().unwrap();
        e2e::http_get("127.0.0.1:9650".parse().unwrap(), "/metrics").unwrap()
    };
    let spliced: u64 = m
        .lines()
        .find(|l| l.starts_with("lb_proxy_events_total{event=\"splice_started\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0);
    assert!(
        spliced >= 24,
        "bulk transfers switch to splice: {spliced}\n{m}"
    );
}

#[test]
fn proxy_protocol_v2_gives_targets_the_client_address() {
    let mut topo = topology();
    for b in &mut topo.backends {
        let srv = e2e::bin("lb-testsrv");
        b.ns.spawn(&[srv.to_str().unwrap(), "--name", &b.name, "--ppv2", "9000"])
            .unwrap();
    }
    let mut cfg = proxy_config(&topo);
    cfg += "[[listener]]\nname = \"pp\"\naddress = \"10.100.0.1\"\nport = 82\nprotocol = \"tcp\"\ntarget_group = \"pp\"\n\n";
    cfg += "[[target_group]]\nname = \"pp\"\ncross_zone = true\nproxy_protocol_v2 = true\n";
    cfg += &topo.targets(false, 9000);
    let dir = TempDir::new("ppv2");
    let d = Daemon::start(&topo.gw, &dir.0, &cfg).expect("lb run");
    let _in = topo.client.enter().unwrap();
    for i in 0..30 {
        let mut c = Conn::open(sock(VIP_V4, 82))
            .unwrap_or_else(|e| panic!("#{i}: {e:#}\n{}", d.log_text()));
        let me = c.local_addr().unwrap();
        let (name, client) = c
            .name
            .split_once(" client=")
            .unwrap_or_else(|| panic!("no header seen: {:?}", c.name));
        assert!(name.starts_with('b'));
        assert_eq!(
            client,
            me.to_string(),
            "the target sees the client's address and port"
        );
        c.exchange(b"and then the stream").unwrap();
    }
}

#[test]
fn proxy_takes_a_killed_backend_out() {
    let mut topo = topology();
    let dir = TempDir::new("pkill");
    let d = Daemon::start(&topo.gw, &dir.0, &proxy_config(&topo)).expect("lb run");
    assert_eq!(spread(&topo, &d, VIP_V4, 60).len(), 3);
    // Open connections to b2 end when it is found dead; others go on.
    let mut open: Vec<Conn> = {
        let _in = topo.client.enter().unwrap();
        (0..30)
            .map(|_| Conn::open(sock(VIP_V4, 80)).unwrap())
            .collect()
    };
    topo.backends[1].ns.kill_all();
    d.expect_log(
        &["tg4/10.1.2.2:8080", "-> unhealthy"],
        1,
        Duration::from_secs(4),
        "",
    );
    let per = spread(&topo, &d, VIP_V4, 200);
    assert!(!per.contains_key("b2"), "no new connection to b2: {per:?}");
    let _in = topo.client.enter().unwrap();
    for c in open.iter_mut().filter(|c| c.name != "b2") {
        c.exchange(b"still fine").unwrap();
    }
}

#[test]
fn auto_falls_back_to_the_proxy_without_bpf_rights() {
    let topo = topology();
    let dir = TempDir::new("auto");
    // A container without CAP_BPF / CAP_SYS_ADMIN: XDP cannot load.
    let drop_caps = [
        "setpriv",
        "--bounding-set",
        "-bpf,-sys_admin",
        "--inh-caps",
        "-bpf,-sys_admin",
    ];
    let d =
        Daemon::start_with(&topo.gw, &dir.0, &topo.config(FAST_HC), &drop_caps).expect("lb run");
    let log = d.log_text();
    assert!(
        log.contains("XDP is not available") && log.contains("CAP_BPF"),
        "{log}"
    );
    assert!(
        log.contains("falling back to the proxy data plane"),
        "{log}"
    );
    // Said where an operator looks, too.
    let status = e2e::lb_status(&d.config).unwrap();
    assert!(
        status.contains("(fallback: lb run has no CAP_BPF"),
        "{status}"
    );
    let m = e2e::metrics(&topo.gw).unwrap();
    assert!(
        m.contains("lb_dataplane_info{interface=\"*\",mode=\"proxy\",reason=\"no_cap_bpf\"} 1"),
        "{m}"
    );
    let per = spread(&topo, &d, VIP_V4, 90);
    assert_eq!(per.values().sum::<u32>(), 90);
    assert_eq!(per.len(), 3);
    let _in = topo.client.enter().unwrap();
    assert!(udp_exchange(sock(VIP_V6, 80), b"v6 too")
        .unwrap()
        .starts_with('b'));
}

/// The proxy chooses with the XDP program's code: the same UDP flows
/// (same client address and port) land on the same targets in both.
#[test]
fn proxy_and_xdp_choose_the_same_targets() {
    let topo = topology();
    let dir = TempDir::new("same");
    let flows = |topo: &Topology| -> Vec<String> {
        let _in = topo.client.enter().unwrap();
        (0..40u16)
            .map(|i| {
                let s = std::net::UdpSocket::bind(("10.0.0.2", 41000 + i)).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                s.send_to(b"which", sock(VIP_V4, 80)).unwrap();
                let mut b = [0u8; 64];
                let n = s.recv(&mut b).unwrap();
                String::from_utf8_lossy(&b[..n])
                    .split(':')
                    .next()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    let xdp_cfg =
        topo.config(FAST_HC)
            .replacen("[gateway]\n", "[gateway]\ndataplane = \"xdp\"\n", 1);
    let d = Daemon::start(&topo.gw, &dir.0, &xdp_cfg).expect("lb run (xdp)");
    assert!(d.log_text().contains("native mode"));
    let via_xdp = flows(&topo);
    drop(d);
    let d = Daemon::start(&topo.gw, &dir.0, &proxy_config(&topo)).expect("lb run (proxy)");
    let via_proxy = flows(&topo);
    drop(d);
    assert_eq!(via_xdp, via_proxy, "same flows, same targets");
    assert!(
        via_xdp
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len()
            == 3
    );
}

/// Bursts from one client socket cross the batched UDP path (recvmmsg,
/// GSO runs of equal sizes, a shorter datagram ending each run) intact, in
/// order, each exactly once, and all to the session's one target.
#[test]
fn proxy_udp_bursts_arrive_whole_and_in_order() {
    let topo = topology();
    let dir = TempDir::new("pburst");
    let d = Daemon::start(&topo.gw, &dir.0, &proxy_config(&topo)).expect("lb run");
    let _in = topo.client.enter().unwrap();
    for vip in [VIP_V4, VIP_V6] {
        let bind = if vip.contains(':') {
            "[::]:0"
        } else {
            "0.0.0.0:0"
        };
        let s = std::net::UdpSocket::bind(bind).unwrap();
        s.connect(sock(vip, 80)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut names = std::collections::BTreeSet::new();
        let mut buf = vec![0u8; 65536];
        for round in 0..20usize {
            let size = 100 + round * 61;
            let sent: Vec<Vec<u8>> = (0..32usize)
                .map(|i| {
                    let len = if i == 31 { size / 2 } else { size };
                    let mut p = format!("{round}:{i}:").into_bytes();
                    p.resize(len, b'a' + (i % 26) as u8);
                    p
                })
                .collect();
            for p in &sent {
                s.send(p).unwrap();
            }
            for (i, p) in sent.iter().enumerate() {
                let n = s.recv(&mut buf).unwrap_or_else(|e| {
                    panic!("{vip} round {round} datagram {i}: {e}\n{}", d.log_text())
                });
                let colon = buf.iter().position(|&b| b == b':').unwrap();
                names.insert(String::from_utf8_lossy(&buf[..colon]).to_string());
                assert_eq!(
                    &buf[colon + 1..n],
                    &p[..],
                    "{vip} round {round} datagram {i}"
                );
            }
        }
        // An empty datagram is a datagram too; ones larger than the MTU are
        // fragmented on the way, as without the balancer.
        for size in [0, 3000, 8000, 20000] {
            let p: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            s.send(&p).unwrap();
            let n = s
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("{vip} {size} bytes: {e}\n{}", d.log_text()));
            let colon = buf.iter().position(|&b| b == b':').unwrap();
            assert_eq!(&buf[colon + 1..n], &p[..], "{vip} {size} bytes");
        }
        assert_eq!(names.len(), 1, "one session, one target: {names:?}");
    }
}

/// With [announce], a stopping proxy withdraws its VIPs first and keeps
/// serving for `withdraw_grace`, so nothing is refused while routers move
/// the traffic elsewhere.
#[test]
fn stopping_proxy_withdraws_then_serves_through_the_grace() {
    let topo = topology();
    let dir = TempDir::new("pgrace");
    let cfg = format!(
        "{}\n[announce]\nwithdraw_grace = \"3s\"\n",
        proxy_config(&topo).replacen(
            "[gateway]\n",
            &format!("[gateway]\nhash_seed = \"{}\"\n", tests::ecmp::HASH_SEED),
            1
        )
    );
    let d = Daemon::start(&topo.gw, &dir.0, &cfg).expect("lb run");
    let routes = || {
        topo.gw
            .ip(&["route", "show", "table", "100"])
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    assert!(
        tests::netns::wait_until(Duration::from_secs(5), || routes()
            .contains("10.100.0.1 dev lb-vips")),
        "not announced: {}\n{}",
        routes(),
        d.log_text()
    );
    d.signal(libc::SIGTERM);
    d.expect_log(
        &["announce: withdrew 2 VIP address(es)"],
        1,
        Duration::from_secs(5),
        "",
    );
    assert!(!routes().contains("10.100.0.1"), "{}", routes());
    // Withdrawn, yet still serving.
    {
        let _in = topo.client.enter().unwrap();
        for i in 0..10 {
            tcp_exchange(sock(VIP_V4, 80), format!("late {i}").as_bytes())
                .unwrap_or_else(|e| panic!("#{i} during the grace: {e:#}\n{}", d.log_text()));
        }
    }
    assert!(d.child.id() > 0 && d.log_text().contains("serving 3s more"));
    d.expect_log(
        &["exiting (proxy data plane"],
        1,
        Duration::from_secs(6),
        "",
    );
}

/// A listener's `tcp_idle_timeout` closes its idle proxied connections
/// (as NLB's idle timeout closes them); the other listener's connection,
/// on the gateway's 350 s, stays open through the same idle time.
#[test]
fn proxy_closes_connections_idle_past_their_listeners_timeout() {
    let topo = topology();
    let dir = TempDir::new("pidle");
    let cfg = proxy_config(&topo).replacen(
        "target_group = \"tg4\"\n",
        "target_group = \"tg4\"\ntcp_idle_timeout = \"2s\"\n",
        1,
    );
    assert!(cfg.contains("tcp_idle_timeout = \"2s\""));
    let _d = Daemon::start(&topo.gw, &dir.0, &cfg).expect("lb run");
    let _in = topo.client.enter().unwrap();
    let mut short = Conn::open(sock(VIP_V4, 80)).unwrap();
    let mut long = Conn::open(sock(VIP_V6, 80)).unwrap();
    short.exchange(b"before\n").unwrap();
    long.exchange(b"before\n").unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        short.exchange(b"after\n").is_err(),
        "idle 3 s on a 2 s listener: closed"
    );
    long.exchange(b"after\n").unwrap();
}
