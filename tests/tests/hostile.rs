//! Fixtures for hostile and unusual traffic: only a SYN creates TCP state
//! (a bare ACK is balanced untracked, or dropped for `snat`), a half-open
//! flow lives `tcp_syn_timeout`, and the per-CPU new-flow cap balances a
//! flood without filling conntrack. Root only; run serially through
//! `cargo xtask test`.

use lb_common::{Reason, FLOW_F_HALF_OPEN};
use lb_userspace::dataplane::Dataplane as _;
use tests::{
    fixture::*,
    packet::{ones, Spec, ACK, SYN},
};

const NAT: &str = "10.100.0.1";
const SNAT: &str = "10.100.0.2";

fn tracked(env: &Env) -> usize {
    env.dp.maps.ct_keys().len()
}

/// The output frame's destination address (IPv4).
fn out_dst(out: &[u8]) -> String {
    std::net::Ipv4Addr::new(out[30], out[31], out[32], out[33]).to_string()
}

/// Runs this thread on CPU 0 only: the program's flood count is per CPU.
fn pin_to_cpu0() {
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set),
            0
        );
    }
}

#[test]
fn only_a_syn_creates_tcp_state() {
    let mut env = env();
    let c = "10.0.0.2";
    let before = env.reasons();
    // A bare ACK (another gateway's connection, or a forged one).
    let ack = Spec::new(c, 40001, NAT, 80, ACK);
    let (a, out) = env.run(&ack.build()).unwrap();
    assert_eq!(action_name(a), "XDP_REDIRECT", "balanced");
    assert_eq!(out_dst(&out), expected_target(&env, &ack).0, "by the ring");
    assert!(
        env.dp.maps.ct_get(&flow_key(c, 40001, NAT, SYN)).is_err(),
        "not tracked"
    );
    let i = Reason::NotSynUntracked as usize;
    assert_eq!(env.reasons()[i], before[i] + 1);
    // The same for snat needs a port, so state: dropped.
    let (a, _) = env
        .run(&Spec::new(c, 40002, SNAT, 80, ACK).build())
        .unwrap();
    assert_eq!(action_name(a), "XDP_DROP");
    assert!(env.dp.maps.ct_get(&flow_key(c, 40002, SNAT, SYN)).is_err());
    let i = Reason::SnatUntracked as usize;
    assert_eq!(env.reasons()[i], before[i] + 1);
    // A SYN is tracked, half-open until the client's ACK.
    env.run(&Spec::new(c, 40003, NAT, 80, SYN).build()).unwrap();
    let st = env.dp.maps.ct_get(&flow_key(c, 40003, NAT, SYN)).unwrap();
    assert_ne!(st.flags & FLOW_F_HALF_OPEN, 0, "half-open");
    env.run(&Spec::new(c, 40003, NAT, 80, ACK).build()).unwrap();
    let st = env.dp.maps.ct_get(&flow_key(c, 40003, NAT, SYN)).unwrap();
    assert_eq!(st.flags & FLOW_F_HALF_OPEN, 0, "the handshake completed");
}

/// A half-open `snat` flow frees its port after `tcp_syn_timeout`; a flow
/// whose client completed the handshake keeps it.
#[test]
fn a_half_open_flow_lives_the_syn_timeout() {
    let cfg = CONFIG.replace(
        "snat_ports = \"20000-32767\"",
        "snat_ports = \"20000-20000\"\ntcp_syn_timeout = \"1s\"",
    );
    let mut env = Env::new(&cfg).unwrap();
    let c = "10.0.0.2";
    let t = expected_target(&env, &Spec::new(c, 41000, SNAT, 80, SYN)).0;
    let on_t: Vec<u16> = (41001..46000)
        .filter(|&p| expected_target(&env, &Spec::new(c, p, SNAT, 80, SYN)).0 == t)
        .take(3)
        .collect();
    let syn = |env: &mut Env, p: u16| {
        let (a, _) = env.run(&Spec::new(c, p, SNAT, 80, SYN).build()).unwrap();
        action_name(a)
    };
    assert_eq!(syn(&mut env, 41000), "XDP_REDIRECT", "takes the only port");
    assert_eq!(syn(&mut env, on_t[0]), "XDP_DROP", "held while half-open");
    std::thread::sleep(std::time::Duration::from_millis(2100));
    assert_eq!(
        syn(&mut env, on_t[0]),
        "XDP_REDIRECT",
        "never completed: the port is free after 1 s"
    );
    env.run(&Spec::new(c, on_t[0], SNAT, 80, ACK).build())
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2100));
    assert_eq!(
        syn(&mut env, on_t[1]),
        "XDP_DROP",
        "established: held for its idle timeout"
    );
}

