//! Header parsing. Everything is read through `ptr_at`, the one bounds check.

use aya_ebpf::programs::XdpContext;
use lb_common::{Reason, AF_INET, AF_INET6, PROTO_TCP, PROTO_UDP};

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_ICMPV6: u8 = 58;
/// IPv6 extension headers followed before giving up.
pub const MAX_V6_EXT: usize = 4;

#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, off: usize, why: Reason) -> Result<*mut T, Reason> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + off + core::mem::size_of::<T>() > end {
        return Err(why);
    }
    Ok((start + off) as *mut T)
}

#[inline(always)]
pub fn read<T: Copy>(ctx: &XdpContext, off: usize, why: Reason) -> Result<T, Reason> {
    // Packet data has no alignment guarantee.
    Ok(unsafe { core::ptr::read_unaligned(ptr_at::<T>(ctx, off, why)?) })
}

/// One load of a `T` at `p + off` in the packet or a map value, as one
/// instruction. Headers sit at 2-byte alignment (after the 14-byte Ethernet
/// header): the kernel allows that where it JITs with efficient unaligned
/// access (x86-64, arm64), as for every C XDP program's `iph->saddr`.
/// `read_unaligned` costs a load, a shift and an or per byte instead.
/// Safety: `p + off .. + size_of::<T>()` was bounds-checked.
#[inline(always)]
pub unsafe fn ld<T: Copy>(p: *const u8, off: usize) -> T {
    core::ptr::read(p.add(off) as *const T)
}

/// `ld`'s store.
#[inline(always)]
pub unsafe fn st<T>(p: *mut u8, off: usize, v: T) {
    core::ptr::write(p.add(off) as *mut T, v)
}

/// Copies a MAC address as a word and a half-word (`ld`/`st`): a byte at a
/// time is 12 instructions.
/// Safety: both ranges are 6 bytes the verifier knows.
#[inline(always)]
pub unsafe fn copy_mac(to: *mut u8, from: *const u8) {
    st::<u32>(to, 0, ld(from, 0));
    st::<u16>(to, 4, ld(from, 4));
}

#[inline(always)]
pub fn write<T>(ctx: &XdpContext, off: usize, v: T) -> Result<(), Reason> {
    let p = ptr_at::<T>(ctx, off, Reason::MalformedL3)?;
    unsafe { core::ptr::write_unaligned(p, v) };
    Ok(())
}

/// What the fast path needs to know about a packet.
pub struct Pkt {
    pub l3_off: usize,
    pub l4_off: usize,
    pub family: u8,
    pub proto: u8,
    pub src: [u32; 4],
    pub dst: [u32; 4],
    /// Ports in network order (ICMP: 0).
    pub sport: u16,
    pub dport: u16,
    pub tcp_flags: u8,
    pub ttl: u8,
    pub vlan: bool,
    /// IPv4 Don't Fragment.
    pub df: bool,
    /// IPv4 total length / IPv6 payload length + 40, host order.
    pub ip_len: u16,
}

impl Pkt {
    #[inline(always)]
    pub fn v6(&self) -> bool {
        self.family == AF_INET6
    }
}

/// Reads a whole header through one checked pointer. Field accesses then
/// come from the stack copy, so LLVM cannot re-derive packet addresses from
/// another base (which the verifier would reject).
#[inline(always)]
pub fn hdr<const N: usize>(ctx: &XdpContext, off: usize, why: Reason) -> Result<[u8; N], Reason> {
    read::<[u8; N]>(ctx, off, why)
}

#[inline(always)]
fn be16(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

/// Parses L2..L4. Errors carry the reason the packet is passed untouched.
#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Result<Pkt, Reason> {
    let mut pkt = parse_l3(ctx)?;
    parse_l4(ctx, &mut pkt)?;
    Ok(pkt)
}

