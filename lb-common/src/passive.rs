//! Passive health: what a flow's opening says about its target, from the
//! packets that pass the gateway anyway (`nat` and `snat`). A target that
//! refuses (RST to a first SYN) or ignores (a SYN retransmitted without an
//! answer) `passive_failures` connection attempts in a row gets no new
//! flows; with redispatch, the refused or unanswered client's next SYN is
//! picked again, elsewhere. Shared by the XDP program and host tests.

use crate::{
    flow::{NS, TCP_ACK, TCP_RST, TCP_SYN},
    FLOW_F_HALF_OPEN, FLOW_F_LAST_RESORT, FLOW_F_OPENING, FLOW_F_REFUSED,
};

/// A SYN this long after the flow's last packet is a retransmission (the
/// first comes after 1 s), not a duplicate on the wire.
pub const RETRY_MIN_NS: u64 = 200_000_000;

/// How long the program itself keeps new flows off a tripped target. The
/// daemon takes it out of the rings within a poll and puts it back when
/// its active checks pass; this bounds the mark when no daemon runs.
pub const SUSPECT_HOLD_NS: u64 = 10 * NS;

/// Ring slots tried after the first when it holds a target to avoid.
pub const REPICKS: u32 = 8;

/// What a target's packet says about a flow still opening.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// The flow was not opening (or the packet is not TCP).
    NotOpening,
    /// The target answered: the connection attempt succeeded.
    Answered,
    /// RST to the first SYN: the target refused it.
    Refused,
}

/// Classifies a target's packet for a flow with `flags`.
#[inline(always)]
pub fn reply(flags: u32, tcp_flags: u8) -> Reply {
    if flags & FLOW_F_OPENING == 0 {
        Reply::NotOpening
    } else if tcp_flags & TCP_RST != 0 {
        Reply::Refused
    } else {
        Reply::Answered
    }
}

/// A refusal that is dropped (and the flow marked `REFUSED`) rather than
/// passed to the client.
#[inline(always)]
pub fn redispatches(flags: u32, vip_redispatch: bool) -> bool {
    vip_redispatch && flags & FLOW_F_LAST_RESORT == 0
}

/// What a client's SYN on a tracked flow means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Count an unanswered SYN against the flow's target.
    pub unanswered: bool,
    /// Pick a new target for the flow, avoiding its current one.
    pub elsewhere: bool,
}

/// A SYN for a tracked flow with `flags`, `age_ns` after its last packet.
#[inline(always)]
pub fn retry(flags: u32, age_ns: u64, vip_redispatch: bool) -> Retry {
    if flags & FLOW_F_REFUSED != 0 {
        // Counted when the RST was dropped.
        return Retry {
            unanswered: false,
            elsewhere: true,
        };
    }
    let unanswered = flags & FLOW_F_OPENING != 0 && age_ns >= RETRY_MIN_NS;
    Retry {
        unanswered,
        elsewhere: unanswered && redispatches(flags, vip_redispatch),
    }
}

/// The flags of a new flow: a SYN opens it (the target's answer is then
/// watched, and the flow is half-open until the client's ACK);
/// `last_resort` when every candidate target was to be avoided.
#[inline(always)]
pub fn opening_flags(syn: bool, last_resort: bool) -> u32 {
    match (syn, last_resort) {
        (false, _) => 0,
        (true, false) => FLOW_F_OPENING | FLOW_F_HALF_OPEN,
        (true, true) => FLOW_F_OPENING | FLOW_F_HALF_OPEN | FLOW_F_LAST_RESORT,
    }
}

/// The flags after a client's packet that continues the flow: an ACK
/// means the handshake completed (its SYN-ACK may have come back through
/// another gateway), so the flow is no longer opening nor half-open.
#[inline(always)]
pub fn client_flags(flags: u32, syn: bool) -> u32 {
    if syn {
        flags
    } else {
        flags & !(FLOW_F_OPENING | FLOW_F_HALF_OPEN | FLOW_F_LAST_RESORT)
    }
}