/// Past `new_flow_limit` (per CPU and second) new flows are still
/// balanced, by the ring, but not tracked (`snat` ones are dropped); the
/// next second tracks again.
#[test]
fn new_flows_past_the_cap_are_balanced_untracked() {
    pin_to_cpu0();
    let cpus = aya::util::nr_cpus().unwrap() as u32;
    let cfg = CONFIG.replace(
        "new_flow_limit = \"off\"",
        &format!("new_flow_limit = {}", 10 * cpus),
    );
    let mut env = Env::new(&cfg).unwrap();
    let c = "10.0.0.3";
    let before = env.reasons();
    let base = tracked(&env);
    for p in 0..30u16 {
        let s = Spec::new(c, 42000 + p, NAT, 80, SYN);
        let (a, out) = env.run(&s.build()).unwrap();
        assert_eq!(action_name(a), "XDP_REDIRECT", "flow {p} balanced");
        assert_eq!(out_dst(&out), expected_target(&env, &s).0, "flow {p}");
    }
    let after = env.reasons();
    let i = Reason::FloodUntracked as usize;
    // A fresh program: the second began with the first SYN, well within.
    assert_eq!(after[i] - before[i], 20, "past 10 on this CPU: untracked");
    assert_eq!(tracked(&env) - base, 10);
    let (a, _) = env
        .run(&Spec::new(c, 43000, SNAT, 80, SYN).build())
        .unwrap();
    assert_eq!(action_name(a), "XDP_DROP", "snat past the cap");
    let i = Reason::SnatUntracked as usize;
    assert_eq!(env.reasons()[i], before[i] + 1);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (a, _) = env
        .run(&Spec::new(c, 43001, SNAT, 80, SYN).build())
        .unwrap();
    assert_eq!(action_name(a), "XDP_REDIRECT", "a new second");
    assert!(env.dp.maps.ct_get(&flow_key(c, 43001, SNAT, SYN)).is_ok());
}

