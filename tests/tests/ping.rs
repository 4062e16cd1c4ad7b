//! A VIP answers ping (namespaces, `lb run`, native XDP): echo requests
//! from the client to the VIPs' addresses come back as echo replies from
//! the VIPs, v4 and v6, answered by the program. Root only; serial;
//! bounded.

use std::{mem::MaybeUninit, net::SocketAddr, time::Duration};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tests::{
    e2e::{self, Daemon, TempDir, FAST_HC},
    topo::{VIP_V4, VIP_V6},
};

/// Sends one echo request to `vip` on a raw socket; the reply's type.
fn ping(vip: &str) -> Option<u8> {
    ping_within(vip, Duration::from_secs(2))
}

/// As `ping`, waiting at most `wait` for each read.
fn ping_within(vip: &str, wait: Duration) -> Option<u8> {
    let addr: std::net::IpAddr = vip.parse().unwrap();
    let (domain, proto, req) = if addr.is_ipv4() {
        (Domain::IPV4, Protocol::ICMPV4, 8u8)
    } else {
        (Domain::IPV6, Protocol::ICMPV6, 128u8)
    };
    let s = Socket::new(domain, Type::RAW, Some(proto)).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    let mut msg = vec![req, 0, 0, 0, 0x12, 0x34, 0, 1];
    msg.extend_from_slice(b"is the VIP there?");
    if addr.is_ipv4() {
        let c = !tests::packet::ones(&msg);
        msg[2..4].copy_from_slice(&c.to_be_bytes());
    }
    // (The kernel computes the ICMPv6 checksum of a raw ICMPv6 socket.)
    s.send_to(&msg, &SockAddr::from(SocketAddr::new(addr, 0)))
        .unwrap();
    let mut buf = [MaybeUninit::<u8>::uninit(); 1500];
    for _ in 0..4 {
        let (n, _) = s.recv_from(&mut buf).ok()?;
        let b: Vec<u8> = buf[..n]
            .iter()
            .map(|x| unsafe { x.assume_init() })
            .collect();
        // A raw IPv4 socket gets the IP header too.
        let icmp = if addr.is_ipv4() {
            &b[(b[0] & 0x0f) as usize * 4..]
        } else {
            &b[..]
        };
        if icmp.len() >= 8 && icmp[4..8] == [0x12, 0x34, 0, 1] && icmp[0] != req {
            return Some(icmp[0]);
        }
    }
    None
}

#[test]
fn a_vip_answers_ping() {
    let topo = e2e::served_topology();
    // The replies go back out with XDP_TX (see `xdp_pass_on`).
    let _pass = e2e::xdp_pass_on(&topo.client, "eth0").unwrap();
    let dir = TempDir::new("ping");
    let _d = Daemon::start(&topo.gw, &dir.0, &topo.config(FAST_HC)).expect("lb run");
    let _in = topo.client.enter().unwrap();
    assert_eq!(ping(VIP_V4), Some(0), "an echo reply from {VIP_V4}");
    assert_eq!(ping(VIP_V6), Some(129), "an echo reply from {VIP_V6}");
}

/// A restart answers every ping: the new instance's ICMP program (which
/// reads the new instance's VIP addresses) takes the pinned tail call only
/// when it attaches, after its first sync. Before, pings went unanswered
/// from the new instance's load until that sync.
#[test]
fn ping_is_answered_through_a_restart() {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
    let topo = e2e::served_topology();
    let _pass = e2e::xdp_pass_on(&topo.client, "eth0").unwrap();
    let dir = TempDir::new("ping-restart");
    let config = topo.config(FAST_HC);
    let d = Daemon::start(&topo.gw, &dir.0, &config).expect("lb run");
    {
        let _in = topo.client.enter().unwrap();
        assert_eq!(ping(VIP_V4), Some(0), "an echo reply from {VIP_V4}");
    }
    let stop = AtomicBool::new(false);
    let (ok, lost) = (AtomicU32::new(0), AtomicU32::new(0));
    // The restarted daemon outlives the pinger (the scope joins it first).
    let _d = std::thread::scope(|s| {
        s.spawn(|| {
            let _in = topo.client.enter().unwrap();
            // Bounded: at most 1,500 pings and 30 s.
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            for _ in 0..1500 {
                if stop.load(Ordering::Relaxed) || std::time::Instant::now() > deadline {
                    break;
                }
                match ping_within(VIP_V4, Duration::from_millis(300)) {
                    Some(0) => ok.fetch_add(1, Ordering::Relaxed),
                    _ => lost.fetch_add(1, Ordering::Relaxed),
                };
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        std::thread::sleep(Duration::from_millis(200));
        d.kill9();
        let d = Daemon::start(&topo.gw, &dir.0, &config).expect("restart");
        assert!(
            d.log_text().contains("took over the pinned XDP link"),
            "{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        d
    });
    assert_eq!(
        lost.load(Ordering::Relaxed),
        0,
        "pings went unanswered across the restart ({} answered)",
        ok.load(Ordering::Relaxed)
    );
    assert!(ok.load(Ordering::Relaxed) > 20);
}
