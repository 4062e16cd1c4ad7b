//! The fast path: VIP lookup, conntrack, Maglev choice, NAT/SNAT rewrite,
//! reply translation and forwarding through the FIB.
// Keys in `SCRATCH` are passed by reference on purpose: by value (what
// clippy suggests) they would be copied onto the 512-byte stack.
#![allow(clippy::needless_borrows_for_generic_args)]

use core::intrinsics::AtomicOrdering;

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{
        bpf_fib_lookup, xdp_action, xdp_md, BPF_ANY, BPF_FIB_LKUP_RET_FRAG_NEEDED,
        BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, BPF_NOEXIST,
    },
    helpers::{
        bpf_fib_lookup as fib_lookup_helper, bpf_ktime_get_coarse_ns, bpf_redirect,
        generated::bpf_loop,
    },
    programs::XdpContext,
    EbpfContext,
};
use lb_common::{
    flow, hash::flow_hash, passive, select::flow_key_hash, snat, AclData, Backend, Counters,
    FlowKey, FlowState, Globals, Passthrough, Reason, ReverseEntry, ReverseKey, ReverseVal,
    SnatKey, SnatVal, VipKey, VipMeta, VipSlot, ADDR_F_TARGET, ADDR_F_VIP, BACKEND_F_VALID,
    FIB_CACHE_SLOTS, PORT_TARGET_TCP, PORT_TARGET_UDP, PORT_VIP_TCP, PORT_VIP_UDP, PROTO_TCP,
    PROTO_UDP, REVERSE_SLOTS, VIP_F_ALLOW_LIST, VIP_F_CROSS_ZONE, VIP_F_DENY_LIST,
    VIP_F_REDISPATCH, VIP_F_SNAT,
};

use crate::{
    count, csum, ct,
    parse::{self, copy_mac, ld, ptr_at, st, Pkt},
    ACL, ADDR_BITS, BACKENDS, BACKEND_STATS, DIRECT_SLOTS, FIB_CACHE, FIB_SCRATCH, GLOBALS, JUMP,
    JUMP_ICMP, JUMP_REPLY, NAT_REVERSE, PASSTHROUGH, PORTS, RING, SCRATCH, SNAT, TX_PORTS, VIPS,
    VIP_SLOTS, VIP_STATS,
};

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
    // The port bitmap spares ordinary traffic every hash lookup; the
    // address filter spares it those of a VIP's or target's port on
    // another address.
    let dbits = port_bits(pkt.dport);
    if dbits & vip_bit != 0 && addr_bits(&pkt.dst) & ADDR_F_VIP != 0 {
        if let Some(action) = to_backend(ctx, &pkt, g, now())? {
            return Ok(action);
        }
    }
    let (nat, snat) = reply_tables(&pkt, g, target_bit);
    let nat = nat && addr_bits(&pkt.src) & ADDR_F_TARGET != 0;
    if nat || snat {
        // The reply path is a program of its own (`lb_reply`): a verifier
        // budget of its own. Returns only when the call fails.
        unsafe { JUMP.tail_call(ctx, JUMP_REPLY) };
        return Err(Reason::MapError);
    }
    if dbits & target_bit != 0
        && addr_bits(&pkt.dst) & ADDR_F_TARGET != 0
        && note_direct(&pkt, now())
    {
        return Err(Reason::DirectToTarget);
    }
    Err(Reason::NotVip)
}

