//! What every data plane is programmed with: the model, with the targets'
//! health applied and the rings built. Computed once per change and handed
//! to each data plane that runs.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

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
    /// Target groups failing open (fewer healthy targets than their
    /// minimum, 1 by default), so all of them take flows (NLB's rule):
    /// (healthy, targets).
    pub failed_open: BTreeMap<String, (usize, usize)>,
}

impl<'a> Desired<'a> {
    /// Applies `state` (by backend id) to `model`; rings whose inputs did
    /// not change come from `cache` as they were.
    pub fn compute(
        model: &'a Model,
        cache: &mut RingCache,
        state: impl Fn(u32) -> TargetState,
    ) -> Desired<'a> {
        let mut targets: HashMap<u32, TargetState> =
            model.backends.keys().map(|&id| (id, state(id))).collect();
        let failed_open = fail_open(model, &mut targets);
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
            failed_open,
        }
    }

    pub fn valid(&self, id: u32) -> bool {
        self.targets.get(&id).is_some_and(|t| t.valid)
    }

    pub fn in_ring(&self, id: u32) -> bool {
        self.targets.get(&id).is_some_and(|t| t.in_ring)
    }

    /// The model with only the VIPs `keep` takes, and their rings (for a
    /// plane that serves some listeners only).
    pub fn only(&self, keep: impl Fn(&VipModel) -> bool) -> (Model, Vec<Rings>) {
        let m = self.model;
        let (vips, rings) = self
            .vips()
            .filter(|(v, _)| keep(v))
            .map(|(v, r)| (v.clone(), r.clone()))
            .unzip();
        // Not `m.clone()`: the VIPs left out would be copied for nothing.
        let model = Model {
            globals: m.globals,
            zone: m.zone.clone(),
            vips,
            backends: m.backends.clone(),
            deny: m.deny.clone(),
        };
        (model, rings)
    }

    /// This state over another model (from `only`).
    pub fn with<'b>(&self, model: &'b Model, rings: Vec<Rings>) -> Desired<'b> {
        Desired {
            model,
            rings,
            targets: self.targets.clone(),
            failed_open: self.failed_open.clone(),
        }
    }

    /// Every VIP with its rings.
    pub fn vips(&self) -> impl Iterator<Item = (&'a VipModel, &Rings)> {
        self.model.vips.iter().zip(&self.rings)
    }
}

/// Groups with `fail_open` with fewer targets (of non-zero weight) in
/// service than their minimum (1: none left): all of them take new flows
/// and keep theirs.
fn fail_open(
    model: &Model,
    targets: &mut HashMap<u32, TargetState>,
) -> BTreeMap<String, (usize, usize)> {
    let mut out = BTreeMap::new();
    for v in model.vips.iter().filter(|v| v.fail_open) {
        if out.contains_key(&v.target_group) {
            continue;
        }
        let members: Vec<u32> = v
            .backends
            .iter()
            .copied()
            .filter(|id| model.backends[id].weight > 0)
            .collect();
        let healthy = members
            .iter()
            .filter(|id| targets.get(id).is_some_and(|t| t.in_ring))
            .count();
        if members.is_empty() || healthy >= v.min_healthy.needed(members.len()).min(members.len()) {
            continue;
        }
        for id in &members {
            targets.insert(
                *id,
                TargetState {
                    in_ring: true,
                    valid: true,
                },
            );
        }
        out.insert(v.target_group.clone(), (healthy, members.len()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{config::Config, model::Ids};

    const CFG: &str = "[gateway]\ninterfaces = [\"eth0\"]\n[[listener]]\nname = \"web\"\naddress = \"10.0.0.1\"\nport = 80\nprotocol = \"tcp\"\ntarget_group = \"web\"\n[[target_group]]\nname = \"web\"\n[[target_group.targets]]\naddress = \"10.1.0.1\"\nport = 80\n[[target_group.targets]]\naddress = \"10.1.0.2\"\nport = 80\n";

    fn desired(cfg: &str, up: &[u32]) -> (BTreeMap<String, (usize, usize)>, usize) {
        let cfg = Config::parse(cfg).unwrap();
        let model = Model::build(
            &cfg,
            &mut Ids::new(0),
            &mut Ids::new(1),
            &Default::default(),
        );
        let d = Desired::compute(&model, &mut RingCache::default(), |id| TargetState {
            in_ring: up.contains(&id),
            valid: up.contains(&id),
        });
        let members = d.rings[0].all.iter().filter(|&&id| id != 0).count();
        (d.failed_open.clone(), members)
    }

    #[test]
    fn a_group_with_no_healthy_target_fails_open() {
        let (open, slots) = desired(CFG, &[]);
        assert_eq!(open.get("web"), Some(&(0, 2)));
        assert!(slots > 0, "all targets are in the ring");
        let (open, _) = desired(CFG, &[1]);
        assert!(open.is_empty(), "one healthy target: no fail-open");
        let off = CFG.replace(
            "name = \"web\"\n[[target_group.targets]]",
            "name = \"web\"\nfail_open = false\n[[target_group.targets]]",
        );
        let (open, slots) = desired(&off, &[]);
        assert!(open.is_empty() && slots == 0, "off: an empty ring");
    }
}
