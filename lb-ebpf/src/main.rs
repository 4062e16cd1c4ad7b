//! XDP load balancer: steers packets for VIPs to targets chosen by Maglev,
//! translates the replies, and passes everything else untouched.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod csum;
mod ct;
mod echo;
mod fwd;
mod icmp;
mod parse;
mod passive;
mod toobig;

use aya_ebpf::{
    bindings::{xdp_action::XDP_PASS, BPF_F_MMAPABLE},
    macros::{map, xdp},
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, ProgramArray},
    programs::XdpContext,
};
use lb_common::{
    AclData, Backend, BackendHealth, Counters, FibCacheEntry, FlowKey, FlowKey4, FlowState,
    Globals, Passthrough, Reason, ReverseKey, ReverseVal, SnatKey, SnatVal, VipKey, VipMeta,
    VipSlot, FIB_CACHE_SLOTS, REASON_COUNT,
};

// Sizes here are placeholders: the loader sets them from the config.
#[map]
static GLOBALS: Array<Globals> = Array::with_max_entries(1, 0);
#[map]
static VIPS: HashMap<VipKey, VipMeta> = HashMap::with_max_entries(256, 0);
#[map]
static VIP_SLOTS: Array<VipSlot> = Array::with_max_entries(256, 0);
#[map]
static PORTS: Array<u8> = Array::with_max_entries(65536, 0);
/// Mmapable: the control plane writes a whole spare ring with one copy.
#[map]
static RING: Array<u32> = Array::with_max_entries(lb_common::DEFAULT_RING_SIZE * 4, BPF_F_MMAPABLE);
#[map]
static BACKENDS: Array<Backend> = Array::with_max_entries(1024, 0);
/// Passive health per backend id; mmapable: the daemon reads it and
/// clears a suspect mark with one store, never rewriting the counters.
#[map]
static BACKEND_HEALTH: Array<BackendHealth> = Array::with_max_entries(1024, BPF_F_MMAPABLE);
#[map]
static CONNTRACK: LruHashMap<FlowKey, FlowState> = LruHashMap::with_max_entries(65536, 0);
/// IPv4 flows (see `ct`).
#[map]
static CONNTRACK4: LruHashMap<FlowKey4, FlowState> = LruHashMap::with_max_entries(65536, 0);
#[map]
static NAT_REVERSE: HashMap<ReverseKey, ReverseVal> = HashMap::with_max_entries(1024, 0);
/// Non-VIP flows to target ports forwarded here (their replies pass).
#[map]
static PASSTHROUGH: LruHashMap<FlowKey, Passthrough> = LruHashMap::with_max_entries(65536, 0);
#[map]
static SNAT: LruHashMap<SnatKey, SnatVal> = LruHashMap::with_max_entries(65536, 0);
#[map]
static VIP_STATS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(256, 0);
#[map]
static BACKEND_STATS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(1024, 0);
/// Allow lists (per listener) and the gateway's deny list: who may open
/// flows. Longest prefix first; the value is unused.
#[map]
static ACL: LpmTrie<AclData, u8> = LpmTrie::with_max_entries(lb_common::MAX_ACL_ENTRIES, 0);
/// Every VIP's address (any port): echo requests to them are answered.
#[map]
static VIP_ADDRS: HashMap<lb_common::VipAddr, u8> = HashMap::with_max_entries(256, 0);
/// By `addr_slot` of an address: `ADDR_F_*` bits for what it may be (a
/// VIP's, a `nat` target's); written by the daemon, read by `lb_xdp` only.
#[map]
static ADDR_BITS: Array<u8> = Array::with_max_entries(lb_common::ADDR_SLOTS, 0);
/// By `addr_slot` of a target's address: 1 once a direct (non-VIP) flow
/// to it was seen, set by the program. Replies from other targets skip
/// the `PASSTHROUGH` lookup (a hash miss on every reply otherwise).
#[map]
static DIRECT_SLOTS: Array<u8> = Array::with_max_entries(lb_common::ADDR_SLOTS, 0);
/// By ifindex: 1 where lb runs natively, so XDP may transmit there (a
/// redirect to a device without XDP transmit is dropped by the kernel).
#[map]
static TX_PORTS: Array<u8> = Array::with_max_entries(lb_common::TX_PORTS_SIZE, 0);
#[map]
static FIB_CACHE: PerCpuArray<FibCacheEntry> = PerCpuArray::with_max_entries(FIB_CACHE_SLOTS, 0);
/// Scratch for the larger keys and values of the SNAT and reply paths:
/// the 512-byte BPF stack cannot hold them beside the forward path's.
#[repr(C)]
pub struct Scratch {
    /// The re-pick's question and answer (see `passive::repick`).
    pub repick: passive::Repick,
    /// A new flow's conntrack value, made when its target is picked.
    pub state: FlowState,
    pub flow: FlowKey,
    /// `nat_reply` found the reply's client flow on another target (kept
    /// in memory, not a register: see `nat_reply`).
    pub other_target: u32,
    pub snat_key: SnatKey,
    pub snat_val: SnatVal,
    /// This CPU's new-flow count in the second from `flood_window_ns`.
    pub flood_window_ns: u64,
    pub flood_count: u32,
    /// An `ACL` lookup's key (28 bytes: off the stack).
    pub acl: Key<AclData>,
    /// `fwd::on_target_side`'s question and answer.
    pub side: fwd::SideQ,
    /// Whether the new flow is tracked (see `fwd::to_backend`).
    pub track: u32,
    /// The target of a reply translated without state (see `fwd::adopt`).
    pub stateless_backend: u32,
    /// This CPU's "too big" errors in the second from `toobig_window_ns`.
    pub toobig_window_ns: u64,
    pub toobig_count: u32,
}
#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);
/// Scratch for `bpf_fib_lookup` parameters (saves 64 bytes of stack).
#[map]
static FIB_SCRATCH: PerCpuArray<aya_ebpf::bindings::bpf_fib_lookup> =
    PerCpuArray::with_max_entries(1, 0);
