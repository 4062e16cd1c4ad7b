//! ICMP "fragmentation needed" (v4) and "packet too big" (v6) errors that
//! belong to a tracked flow are translated (outer and quoted inner headers,
//! consistently) and delivered to that flow's target or client, so path MTU
//! discovery works through the balancer. Runs as a tail-called program with
//! its own stack; everything else ICMP goes to the kernel.

use aya_ebpf::programs::XdpContext;
use lb_common::{
    FlowKey, Reason, ReverseKey, SnatKey, VipKey, PROTO_TCP, PROTO_UDP, REVERSE_SLOTS, VIP_F_SNAT,
};

use crate::{
    count, csum, ct,
    fwd::{emit, fib, fib_params, kernel_forwards, rewrite_l3, served},
    parse::{self, hdr, ld, ptr_at, st, Pkt},
    BACKENDS, NAT_REVERSE, SNAT, VIPS, VIP_SLOTS,
};

/// Where the translated error goes, as (outer src, outer dst, inner src
/// addr/port, inner dst addr/port).
struct Plan {
    osrc: [u32; 4],
    odst: [u32; 4],
    isrc: [u32; 4],
    isport: u16,
    idst: [u32; 4],
    idport: u16,
}

#[inline(always)]
pub fn try_icmp(ctx: &XdpContext) -> Result<u32, Reason> {
    let pkt = parse::parse_l3(ctx)?;
    let v6 = pkt.v6();
    if pkt.proto
        != if v6 {
            parse::PROTO_ICMPV6
        } else {
            parse::PROTO_ICMP
        }
    {
        return Err(Reason::OtherProto);
    }
    let ih: [u8; 8] = hdr(ctx, pkt.l4_off, Reason::MalformedL4)?;
    if ih[0] == if v6 { 128 } else { 8 } && ih[1] == 0 {
        return crate::echo::answer(ctx, &pkt);
    }
    let too_big = if v6 {
        ih[0] == 2
    } else {
        ih[0] == 3 && ih[1] == 4
    };
    if !too_big {
        return Err(Reason::NotVip);
    }
    // The quoted packet.
    let ioff = pkt.l4_off + 8;
    let mut isrc = [0u32; 4];
    let mut idst = [0u32; 4];
    let (iproto, il4) = if v6 {
        let h = ptr_at::<[u8; 40]>(ctx, ioff, Reason::IcmpUnmatched)? as *const u8;
        unsafe {
            isrc = ld(h, 8);
            idst = ld(h, 24);
            (ld::<u8>(h, 6), ioff + 40)
        }
    } else {
        let h = ptr_at::<[u8; 20]>(ctx, ioff, Reason::IcmpUnmatched)? as *const u8;
        let vihl: u8 = unsafe { ld(h, 0) };
        let ihl = (vihl & 0x0f) as usize * 4;
        if vihl >> 4 != 4 || ihl < 20 {
            return Err(Reason::IcmpUnmatched);
        }
        unsafe {
            isrc[0] = ld(h, 12);
            idst[0] = ld(h, 16);
            (ld::<u8>(h, 9), ioff + ihl)
        }
    };
    if iproto != PROTO_TCP && iproto != PROTO_UDP {
        return Err(Reason::IcmpUnmatched);
    }
    let ports = ptr_at::<[u8; 4]>(ctx, il4, Reason::IcmpUnmatched)? as *const u8;
    let (isport, idport): (u16, u16) = unsafe { (ld(ports, 0), ld(ports, 2)) };
    let plan = plan(&pkt, iproto, &isrc, isport, &idst, idport).ok_or(Reason::IcmpUnmatched)?;
    if pkt.ttl <= 1 {
        return Err(Reason::TtlExceeded);
    }
    let p = fib_params()?;
    let rc = fib(ctx, &pkt, &plan.osrc, &plan.odst, 0, 0, p);
    let l2 = kernel_forwards(&pkt, rc, p);
    rewrite(
        ctx, &pkt, ioff, il4, iproto, &isrc, isport, &idst, idport, &plan, !l2 as u8,
    )?;
    count(Reason::IcmpTranslated);
    Ok(emit(ctx, rc, p, l2))
}

