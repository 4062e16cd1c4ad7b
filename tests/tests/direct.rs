//! Targets stay reachable directly through the gateway while `lb` balances
//! VIP traffic to them ("connect to each instance directly, and through the
//! load balancer"). Root only; serial; bounded.

use std::collections::HashMap;

use tests::{
    e2e::{self, sock, tcp_exchange, udp_exchange, Daemon, TempDir},
    topo::{VIP_V4, VIP_V6},
};

/// Every target port serves a `nat` listener (port 80) and a `snat` one
/// (port 81). Interleaved with VIP exchanges, the client talks to each
/// target's own address and port 8080, TCP and UDP, v4 and v6: every
/// exchange must reach the right target and come back from it. Without
/// flow-tied replies, about a third of the direct replies were rewritten to
/// come from the VIP (whose ring picks that target for the tuple) and failed.
#[test]
fn targets_stay_reachable_directly_beside_vip_traffic() {
    const ROUNDS: usize = 60;
    let topo = e2e::served_topology();
    let mut cfg = topo.config("");
    for (fam, vip, snat) in [(4, VIP_V4, "10.0.0.1"), (6, VIP_V6, "fd00::1")] {
        cfg += &format!("[[listener]]\nname = \"s{fam}\"\naddress = \"{vip}\"\nport = 81\nprotocol = \"tcp_udp\"\ntarget_group = \"s{fam}\"\n\n");
        cfg += &format!("[[target_group]]\nname = \"s{fam}\"\nmode = \"snat\"\nsnat_address = \"{snat}\"\ncross_zone = true\n");
        cfg += &topo.targets(fam == 6, 8080);
    }
    let dir = TempDir::new("direct");
    let d = Daemon::start(&topo.gw, &dir.0, &cfg).expect("lb run");
    assert!(d.log_text().contains("native mode"), "{}", d.log_text());
    let direct_before = e2e::xdp_reason(&topo.gw, "direct_to_target");
    let mut via_vip: HashMap<(String, &str), u32> = HashMap::new();
    {
        let _in = topo.client.enter().unwrap();
        for i in 0..ROUNDS {
            for (fam, vip) in [("v4", VIP_V4), ("v6", VIP_V6)] {
                for port in [80, 81] {
                    let kind = if port == 80 { "nat" } else { "snat" };
                    let p = format!("{fam} {kind} tcp {i}");
                    let n = tcp_exchange(sock(vip, port), p.as_bytes())
                        .unwrap_or_else(|e| panic!("{p}: {e:#}\n{}", d.log_text()));
                    *via_vip.entry((n, kind)).or_default() += 1;
                    let p = format!("{fam} {kind} udp {i}");
                    udp_exchange(sock(vip, port), p.as_bytes())
                        .unwrap_or_else(|e| panic!("{p}: {e:#}\n{}", d.log_text()));
                }
                for b in &topo.backends {
                    let a = if fam == "v4" { &b.v4 } else { &b.v6 };
                    let p = format!("direct {fam} tcp {} {i}", b.name);
                    let n = tcp_exchange(sock(a, 8080), p.as_bytes())
                        .unwrap_or_else(|e| panic!("{p}: {e:#}\n{}", d.log_text()));
                    assert_eq!(n, b.name, "{p} answered by another target");
                    let p = format!("direct {fam} udp {} {i}", b.name);
                    let n = udp_exchange(sock(a, 8080), p.as_bytes())
                        .unwrap_or_else(|e| panic!("{p}: {e:#}\n{}", d.log_text()));
                    assert_eq!(n, b.name, "{p} answered by another target");
                }
            }
        }
    }
    for b in &topo.backends {
        for kind in ["nat", "snat"] {
            assert!(
                via_vip.get(&(b.name.clone(), kind)).copied().unwrap_or(0) > 0,
                "{} serves the {kind} VIPs too: {via_vip:?}",
                b.name
            );
        }
    }
    // The direct flows were seen as such (both directions, every packet),
    // and on one gateway every VIP reply was matched by local state.
    let direct = e2e::xdp_reason(&topo.gw, "direct_to_target") - direct_before;
    assert!(
        direct >= (ROUNDS * 2 * 3 * 2 * 2) as u64,
        "direct_to_target counted {direct}"
    );
    assert_eq!(e2e::xdp_reason(&topo.gw, "reply_stateless"), 0);
}
