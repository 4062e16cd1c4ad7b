//! The `BACKEND_HEALTH` map (passive health), read and cleared through a
//! shared mapping: the program counts into it with atomic adds, so a map
//! update from here would lose its counts; single aligned stores do not.

use anyhow::Result;
use aya::maps::{Array, MapData};
use lb_common::BackendHealth;

use super::mmap::Shared;

pub struct HealthMmap {
    mem: Shared,
    entries: u32,
}

impl HealthMmap {
    pub fn new(map: &Array<MapData, BackendHealth>, entries: u32) -> Result<HealthMmap> {
        use aya::maps::IterableMap as _;
        use std::os::fd::AsFd as _;
        let bytes = entries as usize * size_of::<BackendHealth>();
        let mem = Shared::new(map.map().fd().as_fd(), bytes, "BACKEND_HEALTH")?;
        Ok(HealthMmap { mem, entries })
    }

    fn at(&self, id: u32) -> Option<*mut BackendHealth> {
        // 80-byte values: a multiple of the 8-byte slot, so packed.
        (id < self.entries)
            .then(|| unsafe { (self.mem.ptr as *mut BackendHealth).add(id as usize) })
    }

    pub fn read(&self, id: u32) -> BackendHealth {
        self.at(id)
            .map(|p| unsafe { std::ptr::read_volatile(p) })
            .unwrap_or_default()
    }

    /// The active checks passed again: new flows may go to it, and its
    /// failures count from zero (out of the rings, no SYN-ACK reset them).
    pub fn clear_suspect(&mut self, id: u32) {
        if let Some(p) = self.at(id) {
            unsafe {
                std::ptr::write_volatile(&mut (*p).streak, 0);
                std::ptr::write_volatile(&mut (*p).suspect_until_ns, 0);
            }
        }
    }

    /// A backend id given to a target afresh: its counts start at zero.
    pub fn reset(&mut self, id: u32) {
        if let Some(p) = self.at(id) {
            unsafe { std::ptr::write_volatile(p, BackendHealth::default()) };
        }
    }
}
