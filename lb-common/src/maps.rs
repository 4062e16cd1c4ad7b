//! Map keys and values. Every struct is `#[repr(C)]` with explicit padding and
//! a size assertion (Cilium style) so the kernel and user views cannot drift.
//! Addresses and ports are in network byte order; an IPv4 address sits in
//! `addr[0]` with the other words zero.

use core::mem::size_of;

pub const AF_INET: u8 = 4;
pub const AF_INET6: u8 = 6;

pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// Map names, as the XDP object exports them (its statics carry these
/// names: aya's `#[map]` takes only a literal, so a host test checks the
/// object against this list).
pub mod names {
    pub const GLOBALS: &str = "GLOBALS";
    pub const VIPS: &str = "VIPS";
    pub const VIP_SLOTS: &str = "VIP_SLOTS";
    pub const PORTS: &str = "PORTS";
    pub const RING: &str = "RING";
    pub const BACKENDS: &str = "BACKENDS";
    pub const CONNTRACK: &str = "CONNTRACK";
    pub const CONNTRACK4: &str = "CONNTRACK4";
    pub const NAT_REVERSE: &str = "NAT_REVERSE";
    pub const SNAT: &str = "SNAT";
    pub const PASSTHROUGH: &str = "PASSTHROUGH";
    pub const VIP_STATS: &str = "VIP_STATS";
    pub const BACKEND_STATS: &str = "BACKEND_STATS";
    pub const REASONS: &str = "REASONS";
    pub const BACKEND_HEALTH: &str = "BACKEND_HEALTH";
    pub const FIB_CACHE: &str = "FIB_CACHE";
    pub const SCRATCH: &str = "SCRATCH";
    pub const FIB_SCRATCH: &str = "FIB_SCRATCH";
    pub const JUMP: &str = "JUMP";
    pub const ACL: &str = "ACL";
    pub const TX_PORTS: &str = "TX_PORTS";
    pub const VIP_ADDRS: &str = "VIP_ADDRS";
    pub const ADDR_BITS: &str = "ADDR_BITS";
    pub const DIRECT_SLOTS: &str = "DIRECT_SLOTS";

    /// Maps that outlive the daemon: everything but the next-hop cache,
    /// the per-CPU scratch space and the allow and deny lists (written
    /// before the program is attached), which belong to one program
    /// instance. The tail-call table is pinned: the kernel empties a
    /// program array when its last file descriptor closes, and the reply
    /// path is a tail call.
    pub const PINNED: [&str; 17] = [
        GLOBALS,
        VIPS,
        VIP_SLOTS,
        PORTS,
        RING,
        BACKENDS,
        CONNTRACK,
        CONNTRACK4,
        NAT_REVERSE,
        SNAT,
        PASSTHROUGH,
        VIP_STATS,
        BACKEND_STATS,
        REASONS,
        BACKEND_HEALTH,
        JUMP,
        DIRECT_SLOTS,
    ];

    /// Every map of the object: the pinned ones, then those of one
    /// program instance.
    pub const ALL: [&str; 24] = {
        let own = [
            FIB_CACHE,
            SCRATCH,
            FIB_SCRATCH,
            ACL,
            TX_PORTS,
            VIP_ADDRS,
            ADDR_BITS,
        ];
        let mut all = [""; 24];
        let mut i = 0;
        while i < all.len() {
            all[i] = if i < PINNED.len() {
                PINNED[i]
            } else {
                own[i - PINNED.len()]
            };
            i += 1;
        }
        all
    };
}

/// Default Maglev table size (prime).
pub const DEFAULT_RING_SIZE: u32 = 65537;
/// Rings per VIP: zone ring and all-zones ring, each double-buffered.
pub const RINGS_PER_VIP: u32 = 4;

/// Key of `VIPS`: the listener's address, port and protocol.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VipKey {
    pub addr: [u32; 4],
    pub port: u16,
    pub proto: u8,
    pub family: u8,
}
const _: () = assert!(size_of::<VipKey>() == 20);

pub const VIP_F_STICKY: u32 = 1;
pub const VIP_F_CROSS_ZONE: u32 = 2;
pub const VIP_F_SNAT: u32 = 4;
/// A target's RST to a flow's first SYN is dropped and the client's SYN
/// retransmission goes to another target (`target_group.syn_redispatch`).
pub const VIP_F_REDISPATCH: u32 = 8;

