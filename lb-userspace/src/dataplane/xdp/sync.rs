//! Programming the maps from the desired state, in an order under which a
//! packet never sees a half-made change: ports widen first, backends exist
//! before a ring names them, rings are written to the spare slot and then
//! flipped, stale entries go last.

use std::collections::{BTreeSet, HashMap};

use anyhow::{bail, Result};
use aya::maps::{Array, MapData};
use lb_common::{
    Backend, ReverseKey, ReverseVal, VipKey, VipMeta, VipSlot, PORT_TARGET_TCP, PORT_TARGET_UDP,
    PORT_VIP_TCP, PORT_VIP_UDP, PROTO_TCP, RINGS_PER_VIP, VIP_F_SNAT,
};

use super::{RingState, XdpDataplane};
use crate::model::{Desired, Model, ReverseKeyOrd, Rings, VipModel};

impl XdpDataplane {
    /// Programs the maps from `d`.
    pub(super) fn sync(&mut self, d: &Desired) -> Result<()> {
        let model = d.model;
        if model.globals.ring_size != self.sizes.ring_size {
            bail!(
                "ring_size changed from {} to {}: needs a restart",
                self.sizes.ring_size,
                model.globals.ring_size
            );
        }
        if let Some(l) = &self.live {
            *l.globals.lock().unwrap() = Some(model.globals);
        }
        let bits = port_bits(model);
        // Bits (ports, then addresses) first widen, so a new VIP is never
        // filtered out, and are narrowed only after stale VIPs are gone.
        let union = or(&bits, &self.port_bits);
        write_bytes(&mut self.maps.ports, &mut self.port_bits, &union)?;
        // Computed once: the reverse table and the address filter's
        // target bits both come from it.
        let reverse = model.reverse_entries();
        let abits = addr_bits(model, &reverse);
        let union = or(&abits, &self.addr_bits);
        write_bytes(&mut self.maps.addr_bits, &mut self.addr_bits, &union)?;
        self.maps.globals.set(0, model.globals, 0)?;
        // New prefixes before the VIP flags that make the program read
        // them; stale ones out after (a list never looks empty meanwhile).
        let acl = crate::model::acl::entries(model);
        self.add_acl(&acl)?;
        self.sync_backends(d)?;
        self.remove_stale_vips(model)?;
        let mut seen = HashMap::new();
        for (v, rings) in d.vips() {
            self.sync_vip(v, rings)?;
            seen.insert(v.key, v.vip_id);
        }
        self.vips = seen;
        self.sync_reverse(&reverse)?;
        self.remove_stale_acl(acl);
        self.sync_vip_addrs(model)?;
        write_bytes(&mut self.maps.addr_bits, &mut self.addr_bits, &abits)?;
        write_bytes(&mut self.maps.ports, &mut self.port_bits, &bits)?;
        Ok(())
    }

    /// Backends first, so a flipped ring never names an unknown backend.
    fn sync_backends(&mut self, d: &Desired) -> Result<()> {
        let mut now = BTreeSet::new();
        for &id in d.model.backends.keys() {
            if id > self.sizes.max_targets {
                bail!(
                    "backend id {id} exceeds max_targets {}",
                    self.sizes.max_targets
                );
            }
            let v = d.model.backend_value(id, d.valid(id)).expect("known id");
            if !self.backends.contains(&id) {
                // New here (or after a restart): counts of whoever had the
                // id before say nothing of this target.
                self.health_mem.reset(id);
            }
            self.maps.backends.set(id, v, 0)?;
            now.insert(id);
        }
        let in_ring: BTreeSet<u32> = now.iter().copied().filter(|&id| d.in_ring(id)).collect();
        for &back in in_ring.difference(&self.in_ring) {
            // Back in service by the active checks (or by fail-open).
            self.health_mem.clear_suspect(back);
        }
        self.in_ring = in_ring;
        for &gone in self.backends.difference(&now) {
            self.maps.backends.set(gone, Backend::default(), 0)?;
        }
        self.backends = now;
        Ok(())
    }

    /// Stale VIPs go first: a VIP that moves must not need a second entry
    /// (the map is sized for max_vips), and a released vip_id must not keep
    /// an old key pointing at the listener that takes it over.
    fn remove_stale_vips(&mut self, model: &Model) -> Result<()> {
        let want: HashMap<VipKey, u32> = model.vips.iter().map(|v| (v.key, v.vip_id)).collect();
        for (k, id) in &self.vips {
            if want.get(k) != Some(id) {
                let _ = self.maps.vips.remove(k);
            }
            if !want.values().any(|v| v == id) {
                self.rings.remove(id);
                self.maps.vip_slots.set(*id, VipSlot::default(), 0)?;
            }
        }
        self.vips.retain(|k, id| want.get(k) == Some(id));
        Ok(())
    }

