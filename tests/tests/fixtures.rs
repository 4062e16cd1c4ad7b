//! BPF_PROG_TEST_RUN fixtures: the real XDP program on crafted packets.
//! Root only; run serially through `cargo xtask test`.

use lb_common::{Reason, FLOW_F_CLOSING};
use tests::{
    fixture::*,
    packet::{off, raw_frame, set_df, Spec, ACK, FIN, L4, RST, SYN},
};

#[test]
fn passes_what_is_not_ours() {
    let mut env = env();
    let udp_other = Spec::new("10.0.0.2", 5000, "10.9.9.9", 53, L4::Udp).build();
    let mut ipv4_cut = Spec::new("10.0.0.2", 5000, "10.100.0.1", 80, SYN).build();
    ipv4_cut.truncate(off::ETH + 10);
    let mut ipv6_cut = Spec::new("fd00::2", 5000, "fd64::1", 80, SYN).build();
    ipv6_cut.truncate(off::ETH + 30);
    let table = vec![
        Fixture {
            desc: "ARP (not IP) passes unchanged".into(),
            input: raw_frame(0x0806, &[0u8; 28]),
            action: XDP_PASS,
            output: None,
            reason: Some(Reason::NotIp),
        },
        Fixture {
            desc: "IPv4 UDP to an address that is not a VIP passes unchanged".into(),
            input: udp_other,
            action: XDP_PASS,
            output: None,
            reason: Some(Reason::NotVip),
        },
        Fixture {
            desc: "frame cut inside its VLAN tag passes, counted".into(),
            input: raw_frame(0x8100, &[0x00]),
            action: XDP_PASS,
            output: None,
            reason: Some(Reason::TruncatedL2),
        },
        Fixture {
            desc: "frame cut inside the IPv4 header passes, counted".into(),
            input: ipv4_cut,
            action: XDP_PASS,
            output: None,
            reason: Some(Reason::MalformedL3),
        },
        Fixture {
            desc: "frame cut inside the IPv6 header passes, counted".into(),
            input: ipv6_cut,
            action: XDP_PASS,
            output: None,
            reason: Some(Reason::MalformedL3),
        },
    ];
    env.check_all(&table);
}

/// The address filter is a hint: an address whose slot says "VIP" and
/// "target" (as a collision does) still takes the exact lookups, and
/// ordinary traffic on VIP and target ports is passed as before.
#[test]
fn the_address_filter_only_skips_lookups() {
    let mut env = env();
    let to_vip_port = || Spec::new("10.0.0.2", 5000, "10.9.9.9", 80, SYN).build();
    let from_target_port = || Spec::new("10.9.9.9", 8080, "10.0.0.2", 5000, ACK).build();
    let (w, _) = lb_userspace::model::addr_words("10.9.9.9".parse().unwrap());
    for collides in [false, true] {
        let bits = if collides {
            lb_common::ADDR_F_VIP | lb_common::ADDR_F_TARGET
        } else {
            0
        };
        env.dp
            .maps
            .addr_bits
            .set(lb_common::addr_slot(&w), bits, 0)
            .unwrap();
        env.check_all(&[
            Fixture {
                desc: format!("to a VIP port, not a VIP (slot set: {collides}): passes"),
                input: to_vip_port(),
                action: XDP_PASS,
                output: None,
                reason: Some(Reason::NotVip),
            },
            Fixture {
                desc: format!("from a target port, not a target (slot set: {collides}): passes"),
                input: from_target_port(),
                action: XDP_PASS,
                output: None,
                reason: Some(Reason::NotVip),
            },
        ]);
    }
}

/// New flow to a VIP and the reply, for v4/v6 x TCP/UDP, in `nat` mode.
#[test]
fn nat_new_flow_and_reply() {
    let mut env = env();
    for (v6, vip) in [(false, "10.100.0.1"), (true, "fd64::1")] {
        for l4 in [SYN, L4::Udp] {
            for sport in [40000u16, 40001, 40002, 51234] {
                let c = client_ip(v6);
                let p = Spec::new(c, sport, vip, 80, l4).macs(CLIENT_MAC, GW_CL_MAC);
                let (t, tport) = expected_target(&env, &p);
                let want = p.forwarded(c, sport, &t, tport, GW_BK_MAC, backend_mac(last_byte(&t)));
                env.check(&Fixture {
                    desc: format!("{c}:{sport} -> {vip}:80 {l4:?} goes to {t}:{tport}"),
                    input: p.build(),
                    action: XDP_REDIRECT,
                    output: Some(want.build()),
                    reason: Some(Reason::FwdToBackend),
                });
                // The target's reply comes back from the VIP.
                let r = Spec::new(
                    &t,
                    tport,
                    c,
                    sport,
                    if l4 == L4::Udp { L4::Udp } else { ACK },
                )
                .macs(backend_mac(last_byte(&t)), GW_BK_MAC);
                env.check(&Fixture::reply(
                    format!("reply {t}:{tport} -> {c}:{sport} is translated to come from {vip}:80"),
                    &r,
                    vip,
                    c,
                    sport,
                    Reason::FwdToClient,
                ));
            }
        }
    }
}

