//! Weighted Maglev table builder (Eisenbud et al., NSDI 2016).
//!
//! Deterministic: the result depends only on the set of targets (identity,
//! id, weight) and M, never on declaration order, so every gateway with the
//! same config builds a byte-identical table.

use std::vec;
use std::vec::Vec;

use crate::hash::target_hashes;

/// One target as the builder sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaglevTarget {
    /// Address (network order words) and port of the target: its identity.
    pub addr: [u32; 4],
    pub port: u16,
    pub family: u8,
    /// Value written into the slots (backend id, never 0).
    pub id: u32,
    /// Relative weight; 0 takes no slots.
    pub weight: u32,
}

/// True when `m` is prime (Maglev needs a prime table size).
pub fn is_prime(m: u32) -> bool {
    if m < 2 {
        return false;
    }
    let mut d = 2u64;
    while d * d <= m as u64 {
        if (m as u64).is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

/// Builds a table of `m` slots; slot value is a target id, 0 when no target
/// has weight. `m` must be prime.
pub fn build(targets: &[MaglevTarget], m: u32) -> Vec<u32> {
    assert!(is_prime(m), "maglev table size {m} is not prime");
    let mut t: Vec<MaglevTarget> = targets.iter().copied().filter(|t| t.weight > 0).collect();
    let mut table = vec![0u32; m as usize];
    if t.is_empty() {
        return table;
    }
    // Order by identity, so declaration order does not matter.
    t.sort_by_key(|t| (t.family, t.addr.map(u32::from_be), t.port, t.id));
    t.dedup_by_key(|t| (t.family, t.addr, t.port));
    let m64 = m as u64;
    let perm: Vec<(u64, u64)> = t
        .iter()
        .map(|t| {
            let (h1, h2) = target_hashes(&t.addr, t.port, t.family);
            (h1 as u64 % m64, h2 as u64 % (m64 - 1) + 1)
        })
        .collect();
    let wmax = t.iter().map(|t| t.weight as u64).max().unwrap_or(1);
    let mut next = vec![0u64; t.len()];
    let mut credit = vec![0u64; t.len()];
    let mut filled = 0u64;
    loop {
        for i in 0..t.len() {
            // Credit makes a target of weight w take w/wmax turns per round.
            credit[i] += t[i].weight as u64;
            while credit[i] >= wmax {
                credit[i] -= wmax;
                let (off, skip) = perm[i];
                let mut c = ((off + next[i] * skip) % m64) as usize;
                while table[c] != 0 {
                    next[i] += 1;
                    c = ((off + next[i] * skip) % m64) as usize;
                }
                table[c] = t[i].id;
                next[i] += 1;
                filled += 1;
                if filled == m64 {
                    return table;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn target(i: u32, weight: u32) -> MaglevTarget {
        MaglevTarget {
            addr: [(0x0a00_0000u32 + i).to_be(), 0, 0, 0],
            port: 80u16.to_be(),
            family: 4,
            id: i + 1,
            weight,
        }
    }

    fn shares(table: &[u32]) -> HashMap<u32, usize> {
        let mut h = HashMap::new();
        for &s in table {
            *h.entry(s).or_default() += 1;
        }
        h
    }

    #[test]
    fn primes() {
        assert!(is_prime(65537) && is_prime(251) && is_prime(2));
        assert!(!is_prime(65536) && !is_prime(1) && !is_prime(0) && !is_prime(9));
    }

    #[test]
    fn empty_is_zero() {
        assert!(build(&[], 251).iter().all(|&s| s == 0));
        assert!(build(&[target(0, 0)], 251).iter().all(|&s| s == 0));
    }

    #[test]
    fn equal_weights_balance_within_1_percent() {
        for n in [3u32, 10, 100, 1000] {
            let ts: Vec<_> = (0..n).map(|i| target(i, 1)).collect();
            let table = build(&ts, 65537);
            let sh = shares(&table);
            let ideal = 65537.0 / n as f64;
            for (id, c) in sh {
                assert!(id != 0);
                let dev = (c as f64 - ideal).abs() / ideal;
                // 1% of the weight share, with one slot of rounding.
                assert!(
                    c as f64 - ideal <= 1.0 + ideal * 0.01 && dev <= 0.01 + 1.0 / ideal,
                    "n={n} id={id} c={c}"
                );
            }
        }
    }

    #[test]
    fn weights_are_respected() {
        let ts = [target(0, 1), target(1, 2), target(2, 3)];
        let sh = shares(&build(&ts, 65537));
        for t in ts {
            let want = 65537.0 * t.weight as f64 / 6.0;
            let got = sh[&t.id] as f64;
            assert!(
                (got - want).abs() / want < 0.01,
                "{t:?} got {got} want {want}"
            );
        }
    }

    #[test]
    fn order_does_not_matter() {
        let mut ts: Vec<_> = (0..50).map(|i| target(i, 1 + i % 3)).collect();
        let a = build(&ts, 65537);
        ts.reverse();
        assert_eq!(a, build(&ts, 65537));
    }

    #[test]
    fn removal_disrupts_little() {
        for n in [5u32, 10, 100] {
            let ts: Vec<_> = (0..n).map(|i| target(i, 1)).collect();
            let before = build(&ts, 65537);
            let after = build(&ts[1..], 65537);
            let removed = ts[0].id;
            let moved = before
                .iter()
                .zip(&after)
                .filter(|(b, a)| **b != removed && a != b)
                .count();
            let limit = 1.1 / n as f64 * 65537.0;
            assert!((moved as f64) <= limit, "n={n} moved={moved} limit={limit}");
        }
    }
}