/// A listener's allow list and the gateway's deny list decide who opens
/// flows (v4 and v6), refused ones are dropped and counted for the
/// listener, a reload changes the lists, and a flow opened before a list
/// tightened goes on (the lists are checked for new flows, as NLB's
/// security groups track connections).
#[test]
fn allow_and_deny_lists_decide_new_flows() {
    let lists = |allow4: &str, deny: &str| {
        CONFIG
            .replacen(
                "target_group = \"nat4\"\n",
                &format!("target_group = \"nat4\"\nallow = [{allow4}]\n"),
                1,
            )
            .replacen(
                "target_group = \"nat6\"\n",
                "target_group = \"nat6\"\nallow = [\"fd00::/64\"]\n",
                1,
            )
            .replacen(
                "new_flow_limit = \"off\"\n",
                &format!("new_flow_limit = \"off\"\ndeny = [{deny}]\n"),
                1,
            )
    };
    let cfg = lists("\"10.0.0.0/24\"", "\"10.0.0.66/32\"");
    let mut env = Env::new(&cfg).unwrap();
    let nat4 = env
        .model
        .vips
        .iter()
        .find(|v| v.listener == "nat4")
        .unwrap()
        .vip_id;
    let blocked = |env: &Env| {
        env.dp
            .counters(lb_userspace::dataplane::Stats::Vip, nat4)
            .blocked
    };
    let run = |env: &mut Env, c: &str, vip: &str, sport: u16| {
        action_name(
            env.run(&Spec::new(c, sport, vip, 80, SYN).build())
                .unwrap()
                .0,
        )
    };
    let before = env.reasons();
    assert_eq!(
        run(&mut env, "10.0.0.2", NAT, 44000),
        "XDP_REDIRECT",
        "allowed"
    );
    assert_eq!(
        run(&mut env, "10.9.0.2", NAT, 44001),
        "XDP_DROP",
        "not allowed"
    );
    assert_eq!(run(&mut env, "10.0.0.66", NAT, 44002), "XDP_DROP", "denied");
    assert_eq!(
        run(&mut env, "fd00::2", "fd64::1", 44003),
        "XDP_REDIRECT",
        "v6 allowed"
    );
    assert_eq!(
        run(&mut env, "fd09::2", "fd64::1", 44004),
        "XDP_DROP",
        "v6 not allowed"
    );
    assert_eq!(
        run(&mut env, "10.9.0.2", "10.100.0.3", 44005),
        "XDP_REDIRECT",
        "another listener has no allow list"
    );
    assert_eq!(
        run(&mut env, "10.0.0.66", "10.100.0.3", 44006),
        "XDP_DROP",
        "the deny list is the gateway's"
    );
    let i = Reason::AclBlocked as usize;
    assert_eq!(env.reasons()[i], before[i] + 4);
    assert_eq!(blocked(&env), 2, "counted for nat4");
    // Tightened: 10.0.0.0/24 no longer allowed, its open flow goes on.
    env.reload(&lists("\"10.0.1.0/24\"", "")).unwrap();
    let ack = Spec::new("10.0.0.2", 44000, NAT, 80, ACK);
    assert_eq!(
        action_name(env.run(&ack.build()).unwrap().0),
        "XDP_REDIRECT"
    );
    assert_eq!(
        run(&mut env, "10.0.0.2", NAT, 44010),
        "XDP_DROP",
        "new flows refused"
    );
    assert_eq!(run(&mut env, "10.0.1.9", NAT, 44011), "XDP_REDIRECT");
    assert_eq!(
        run(&mut env, "10.0.0.66", "10.100.0.3", 44012),
        "XDP_REDIRECT",
        "the deny list emptied"
    );
    // No list at all: everyone.
    env.reload(CONFIG).unwrap();
    assert_eq!(run(&mut env, "10.9.0.2", NAT, 44013), "XDP_REDIRECT");
    assert_eq!(env.dp.maps.acl.keys().count(), 0, "the trie emptied");
}

const SYN_ACK: tests::packet::L4 = tests::packet::L4::Tcp {
    syn: true,
    ack: true,
    fin: false,
    rst: false,
};

