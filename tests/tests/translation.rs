//! Fixtures for the translation state: which replies are translated (the
//! flow in conntrack, a direct flow remembered, the ring's pick for a flow
//! another gateway set up), how the CLOSING mark moves, and who owns a SNAT
//! port. Root only; run serially through `cargo xtask test`.

use lb_common::{FlowKey, FlowState, Reason, SnatKey, SnatVal, FLOW_F_CLOSING};
use lb_userspace::model::addr_words;
use tests::{
    fixture::*,
    packet::{off, Spec, ACK, FIN, L4, RST, SYN},
};

const SYN_ACK: L4 = L4::Tcp {
    syn: true,
    ack: true,
    fin: false,
    rst: false,
};

fn nat_vip(v6: bool) -> &'static str {
    if v6 {
        "fd64::1"
    } else {
        "10.100.0.1"
    }
}

fn target(v6: bool, n: u8) -> String {
    if v6 {
        format!("fd01::{n}")
    } else {
        format!("10.1.0.{n}")
    }
}

/// A client port from `from` on whose flow to `vip:80` the ring picks
/// `want` (the target address).
fn port_for(env: &Env, c: &str, vip: &str, l4: L4, want: &str, from: u16) -> u16 {
    (from..from + 5000)
        .find(|&p| expected_target(env, &Spec::new(c, p, vip, 80, l4)).0 == want)
        .unwrap_or_else(|| panic!("no port of {c} maps {vip} to {want}"))
}

/// A client port on whose flow to `vip:80` the ring picks another target.
fn port_not_for(env: &Env, c: &str, vip: &str, l4: L4, not: &str, from: u16) -> u16 {
    (from..from + 5000)
        .find(|&p| expected_target(env, &Spec::new(c, p, vip, 80, l4)).0 != not)
        .expect("some port maps elsewhere")
}

fn reply_l4(l4: L4) -> L4 {
    if l4 == L4::Udp {
        L4::Udp
    } else {
        SYN_ACK
    }
}

fn flow(env: &Env, key: &FlowKey) -> FlowState {
    env.dp.maps.ct_get(key).expect("flow is tracked")
}

/// Clients reaching a target directly, through the gateway, on the port it
/// serves a `nat` listener on: both directions pass untouched, even when the
/// ring would give that very tuple to that target.
#[test]
fn direct_flows_to_targets_pass_both_ways() {
    let mut env = env();
    for v6 in [false, true] {
        for l4 in [SYN, L4::Udp] {
            let (c, vip, t) = (client_ip(v6), nat_vip(v6), target(v6, 11));
            let tmac = backend_mac(last_byte(&t));
            let sport = port_for(&env, c, vip, l4, &t, 40000);
            env.check(&Fixture {
                desc: format!("{c}:{sport} -> {t}:8080 {l4:?} (not a VIP) passes"),
                input: Spec::new(c, sport, &t, 8080, l4)
                    .macs(CLIENT_MAC, GW_CL_MAC)
                    .build(),
                action: XDP_PASS,
                output: None,
                reason: Some(Reason::DirectToTarget),
            });
            env.check(&Fixture {
                desc: format!("its reply {t}:8080 -> {c}:{sport} passes untranslated"),
                input: Spec::new(&t, 8080, c, sport, reply_l4(l4))
                    .macs(tmac, GW_BK_MAC)
                    .build(),
                action: XDP_PASS,
                output: None,
                reason: Some(Reason::DirectToTarget),
            });
            // No state at all: a flow another gateway set up. Translated
            // when the ring picks this target for the tuple, else not ours.
            let other = port_for(&env, c, vip, l4, &t, sport + 1);
            let r = Spec::new(&t, 8080, c, other, reply_l4(l4)).macs(tmac, GW_BK_MAC);
            env.check(&Fixture::reply(
                format!(
                    "reply {t}:8080 -> {c}:{other}, no local flow, ring picks {t}: from the VIP"
                ),
                &r,
                vip,
                c,
                other,
                Reason::ReplyStateless,
            ));
            let elsewhere = port_not_for(&env, c, vip, l4, &t, 40000);
            env.check(&Fixture {
                desc: format!(
                    "reply {t}:8080 -> {c}:{elsewhere}, ring picks another target: passes"
                ),
                input: Spec::new(&t, 8080, c, elsewhere, reply_l4(l4))
                    .macs(tmac, GW_BK_MAC)
                    .build(),
                action: XDP_PASS,
                output: None,
                reason: Some(Reason::NotVip),
            });
        }
    }
}