#[test]
fn udp_zero_checksum_stays_zero() {
    let mut env = env();
    let mut p = Spec::new("10.0.0.2", 7777, "10.100.0.1", 80, L4::Udp).macs(CLIENT_MAC, GW_CL_MAC);
    p.udp_no_csum = true;
    let (t, tport) = expected_target(&env, &p);
    let mut want = p.forwarded(
        "10.0.0.2",
        7777,
        &t,
        tport,
        GW_BK_MAC,
        backend_mac(last_byte(&t)),
    );
    want.udp_no_csum = true;
    env.check(&Fixture {
        desc: "IPv4 UDP without checksum is forwarded without checksum".into(),
        input: p.build(),
        action: XDP_REDIRECT,
        output: Some(want.build()),
        reason: Some(Reason::FwdToBackend),
    });
}

#[test]
fn conntrack_keeps_flows_across_ring_changes() {
    let mut env = env();
    let flows: Vec<Spec> = (0..64u16)
        .map(|i| {
            Spec::new("10.0.0.2", 30000 + i, "10.100.0.1", 80, SYN).macs(CLIENT_MAC, GW_CL_MAC)
        })
        .collect();
    let first: Vec<(String, u16)> = flows.iter().map(|p| expected_target(&env, p)).collect();
    for p in &flows {
        let (a, _) = env.run(&p.build()).unwrap();
        assert_eq!(a, XDP_REDIRECT);
    }
    // Weights change: the ring moves some slots to another target.
    let heavier = CONFIG.replacen(
        "address = \"10.1.0.11\"\nport = 8080\nzone = \"a\"",
        "address = \"10.1.0.11\"\nport = 8080\nzone = \"a\"\nweight = 5",
        1,
    );
    env.reload(&heavier).unwrap();
    let now: Vec<(String, u16)> = flows.iter().map(|p| expected_target(&env, p)).collect();
    let moved = first.iter().zip(&now).filter(|(a, b)| a != b).count();
    assert!(
        moved > 0,
        "the ring should have changed for some of the flows"
    );
    for (p, (t, tport)) in flows.iter().zip(&first) {
        let mut q = p.clone();
        q.l4 = ACK;
        let want = q.forwarded(
            "10.0.0.2",
            q.sport,
            t,
            *tport,
            GW_BK_MAC,
            backend_mac(last_byte(t)),
        );
        env.check(&Fixture {
            desc: format!(
                "established flow :{} stays on {t} after the ring changed",
                q.sport
            ),
            input: q.build(),
            action: XDP_REDIRECT,
            output: Some(want.build()),
            reason: None,
        });
    }
    // Draining (out of the ring, still registered): flows stay too.
    let id11 = env.backend_id("10.1.0.11");
    env.unhealthy.insert(id11, true);
    env.sync().unwrap();
    for (p, (t, _)) in flows.iter().zip(&first) {
        let (a, out) = env.run(&p.build()).unwrap();
        assert_eq!(a, XDP_REDIRECT);
        assert_eq!(
            &out[14 + 16..14 + 20],
            &t.parse::<std::net::Ipv4Addr>().unwrap().octets()
        );
    }
    // Deregistered: its flows pick a target from the current ring.
    env.invalid.insert(id11, true);
    env.sync().unwrap();
    for p in &flows {
        let (a, out) = env.run(&p.build()).unwrap();
        assert_eq!(a, XDP_REDIRECT);
        assert_ne!(
            &out[14 + 16..14 + 20],
            &[10, 1, 0, 11],
            "flow must leave the deregistered target"
        );
    }
}

#[test]
fn snat_allocates_a_port_and_reverses() {
    let mut env = env();
    for (v6, vip, snat) in [
        (false, "10.100.0.2", "10.1.0.1"),
        (true, "fd64::2", "fd01::1"),
    ] {
        for l4 in [SYN, L4::Udp] {
            let c = client_ip(v6);
            let p = Spec::new(c, 45000, vip, 80, l4).macs(CLIENT_MAC, GW_CL_MAC);
            let (t, tport) = expected_target(&env, &p);
            let (a, out) = env.run(&p.build()).unwrap();
            assert_eq!(action_name(a), "XDP_REDIRECT");
            let l4_at = if v6 { off::V6_L4 } else { off::V4_L4 };
            let port = u16::from_be_bytes([out[l4_at], out[l4_at + 1]]);
            assert!(
                (20000..=32767).contains(&port),
                "snat port {port} out of range"
            );
            let want = p.forwarded(snat, port, &t, tport, GW_BK_MAC, backend_mac(last_byte(&t)));
            assert_eq!(
                out,
                want.build(),
                "snat output\n{}",
                diff(&want.build(), &out)
            );
            // Same flow again: same port.
            let (_, out2) = env.run(&p.build()).unwrap();
            assert_eq!(out2, out);
            // Reply to the gateway's address and port goes back to the client.
            let r = Spec::new(
                &t,
                tport,
                snat,
                port,
                if l4 == L4::Udp { L4::Udp } else { ACK },
            )
            .macs(backend_mac(last_byte(&t)), GW_BK_MAC);
            env.check(&Fixture::reply(
                format!(
                    "snat reply {t}:{tport} -> {snat}:{port} goes back to {c}:45000 from {vip}:80"
                ),
                &r,
                vip,
                c,
                45000,
                Reason::FwdToClient,
            ));
        }
    }
    // Another client flow gets another port.
    let a = env
        .run(&Spec::new("10.0.0.2", 45001, "10.100.0.2", 80, SYN).build())
        .unwrap()
        .1;
    let b = env
        .run(&Spec::new("10.0.0.2", 45002, "10.100.0.2", 80, SYN).build())
        .unwrap()
        .1;
    assert_ne!(a[off::V4_L4..off::V4_L4 + 2], b[off::V4_L4..off::V4_L4 + 2]);
}

