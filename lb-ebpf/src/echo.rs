//! ICMP echo requests to a VIP's address are answered here
//! (`gateway.answer_ping`): a VIP answers ping like a host, whatever
//! listener ports it has, and none reaches a kernel that has no such
//! address.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use lb_common::{Reason, VipAddr, GLOBAL_F_PING};

use crate::{
    count, csum,
    parse::{ld, ptr_at, read, st, write, Pkt},
    GLOBALS, VIP_ADDRS,
};

/// The reply's TTL / hop limit.
const TTL: u8 = 64;

/// Turns an echo request (`pkt`, its ICMP header at `l4_off`) to a VIP
/// into its reply, sent back out the interface it came in on.
#[inline(always)]
pub fn answer(ctx: &XdpContext, pkt: &Pkt) -> Result<u32, Reason> {
    let g = GLOBALS.get(0).ok_or(Reason::MapError)?;
    let key = VipAddr {
        addr: pkt.dst,
        family: pkt.family,
        _pad: [0; 3],
    };
    if g.flags & GLOBAL_F_PING == 0 || unsafe { VIP_ADDRS.get(key) }.is_none() {
        return Err(Reason::NotVip);
    }
    let macs: [u8; 12] = read(ctx, 0, Reason::MalformedL3)?;
    write(
        ctx,
        0,
        [macs[6], macs[7], macs[8], macs[9], macs[10], macs[11]],
    )?;
    write(
        ctx,
        6,
        [macs[0], macs[1], macs[2], macs[3], macs[4], macs[5]],
    )?;
    // Addresses swapped: their sums, and so every checksum, stay.
    let v6 = pkt.v6();
    unsafe {
        if v6 {
            let ip = ptr_at::<[u8; 40]>(ctx, pkt.l3_off, Reason::MalformedL3)? as *mut u8;
            *ip.add(7) = TTL;
            st(ip, 8, pkt.dst);
            st(ip, 24, pkt.src);
        } else {
            let ip = ptr_at::<[u8; 20]>(ctx, pkt.l3_off, Reason::MalformedL3)? as *mut u8;
            st(ip, 12, pkt.dst[0]);
            st(ip, 16, pkt.src[0]);
            let old = u16::from_ne_bytes([pkt.ttl, pkt.proto]);
            let new = u16::from_ne_bytes([TTL, pkt.proto]);
            *ip.add(8) = TTL;
            let c = ld(ip, 10);
            st(ip, 10, csum::apply(c, csum::diff16(0, old, new)));
        }
        // Echo request -> echo reply (v4: 8 -> 0; v6: 128 -> 129).
        let icmp = ptr_at::<[u8; 4]>(ctx, pkt.l4_off, Reason::MalformedL4)? as *mut u8;
        let (req, rep) = if v6 { (128u8, 129u8) } else { (8, 0) };
        let code = *icmp.add(1);
        *icmp = rep;
        let c = ld(icmp, 2);
        let d = csum::diff16(
            0,
            u16::from_ne_bytes([req, code]),
            u16::from_ne_bytes([rep, code]),
        );
        st(icmp, 2, csum::apply(c, d));
    }
    count(Reason::EchoAnswered);
    Ok(xdp_action::XDP_TX)
}
