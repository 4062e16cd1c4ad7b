//! Test packets, built with etherparse (never hand-typed hex).

use std::net::IpAddr;

use etherparse::PacketBuilder;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    /// TCP with flags: syn, ack, fin, rst.
    Tcp {
        syn: bool,
        ack: bool,
        fin: bool,
        rst: bool,
    },
    Udp,
}

pub const SYN: L4 = L4::Tcp {
    syn: true,
    ack: false,
    fin: false,
    rst: false,
};
pub const ACK: L4 = L4::Tcp {
    syn: false,
    ack: true,
    fin: false,
    rst: false,
};
pub const FIN: L4 = L4::Tcp {
    syn: false,
    ack: true,
    fin: true,
    rst: false,
};
pub const RST: L4 = L4::Tcp {
    syn: false,
    ack: false,
    fin: false,
    rst: true,
};

/// A TCP or UDP packet over Ethernet, IPv4 or IPv6.
#[derive(Clone, Debug)]
pub struct Spec {
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub l4: L4,
    pub ttl: u8,
    pub payload: Vec<u8>,
    /// IPv4 UDP sent without checksum (0).
    pub udp_no_csum: bool,
}

impl Spec {
    pub fn new(src: &str, sport: u16, dst: &str, dport: u16, l4: L4) -> Spec {
        Spec {
            smac: [2, 0, 0, 0, 0, 0xaa],
            dmac: [2, 0, 0, 0, 0, 0xbb],
            src: src.parse().expect("src"),
            dst: dst.parse().expect("dst"),
            sport,
            dport,
            l4,
            ttl: 64,
            payload: b"hello load balancer".to_vec(),
            udp_no_csum: false,
        }
    }

    pub fn macs(mut self, smac: [u8; 6], dmac: [u8; 6]) -> Spec {
        self.smac = smac;
        self.dmac = dmac;
        self
    }

    /// The same packet with another 4-tuple, TTL one lower, and new MACs:
    /// what a correct NAT hop emits.
    pub fn forwarded(
        &self,
        src: &str,
        sport: u16,
        dst: &str,
        dport: u16,
        smac: [u8; 6],
        dmac: [u8; 6],
    ) -> Spec {
        let mut s = self.clone();
        s.src = src.parse().expect("src");
        s.dst = dst.parse().expect("dst");
        s.sport = sport;
        s.dport = dport;
        s.ttl -= 1;
        s.smac = smac;
        s.dmac = dmac;
        s
    }

    pub fn build(&self) -> Vec<u8> {
        let eth = PacketBuilder::ethernet2(self.smac, self.dmac);
        let ip = match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), self.ttl),
            (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), self.ttl),
            _ => panic!("mixed address families"),
        };
        let mut out = Vec::new();
        match self.l4 {
            L4::Tcp { syn, ack, fin, rst } => {
                let mut b = ip.tcp(self.sport, self.dport, 1000, 64000);
                if syn {
                    b = b.syn();
                }
                if ack {
                    b = b.ack(1);
                }
                if fin {
                    b = b.fin();
                }
                if rst {
                    b = b.rst();
                }
                b.write(&mut out, &self.payload).expect("build tcp");
            }
            L4::Udp => {
                ip.udp(self.sport, self.dport)
                    .write(&mut out, &self.payload)
                    .expect("build udp");
                if self.udp_no_csum && self.src.is_ipv4() {
                    let at = 14 + 20 + 6;
                    out[at] = 0;
                    out[at + 1] = 0;
                }
            }
        }
        out
    }
}

/// An Ethernet frame with the given EtherType and body.
pub fn raw_frame(ethertype: u16, body: &[u8]) -> Vec<u8> {
    let mut v = vec![2, 0, 0, 0, 0, 0xbb, 2, 0, 0, 0, 0, 0xaa];
    v.extend_from_slice(&ethertype.to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// Offset helpers for corrupting packets in the malformed corpus.
pub mod off {
    pub const ETH: usize = 14;
    pub const V4_L4: usize = ETH + 20;
    pub const V6_L4: usize = ETH + 40;
}

/// Sets or clears IPv4 Don't Fragment in an Ethernet frame (etherparse
/// sets it), with the header checksum made again.
pub fn set_df(frame: &mut [u8], df: bool) {
    let ip = 14;
    if df {
        frame[ip + 6] |= 0x40;
    } else {
        frame[ip + 6] &= !0x40;
    }
    frame[ip + 10] = 0;
    frame[ip + 11] = 0;
    let ihl = (frame[ip] & 0x0f) as usize * 4;
    let c = !ones(&frame[ip..ip + ihl]);
    frame[ip + 10..ip + 12].copy_from_slice(&c.to_be_bytes());
}

/// The folded one's complement sum of `b`'s 16-bit words (an odd last
/// byte padded): 0xffff over data whose Internet checksum holds.
pub fn ones(b: &[u8]) -> u16 {
    let mut s: u32 = b
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32)
        .sum();
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}
