//! Addresses as the maps hold them, and the address family the maps name.

use std::net::IpAddr;

use lb_common::{AF_INET, AF_INET6};

/// The address family, as the maps' `family` byte holds it (4 or 6; not the
/// socket API's AF_INET = 2, AF_INET6 = 10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(a: IpAddr) -> Family {
        if a.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }

    /// From a map's `family` byte; `None` for an empty slot.
    pub fn from_map(b: u8) -> Option<Family> {
        match b {
            AF_INET => Some(Family::V4),
            AF_INET6 => Some(Family::V6),
            _ => None,
        }
    }

    pub fn map_byte(self) -> u8 {
        match self {
            Family::V4 => AF_INET,
            Family::V6 => AF_INET6,
        }
    }
}

/// Address as the maps hold it: network-order words, IPv4 in word 0.
pub fn addr_words(a: IpAddr) -> ([u32; 4], u8) {
    match a {
        IpAddr::V4(v4) => ([u32::from_ne_bytes(v4.octets()), 0, 0, 0], AF_INET),
        IpAddr::V6(v6) => {
            let o = v6.octets();
            let mut w = [0u32; 4];
            for (i, c) in o.chunks_exact(4).enumerate() {
                w[i] = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]);
            }
            (w, AF_INET6)
        }
    }
}

/// The inverse of `addr_words`.
pub fn words_addr(w: &[u32; 4], family: u8) -> IpAddr {
    let mut o = [0u8; 16];
    for (i, x) in w.iter().enumerate() {
        o[i * 4..i * 4 + 4].copy_from_slice(&x.to_ne_bytes());
    }
    if Family::from_map(family) == Some(Family::V4) {
        IpAddr::from([o[0], o[1], o[2], o[3]])
    } else {
        IpAddr::from(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_words_are_network_order() {
        let (w, f) = addr_words("10.0.0.1".parse().unwrap());
        assert_eq!(Family::from_map(f), Some(Family::V4));
        assert_eq!(w[0].to_ne_bytes(), [10, 0, 0, 1]);
    }

    #[test]
    fn words_round_trip() {
        for a in ["10.0.0.1", "fd00::1:2"] {
            let ip: IpAddr = a.parse().unwrap();
            let (w, f) = addr_words(ip);
            assert_eq!(words_addr(&w, f), ip);
            assert_eq!(Family::of(ip).map_byte(), f);
        }
    }
}