/// A packet with a target's source address and port is a reply only when
/// it arrives on the interface that leads to the target: forged on the
/// client side it is passed untouched, and its RST does not count against
/// the target (passive health); with `reply_source_check = false` it is
/// translated.
#[test]
fn replies_are_taken_only_from_the_target_side() {
    let mut env = env();
    let c = "10.0.0.2";
    let syn = Spec::new(c, 45000, NAT, 80, SYN);
    env.run(&syn.build()).unwrap();
    let (t, tport) = expected_target(&env, &syn);
    let id = env.backend_id(&t);
    let mac = backend_mac(last_byte(&t));
    let reply = |l4| Spec::new(&t, tport, c, 45000, l4).macs(mac, GW_BK_MAC);
    let rst = reply(tests::packet::RST).build();
    let before = env.reasons();
    let (a, out) = env.run_on(&rst, "cl").unwrap();
    assert_eq!(action_name(a), "XDP_PASS");
    assert_eq!(out, rst, "untouched");
    let i = Reason::ReplyWrongSide as usize;
    assert_eq!(env.reasons()[i], before[i] + 1);
    assert_eq!(env.dp.passive(id).unwrap().refused, 0, "not a refusal");
    let st = env.dp.maps.ct_get(&flow_key(c, 45000, NAT, SYN)).unwrap();
    assert_ne!(
        st.flags & lb_common::FLOW_F_OPENING,
        0,
        "the flow still opening"
    );
    // The real answer, from the target side.
    env.check(&Fixture::reply(
        "the target's SYN-ACK from its side",
        &reply(SYN_ACK),
        NAT,
        c,
        45000,
        Reason::FwdToClient,
    ));
    // Asymmetric routing: the check off.
    let mut off = Env::new(&CONFIG.replace(
        "new_flow_limit = \"off\"",
        "new_flow_limit = \"off\"\nreply_source_check = false",
    ))
    .unwrap();
    off.run(&syn.build()).unwrap();
    let (a, _) = off.run_on(&reply(SYN_ACK).build(), "cl").unwrap();
    assert_eq!(
        action_name(a),
        "XDP_TX",
        "translated from either side (back out where it came in)"
    );
}

/// A packet too big for the next hop (the target side's MTU 1280) is
/// answered here, as a router on the path would: ICMP "fragmentation
/// needed" (v4, Don't Fragment set) or "packet too big" (v6) from the VIP,
/// quoting the packet as the client sent it, with valid checksums, back out
/// the client's interface.
#[test]
fn too_big_packets_get_the_icmp_error_a_router_sends() {
    let mut env = env();
    env.ns.ip(&["link", "set", "bk", "mtu", "1280"]).unwrap();
    for (c, vip) in [("10.0.0.2", NAT), ("fd00::2", "fd64::1")] {
        let v6 = c.contains(':');
        let mut s = Spec::new(c, 46000, vip, 80, SYN);
        env.run(&s.build()).unwrap();
        s.l4 = ACK;
        s.payload = vec![7u8; 1400];
        let mut input = s.build();
        if !v6 {
            // Don't Fragment, and the header checksum again.
            input[20] |= 0x40;
            input[24] = 0;
            input[25] = 0;
            let c = !ones(&input[14..34]);
            input[24..26].copy_from_slice(&c.to_be_bytes());
        }
        let before = env.reasons();
        let (a, out) = env.run(&input).unwrap();
        assert_eq!(action_name(a), "XDP_TX", "{c}");
        let i = Reason::TooBigSent as usize;
        assert_eq!(env.reasons()[i], before[i] + 1);
        assert_eq!(&out[0..6], &input[6..12], "to the sender's MAC");
        assert_eq!(&out[6..12], &input[0..6], "from ours");
        if v6 {
            assert_eq!(out.len(), 14 + 40 + 8 + 48);
            assert_eq!(
                (out[20], out[54], out[55]),
                (58, 2, 0),
                "ICMPv6 packet too big"
            );
            assert_eq!(&out[22..38], &input[38..54], "from the VIP");
            assert_eq!(&out[38..54], &input[22..38], "to the client");
            assert_eq!(u32::from_be_bytes(out[58..62].try_into().unwrap()), 1280);
            assert_eq!(&out[62..], &input[14..62], "the packet as sent");
            let mut pseudo = out[22..54].to_vec();
            pseudo.extend_from_slice(&[0, 0, 0, 56, 0, 0, 0, 58]);
            pseudo.extend_from_slice(&out[54..]);
            assert_eq!(ones(&pseudo), 0xffff, "ICMPv6 checksum");
        } else {
            assert_eq!(out.len(), 14 + 20 + 8 + 28);
            assert_eq!(ones(&out[14..34]), 0xffff, "IPv4 header checksum");
            assert_eq!(
                (out[23], out[34], out[35]),
                (1, 3, 4),
                "fragmentation needed"
            );
            assert_eq!(&out[26..30], &input[30..34], "from the VIP");
            assert_eq!(&out[30..34], &input[26..30], "to the client");
            assert_eq!(u16::from_be_bytes([out[40], out[41]]), 1280, "next-hop MTU");
            assert_eq!(&out[42..], &input[14..42], "the packet as sent");
            assert_eq!(ones(&out[34..]), 0xffff, "ICMP checksum");
        }
    }
}