/// Value of `VIPS`. `ring_zone` / `ring_all` are ring ids into `RING`; the
/// control plane flips them after writing a spare ring.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipMeta {
    pub vip_id: u32,
    pub flags: u32,
    /// Ring of this gateway's zone (used when cross-zone is off).
    pub ring_zone: u32,
    /// Ring of all zones (cross-zone on, or the zone ring is empty).
    pub ring_all: u32,
    /// Source address for `snat` mode (same family as the VIP's targets).
    pub snat_addr: [u32; 4],
}
const _: () = assert!(size_of::<VipMeta>() == 32);

/// Backend may keep its flows (registered and healthy, or draining).
pub const BACKEND_F_VALID: u32 = 1;

/// Value of `BACKENDS`, indexed by backend id (0 = none).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backend {
    pub addr: [u32; 4],
    pub port: u16,
    pub family: u8,
    /// Consecutive failed connection attempts (SYNs refused or unanswered)
    /// after which the program gives the target no new flows; 0: off.
    pub passive_failures: u8,
    pub flags: u32,
    /// Hash of the target group's name: a restarted daemon maps pinned
    /// backend ids back to its config's targets with it.
    pub tg_hash: u32,
    /// While draining: when the drain ends, in CLOCK_BOOTTIME seconds (a
    /// restarted daemon adopts the drain with its remaining time); else 0.
    pub drain_until_s: u32,
}
const _: () = assert!(size_of::<Backend>() == 32);

/// `Backend::tg_hash` of a target group name.
pub fn tg_hash(name: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h = (h ^ b as u32).wrapping_mul(0x0100_0193);
    }
    h
}

/// Conntrack key: the flow as the client sent it (client -> VIP).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src: [u32; 4],
    pub dst: [u32; 4],
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<FlowKey>() == 40);

/// Conntrack key of an IPv4 flow (`CONNTRACK4`): `FlowKey`'s words 0, 4,
/// 8 and 9. A 16-byte key halves the hash and compare of every lookup
/// (jhash over the 40-byte key was a fifth of a conntrack hit).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey4 {
    pub src: u32,
    pub dst: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<FlowKey4>() == 16);

impl FlowKey {
    /// Written as ten 32-bit words: the map's hash reads the key a word at
    /// a time, and a word made of 16- and 8-bit stores just before stalls
    /// the load (no store forwarding), once per word, on every lookup.
    #[inline(always)]
    pub fn new(
        src: [u32; 4],
        dst: [u32; 4],
        sport: u16,
        dport: u16,
        proto: u8,
        family: u8,
    ) -> FlowKey {
        let (s, d) = (sport.to_ne_bytes(), dport.to_ne_bytes());
        let w = [
            src[0],
            src[1],
            src[2],
            src[3],
            dst[0],
            dst[1],
            dst[2],
            dst[3],
            u32::from_ne_bytes([s[0], s[1], d[0], d[1]]),
            u32::from_ne_bytes([proto, family, 0, 0]),
        ];
        // Safety: FlowKey is repr(C), 40 bytes of u32-aligned fields with
        // no implicit padding, and every bit pattern is a valid key.
        unsafe { core::mem::transmute::<[u32; 10], FlowKey>(w) }
    }

    /// IPv4 flows live in `CONNTRACK4`, IPv6 ones in `CONNTRACK`.
    #[inline(always)]
    pub fn is_v4(&self) -> bool {
        self.family == AF_INET
    }

    /// The `CONNTRACK4` key of an IPv4 flow, copied a word at a time
    /// (`new` wrote them as words, so the loads are forwarded).
    #[inline(always)]
    pub fn v4(&self) -> FlowKey4 {
        // Safety: both are repr(C) arrays of u32-aligned words with no
        // implicit padding, and every bit pattern is valid.
        let w = unsafe { &*(self as *const FlowKey as *const [u32; 10]) };
        unsafe { core::mem::transmute::<[u32; 4], FlowKey4>([w[0], w[4], w[8], w[9]]) }
    }
}

