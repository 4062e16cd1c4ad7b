//! Stable small-integer ids for listener keys and targets, and what a
//! restarted daemon finds in pinned maps (so it keeps the ids they use).

use std::collections::{BTreeMap, BTreeSet};

use lb_common::{Backend, VipKey};

/// Stable small-integer ids: kept across reloads for what still exists, so
/// conntrack entries keep pointing at the right backend; new items take the
/// lowest free id, in sorted order (deterministic for the same history).
#[derive(Debug, Clone, Default)]
pub struct Ids<K: Ord + Clone> {
    pub map: BTreeMap<K, u32>,
    first: u32,
}

impl<K: Ord + Clone> Ids<K> {
    pub fn new(first: u32) -> Self {
        Ids {
            map: BTreeMap::new(),
            first,
        }
    }

    /// Assigns ids for `keys`; `keep` are kept even if absent from `keys`
    /// (e.g. draining targets). Returns the ids that were released.
    pub fn assign(&mut self, keys: &BTreeSet<K>, keep: &BTreeSet<K>) -> Vec<u32> {
        let mut released = Vec::new();
        self.map.retain(|k, id| {
            let stay = keys.contains(k) || keep.contains(k);
            if !stay {
                released.push(*id);
            }
            stay
        });
        let used: BTreeSet<u32> = self.map.values().copied().collect();
        // Ids handed out below are all under `next`: only `used` can clash.
        let mut next = self.first;
        for k in keys {
            if self.map.contains_key(k) {
                continue;
            }
            while used.contains(&next) {
                next += 1;
            }
            self.map.insert(k.clone(), next);
            next += 1;
        }
        released
    }

    pub fn get(&self, k: &K) -> Option<u32> {
        self.map.get(k).copied()
    }

    /// Takes over an id found in pinned maps (a restart).
    pub fn adopt(&mut self, k: K, id: u32) {
        self.map.insert(k, id);
    }
}

/// What a restarted daemon finds in pinned maps.
#[derive(Debug, Default, Clone)]
pub struct AdoptedIds {
    pub vips: Vec<(VipKey, u32)>,
    pub backends: Vec<(u32, Backend)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_across_reloads() {
        let mut ids = Ids::new(1);
        let a: BTreeSet<_> = ["a", "b", "c"].into_iter().collect();
        ids.assign(&a, &BTreeSet::new());
        assert_eq!(
            (ids.get(&"a"), ids.get(&"b"), ids.get(&"c")),
            (Some(1), Some(2), Some(3))
        );
        let b: BTreeSet<_> = ["c", "d"].into_iter().collect();
        let released = ids.assign(&b, &BTreeSet::new());
        assert_eq!(released.len(), 2);
        assert_eq!(ids.get(&"c"), Some(3));
        assert_eq!(ids.get(&"d"), Some(1));
    }
}