#[test]
fn source_ip_stickiness() {
    let mut env = env();
    let mut seen = std::collections::HashSet::new();
    for sport in 1000..1040u16 {
        let p = Spec::new("10.0.0.2", sport, "10.100.0.3", 80, SYN);
        let (a, out) = env.run(&p.build()).unwrap();
        assert_eq!(action_name(a), "XDP_REDIRECT");
        let (t, tport) = expected_target(&env, &p);
        assert_eq!(
            out[14 + 16..14 + 20],
            t.parse::<std::net::Ipv4Addr>().unwrap().octets()
        );
        assert_eq!(
            u16::from_be_bytes([out[off::V4_L4 + 2], out[off::V4_L4 + 3]]),
            tport
        );
        seen.insert(out[14 + 16..14 + 20].to_vec());
    }
    assert_eq!(seen.len(), 1, "one client address must stick to one target");
    // Other clients spread over the targets.
    let mut others = std::collections::HashSet::new();
    for c in 1..=60u8 {
        let p = Spec::new(&format!("10.0.7.{c}"), 1000, "10.100.0.3", 80, SYN);
        let (_, out) = env.run(&p.build()).unwrap();
        others.insert(out[14 + 19]);
    }
    assert_eq!(
        others.len(),
        3,
        "60 clients should reach all 3 targets: {others:?}"
    );
}

#[test]
fn zone_choice_and_failover() {
    let mut env = env();
    let flows = |base: u16| {
        (0..100u16).map(move |i| Spec::new("10.0.0.2", base + i, "10.100.0.1", 80, SYN))
    };
    let mut per = std::collections::HashMap::new();
    for p in flows(2000) {
        let (a, out) = env.run(&p.build()).unwrap();
        assert_eq!(a, XDP_REDIRECT);
        *per.entry(out[14 + 19]).or_insert(0) += 1;
    }
    assert!(
        !per.contains_key(&13),
        "cross-zone off: zone b target got flows: {per:?}"
    );
    assert!(per.contains_key(&11) && per.contains_key(&12), "{per:?}");
    // Zone a has no healthy target: fail over to the all-zones ring.
    for ip in ["10.1.0.11", "10.1.0.12"] {
        let id = env.backend_id(ip);
        env.unhealthy.insert(id, true);
        env.invalid.insert(id, true);
    }
    env.sync().unwrap();
    for p in flows(3000) {
        let (a, out) = env.run(&p.build()).unwrap();
        assert_eq!(a, XDP_REDIRECT);
        assert_eq!(out[14 + 19], 13, "zone a down: traffic goes to zone b");
    }
    // Zone a back: new flows return to it.
    env.unhealthy.clear();
    env.invalid.clear();
    env.sync().unwrap();
    for p in flows(4000) {
        let (_, out) = env.run(&p.build()).unwrap();
        assert_ne!(out[14 + 19], 13);
    }
}

/// NLB's `unhealthy_state_routing`: a zone with fewer healthy targets than
/// the minimum is not used alone (its flows go to every zone's healthy
/// targets), and a group below it fails open.
#[test]
fn minimum_healthy_targets_move_zone_traffic_and_fail_open() {
    let min2 = CONFIG.replacen(
        "[[target_group]]\nname = \"nat4\"\n",
        "[[target_group]]\nname = \"nat4\"\n[target_group.unhealthy_state_routing]\nminimum_healthy_targets = 2\n",
        1,
    );
    assert_ne!(min2, CONFIG);
    let mut env = Env::new(&min2).unwrap();
    let targets_of = |env: &mut Env, base: u16| {
        let mut per = std::collections::BTreeMap::new();
        for i in 0..100u16 {
            let p = Spec::new("10.0.0.2", base + i, "10.100.0.1", 80, SYN);
            let (a, out) = env.run(&p.build()).unwrap();
            assert_eq!(action_name(a), "XDP_REDIRECT");
            *per.entry(out[14 + 19]).or_insert(0) += 1;
        }
        per
    };
    // Zone a (.11, .12) whole: zone b (.13) idle.
    assert!(!targets_of(&mut env, 2000).contains_key(&13));
    // .11 down: zone a has 1 < 2 healthy, so all zones' healthy targets.
    let id11 = env.backend_id("10.1.0.11");
    env.unhealthy.insert(id11, true);
    env.invalid.insert(id11, true);
    env.sync().unwrap();
    let per = targets_of(&mut env, 3000);
    assert!(
        per.contains_key(&12) && per.contains_key(&13) && !per.contains_key(&11),
        "{per:?}"
    );
    // .12 down too: the group has 1 < 2 healthy: it fails open. Every
    // target counts as healthy again, so zone a's two serve its flows.
    let id12 = env.backend_id("10.1.0.12");
    env.unhealthy.insert(id12, true);
    env.invalid.insert(id12, true);
    env.sync().unwrap();
    let per = targets_of(&mut env, 4000);
    assert!(
        per.contains_key(&11) && per.contains_key(&12) && !per.contains_key(&13),
        "fail-open below the minimum: {per:?}"
    );
}