#[map]
static REASONS: PerCpuArray<u64> = PerCpuArray::with_max_entries(REASON_COUNT, 0);

/// Tail-call targets (slot `JUMP_ICMP`: `lb_icmp`, `JUMP_REPLY`:
/// `lb_reply`), set by the loader.
#[map]
static JUMP: ProgramArray = ProgramArray::with_max_entries(2, 0);
pub(crate) const JUMP_ICMP: u32 = 0;
pub(crate) const JUMP_REPLY: u32 = 1;

#[inline(always)]
pub(crate) fn count(r: Reason) {
    if let Some(c) = REASONS.get_ptr_mut(r as u32) {
        unsafe { *c += 1 };
    }
}

#[xdp]
pub fn lb_xdp(ctx: XdpContext) -> u32 {
    match fwd::try_lb(&ctx) {
        Ok(action) => action,
        Err(reason) => {
            count(reason);
            XDP_PASS
        }
    }
}

/// Replies from targets (tail-called from `lb_xdp`).
#[xdp]
pub fn lb_reply(ctx: XdpContext) -> u32 {
    match fwd::try_reply(&ctx) {
        Ok(action) => action,
        Err(reason) => {
            count(reason);
            XDP_PASS
        }
    }
}

/// ICMP errors of tracked flows (tail-called from `lb_xdp`).
#[xdp]
pub fn lb_icmp(ctx: XdpContext) -> u32 {
    match icmp::try_icmp(&ctx) {
        Ok(action) => action,
        Err(reason) => {
            count(reason);
            XDP_PASS
        }
    }
}

/// Do-nothing program: the benchmark baseline, and the peer-side program that
/// veth needs before it delivers redirected frames.
#[xdp]
pub fn xdp_pass(_ctx: XdpContext) -> u32 {
    XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
