//! Conntrack rules shared by the XDP program and host tests: when an entry
//! still holds its flow, when a packet continues it, and how its CLOSING
//! mark moves.

use crate::{Globals, FLOW_F_CLOSING, FLOW_F_HALF_OPEN, FLOW_F_REFUSED, PROTO_TCP};

pub const NS: u64 = 1_000_000_000;

/// TCP flag bits (byte 13 of the header).
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// Idle time after which an entry with `flags` no longer holds its flow:
/// the closing timeout once FIN or RST was seen (also a refusal dropped
/// for redispatch: the client retries within seconds, or never), the SYN
/// timeout until the handshake completes, else the idle timeout. `idle_s`
/// is the flow's own (its listener's `tcp_idle_timeout`, kept in the entry
/// when the flow opened); 0: the gateway's for its protocol.
#[inline(always)]
pub fn timeout_ns(g: &Globals, proto: u8, idle_s: u16, flags: u32) -> u64 {
    let s = if flags & (FLOW_F_CLOSING | FLOW_F_REFUSED) != 0 {
        g.closing_timeout_s
    } else if flags & FLOW_F_HALF_OPEN != 0 {
        g.syn_timeout_s
    } else if idle_s != 0 {
        idle_s as u32
    } else if proto == PROTO_TCP {
        g.tcp_timeout_s
    } else {
        g.udp_timeout_s
    };
    s as u64 * NS
}

/// The entry still holds its flow (and its SNAT port): fresh by its
/// timeout (`timeout_ns`).
#[inline(always)]
pub fn live(g: &Globals, proto: u8, idle_s: u16, flags: u32, age_ns: u64) -> bool {
    age_ns <= timeout_ns(g, proto, idle_s, flags)
}

/// A TCP SYN without ACK: the first packet of a connection.
#[inline(always)]
pub fn is_syn(proto: u8, tcp_flags: u8) -> bool {
    proto == PROTO_TCP && tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
}

/// A TCP FIN or RST: the flow is ending.
#[inline(always)]
pub fn is_closing(proto: u8, tcp_flags: u8) -> bool {
    proto == PROTO_TCP && tcp_flags & (TCP_FIN | TCP_RST) != 0
}

/// Whether a packet continues the flow of the entry it found (else it
/// starts a new flow, with a fresh pick). A SYN continues only a live flow
/// that is not closing (a retransmission); on a closing or expired entry it
/// is a new connection on a reused 5-tuple. Any other packet continues a
/// flow idle for less than the full timeout, even past the closing timeout:
/// a flow that still sends after a RST (a spoofed one) keeps its target.
#[inline(always)]
pub fn continues(g: &Globals, proto: u8, idle_s: u16, flags: u32, age_ns: u64, syn: bool) -> bool {
    if syn {
        flags & FLOW_F_CLOSING == 0 && live(g, proto, idle_s, flags, age_ns)
    } else {
        age_ns <= timeout_ns(g, proto, idle_s, 0)
    }
}

