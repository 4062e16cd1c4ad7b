//! Passive health and SYN redispatch in the XDP program, on crafted
//! packets (BPF_PROG_TEST_RUN): a target's RST to a first SYN, a SYN
//! retransmitted without an answer, the suspect mark new flows avoid, and
//! what must stay as it was (an established flow's RST, redispatch off).
//! Root only; run serially through `cargo xtask test`.

use std::net::IpAddr;

use lb_common::{FlowKey, Reason, FLOW_F_CLOSING, FLOW_F_REFUSED};
use lb_userspace::{dataplane::Dataplane as _, model::addr_words};
use tests::{
    fixture::*,
    packet::{Spec, L4, SYN},
};

const SYN_ACK: L4 = L4::Tcp {
    syn: true,
    ack: true,
    fin: false,
    rst: false,
};
const RST_ACK: L4 = L4::Tcp {
    syn: false,
    ack: true,
    fin: false,
    rst: true,
};

/// Where a forwarded frame goes (its IP destination).
fn dst_of(frame: &[u8]) -> IpAddr {
    use etherparse::{NetSlice, SlicedPacket};
    match SlicedPacket::from_ethernet(frame).expect("a frame").net {
        Some(NetSlice::Ipv4(ip)) => IpAddr::V4(ip.header().destination_addr()),
        Some(NetSlice::Ipv6(ip)) => IpAddr::V6(ip.header().destination_addr()),
        _ => panic!("not IP"),
    }
}

/// A client SYN to `vip:80` from `sport`.
fn syn(v6: bool, sport: u16, vip: &str) -> Spec {
    Spec::new(client_ip(v6), sport, vip, 80, SYN).macs(CLIENT_MAC, GW_CL_MAC)
}

/// A packet from target `t:tport` to the client (`nat`: its own address).
fn from_target(t: &str, tport: u16, to: &str, port: u16, l4: L4) -> Spec {
    Spec::new(t, tport, to, port, l4).macs(backend_mac(last_byte(t)), GW_BK_MAC)
}

/// Client ports (from 40000) whose new flow the ring gives to `target`.
fn ports_to(env: &Env, v6: bool, vip: &str, target: &str, n: usize) -> Vec<u16> {
    (40000u16..50000)
        .filter(|&p| expected_target(env, &syn(v6, p, vip)).0 == target)
        .take(n)
        .collect()
}

/// The backend id of target `addr:port` (an address may serve groups on
/// several ports).
fn id_of(env: &Env, addr: &str, port: u16) -> u32 {
    let a: IpAddr = addr.parse().unwrap();
    env.model
        .backends
        .values()
        .find(|b| b.key.address == a && b.key.port == port)
        .map(|b| b.id)
        .expect("a backend")
}

fn flow_flags(env: &Env, p: &Spec) -> u32 {
    let (src, family) = addr_words(p.src);
    let (dst, _) = addr_words(p.dst);
    let key = FlowKey {
        src,
        dst,
        sport: p.sport.to_be(),
        dport: p.dport.to_be(),
        proto: 6,
        family,
        _pad: [0; 2],
    };
    env.dp.maps.ct_get(&key).expect("flow is tracked").flags
}

fn run(env: &mut Env, p: &Spec) -> (u32, Vec<u8>) {
    env.run(&p.build()).expect("test run")
}

