//! Backend choice for a new flow, shared by the XDP program and the proxy
//! so both pick the same target for the same flow: hash -> slot of the
//! zone ring (cross-zone off), falling back to the all-zones ring when the
//! zone ring's slot is empty.

use crate::{
    hash::{flow_hash, src_hash},
    passive::REPICKS,
    VIP_F_CROSS_ZONE, VIP_F_STICKY,
};

/// The flow's hash as both data planes compute it (addresses and ports in
/// network order, as in the packet), under the deployment's `key`.
#[inline(always)]
pub fn flow_key_hash(
    key: [u32; 2],
    flags: u32,
    src: &[u32; 4],
    dst: &[u32; 4],
    sport: u16,
    dport: u16,
    proto: u8,
) -> u32 {
    if flags & VIP_F_STICKY != 0 {
        src_hash(key, src)
    } else {
        flow_hash(key, src, dst, sport, dport, proto)
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
    pick_slot(flags, hash % ring_size, &zone, &all)
}

/// The backend id of ring slot `slot` (zone ring first, see `pick`).
#[inline(always)]
pub fn pick_slot(
    flags: u32,
    slot: u32,
    zone: &impl Fn(u32) -> u32,
    all: &impl Fn(u32) -> u32,
) -> u32 {
    let mut id = 0;
    if flags & VIP_F_CROSS_ZONE == 0 {
        id = zone(slot);
    }
    if id == 0 {
        id = all(slot);
    }
    id
}

/// The slot tried `k`-th for `hash` when the first one's target is to be
/// avoided: a slot of its own hash, not a neighbour (Maglev fills runs of
/// neighbouring slots from one target when its permutation's skip is small).
#[inline(always)]
pub fn repick_slot(hash: u32, k: u32, ring_size: u32) -> u32 {
    crate::hash::hash_words(0x7265_7069, &[hash, k]) % ring_size
}

/// `pick`, but a target that `avoid` names (suspect by passive health, or
/// the one that just refused this flow) is passed over for the targets of
/// up to `REPICKS` more slots, each from a hash of its own, so a suspect
/// target's share spreads over the others by weight. Returns the target
/// and whether it is one to avoid (every slot tried held one: the first).
#[inline(always)]
pub fn pick_avoiding(
    flags: u32,
    ring_size: u32,
    hash: u32,
    zone: impl Fn(u32) -> u32,
    all: impl Fn(u32) -> u32,
    avoid: impl Fn(u32) -> bool,
) -> (u32, bool) {
    if ring_size == 0 {
        return (0, false);
    }
    let slot = hash % ring_size;
    let first = pick_slot(flags, slot, &zone, &all);
    if first == 0 || !avoid(first) {
        return (first, false);
    }
    for k in 1..=REPICKS {
        let id = pick_slot(flags, repick_slot(hash, k, ring_size), &zone, &all);
        if id != 0 && !avoid(id) {
            return (id, false);
        }
    }
    (first, true)
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

    #[test]
    fn avoided_targets_are_passed_over_along_the_ring() {
        let ring = [1u32, 2, 1, 3, 2, 1, 1];
        let p = |h, avoid: &dyn Fn(u32) -> bool| {
            pick_avoiding(VIP_F_CROSS_ZONE, 7, h, |_| 0, |i| ring[i as usize], avoid)
        };
        assert_eq!(p(0, &|_| false), (1, false));
        // Target 1 holds 4 of 7 slots: 9 slots tried all hold it for
        // about (4/7)^9 = 0.6% of hashes (deterministic for these).
        let mut last_resort = 0;
        for h in 0..1000 {
            match p(h, &|id| id == 1) {
                (1, true) => last_resort += 1,
                (id, false) => assert_ne!(id, 1, "hash {h}"),
                other => panic!("hash {h}: {other:?}"),
            }
        }
        assert!(last_resort < 20, "{last_resort} of 1000 found nothing else");
        assert_eq!(p(1, &|_| true), (2, true), "all avoided: the first pick");
    }
}
