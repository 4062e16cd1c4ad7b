//! The fast path: VIP lookup, conntrack, Maglev choice, NAT/SNAT rewrite,
//! reply translation and forwarding through the FIB.

use aya_ebpf::{
    bindings::{
        bpf_fib_lookup, xdp_action, BPF_ANY, BPF_FIB_LKUP_RET_FRAG_NEEDED,
        BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, BPF_NOEXIST,
    },
    helpers::{bpf_fib_lookup as fib_lookup_helper, bpf_ktime_get_coarse_ns, bpf_redirect},
    programs::XdpContext,
    EbpfContext,
};
use lb_common::{
    hash::flow_hash,
    select::{flow_key_hash, pick},
    Counters, FlowKey, FlowState, Globals, Reason, ReverseKey, SnatKey, SnatVal, VipKey, VipMeta,
    BACKEND_F_VALID, FIB_CACHE_SLOTS, FLOW_F_CLOSING, PORT_TARGET_TCP, PORT_TARGET_UDP,
    PORT_VIP_TCP, PORT_VIP_UDP, PROTO_TCP, PROTO_UDP, VIP_F_SNAT,
};

use crate::{
    count, csum,
    parse::{self, ptr_at, write, Pkt, TCP_FIN, TCP_RST},
    BACKENDS, BACKEND_STATS, CONNTRACK, FIB_CACHE, FIB_SCRATCH, GLOBALS, JUMP, JUMP_ICMP,
    NAT_REVERSE, PORTS, RING, SNAT, VIPS, VIP_SLOTS, VIP_STATS,
};

const NS: u64 = 1_000_000_000;
/// Ports tried for a SNAT allocation before giving up.
const SNAT_TRIES: u32 = 8;

#[inline(always)]
pub fn try_lb(ctx: &XdpContext) -> Result<u32, Reason> {
    let pkt = parse::parse(ctx)?;
    let (vip_bit, target_bit) = match pkt.proto {
        PROTO_TCP => (PORT_VIP_TCP, PORT_TARGET_TCP),
        PROTO_UDP => (PORT_VIP_UDP, PORT_TARGET_UDP),
        _ => {
            // ICMP: errors of tracked flows are translated by `lb_icmp`,
            // which has a stack of its own. Returns only when the call fails.
            unsafe { JUMP.tail_call(ctx, JUMP_ICMP) };
            return Err(Reason::NotVip);
        }
    };
    let g = GLOBALS.get(0).ok_or(Reason::MapError)?;
    // The port bitmap spares ordinary traffic every hash lookup.
    if port_bits(pkt.dport) & vip_bit != 0 {
        if let Some(action) = to_backend(ctx, &pkt, g)? {
            return Ok(action);
        }
    }
    let dport = u16::from_be(pkt.dport);
    let nat = port_bits(pkt.sport) & target_bit != 0;
    let snat = dport >= g.snat_port_min && dport <= g.snat_port_max;
    if nat || snat {
        return to_client(ctx, &pkt, g, nat, snat);
    }
    Err(Reason::NotVip)
}

#[inline(always)]
fn port_bits(port_be: u16) -> u8 {
    PORTS
        .get(u16::from_be(port_be) as u32)
        .copied()
        .unwrap_or(0)
}

#[inline(always)]
fn bump(c: Option<*mut Counters>, bytes: u16, new_flow: bool) {
    if let Some(c) = c {
        let c = unsafe { &mut *c };
        c.packets += 1;
        c.bytes += bytes as u64;
        if new_flow {
            c.new_flows += 1;
        }
    }
}