impl FlowKey4 {
    /// The flow as a `FlowKey` (what the daemon lists and matches on).
    pub fn widen(&self) -> FlowKey {
        FlowKey {
            src: [self.src, 0, 0, 0],
            dst: [self.dst, 0, 0, 0],
            sport: self.sport,
            dport: self.dport,
            proto: self.proto,
            family: self.family,
            _pad: [0; 2],
        }
    }
}

/// TCP FIN or RST seen: the entry lives only `closing_timeout` more.
pub const FLOW_F_CLOSING: u32 = 1;
/// Opened by a SYN, and the target has not answered yet (`nat`/`snat`,
/// whose replies pass here): its first answer is passive health.
pub const FLOW_F_OPENING: u32 = 2;
/// The target refused the first SYN and its RST was dropped: the client's
/// retransmission is picked again, elsewhere. Lives `closing_timeout`.
pub const FLOW_F_REFUSED: u32 = 4;
/// Picked although every candidate was to be avoided: a refusal reaches
/// the client (redispatch would only delay its error).
pub const FLOW_F_LAST_RESORT: u32 = 8;
/// Opened by a SYN, and the client has not sent its handshake's ACK yet
/// (a spoofed SYN never does): lives only `tcp_syn_timeout`.
pub const FLOW_F_HALF_OPEN: u32 = 16;

/// Conntrack value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowState {
    pub backend_id: u32,
    pub flags: u32,
    /// `bpf_ktime_get_ns` of the last packet.
    pub last_seen_ns: u64,
    /// Allocated source port (network order) in `snat` mode, else 0.
    pub snat_port: u16,
    /// The listener's idle timeout when the flow opened (its
    /// `tcp_idle_timeout`), so every reader of the entry (hit path, SNAT
    /// port reuse, the daemon's walks) ages it alike; 0: the gateway's.
    pub idle_timeout_s: u16,
    /// The VIP's slot in `VIP_SLOTS`, so a hit needs no `VIPS` lookup.
    pub vip_id: u32,
}
const _: () = assert!(size_of::<FlowState>() == 24);

/// Value of `VIP_SLOTS` (array indexed by vip_id): the VIP's key and meta.
/// An empty slot has family 0, which no packet matches.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipSlot {
    pub key: VipKey,
    /// The listener's idle timeout (1-6000 s), copied into its new flows;
    /// 0: the gateway's. (Was padding: pinned slots of older builds read 0.)
    pub idle_timeout_s: u16,
    pub _pad: u16,
    pub meta: VipMeta,
}
const _: () = assert!(size_of::<VipSlot>() == 56);

/// Bits of `PORTS` (array indexed by port, host order): which hash maps a
/// packet with that destination (VIP) or source (target) port may be in.
/// Everything else skips the hash lookups.
pub const PORT_VIP_TCP: u8 = 1;
pub const PORT_VIP_UDP: u8 = 2;
pub const PORT_TARGET_TCP: u8 = 4;
pub const PORT_TARGET_UDP: u8 = 8;

/// Key of `NAT_REVERSE`: a target as it answers in `nat` mode.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ReverseKey {
    pub addr: [u32; 4],
    pub port: u16,
    pub proto: u8,
    pub family: u8,
}
const _: () = assert!(size_of::<ReverseKey>() == 20);

/// `nat` listeners one target port may serve (NLB lets a target sit in
/// several target groups); `lb check` refuses more.
pub const REVERSE_SLOTS: usize = 4;

/// One listener a target answers for: the VIP's slot and the target's
/// backend id in that listener's group. `backend_id == 0`: unused.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReverseEntry {
    pub vip_id: u32,
    pub backend_id: u32,
}
const _: () = assert!(size_of::<ReverseEntry>() == 8);

/// Value of `NAT_REVERSE`: the listeners whose flows a reply from this
/// target may belong to. A reply is translated only when one of them has
/// the flow (local conntrack), or, for a flow another gateway set up, when
/// that listener's ring picks this target for the reply's client tuple.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReverseVal {
    pub entries: [ReverseEntry; REVERSE_SLOTS],
}
const _: () = assert!(size_of::<ReverseVal>() == 32);