/// The redispatch cycle, `nat` v4 and v6: the refusal is dropped, the
/// client's retransmission goes elsewhere and is answered there.
#[test]
fn refused_first_syn_is_dropped_and_the_retry_goes_elsewhere() {
    let mut env = env();
    for (v6, vip) in [(false, "10.100.0.1"), (true, "fd64::1")] {
        let s = syn(v6, 41000, vip);
        let c = client_ip(v6);
        let (t, tport) = expected_target(&env, &s);
        let id = env.backend_id(&t);
        let (a, out) = run(&mut env, &s);
        assert_eq!(action_name(a), "XDP_REDIRECT");
        assert_eq!(dst_of(&out).to_string(), t);

        let before = env.reasons();
        let (a, _) = run(&mut env, &from_target(&t, tport, c, 41000, RST_ACK));
        assert_eq!(
            action_name(a),
            "XDP_DROP",
            "{t} refused: the RST must not reach the client"
        );
        assert_eq!(
            env.reasons()[Reason::SynRedispatch as usize],
            before[Reason::SynRedispatch as usize] + 1
        );
        assert_ne!(flow_flags(&env, &s) & FLOW_F_REFUSED, 0);
        let h = env.dp.passive(id).expect("XDP has passive health");
        assert_eq!((h.refused, h.streak), (1, 1));
        let vip_id = env
            .model
            .vips
            .iter()
            .find(|v| v.listener == if v6 { "nat6" } else { "nat4" } && v.key.proto == 6)
            .unwrap()
            .vip_id;
        let vc = env.dp.counters(lb_userspace::dataplane::Stats::Vip, vip_id);
        assert_eq!(
            vc.target_resets, 1,
            "a dropped refusal is still a target's reset"
        );

        // The client retransmits its SYN: picked again, not on `t`.
        let (a, out) = run(&mut env, &s);
        assert_eq!(action_name(a), "XDP_REDIRECT");
        let moved_to = dst_of(&out).to_string();
        assert_ne!(
            moved_to, t,
            "the retry must avoid the target that refused it"
        );
        let want = ring_pick(&env, &s, &|b| b == id);
        assert_eq!(
            env.backend_id(&moved_to),
            want,
            "the next slots' target, as pick_avoiding says"
        );
        assert_eq!(
            env.reasons()[Reason::SynRetryMoved as usize],
            before[Reason::SynRetryMoved as usize] + 1
        );

        // Its SYN-ACK is the flow's, translated back from the VIP.
        let (a, out) = run(&mut env, &from_target(&moved_to, tport, c, 41000, SYN_ACK));
        assert_eq!(action_name(a), "XDP_REDIRECT");
        assert_eq!(dst_of(&out).to_string(), c);
        let h2 = env.dp.passive(want).expect("health");
        assert_eq!((h2.answered, h2.streak), (1, 0));
    }
}

/// `passive_failures` refusals in a row trip the target: new flows that
/// the ring gives it go to the next slots' targets until the daemon puts
/// it back (here: out of the ring and in again, as after passed checks).
#[test]
fn refusals_in_a_row_make_the_target_suspect_for_new_flows() {
    let mut env = env();
    let vip = "10.100.0.1";
    let (t, tport) = expected_target(&env, &syn(false, 40000, vip));
    let id = env.backend_id(&t);
    let ports = ports_to(&env, false, vip, &t, 3 + 30);
    let (refusing, later) = ports.split_at(3);
    for (i, &p) in refusing.iter().enumerate() {
        run(&mut env, &syn(false, p, vip));
        let (a, _) = run(&mut env, &from_target(&t, tport, "10.0.0.2", p, RST_ACK));
        assert_eq!(action_name(a), "XDP_DROP");
        let h = env.dp.passive(id).unwrap();
        assert_eq!(
            h.trips,
            (i == 2) as u64,
            "trips at the third refusal (the default threshold)"
        );
    }
    let h = env.dp.passive(id).unwrap();
    assert!(h.suspect_until_ns > 0);
    assert_eq!(h.trip_streak, 3);
    for &p in later {
        let s = syn(false, p, vip);
        let (a, out) = run(&mut env, &s);
        assert_eq!(action_name(a), "XDP_REDIRECT");
        let got = env.backend_id(&dst_of(&out).to_string());
        assert_ne!(got, id, "port {p}: a new flow went to the suspect target");
        assert_eq!(got, ring_pick(&env, &s, &|b| b == id));
    }
    // An answer from another target does not clear the mark, nor does one
    // more failure trip it twice.
    assert_eq!(env.dp.passive(id).unwrap().trips, 1);

    // Back in service by the daemon's word: the mark is cleared.
    env.unhealthy.insert(id, true);
    env.sync().unwrap();
    env.unhealthy.clear();
    env.sync().unwrap();
    assert_eq!(env.dp.passive(id).unwrap().suspect_until_ns, 0);
    let s = syn(false, 49999, vip);
    let (want, _) = expected_target(&env, &s);
    let (_, out) = run(&mut env, &s);
    assert_eq!(dst_of(&out).to_string(), want, "the ring's own pick again");
}