#[test]
fn no_healthy_target_drops_and_counts() {
    let mut env = env();
    for ip in ["10.1.0.11", "10.1.0.12", "10.1.0.13"] {
        let id = env.backend_id(ip);
        env.unhealthy.insert(id, true);
    }
    // By default the group fails open: every target takes new flows.
    env.sync().unwrap();
    let syn = Spec::new("10.0.0.2", 1234, "10.100.0.1", 80, SYN).build();
    let (a, _) = env.run(&syn).unwrap();
    assert_eq!(action_name(a), "XDP_REDIRECT", "fail-open forwards");
    let closed = CONFIG.replacen(
        "[[target_group]]\nname = \"nat4\"\n",
        "[[target_group]]\nname = \"nat4\"\nfail_open = false\n",
        1,
    );
    assert!(closed.contains("fail_open = false"));
    env.reload(&closed).unwrap();
    env.check(&Fixture {
        desc: "VIP without healthy target: dropped, counted".into(),
        input: Spec::new("10.0.0.2", 1235, "10.100.0.1", 80, SYN).build(),
        action: XDP_DROP,
        output: None,
        reason: Some(Reason::NoBackend),
    });
}

#[test]
fn ttl_and_local_traffic_are_left_to_the_kernel() {
    let mut env = env();
    let mut p = Spec::new("10.0.0.2", 1234, "10.100.0.1", 80, SYN);
    p.ttl = 1;
    env.check(&Fixture {
        desc: "TTL 1 to a VIP: the kernel answers time-exceeded".into(),
        input: p.build(),
        action: XDP_PASS,
        output: None,
        reason: Some(Reason::TtlExceeded),
    });
    // A health-check answer from a target to the gateway itself.
    env.check(&Fixture {
        desc: "target port talking to the gateway's own address is not translated".into(),
        input: Spec::new("10.1.0.11", 8080, "10.1.0.1", 33000, ACK).build(),
        action: XDP_PASS,
        output: None,
        reason: Some(Reason::NotVip),
    });
}

#[test]
fn fin_and_rst_mark_the_flow_closing() {
    let mut env = env();
    for (sport, l4) in [(6000u16, FIN), (6001, RST)] {
        let syn = Spec::new("10.0.0.2", sport, "10.100.0.1", 80, SYN);
        env.run(&syn.build()).unwrap();
        let mut f = syn.clone();
        f.l4 = l4;
        env.run(&f.build()).unwrap();
        let key = flow_key("10.0.0.2", sport, "10.100.0.1", SYN);
        let st = env.dp.maps.ct_get(&key).expect("flow is tracked");
        assert_ne!(
            st.flags & FLOW_F_CLOSING,
            0,
            "{l4:?} must mark the flow closing"
        );
    }
}

/// IPv6 TCP SYN to fd64::1:80 behind `n` destination-options headers.
fn v6_with_ext(n: usize) -> Vec<u8> {
    let base = Spec::new("fd00::2", 41000, "fd64::1", 80, SYN)
        .macs(CLIENT_MAC, GW_CL_MAC)
        .build();
    let (head, tcp) = base.split_at(off::V6_L4);
    let mut v = head.to_vec();
    let plen = tcp.len() + 8 * n;
    v[off::ETH + 4..off::ETH + 6].copy_from_slice(&(plen as u16).to_be_bytes());
    v[off::ETH + 6] = if n > 0 { 60 } else { 6 };
    for i in 0..n {
        let next = if i + 1 == n { 6 } else { 60 };
        // Next header, length 0 (8 bytes), PadN option filling the rest.
        v.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
    }
    v.extend_from_slice(tcp);
    v
}

