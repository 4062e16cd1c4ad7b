//! Conntrack, by family: IPv4 flows in `CONNTRACK4` (a 16-byte key),
//! IPv6 flows in `CONNTRACK` (40 bytes). The map hashes and compares the
//! whole key on every lookup; one table for both made every IPv4 flow pay
//! IPv6's key size.

use lb_common::{FlowKey, FlowState};

use crate::{CONNTRACK, CONNTRACK4};

#[inline(always)]
pub fn get_ptr_mut(key: &FlowKey) -> Option<*mut FlowState> {
    if key.is_v4() {
        CONNTRACK4.get_ptr_mut(key.v4())
    } else {
        CONNTRACK.get_ptr_mut(key)
    }
}

#[inline(always)]
pub fn get(key: &FlowKey) -> Option<&'static FlowState> {
    // Safety: as `LruHashMap::get`: the entry may be removed or changed
    // by another CPU while read (a stale read, never a fault).
    unsafe {
        if key.is_v4() {
            CONNTRACK4.get(key.v4())
        } else {
            CONNTRACK.get(key)
        }
    }
}

/// `flags`: `BPF_ANY` or `BPF_NOEXIST`.
#[inline(always)]
pub fn insert(key: &FlowKey, st: &FlowState, flags: u64) -> Result<(), i32> {
    if key.is_v4() {
        CONNTRACK4.insert(key.v4(), st, flags)
    } else {
        CONNTRACK.insert(key, st, flags)
    }
}