/// `frame` with an 802.1Q tag (VLAN `vid`) after its MACs.
fn tagged(frame: &[u8], vid: u16) -> Vec<u8> {
    let mut t = frame[..12].to_vec();
    t.extend_from_slice(&0x8100u16.to_be_bytes());
    t.extend_from_slice(&vid.to_be_bytes());
    t.extend_from_slice(&frame[12..]);
    t
}

/// A VLAN-tagged frame to a VIP is translated and left to the kernel with
/// its Ethernet header and tag untouched (and its TTL: the kernel's hop
/// decrements it), so the VLAN device takes it and forwards it; a frame
/// whose next hop is a device XDP cannot transmit on goes the same way.
/// (Before, its MACs were rewritten for the next hop and the kernel
/// dropped the frame as another host's.)
#[test]
fn tagged_frames_are_translated_and_left_to_the_kernel() {
    let mut env = env();
    let s = Spec::new("10.0.0.2", 47000, NAT, 80, SYN);
    let (t, tport) = expected_target(&env, &s);
    let input = tagged(&s.build(), 100);
    let mut want = s.forwarded("10.0.0.2", 47000, &t, tport, [0; 6], [0; 6]);
    want.ttl += 1;
    let mut want = tagged(&want.build(), 100);
    want[..12].copy_from_slice(&input[..12]);
    env.check(&Fixture {
        desc: "a tagged frame: translated, L2 and TTL untouched, to the kernel".into(),
        input,
        action: XDP_PASS,
        output: Some(want),
        reason: Some(Reason::KernelForwards),
    });
    // The target side's device is no longer one XDP transmits on.
    {
        let _in = env.ns.enter().unwrap();
        env.dp.mark_tx("bk", false);
    }
    let s = Spec::new("10.0.0.2", 47001, NAT, 80, SYN);
    let before = env.reasons();
    let (a, out) = env.run(&s.build()).unwrap();
    assert_eq!(action_name(a), "XDP_PASS");
    assert_eq!(&out[..12], &s.build()[..12], "MACs untouched");
    let i = Reason::KernelForwards as usize;
    assert_eq!(env.reasons()[i], before[i] + 1);
}

