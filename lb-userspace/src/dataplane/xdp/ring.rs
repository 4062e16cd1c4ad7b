//! The `RING` map, written through a shared mapping.

use anyhow::{bail, Result};
use aya::maps::{Array, MapData};

/// The `RING` array mapped into our memory (it is `BPF_F_MMAPABLE`): a
/// spare ring is written with one copy instead of M map updates.
pub struct RingMmap {
    /// Array maps store each value in an 8-byte slot (value size rounded
    /// up to 8), so a u32 slot is the low half of a u64.
    ptr: *mut u64,
    entries: usize,
    len: usize,
}

// The mapping is owned by this struct alone.
unsafe impl Send for RingMmap {}

impl RingMmap {
    pub fn new(map: &Array<MapData, u32>, entries: u32) -> Result<RingMmap> {
        use aya::maps::IterableMap as _;
        use std::os::fd::AsRawFd as _;
        // The fd aya already holds: asking the kernel for one by id
        // (`info()?.fd()`, BPF_MAP_GET_FD_BY_ID) needs CAP_SYS_ADMIN, which
        // the systemd unit does not grant.
        let fd = map.map().fd();
        let page = 4096usize;
        let len = (entries as usize * 8).div_ceil(page) * page;
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                std::os::fd::AsFd::as_fd(&fd).as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            bail!("mmap of the RING map: {}", std::io::Error::last_os_error());
        }
        Ok(RingMmap {
            ptr: ptr as *mut u64,
            entries: entries as usize,
            len,
        })
    }

    pub fn write(&mut self, start: usize, slots: &[u32]) -> Result<()> {
        if start + slots.len() > self.entries {
            bail!("ring write out of bounds");
        }
        // SAFETY: in bounds of the mapping; the kernel only reads it, and the
        // VIP flip (a syscall) orders these stores before any packet uses them.
        let wide: Vec<u64> = slots.iter().map(|&s| u64::from(s)).collect();
        unsafe { std::ptr::copy_nonoverlapping(wide.as_ptr(), self.ptr.add(start), wide.len()) };
        Ok(())
    }
}

impl Drop for RingMmap {
    fn drop(&mut self) {
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
    }
}