/// Client -> VIP: find or create the flow, rewrite towards its target.
/// `None`: not a VIP after all.
#[inline(always)]
fn to_backend(ctx: &XdpContext, pkt: &Pkt, g: &Globals) -> Result<Option<u32>, Reason> {
    let key = FlowKey {
        src: pkt.src,
        dst: pkt.dst,
        sport: pkt.sport,
        dport: pkt.dport,
        proto: pkt.proto,
        family: pkt.family,
        _pad: [0; 2],
    };
    // Tick resolution is plenty for idle timeouts, and far cheaper.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let closing = pkt.proto == PROTO_TCP && pkt.tcp_flags & (TCP_FIN | TCP_RST) != 0;
    let mut backend_id = 0u32;
    let mut snat_port = 0u16;
    let mut hit: Option<&VipMeta> = None;
    if let Some(st) = CONNTRACK.get_ptr_mut(key) {
        let st = unsafe { &mut *st };
        // The flow's VIP by slot; its key must still be this packet's.
        if let Some(slot) = VIP_SLOTS.get(st.vip_id) {
            let k = &slot.key;
            let same_vip = k.addr == pkt.dst
                && k.port == pkt.dport
                && k.proto == pkt.proto
                && k.family == pkt.family;
            let timeout = if st.flags & FLOW_F_CLOSING != 0 {
                g.closing_timeout_s
            } else if pkt.proto == PROTO_TCP {
                g.tcp_timeout_s
            } else {
                g.udp_timeout_s
            };
            let fresh = now.wrapping_sub(st.last_seen_ns) <= timeout as u64 * NS;
            // A flow keeps its target while the target is registered (also
            // while it drains), whatever the ring says now.
            // (An array lookup, inlined: looking it up again below for the
            // rewrite costs nothing, and a branch-free `Option<&Backend>`
            // carried over is what LLVM turns into pointer masking, which
            // the verifier rejects.)
            let valid = BACKENDS
                .get(st.backend_id)
                .is_some_and(|b| b.flags & BACKEND_F_VALID != 0);
            let mode_ok = slot.meta.flags & VIP_F_SNAT == 0 || st.snat_port != 0;
            if same_vip && fresh && valid && mode_ok {
                backend_id = st.backend_id;
                snat_port = st.snat_port;
                st.last_seen_ns = now;
                if closing {
                    st.flags |= FLOW_F_CLOSING;
                }
                hit = Some(&slot.meta);
            }
        }
    }
    let new_flow = hit.is_none();
    let meta: &VipMeta = match hit {
        Some(m) => m,
        None => {
            let vk = VipKey {
                addr: pkt.dst,
                port: pkt.dport,
                proto: pkt.proto,
                family: pkt.family,
            };
            match unsafe { VIPS.get(vk) } {
                Some(m) => m,
                None => return Ok(None),
            }
        }
    };
    if pkt.ttl <= 1 {
        // The kernel sends the time-exceeded error.
        return Err(Reason::TtlExceeded);
    }
    if new_flow {
        let h = flow_key_hash(
            meta.flags, &pkt.src, &pkt.dst, pkt.sport, pkt.dport, pkt.proto,
        );
        let m = g.ring_size;
        if m == 0 {
            return Err(Reason::MapError);
        }
        let ring = |r: u32, i: u32| RING.get(r.wrapping_mul(m) + i).copied().unwrap_or(0);
        backend_id = pick(
            meta.flags,
            m,
            h,
            |i| ring(meta.ring_zone, i),
            |i| ring(meta.ring_all, i),
        );
        if backend_id == 0 {
            count(Reason::NoBackend);
            return Ok(Some(xdp_action::XDP_DROP));
        }
    }
    let b = BACKENDS.get(backend_id).ok_or(Reason::MapError)?;
    if b.family != pkt.family {
        return Err(Reason::MapError);
    }
    let snat = meta.flags & VIP_F_SNAT != 0;
    if snat && new_flow {
        match alloc_snat_port(pkt, meta, &b.addr, b.port, g.snat_port_min, g.snat_port_max) {
            Some(p) => snat_port = p,
            None => {
                count(Reason::SnatExhausted);
                return Ok(Some(xdp_action::XDP_DROP));
            }
        }
    }
    if new_flow {
        let st = FlowState {
            backend_id,
            flags: if closing { FLOW_F_CLOSING } else { 0 },
            last_seen_ns: now,
            snat_port,
            _pad: [0; 2],
            vip_id: meta.vip_id,
        };
        if CONNTRACK.insert(key, st, BPF_ANY as u64).is_err() {
            return Err(Reason::MapError);
        }
    }
    bump(VIP_STATS.get_ptr_mut(meta.vip_id), pkt.ip_len, new_flow);
    bump(BACKEND_STATS.get_ptr_mut(backend_id), pkt.ip_len, new_flow);
    let (src, sport) = if snat {
        (meta.snat_addr, snat_port)
    } else {
        (pkt.src, pkt.sport)
    };
    let (dst, dport) = (b.addr, b.port);
    let p = fib_params()?;
    let rc = next_hop(ctx, pkt, &src, &dst, sport, dport, p, g.fib_cache_ms, now);
    rewrite(ctx, pkt, &src, &dst, sport, dport)?;
    count(Reason::FwdToBackend);
    Ok(Some(emit(ctx, pkt, rc, p)))
}