/// A client that reaches a target both through the VIP and directly from
/// the same address and port (a reused source port, a resolver on a fixed
/// port): a reply follows the direction the client used last.
#[test]
fn a_reused_client_port_follows_its_latest_direction() {
    let mut env = env();
    let pause = || std::thread::sleep(std::time::Duration::from_millis(30));
    for v6 in [false, true] {
        for l4 in [SYN, L4::Udp] {
            let (c, vip, t) = (client_ip(v6), nat_vip(v6), target(v6, 11));
            let tmac = backend_mac(last_byte(&t));
            let sport = port_for(&env, c, vip, l4, &t, 43000);
            let (a, _) = env.run(&Spec::new(c, sport, vip, 80, l4).build()).unwrap();
            assert_eq!(action_name(a), "XDP_REDIRECT");
            pause();
            let (a, _) = env
                .run(
                    &Spec::new(c, sport, &t, 8080, l4)
                        .macs(CLIENT_MAC, GW_CL_MAC)
                        .build(),
                )
                .unwrap();
            assert_eq!(action_name(a), "XDP_PASS", "the direct flow passes");
            let reply = Spec::new(&t, 8080, c, sport, reply_l4(l4)).macs(tmac, GW_BK_MAC);
            env.check(&Fixture {
                desc: format!("{t}:8080 -> {c}:{sport} {l4:?}, direct flow newer: untranslated"),
                input: reply.clone().build(),
                action: XDP_PASS,
                output: None,
                reason: Some(Reason::DirectToTarget),
            });
            pause();
            let (a, _) = env
                .run(&Spec::new(c, sport, vip, 80, reply_l4(l4)).build())
                .unwrap();
            assert_eq!(action_name(a), "XDP_REDIRECT");
            env.check(&Fixture::reply(
                format!("{t}:8080 -> {c}:{sport} {l4:?}, VIP flow newer: from the VIP"),
                &reply,
                vip,
                c,
                sport,
                Reason::FwdToClient,
            ));
        }
    }
}

/// A flow in conntrack is translated by its state, whatever the ring says
/// now (its target left the ring but still serves it).
#[test]
fn tracked_replies_follow_conntrack_not_the_ring() {
    let mut env = env();
    let (c, vip, t) = ("10.0.0.2", "10.100.0.1", "10.1.0.11");
    let sport = port_for(&env, c, vip, SYN, t, 41000);
    let (a, _) = env.run(&Spec::new(c, sport, vip, 80, SYN).build()).unwrap();
    assert_eq!(action_name(a), "XDP_REDIRECT");
    let id = env.backend_id(t);
    env.unhealthy.insert(id, true);
    env.sync().unwrap();
    let before = env.reasons();
    let r = Spec::new(t, 8080, c, sport, ACK).macs(backend_mac(11), GW_BK_MAC);
    env.check(&Fixture::reply(
        "reply of a tracked flow whose target left the ring",
        &r,
        vip,
        c,
        sport,
        Reason::FwdToClient,
    ));
    let i = Reason::ReplyStateless as usize;
    assert_eq!(
        env.reasons()[i],
        before[i],
        "{} moved",
        Reason::ALL[i].name()
    );
}

/// One target port behind two `nat` listeners (NLB allows a target in
/// several groups): each reply comes from the VIP its flow was sent to.
#[test]
fn a_target_serves_two_nat_listeners() {
    let cfg = CONFIG.replace(
        "[[listener]]\nname = \"nat6\"",
        "[[listener]]\nname = \"nat4b\"\naddress = \"10.100.0.4\"\nport = 80\nprotocol = \"tcp\"\ntarget_group = \"nat4\"\n\n[[listener]]\nname = \"nat6\"",
    );
    let mut env = Env::new(&cfg).unwrap();
    let (c, t) = ("10.0.0.2", "10.1.0.11");
    for (vip, from) in [("10.100.0.1", 42000u16), ("10.100.0.4", 43000)] {
        let sport = port_for(&env, c, vip, SYN, t, from);
        let (a, _) = env.run(&Spec::new(c, sport, vip, 80, SYN).build()).unwrap();
        assert_eq!(action_name(a), "XDP_REDIRECT");
        let r = Spec::new(t, 8080, c, sport, SYN_ACK).macs(backend_mac(11), GW_BK_MAC);
        env.check(&Fixture::reply(
            format!("reply of {c}:{sport} -> {vip}:80 comes from {vip}"),
            &r,
            vip,
            c,
            sport,
            Reason::FwdToClient,
        ));
    }
}