#[test]
fn malformed_corpus_passes_and_counts() {
    let mut env = env();
    let mut corpus: Vec<(String, Vec<u8>, Reason)> = Vec::new();
    // Every cut of valid packets to a VIP, at every length below the full one.
    for (name, p) in [
        ("v4 tcp", Spec::new("10.0.0.2", 1, "10.100.0.1", 80, SYN)),
        (
            "v4 udp",
            Spec::new("10.0.0.2", 1, "10.100.0.1", 80, L4::Udp),
        ),
        ("v6 tcp", Spec::new("fd00::2", 1, "fd64::1", 80, SYN)),
        ("v6 udp", Spec::new("fd00::2", 1, "fd64::1", 80, L4::Udp)),
    ] {
        let full = p.build();
        for len in 14..full.len() {
            corpus.push((
                format!("{name} cut at {len}"),
                full[..len].to_vec(),
                Reason::MalformedL3,
            ));
        }
    }
    let v4 = Spec::new("10.0.0.2", 1, "10.100.0.1", 80, SYN).build();
    let v4u = Spec::new("10.0.0.2", 1, "10.100.0.1", 80, L4::Udp).build();
    let mut ihl4 = v4.clone();
    ihl4[off::ETH] = 0x44;
    corpus.push(("IHL 4".into(), ihl4, Reason::MalformedL3));
    let mut badver = v4.clone();
    badver[off::ETH] = 0x65;
    corpus.push((
        "version 6 in an IPv4 frame".into(),
        badver,
        Reason::MalformedL3,
    ));
    let mut toolong = v4.clone();
    toolong[off::ETH + 2..off::ETH + 4].copy_from_slice(&2000u16.to_be_bytes());
    corpus.push((
        "IPv4 total length beyond the frame".into(),
        toolong,
        Reason::MalformedL3,
    ));
    let mut mf = v4.clone();
    mf[off::ETH + 6] = 0x20;
    corpus.push(("IPv4 first fragment (MF)".into(), mf, Reason::Fragment));
    let mut frag = v4.clone();
    frag[off::ETH + 7] = 0x10;
    corpus.push(("IPv4 non-first fragment".into(), frag, Reason::Fragment));
    let mut udp0 = v4u.clone();
    udp0[off::V4_L4 + 4] = 0;
    udp0[off::V4_L4 + 5] = 0;
    corpus.push(("UDP length 0".into(), udp0, Reason::MalformedL4));
    let mut doff = v4.clone();
    doff[off::V4_L4 + 12] = 0x40;
    corpus.push(("TCP data offset 4".into(), doff, Reason::MalformedL4));
    corpus.push((
        "IPv6 with 5 extension headers".into(),
        v6_with_ext(5),
        Reason::Ipv6ExtTooLong,
    ));
    let mut v6frag = v6_with_ext(0);
    // Turn it into a non-first fragment: fragment header with offset 8.
    let tcp = v6frag.split_off(off::V6_L4);
    v6frag[off::ETH + 6] = 44;
    let plen = tcp.len() + 8;
    v6frag[off::ETH + 4..off::ETH + 6].copy_from_slice(&(plen as u16).to_be_bytes());
    v6frag.extend_from_slice(&[6, 0, 0, 0x08, 0, 0, 0, 1]);
    v6frag.extend_from_slice(&tcp);
    corpus.push(("IPv6 fragment".into(), v6frag, Reason::Fragment));
    for et in [0x88ccu16, 0x9000, 0x0000, 0xffff] {
        corpus.push((
            format!("EtherType {et:#06x}"),
            raw_frame(et, &[0u8; 46]),
            Reason::NotIp,
        ));
    }
    let vips_before: Vec<_> = env.dp.maps.vips.iter().map(|r| r.unwrap()).collect();
    for (desc, input, reason) in &corpus {
        let before = env.reasons();
        let (a, out) = env.run(input).unwrap();
        let after = env.reasons();
        assert_eq!(action_name(a), "XDP_PASS", "{desc}");
        assert_eq!(&out, input, "{desc}: must pass unchanged");
        let total: u64 = after.iter().zip(&before).map(|(a, b)| a - b).sum();
        assert_eq!(total, 1, "{desc}: exactly one counter");
        // Cuts land in L2, L3 or L4 depending on where they fall.
        if !desc.contains(" cut at ") {
            assert_eq!(
                after[*reason as usize] - before[*reason as usize],
                1,
                "{desc}: counted as {reason:?}"
            );
        }
    }
    // No map was touched: VIPs identical, no flow created.
    let vips_after: Vec<_> = env.dp.maps.vips.iter().map(|r| r.unwrap()).collect();
    assert_eq!(vips_before.len(), vips_after.len());
    assert_eq!(
        env.dp.maps.ct_keys().len(),
        0,
        "malformed packets created flows"
    );
    // And the data path still works.
    let (a, _) = env.run(&v4).unwrap();
    assert_eq!(a, XDP_REDIRECT);
}

#[test]
fn ipv6_extension_headers_are_skipped() {
    let mut env = env();
    let input = v6_with_ext(2);
    let (a, out) = env.run(&input).unwrap();
    assert_eq!(action_name(a), "XDP_REDIRECT");
    // Destination rewritten to a target, the TCP checksum still right.
    let sliced = etherparse::SlicedPacket::from_ethernet(&out).expect("parses");
    let Some(etherparse::NetSlice::Ipv6(ip)) = sliced.net else {
        panic!("not ipv6")
    };
    let dst = ip.header().destination_addr();
    assert!(dst.to_string().starts_with("fd01::1"), "dst {dst}");
    let Some(etherparse::TransportSlice::Tcp(tcp)) = sliced.transport else {
        panic!("not tcp")
    };
    let want = tcp
        .calc_checksum_ipv6(ip.header().source(), ip.header().destination())
        .unwrap();
    assert_eq!(tcp.checksum(), want, "TCP checksum after rewrite");
    assert_eq!(tcp.destination_port(), 8080);
}

/// An ICMP "fragmentation needed" (v4) / "packet too big" (v6) error from
/// `from` to `to`, quoting `inner` (an IP packet without Ethernet).
fn too_big(from: &str, to: &str, inner: &[u8], smac: [u8; 6], dmac: [u8; 6], ttl: u8) -> Vec<u8> {
    use etherparse::{icmpv4::DestUnreachableHeader, Icmpv4Type, Icmpv6Type, PacketBuilder};
    let eth = PacketBuilder::ethernet2(smac, dmac);
    let mut out = Vec::new();
    match (
        from.parse::<std::net::IpAddr>().unwrap(),
        to.parse::<std::net::IpAddr>().unwrap(),
    ) {
        (std::net::IpAddr::V4(s), std::net::IpAddr::V4(d)) => eth
            .ipv4(s.octets(), d.octets(), ttl)
            .icmpv4(Icmpv4Type::DestinationUnreachable(
                DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1400 },
            ))
            .write(&mut out, inner)
            .unwrap(),
        (std::net::IpAddr::V6(s), std::net::IpAddr::V6(d)) => eth
            .ipv6(s.octets(), d.octets(), ttl)
            .icmpv6(Icmpv6Type::PacketTooBig { mtu: 1280 })
            .write(&mut out, inner)
            .unwrap(),
        _ => panic!("mixed families"),
    }
    out
}

/// The IP packet (no Ethernet) a quoted header comes from.
fn quoted(src: &str, sport: u16, dst: &str, dport: u16, l4: L4) -> Vec<u8> {
    let mut s = Spec::new(src, sport, dst, dport, l4);
    s.payload.clear();
    s.build()[14..].to_vec()
}