/// Value of `PASSTHROUGH` (key: a `FlowKey` client -> target address and
/// port): a non-VIP flow to a target port that this gateway forwarded, so
/// its replies are never mistaken for a VIP flow's.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Passthrough {
    pub last_seen_ns: u64,
}
const _: () = assert!(size_of::<Passthrough>() == 8);

/// Key of `SNAT`: a reply to a source-NATed flow (target -> gateway).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SnatKey {
    pub gw_addr: [u32; 4],
    pub backend_addr: [u32; 4],
    pub gw_port: u16,
    pub backend_port: u16,
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<SnatKey>() == 40);

/// Value of `SNAT`: the original flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnatVal {
    pub client_addr: [u32; 4],
    pub vip_addr: [u32; 4],
    pub client_port: u16,
    pub vip_port: u16,
    pub vip_id: u32,
    /// Bumped by compare-and-swap when a CPU takes over a free port, so two
    /// CPUs can never both take it (u64: the BPF target's only atomic).
    pub gen: u64,
}
const _: () = assert!(size_of::<SnatVal>() == 48);

/// Single entry of `GLOBALS`: settings of the whole data plane.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Globals {
    /// Maglev table size M (prime). Ring `r` is `RING[r*M .. (r+1)*M]`.
    pub ring_size: u32,
    /// SNAT source port range, host order, inclusive.
    pub snat_port_min: u16,
    pub snat_port_max: u16,
    pub tcp_timeout_s: u32,
    pub udp_timeout_s: u32,
    pub closing_timeout_s: u32,
    /// How long a cached next hop (FIB result) is used; 0 disables the cache.
    pub fib_cache_ms: u32,
    /// New flows each CPU tracks per second at most (`new_flow_limit`
    /// shared out); above it they are balanced but not tracked. 0: no cap.
    pub new_flows_per_cpu: u32,
    /// Steps between SNAT port probes, coprime with the range
    /// (`snat::strides`), so every probe of a flow is a distinct port.
    pub snat_strides: [u32; crate::snat::STRIDES],
    /// Life of a TCP flow until the client completes the handshake.
    pub syn_timeout_s: u32,
    /// The flow hash's secret key (`hash_seed`), so clients cannot aim
    /// flows at one target.
    pub hash_key: [u32; 2],
    /// `GLOBAL_F_*`.
    pub flags: u32,
}
const _: () = assert!(size_of::<Globals>() == 76);

/// A reply is translated only when it arrives on the interface the FIB
/// says leads to its target (`gateway.reply_source_check`).
pub const GLOBAL_F_REPLY_SIDE: u32 = 1;
/// Echo requests to a VIP's address are answered (`gateway.answer_ping`).
pub const GLOBAL_F_PING: u32 = 2;

/// Key of `VIP_ADDRS`: a VIP's address, whatever its ports.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VipAddr {
    pub addr: [u32; 4],
    pub family: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(size_of::<VipAddr>() == 20);

impl Default for Globals {
    fn default() -> Self {
        Globals {
            ring_size: DEFAULT_RING_SIZE,
            snat_port_min: 20000,
            snat_port_max: 32767,
            // NLB: TCP idle timeout 350 s, UDP 120 s.
            tcp_timeout_s: 350,
            udp_timeout_s: 120,
            closing_timeout_s: 10,
            fib_cache_ms: 1000,
            new_flows_per_cpu: 0,
            snat_strides: crate::snat::strides(32767 - 20000 + 1),
            syn_timeout_s: 5,
            hash_key: [0; 2],
            flags: GLOBAL_F_REPLY_SIDE | GLOBAL_F_PING,
        }
    }
}

/// Slots of `FIB_CACHE` (per CPU, direct-mapped by destination hash).
pub const FIB_CACHE_SLOTS: u32 = 4096;
// Slots are the top bits of `addr_hash`.
const _: () = assert!(FIB_CACHE_SLOTS.is_power_of_two() && ADDR_SLOTS.is_power_of_two());

/// A cached next hop: what `bpf_fib_lookup` answered for `dst`, and the
/// path MTU, so larger packets still get the real lookup (and its error).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FibCacheEntry {
    pub dst: [u32; 4],
    pub expires_ns: u64,
    pub ifindex: u32,
    pub mtu: u16,
    pub family: u8,
    pub _pad: u8,
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
    pub _pad2: [u8; 4],
}
const _: () = assert!(size_of::<FibCacheEntry>() == 48);