/// FIN/RST mark a flow closing; a SYN on a closing flow is a new connection
/// (fresh pick); a flow that keeps sending after a RST keeps its target.
#[test]
fn closing_mark_and_reused_tuples() {
    let cfg = CONFIG.replace(
        "snat_ports = \"20000-32767\"",
        "snat_ports = \"20000-32767\"\ntcp_closing_timeout = \"1s\"",
    );
    let mut env = Env::new(&cfg).unwrap();
    let (c, vip, t) = ("10.0.0.2", "10.100.0.1", "10.1.0.11");
    let closed = port_for(&env, c, vip, SYN, t, 44000);
    let reset = port_for(&env, c, vip, SYN, t, closed + 1);
    for (sport, end) in [(closed, FIN), (reset, RST)] {
        for l4 in [SYN, end] {
            env.run(&Spec::new(c, sport, vip, 80, l4).build()).unwrap();
        }
        let st = flow(&env, &flow_key(c, sport, vip, SYN));
        assert_ne!(st.flags & FLOW_F_CLOSING, 0, "{end:?} marks closing");
    }
    // .11 leaves the ring but keeps its flows.
    let id = env.backend_id(t);
    env.unhealthy.insert(id, true);
    env.sync().unwrap();
    let dst = |env: &mut Env, sport: u16, l4: L4| {
        let (a, out) = env.run(&Spec::new(c, sport, vip, 80, l4).build()).unwrap();
        assert_eq!(action_name(a), "XDP_REDIRECT");
        out[off::ETH + 19]
    };
    assert_eq!(dst(&mut env, closed, ACK), 11, "the last ACK of a close");
    assert_ne!(
        dst(&mut env, closed, SYN),
        11,
        "a SYN on a closing flow is a new connection: fresh pick"
    );
    let st = flow(&env, &flow_key(c, closed, vip, SYN));
    assert_eq!(st.flags & FLOW_F_CLOSING, 0, "the new flow is not closing");
    assert_ne!(st.backend_id, id);
    // Past the closing timeout the reset flow still sends: it is alive
    // (the RST was spoofed), keeps its target and loses the mark.
    std::thread::sleep(std::time::Duration::from_millis(2200));
    assert_eq!(dst(&mut env, reset, ACK), 11, "data after a RST");
    let st = flow(&env, &flow_key(c, reset, vip, SYN));
    assert_eq!(st.flags & FLOW_F_CLOSING, 0, "the mark is cleared");
}

fn snat_key(port: u16, t: &str) -> SnatKey {
    SnatKey {
        gw_addr: addr_words("10.1.0.1".parse().unwrap()).0,
        backend_addr: addr_words(t.parse().unwrap()).0,
        gw_port: port.to_be(),
        backend_port: 9090u16.to_be(),
        proto: 6,
        family: 4,
        _pad: [0; 2],
    }
}

fn out_sport(out: &[u8]) -> u16 {
    u16::from_be_bytes([out[off::V4_L4], out[off::V4_L4 + 1]])
}

fn out_target(out: &[u8]) -> String {
    std::net::Ipv4Addr::new(out[30], out[31], out[32], out[33]).to_string()
}