#[test]
fn icmp_too_big_is_translated_both_ways() {
    let mut env = env();
    for v6 in [false, true] {
        let (c, vip, router, gw_cl) = if v6 {
            ("fd00::2", "fd64::1", "fd00::fe", "fd00::1")
        } else {
            ("10.0.0.2", "10.100.0.1", "10.0.0.254", "10.0.0.1")
        };
        let _ = gw_cl;
        for l4 in [ACK, L4::Udp] {
            let cport = 43000;
            let syn = Spec::new(c, cport, vip, 80, if l4 == L4::Udp { L4::Udp } else { SYN })
                .macs(CLIENT_MAC, GW_CL_MAC);
            let (t, tport) = expected_target(&env, &syn);
            assert_eq!(env.run(&syn.build()).unwrap().0, XDP_REDIRECT);
            // 1. A router on the client side says the VIP's reply was too big.
            let input = too_big(
                router,
                vip,
                &quoted(vip, 80, c, cport, l4),
                CLIENT_MAC,
                GW_CL_MAC,
                64,
            );
            let want = too_big(
                router,
                &t,
                &quoted(&t, tport, c, cport, l4),
                GW_BK_MAC,
                backend_mac(last_byte(&t)),
                63,
            );
            env.check(&Fixture {
                desc: format!(
                    "{l4:?} client-side too-big about {vip}:80 -> {c} goes to target {t}"
                ),
                input,
                action: XDP_REDIRECT,
                output: Some(want),
                reason: Some(Reason::IcmpTranslated),
            });
            // 2. The target's side says the client's packet was too big.
            let input = too_big(
                &t,
                c,
                &quoted(c, cport, &t, tport, l4),
                backend_mac(last_byte(&t)),
                GW_BK_MAC,
                64,
            );
            let want = too_big(
                vip,
                c,
                &quoted(c, cport, vip, 80, l4),
                GW_CL_MAC,
                CLIENT_MAC,
                63,
            );
            env.check(&Fixture {
                desc: format!("{l4:?} target-side too-big about {c} -> {t}:{tport} goes to the client about the VIP"),
                input,
                action: XDP_REDIRECT,
                output: Some(want),
                reason: Some(Reason::IcmpTranslated),
            });
        }
        // 3. snat: the target's error about gateway -> target.
        let (svip, snat) = if v6 {
            ("fd64::2", "fd01::1")
        } else {
            ("10.100.0.2", "10.1.0.1")
        };
        let syn = Spec::new(c, 44000, svip, 80, SYN).macs(CLIENT_MAC, GW_CL_MAC);
        let (t, tport) = expected_target(&env, &syn);
        let (_, out) = env.run(&syn.build()).unwrap();
        let l4_at = if v6 { off::V6_L4 } else { off::V4_L4 };
        let sport = u16::from_be_bytes([out[l4_at], out[l4_at + 1]]);
        let input = too_big(
            &t,
            snat,
            &quoted(snat, sport, &t, tport, ACK),
            backend_mac(last_byte(&t)),
            GW_BK_MAC,
            64,
        );
        let want = too_big(
            svip,
            c,
            &quoted(c, 44000, svip, 80, ACK),
            GW_CL_MAC,
            CLIENT_MAC,
            63,
        );
        env.check(&Fixture {
            desc: format!(
                "snat target-side too-big about {snat}:{sport} -> {t} goes to the client"
            ),
            input,
            action: XDP_REDIRECT,
            output: Some(want),
            reason: Some(Reason::IcmpTranslated),
        });
    }
    // Unrelated ICMP (echo to another address; a VIP answers its own, see
    // tests/hostile.rs) and errors about unknown flows stay the kernel's.
    let mut echo = Vec::new();
    etherparse::PacketBuilder::ethernet2(CLIENT_MAC, GW_CL_MAC)
        .ipv4([10, 0, 0, 2], [10, 100, 0, 9], 64)
        .icmpv4_echo_request(1, 1)
        .write(&mut echo, b"ping")
        .unwrap();
    env.check(&Fixture {
        desc: "ICMP echo to another address goes to the kernel".into(),
        input: echo,
        action: XDP_PASS,
        output: None,
        reason: Some(Reason::NotVip),
    });
    let stray = too_big(
        "10.0.0.254",
        "10.100.0.1",
        &quoted("10.100.0.1", 80, "10.0.0.9", 9999, ACK),
        CLIENT_MAC,
        GW_CL_MAC,
        64,
    );
    env.check(&Fixture {
        desc: "too-big about an unknown flow goes to the kernel".into(),
        input: stray,
        action: XDP_PASS,
        output: None,
        reason: Some(Reason::IcmpUnmatched),
    });
}