/// Per-VIP and per-backend counters (per CPU): what went to targets, and
/// (per VIP) what came back, with TCP resets each way (CloudWatch's
/// ProcessedPackets/Bytes, TCP_Client_Reset_Count, TCP_Target_Reset_Count).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
    /// Replies translated towards clients (VIP counters only).
    pub reply_packets: u64,
    pub reply_bytes: u64,
    /// TCP RSTs from clients, and from targets (VIP counters only).
    pub client_resets: u64,
    pub target_resets: u64,
    /// New flows refused by the allow or deny lists (VIP counters only;
    /// NLB's SecurityGroupBlockedFlowCount).
    pub blocked: u64,
}
const _: () = assert!(size_of::<Counters>() == 64);

impl Counters {
    /// The sum of two (CPUs, planes).
    pub fn add(&mut self, o: &Counters) {
        self.packets += o.packets;
        self.bytes += o.bytes;
        self.new_flows += o.new_flows;
        self.reply_packets += o.reply_packets;
        self.reply_bytes += o.reply_bytes;
        self.client_resets += o.client_resets;
        self.target_resets += o.target_resets;
        self.blocked += o.blocked;
    }
}

/// The listener has an allow list (`listener.allow`): only its sources
/// open flows.
pub const VIP_F_ALLOW_LIST: u32 = 16;
/// The gateway has a deny list (`gateway.deny`), checked for every VIP.
pub const VIP_F_DENY_LIST: u32 = 32;

/// Entries of `TX_PORTS` (indexed by ifindex; a higher one is never
/// transmitted on by XDP).
pub const TX_PORTS_SIZE: u32 = 65536;

/// Slots of `ADDR_BITS`, a filter on addresses: the slot `addr_slot`
/// gives holds `ADDR_F_*` bits for what an address may be. Ordinary traffic
/// on a VIP's or a target's port is passed without hash lookups: a packet
/// to a VIP port whose destination is no VIP's skips the conntrack and VIP
/// lookups, one from a target port whose source is no target's skips the
/// reply path, one to a target port whose destination is no target's skips
/// the direct-flow check. A collision only costs those lookups; 65536 slots
/// keep it rare.
pub const ADDR_SLOTS: u32 = 65536;
/// Some VIP may have the address.
pub const ADDR_F_VIP: u8 = 1;
/// Some `nat` target (one in `NAT_REVERSE`) may have the address.
pub const ADDR_F_TARGET: u8 = 2;

/// `ADDR_BITS`'s slot for an address (the XDP program and the daemon both
/// use this).
#[inline(always)]
pub fn addr_slot(addr: &[u32; 4]) -> u32 {
    addr_hash(addr) >> (32 - ADDR_SLOTS.trailing_zeros())
}

/// A direct-mapped table's hash of an address (the address filter, the
/// next-hop cache): Fibonacci hashing of the folded words, whose top bits
/// are the slot. A few instructions where a murmur round per word is not
/// needed (a collision costs a lookup, and no one gains by aiming at one).
#[inline(always)]
pub fn addr_hash(addr: &[u32; 4]) -> u32 {
    let x = addr[0] ^ addr[1].rotate_left(8) ^ addr[2].rotate_left(16) ^ addr[3].rotate_left(24);
    x.wrapping_mul(0x9e37_79b1)
}

/// Entries of `ACL` (allow-list and deny-list prefixes, over all listeners).
pub const MAX_ACL_ENTRIES: u32 = 16384;

/// `AclData::scope` of the gateway's deny list (a listener's allow list
/// has its vip_id).
pub const ACL_GATEWAY: u32 = u32::MAX;
/// Bits of an `ACL` key before the address (scope and family), which every
/// entry's prefix covers.
pub const ACL_SCOPE_BITS: u32 = 40;

/// Data of an `ACL` key (an LPM trie, longest prefix first): the list it
/// belongs to, the family, and the address; its prefix length is
/// `ACL_SCOPE_BITS` plus the CIDR's. The value is unused (1).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AclData {
    /// The vip_id, or `ACL_GATEWAY`, big-endian: the trie matches bits
    /// from the first byte on.
    pub scope: [u8; 4],
    pub family: u8,
    pub addr: [u8; 16],
    pub _pad: [u8; 3],
}
const _: () = assert!(size_of::<AclData>() == 24);

