//! SNAT source-port probes: a flow tries `TRIES` ports of the range, from a
//! hashed start, stepping by a stride coprime with the range so the probes
//! are distinct ports for a range of any size. The stride is one of
//! `STRIDES`, chosen by the flow's hash (double hashing): with one stride
//! for all flows, busy ports gather in runs along it (primary clustering)
//! and a soak at 30% occupancy met runs of 16 busy probes.

/// Ports tried for one allocation before giving up (`snat_exhausted`).
pub const TRIES: u32 = 16;
/// Strides a flow's hash chooses from.
pub const STRIDES: usize = 8;

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// A step coprime with `range` at or after `range * num / 1000`; 1 for
/// ranges of one or two.
fn coprime_from(range: u32, num: u64) -> u32 {
    if range <= 2 {
        return 1;
    }
    let mut s = ((range as u64 * num) / 1000).clamp(1, range as u64 - 1) as u32;
    while gcd(s, range) != 1 {
        s = s % (range - 1) + 1;
    }
    s
}

/// The strides for a range: coprime with it and spread over it (the first
/// near `range / phi`, golden-ratio hashing).
pub fn strides(range: u32) -> [u32; STRIDES] {
    let mut out = [0u32; STRIDES];
    for (k, s) in out.iter_mut().enumerate() {
        *s = coprime_from(range, [618, 382, 707, 293, 854, 146, 541, 459][k]);
    }
    out
}

/// Probe `i` of a flow with hash `h`: a port in `min ..= min + range - 1`.
/// The start comes from the low bits of `h`, the stride from the top ones.
#[inline(always)]
pub fn probe(min: u16, range: u32, strides: &[u32; STRIDES], h: u32, i: u32) -> u16 {
    if range == 0 {
        return min;
    }
    let stride = strides[(h >> 29) as usize % STRIDES];
    let off = (h % range) as u64 + i as u64 * stride as u64;
    (min as u32 + (off % range as u64) as u32) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn distinct(range: u32, h: u32) -> bool {
        let s = strides(range);
        let mut v: [u16; TRIES as usize] = [0; TRIES as usize];
        for (i, p) in v.iter_mut().enumerate() {
            *p = probe(1000, range, &s, h, i as u32);
            assert!((1000..1000 + range).contains(&(*p as u32)));
        }
        let n = v.len().min(range as usize);
        (0..v.len()).all(|i| (0..i).all(|j| v[i] != v[j] || j + n <= i))
    }

    #[test]
    fn probes_are_distinct_for_every_range_size() {
        // 7919 was the old fixed stride: its range repeated one port.
        for range in (1..3000).chain([7919, 7919 * 2, 12768, 64511]) {
            for h in [0, 1, 7, 0x4000_0000, 0xa000_0001, 0xdead_beef, u32::MAX] {
                assert!(distinct(range, h), "range {range}, hash {h:#x}");
            }
        }
    }

    #[test]
    fn strides_are_coprime() {
        for range in 1..5000 {
            for s in strides(range) {
                assert_eq!(gcd(s, range), 1, "range {range}");
                assert!(s >= 1 && (range <= 2 || s < range));
            }
        }
    }
}
