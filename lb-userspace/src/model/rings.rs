//! Maglev tables, rebuilt only when their inputs change.

use std::{collections::HashMap, sync::Arc};

use lb_common::maglev::{self, MaglevTarget};

/// A Maglev table and the inputs it was built from: rebuilt only when the
/// inputs change. Never built counts as changed.
#[derive(Debug, Default)]
pub struct CachedRing {
    inputs: Option<Vec<MaglevTarget>>,
    pub table: Arc<Vec<u32>>,
}

impl CachedRing {
    /// Rebuilds when `inputs` differ from the last build; true if it did.
    pub fn refresh(&mut self, inputs: Vec<MaglevTarget>, m: u32) -> bool {
        if self.inputs.as_ref() == Some(&inputs) {
            return false;
        }
        self.table = Arc::new(maglev::build(&inputs, m));
        self.inputs = Some(inputs);
        true
    }
}

/// The (zone, all-zones) rings of every VIP id. A ring whose inputs did not
/// change keeps its `Arc`, which is how the data planes tell that there is
/// nothing to write.
#[derive(Debug, Default)]
pub struct RingCache {
    rings: HashMap<u32, (CachedRing, CachedRing)>,
}

impl RingCache {
    /// The tables of `vip_id` for these inputs.
    pub fn get(
        &mut self,
        vip_id: u32,
        zone: Vec<MaglevTarget>,
        all: Vec<MaglevTarget>,
        m: u32,
    ) -> (Arc<Vec<u32>>, Arc<Vec<u32>>) {
        let (z, a) = self.rings.entry(vip_id).or_default();
        z.refresh(zone, m);
        a.refresh(all, m);
        (z.table.clone(), a.table.clone())
    }

    /// Forgets the VIP ids not in `live`.
    pub fn retain(&mut self, live: impl Fn(u32) -> bool) {
        self.rings.retain(|id, _| live(*id));
    }
}
