//! The `RING` map, written through a shared mapping.

use anyhow::{bail, Result};
use aya::maps::{Array, MapData};

use super::mmap::Shared;

/// The `RING` array mapped into our memory (it is `BPF_F_MMAPABLE`): a
/// spare ring is written with one copy instead of M map updates.
pub struct RingMmap {
    /// Array maps store each value in an 8-byte slot (value size rounded
    /// up to 8), so a u32 slot is the low half of a u64.
    mem: Shared,
    entries: usize,
}

impl RingMmap {
    pub fn new(map: &Array<MapData, u32>, entries: u32) -> Result<RingMmap> {
        use aya::maps::IterableMap as _;
        use std::os::fd::AsFd as _;
        let mem = Shared::new(map.map().fd().as_fd(), entries as usize * 8, "RING")?;
        Ok(RingMmap {
            mem,
            entries: entries as usize,
        })
    }

    pub fn write(&mut self, start: usize, slots: &[u32]) -> Result<()> {
        if start + slots.len() > self.entries {
            bail!("ring write out of bounds");
        }
        // SAFETY: in bounds of the mapping; the kernel only reads it, and the
        // VIP flip (a syscall) orders these stores before any packet uses them.
        let wide: Vec<u64> = slots.iter().map(|&s| u64::from(s)).collect();
        let ptr = self.mem.ptr as *mut u64;
        unsafe { std::ptr::copy_nonoverlapping(wide.as_ptr(), ptr.add(start), wide.len()) };
        Ok(())
    }
}
