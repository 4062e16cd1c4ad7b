//! Incremental Internet checksum updates (RFC 1624). Values are used as they
//! sit in memory: one's complement sums do not depend on byte order as long as
//! the checksum and the data are read the same way.

#[inline(always)]
pub fn fold(mut s: u64) -> u16 {
    s = (s & 0xffff_ffff) + (s >> 32);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// Running difference: add `!old + new` for each changed 32-bit word.
#[inline(always)]
pub fn diff32(acc: u64, old: u32, new: u32) -> u64 {
    acc + (!old) as u64 + new as u64
}

#[inline(always)]
pub fn diff16(acc: u64, old: u16, new: u16) -> u64 {
    acc + (!old) as u64 + new as u64
}

#[inline(always)]
pub fn diff_addr(mut acc: u64, old: &[u32; 4], new: &[u32; 4], v6: bool) -> u64 {
    acc = diff32(acc, old[0], new[0]);
    if v6 {
        acc = diff32(acc, old[1], new[1]);
        acc = diff32(acc, old[2], new[2]);
        acc = diff32(acc, old[3], new[3]);
    }
    acc
}

/// Applies an accumulated difference to a stored checksum.
#[inline(always)]
pub fn apply(check: u16, acc: u64) -> u16 {
    !fold((!check) as u64 + acc)
}

/// The new TCP/UDP checksum after a change of `acc`, or `None` to leave the
/// field alone: an IPv4 UDP datagram without checksum (0) stays without, and
/// a computed UDP checksum of 0 is sent as 0xffff (RFC 768).
#[inline(always)]
pub fn update_l4(old: u16, acc: u64, udp: bool, v6: bool) -> Option<u16> {
    if udp && !v6 && old == 0 {
        return None;
    }
    let n = apply(old, acc);
    Some(if udp && n == 0 { 0xffff } else { n })
}