/// The clock, read only where a flow needs it: tick resolution is plenty
/// for idle timeouts, and far cheaper than `bpf_ktime_get_ns`.
#[inline(always)]
fn now() -> u64 {
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// Which reply tables may hold `pkt`: from a target port (`nat`), to the
/// SNAT port range (`snat`).
#[inline(always)]
fn reply_tables(pkt: &Pkt, g: &Globals, target_bit: u8) -> (bool, bool) {
    let dport = u16::from_be(pkt.dport);
    (
        port_bits(pkt.sport) & target_bit != 0,
        dport >= g.snat_port_min && dport <= g.snat_port_max,
    )
}

/// `lb_reply`: target -> client, tail-called by `lb_xdp` for a packet
/// that is no VIP's and may be a reply; else a non-VIP packet (a client's
/// direct flow to a target is remembered).
#[inline(always)]
pub fn try_reply(ctx: &XdpContext) -> Result<u32, Reason> {
    let pkt = parse::parse(ctx)?;
    let target_bit = match pkt.proto {
        PROTO_TCP => PORT_TARGET_TCP,
        PROTO_UDP => PORT_TARGET_UDP,
        _ => return Err(Reason::NotVip),
    };
    let g = GLOBALS.get(0).ok_or(Reason::MapError)?;
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let (nat, snat) = reply_tables(&pkt, g, target_bit);
    match to_client(ctx, &pkt, g, nat, snat, now) {
        Err(Reason::NotVip) => {}
        r => return r,
    }
    // No address filter here: after a restart, the pinned `lb_xdp` tail-
    // calls the new `lb_reply` before the new instance's filter is written.
    if port_bits(pkt.dport) & target_bit != 0 && note_direct(&pkt, now) {
        return Err(Reason::DirectToTarget);
    }
    Err(Reason::NotVip)
}

/// `ADDR_F_*` bits of an address's filter slot: what it may be.
#[inline(always)]
fn addr_bits(addr: &[u32; 4]) -> u8 {
    ADDR_BITS
        .get(lb_common::addr_slot(addr))
        .copied()
        .unwrap_or(0)
}

#[inline(always)]
fn port_bits(port_be: u16) -> u8 {
    PORTS
        .get(u16::from_be(port_be) as u32)
        .copied()
        .unwrap_or(0)
}

#[inline(always)]
fn bump(c: Option<*mut Counters>, bytes: u16, new_flow: bool, client_reset: bool) {
    if let Some(c) = c {
        let c = unsafe { &mut *c };
        c.packets += 1;
        c.bytes += bytes as u64;
        if new_flow {
            c.new_flows += 1;
        }
        if client_reset {
            c.client_resets += 1;
        }
    }
}

/// A reply counted for its VIP (and a target's RST).
#[inline(always)]
fn bump_reply(vip_id: u32, pkt: &Pkt) {
    if let Some(c) = VIP_STATS.get_ptr_mut(vip_id) {
        let c = unsafe { &mut *c };
        c.reply_packets += 1;
        c.reply_bytes += pkt.ip_len as u64;
        if pkt.proto == PROTO_TCP && pkt.tcp_flags & lb_common::flow::TCP_RST != 0 {
            c.target_resets += 1;
        }
    }
}

/// The packet's flow as the client sent it.
#[inline(always)]
fn flow_key(pkt: &Pkt) -> FlowKey {
    FlowKey::new(
        pkt.src, pkt.dst, pkt.sport, pkt.dport, pkt.proto, pkt.family,
    )
}

/// The `SNAT` key of a flow's port towards its target.
#[inline(always)]
fn snat_key(pkt: &Pkt, meta: &VipMeta, baddr: &[u32; 4], bport: u16, port_be: u16) -> SnatKey {
    SnatKey {
        gw_addr: meta.snat_addr,
        backend_addr: *baddr,
        gw_port: port_be,
        backend_port: bport,
        proto: pkt.proto,
        family: pkt.family,
        _pad: [0; 2],
    }
}

/// The flow a `SNAT` entry was made for.
#[inline(always)]
fn snat_val(pkt: &Pkt, vip_id: u32) -> SnatVal {
    SnatVal {
        client_addr: pkt.src,
        vip_addr: pkt.dst,
        client_port: pkt.sport,
        vip_port: pkt.dport,
        vip_id,
        gen: 0,
    }
}

/// The client's flow (its conntrack key) that a `SNAT` entry was made for.
#[inline(always)]
fn snat_flow(v: &SnatVal, proto: u8, family: u8) -> FlowKey {
    FlowKey::new(
        v.client_addr,
        v.vip_addr,
        v.client_port,
        v.vip_port,
        proto,
        family,
    )
}

#[inline(always)]
fn same_flow(a: &SnatVal, b: &SnatVal) -> bool {
    a.client_addr == b.client_addr
        && a.vip_addr == b.vip_addr
        && a.client_port == b.client_port
        && a.vip_port == b.vip_port
}

/// A conntrack hit keeps its SNAT entry: the lookup refreshes it in the
/// LRU (a quiet flow's port is not evicted and handed to another client),
/// and an entry evicted anyway is put back. False when another flow holds
/// the port now.
#[inline(always)]
fn snat_keep(pkt: &Pkt, meta: &VipMeta, b: &Backend, port_be: u16) -> bool {
    let Some(sc) = SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    let sc = unsafe { &mut *sc };
    sc.snat_key = snat_key(pkt, meta, &b.addr, b.port, port_be);
    sc.snat_val = snat_val(pkt, meta.vip_id);
    match unsafe { SNAT.get(&sc.snat_key) } {
        Some(v) => same_flow(v, &sc.snat_val),
        None => SNAT
            .insert(&sc.snat_key, &sc.snat_val, BPF_NOEXIST as u64)
            .is_ok(),
    }
}

/// Client -> VIP: find or create the flow, rewrite towards its target.
/// `None`: not a VIP after all.
#[inline(always)]
fn to_backend(ctx: &XdpContext, pkt: &Pkt, g: &Globals, now: u64) -> Result<Option<u32>, Reason> {
    let key = flow_key(pkt);
    let closing = flow::is_closing(pkt.proto, pkt.tcp_flags);
    let syn = flow::is_syn(pkt.proto, pkt.tcp_flags);
    let mut backend_id = 0u32;
    let mut snat_port = 0u16;
    let mut hit: Option<&VipMeta> = None;
    // A retried SYN that must not go back to the target it went to.
    let mut avoid = 0u32;
    if let Some(st) = ct::get_ptr_mut(&key) {
        let st = unsafe { &mut *st };
        // The flow's VIP by slot; its key must still be this packet's.
        if let Some(slot) = VIP_SLOTS.get(st.vip_id) {
            let k = &slot.key;
            let same_vip = k.addr == pkt.dst
                && k.port == pkt.dport
                && k.proto == pkt.proto
                && k.family == pkt.family;
            let age = now.wrapping_sub(st.last_seen_ns);
            let idle = st.idle_timeout_s;
            let goes_on = flow::continues(g, pkt.proto, idle, st.flags, age, syn);
            let mut moved = false;
            if same_vip && goes_on && syn {
                let r = passive::retry(st.flags, age, slot.meta.flags & VIP_F_REDISPATCH != 0);
                if r.unanswered {
                    crate::passive::unanswered(st.backend_id, st.last_seen_ns, now);
                }
                if r.elsewhere {
                    avoid = st.backend_id;
                    moved = true;
                }
            }
            // A flow keeps its target while the target is registered (also
            // while it drains), whatever the ring says now.
            // (An array lookup, inlined: looking it up again below for the
            // rewrite costs nothing, and a branch-free `Option<&Backend>`
            // carried over is what LLVM turns into pointer masking, which
            // the verifier rejects.)
            if same_vip && goes_on && !moved {
                if let Some(b) = BACKENDS.get(st.backend_id) {
                    let mode_ok = if slot.meta.flags & VIP_F_SNAT == 0 {
                        st.snat_port == 0
                    } else if st.snat_port == 0 {
                        false
                    } else if snat_keep(pkt, &slot.meta, b, st.snat_port) {
                        true
                    } else {
                        count(Reason::SnatLost);
                        false
                    };
                    if b.flags & BACKEND_F_VALID != 0 && mode_ok {
                        backend_id = st.backend_id;
                        snat_port = st.snat_port;
                        let flags = passive::client_flags(st.flags, syn);
                        st.flags = flow::next_flags(g, pkt.proto, idle, flags, age, closing);
                        st.last_seen_ns = now;
                        hit = Some(&slot.meta);
                    }
                }
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
    if new_flow && blocked(meta, pkt) {
        if let Some(c) = VIP_STATS.get_ptr_mut(meta.vip_id) {
            unsafe { (*c).blocked += 1 };
        }
        count(Reason::AclBlocked);
        return Ok(Some(xdp_action::XDP_DROP));
    }
    if new_flow {
        let h = flow_key_hash(
            g.hash_key, meta.flags, &pkt.src, &pkt.dst, pkt.sport, pkt.dport, pkt.proto,
        );
        let m = g.ring_size;
        if m == 0 {
            return Err(Reason::MapError);
        }
        let last_resort;
        (backend_id, last_resort) = crate::passive::pick(meta, m, h, avoid, now);
        if backend_id == 0 {
            count(Reason::NoBackend);
            return Ok(Some(xdp_action::XDP_DROP));
        }
        if avoid != 0 {
            count(Reason::SynRetryMoved);
        }
        // Made now and kept in scratch memory, not in registers: what it
        // is made of (SYN or not, last resort) would otherwise be carried
        // through the SNAT port search, and the verifier explores that
        // search once for each combination.
        let sc = SCRATCH.get_ptr_mut(0).ok_or(Reason::MapError)?;
        // The listener's idle timeout goes with the flow (a new flow only:
        // one array lookup).
        let idle = VIP_SLOTS.get(meta.vip_id).map_or(0, |s| s.idle_timeout_s);
        unsafe {
            (*sc).state = FlowState {
                backend_id,
                flags: flow::next_flags(g, pkt.proto, idle, 0, 0, closing)
                    | passive::opening_flags(syn, last_resort),
                last_seen_ns: now,
                snat_port: 0,
                idle_timeout_s: idle,
                vip_id: meta.vip_id,
            }
        };
    }
    let b = BACKENDS.get(backend_id).ok_or(Reason::MapError)?;
    if b.family != pkt.family {
        return Err(Reason::MapError);
    }
    let snat = meta.flags & VIP_F_SNAT != 0;
    // New state only for a SYN (or UDP), and at most `new_flows_per_cpu`
    // a second (Katran's flood guard): past that a flow is balanced by the
    // ring alone, which every packet of it repeats, and its replies are
    // translated statelessly. A `snat` flow needs a port, so state: dropped.
    let sc = SCRATCH.get_ptr_mut(0).ok_or(Reason::MapError)?;
    // In memory, not a register: carried in a register past the SNAT port
    // search, the verifier would explore that search once per value.
    unsafe { (*sc).track = new_flow as u32 };
    if new_flow {
        let why = if pkt.proto == PROTO_TCP && !syn {
            Some(Reason::NotSynUntracked)
        } else if flood(g, now) {
            Some(Reason::FloodUntracked)
        } else {
            None
        };
        if let Some(r) = why {
            if snat {
                count(Reason::SnatUntracked);
                return Ok(Some(xdp_action::XDP_DROP));
            }
            count(r);
            unsafe { (*sc).track = 0 };
        }
    }
    if snat && new_flow {
        match alloc_snat_port(pkt, meta, b, g, now) {
            0 => {
                count(Reason::SnatExhausted);
                return Ok(Some(xdp_action::XDP_DROP));
            }
            p => snat_port = p,
        }
    }
    let track = unsafe { core::ptr::read_volatile(&(*sc).track) } != 0;
    if track {
        let sc = SCRATCH.get_ptr_mut(0).ok_or(Reason::MapError)?;
        let st = unsafe { &mut (*sc).state };
        st.snat_port = snat_port;
        if ct::insert(&key, &*st, BPF_ANY as u64).is_err() {
            return Err(Reason::MapError);
        }
    }
    let rst = pkt.proto == PROTO_TCP && pkt.tcp_flags & lb_common::flow::TCP_RST != 0;
    // New flows counted once: untracked ones (each packet picks anew) not.
    bump(VIP_STATS.get_ptr_mut(meta.vip_id), pkt.ip_len, track, rst);
    bump(
        BACKEND_STATS.get_ptr_mut(backend_id),
        pkt.ip_len,
        track,
        false,
    );
    let (src, sport) = if snat {
        (meta.snat_addr, snat_port)
    } else {
        (pkt.src, pkt.sport)
    };
    let (dst, dport) = (b.addr, b.port);
    let p = fib_params()?;
    let rc = next_hop(ctx, pkt, &src, &dst, sport, dport, p, g.fib_cache_ms, now);
    if rc == BPF_FIB_LKUP_RET_FRAG_NEEDED as i64 && crate::toobig::wanted(pkt) {
        let mtu = unsafe { p.__bindgen_anon_1.mtu_result };
        return crate::toobig::send(ctx, pkt, mtu, now).map(Some);
    }
    let l2 = kernel_forwards(pkt, rc, p);
    rewrite(ctx, pkt, &src, &dst, sport, dport, !l2 as u8)?;
    count(Reason::FwdToBackend);
    Ok(Some(emit(ctx, rc, p, l2)))
}

/// `on_target_side`'s question (the target's address) and answer (`ok`).
#[repr(C)]
pub struct SideQ {
    pub addr: [u32; 4],
    pub family: u8,
    pub _pad: [u8; 3],
    pub ok: u32,
    pub now: u64,
    pub cache_ms: u32,
    pub _pad2: u32,
}

/// A packet from a target's address and port must arrive on the interface
/// the FIB says leads to that target to be taken as its reply: one forged
/// on the client side is neither translated nor counted (as passive
/// health). Undecidable (no route to the target): taken.
#[inline(always)]
fn on_target_side(ctx: &XdpContext, pkt: &Pkt, g: &Globals) -> Result<bool, Reason> {
    if g.flags & lb_common::GLOBAL_F_REPLY_SIDE == 0 {
        return Ok(true);
    }
    let sc = SCRATCH.get_ptr_mut(0).ok_or(Reason::MapError)?;
    let q = unsafe { &mut (*sc).side };
    q.addr = pkt.src;
    q.family = pkt.family;
    q.ok = 1;
    q.now = unsafe { bpf_ktime_get_coarse_ns() };
    q.cache_ms = g.fib_cache_ms;
    // In a `bpf_loop` callback (one round), verified once: inlined, the
    // lookup's branches would multiply the states of the reply path. The
    // callback gets the context through a stack slot.
    let mut c: *mut xdp_md = ctx.ctx;
    unsafe {
        bpf_loop(
            1,
            side_step as *mut c_void,
            &mut c as *mut *mut xdp_md as *mut c_void,
            0,
        );
        Ok(core::ptr::read_volatile(&(*sc).side.ok) != 0)
    }
}

/// `on_target_side`'s FIB lookup towards the target: `ok` stays 1 unless
/// the route leads out another interface than the packet came in on.
#[inline(never)]
extern "C" fn side_step(_i: u64, c: *mut c_void) -> i64 {
    let ctx = unsafe { *(c as *mut *mut xdp_md) };
    let (Some(sc), Some(p)) = (SCRATCH.get_ptr_mut(0), FIB_SCRATCH.get_ptr_mut(0)) else {
        return 1;
    };
    let (q, p) = unsafe { (&mut (*sc).side, &mut *p) };
    let ingress = unsafe { (*ctx).ingress_ifindex };
    // The next-hop cache first: the forward path fills it for targets.
    let slot = fib_slot(&q.addr);
    if q.cache_ms != 0 {
        if let Some(e) = slot {
            let e = unsafe { &*e };
            if holds(e, q.family, &q.addr, q.now) {
                if e.ifindex != ingress {
                    q.ok = 0;
                }
                return 1;
            }
        }
    }
    *p = unsafe { core::mem::zeroed() };
    p.ifindex = ingress;
    p.__bindgen_anon_1.tot_len = 20;
    if q.family == lb_common::AF_INET6 {
        p.family = 10;
        p.__bindgen_anon_4.ipv6_dst = q.addr;
    } else {
        p.family = 2;
        p.__bindgen_anon_4.ipv4_dst = q.addr[0];
    }
    let rc = unsafe {
        fib_lookup_helper(
            ctx as *mut c_void,
            p,
            core::mem::size_of::<bpf_fib_lookup>() as i32,
            0,
        )
    };
    // Undecidable (no route to the target): taken.
    let decided = rc == BPF_FIB_LKUP_RET_SUCCESS as i64 || rc == BPF_FIB_LKUP_RET_NO_NEIGH as i64;
    if decided && p.ifindex != ingress {
        q.ok = 0;
    }
    // Cached for the next reply; with no path MTU learnt (0), so the
    // forward path asks the FIB again before it sends through the entry.
    if rc == BPF_FIB_LKUP_RET_SUCCESS as i64 && q.cache_ms != 0 {
        if let Some(e) = slot {
            let e = unsafe { &mut *e };
            e.dst = q.addr;
            e.family = q.family;
            e.ifindex = p.ifindex;
            e.smac = p.smac;
            e.dmac = p.dmac;
            e.mtu = 0;
            e.expires_ns = q.now + q.cache_ms as u64 * 1_000_000;
        }
    }
    1
}

/// A new flow the lists refuse: its source on the gateway's deny list, or
/// not on its listener's allow list (established flows are not checked
/// again, as NLB's security groups track them).
#[inline(always)]
fn blocked(meta: &VipMeta, pkt: &Pkt) -> bool {
    if meta.flags & (VIP_F_ALLOW_LIST | VIP_F_DENY_LIST) == 0 {
        return false;
    }
    let Some(sc) = SCRATCH.get_ptr_mut(0) else {
        return true;
    };
    let k = unsafe { &mut (*sc).acl };
    let bits = if pkt.family == lb_common::AF_INET {
        32
    } else {
        128
    };
    k.prefix_len = lb_common::ACL_SCOPE_BITS + bits;
    if meta.flags & VIP_F_DENY_LIST != 0 {
        k.data = AclData::of(lb_common::ACL_GATEWAY, pkt.family, &pkt.src);
        if ACL.get(&*k).is_some() {
            return true;
        }
    }
    if meta.flags & VIP_F_ALLOW_LIST != 0 {
        k.data = AclData::of(meta.vip_id, pkt.family, &pkt.src);
        return ACL.get(&*k).is_none();
    }
    false
}

/// Whether this CPU has tracked `new_flows_per_cpu` new flows in the
/// current second already (counted in its scratch memory: no atomics).
#[inline(always)]
fn flood(g: &Globals, now: u64) -> bool {
    if g.new_flows_per_cpu == 0 {
        return false;
    }
    let Some(sc) = SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    let sc = unsafe { &mut *sc };
    if now.wrapping_sub(sc.flood_window_ns) >= flow::NS {
        sc.flood_window_ns = now;
        sc.flood_count = 0;
    }
    sc.flood_count += 1;
    sc.flood_count > g.new_flows_per_cpu
}

/// Picks a free source port for a SNAT flow: a few distinct probes in the
/// range. A port is free when no entry has it, or when the flow that had it
/// no longer holds it (closed past the closing timeout, idle past its
/// timeout, or gone from conntrack); taking over such an entry is a
/// compare-and-swap on its generation, so two CPUs never both take it.
/// Returns the port (network order), 0 when none is free.
#[inline(always)]
fn alloc_snat_port(pkt: &Pkt, meta: &VipMeta, b: &Backend, g: &Globals, now: u64) -> u16 {
    let (min, max) = (g.snat_port_min, g.snat_port_max);
    if max < min {
        return 0;
    }
    let Some(sc) = SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    let sc = unsafe { &mut *sc };
    let range = (max - min) as u32 + 1;
    let h = flow_hash(
        g.hash_key, &pkt.src, &pkt.dst, pkt.sport, pkt.dport, pkt.proto,
    );
    sc.snat_val = snat_val(pkt, meta.vip_id);
    for i in 0..snat::TRIES {
        let port = snat::probe(min, range, &g.snat_strides, h, i).to_be();
        sc.snat_key = snat_key(pkt, meta, &b.addr, b.port, port);
        if SNAT
            .insert(&sc.snat_key, &sc.snat_val, BPF_NOEXIST as u64)
            .is_ok()
        {
            return port;
        }
        let Some(old) = SNAT.get_ptr_mut(&sc.snat_key) else {
            continue;
        };
        let gen_ptr = unsafe { core::ptr::addr_of_mut!((*old).gen) };
        let gen = unsafe { core::ptr::read_volatile(gen_ptr) };
        sc.flow = snat_flow(unsafe { &*old }, pkt.proto, pkt.family);
        let held = ct::get(&sc.flow).is_some_and(|s| {
            s.snat_port == port
                && flow::live(
                    g,
                    pkt.proto,
                    s.idle_timeout_s,
                    s.flags,
                    now.wrapping_sub(s.last_seen_ns),
                )
        });
        if held {
            continue;
        }
        // The BPF target has no `AtomicU64::compare_exchange` (no CAS in
        // its spec); the intrinsic is the kernel's BPF_CMPXCHG (cpu v3).
        let (_, won) = unsafe {
            core::intrinsics::atomic_cxchg::<
                u64,
                { AtomicOrdering::SeqCst },
                { AtomicOrdering::SeqCst },
            >(gen_ptr, gen, gen.wrapping_add(1))
        };
        if won {
            let o = unsafe { &mut *old };
            let v = &sc.snat_val;
            o.client_addr = v.client_addr;
            o.vip_addr = v.vip_addr;
            o.client_port = v.client_port;
            o.vip_port = v.vip_port;
            o.vip_id = v.vip_id;
            return port;
        }
    }
    0
}

/// A non-VIP packet to a target port: if its destination is a target,
/// remember the flow, so that its replies are passed, not translated.
/// True when it was such a flow.
#[inline(always)]
fn note_direct(pkt: &Pkt, now: u64) -> bool {
    let rk = ReverseKey {
        addr: pkt.dst,
        port: pkt.dport,
        proto: pkt.proto,
        family: pkt.family,
    };
    if unsafe { NAT_REVERSE.get(rk) }.is_none() {
        return false;
    }
    if let Some(d) = DIRECT_SLOTS.get_ptr_mut(lb_common::addr_slot(&pkt.dst)) {
        // Written once: a store per packet would bounce the line.
        if unsafe { *d } == 0 {
            unsafe { *d = 1 };
        }
    }
    let key = flow_key(pkt);
    if let Some(e) = PASSTHROUGH.get_ptr_mut(key) {
        // One store per packet; an update would cost a map operation.
        unsafe { (*e).last_seen_ns = now };
    } else {
        let _ = PASSTHROUGH.insert(key, Passthrough { last_seen_ns: now }, BPF_ANY as u64);
    }
    true
}

/// The reply `pkt` belongs to a non-VIP flow this gateway forwarded to the
/// target (`PASSTHROUGH`), live and seen after `than` (ns): refreshed, as
/// replies keep it fresh too (a target that streams to a client).
#[inline(always)]
fn direct_is_newer(pkt: &Pkt, g: &Globals, than: u64, now: u64) -> bool {
    let seen = DIRECT_SLOTS.get(lb_common::addr_slot(&pkt.src)).copied();
    if seen.unwrap_or(1) == 0 {
        return false;
    }
    let Some(sc) = SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    let sc = unsafe { &mut *sc };
    sc.flow = FlowKey::new(
        pkt.dst, pkt.src, pkt.dport, pkt.sport, pkt.proto, pkt.family,
    );
    let Some(p) = PASSTHROUGH.get_ptr_mut(&sc.flow) else {
        return false;
    };
    let p = unsafe { &mut *p };
    let fresh = now.wrapping_sub(p.last_seen_ns) <= flow::timeout_ns(g, pkt.proto, 0, 0);
    if fresh && p.last_seen_ns > than {
        p.last_seen_ns = now;
        return true;
    }
    false
}

/// Listener `i` of those a target serves (`NAT_REVERSE` value): its entry
/// and VIP slot. `None` past the last one (entries are packed).
#[inline(always)]
pub fn served(rv: &ReverseVal, i: usize) -> Option<(ReverseEntry, &'static VipSlot)> {
    let e = *rv.entries.get(i)?;
    if e.backend_id == 0 {
        return None;
    }
    Some((e, VIP_SLOTS.get(e.vip_id)?))
}

/// Which VIP a `nat` reply (target -> client) comes from, or `None` when
/// it belongs to no VIP flow. In order: a flow in local conntrack (one of
/// the listeners the target serves has it, with this target); a non-VIP
/// flow this gateway forwarded to the target (passed untouched); else, for
/// a flow another gateway set up, the listener whose ring picks this target
/// for the client's tuple (stateless and the same on every gateway;
/// `true` with the slot).
#[inline(always)]
fn nat_reply(
    ctx: &XdpContext,
    pkt: &Pkt,
    g: &Globals,
    now: u64,
) -> Result<Option<(&'static VipSlot, bool)>, Reason> {
    let rk = ReverseKey {
        addr: pkt.src,
        port: pkt.sport,
        proto: pkt.proto,
        family: pkt.family,
    };
    let Some(rv) = (unsafe { NAT_REVERSE.get(rk) }) else {
        return Ok(None);
    };
    // Before any flow state moves (a forged RST must not count as a
    // refusal).
    if !on_target_side(ctx, pkt, g)? {
        return Err(Reason::ReplyWrongSide);
    }
    let sc = SCRATCH.get_ptr_mut(0).ok_or(Reason::MapError)?;
    let sc = unsafe { &mut *sc };
    let closing = flow::is_closing(pkt.proto, pkt.tcp_flags);
    sc.other_target = 0;
    for i in 0..REVERSE_SLOTS {
        let Some((e, slot)) = served(rv, i) else {
            break;
        };
        sc.flow = client_flow(pkt, slot);
        if let Some(st) = ct::get_ptr_mut(&sc.flow) {
            let st = unsafe { &mut *st };
            let age = now.wrapping_sub(st.last_seen_ns);
            let idle = st.idle_timeout_s;
            if st.backend_id == e.backend_id
                && flow::continues(g, pkt.proto, idle, st.flags, age, false)
            {
                // The client may also reach this target directly from the
                // same address and port (a reused source port, a resolver
                // on a fixed port): the direction it used last wins.
                if direct_is_newer(pkt, g, st.last_seen_ns, now) {
                    return Err(Reason::DirectToTarget);
                }
                // Replies keep the flow fresh too (a one-way UDP stream).
                st.last_seen_ns = now;
                let redispatch = slot.meta.flags & VIP_F_REDISPATCH != 0;
                if pkt.proto == PROTO_TCP
                    && crate::passive::on_reply(st, pkt.tcp_flags, redispatch, now)
                {
                    return Err(Reason::SynRedispatch);
                }
                st.flags = flow::next_flags(g, pkt.proto, idle, st.flags, age, closing);
                return Ok(Some((slot, false)));
            }
            if flow::live(g, pkt.proto, idle, st.flags, age) {
                sc.other_target = 1;
            }
        }
    }
    if direct_is_newer(pkt, g, 0, now) {
        return Err(Reason::DirectToTarget);
    }
    // The client's flow is on another target: a moved SYN's old target
    // answering late. Translated, the client would take it and then reach
    // the new target mid-handshake. (A flag in memory, read here: carried
    // in a register, it would double the states of all that follows.)
    if pkt.proto == PROTO_TCP
        && passive::is_syn_ack(pkt.tcp_flags)
        && unsafe { core::ptr::read_volatile(&sc.other_target) } != 0
    {
        return Err(Reason::SynRedispatch);
    }
    let m = g.ring_size;
    if m == 0 {
        return Err(Reason::MapError);
    }
    for i in 0..REVERSE_SLOTS {
        let Some((e, slot)) = served(rv, i) else {
            break;
        };
        let meta = &slot.meta;
        let h = flow_key_hash(
            g.hash_key,
            meta.flags,
            &pkt.dst,
            &slot.key.addr,
            pkt.dport,
            slot.key.port,
            pkt.proto,
        );
        let at = h % m;
        let ring = |r: u32| RING.get(r.wrapping_mul(m) + at).copied().unwrap_or(0);
        // The zone ring's pick, or the all-zones ring's (the fallback, and
        // what a gateway with an empty zone ring picks).
        let zone = meta.flags & VIP_F_CROSS_ZONE == 0 && ring(meta.ring_zone) == e.backend_id;
        if zone || ring(meta.ring_all) == e.backend_id {
            // For `adopt`, once the reply is known to go to a client.
            sc.stateless_backend = e.backend_id;
            return Ok(Some((slot, true)));
        }
    }
    Ok(None)
}

/// The client's flow of a reply `pkt` for listener `slot`: the client
/// from the reply's destination, the VIP from the listener's slot.
#[inline(always)]
fn client_flow(pkt: &Pkt, slot: &VipSlot) -> FlowKey {
    FlowKey::new(
        pkt.dst,
        slot.key.addr,
        pkt.dport,
        slot.key.port,
        pkt.proto,
        pkt.family,
    )
}

/// A connection another gateway set up, answered by the target the ring
/// names (data or an ACK, from the target's side, to a client: not a
/// health check's answer to the gateway): tracked from now on, so
/// it keeps its target through ring changes. Only a SYN creates state on
/// the client's side; this is proof a forger cannot give (the target
/// answers a forged ACK with a RST, and a forged reply from the client's
/// side never gets here).
#[inline(always)]
fn adopt(pkt: &Pkt, slot: &VipSlot, now: u64) {
    use lb_common::flow::{TCP_FIN, TCP_RST, TCP_SYN};
    if pkt.proto != PROTO_TCP || pkt.tcp_flags & (TCP_SYN | TCP_FIN | TCP_RST) != 0 {
        return;
    }
    let Some(sc) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let sc = unsafe { &mut *sc };
    sc.flow = client_flow(pkt, slot);
    sc.state = FlowState {
        backend_id: sc.stateless_backend,
        flags: 0,
        last_seen_ns: now,
        snat_port: 0,
        idle_timeout_s: slot.idle_timeout_s,
        vip_id: slot.meta.vip_id,
    };
    if ct::insert(&sc.flow, &sc.state, BPF_NOEXIST as u64).is_ok() {
        // Not a new flow (NewFlowCount): the gateway its SYN passed
        // counted it; in a scale-out set the replies of a flow often
        // return through another gateway than its SYN took.
        count(Reason::Adopted);
    }
}

/// Target -> client: undo `snat` (from the SNAT table) or `nat` (see
/// `nat_reply`); `tables` bit 0: `nat` may match, bit 1: `snat` may.
/// `Err(NotVip)`: not a reply of ours.
#[inline(always)]
fn to_client(
    ctx: &XdpContext,
    pkt: &Pkt,
    g: &Globals,
    nat: bool,
    snat: bool,
    now: u64,
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
    if sv.is_some() && !on_target_side(ctx, pkt, g)? {
        return Err(Reason::ReplyWrongSide);
    }
    if let Some(sv) = sv {
        if snat_opening_drop(pkt, sv, g, now) {
            count(Reason::SynRedispatch);
            return Ok(xdp_action::XDP_DROP);
        }
    }
    let rv = if nat && sv.is_none() {
        match nat_reply(ctx, pkt, g, now) {
            Err(Reason::SynRedispatch) => {
                count(Reason::SynRedispatch);
                return Ok(xdp_action::XDP_DROP);
            }
            r => r?,
        }
    } else {
        None
    };
    let (src, sport, dst, dport, vip_id) = if let Some(sv) = sv {
        (
            sv.vip_addr,
            sv.vip_port,
            sv.client_addr,
            sv.client_port,
            sv.vip_id,
        )
    } else if let Some((slot, _)) = rv {
        (
            slot.key.addr,
            slot.key.port,
            pkt.dst,
            pkt.dport,
            slot.meta.vip_id,
        )
    } else {
        return Err(Reason::NotVip);
    };
    if pkt.ttl <= 1 {
        return Err(Reason::TtlExceeded);
    }
    let p = fib_params()?;
    let rc = next_hop(ctx, pkt, &src, &dst, sport, dport, p, g.fib_cache_ms, now);
    // A target talking to the gateway itself (health checks) is not a reply
    // to a client: leave it alone.
    if rc != BPF_FIB_LKUP_RET_SUCCESS as i64
        && rc != BPF_FIB_LKUP_RET_NO_NEIGH as i64
        && rc != BPF_FIB_LKUP_RET_FRAG_NEEDED as i64
    {
        return Err(Reason::NotVip);
    }
    let l2 = kernel_forwards(pkt, rc, p);
    rewrite(ctx, pkt, &src, &dst, sport, dport, !l2 as u8)?;
    if let Some((slot, true)) = rv {
        count(Reason::ReplyStateless);
        adopt(pkt, slot, now);
    }
    bump_reply(vip_id, pkt);
    count(Reason::FwdToClient);
    Ok(emit(ctx, rc, p, l2))
}

/// A `snat` reply that may answer a flow's first SYN (SYN or RST set):
/// passive health, as `nat_reply` does for `nat`. Its flow is looked up in
/// conntrack only then, so other replies pay nothing. True: drop it (a
/// refusal to redispatch, or a moved flow's old target answering late).
#[inline(always)]
fn snat_opening_drop(pkt: &Pkt, sv: &SnatVal, g: &Globals, now: u64) -> bool {
    use lb_common::flow::{TCP_RST, TCP_SYN};
    if pkt.proto != PROTO_TCP || pkt.tcp_flags & (TCP_SYN | TCP_RST) == 0 {
        return false;
    }
    let Some(sc) = SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    let sc = unsafe { &mut *sc };
    sc.flow = snat_flow(sv, pkt.proto, pkt.family);
    let Some(st) = ct::get_ptr_mut(&sc.flow) else {
        return false;
    };
    let st = unsafe { &mut *st };
    // The flow must still be the one this port was given to, on this target.
    let ours = st.snat_port == pkt.dport
        && st.vip_id == sv.vip_id
        && BACKENDS
            .get(st.backend_id)
            .is_some_and(|b| b.addr == pkt.src && b.port == pkt.sport);
    let age = now.wrapping_sub(st.last_seen_ns);
    if !flow::live(g, pkt.proto, st.idle_timeout_s, st.flags, age) {
        return false;
    }
    if !ours {
        // A moved SYN's old target answering late, through the old port.
        return passive::is_syn_ack(pkt.tcp_flags);
    }
    let redispatch = VIP_SLOTS
        .get(sv.vip_id)
        .is_some_and(|s| s.meta.flags & VIP_F_REDISPATCH != 0);
    let drop = crate::passive::on_reply(st, pkt.tcp_flags, redispatch, now);
    if drop {
        st.last_seen_ns = now;
    }
    drop
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
    hop: u8,
) -> Result<(), Reason> {
    let l3 = rewrite_l3(ctx, pkt, src, dst, hop)?;
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
        st(p, 0, sport);
        st(p, 2, dport);
        let c = ld(p, check_at);
        if let Some(n) = csum::update_l4(c, l4, pkt.proto == PROTO_UDP, pkt.v6()) {
            st(p, check_at, n);
        }
    }
    Ok(())
}

/// Rewrites the IP header's addresses and takes `hop` (1: this gateway
/// sends it on; 0: the kernel forwards it and decrements) off its TTL /
/// hop limit, keeping the IPv4 header checksum right. Returns the
/// address difference, which every checksum over a pseudo-header needs.
/// Writes go through one checked header pointer (see `parse::hdr`).
#[inline(always)]
pub fn rewrite_l3(
    ctx: &XdpContext,
    pkt: &Pkt,
    src: &[u32; 4],
    dst: &[u32; 4],
    hop: u8,
) -> Result<u64, Reason> {
    let v6 = pkt.v6();
    let l3 = csum::diff_addr(csum::diff_addr(0, &pkt.src, src, v6), &pkt.dst, dst, v6);
    unsafe {
        if v6 {
            let ip = ptr_at::<[u8; 40]>(ctx, pkt.l3_off, Reason::MalformedL3)? as *mut u8;
            *ip.add(7) = pkt.ttl - hop;
            st(ip, 8, *src);
            st(ip, 24, *dst);
        } else {
            let ip = ptr_at::<[u8; 20]>(ctx, pkt.l3_off, Reason::MalformedL3)? as *mut u8;
            st(ip, 12, src[0]);
            st(ip, 16, dst[0]);
            // Word 8 holds TTL and protocol.
            let ttl_old = u16::from_ne_bytes([pkt.ttl, pkt.proto]);
            let ttl_new = u16::from_ne_bytes([pkt.ttl - hop, pkt.proto]);
            *ip.add(8) = pkt.ttl - hop;
            let c = ld(ip, 10);
            st(ip, 10, csum::apply(c, csum::diff16(l3, ttl_old, ttl_new)));
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
    // Zeroed here, not for every packet: a next-hop cache hit needs only
    // the three fields it sets.
    *p = unsafe { core::mem::zeroed() };
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

/// `dst`'s slot of this CPU's next-hop cache (direct-mapped).
#[inline(always)]
fn fib_slot(dst: &[u32; 4]) -> Option<*mut lb_common::FibCacheEntry> {
    FIB_CACHE.get_ptr_mut(lb_common::addr_hash(dst) >> (32 - FIB_CACHE_SLOTS.trailing_zeros()))
}

/// Whether cache entry `e` is `dst`'s next hop, still fresh.
#[inline(always)]
fn holds(e: &lb_common::FibCacheEntry, family: u8, dst: &[u32; 4], now: u64) -> bool {
    e.family == family && e.dst == *dst && now < e.expires_ns
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
    let slot = fib_slot(dst);
    if cache_ms != 0 {
        if let Some(e) = slot {
            let e = unsafe { &*e };
            if holds(e, pkt.family, dst, now) && pkt.ip_len <= e.mtu {
                p.ifindex = e.ifindex;
                unsafe {
                    copy_mac(p.smac.as_mut_ptr(), e.smac.as_ptr());
                    copy_mac(p.dmac.as_mut_ptr(), e.dmac.as_ptr());
                }
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

/// FIB lookup parameters in per-CPU scratch memory: 64 bytes the 512-byte
/// BPF stack cannot spare. Left as the last packet left them: `fib`
/// zeroes them, a next-hop cache hit sets what `emit` reads.
#[inline(always)]
pub fn fib_params() -> Result<&'static mut bpf_fib_lookup, Reason> {
    let p = FIB_SCRATCH.get_ptr_mut(0).ok_or(Reason::MapError)?;
    Ok(unsafe { &mut *p })
}

/// Whether the translated packet goes to the kernel to forward, its
/// Ethernet header untouched (`l2`, see `emit`): a VLAN-tagged frame (the
/// kernel maps the tag to its device), a next hop the FIB could not give
/// (the kernel resolves the neighbour, or answers), or a device XDP cannot
/// transmit on (`TX_PORTS`: not one lb runs on natively).
#[inline(always)]
pub fn kernel_forwards(pkt: &Pkt, rc: i64, p: &bpf_fib_lookup) -> bool {
    pkt.vlan
        || rc != BPF_FIB_LKUP_RET_SUCCESS as i64
        || TX_PORTS.get(p.ifindex).is_none_or(|t| *t == 0)
}

/// Sends the rewritten packet on: straight out when the neighbour is known
/// and XDP can transmit there, else through the kernel.
#[inline(always)]
pub fn emit(ctx: &XdpContext, rc: i64, p: &bpf_fib_lookup, l2: bool) -> u32 {
    if rc != BPF_FIB_LKUP_RET_SUCCESS as i64 {
        count(if rc == BPF_FIB_LKUP_RET_NO_NEIGH as i64 {
            Reason::FibNoNeigh
        } else {
            Reason::FibFailed
        });
        return xdp_action::XDP_PASS;
    }
    if l2 {
        count(Reason::KernelForwards);
        return xdp_action::XDP_PASS;
    }
    let Ok(eth) = ptr_at::<[u8; 12]>(ctx, 0, Reason::TruncatedL2) else {
        return xdp_action::XDP_PASS;
    };
    unsafe {
        copy_mac(eth as *mut u8, p.dmac.as_ptr());
        copy_mac((eth as *mut u8).add(6), p.smac.as_ptr());
    }
    if p.ifindex == ctx.ingress_ifindex() as u32 {
        xdp_action::XDP_TX
    } else {
        unsafe { bpf_redirect(p.ifindex, 0) as u32 }
    }
}
