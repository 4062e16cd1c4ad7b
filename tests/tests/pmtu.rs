//! Path MTU discovery through the VIP (namespaces, `lb run`, native XDP):
//! the links to the targets carry 1280 bytes while the targets announce an
//! MSS for 1500 (`advmss`), so the client's full-size segments do not fit
//! the gateway's next hop. The gateway answers them with "fragmentation
//! needed" / "packet too big" quoting the packet as the client sent it (to
//! the VIP), the client lowers its path MTU, and 200 KB transfers complete,
//! v4 and v6. Root only; serial; bounded.

use tests::{
    e2e::{self, sock, tcp_exchange, Daemon, TempDir, FAST_HC},
    topo::{VIP_V4, VIP_V6},
};

#[test]
fn path_mtu_discovery_works_through_the_vip() {
    let topo = e2e::served_topology();
    for (i, b) in topo.backends.iter().enumerate() {
        let n = i + 1;
        topo.gw
            .ip(&["link", "set", &b.gw_dev, "mtu", "1280"])
            .unwrap();
        b.ns.ip(&["link", "set", "eth0", "mtu", "1280"]).unwrap();
        // The target announces an MSS for 1500-byte packets anyway.
        b.ns.ip(&[
            "route",
            "replace",
            "default",
            "via",
            &format!("10.1.{n}.1"),
            "advmss",
            "1460",
        ])
        .unwrap();
        b.ns.ip(&[
            "-6",
            "route",
            "replace",
            "default",
            "via",
            &format!("fd01:{n}::1"),
            "advmss",
            "1440",
        ])
        .unwrap();
    }
    // The errors go back out with XDP_TX (see `xdp_pass_on`).
    let _pass = e2e::xdp_pass_on(&topo.client, "eth0").unwrap();
    let dir = TempDir::new("pmtu");
    let _d = Daemon::start(&topo.gw, &dir.0, &topo.config(FAST_HC)).expect("lb run");
    let reasons = || e2e::xdp_reasons(&topo.gw);
    {
        let _in = topo.client.enter().unwrap();
        let payload: Vec<u8> = (0..200_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        for (fam, vip) in [("v4", VIP_V4), ("v6", VIP_V6)] {
            for n in 0..3 {
                tcp_exchange(sock(vip, 80), &payload)
                    .unwrap_or_else(|e| panic!("{fam} transfer {n}: {e:#}\n{}", reasons()));
            }
        }
    }
    let m = e2e::metrics(&topo.gw).unwrap();
    let sent = e2e::xdp_count(&m, "too_big_sent");
    eprintln!("measured: {sent} too-big errors sent for 6 transfers of 200 KB");
    assert!(sent > 0, "the errors came from the program:\n{m}");
}
