//! SNAT source-port probes: a flow tries `TRIES` ports of the range, from a
//! hashed start, stepping by a stride coprime with the range so the probes
//! are distinct ports for a range of any size.

/// Ports tried for one allocation before giving up (`snat_exhausted`).
pub const TRIES: u32 = 8;

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// A step coprime with `range`, near `range / phi` so successive probes
/// land far apart (golden-ratio hashing); 1 for ranges of one or two.
pub fn stride(range: u32) -> u32 {
    if range <= 2 {
        return 1;
    }
    let mut s = ((range as u64 * 618_034) / 1_000_000).max(1) as u32;
    while gcd(s, range) != 1 {
        s += 1;
    }
    s
}

/// Probe `i` of a flow with hash `h`: a port in `min ..= min + range - 1`.
#[inline(always)]
pub fn probe(min: u16, range: u32, stride: u32, h: u32, i: u32) -> u16 {
    if range == 0 {
        return min;
    }
    let off = (h % range) as u64 + i as u64 * stride as u64;
    (min as u32 + (off % range as u64) as u32) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn distinct(range: u32, h: u32) -> bool {
        let s = stride(range);
        let mut v: [u16; TRIES as usize] = [0; TRIES as usize];
        for (i, p) in v.iter_mut().enumerate() {
            *p = probe(1000, range, s, h, i as u32);
            assert!((1000..1000 + range).contains(&(*p as u32)));
        }
        let n = v.len().min(range as usize);
        (0..v.len()).all(|i| (0..i).all(|j| v[i] != v[j] || j + n <= i))
    }

    #[test]
    fn probes_are_distinct_for_every_range_size() {
        // 7919 was the old fixed stride: its range repeated one port.
        for range in (1..3000).chain([7919, 7919 * 2, 12768, 64511]) {
            for h in [0, 1, 7, 0xdead_beef, u32::MAX] {
                assert!(distinct(range, h), "range {range}, hash {h:#x}");
            }
        }
    }

    #[test]
    fn stride_is_coprime() {
        for range in 1..5000 {
            assert_eq!(gcd(stride(range), range.max(1)), 1, "range {range}");
        }
    }
}
