//! The VIPs' unreachable routes (namespaces, `lb run`, native XDP). The
//! gateway has a default route back towards the client, as an edge router
//! has towards its upstream: a packet to a VIP port no listener has would
//! leave by it. With the routes it is refused at once ("host unreachable");
//! they follow reloads, stay across a SIGTERM (the program does) and go with
//! `lb detach`. Root only; serial; bounded.

use std::{
    io::ErrorKind,
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use tests::{
    e2e::{self, sock, tcp_exchange, Daemon, TempDir, FAST_HC},
    netns::Netns,
    topo::{VIP_V4, VIP_V6},
};

/// `ip route show proto 245` in the gateway, both families.
fn routes(gw: &Netns) -> String {
    let mut out = String::new();
    for fam in ["-4", "-6"] {
        let o = gw.ip(&[fam, "route", "show", "proto", "245"]).unwrap();
        out += &String::from_utf8_lossy(&o.stdout);
    }
    out
}

/// How a connect to a port no listener has ends (within 2 s).
fn connect(addr: SocketAddr) -> ErrorKind {
    TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .expect_err("no one listens there")
        .kind()
}

#[test]
fn a_vips_unbalanced_traffic_is_refused_not_forwarded_by_the_default_route() {
    let topo = e2e::served_topology();
    // The client does not forward: what the gateway sends it for a VIP is
    // dropped there in silence.
    topo.gw
        .ip(&["route", "add", "default", "via", "10.0.0.2"])
        .unwrap();
    topo.gw
        .ip(&["-6", "route", "add", "default", "via", "fd00::2"])
        .unwrap();
    // The kernel's per-host ICMP rate limit would hide repeated answers
    // to the one client (the first phase's redirects spend its tokens).
    topo.gw.sysctl("net.ipv4.icmp_ratelimit", "0").unwrap();
    topo.gw.sysctl("net.ipv6.icmp.ratelimit", "0").unwrap();
    let dir = TempDir::new("viproutes");
    let off =
        topo.config(FAST_HC)
            .replacen("[gateway]\n", "[gateway]\nunreachable_routes = false\n", 1);
    let on = topo.config(FAST_HC);
    // Off: the packet leaves by the default route; the connect times out.
    let d = Daemon::start(&topo.gw, &dir.0, &off).expect("lb run");
    assert_eq!(routes(&topo.gw), "", "unreachable_routes = false: none");
    {
        let _in = topo.client.enter().unwrap();
        let kind = connect(sock(VIP_V4, 81));
        assert_eq!(kind, ErrorKind::TimedOut, "forwarded by the default route");
    }
    // On (a reload): both VIPs get a route, and the same connect is
    // refused at once, while port 80 is balanced as before.
    d.reload(&on).unwrap();
    let want = |r: &str| r.contains(&format!("unreachable {VIP_V4}")) && r.contains(VIP_V6);
    assert!(
        tests::netns::wait_until(Duration::from_secs(5), || want(&routes(&topo.gw))),
        "routes for both VIPs: {}\n{}",
        routes(&topo.gw),
        d.log_text()
    );
    {
        let _in = topo.client.enter().unwrap();
        for vip in [VIP_V4, VIP_V6] {
            // ICMP "host unreachable" (v4), "no route" (v6).
            let kind = connect(sock(vip, 81));
            assert!(
                matches!(
                    kind,
                    ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable
                ),
                "{vip}:81 is refused: {kind:?}"
            );
            tcp_exchange(sock(vip, 80), b"still balanced\n").expect("port 80");
        }
    }
    // A VIP no listener has any more loses its route.
    let v4_only: String = on.replace(VIP_V6, "fd64::99");
    d.reload(&v4_only).unwrap();
    assert!(
        tests::netns::wait_until(Duration::from_secs(5), || {
            let r = routes(&topo.gw);
            r.contains(VIP_V4) && !r.contains(&format!("{VIP_V6} ")) && r.contains("fd64::99")
        }),
        "the v6 VIP's route follows the reload: {}",
        routes(&topo.gw)
    );
    // SIGTERM: XDP stays, and so do the routes; `lb detach` takes both.
    let cfg = d.config.clone();
    d.sigterm();
    assert!(routes(&topo.gw).contains(VIP_V4), "kept with the program");
    let out = topo
        .gw
        .command(&[
            e2e::lb_bin().to_str().unwrap(),
            "detach",
            "-c",
            cfg.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("removed 2 unreachable VIP route(s)"),
        "{text}"
    );
    assert_eq!(routes(&topo.gw), "", "lb detach removes them");
}