impl AclData {
    /// The key data of `addr` (network-order words, as in `FlowKey`).
    #[inline(always)]
    pub fn of(scope: u32, family: u8, addr: &[u32; 4]) -> AclData {
        let mut a = [0u8; 16];
        let mut i = 0;
        while i < 4 {
            let w = addr[i].to_ne_bytes();
            a[i * 4] = w[0];
            a[i * 4 + 1] = w[1];
            a[i * 4 + 2] = w[2];
            a[i * 4 + 3] = w[3];
            i += 1;
        }
        AclData {
            scope: scope.to_be_bytes(),
            family,
            addr: a,
            _pad: [0; 3],
        }
    }
}

/// Value of `BACKEND_HEALTH` (indexed by backend id, mmapable): what the
/// program saw of a target's answers to new connections. The program
/// writes it (counters by atomic add); the daemon reads it and writes only
/// `suspect_until_ns` (to 0, when the active checks pass again).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendHealth {
    /// New flows avoid the target until then (`bpf_ktime_get_coarse_ns`).
    pub suspect_until_ns: u64,
    /// Failed connection attempts in a row (a SYN-ACK resets it).
    pub streak: u64,
    /// When the current streak began.
    pub streak_start_ns: u64,
    /// First SYNs answered by RST.
    pub refused: u64,
    /// SYNs retransmitted without an answer.
    pub unanswered: u64,
    /// First SYNs answered by SYN-ACK.
    pub answered: u64,
    /// Times the streak reached the threshold.
    pub trips: u64,
    /// The last trip's streak and how long it took (ns).
    pub trip_streak: u64,
    pub trip_span_ns: u64,
    /// When the target last answered a first SYN: a retransmitted SYN
    /// counts as unanswered only if the target answered nothing since the
    /// flow's first one (a client cannot fake failures of a live target by
    /// resending SYNs the target dropped, e.g. with a bad checksum).
    pub last_answer_ns: u64,
}
const _: () = assert!(size_of::<BackendHealth>() == 80);

/// Why the program passed or dropped a packet (index into `REASONS`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Not IPv4/IPv6 (ARP, LLDP, ...).
    NotIp = 0,
    /// Frame ends inside the Ethernet/VLAN header.
    TruncatedL2,
    /// Frame ends inside the IP header, or header fields are inconsistent.
    MalformedL3,
    /// Frame ends inside the TCP/UDP/ICMP header, or header fields are bad.
    MalformedL4,
    /// Non-first IPv4 fragment (ports unknown).
    Fragment,
    /// IPv6 extension chain longer than we follow.
    Ipv6ExtTooLong,
    /// IP protocol we do not balance.
    OtherProto,
    /// Destination is not a VIP (ordinary traffic).
    NotVip,
    /// VIP has no healthy backend in any ring: dropped.
    NoBackend,
    /// Next hop's neighbour unresolved: passed so the kernel resolves it.
    FibNoNeigh,
    /// FIB lookup failed otherwise (no route, blackhole, local...).
    FibFailed,
    /// No free SNAT port: dropped.
    SnatExhausted,
    /// A map update failed (map full beyond LRU, ...).
    MapError,
    /// ICMP error we could not tie to a tracked flow.
    IcmpUnmatched,
    /// Packets forwarded towards a target (informational).
    FwdToBackend,
    /// Reply packets reverse-translated towards a client (informational).
    FwdToClient,
    /// ICMP errors translated.
    IcmpTranslated,
    /// TTL / hop limit would expire here: passed so the kernel answers.
    TtlExceeded,
    /// A flow's SNAT port was taken by another flow: the flow starts anew.
    SnatLost,
    /// Replies translated without local state: the flow's target is the
    /// one the ring picks for it (set up by another gateway). Also counted
    /// in `FwdToClient`.
    ReplyStateless,
    /// Packets of non-VIP flows to or from a target port (clients reaching
    /// a target directly): passed untouched.
    DirectToTarget,
    /// A target's RST to a flow's first SYN, dropped: the client's
    /// retransmission goes to another target (`syn_redispatch`).
    SynRedispatch,
    /// SYN retransmissions of flows whose target had not answered, sent to
    /// another target (`syn_redispatch`).
    SynRetryMoved,
    /// TCP packets other than a SYN without a flow (a connection set up
    /// through another gateway, or a forged ACK): forwarded to the target
    /// the ring picks, not tracked (only a SYN creates TCP state).
    NotSynUntracked,
    /// New flows above `new_flow_limit` (a flood): forwarded to the target
    /// the ring picks, not tracked.
    FloodUntracked,
    /// A `snat` flow that may not be tracked (a TCP packet other than a
    /// SYN without a flow, or above `new_flow_limit`): dropped, since SNAT
    /// needs a port, and so state.
    SnatUntracked,
    /// New flows refused by the listener's allow list or the gateway's
    /// deny list: dropped (and counted per listener).
    AclBlocked,
    /// A packet with a target's source address and port that arrived on
    /// another interface than the one leading to the target (forged from
    /// the client side): not translated, passed untouched.
    ReplyWrongSide,
    /// Packets too big for the next hop (IPv6, or IPv4 with Don't
    /// Fragment) answered here with ICMP "fragmentation needed" / "packet
    /// too big", quoting the packet as its sender sent it.
    TooBigSent,
    /// Such errors past the per-CPU rate (100/s): the packet dropped.
    TooBigLimited,
    /// Translated packets handed to the kernel to forward, their Ethernet
    /// header untouched: a VLAN-tagged frame (the kernel maps the tag to
    /// its device), or a next hop XDP cannot transmit on (a device lb is
    /// not attached to natively: a VLAN device, a bridge).
    KernelForwards,
    /// Echo requests to a VIP's address answered (`gateway.answer_ping`).
    EchoAnswered,
    /// Connections set up through another gateway, tracked here once their
    /// target answered (data or an ACK from the target's side).
    Adopted,
}