/// Picks a free source port for a SNAT flow: a few hashed probes in range,
/// reusing a slot whose flow is gone from conntrack.
#[inline(always)]
fn alloc_snat_port(
    pkt: &Pkt,
    meta: &VipMeta,
    baddr: &[u32; 4],
    bport: u16,
    min: u16,
    max: u16,
) -> Option<u16> {
    if max < min {
        return None;
    }
    let range = (max - min) as u32 + 1;
    let h = flow_hash(&pkt.src, &pkt.dst, pkt.sport, pkt.dport, pkt.proto);
    let val = SnatVal {
        client_addr: pkt.src,
        vip_addr: pkt.dst,
        client_port: pkt.sport,
        vip_port: pkt.dport,
        vip_id: meta.vip_id,
    };
    for i in 0..SNAT_TRIES {
        let port = (min as u32 + (h.wrapping_add(i.wrapping_mul(7919))) % range) as u16;
        let key = SnatKey {
            gw_addr: meta.snat_addr,
            backend_addr: *baddr,
            gw_port: port.to_be(),
            backend_port: bport,
            proto: pkt.proto,
            family: pkt.family,
            _pad: [0; 2],
        };
        if SNAT.insert(key, val, BPF_NOEXIST as u64).is_ok() {
            return Some(port.to_be());
        }
        // Taken: reuse it when its flow no longer holds it.
        if let Some(old) = unsafe { SNAT.get(key) } {
            let ok = FlowKey {
                src: old.client_addr,
                dst: old.vip_addr,
                sport: old.client_port,
                dport: old.vip_port,
                proto: pkt.proto,
                family: pkt.family,
                _pad: [0; 2],
            };
            let held = unsafe { CONNTRACK.get(ok) }.is_some_and(|s| s.snat_port == port.to_be());
            if !held && SNAT.insert(key, val, BPF_ANY as u64).is_ok() {
                return Some(port.to_be());
            }
        }
    }
    None
}

/// Target -> client: undo `nat` (stateless, from config) or `snat`
/// (from the SNAT table). Anything else is not ours.
#[inline(always)]
fn to_client(
    ctx: &XdpContext,
    pkt: &Pkt,
    g: &Globals,
    nat: bool,
    snat: bool,
) -> Result<u32, Reason> {
    // The SNAT table first: it matches all five fields, while a target port
    // may also serve a `nat` listener. Each table is asked only when the
    // port bitmap or the SNAT port range allows a match.
    let sv = if snat {
        let sk = SnatKey {
            gw_addr: pkt.dst,
            backend_addr: pkt.src,
            gw_port: pkt.dport,
            backend_port: pkt.sport,
            proto: pkt.proto,
            family: pkt.family,
            _pad: [0; 2],
        };
        unsafe { SNAT.get(sk) }
    } else {
        None
    };
    let rv = if nat && sv.is_none() {
        let rk = ReverseKey {
            addr: pkt.src,
            port: pkt.sport,
            proto: pkt.proto,
            family: pkt.family,
        };
        unsafe { NAT_REVERSE.get(rk) }
    } else {
        None
    };
    let (src, sport, dst, dport) = if let Some(sv) = sv {
        (sv.vip_addr, sv.vip_port, sv.client_addr, sv.client_port)
    } else if let Some(rv) = rv {
        (rv.vip_addr, rv.vip_port, pkt.dst, pkt.dport)
    } else {
        return Err(Reason::NotVip);
    };
    if pkt.ttl <= 1 {
        return Err(Reason::TtlExceeded);
    }
    let p = fib_params()?;
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let rc = next_hop(ctx, pkt, &src, &dst, sport, dport, p, g.fib_cache_ms, now);
    // A target talking to the gateway itself (health checks) is not a reply
    // to a client: leave it alone.
    if rc != BPF_FIB_LKUP_RET_SUCCESS as i64
        && rc != BPF_FIB_LKUP_RET_NO_NEIGH as i64
        && rc != BPF_FIB_LKUP_RET_FRAG_NEEDED as i64
    {
        return Err(Reason::NotVip);
    }
    rewrite(ctx, pkt, &src, &dst, sport, dport)?;
    count(Reason::FwdToClient);
    Ok(emit(ctx, pkt, rc, p))
}