/// An unanswered retry counts against the target only if the target
/// answered no first SYN since the flow's previous SYN.
#[inline(always)]
pub fn counts_unanswered(last_answer_ns: u64, previous_syn_ns: u64) -> bool {
    last_answer_ns < previous_syn_ns
}

/// The flags after the target's first answer (`OPENING` cleared; a
/// redispatched refusal marks the flow `REFUSED`).
#[inline(always)]
pub fn answered_flags(flags: u32, refused_and_dropped: bool) -> u32 {
    let f = flags & !(FLOW_F_OPENING | FLOW_F_LAST_RESORT);
    if refused_and_dropped {
        f | FLOW_F_REFUSED
    } else {
        f
    }
}

/// A failure that makes `streak` failures in a row trips the target
/// (`threshold` 0: passive health off); not again while it is suspect.
#[inline(always)]
pub fn trips(streak: u64, threshold: u8, suspect: bool) -> bool {
    threshold != 0 && streak >= threshold as u64 && !suspect
}

/// A SYN-ACK: the only TCP answer to a first SYN that is not a refusal.
#[inline(always)]
pub fn is_syn_ack(tcp_flags: u8) -> bool {
    tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_answers() {
        let o = FLOW_F_OPENING;
        assert_eq!(reply(o, TCP_RST | TCP_ACK), Reply::Refused);
        assert_eq!(reply(o, TCP_SYN | TCP_ACK), Reply::Answered);
        assert_eq!(
            reply(0, TCP_RST),
            Reply::NotOpening,
            "an established flow's RST"
        );
        assert_eq!(answered_flags(o, false), 0);
        assert_eq!(answered_flags(o | FLOW_F_LAST_RESORT, true), FLOW_F_REFUSED);
        assert!(redispatches(o, true));
        assert!(
            !redispatches(o | FLOW_F_LAST_RESORT, true),
            "nowhere else to go"
        );
        assert!(!redispatches(o, false));
    }

    #[test]
    fn retransmitted_syns() {
        let o = FLOW_F_OPENING;
        let r = retry(o, RETRY_MIN_NS, true);
        assert!(r.unanswered && r.elsewhere);
        let r = retry(o, RETRY_MIN_NS, false);
        assert!(r.unanswered && !r.elsewhere, "counted, stays");
        let r = retry(o, RETRY_MIN_NS - 1, true);
        assert!(!r.unanswered && !r.elsewhere, "a duplicate, not a retry");
        let r = retry(0, NS, true);
        assert!(!r.unanswered && !r.elsewhere, "answered before");
        let r = retry(FLOW_F_REFUSED, 0, false);
        assert!(!r.unanswered && r.elsewhere, "its refusal was dropped");
        let r = retry(o | FLOW_F_LAST_RESORT, NS, true);
        assert!(r.unanswered && !r.elsewhere);
    }

    #[test]
    fn trip_once_per_suspicion() {
        assert!(!trips(2, 3, false));
        assert!(trips(3, 3, false));
        assert!(trips(7, 3, false), "still failing after the hold");
        assert!(!trips(4, 3, true));
        assert!(!trips(100, 0, false), "off");
        assert_eq!(opening_flags(false, true), 0);
        let opened = opening_flags(true, false);
        assert_eq!(opened, FLOW_F_OPENING | FLOW_F_HALF_OPEN);
        assert_eq!(client_flags(opened, false), 0, "the client's ACK");
        assert_eq!(
            answered_flags(opened, false),
            FLOW_F_HALF_OPEN,
            "answered, still half-open: a spoofed SYN's target answers too"
        );
        assert_eq!(client_flags(FLOW_F_OPENING, true), FLOW_F_OPENING);
        assert!(counts_unanswered(5, 10), "nothing answered since");
        assert!(!counts_unanswered(12, 10), "it answers others: not dead");
    }
}
