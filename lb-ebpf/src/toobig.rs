//! "Fragmentation needed" (ICMPv4 3/4) and "packet too big" (ICMPv6 2),
//! built here from the packet that does not fit the next hop and sent back
//! to its sender, as the path's router would (Katran and Cilium do the
//! same). Passed to the kernel instead, the packet would be answered only
//! after our rewrite, quoting a packet (to the target) the sender never
//! sent, so path MTU discovery through the VIP would never converge.
//!
//! The error comes from the packet's destination (the VIP) and quotes its
//! IP header and the first 8 bytes after it (RFC 792; RFC 4443 asks for
//! more where it fits, which no stack needs). Packets with IPv4 options or
//! IPv6 extension headers are left to the kernel. At most `PER_CPU_S` a
//! second per CPU; past that the packet is dropped, counted.

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
    EbpfContext,
};
use lb_common::{flow::NS, Reason};

use crate::{
    count,
    parse::{ptr_at, Pkt},
    SCRATCH,
};

/// Errors built per CPU and second, at most.
const PER_CPU_S: u32 = 100;
/// Bytes of the sender's L4 header quoted.
const QUOTE: usize = 8;
const ETH: usize = 14;

/// Whether an oversized `pkt` gets an error from here: IPv6 always (no
/// router fragments it), IPv4 when Don't Fragment is set (else the kernel
/// fragments the rewritten packet). Only plain headers (see the module).
#[inline(always)]
pub fn wanted(pkt: &Pkt) -> bool {
    let plain = pkt.l3_off == ETH && pkt.l4_off == pkt.l3_off + if pkt.v6() { 40 } else { 20 };
    plain && (pkt.v6() || pkt.df)
}

/// Turns the frame into the error for a path MTU of `mtu` and sends it
/// back out the interface it came in on.
#[inline(always)]
pub fn send(ctx: &XdpContext, pkt: &Pkt, mtu: u16, now: u64) -> Result<u32, Reason> {
    if !allowed(now) {
        count(Reason::TooBigLimited);
        return Ok(xdp_action::XDP_DROP);
    }
    let macs: [u8; 12] = crate::parse::read(ctx, 0, Reason::MalformedL3)?;
    if pkt.v6() {
        build::<{ ETH + 40 + QUOTE }, { ETH + 40 + 8 + 40 + QUOTE }>(ctx, &macs)?;
        write6(ctx, pkt, mtu)?;
    } else {
        build::<{ ETH + 20 + QUOTE }, { ETH + 20 + 8 + 20 + QUOTE }>(ctx, &macs)?;
        write4(ctx, pkt, mtu)?;
    }
    count(Reason::TooBigSent);
    Ok(xdp_action::XDP_TX)
}

/// A token for this CPU's second (scratch memory, no atomics).
#[inline(always)]
fn allowed(now: u64) -> bool {
    let Some(sc) = SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    let sc = unsafe { &mut *sc };
    if now.wrapping_sub(sc.toobig_window_ns) >= NS {
        sc.toobig_window_ns = now;
        sc.toobig_count = 0;
    }
    sc.toobig_count += 1;
    sc.toobig_count <= PER_CPU_S
}

/// Cuts the frame to the quoted part (`QUOTED` bytes: Ethernet, IP header,
/// 8 more) and makes room for the new IP and ICMP headers in front, so the
/// quote already sits where the error carries it (`TOTAL` bytes). The MACs
/// are swapped into the new Ethernet header.
#[inline(always)]
fn build<const QUOTED: usize, const TOTAL: usize>(
    ctx: &XdpContext,
    macs: &[u8; 12],
) -> Result<(), Reason> {
    let len = (ctx.data_end() - ctx.data()) as i32;
    let cut = QUOTED as i32 - len;
    if cut > 0 || unsafe { bpf_xdp_adjust_tail(ctx.as_ptr() as *mut _, cut) } != 0 {
        return Err(Reason::MalformedL3);
    }
    let grow = (TOTAL - QUOTED) as i32;
    if unsafe { bpf_xdp_adjust_head(ctx.as_ptr() as *mut _, -grow) } != 0 {
        return Err(Reason::MapError);
    }
    let f = ptr_at::<[u8; ETH]>(ctx, 0, Reason::MalformedL3)? as *mut u8;
    unsafe {
        for i in 0..6 {
            *f.add(i) = macs[6 + i];
            *f.add(6 + i) = macs[i];
        }
    }
    Ok(())
}