#[test]
fn next_hop_cache_expires_and_respects_mtu() {
    let mut env = env();
    let p = Spec::new("10.0.0.2", 47000, "10.100.0.1", 80, SYN).macs(CLIENT_MAC, GW_CL_MAC);
    let (t, _) = expected_target(&env, &p);
    let (a, out) = env.run(&p.build()).unwrap();
    assert_eq!(a, XDP_REDIRECT);
    assert_eq!(out[0..6], backend_mac(last_byte(&t)));
    // The target's MAC changes: the cached next hop is used until it expires.
    let new_mac = [2, 0, 0, 0, 9, 9];
    env.ns
        .ip(&[
            "neigh",
            "replace",
            &t,
            "lladdr",
            "02:00:00:00:09:09",
            "dev",
            "bk",
            "nud",
            "permanent",
        ])
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1300));
    // An ACK of the flow: the same SYN again would be an unanswered retry,
    // which goes to another target (passive health).
    let mut p = p.clone();
    p.l4 = ACK;
    let (_, out) = env.run(&p.build()).unwrap();
    assert_eq!(
        out[0..6],
        new_mac,
        "after gateway.fib_cache (1s) the new neighbour MAC is used"
    );
    // A packet larger than the path MTU, even with the next hop cached:
    // with Don't Fragment it is answered here (see `tests/hostile.rs`);
    // without, the kernel fragments it.
    env.ns.ip(&["link", "set", "bk", "mtu", "1000"]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1300));
    let (a, _) = env.run(&p.build()).unwrap();
    assert_eq!(a, XDP_REDIRECT, "small packets still go straight out");
    let mut big = p.clone();
    big.payload = vec![7u8; 1200];
    let mut input = big.build();
    set_df(&mut input, true);
    let (a, _) = env.run(&input).unwrap();
    assert_eq!(action_name(a), "XDP_TX", "fragmentation needed, from here");
    set_df(&mut input, false);
    // Rewritten for the target; MACs and TTL untouched: the kernel
    // forwards it (and decrements the TTL).
    let mut want = big.forwarded("10.0.0.2", 47000, &t, 8080, CLIENT_MAC, GW_CL_MAC);
    want.ttl += 1;
    let mut want = want.build();
    set_df(&mut want, false);
    env.check(&Fixture {
        desc: "a packet over the path MTU without DF is left to the kernel".into(),
        input,
        action: XDP_PASS,
        output: Some(want),
        reason: Some(Reason::FibFailed),
    });
}

#[test]
fn removed_listener_stops_forwarding_its_flows() {
    let mut env = env();
    let p = Spec::new("10.0.0.2", 48000, "10.100.0.3", 80, SYN).macs(CLIENT_MAC, GW_CL_MAC);
    assert_eq!(env.run(&p.build()).unwrap().0, XDP_REDIRECT);
    // Drop the "sticky4" listener (and its group) by reload.
    let cut = CONFIG.find("[[listener]]\nname = \"sticky4\"").unwrap();
    let end = CONFIG[cut..].find("[[target_group]]").unwrap() + cut;
    let mut cfg = format!("{}{}", &CONFIG[..cut], &CONFIG[end..]);
    let tg = cfg.find("[[target_group]]\nname = \"sticky4\"").unwrap();
    cfg.truncate(tg);
    env.reload(&cfg).unwrap();
    env.check(&Fixture {
        desc: "established flow of a removed listener is not forwarded".into(),
        input: p.build(),
        action: XDP_PASS,
        output: None,
        reason: Some(Reason::NotVip),
    });
}

#[test]
fn idle_and_closing_flows_age_out() {
    let cfg = CONFIG.replace(
        "snat_ports = \"20000-32767\"",
        "snat_ports = \"20000-32767\"\nudp_idle_timeout = \"1s\"\ntcp_closing_timeout = \"1s\"",
    );
    let mut env = Env::new(&cfg).unwrap();
    // Find flows on target .11; take .11 out of the ring (still registered).
    let pick = |env: &Env, l4: L4| {
        (50000..51000u16)
            .map(|p| Spec::new("10.0.0.2", p, "10.100.0.1", 80, l4))
            .find(|s| expected_target(env, s).0 == "10.1.0.11")
            .unwrap()
    };
    let udp = pick(&env, L4::Udp);
    let fin = pick(&env, SYN);
    let mut open = pick(&env, SYN);
    open.sport += 1000;
    while expected_target(&env, &open).0 != "10.1.0.11" {
        open.sport += 1;
    }
    for p in [&udp, &fin, &open] {
        env.run(&p.build()).unwrap();
    }
    let mut f = fin.clone();
    f.l4 = FIN;
    env.run(&f.build()).unwrap();
    let id = env.backend_id("10.1.0.11");
    env.unhealthy.insert(id, true);
    env.sync().unwrap();
    let dst = |env: &mut Env, p: &Spec| env.run(&p.build()).unwrap().1[14 + 19];
    // The closing flow's last ACK (a SYN would be a new connection), and
    // the open flow's data (its SYN again would be an unanswered retry).
    let mut last_ack = fin.clone();
    last_ack.l4 = ACK;
    open.l4 = ACK;
    for p in [&udp, &last_ack, &open] {
        assert_eq!(
            dst(&mut env, p),
            11,
            "{:?} :{} keeps its target while fresh",
            p.l4,
            p.sport
        );
    }
    std::thread::sleep(std::time::Duration::from_millis(2300));
    assert_ne!(
        dst(&mut env, &udp),
        11,
        "an idle UDP flow ages out and re-picks"
    );
    assert_ne!(
        dst(&mut env, &fin),
        11,
        "a TCP flow after FIN ages out after tcp_closing_timeout: a SYN re-picks"
    );
    assert_eq!(
        dst(&mut env, &open),
        11,
        "an open TCP flow (350s timeout) stays"
    );
}