/// Rewrites addresses and ports, updating the IPv4 and L4 checksums.
#[inline(always)]
fn rewrite(
    ctx: &XdpContext,
    pkt: &Pkt,
    src: &[u32; 4],
    dst: &[u32; 4],
    sport: u16,
    dport: u16,
) -> Result<(), Reason> {
    let l3 = rewrite_l3(ctx, pkt, src, dst)?;
    let l4 = csum::diff16(csum::diff16(l3, pkt.sport, sport), pkt.dport, dport);
    unsafe {
        let (p, check_at) = if pkt.proto == PROTO_TCP {
            (
                ptr_at::<[u8; 20]>(ctx, pkt.l4_off, Reason::MalformedL4)? as *mut u8,
                16,
            )
        } else {
            (
                ptr_at::<[u8; 8]>(ctx, pkt.l4_off, Reason::MalformedL4)? as *mut u8,
                6,
            )
        };
        (p as *mut u16).write_unaligned(sport);
        (p.add(2) as *mut u16).write_unaligned(dport);
        let c = (p.add(check_at) as *mut u16).read_unaligned();
        if let Some(n) = csum::update_l4(c, l4, pkt.proto == PROTO_UDP, pkt.v6()) {
            (p.add(check_at) as *mut u16).write_unaligned(n);
        }
    }
    Ok(())
}

/// Rewrites the IP header's addresses and decrements its TTL / hop limit
/// (a forwarding hop), keeping the IPv4 header checksum right. Returns the
/// address difference, which every checksum over a pseudo-header needs.
/// Writes go through one checked header pointer (see `parse::hdr`).
#[inline(always)]
pub fn rewrite_l3(
    ctx: &XdpContext,
    pkt: &Pkt,
    src: &[u32; 4],
    dst: &[u32; 4],
) -> Result<u64, Reason> {
    let v6 = pkt.v6();
    let l3 = csum::diff_addr(csum::diff_addr(0, &pkt.src, src, v6), &pkt.dst, dst, v6);
    unsafe {
        if v6 {
            let ip = ptr_at::<[u8; 40]>(ctx, pkt.l3_off, Reason::MalformedL3)? as *mut u8;
            *ip.add(7) = pkt.ttl - 1;
            (ip.add(8) as *mut [u32; 4]).write_unaligned(*src);
            (ip.add(24) as *mut [u32; 4]).write_unaligned(*dst);
        } else {
            let ip = ptr_at::<[u8; 20]>(ctx, pkt.l3_off, Reason::MalformedL3)? as *mut u8;
            (ip.add(12) as *mut u32).write_unaligned(src[0]);
            (ip.add(16) as *mut u32).write_unaligned(dst[0]);
            // Word 8 holds TTL and protocol.
            let ttl_old = u16::from_ne_bytes([pkt.ttl, pkt.proto]);
            let ttl_new = u16::from_ne_bytes([pkt.ttl - 1, pkt.proto]);
            *ip.add(8) = pkt.ttl - 1;
            let c = (ip.add(10) as *mut u16).read_unaligned();
            (ip.add(10) as *mut u16)
                .write_unaligned(csum::apply(c, csum::diff16(l3, ttl_old, ttl_new)));
        }
    }
    Ok(l3)
}

/// FIB lookup for the translated packet.
#[inline(always)]
pub fn fib(
    ctx: &XdpContext,
    pkt: &Pkt,
    src: &[u32; 4],
    dst: &[u32; 4],
    sport: u16,
    dport: u16,
    p: &mut bpf_fib_lookup,
) -> i64 {
    p.l4_protocol = pkt.proto;
    p.sport = sport;
    p.dport = dport;
    p.ifindex = ctx.ingress_ifindex() as u32;
    p.__bindgen_anon_1.tot_len = pkt.ip_len;
    if pkt.v6() {
        p.family = 10; // AF_INET6
        p.__bindgen_anon_3.ipv6_src = *src;
        p.__bindgen_anon_4.ipv6_dst = *dst;
    } else {
        p.family = 2; // AF_INET
        p.__bindgen_anon_3.ipv4_src = src[0];
        p.__bindgen_anon_4.ipv4_dst = dst[0];
    }
    fib_call(ctx, p)
}