/// One's complement sum of the 16-bit words of `N` bytes at `p`.
#[inline(always)]
fn sum<const N: usize>(p: *const u8) -> u64 {
    let mut s = 0u64;
    let mut i = 0;
    while i + 1 < N {
        s += u16::from_ne_bytes(unsafe { [*p.add(i), *p.add(i + 1)] }) as u64;
        i += 2;
    }
    s
}

#[inline(always)]
fn put(f: *mut u8, at: usize, b: &[u8]) {
    for (i, x) in b.iter().enumerate() {
        unsafe { *f.add(at + i) = *x };
    }
}

#[inline(always)]
fn words(a: &[u32; 4], n: usize, f: *mut u8, at: usize) {
    for (i, w) in a.iter().take(n).enumerate() {
        put(f, at + i * 4, &w.to_ne_bytes());
    }
}

/// IPv4 and ICMP "fragmentation needed" headers in front of the quote.
#[inline(always)]
fn write4(ctx: &XdpContext, pkt: &Pkt, mtu: u16) -> Result<(), Reason> {
    const IP: usize = ETH;
    const ICMP: usize = ETH + 20;
    const LEN: usize = 20 + 8 + 20 + QUOTE;
    let f = ptr_at::<[u8; ETH + LEN]>(ctx, 0, Reason::MalformedL3)? as *mut u8;
    put(f, 12, &0x0800u16.to_be_bytes());
    // Version 4, 20 bytes; no TOS; length; id 0; no fragment; TTL 64; ICMP.
    put(f, IP, &[0x45, 0]);
    put(f, IP + 2, &(LEN as u16).to_be_bytes());
    put(f, IP + 4, &[0, 0, 0, 0, 64, 1, 0, 0]);
    words(&pkt.dst, 1, f, IP + 12);
    words(&pkt.src, 1, f, IP + 16);
    let c = !crate::csum::fold(sum::<20>(unsafe { f.add(IP) }));
    put(f, IP + 10, &c.to_ne_bytes());
    put(f, ICMP, &[3, 4, 0, 0, 0, 0]);
    put(f, ICMP + 6, &mtu.to_be_bytes());
    let c = !crate::csum::fold(sum::<{ 8 + 20 + QUOTE }>(unsafe { f.add(ICMP) }));
    put(f, ICMP + 2, &c.to_ne_bytes());
    Ok(())
}

/// IPv6 and ICMPv6 "packet too big" headers in front of the quote.
#[inline(always)]
fn write6(ctx: &XdpContext, pkt: &Pkt, mtu: u16) -> Result<(), Reason> {
    const IP: usize = ETH;
    const ICMP: usize = ETH + 40;
    const PAYLOAD: usize = 8 + 40 + QUOTE;
    let f = ptr_at::<[u8; ETH + 40 + PAYLOAD]>(ctx, 0, Reason::MalformedL3)? as *mut u8;
    put(f, 12, &0x86ddu16.to_be_bytes());
    put(f, IP, &[0x60, 0, 0, 0]);
    put(f, IP + 4, &(PAYLOAD as u16).to_be_bytes());
    put(f, IP + 6, &[58, 64]);
    words(&pkt.dst, 4, f, IP + 8);
    words(&pkt.src, 4, f, IP + 24);
    put(f, ICMP, &[2, 0, 0, 0]);
    put(f, ICMP + 4, &(mtu as u32).to_be_bytes());
    // Pseudo-header: both addresses, the length, the next header.
    let pseudo = sum::<32>(unsafe { f.add(IP + 8) })
        + u16::from_ne_bytes((PAYLOAD as u16).to_be_bytes()) as u64
        + u16::from_ne_bytes(58u16.to_be_bytes()) as u64;
    let c = !crate::csum::fold(pseudo + sum::<PAYLOAD>(unsafe { f.add(ICMP) }));
    put(f, ICMP + 2, &c.to_ne_bytes());
    Ok(())
}
