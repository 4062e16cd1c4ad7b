//! What every data plane is programmed with: the model, with the targets'
//! health applied and the rings built. Computed once per change and handed
//! to each data plane that runs.

use std::{collections::HashMap, sync::Arc};

use super::{rings::RingCache, Model, VipModel};

/// What health and registration allow a target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TargetState {
    /// May take new flows: registered and healthy.
    pub in_ring: bool,
    /// May keep its flows: healthy, registered or draining.
    pub valid: bool,
}

/// A VIP's zone ring and all-zones ring (see `Model::ring_inputs`).
#[derive(Debug, Clone)]
pub struct Rings {
    pub zone: Arc<Vec<u32>>,
    pub all: Arc<Vec<u32>>,
}

pub struct Desired<'a> {
    pub model: &'a Model,
    /// One per `model.vips` entry, in that order.
    pub rings: Vec<Rings>,
    pub targets: HashMap<u32, TargetState>,
}

impl<'a> Desired<'a> {
    /// Applies `state` (by backend id) to `model`; rings whose inputs did
    /// not change come from `cache` as they were.
    pub fn compute(
        model: &'a Model,
        cache: &mut RingCache,
        state: impl Fn(u32) -> TargetState,
    ) -> Desired<'a> {
        let targets: HashMap<u32, TargetState> =
            model.backends.keys().map(|&id| (id, state(id))).collect();
        let in_ring = |id: u32| targets.get(&id).is_some_and(|t| t.in_ring);
        let m = model.globals.ring_size;
        let rings = model
            .vips
            .iter()
            .map(|v| {
                let (zone, all) = model.ring_inputs(v, &in_ring);
                let (zone, all) = cache.get(v.vip_id, zone, all, m);
                Rings { zone, all }
            })
            .collect();
        cache.retain(|id| model.vips.iter().any(|v| v.vip_id == id));
        Desired {
            model,
            rings,
            targets,
        }
    }

    pub fn in_ring(&self, id: u32) -> bool {
        self.targets.get(&id).is_some_and(|t| t.in_ring)
    }

    pub fn valid(&self, id: u32) -> bool {
        self.targets.get(&id).is_some_and(|t| t.valid)
    }

    /// Every VIP with its rings.
    pub fn vips(&self) -> impl Iterator<Item = (&'a VipModel, &Rings)> {
        self.model.vips.iter().zip(&self.rings)
    }
}
