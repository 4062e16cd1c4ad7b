//! Allow lists (NLB's security groups) with real connections (namespaces,
//! `lb run`): under XDP and under the proxy, v4 and v6, a listener's
//! `allow` admits the client and refuses it once a reload narrows it (an
//! open connection going on), `gateway.deny` refuses it on every listener,
//! and the refusals are counted per listener. Root only; serial; bounded.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use tests::{
    e2e::{self, sock, tcp_exchange, udp_exchange, Conn, Daemon, TempDir, FAST_HC},
    topo::{Topology, VIP_V4, VIP_V6},
};

/// The topology's config with `allow4` / `allow6` on web4 / web6 and
/// `deny` on the gateway (in `dataplane`).
fn config(topo: &Topology, dataplane: &str, allow4: &str, allow6: &str, deny: &str) -> String {
    topo.config(FAST_HC)
        .replacen(
            "[gateway]\n",
            &format!("[gateway]\ndataplane = \"{dataplane}\"\ndeny = [{deny}]\n"),
            1,
        )
        .replacen(
            "target_group = \"tg4\"\n",
            &format!("target_group = \"tg4\"\nallow = [{allow4}]\n"),
            1,
        )
        .replacen(
            "target_group = \"tg6\"\n",
            &format!("target_group = \"tg6\"\nallow = [{allow6}]\n"),
            1,
        )
}

/// A refused TCP connection: XDP drops its SYN (the connect times out),
/// the proxy resets it after the kernel's handshake; either way no target
/// answers.
fn refused(vip: SocketAddr) -> bool {
    let t = Instant::now();
    let r = tcp_exchange(vip, b"x\n").is_err();
    assert!(t.elapsed() < Duration::from_secs(20));
    r
}

fn blocked(topo: &Topology, listener: &str) -> u64 {
    e2e::metrics(&topo.gw)
        .unwrap()
        .lines()
        .filter(|l| {
            l.starts_with("lb_listener_blocked_flows_total{")
                && l.contains(&format!("listener=\"{listener}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn lists_decide(dataplane: &str) {
    let topo = e2e::served_topology();
    if dataplane == "proxy" {
        e2e::make_vips_local(&topo).unwrap();
    }
    let dir = TempDir::new(&format!("acl-{dataplane}"));
    let cfg = config(&topo, dataplane, "\"10.0.0.0/24\"", "\"fd00::/64\"", "");
    let d = Daemon::start(&topo.gw, &dir.0, &cfg).expect("lb run");
    let (v4, v6) = (sock(VIP_V4, 80), sock(VIP_V6, 80));
    let _in = topo.client.enter().unwrap();
    tcp_exchange(v4, b"allowed\n").unwrap();
    tcp_exchange(v6, b"allowed\n").unwrap();
    udp_exchange(v4, b"allowed").unwrap();
    let mut open = Conn::open(v4).unwrap();
    // Narrowed: the client's prefix is no longer allowed.
    d.reload(&config(
        &topo,
        dataplane,
        "\"10.0.9.0/24\"",
        "\"fd09::/64\"",
        "",
    ))
    .unwrap();
    assert!(refused(v4), "v4 refused after the reload");
    assert!(refused(v6), "v6 refused after the reload");
    assert!(udp_exchange(v4, b"refused").is_err(), "UDP refused");
    open.exchange(b"opened before\n")
        .expect("a connection opened before the change goes on");
    assert!(blocked(&topo, "web4") >= 2, "counted for web4");
    assert!(blocked(&topo, "web6") >= 1, "counted for web6");
    // The deny list wins over an allow list.
    d.reload(&config(
        &topo,
        dataplane,
        "\"10.0.0.0/24\"",
        "\"fd00::/64\"",
        "\"10.0.0.2/32\"",
    ))
    .unwrap();
    assert!(refused(v4), "denied");
    tcp_exchange(v6, b"v6 not denied\n").unwrap();
}

#[test]
fn allow_lists_under_xdp() {
    lists_decide("xdp");
}

#[test]
fn allow_lists_under_the_proxy() {
    lists_decide("proxy");
}