/// A one-port range: the port is held while its flow is open or closing,
/// free once the closing timeout passed, and then taken by compare-and-swap.
#[test]
fn snat_port_is_released_by_close() {
    let cfg = CONFIG.replace(
        "snat_ports = \"20000-32767\"",
        "snat_ports = \"20000-20000\"\ntcp_closing_timeout = \"1s\"",
    );
    let mut env = Env::new(&cfg).unwrap();
    let (c, vip) = ("10.0.0.2", "10.100.0.2");
    // Two flows to the same target (the port is per target).
    let a = 46000;
    let t = expected_target(&env, &Spec::new(c, a, vip, 80, SYN)).0;
    let b = port_for(&env, c, vip, SYN, &t, a + 1);
    let (act, out) = env.run(&Spec::new(c, a, vip, 80, SYN).build()).unwrap();
    assert_eq!(action_name(act), "XDP_REDIRECT");
    assert_eq!(out_sport(&out), 20000);
    let exhausted = Fixture {
        desc: "second flow while the only port is held: dropped, counted".into(),
        input: Spec::new(c, b, vip, 80, SYN).build(),
        action: XDP_DROP,
        output: Some(Vec::new()),
        reason: Some(Reason::SnatExhausted),
    };
    let check_drop = |env: &mut Env| {
        let before = env.reasons();
        let (act, _) = env.run(&exhausted.input).unwrap();
        assert_eq!(action_name(act), "XDP_DROP", "{}", exhausted.desc);
        let i = Reason::SnatExhausted as usize;
        assert_eq!(env.reasons()[i], before[i] + 1);
    };
    check_drop(&mut env);
    env.run(&Spec::new(c, a, vip, 80, FIN).build()).unwrap();
    check_drop(&mut env);
    std::thread::sleep(std::time::Duration::from_millis(2200));
    let (act, out) = env.run(&Spec::new(c, b, vip, 80, SYN).build()).unwrap();
    assert_eq!(
        action_name(act),
        "XDP_REDIRECT",
        "the closed flow's port is free"
    );
    assert_eq!(out_sport(&out), 20000);
    let v: SnatVal = env.dp.maps.snat.get(&snat_key(20000, &t), 0).unwrap();
    assert_eq!(
        u16::from_be(v.client_port),
        b,
        "the entry is the new flow's"
    );
    assert_eq!(v.gen, 1, "taken over by compare-and-swap");
    let r = Spec::new(&t, 9090, "10.1.0.1", 20000, ACK).macs(backend_mac(last_byte(&t)), GW_BK_MAC);
    env.check(&Fixture::reply(
        "the reply reaches the new flow's client",
        &r,
        vip,
        c,
        b,
        Reason::FwdToClient,
    ));
}

/// A conntrack hit keeps its SNAT entry: an evicted entry is put back; an
/// entry another flow took is noticed, and the flow gets a port of its own.
#[test]
fn snat_hit_keeps_its_entry() {
    let mut env = env();
    let (c, vip, sport) = ("10.0.0.2", "10.100.0.2", 47000);
    let p = Spec::new(c, sport, vip, 80, L4::Udp);
    let (_, out) = env.run(&p.build()).unwrap();
    let (port, t) = (out_sport(&out), out_target(&out));
    let mut key_udp = snat_key(port, &t);
    key_udp.proto = 17;
    env.dp.maps.snat.remove(&key_udp).unwrap();
    let (_, out) = env.run(&p.build()).unwrap();
    assert_eq!(out_sport(&out), port, "same port");
    let v: SnatVal = env
        .dp
        .maps
        .snat
        .get(&key_udp, 0)
        .expect("the hit put the evicted entry back");
    assert_eq!(u16::from_be(v.client_port), sport);
    // Another client's (live) flow holds the port now.
    let mut stolen = v;
    stolen.client_port = 1u16.to_be();
    env.dp.maps.snat.insert(key_udp, stolen, 0).unwrap();
    let ours = flow(&env, &flow_key(c, sport, vip, L4::Udp));
    env.dp
        .maps
        .ct_insert(&flow_key(c, 1, vip, L4::Udp), &ours)
        .unwrap();
    let before = env.reasons();
    let (_, out) = env.run(&p.build()).unwrap();
    let i = Reason::SnatLost as usize;
    assert_eq!(env.reasons()[i], before[i] + 1, "snat_lost counted");
    assert_ne!(out_sport(&out), port, "a port of its own");
    let v: SnatVal = env.dp.maps.snat.get(&key_udp, 0).unwrap();
    assert_eq!(
        u16::from_be(v.client_port),
        1,
        "the other flow keeps its port"
    );
}

/// A range of 7919 ports (the old fixed probe stride): each flow's probes
/// are distinct ports, so 400 flows all find one.
#[test]
fn snat_probes_are_distinct_in_any_range() {
    let cfg = CONFIG.replace(
        "snat_ports = \"20000-32767\"",
        "snat_ports = \"20000-27918\"",
    );
    let mut env = Env::new(&cfg).unwrap();
    let mut ports = std::collections::HashSet::new();
    let before = env.reasons();
    for sport in 0..400u16 {
        let (a, out) = env
            .run(&Spec::new("10.0.0.2", 10000 + sport, "10.100.0.2", 80, SYN).build())
            .unwrap();
        assert_eq!(action_name(a), "XDP_REDIRECT", "flow {sport}");
        assert!(ports.insert((out_target(&out), out_sport(&out))));
    }
    let i = Reason::SnatExhausted as usize;
    assert_eq!(env.reasons()[i], before[i]);
}