/// An ICMP echo request to a VIP's address is answered here (from the VIP,
/// back out the interface it came in on, checksums right), v4 and v6; one
/// to another address is the kernel's, and `answer_ping = false` leaves
/// them all to it.
#[test]
fn pings_to_a_vip_are_answered() {
    use etherparse::{Icmpv4Type, Icmpv6Type, PacketBuilder, SlicedPacket, TransportSlice};
    let req = |src: &str, dst: &str| {
        let mut out = Vec::new();
        let eth = PacketBuilder::ethernet2(CLIENT_MAC, GW_CL_MAC);
        match (src.parse().unwrap(), dst.parse().unwrap()) {
            (std::net::IpAddr::V4(s), std::net::IpAddr::V4(d)) => eth
                .ipv4(s.octets(), d.octets(), 64)
                .icmpv4_echo_request(7, 1)
                .write(&mut out, b"ping!")
                .unwrap(),
            (std::net::IpAddr::V6(s), std::net::IpAddr::V6(d)) => eth
                .ipv6(s.octets(), d.octets(), 64)
                .icmpv6_echo_request(7, 1)
                .write(&mut out, b"ping!")
                .unwrap(),
            _ => unreachable!(),
        }
        out
    };
    let mut env = env();
    for (c, vip) in [("10.0.0.2", NAT), ("fd00::2", "fd64::1")] {
        let (a, out) = env.run(&req(c, vip)).unwrap();
        assert_eq!(action_name(a), "XDP_TX", "{vip}");
        let p = SlicedPacket::from_ethernet(&out).unwrap();
        let eth = p.link.as_ref().unwrap().to_header().unwrap();
        let eth = eth.ethernet2().unwrap();
        assert_eq!((eth.destination, eth.source), (CLIENT_MAC, GW_CL_MAC));
        match p.transport.unwrap() {
            TransportSlice::Icmpv4(i) => {
                assert!(matches!(i.icmp_type(), Icmpv4Type::EchoReply(_)));
                assert_eq!(i.checksum(), i.icmp_type().calc_checksum(i.payload()));
                let ip = p.net.unwrap();
                let h = match ip {
                    etherparse::NetSlice::Ipv4(h) => h.header().to_header(),
                    _ => unreachable!(),
                };
                assert_eq!(h.header_checksum, h.calc_header_checksum(), "IPv4 checksum");
                assert_eq!((h.source, h.destination), ([10, 100, 0, 1], [10, 0, 0, 2]));
            }
            TransportSlice::Icmpv6(i) => {
                assert!(matches!(i.icmp_type(), Icmpv6Type::EchoReply(_)));
                let ip = match p.net.unwrap() {
                    etherparse::NetSlice::Ipv6(h) => h.header().to_header(),
                    _ => unreachable!(),
                };
                let want = i
                    .icmp_type()
                    .calc_checksum(ip.source, ip.destination, i.payload())
                    .unwrap();
                assert_eq!(i.checksum(), want, "ICMPv6 checksum");
                assert_eq!(
                    ip.source,
                    "fd64::1".parse::<std::net::Ipv6Addr>().unwrap().octets()
                );
            }
            t => panic!("{t:?}"),
        }
    }
    let (a, _) = env.run(&req("10.0.0.2", "10.0.0.1")).unwrap();
    assert_eq!(action_name(a), "XDP_PASS", "not a VIP: the kernel's");
    let mut off = Env::new(&CONFIG.replace(
        "new_flow_limit = \"off\"",
        "new_flow_limit = \"off\"\nanswer_ping = false",
    ))
    .unwrap();
    let (a, _) = off.run(&req("10.0.0.2", NAT)).unwrap();
    assert_eq!(action_name(a), "XDP_PASS", "answer_ping = false");
}

/// A connection set up through another gateway (no state here): its
/// target's data or ACK, from the target's side, makes this gateway track
/// it, so it keeps its target through a ring change; a RST does not.
#[test]
fn answered_connections_from_another_gateway_are_adopted() {
    let mut env = env();
    let c = "10.0.0.2";
    let s = Spec::new(c, 48000, NAT, 80, ACK);
    let (t, tport) = expected_target(&env, &s);
    let mac = backend_mac(last_byte(&t));
    let from_target = |l4| Spec::new(&t, tport, c, 48000, l4).macs(mac, GW_BK_MAC);
    let (a, _) = env.run(&from_target(tests::packet::RST).build()).unwrap();
    assert_eq!(action_name(a), "XDP_REDIRECT", "translated by the ring");
    assert!(
        env.dp.maps.ct_get(&flow_key(c, 48000, NAT, SYN)).is_err(),
        "a RST: not adopted"
    );
    let before = env.reasons();
    let (a, _) = env.run(&from_target(ACK).build()).unwrap();
    assert_eq!(action_name(a), "XDP_REDIRECT");
    let st = env
        .dp
        .maps
        .ct_get(&flow_key(c, 48000, NAT, SYN))
        .expect("adopted");
    assert_eq!(st.backend_id, env.backend_id(&t));
    let i = Reason::Adopted as usize;
    assert_eq!(env.reasons()[i], before[i] + 1);
    // The target leaves the ring: the adopted flow keeps it.
    let id = env.backend_id(&t);
    env.unhealthy.insert(id, true);
    env.sync().unwrap();
    let (_, out) = env.run(&s.build()).unwrap();
    assert_eq!(out_dst(&out), t, "kept its target");
}
