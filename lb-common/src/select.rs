//! Backend choice for a new flow, shared by the XDP program and the proxy
//! so both pick the same target for the same flow: hash -> slot of the
//! zone ring (cross-zone off), falling back to the all-zones ring when the
//! zone ring's slot is empty.

use crate::{
    hash::{flow_hash, src_hash},
    VIP_F_CROSS_ZONE, VIP_F_STICKY,
};

/// The flow's hash as both data planes compute it (addresses and ports in
/// network order, as in the packet).
#[inline(always)]
pub fn flow_key_hash(
    flags: u32,
    src: &[u32; 4],
    dst: &[u32; 4],
    sport: u16,
    dport: u16,
    proto: u8,
) -> u32 {
    if flags & VIP_F_STICKY != 0 {
        src_hash(src)
    } else {
        flow_hash(src, dst, sport, dport, proto)
    }
}

/// The backend id for `hash`, or 0 when no ring has a target. `zone` and
/// `all` read slot `i` of the VIP's zone and all-zones rings.
#[inline(always)]
pub fn pick(
    flags: u32,
    ring_size: u32,
    hash: u32,
    zone: impl Fn(u32) -> u32,
    all: impl Fn(u32) -> u32,
) -> u32 {
    if ring_size == 0 {
        return 0;
    }
    let slot = hash % ring_size;
    let mut id = 0;
    if flags & VIP_F_CROSS_ZONE == 0 {
        id = zone(slot);
    }
    if id == 0 {
        id = all(slot);
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_ring_first_then_all() {
        let zone = [0u32, 5, 0];
        let all = [7u32, 7, 8];
        let p = |flags, h| pick(flags, 3, h, |i| zone[i as usize], |i| all[i as usize]);
        assert_eq!(p(0, 1), 5, "own zone");
        assert_eq!(p(0, 0), 7, "zone slot empty: all-zones ring");
        assert_eq!(p(VIP_F_CROSS_ZONE, 1), 7, "cross-zone: all-zones ring only");
        assert_eq!(pick(0, 0, 1, |_| 1, |_| 1), 0);
    }
}
