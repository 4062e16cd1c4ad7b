//! 802.1Q through the gateway (namespaces, `lb run`, native XDP): the
//! client reaches the VIP over VLAN 100, a real sub-interface on both ends
//! with the tags in the frames. The program translates the tagged frames
//! and leaves them to the kernel (Ethernet header and tag untouched), whose
//! VLAN device takes them; the targets' replies, translated, leave through
//! the VLAN device by the kernel too (XDP cannot transmit on it). Root
//! only; serial; bounded.

use tests::{
    e2e::{self, sock, tcp_exchange, udp_exchange, Daemon, TempDir, FAST_HC},
    topo::VIP_V4,
};

#[test]
#[ignore = "needs a kernel with CONFIG_VLAN_8021Q (this test bed's has none: `ip link add ... type vlan` says Unknown device type); run with --ignored where it has; tests/hostile.rs checks the tagged frames with BPF_PROG_TEST_RUN"]
fn vip_traffic_over_a_vlan_sub_interface() {
    let topo = e2e::served_topology();
    for (ns, addr) in [(&topo.client, "10.0.100.2/24"), (&topo.gw, "10.0.100.1/24")] {
        ns.ip(&[
            "link", "add", "link", "eth0", "name", "eth0.100", "type", "vlan", "id", "100",
        ])
        .unwrap();
        ns.ip(&["addr", "add", addr, "dev", "eth0.100"]).unwrap();
        ns.ip(&["link", "set", "eth0.100", "up"]).unwrap();
        // The tags in the frames, not in the socket buffers' metadata.
        ns.exec(&["ethtool", "-K", "eth0", "txvlan", "off", "rxvlan", "off"])
            .unwrap();
    }
    topo.client
        .ip(&["route", "add", "10.100.0.1/32", "via", "10.0.100.1"])
        .unwrap();
    let dir = TempDir::new("vlan");
    let d = Daemon::start(&topo.gw, &dir.0, &topo.config(FAST_HC)).expect("lb run");
    let reasons = || e2e::xdp_reasons(&topo.gw);
    let mut served = std::collections::HashSet::new();
    {
        let _in = topo.client.enter().unwrap();
        for i in 0..30 {
            let n = tcp_exchange(sock(VIP_V4, 80), format!("over vlan {i}\n").as_bytes())
                .unwrap_or_else(|e| panic!("tcp #{i}: {e:#}\n{}\n{}", reasons(), d.log_text()));
            served.insert(n);
            udp_exchange(sock(VIP_V4, 80), format!("udp {i}").as_bytes())
                .unwrap_or_else(|e| panic!("udp #{i}: {e:#}\n{}", reasons()));
        }
    }
    assert!(served.len() >= 2, "balanced: {served:?}");
    let m = reasons();
    let forwarded = e2e::xdp_count(&m, "kernel_forwards");
    // Each exchange's packets both ways.
    assert!(
        forwarded >= 120,
        "the kernel forwarded the tagged traffic:\n{m}"
    );
}