pub const REASON_COUNT: u32 = 33;

impl Reason {
    /// Every reason, in index order.
    pub const ALL: [Reason; REASON_COUNT as usize] = [
        Reason::NotIp,
        Reason::TruncatedL2,
        Reason::MalformedL3,
        Reason::MalformedL4,
        Reason::Fragment,
        Reason::Ipv6ExtTooLong,
        Reason::OtherProto,
        Reason::NotVip,
        Reason::NoBackend,
        Reason::FibNoNeigh,
        Reason::FibFailed,
        Reason::SnatExhausted,
        Reason::MapError,
        Reason::IcmpUnmatched,
        Reason::FwdToBackend,
        Reason::FwdToClient,
        Reason::IcmpTranslated,
        Reason::TtlExceeded,
        Reason::SnatLost,
        Reason::ReplyStateless,
        Reason::DirectToTarget,
        Reason::SynRedispatch,
        Reason::SynRetryMoved,
        Reason::NotSynUntracked,
        Reason::FloodUntracked,
        Reason::SnatUntracked,
        Reason::AclBlocked,
        Reason::ReplyWrongSide,
        Reason::TooBigSent,
        Reason::TooBigLimited,
        Reason::KernelForwards,
        Reason::EchoAnswered,
        Reason::Adopted,
    ];

