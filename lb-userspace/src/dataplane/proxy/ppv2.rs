//! PROXY protocol v2 header (haproxy.org/download/2.9/doc/proxy-protocol.txt)
//! so targets behind the proxy see the client's address, as NLB offers.

use std::net::SocketAddr;

const SIG: [u8; 12] = [
    0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
];

/// PP2_TYPE_AUTHORITY: the host name the client asked for (SNI).
pub const PP2_TYPE_AUTHORITY: u8 = 0x02;
/// PP2_TYPE_SSL: the client's connection was TLS; sub-TLVs follow.
pub const PP2_TYPE_SSL: u8 = 0x20;
pub const PP2_SUBTYPE_SSL_VERSION: u8 = 0x21;
const PP2_CLIENT_SSL: u8 = 0x01;

fn tlv(out: &mut Vec<u8>, ty: u8, value: &[u8]) {
    out.push(ty);
    out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    out.extend_from_slice(value);
}

/// The TLVs of a TLS listener's connection, as NLB sends them: the SNI as
/// PP2_TYPE_AUTHORITY, and PP2_TYPE_SSL (client flag SSL, verify 0: no
/// client certificate asked for) with the version ("TLSv1.3").
pub fn tls_tlvs(version: &str, sni: Option<&str>) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(sni) = sni {
        tlv(&mut out, PP2_TYPE_AUTHORITY, sni.as_bytes());
    }
    let mut ssl = vec![PP2_CLIENT_SSL, 0, 0, 0, 0];
    tlv(&mut ssl, PP2_SUBTYPE_SSL_VERSION, version.as_bytes());
    tlv(&mut out, PP2_TYPE_SSL, &ssl);
    out
}

/// The TLVs after the addresses of a parsed header (`b` the whole header):
/// (type, value), with PP2_TYPE_SSL's sub-TLVs listed after it.
pub fn parse_tlvs(b: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let start = match b.get(13) {
        Some(0x11) => 16 + 12,
        Some(0x21) => 16 + 36,
        _ => return Vec::new(),
    };
    let mut out = Vec::new();
    walk(b.get(start..).unwrap_or_default(), &mut out);
    out
}

fn walk(mut b: &[u8], out: &mut Vec<(u8, Vec<u8>)>) {
    while b.len() >= 3 {
        let len = u16::from_be_bytes([b[1], b[2]]) as usize;
        let Some(v) = b.get(3..3 + len) else { return };
        out.push((b[0], v.to_vec()));
        if b[0] == PP2_TYPE_SSL && v.len() >= 5 {
            walk(&v[5..], out);
        }
        b = &b[3 + len..];
    }
}

/// The v2 header for a TCP connection from `client` to `local` (the VIP),
/// with `tlvs` (encoded) after the addresses.
pub fn header_with(client: SocketAddr, local: SocketAddr, tlvs: &[u8]) -> Vec<u8> {
    let mut h = SIG.to_vec();
    h.push(0x21); // version 2, PROXY command
    match (client, local) {
        (SocketAddr::V4(c), SocketAddr::V4(l)) => {
            h.push(0x11); // AF_INET, STREAM
            h.extend_from_slice(&(12 + tlvs.len() as u16).to_be_bytes());
            h.extend_from_slice(&c.ip().octets());
            h.extend_from_slice(&l.ip().octets());
            h.extend_from_slice(&c.port().to_be_bytes());
            h.extend_from_slice(&l.port().to_be_bytes());
        }
        (c, l) => {
            let v6 = |a: SocketAddr| match a {
                SocketAddr::V4(a) => a.ip().to_ipv6_mapped(),
                SocketAddr::V6(a) => *a.ip(),
            };
            h.push(0x21); // AF_INET6, STREAM
            h.extend_from_slice(&(36 + tlvs.len() as u16).to_be_bytes());
            h.extend_from_slice(&v6(c).octets());
            h.extend_from_slice(&v6(l).octets());
            h.extend_from_slice(&c.port().to_be_bytes());
            h.extend_from_slice(&l.port().to_be_bytes());
        }
    }
    h.extend_from_slice(tlvs);
    h
}

/// Parses a v2 header at the start of `b`: (source, destination, length).
pub fn parse(b: &[u8]) -> Option<(SocketAddr, SocketAddr, usize)> {
    if b.len() < 16 || b[..12] != SIG || b[12] != 0x21 {
        return None;
    }
    let len = u16::from_be_bytes([b[14], b[15]]) as usize;
    let body = b.get(16..16 + len)?;
    let port = |i: usize| u16::from_be_bytes([body[i], body[i + 1]]);
    match b[13] {
        0x11 if len >= 12 => {
            let ip =
                |i: usize| std::net::Ipv4Addr::new(body[i], body[i + 1], body[i + 2], body[i + 3]);
            Some((
                SocketAddr::new(ip(0).into(), port(8)),
                SocketAddr::new(ip(4).into(), port(10)),
                16 + len,
            ))
        }
        0x21 if len >= 36 => {
            let ip = |i: usize| {
                let mut o = [0u8; 16];
                o.copy_from_slice(&body[i..i + 16]);
                std::net::Ipv6Addr::from(o)
            };
            Some((
                SocketAddr::new(ip(0).into(), port(32)),
                SocketAddr::new(ip(16).into(), port(34)),
                16 + len,
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_v4_and_v6() {
        for (c, l) in [
            ("10.0.0.2:40000", "10.100.0.1:80"),
            ("[fd00::2]:40000", "[fd64::1]:443"),
        ] {
            let (c, l): (SocketAddr, SocketAddr) = (c.parse().unwrap(), l.parse().unwrap());
            let mut h = header_with(c, l, &[]);
            let n = h.len();
            h.extend_from_slice(b"GET /");
            assert_eq!(parse(&h), Some((c, l, n)));
        }
        // The spec's example layout for IPv4: 16 + 12 bytes.
        assert_eq!(
            header_with(
                "1.2.3.4:5".parse().unwrap(),
                "6.7.8.9:10".parse().unwrap(),
                &[]
            )
            .len(),
            28
        );
        assert_eq!(parse(b"GET / HTTP/1.1\r\n\r\n"), None);
    }

    #[test]
    fn tls_tlvs_carry_the_sni_and_the_version() {
        let (c, l) = (
            "10.0.0.2:4".parse().unwrap(),
            "10.100.0.1:443".parse().unwrap(),
        );
        let h = header_with(c, l, &tls_tlvs("TLSv1.3", Some("web.example")));
        let (pc, pl, n) = parse(&h).unwrap();
        assert_eq!((pc, pl, n), (c, l, h.len()));
        assert_eq!(
            parse_tlvs(&h),
            vec![
                (PP2_TYPE_AUTHORITY, b"web.example".to_vec()),
                (
                    PP2_TYPE_SSL,
                    [&[1u8, 0, 0, 0, 0][..], &[0x21, 0, 7], b"TLSv1.3"].concat()
                ),
                (PP2_SUBTYPE_SSL_VERSION, b"TLSv1.3".to_vec()),
            ]
        );
    }
}