#[inline(always)]
fn plan(
    pkt: &Pkt,
    proto: u8,
    isrc: &[u32; 4],
    isport: u16,
    idst: &[u32; 4],
    idport: u16,
) -> Option<Plan> {
    let family = pkt.family;
    // Client side: about a packet the VIP sent to the client.
    let vk = VipKey {
        addr: *isrc,
        port: isport,
        proto,
        family,
    };
    if let Some(meta) = unsafe { VIPS.get(vk) } {
        let key = FlowKey::new(*idst, *isrc, idport, isport, proto, family);
        let st = ct::get(&key)?;
        let b = BACKENDS.get(st.backend_id)?;
        let (d, dp) = if meta.flags & VIP_F_SNAT != 0 {
            (meta.snat_addr, st.snat_port)
        } else {
            (*idst, idport)
        };
        // The target sent b:port -> client (or -> snat address:port).
        return Some(Plan {
            osrc: pkt.src,
            odst: b.addr,
            isrc: b.addr,
            isport: b.port,
            idst: d,
            idport: dp,
        });
    }
    // Target side, nat: about a packet client -> target.
    let rk = ReverseKey {
        addr: *idst,
        port: idport,
        proto,
        family,
    };
    if let Some(rv) = unsafe { NAT_REVERSE.get(rk) } {
        // The listener whose flow this was: the one conntrack has with
        // this target (the first one the target serves otherwise).
        let mut vip = VIP_SLOTS.get(rv.entries[0].vip_id)?;
        for i in 0..REVERSE_SLOTS {
            let Some((e, slot)) = served(rv, i) else {
                break;
            };
            let key = FlowKey::new(*isrc, slot.key.addr, isport, slot.key.port, proto, family);
            if ct::get(&key).is_some_and(|st| st.backend_id == e.backend_id) {
                vip = slot;
                break;
            }
        }
        // From the target itself: it must look like it came from the VIP.
        let osrc = if pkt.src == *idst {
            vip.key.addr
        } else {
            pkt.src
        };
        return Some(Plan {
            osrc,
            odst: pkt.dst,
            isrc: *isrc,
            isport,
            idst: vip.key.addr,
            idport: vip.key.port,
        });
    }
    // Target side, snat: about a packet gateway -> target.
    let sk = SnatKey {
        gw_addr: *isrc,
        backend_addr: *idst,
        gw_port: isport,
        backend_port: idport,
        proto,
        family,
        _pad: [0; 2],
    };
    let sv = unsafe { SNAT.get(sk) }?;
    Some(Plan {
        osrc: sv.vip_addr,
        odst: sv.client_addr,
        isrc: sv.client_addr,
        isport: sv.client_port,
        idst: sv.vip_addr,
        idport: sv.vip_port,
    })
}

/// Rewrites outer and inner headers; the ICMP checksum follows every change
/// in what it covers (for ICMPv6, also the outer pseudo-header).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn rewrite(
    ctx: &XdpContext,
    pkt: &Pkt,
    ioff: usize,
    il4: usize,
    iproto: u8,
    isrc: &[u32; 4],
    isport: u16,
    idst: &[u32; 4],
    idport: u16,
    plan: &Plan,
    hop: u8,
) -> Result<(), Reason> {
    let v6 = pkt.v6();
    let outer = rewrite_l3(ctx, pkt, &plan.osrc, &plan.odst, hop)?;
    let inner = csum::diff_addr(
        csum::diff_addr(0, isrc, &plan.isrc, v6),
        idst,
        &plan.idst,
        v6,
    );
    let mut icmp = if v6 { outer } else { 0 };
    icmp += inner;
    unsafe {
        if v6 {
            let q = ptr_at::<[u8; 40]>(ctx, ioff, Reason::IcmpUnmatched)? as *mut u8;
            st(q, 8, plan.isrc);
            st(q, 24, plan.idst);
        } else {
            let q = ptr_at::<[u8; 20]>(ctx, ioff, Reason::IcmpUnmatched)? as *mut u8;
            st(q, 12, plan.isrc[0]);
            st(q, 16, plan.idst[0]);
            let c = ld(q, 10);
            let n = csum::apply(c, inner);
            st(q, 10, n);
            icmp = csum::diff16(icmp, c, n);
        }
        let l4 = ptr_at::<[u8; 8]>(ctx, il4, Reason::IcmpUnmatched)? as *mut u8;
        st(l4, 0, plan.isport);
        st(l4, 2, plan.idport);
        let ports = csum::diff16(csum::diff16(0, isport, plan.isport), idport, plan.idport);
        icmp += ports;
        // The quoted L4 checksum, when the quote holds it.
        let check_at = if iproto == PROTO_TCP { 16 } else { 6 };
        let c = if iproto == PROTO_TCP {
            ptr_at::<[u8; 18]>(ctx, il4, Reason::IcmpUnmatched)
                .ok()
                .map(|p| (p as *mut u8).add(check_at))
        } else {
            Some(l4.add(check_at))
        };
        if let Some(cp) = c {
            let old = ld(cp, 0);
            if let Some(n) = csum::update_l4(old, inner + ports, iproto == PROTO_UDP, v6) {
                st(cp, 0, n);
                icmp = csum::diff16(icmp, old, n);
            }
        }
        let ic = ptr_at::<[u8; 8]>(ctx, pkt.l4_off, Reason::MalformedL4)? as *mut u8;
        let c = ld(ic, 2);
        st(ic, 2, csum::apply(c, icmp));
    }
    Ok(())
}