/// A listener's `tcp_idle_timeout` goes with its TCP flows into
/// conntrack and ages them; its UDP flows and other listeners' flows keep
/// the gateway's timeouts.
#[test]
fn a_listeners_tcp_idle_timeout_ages_its_tcp_flows() {
    let cfg = CONFIG.replace(
        "protocol = \"tcp_udp\"\ntarget_group = \"nat4\"",
        "protocol = \"tcp_udp\"\ntarget_group = \"nat4\"\ntcp_idle_timeout = \"1s\"",
    );
    let mut env = Env::new(&cfg).unwrap();
    // A flow to `vip` that target .11 gets (sticky4 hashes the client
    // address only, so the clients vary too).
    let on_11 = |env: &Env, vip: &str, l4: L4| {
        (2..250u16)
            .flat_map(|c| (40000..40004u16).map(move |p| (c, p)))
            .map(|(c, p)| Spec::new(&format!("10.0.0.{c}"), p, vip, 80, l4))
            .find(|s| expected_target(env, s).0 == "10.1.0.11")
            .unwrap()
    };
    let mut short = on_11(&env, "10.100.0.1", SYN);
    let udp = on_11(&env, "10.100.0.1", L4::Udp);
    let mut other = on_11(&env, "10.100.0.3", SYN);
    for p in [&short, &udp, &other] {
        env.run(&p.build()).unwrap();
    }
    let idle_of = |env: &Env, p: &Spec| {
        let key = flow_key(&p.src.to_string(), p.sport, &p.dst.to_string(), p.l4);
        let st = env.dp.maps.ct_get(&key).expect("flow is tracked");
        st.idle_timeout_s
    };
    assert_eq!(idle_of(&env, &short), 1, "the listener's timeout");
    assert_eq!(idle_of(&env, &udp), 0, "UDP: the gateway's");
    assert_eq!(idle_of(&env, &other), 0, "another listener: the gateway's");
    // Target .11 out of every ring (still registered: flows keep it).
    let a11: std::net::IpAddr = "10.1.0.11".parse().unwrap();
    let ids: Vec<u32> = (env.model.backends.values())
        .filter(|b| b.key.address == a11)
        .map(|b| b.id)
        .collect();
    for id in ids {
        env.unhealthy.insert(id, true);
    }
    env.sync().unwrap();
    short.l4 = ACK;
    other.l4 = ACK;
    let dst = |env: &mut Env, p: &Spec| env.run(&p.build()).unwrap().1[14 + 19];
    std::thread::sleep(std::time::Duration::from_millis(2300));
    assert_ne!(
        dst(&mut env, &short),
        11,
        "idle past its listener's 1 s: a new flow, re-picked"
    );
    assert_eq!(dst(&mut env, &udp), 11, "UDP keeps the gateway's 120 s");
    assert_eq!(
        dst(&mut env, &other),
        11,
        "another listener keeps the gateway's 350 s"
    );
}

#[test]
fn snat_reply_wins_over_nat_on_a_shared_target_port() {
    // snat4's targets on 8080, the port nat4's targets already serve.
    let cfg = CONFIG
        .replace(
            "address = \"10.1.0.11\"\nport = 9090",
            "address = \"10.1.0.11\"\nport = 8080",
        )
        .replace(
            "address = \"10.1.0.12\"\nport = 9090",
            "address = \"10.1.0.12\"\nport = 8080",
        );
    let mut env = Env::new(&cfg).unwrap();
    let p = Spec::new("10.0.0.2", 45500, "10.100.0.2", 80, SYN).macs(CLIENT_MAC, GW_CL_MAC);
    let (t, tport) = expected_target(&env, &p);
    assert_eq!(tport, 8080);
    let (_, out) = env.run(&p.build()).unwrap();
    let port = u16::from_be_bytes([out[off::V4_L4], out[off::V4_L4 + 1]]);
    let r = Spec::new(&t, 8080, "10.1.0.1", port, ACK).macs(backend_mac(last_byte(&t)), GW_BK_MAC);
    env.check(&Fixture::reply(
        "reply to the snat address goes back through the SNAT table",
        &r,
        "10.100.0.2",
        "10.0.0.2",
        45500,
        Reason::FwdToClient,
    ));
}

/// Two gateways with the same config (targets declared in another order)
/// hold byte-identical data plane maps, so every gateway makes the same
/// choice for every flow (the basis for ECMP scale-out).
#[test]
fn two_gateways_with_the_same_config_hold_identical_maps() {
    let mut a = env();
    // The same config with each group's targets in reverse order.
    let mut reordered = String::new();
    for (i, block) in CONFIG.split("[[target_group]]").enumerate() {
        if i == 0 {
            reordered += block;
            continue;
        }
        let mut parts: Vec<&str> = block.split("[[target_group.targets]]").collect();
        let head = parts.remove(0);
        parts.reverse();
        reordered += "[[target_group]]";
        reordered += head;
        for p in parts {
            reordered += "[[target_group.targets]]";
            reordered += p.trim_end();
            reordered += "\n";
        }
    }
    assert_ne!(reordered, CONFIG);
    let mut b = Env::new(&reordered).unwrap();
    let ring = |e: &Env| -> Vec<u32> { e.dp.maps.ring.iter().map(|r| r.unwrap()).collect() };
    assert!(ring(&a).iter().any(|&s| s != 0));
    assert_eq!(ring(&a), ring(&b), "RING differs");
    let mut va: Vec<_> = a.dp.maps.vips.iter().map(|r| r.unwrap()).collect();
    let mut vb: Vec<_> = b.dp.maps.vips.iter().map(|r| r.unwrap()).collect();
    va.sort_by_key(|(k, _)| (k.addr, k.port, k.proto));
    vb.sort_by_key(|(k, _)| (k.addr, k.port, k.proto));
    assert_eq!(va, vb, "VIPS differ");
    let backends = |e: &Env| -> Vec<_> { e.dp.maps.backends.iter().map(|r| r.unwrap()).collect() };
    assert_eq!(backends(&a), backends(&b), "BACKENDS differ");
    // And so the same flows go to the same targets on both.
    for sport in 30000..30100u16 {
        let p = Spec::new("10.0.0.9", sport, "10.100.0.1", 80, SYN).build();
        assert_eq!(a.run(&p).unwrap().1, b.run(&p).unwrap().1);
    }
}
