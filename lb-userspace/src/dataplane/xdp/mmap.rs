//! An mmapable array map (`BPF_F_MMAPABLE`) mapped into our memory.

use std::os::fd::{AsRawFd as _, BorrowedFd};

use anyhow::{bail, Result};

pub struct Shared {
    pub ptr: *mut u8,
    len: usize,
}

// The mapping is owned by its struct alone.
unsafe impl Send for Shared {}

impl Shared {
    /// Maps `bytes` of the map behind `fd` (the fd aya already holds:
    /// asking the kernel for one by id, BPF_MAP_GET_FD_BY_ID, needs
    /// CAP_SYS_ADMIN, which the systemd unit does not grant).
    pub fn new(fd: BorrowedFd<'_>, bytes: usize, what: &str) -> Result<Shared> {
        let page = 4096usize;
        let len = bytes.div_ceil(page).max(1) * page;
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            bail!(
                "mmap of the {what} map: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(Shared {
            ptr: ptr as *mut u8,
            len,
        })
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
    }
}
