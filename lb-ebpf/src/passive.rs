//! Passive health in the data path: a target's answers to new connections
//! counted in `BACKEND_HEALTH`, and the suspect mark that new flows avoid
//! (rules in `lb_common::passive`).

use core::{ffi::c_void, intrinsics::AtomicOrdering};

use aya_ebpf::helpers::generated::bpf_loop;
use lb_common::{passive, select, BackendHealth, FlowState, VipMeta};

use crate::{BACKENDS, BACKEND_HEALTH, RING, SCRATCH, VIP_STATS};

#[inline(always)]
fn add(p: *mut u64) {
    // Every CPU counts into the one shared entry. (The BPF target has no
    // `AtomicU64::fetch_add`; the intrinsic is the kernel's atomic add.)
    // Its result is not used: the program's CPU version has no fetch-add.
    unsafe { core::intrinsics::atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(p, 1) };
}

#[inline(always)]
fn entry(id: u32) -> Option<*mut BackendHealth> {
    BACKEND_HEALTH.get_ptr_mut(id)
}

/// New flows avoid backend `id` now.
#[inline(always)]
pub fn suspect(id: u32, now: u64) -> bool {
    entry(id).is_some_and(|h| unsafe { core::ptr::read_volatile(&(*h).suspect_until_ns) } > now)
}

/// The target answered a first SYN.
#[inline(always)]
pub fn answered(id: u32, now: u64) {
    let Some(h) = entry(id) else { return };
    let h = unsafe { &mut *h };
    add(&mut h.answered);
    h.last_answer_ns = now;
    // A store only when it changes: the entry's line stays shared.
    if h.streak != 0 {
        h.streak = 0;
    }
}

/// A SYN retransmitted without an answer since `previous_syn_ns`: a
/// failure, unless the target answered other flows meanwhile.
#[inline(always)]
pub fn unanswered(id: u32, previous_syn_ns: u64, now: u64) {
    let Some(h) = entry(id) else { return };
    let h = unsafe { &mut *h };
    let last = unsafe { core::ptr::read_volatile(&h.last_answer_ns) };
    if passive::counts_unanswered(last, previous_syn_ns) {
        fail(h, id, false, now);
    }
}

/// A failed connection attempt: refused (RST) or unanswered. Trips the
/// target when the streak reaches its threshold.
#[inline(always)]
pub fn failed(id: u32, refused: bool, now: u64) {
    if let Some(h) = entry(id) {
        fail(unsafe { &mut *h }, id, refused, now);
    }
}

#[inline(always)]
fn fail(h: &mut BackendHealth, id: u32, refused: bool, now: u64) {
    add(if refused {
        &mut h.refused
    } else {
        &mut h.unanswered
    });
    // Read and written without an atomic: two CPUs failing at once may
    // count one failure less, which only delays a trip by one.
    let streak = h.streak + 1;
    h.streak = streak;
    if streak == 1 {
        h.streak_start_ns = now;
    }
    let threshold = BACKENDS.get(id).map_or(0, |b| b.passive_failures);
    if passive::trips(streak, threshold, h.suspect_until_ns > now) {
        h.suspect_until_ns = now + passive::SUSPECT_HOLD_NS;
        h.trip_streak = streak;
        h.trip_span_ns = now.wrapping_sub(h.streak_start_ns);
        add(&mut h.trips);
    }
}

/// A target's packet for flow `st` (its backend): the first answer to an
/// opening flow is counted. True when it is a refusal to drop (redispatch:
/// the flow is marked so that the client's retry goes elsewhere).
#[inline(always)]
pub fn on_reply(st: &mut FlowState, tcp_flags: u8, vip_redispatch: bool, now: u64) -> bool {
    match passive::reply(st.flags, tcp_flags) {
        passive::Reply::NotOpening => false,
        passive::Reply::Answered => {
            if passive::is_syn_ack(tcp_flags) {
                answered(st.backend_id, now);
            }
            st.flags = passive::answered_flags(st.flags, false);
            false
        }
        passive::Reply::Refused => {
            failed(st.backend_id, true, now);
            let drop = passive::redispatches(st.flags, vip_redispatch);
            st.flags = passive::answered_flags(st.flags, drop);
            if drop {
                // Not translated, so not counted with the replies.
                if let Some(c) = VIP_STATS.get_ptr_mut(st.vip_id) {
                    unsafe { (*c).target_resets += 1 };
                }
            }
            drop
        }
    }
}

/// A re-pick along the ring, asked through scratch memory: `bpf_loop`'s
/// callback is verified once, whatever the number of slots it tries, where
/// an unrolled loop multiplies the states of everything after it.
#[repr(C)]
pub struct Repick {
    pub flags: u32,
    pub ring_size: u32,
    pub hash: u32,
    pub ring_zone: u32,
    pub ring_all: u32,
    pub avoid: u32,
    pub now: u64,
    /// The answer: a target not to avoid, or 0.
    pub found: u32,
    pub _pad: u32,
}

/// The new flow's target: the ring's pick for `hash`, or, when that is one
/// to avoid (`avoid`, or suspect), the next slots' (`select::pick_avoiding`,
/// the same order). Returns (backend id, last resort).
#[inline(always)]
pub fn pick(meta: &VipMeta, ring_size: u32, hash: u32, avoid: u32, now: u64) -> (u32, bool) {
    let slot = hash % ring_size;
    let ring = |r: u32, i: u32| ring_at(r, ring_size, i);
    let first = select::pick_slot(meta.flags, slot, &|i| ring(meta.ring_zone, i), &|i| {
        ring(meta.ring_all, i)
    });
    if first == 0 || (first != avoid && !suspect(first, now)) {
        return (first, false);
    }
    let Some(sc) = SCRATCH.get_ptr_mut(0) else {
        return (first, true);
    };
    unsafe {
        (*sc).repick = Repick {
            flags: meta.flags,
            ring_size,
            hash,
            ring_zone: meta.ring_zone,
            ring_all: meta.ring_all,
            avoid,
            now,
            found: 0,
            _pad: 0,
        };
        bpf_loop(
            passive::REPICKS,
            repick_step as *mut c_void,
            core::ptr::null_mut(),
            0,
        );
        match (*sc).repick.found {
            0 => (first, true),
            id => (id, false),
        }
    }
}

#[inline(always)]
fn ring_at(r: u32, m: u32, i: u32) -> u32 {
    RING.get(r.wrapping_mul(m) + i).copied().unwrap_or(0)
}

/// One slot of the re-pick (`bpf_loop` callback): 1 stops the loop.
#[inline(never)]
extern "C" fn repick_step(i: u64, _ctx: *mut c_void) -> i64 {
    let Some(sc) = SCRATCH.get_ptr_mut(0) else {
        return 1;
    };
    let q = unsafe { &mut (*sc).repick };
    if q.ring_size == 0 {
        return 1;
    }
    let s = select::repick_slot(q.hash, i as u32 + 1, q.ring_size);
    let (m, rz, ra) = (q.ring_size, q.ring_zone, q.ring_all);
    let id = select::pick_slot(q.flags, s, &|i| ring_at(rz, m, i), &|i| ring_at(ra, m, i));
    if id != 0 && id != q.avoid && !suspect(id, q.now) {
        q.found = id;
        return 1;
    }
    0
}