    /// The `reason` label of `lb_xdp_packets_total`.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::NotIp => "not_ip",
            Reason::TruncatedL2 => "truncated_l2",
            Reason::MalformedL3 => "malformed_l3",
            Reason::MalformedL4 => "malformed_l4",
            Reason::Fragment => "fragment",
            Reason::Ipv6ExtTooLong => "ipv6_ext_too_long",
            Reason::OtherProto => "other_proto",
            Reason::NotVip => "not_vip",
            Reason::NoBackend => "no_backend",
            Reason::FibNoNeigh => "fib_no_neigh",
            Reason::FibFailed => "fib_failed",
            Reason::SnatExhausted => "snat_exhausted",
            Reason::MapError => "map_error",
            Reason::IcmpUnmatched => "icmp_unmatched",
            Reason::FwdToBackend => "fwd_to_backend",
            Reason::FwdToClient => "fwd_to_client",
            Reason::IcmpTranslated => "icmp_translated",
            Reason::TtlExceeded => "ttl_exceeded",
            Reason::SnatLost => "snat_lost",
            Reason::ReplyStateless => "reply_stateless",
            Reason::DirectToTarget => "direct_to_target",
            Reason::SynRedispatch => "syn_redispatch",
            Reason::SynRetryMoved => "syn_retry_moved",
            Reason::NotSynUntracked => "not_syn_untracked",
            Reason::FloodUntracked => "flood_untracked",
            Reason::SnatUntracked => "snat_untracked",
            Reason::AclBlocked => "acl_blocked",
            Reason::ReplyWrongSide => "reply_wrong_side",
            Reason::TooBigSent => "too_big_sent",
            Reason::TooBigLimited => "too_big_limited",
            Reason::KernelForwards => "kernel_forwards",
            Reason::EchoAnswered => "echo_answered",
            Reason::Adopted => "adopted",
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all are repr(C), Copy, with explicit padding and no pointers.
    unsafe impl aya::Pod for VipKey {}
    unsafe impl aya::Pod for VipMeta {}
    unsafe impl aya::Pod for VipSlot {}
    unsafe impl aya::Pod for Backend {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for FlowKey4 {}
    unsafe impl aya::Pod for FlowState {}
    unsafe impl aya::Pod for ReverseKey {}
    unsafe impl aya::Pod for ReverseVal {}
    unsafe impl aya::Pod for Passthrough {}
    unsafe impl aya::Pod for SnatKey {}
    unsafe impl aya::Pod for SnatVal {}
    unsafe impl aya::Pod for Globals {}
    unsafe impl aya::Pod for Counters {}
    unsafe impl aya::Pod for FibCacheEntry {}
    unsafe impl aya::Pod for BackendHealth {}
    unsafe impl aya::Pod for AclData {}
    unsafe impl aya::Pod for VipAddr {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The word-built key is the same bytes as the one built by field.
    #[test]
    fn a_flow_key_built_by_words_equals_the_one_built_by_fields() {
        let (src, dst) = ([0x0a00_0002, 1, 2, 3], [0x0a64_0001, 4, 5, 6]);
        let k = FlowKey::new(src, dst, 0x9c40, 0x5000, 6, 10);
        assert_eq!(
            k,
            FlowKey {
                src,
                dst,
                sport: 0x9c40,
                dport: 0x5000,
                proto: 6,
                family: 10,
                _pad: [0; 2],
            }
        );
    }

    /// The IPv4 table's key holds every field of an IPv4 flow's key: it
    /// widens back to the same key (what the daemon lists and deletes).
    #[test]
    fn an_ipv4_flow_key_narrows_to_its_fields_and_widens_back() {
        let k = FlowKey::new(
            [0x0a00_0002, 0, 0, 0],
            [0x0a64_0001, 0, 0, 0],
            0x9c40,
            0x5000,
            17,
            AF_INET,
        );
        let n = k.v4();
        assert_eq!(
            n,
            FlowKey4 {
                src: 0x0a00_0002,
                dst: 0x0a64_0001,
                sport: 0x9c40,
                dport: 0x5000,
                proto: 17,
                family: AF_INET,
                _pad: [0; 2],
            }
        );
        assert_eq!(n.widen(), k);
    }

    /// VIPs usually sit next to each other (one /24, one /64): such
    /// neighbours must not share a filter slot, or the filter would let
    /// most non-VIP traffic to their ports through.
    #[test]
    fn neighbouring_vip_addresses_take_distinct_filter_slots() {
        let v4 = |i: u32| [u32::from_be_bytes([203, 0, 113, i as u8]), 0, 0, 0];
        let v6 = |i: u32| [0x0db8_0120, 0, 0, (i << 24) | 1];
        for addr in [&v4 as &dyn Fn(u32) -> [u32; 4], &v6] {
            let mut slots = [0u32; 256];
            for (i, s) in slots.iter_mut().enumerate() {
                *s = addr_slot(&addr(i as u32));
                assert!(*s < ADDR_SLOTS);
            }
            slots.sort_unstable();
            assert!(slots.windows(2).all(|w| w[0] != w[1]), "{slots:?}");
        }
    }

    #[test]
    fn reasons_are_listed_in_index_order_with_distinct_names() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
            assert!(Reason::ALL[..i].iter().all(|o| o.name() != r.name()));
        }
    }
}
