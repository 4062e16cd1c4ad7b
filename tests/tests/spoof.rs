//! Forged replies (namespaces, `lb run`, native XDP): a frame put on the
//! client's wire that claims to come from the target serving an open
//! connection (its address and port, to the client's address and port) is
//! not translated into VIP-sourced traffic: it arrives on the client side,
//! and the route to the target leaves by another interface. Root only;
//! serial; bounded.

use std::net::SocketAddr;

use tests::{
    e2e::{self, Conn, Daemon, TempDir, FAST_HC},
    topo::VIP_V4,
};

/// Sends `frame` out of `dev` as it is (an AF_PACKET socket: no routing).
fn inject(dev: &str, frame: &[u8]) {
    let name = std::ffi::CString::new(dev).unwrap();
    unsafe {
        let ifindex = libc::if_nametoindex(name.as_ptr());
        assert_ne!(ifindex, 0, "{dev}");
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
        assert!(fd >= 0, "AF_PACKET socket");
        let mut to: libc::sockaddr_ll = std::mem::zeroed();
        to.sll_family = libc::AF_PACKET as u16;
        to.sll_ifindex = ifindex as i32;
        to.sll_halen = 6;
        to.sll_addr[..6].copy_from_slice(&frame[..6]);
        let n = libc::sendto(
            fd,
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&to as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as u32,
        );
        libc::close(fd);
        assert_eq!(n, frame.len() as isize, "sent");
    }
}

fn mac(ns: &tests::netns::Netns, dev: &str) -> [u8; 6] {
    let out = ns
        .exec(&["cat", &format!("/sys/class/net/{dev}/address")])
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    let b: Vec<u8> = s
        .trim()
        .split(':')
        .map(|x| u8::from_str_radix(x, 16).unwrap())
        .collect();
    b.try_into().unwrap()
}

#[test]
fn forged_target_replies_from_the_client_side_are_not_translated() {
    let topo = e2e::served_topology();
    let dir = TempDir::new("spoof");
    let _d = Daemon::start(&topo.gw, &dir.0, &topo.config(FAST_HC)).expect("lb run");
    let vip = SocketAddr::new(VIP_V4.parse().unwrap(), 80);
    let mut conn = {
        let _in = topo.client.enter().unwrap();
        Conn::open(vip).unwrap()
    };
    let target = topo.backends.iter().find(|b| b.name == conn.name).unwrap();
    let client = conn.local_addr().unwrap();
    let (cmac, gmac) = (mac(&topo.client, "eth0"), mac(&topo.gw, "eth0"));
    let before = e2e::metrics(&topo.gw).unwrap();
    let mut frame = Vec::new();
    let t: std::net::Ipv4Addr = target.v4.parse().unwrap();
    let c = match client.ip() {
        std::net::IpAddr::V4(a) => a,
        _ => unreachable!(),
    };
    etherparse::PacketBuilder::ethernet2(cmac, gmac)
        .ipv4(t.octets(), c.octets(), 64)
        .tcp(8080, client.port(), 1, 1000)
        .rst()
        .write(&mut frame, &[])
        .unwrap();
    {
        let _in = topo.client.enter().unwrap();
        for _ in 0..5 {
            inject("eth0", &frame);
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let after = e2e::metrics(&topo.gw).unwrap();
    let moved = |r: &str| e2e::xdp_count(&after, r) - e2e::xdp_count(&before, r);
    assert_eq!(
        moved("reply_wrong_side"),
        5,
        "the forged replies are seen as such"
    );
    assert_eq!(moved("fwd_to_client"), 0, "and none is translated");
    conn.exchange(b"still here\n").unwrap();
}