/// The entry's flags after a packet that continues it: FIN/RST marks it
/// closing; any other packet after the closing timeout clears the mark
/// (the flow is alive after all).
#[inline(always)]
pub fn next_flags(
    g: &Globals,
    proto: u8,
    idle_s: u16,
    flags: u32,
    age_ns: u64,
    closing_pkt: bool,
) -> u32 {
    if closing_pkt {
        flags | FLOW_F_CLOSING
    } else if flags & FLOW_F_CLOSING != 0 && !live(g, proto, idle_s, flags, age_ns) {
        flags & !FLOW_F_CLOSING
    } else {
        flags
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PROTO_UDP;

    const S: u64 = NS;

    #[test]
    fn syn_reopens_closing_and_expired_flows_only() {
        let g = Globals::default();
        let t = PROTO_TCP;
        assert!(continues(&g, t, 0, 0, S, true), "SYN retransmission");
        assert!(
            !continues(&g, t, 0, FLOW_F_CLOSING, S, true),
            "SYN after FIN/RST"
        );
        assert!(
            !continues(&g, t, 0, 0, 351 * S, true),
            "SYN on an expired flow"
        );
        assert!(
            continues(&g, t, 0, FLOW_F_CLOSING, 11 * S, false),
            "data after a RST"
        );
        assert!(
            !continues(&g, t, 0, 0, 351 * S, false),
            "idle past the timeout"
        );
        assert!(continues(&g, PROTO_UDP, 0, 0, 119 * S, false));
        assert!(!continues(&g, PROTO_UDP, 0, 0, 121 * S, false));
    }

    #[test]
    fn closing_mark_is_set_and_cleared() {
        let g = Globals::default();
        let t = PROTO_TCP;
        assert_eq!(next_flags(&g, t, 0, 0, 0, true), FLOW_F_CLOSING);
        // The last ACK of a close keeps the mark.
        assert_eq!(
            next_flags(&g, t, 0, FLOW_F_CLOSING, S, false),
            FLOW_F_CLOSING
        );
        // Still sending past the closing timeout: alive.
        assert_eq!(next_flags(&g, t, 0, FLOW_F_CLOSING, 11 * S, false), 0);
    }

    #[test]
    fn a_closed_flow_frees_its_entry_after_the_closing_timeout() {
        let g = Globals::default();
        assert!(live(&g, PROTO_TCP, 0, FLOW_F_CLOSING, 9 * S));
        assert!(!live(&g, PROTO_TCP, 0, FLOW_F_CLOSING, 11 * S));
        assert!(live(&g, PROTO_TCP, 0, 0, 300 * S));
        assert!(!live(&g, PROTO_TCP, 0, FLOW_F_REFUSED, 11 * S));
        assert!(
            continues(&g, PROTO_TCP, 0, FLOW_F_REFUSED, S, true),
            "its retry"
        );
    }

    #[test]
    fn a_listeners_idle_timeout_replaces_the_gateways() {
        let g = Globals::default();
        let (t, u) = (PROTO_TCP, PROTO_UDP);
        assert!(!live(&g, t, 60, 0, 61 * S), "its own 60 s");
        assert!(live(&g, t, 6000, 0, 5999 * S), "its own 6000 s");
        assert!(live(&g, t, 0, 0, 349 * S), "0: the gateway's 350 s");
        assert!(!continues(&g, t, 60, 0, 61 * S, false));
        assert!(live(&g, u, 0, 0, 119 * S) && !live(&g, u, 0, 0, 121 * S));
        // Closing still ends a flow after the closing timeout.
        assert!(!live(&g, t, 6000, FLOW_F_CLOSING, 11 * S));
        assert_eq!(next_flags(&g, t, 6000, FLOW_F_CLOSING, 11 * S, false), 0);
    }

    #[test]
    fn a_half_open_flow_lives_the_syn_timeout() {
        let g = Globals::default();
        let t = PROTO_TCP;
        let half = crate::FLOW_F_OPENING | FLOW_F_HALF_OPEN;
        assert!(live(&g, t, 0, half, 4 * S));
        assert!(
            !live(&g, t, 6000, half, 6 * S),
            "5 s, whatever the idle timeout"
        );
        assert!(
            continues(&g, t, 0, half, 4 * S, true),
            "its SYN retransmission"
        );
        assert!(
            !continues(&g, t, 0, half, 6 * S, true),
            "a SYN after: a new pick"
        );
        assert!(
            continues(&g, t, 0, half, 6 * S, false),
            "a late ACK goes on"
        );
    }

    #[test]
    fn flags() {
        assert!(is_syn(PROTO_TCP, TCP_SYN));
        assert!(!is_syn(PROTO_TCP, TCP_SYN | TCP_ACK));
        assert!(!is_syn(PROTO_UDP, TCP_SYN));
        assert!(is_closing(PROTO_TCP, TCP_RST));
        assert!(is_closing(PROTO_TCP, TCP_FIN | TCP_ACK));
        assert!(!is_closing(PROTO_UDP, TCP_FIN));
    }
}
