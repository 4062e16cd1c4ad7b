//! A bounded spoofed-SYN flood: raw IPv4 TCP SYNs to a VIP from random
//! sources in 198.18.0.0/15 (the benchmarking range, RFC 2544) and random
//! ports, sent from the calling thread's namespace.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Sends up to `n` SYNs to `dst` within `max`; returns how many went out.
pub fn syn_flood(dst: SocketAddrV4, n: usize, max: Duration) -> Result<usize> {
    // IPPROTO_RAW: the header is ours (IP_HDRINCL), the source forged.
    let s = Socket::new(
        Domain::IPV4,
        Type::RAW,
        Some(Protocol::from(libc::IPPROTO_RAW)),
    )
    .context("raw socket (needs CAP_NET_RAW)")?;
    let to = SockAddr::from(dst);
    let start = Instant::now();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut buf = Vec::with_capacity(64);
    let mut sent = 0;
    while sent < n && start.elapsed() < max {
        // xorshift: cheap, and the same sequence every run.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let src = Ipv4Addr::from(0xc612_0000 | (x as u32 & 0x1_ffff));
        let sport = 1024 + (x >> 32) as u16 % 60000;
        buf.clear();
        etherparse::PacketBuilder::ipv4(src.octets(), dst.ip().octets(), 64)
            .tcp(sport, dst.port(), (x >> 16) as u32, 64240)
            .syn()
            .write(&mut buf, &[])
            .expect("a SYN fits");
        match s.send_to(&buf, &to) {
            Ok(_) => sent += 1,
            // The qdisc is full: let it drain.
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                std::thread::sleep(Duration::from_micros(50))
            }
            Err(e) => return Err(e).context("sending a SYN"),
        }
    }
    Ok(sent)
}