/// With `syn_redispatch = false` the refusal reaches the client, and is
/// still counted for passive health.
#[test]
fn without_redispatch_the_refusal_passes_and_still_counts() {
    let mut env = env();
    let cfg = CONFIG.replace(
        "[[target_group]]\nname = \"nat4\"\n",
        "[[target_group]]\nname = \"nat4\"\nsyn_redispatch = false\n",
    );
    assert_ne!(cfg, CONFIG);
    env.reload(&cfg).unwrap();
    let s = syn(false, 42000, "10.100.0.1");
    let (t, tport) = expected_target(&env, &s);
    run(&mut env, &s);
    let r = from_target(&t, tport, "10.0.0.2", 42000, RST_ACK);
    let (a, out) = run(&mut env, &r);
    assert_eq!(action_name(a), "XDP_REDIRECT", "translated to the client");
    assert_eq!(dst_of(&out).to_string(), "10.0.0.2");
    assert_ne!(flow_flags(&env, &s) & FLOW_F_CLOSING, 0);
    assert_eq!(env.dp.passive(env.backend_id(&t)).unwrap().refused, 1);
}

/// Only a flow's first answer is passive health: the RST of an
/// established flow reaches the client, whatever the settings.
#[test]
fn an_established_flows_rst_passes() {
    let mut env = env();
    let s = syn(false, 43000, "10.100.0.1");
    let (t, tport) = expected_target(&env, &s);
    run(&mut env, &s);
    run(
        &mut env,
        &from_target(&t, tport, "10.0.0.2", 43000, SYN_ACK),
    );
    let (a, _) = run(
        &mut env,
        &from_target(&t, tport, "10.0.0.2", 43000, RST_ACK),
    );
    assert_eq!(action_name(a), "XDP_REDIRECT");
    let h = env.dp.passive(env.backend_id(&t)).unwrap();
    assert_eq!((h.answered, h.refused), (1, 0));
}

/// A flow whose SYN-ACK came back through another gateway: the client's
/// ACK ends its opening, so a later RST of the target is not a refusal.
#[test]
fn the_clients_ack_ends_the_opening() {
    let mut env = env();
    let s = syn(false, 43100, "10.100.0.1");
    let (t, tport) = expected_target(&env, &s);
    run(&mut env, &s);
    let mut ack = s.clone();
    ack.l4 = tests::packet::ACK;
    run(&mut env, &ack);
    let (a, _) = run(
        &mut env,
        &from_target(&t, tport, "10.0.0.2", 43100, RST_ACK),
    );
    assert_eq!(
        action_name(a),
        "XDP_REDIRECT",
        "an established flow's RST passes"
    );
    assert_eq!(env.dp.passive(env.backend_id(&t)).unwrap().refused, 0);
}