#[inline(always)]
fn fib_call(ctx: &XdpContext, p: &mut bpf_fib_lookup) -> i64 {
    unsafe {
        fib_lookup_helper(
            ctx.as_ptr(),
            p,
            core::mem::size_of::<bpf_fib_lookup>() as i32,
            0,
        )
    }
}

/// Next hop for `dst`: from the per-CPU cache while fresh and the packet
/// fits the cached path MTU, else `bpf_fib_lookup` (about 130 ns here),
/// whose answer is then cached for `fib_cache_ms`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn next_hop(
    ctx: &XdpContext,
    pkt: &Pkt,
    src: &[u32; 4],
    dst: &[u32; 4],
    sport: u16,
    dport: u16,
    p: &mut bpf_fib_lookup,
    cache_ms: u32,
    now: u64,
) -> i64 {
    let idx = lb_common::hash::hash_words(0x6669_6221, dst) % FIB_CACHE_SLOTS;
    let slot = FIB_CACHE.get_ptr_mut(idx);
    if cache_ms != 0 {
        if let Some(e) = slot {
            let e = unsafe { &*e };
            if e.family == pkt.family && e.dst == *dst && now < e.expires_ns && pkt.ip_len <= e.mtu
            {
                p.ifindex = e.ifindex;
                p.smac = e.smac;
                p.dmac = e.dmac;
                return BPF_FIB_LKUP_RET_SUCCESS as i64;
            }
        }
    }
    let rc = fib(ctx, pkt, src, dst, sport, dport, p);
    if rc != BPF_FIB_LKUP_RET_SUCCESS as i64 || cache_ms == 0 {
        return rc;
    }
    let Some(e) = slot else { return rc };
    let e = unsafe { &mut *e };
    e.dst = *dst;
    e.family = pkt.family;
    e.ifindex = p.ifindex;
    e.smac = p.smac;
    e.dmac = p.dmac;
    // Learn the path MTU: an oversized probe answers FRAG_NEEDED with it.
    p.ifindex = ctx.ingress_ifindex() as u32;
    p.__bindgen_anon_1.tot_len = 0xffff;
    let probe = fib_call(ctx, p);
    e.mtu = if probe == BPF_FIB_LKUP_RET_FRAG_NEEDED as i64 {
        unsafe { p.__bindgen_anon_1.mtu_result }
    } else {
        0xffff
    };
    e.expires_ns = now + cache_ms as u64 * 1_000_000;
    p.ifindex = e.ifindex;
    p.smac = e.smac;
    p.dmac = e.dmac;
    rc
}

/// Zeroed FIB lookup parameters in per-CPU scratch memory: 64 bytes the
/// 512-byte BPF stack cannot spare.
#[inline(always)]
pub fn fib_params() -> Result<&'static mut bpf_fib_lookup, Reason> {
    let p = FIB_SCRATCH.get_ptr_mut(0).ok_or(Reason::MapError)?;
    let p = unsafe { &mut *p };
    *p = unsafe { core::mem::zeroed() };
    Ok(p)
}

/// Sends the rewritten packet on: straight out when the neighbour is known,
/// else through the kernel (which resolves it).
#[inline(always)]
pub fn emit(ctx: &XdpContext, pkt: &Pkt, rc: i64, p: &bpf_fib_lookup) -> u32 {
    if rc != BPF_FIB_LKUP_RET_SUCCESS as i64 {
        count(if rc == BPF_FIB_LKUP_RET_NO_NEIGH as i64 {
            Reason::FibNoNeigh
        } else {
            Reason::FibFailed
        });
        return xdp_action::XDP_PASS;
    }
    if write(ctx, 0, p.dmac).is_err() || write(ctx, 6, p.smac).is_err() {
        return xdp_action::XDP_PASS;
    }
    // A VLAN-tagged frame is forwarded by the kernel, which owns the tag
    // to egress-device mapping.
    if pkt.vlan {
        return xdp_action::XDP_PASS;
    }
    if p.ifindex == ctx.ingress_ifindex() as u32 {
        xdp_action::XDP_TX
    } else {
        unsafe { bpf_redirect(p.ifindex, 0) as u32 }
    }
}