/// Parses L2 and L3 (up to the L4 offset and protocol).
#[inline(always)]
pub fn parse_l3(ctx: &XdpContext) -> Result<Pkt, Reason> {
    let eth = ptr_at::<[u8; 14]>(ctx, 0, Reason::TruncatedL2)? as *const u8;
    let mut ethertype = u16::from_be(unsafe { ld(eth, 12) });
    let mut l3_off = ETH_HLEN;
    let mut vlan = false;
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        let tag = ptr_at::<[u8; 4]>(ctx, ETH_HLEN, Reason::TruncatedL2)? as *const u8;
        ethertype = u16::from_be(unsafe { ld(tag, 2) });
        l3_off = ETH_HLEN + 4;
        vlan = true;
    }
    let frame_len = ctx.data_end() - ctx.data();
    let mut pkt = Pkt {
        l3_off,
        l4_off: 0,
        family: 0,
        proto: 0,
        src: [0; 4],
        dst: [0; 4],
        sport: 0,
        dport: 0,
        tcp_flags: 0,
        ttl: 0,
        vlan,
        df: false,
        ip_len: 0,
    };
    match ethertype {
        ETH_P_IP => {
            let h = ptr_at::<[u8; 20]>(ctx, l3_off, Reason::MalformedL3)? as *const u8;
            let (vihl, tot, frag) = unsafe {
                (
                    ld::<u8>(h, 0),
                    u16::from_be(ld(h, 2)),
                    u16::from_be(ld(h, 6)),
                )
            };
            let ihl = (vihl & 0x0f) as usize * 4;
            if vihl >> 4 != 4 || ihl < 20 {
                return Err(Reason::MalformedL3);
            }
            if (tot as usize) < ihl || l3_off + tot as usize > frame_len {
                return Err(Reason::MalformedL3);
            }
            // MF set or offset non-zero: fragments go to the kernel together.
            if frag & 0x3fff != 0 {
                return Err(Reason::Fragment);
            }
            pkt.family = AF_INET;
            unsafe {
                pkt.ttl = ld(h, 8);
                pkt.proto = ld(h, 9);
                pkt.src[0] = ld(h, 12);
                pkt.dst[0] = ld(h, 16);
            }
            pkt.l4_off = l3_off + ihl;
            pkt.ip_len = tot;
            pkt.df = frag & 0x4000 != 0;
        }
        ETH_P_IPV6 => {
            let h = ptr_at::<[u8; 40]>(ctx, l3_off, Reason::MalformedL3)? as *const u8;
            let (ver, plen) = unsafe { (ld::<u8>(h, 0), u16::from_be(ld(h, 4))) };
            if ver >> 4 != 6 {
                return Err(Reason::MalformedL3);
            }
            if l3_off + 40 + plen as usize > frame_len {
                return Err(Reason::MalformedL3);
            }
            pkt.family = AF_INET6;
            unsafe {
                pkt.src = ld(h, 8);
                pkt.dst = ld(h, 24);
                pkt.ttl = ld(h, 7);
            }
            pkt.ip_len = plen.saturating_add(40);
            let mut next: u8 = unsafe { ld(h, 6) };
            let mut off = l3_off + 40;
            let mut found = false;
            for _ in 0..MAX_V6_EXT {
                match next {
                    // Hop-by-hop, routing, destination options: skip.
                    0 | 43 | 60 => {
                        let e: [u8; 2] = hdr(ctx, off, Reason::MalformedL3)?;
                        next = e[0];
                        off += (e[1] as usize + 1) * 8;
                    }
                    // Fragment header: balance only an unfragmented one.
                    44 => {
                        let e: [u8; 8] = hdr(ctx, off, Reason::MalformedL3)?;
                        if be16(&e, 2) & 0xfff9 != 0 {
                            return Err(Reason::Fragment);
                        }
                        next = e[0];
                        off += 8;
                    }
                    _ => {
                        found = true;
                        break;
                    }
                }
            }
            if !found && matches!(next, 0 | 43 | 44 | 60) {
                return Err(Reason::Ipv6ExtTooLong);
            }
            pkt.proto = next;
            pkt.l4_off = off;
        }
        _ => return Err(Reason::NotIp),
    }
    Ok(pkt)
}

/// Parses the TCP/UDP/ICMP header at `pkt.l4_off`.
#[inline(always)]
pub fn parse_l4(ctx: &XdpContext, pkt: &mut Pkt) -> Result<(), Reason> {
    match pkt.proto {
        PROTO_TCP => {
            let t = ptr_at::<[u8; 20]>(ctx, pkt.l4_off, Reason::MalformedL4)? as *const u8;
            if unsafe { ld::<u8>(t, 12) } >> 4 < 5 {
                return Err(Reason::MalformedL4);
            }
            unsafe {
                pkt.sport = ld(t, 0);
                pkt.dport = ld(t, 2);
                pkt.tcp_flags = ld(t, 13);
            }
        }
        PROTO_UDP => {
            let u = ptr_at::<[u8; 8]>(ctx, pkt.l4_off, Reason::MalformedL4)? as *const u8;
            if u16::from_be(unsafe { ld(u, 4) }) < 8 {
                return Err(Reason::MalformedL4);
            }
            unsafe {
                pkt.sport = ld(u, 0);
                pkt.dport = ld(u, 2);
            }
        }
        PROTO_ICMP | PROTO_ICMPV6 => {
            let _: [u8; 8] = hdr(ctx, pkt.l4_off, Reason::MalformedL4)?;
        }
        _ => return Err(Reason::OtherProto),
    }
    Ok(())
}