/// A SYN retransmitted without an answer counts against its target and,
/// with redispatch, goes to another one; without, it stays.
#[test]
fn unanswered_syn_retry_counts_and_moves() {
    let mut env = env();
    let s = syn(false, 44000, "10.100.0.1");
    let (t, _) = expected_target(&env, &s);
    let id = env.backend_id(&t);
    run(&mut env, &s);
    // A duplicate at once is not a retry.
    let (_, out) = run(&mut env, &s);
    assert_eq!(dst_of(&out).to_string(), t);
    assert_eq!(env.dp.passive(id).unwrap().unanswered, 0);
    // Past `RETRY_MIN_NS` (a real retransmission comes after 1 s).
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (a, out) = run(&mut env, &s);
    assert_eq!(action_name(a), "XDP_REDIRECT");
    assert_ne!(dst_of(&out).to_string(), t, "the retry moved");
    assert_eq!(env.dp.passive(id).unwrap().unanswered, 1);
    // The old target's late SYN-ACK must not reach the client: it would
    // take it, then send its ACK to the new target.
    let tport = 8080;
    let before = env.reasons()[Reason::SynRedispatch as usize];
    let (a, _) = run(
        &mut env,
        &from_target(&t, tport, "10.0.0.2", 44000, SYN_ACK),
    );
    assert_eq!(
        action_name(a),
        "XDP_DROP",
        "a moved flow's old target answering late"
    );
    assert_eq!(env.reasons()[Reason::SynRedispatch as usize], before + 1);

    // A target that answers other flows meanwhile is not failing: a
    // client resending its SYN (e.g. one the target dropped for a bad
    // checksum) does not count against it.
    let others = ports_to(&env, false, "10.100.0.1", &t, 2);
    let (slow, fast) = (others[0], others[1]);
    run(&mut env, &syn(false, slow, "10.100.0.1"));
    std::thread::sleep(std::time::Duration::from_millis(300));
    run(&mut env, &syn(false, fast, "10.100.0.1"));
    run(&mut env, &from_target(&t, tport, "10.0.0.2", fast, SYN_ACK));
    run(&mut env, &syn(false, slow, "10.100.0.1"));
    assert_eq!(
        env.dp.passive(id).unwrap().unanswered,
        1,
        "answered since: not counted"
    );

    let cfg = CONFIG.replace(
        "[[target_group]]\nname = \"nat4\"\n",
        "[[target_group]]\nname = \"nat4\"\nsyn_redispatch = false\n",
    );
    env.reload(&cfg).unwrap();
    let s = syn(false, 44001, "10.100.0.1");
    let (t, _) = expected_target(&env, &s);
    let id = env.backend_id(&t);
    let before = env.dp.passive(id).unwrap().unanswered;
    run(&mut env, &s);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (_, out) = run(&mut env, &s);
    assert_eq!(
        dst_of(&out).to_string(),
        t,
        "redispatch off: the retry stays"
    );
    assert_eq!(env.dp.passive(id).unwrap().unanswered, before + 1);
}

/// `snat`: the refusal comes to the gateway's source port; the same
/// cycle as `nat`.
#[test]
fn snat_refusal_is_dropped_and_the_retry_goes_elsewhere() {
    let mut env = env();
    let s = syn(false, 45000, "10.100.0.2");
    let (a, out) = run(&mut env, &s);
    assert_eq!(action_name(a), "XDP_REDIRECT");
    let t = dst_of(&out).to_string();
    let sliced = etherparse::SlicedPacket::from_ethernet(&out).unwrap();
    let Some(etherparse::TransportSlice::Tcp(tcp)) = sliced.transport else {
        panic!("tcp");
    };
    let gw_port = tcp.source_port();
    let (a, _) = run(
        &mut env,
        &from_target(&t, 9090, "10.1.0.1", gw_port, RST_ACK),
    );
    assert_eq!(action_name(a), "XDP_DROP");
    assert_eq!(env.dp.passive(id_of(&env, &t, 9090)).unwrap().refused, 1);
    let (_, out) = run(&mut env, &s);
    assert_ne!(dst_of(&out).to_string(), t);
    // The old target answering late, through the old port: dropped.
    let (a, _) = run(
        &mut env,
        &from_target(&t, 9090, "10.1.0.1", gw_port, SYN_ACK),
    );
    assert_eq!(action_name(a), "XDP_DROP");
}