    /// Writes the VIP's changed rings into their spare slots, then flips
    /// them in by updating its entry.
    fn sync_vip(&mut self, v: &VipModel, rings: &Rings) -> Result<()> {
        if v.vip_id >= self.sizes.max_vips {
            bail!(
                "vip id {} exceeds max_vips {}",
                v.vip_id,
                self.sizes.max_vips
            );
        }
        let m = self.sizes.ring_size;
        let base = v.vip_id * RINGS_PER_VIP;
        let st = self.rings.entry(v.vip_id).or_insert(RingState {
            zone_id: base + 1,
            all_id: base + 3,
            zone: None,
            all: None,
        });
        // A ring is written only when its table changed (a new `Arc`).
        let changed = |had: &Option<std::sync::Arc<Vec<u32>>>, now| {
            !had.as_ref().is_some_and(|h| std::sync::Arc::ptr_eq(h, now))
        };
        if changed(&st.zone, &rings.zone) {
            let spare = if st.zone_id == base { base + 1 } else { base };
            self.ring_mem.write((spare * m) as usize, &rings.zone)?;
            st.zone_id = spare;
            st.zone = Some(rings.zone.clone());
        }
        if changed(&st.all, &rings.all) {
            let spare = if st.all_id == base + 2 {
                base + 3
            } else {
                base + 2
            };
            self.ring_mem.write((spare * m) as usize, &rings.all)?;
            st.all_id = spare;
            st.all = Some(rings.all.clone());
        }
        let meta = VipMeta {
            vip_id: v.vip_id,
            flags: v.flags,
            ring_zone: st.zone_id,
            ring_all: st.all_id,
            snat_addr: v.snat_addr,
        };
        let slot = VipSlot {
            key: v.key,
            idle_timeout_s: v.idle_timeout_s,
            _pad: 0,
            meta,
        };
        self.maps.vip_slots.set(v.vip_id, slot, 0)?;
        self.maps.vips.insert(v.key, meta, 0)?;
        Ok(())
    }

    /// Every VIP's address (echo requests to them are answered).
    fn sync_vip_addrs(&mut self, model: &Model) -> Result<()> {
        let now: BTreeSet<lb_common::VipAddr> = (model.vips.iter())
            .map(|v| lb_common::VipAddr {
                addr: v.key.addr,
                family: v.key.family,
                _pad: [0; 3],
            })
            .collect();
        for a in now.difference(&self.vip_addrs) {
            self.maps.vip_addrs.insert(a, 1, 0)?;
        }
        for a in self.vip_addrs.difference(&now) {
            let _ = self.maps.vip_addrs.remove(a);
        }
        self.vip_addrs = now;
        Ok(())
    }

    /// The allow and deny lists' new prefixes.
    fn add_acl(&mut self, now: &BTreeSet<(u32, lb_common::AclData)>) -> Result<()> {
        for (len, data) in now.difference(&self.acl) {
            let k = aya::maps::lpm_trie::Key::new(*len, *data);
            self.maps.acl.insert(&k, 1, 0)?;
        }
        Ok(())
    }

    fn remove_stale_acl(&mut self, now: BTreeSet<(u32, lb_common::AclData)>) {
        for (len, data) in self.acl.difference(&now) {
            let _ = self
                .maps
                .acl
                .remove(&aya::maps::lpm_trie::Key::new(*len, *data));
        }
        self.acl = now;
    }

    fn sync_reverse(&mut self, entries: &[(ReverseKey, ReverseVal)]) -> Result<()> {
        let mut now = BTreeSet::new();
        for &(k, v) in entries {
            self.maps.reverse.insert(k, v, 0)?;
            now.insert(ReverseKeyOrd::of(&k));
        }
        for gone in self.reverse.difference(&now) {
            let _ = self.maps.reverse.remove(&gone.key());
        }
        self.reverse = now;
        Ok(())
    }
}

/// The `PORTS` bitmap a model needs.
fn port_bits(model: &Model) -> Vec<u8> {
    let mut bits = vec![0u8; 65536];
    for v in &model.vips {
        let tcp = v.key.proto == PROTO_TCP;
        bits[u16::from_be(v.key.port) as usize] |= if tcp { PORT_VIP_TCP } else { PORT_VIP_UDP };
        if v.flags & VIP_F_SNAT == 0 {
            for id in v.backends.iter().chain(&v.draining) {
                let port = model.backends[id].key.port as usize;
                bits[port] |= if tcp {
                    PORT_TARGET_TCP
                } else {
                    PORT_TARGET_UDP
                };
            }
        }
    }
    bits
}

/// The `ADDR_BITS` filter a model needs: its VIPs, and the targets its
/// reply table holds.
fn addr_bits(model: &Model, reverse: &[(ReverseKey, ReverseVal)]) -> Vec<u8> {
    let mut bits = vec![0u8; lb_common::ADDR_SLOTS as usize];
    for v in &model.vips {
        bits[lb_common::addr_slot(&v.key.addr) as usize] |= lb_common::ADDR_F_VIP;
    }
    for (k, _) in reverse {
        bits[lb_common::addr_slot(&k.addr) as usize] |= lb_common::ADDR_F_TARGET;
    }
    bits
}

fn or(a: &[u8], b: &[u8]) -> Vec<u8> {
    a.iter().zip(b).map(|(a, b)| a | b).collect()
}

/// Writes the slots of a byte array that differ from what it holds.
fn write_bytes(map: &mut Array<MapData, u8>, cur: &mut [u8], want: &[u8]) -> Result<()> {
    for (i, (c, w)) in cur.iter_mut().zip(want).enumerate() {
        if c != w {
            map.set(i as u32, *w, 0)?;
            *c = *w;
        }
    }
    Ok(())
}
