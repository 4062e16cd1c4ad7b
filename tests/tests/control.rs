//! Control plane under real traffic (namespaces, `lb run`): health checks,
//! zone failover, draining, reload. Root only; serial; bounded.

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use tests::{
    e2e::{self, tcp_exchange, Conn, Daemon, TempDir, FAST_HC},
    topo::{Topology, VIP_V4},
};

fn vip() -> SocketAddr {
    SocketAddr::new(VIP_V4.parse().unwrap(), 80)
}

fn setup(tag: &str, extra: &str, edit: impl Fn(String) -> String) -> (Topology, TempDir, Daemon) {
    let topo = e2e::served_topology();
    let dir = TempDir::new(tag);
    let cfg = edit(topo.config(extra));
    let d = Daemon::start(&topo.gw, &dir.0, &cfg).expect("lb run");
    (topo, dir, d)
}

/// `n` connections to the v4 VIP from the client; every one must complete.
fn spread(topo: &Topology, d: &Daemon, n: usize) -> HashMap<String, u32> {
    e2e::spread(topo, d, vip(), n)
}

/// Every target's health-check port closed while the service works: the
/// group fails open (NLB's rule), says so loudly, and traffic goes on to
/// all targets; with `fail_open = false` new flows are dropped; a healthy
/// target ends it.
#[test]
fn every_target_unhealthy_fails_open() {
    let extra = format!("{FAST_HC}port = 8099\n");
    let (topo, _dir, d) = setup("failopen", &extra, |c| c);
    d.expect_log(
        &["target group tg4: every target is unhealthy: failing open, new flows go to all 3 of them"],
        1,
        Duration::from_secs(5),
        "fail-open",
    );
    assert_eq!(spread(&topo, &d, 60).len(), 3, "all three targets serve");
    let m = e2e::metrics(&topo.gw).unwrap();
    assert!(
        m.contains("lb_target_group_fail_open{target_group=\"tg4\"} 1"),
        "{m}"
    );
    assert!(e2e::lb_status(&d.config)
        .unwrap()
        .contains("FAIL-OPEN: target group tg4"));
    // Off: nothing to send new flows to.
    let cfg = std::fs::read_to_string(&d.config).unwrap();
    let closed = cfg.replacen(
        "cross_zone = true\n",
        "cross_zone = true\nfail_open = false\n",
        1,
    );
    d.reload(&closed).unwrap();
    d.expect_log(
        &["target group tg4: fail-open ended"],
        1,
        Duration::from_secs(5),
        "",
    );
    let dropped = e2e::xdp_reason(&topo.gw, "no_backend");
    {
        let _in = topo.client.enter().unwrap();
        assert!(tcp_exchange(vip(), b"x").is_err(), "no target may take it");
    }
    assert!(e2e::xdp_reason(&topo.gw, "no_backend") > dropped);
    // Checks that pass: healthy, no fail-open.
    d.reload(&cfg.replace("port = 8099\n", "")).unwrap();
    d.expect_log(
        &["tg4/10.1.1.2:8080", "-> healthy"],
        1,
        Duration::from_secs(10),
        "",
    );
    let m = e2e::metrics(&topo.gw).unwrap();
    assert!(
        m.contains("lb_target_group_fail_open{target_group=\"tg4\"} 0"),
        "{m}"
    );
    assert!(
        // Entered at the start, and again by the last reload until checks pass.
        m.contains("lb_target_group_fail_open_starts_total{target_group=\"tg4\"} 2"),
        "{m}"
    );
    assert_eq!(spread(&topo, &d, 30).len(), 3);
}

/// HTTPS checks: a TLS handshake with the target's (self-signed,
/// unverified) certificate, then the HTTP status; a target whose TLS
/// server is gone turns unhealthy with the reason.
#[test]
fn https_health_checks() {
    let mut topo = e2e::served_topology();
    let dir = TempDir::new("https");
    let (cert, key) = (dir.0.join("c.pem"), dir.0.join("k.pem"));
    tests::netns::sh(&[
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=target",
        "-days",
        "2",
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
    ])
    .unwrap();
    let mut pids = Vec::new();
    for b in &mut topo.backends {
        let c =
            b.ns.spawn(&[
                "openssl",
                "s_server",
                "-quiet",
                "-accept",
                "8443",
                "-cert",
                cert.to_str().unwrap(),
                "-key",
                key.to_str().unwrap(),
                "-www",
            ])
            .unwrap();
        pids.push(c.id());
    }
    let extra = format!("{FAST_HC}protocol = \"https\"\nport = 8443\n");
    let d = Daemon::start(&topo.gw, &dir.0, &topo.config(&extra)).expect("lb run");
    d.expect_log(
        &["tg4/10.1.2.2:8080", "-> healthy: https 200"],
        1,
        Duration::from_secs(5),
        "healthy by HTTPS",
    );
    assert_eq!(spread(&topo, &d, 30).len(), 3);
    // b2's TLS server goes; its service stays, its checks fail.
    unsafe { libc::kill(pids[1] as i32, libc::SIGKILL) };
    d.expect_log(
        &["tg4/10.1.2.2:8080", "healthy -> unhealthy", "8443"],
        1,
        Duration::from_secs(5),
        "unhealthy by HTTPS",
    );
    let per = spread(&topo, &d, 30);
    assert!(!per.contains_key("b2"), "{per:?}");
}

/// `unhealthy_connection_termination = false`: a target that fails its
/// checks (its service still up) takes no new flows but keeps the open
/// ones, for `unhealthy_draining_interval`; then they end.
#[test]
fn unhealthy_targets_keep_their_flows_when_asked() {
    let mut topo = e2e::served_topology();
    let srv = e2e::bin("lb-testsrv");
    let mut pids = Vec::new();
    for b in &mut topo.backends {
        let name = format!("{}hc", b.name);
        let c =
            b.ns.spawn(&[srv.to_str().unwrap(), "--name", &name, "--tcp", "8081"])
                .unwrap();
        pids.push(c.id());
    }
    let extra = format!(
        "unhealthy_connection_termination = false\nunhealthy_draining_interval = \"4s\"\n{FAST_HC}port = 8081\n"
    );
    let dir = TempDir::new("keepflows");
    let d = Daemon::start(&topo.gw, &dir.0, &topo.config(&extra)).expect("lb run");
    d.expect_log(
        &["tg4/10.1.1.2:8080", "-> healthy"],
        1,
        Duration::from_secs(5),
        "",
    );
    let mut conn = conn_on_b1(&topo);
    unsafe { libc::kill(pids[0] as i32, libc::SIGKILL) };
    d.expect_log(
        &["tg4/10.1.1.2:8080", "healthy -> unhealthy"],
        1,
        Duration::from_secs(5),
        "b1 fails its checks",
    );
    let t0 = std::time::Instant::now();
    {
        let _in = topo.client.enter().unwrap();
        conn.exchange(b"kept while unhealthy")
            .unwrap_or_else(|e| panic!("the open connection broke: {e:#}\n{}", d.log_text()));
        let n = tcp_exchange(vip(), b"new").unwrap();
        assert_ne!(n, "b1", "no new flow for an unhealthy target");
    }
    d.expect_log(
        &["tg4/10.1.1.2:8080: unhealthy_draining_interval over: its flows end"],
        1,
        Duration::from_secs(8),
        "the interval ends",
    );
    assert!(
        t0.elapsed() >= Duration::from_secs(2),
        "ended early: {:?}",
        t0.elapsed()
    );
    assert!(
        ends_soon(&topo, &mut conn),
        "the kept connection should end with the interval"
    );
}

#[test]
fn killed_backend_leaves_and_rejoins() {
    let (mut topo, _dir, d) = setup("kill", FAST_HC, |c| c);
    assert_eq!(spread(&topo, &d, 60).len(), 3);
    // Traffic keeps running from another thread while b2 dies.
    let client = topo.client.name.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    let bg = std::thread::spawn(move || {
        let f = std::fs::File::open(format!("/run/netns/{client}")).unwrap();
        unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) };
        let mut n = 0;
        while !s2.load(std::sync::atomic::Ordering::Relaxed) && n < 5000 {
            let _ = tcp_exchange(vip(), b"bg");
            n += 1;
        }
    });
    topo.backends[1].ns.kill_all();
    // interval x unhealthy_threshold + one interval = 3s (+1s slack).
    d.expect_log(
        &["tg4/10.1.2.2:8080", "-> unhealthy"],
        1,
        Duration::from_secs(4),
        "b2 not marked unhealthy in time",
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    bg.join().unwrap();
    let per = spread(&topo, &d, 200);
    assert!(
        !per.contains_key("b2"),
        "no new connection may go to b2: {per:?}"
    );
    // b2 comes back: healthy after 2 passes.
    e2e::start_server(&mut topo.backends[1].ns, "b2", 8080).unwrap();
    d.expect_log(
        &["tg4/10.1.2.2:8080", "unhealthy -> healthy"],
        1,
        Duration::from_secs(5),
        "b2 did not rejoin",
    );
    let per = spread(&topo, &d, 300);
    assert!(
        per.get("b2").copied().unwrap_or(0) > 50,
        "b2 takes new flows again: {per:?}"
    );
}

#[test]
fn zone_fails_over_and_back() {
    let (mut topo, _dir, d) = setup("zone", FAST_HC, |c| {
        c.replace("cross_zone = true", "cross_zone = false")
    });
    let per = spread(&topo, &d, 100);
    assert!(
        !per.contains_key("b3"),
        "cross-zone off: zone b (b3) idle while zone a is up: {per:?}"
    );
    topo.backends[0].ns.kill_all();
    topo.backends[1].ns.kill_all();
    for t in ["tg4/10.1.1.2:8080", "tg4/10.1.2.2:8080"] {
        d.expect_log(&[t, "-> unhealthy"], 1, Duration::from_secs(4), t);
    }
    let per = spread(&topo, &d, 100);
    assert_eq!(
        per.get("b3"),
        Some(&100),
        "zone a down: everything to zone b: {per:?}"
    );
    e2e::start_server(&mut topo.backends[0].ns, "b1", 8080).unwrap();
    e2e::start_server(&mut topo.backends[1].ns, "b2", 8080).unwrap();
    for t in ["tg4/10.1.1.2:8080", "tg4/10.1.2.2:8080"] {
        d.expect_log(&[t, "unhealthy -> healthy"], 1, Duration::from_secs(5), t);
    }
    let per = spread(&topo, &d, 100);
    assert!(
        !per.contains_key("b3"),
        "zone a back: new flows return to it: {per:?}"
    );
}

/// An open connection that the ring gave to b1.
fn conn_on_b1(topo: &Topology) -> Conn {
    let _in = topo.client.enter().unwrap();
    (0..200)
        .map(|_| Conn::open(vip()).unwrap())
        .find(|c| c.name == "b1")
        .expect("a connection on b1")
}

/// A daemon whose group has `group` (drain settings) and fast checks, a
/// connection open on b1, and b1 deregistered: draining from now on.
fn b1_draining(tag: &str, group: &str) -> (Topology, TempDir, Daemon, Conn) {
    let (topo, dir, d) = setup(tag, &format!("{group}{FAST_HC}"), |c| {
        c.replace("[gateway]\n", "[gateway]\ntcp_closing_timeout = \"1s\"\n")
    });
    let conn = conn_on_b1(&topo);
    d.reload(&without_b1(&d)).unwrap();
    (topo, dir, d, conn)
}

/// The open connection stops working within 2 s (its flow was ended).
fn ends_soon(topo: &Topology, conn: &mut Conn) -> bool {
    let _in = topo.client.enter().unwrap();
    (0..10).any(|_| {
        std::thread::sleep(Duration::from_millis(200));
        conn.exchange(b"after").is_err()
    })
}

/// The running config without b1 (10.1.1.2) in the v4 group.
fn without_b1(d: &Daemon) -> String {
    let cfg = std::fs::read_to_string(&d.config).unwrap();
    let cut = "[[target_group.targets]]\naddress = \"10.1.1.2\"\nport = 8080\nzone = \"a\"\n\n";
    assert!(cfg.contains(cut));
    cfg.replacen(cut, "", 1)
}

#[test]
fn deregistered_target_drains() {
    let (topo, _dir, d, mut conn) = b1_draining("drain", "deregistration_delay = \"10s\"\n");
    let t0 = std::time::Instant::now();
    {
        let _in = topo.client.enter().unwrap();
        let mut i = 0;
        while t0.elapsed() < Duration::from_secs(8) {
            conn.exchange(format!("still here {i}").as_bytes())
                .unwrap_or_else(|e| panic!("open connection broke while draining: {e:#}"));
            let n = tcp_exchange(vip(), b"new").unwrap();
            assert_ne!(n, "b1", "a draining target gets no new connection");
            std::thread::sleep(Duration::from_millis(200));
            i += 1;
        }
    }
    d.expect_log(
        &["tg4/10.1.1.2:8080", "drained"],
        1,
        Duration::from_secs(5),
        "",
    );
    // Only the one open connection counts (the others on b1 were closed
    // before the drain began).
    assert!(
        d.log_text().contains("1 remaining live flows dropped"),
        "{}",
        d.log_text()
    );
    // After the delay the flow is gone: the connection no longer works.
    assert!(
        ends_soon(&topo, &mut conn),
        "the connection should end with the drain"
    );
}

/// `deregistration_connection_termination = false` (NLB's default): flows
/// still open when the delay ends go on until they end, then the target
/// is removed.
#[test]
fn drain_end_can_let_open_flows_finish() {
    let (topo, _dir, d, mut conn) = b1_draining(
        "drainkeep",
        "deregistration_delay = \"6s\"\nderegistration_connection_termination = false\n",
    );
    d.expect_log(
        &[
            "tg4/10.1.1.2:8080: deregistration_delay over;",
            "flows go on until they end",
        ],
        1,
        Duration::from_secs(10),
        "the delay ends, the flow stays",
    );
    {
        let _in = topo.client.enter().unwrap();
        std::thread::sleep(Duration::from_secs(1));
        conn.exchange(b"after the delay")
            .unwrap_or_else(|e| panic!("the open connection broke: {e:#}\n{}", d.log_text()));
    }
    assert!(!d.log_text().contains("remaining live flows dropped"));
    drop(conn);
    d.expect_log(
        &["tg4/10.1.1.2:8080 drained: its last flow ended after deregistration_delay"],
        1,
        Duration::from_secs(15),
        "removed once its flow ended",
    );
}

/// A drain ends as soon as its target's last live flow is gone, as NLB's
/// does, long before `deregistration_delay`; `lb status` shows the time
/// left meanwhile.
#[test]
fn drain_ends_early_when_its_last_flow_is_gone() {
    let (topo, _dir, d, mut conn) = b1_draining("drainearly", "deregistration_delay = \"300s\"\n");
    // Longer than a flow count (5 s): the open connection holds the drain.
    std::thread::sleep(Duration::from_secs(7));
    let status = e2e::lb_status(&d.config).unwrap();
    let row = status
        .lines()
        .find(|l| l.contains("10.1.1.2:8080"))
        .unwrap_or_else(|| panic!("no b1 row: {status}"));
    assert!(
        row.contains("draining") && row.contains("s of the drain left"),
        "{row}"
    );
    assert!(!d.log_text().contains("drained"), "{}", d.log_text());
    {
        let _in = topo.client.enter().unwrap();
        conn.exchange(b"still here").unwrap();
    }
    drop(conn);
    d.expect_log(
        &["tg4/10.1.1.2:8080 drained early: no live flow left"],
        1,
        Duration::from_secs(15),
        "the drain ends with its last flow",
    );
    assert_eq!(spread(&topo, &d, 10).values().sum::<u32>(), 10);
}

/// A restart while a target drains: the drain is adopted with the time it
/// had left, so its backend id is not handed to a new target, and its open
/// connection goes on (with the id reused, its packets would reach the new
/// target, which resets them).
#[test]
fn draining_target_survives_a_restart() {
    let extra = format!("deregistration_delay = \"30s\"\n{FAST_HC}");
    let (mut topo, dir, d) = setup("drainrestart", &extra, |c| c);
    e2e::start_server(&mut topo.backends[1].ns, "b2x", 8081).unwrap();
    let mut conn = conn_on_b1(&topo);
    let without_b1 = without_b1(&d);
    d.reload(&without_b1).unwrap();
    d.expect_log(
        &["tg4/10.1.1.2:8080", "draining for"],
        1,
        Duration::from_secs(5),
        "",
    );
    d.kill9();
    // Restart without b1 and with a new target that takes the lowest free
    // backend id: b1's, unless the drain is adopted.
    let added = "[[target_group.targets]]\naddress = \"10.1.2.2\"\nport = 8081\nzone = \"a\"\n\n";
    let restart_cfg = without_b1.replacen(
        "[[target_group.targets]]\naddress = \"10.1.2.2\"",
        &format!("{added}[[target_group.targets]]\naddress = \"10.1.2.2\""),
        1,
    );
    let d = Daemon::start(&topo.gw, &dir.0, &restart_cfg).expect("restart");
    assert!(
        d.log_text()
            .contains("target tg4/10.1.1.2:8080 was draining: adopted"),
        "{}",
        d.log_text()
    );
    d.expect_log(
        &["tg4/10.1.2.2:8081", "initial -> healthy"],
        1,
        Duration::from_secs(5),
        "",
    );
    let _in = topo.client.enter().unwrap();
    for i in 0..10 {
        conn.exchange(format!("draining across a restart {i}").as_bytes())
            .unwrap_or_else(|e| panic!("the draining connection broke after the restart: {e:#}"));
        std::thread::sleep(Duration::from_millis(100));
    }
    let per = spread(&topo, &d, 60);
    assert!(
        !per.contains_key("b1"),
        "no new flow on the draining target: {per:?}"
    );
    assert!(per.contains_key("b2x"), "the new target serves: {per:?}");
}

#[test]
fn reload_adds_a_target_without_breaking_connections() {
    let (topo, _dir, d) = setup("hup", FAST_HC, |c| {
        c.replacen(
            "[[target_group.targets]]\naddress = \"10.1.3.2\"\nport = 8080\nzone = \"b\"\n\n",
            "",
            1,
        )
    });
    let mut open: Vec<Conn> = {
        let _in = topo.client.enter().unwrap();
        (0..6).map(|_| Conn::open(vip()).unwrap()).collect()
    };
    assert!(open.iter().all(|c| c.name != "b3"));
    // A broken config is refused; the running one stays.
    let good = std::fs::read_to_string(&d.config).unwrap();
    std::fs::write(&d.config, good.replace("port = 80\n", "port = 70000\n")).unwrap();
    d.signal(libc::SIGHUP);
    d.expect_log(
        &[
            "reload failed, keeping the running config",
            "listener[0].port: 70000 is out of range",
        ],
        1,
        Duration::from_secs(5),
        "",
    );
    assert_eq!(spread(&topo, &d, 30).values().sum::<u32>(), 30);
    let cfg = topo.config(FAST_HC);
    d.reload(&cfg).unwrap();
    d.expect_log(
        &["tg4/10.1.3.2:8080", "initial -> healthy"],
        1,
        Duration::from_secs(5),
        "",
    );
    let per = spread(&topo, &d, 300);
    assert!(
        per.get("b3").copied().unwrap_or(0) > 50,
        "the new target gets new flows: {per:?}"
    );
    let _in = topo.client.enter().unwrap();
    for (i, c) in open.iter_mut().enumerate() {
        c.exchange(format!("after reload {i}").as_bytes())
            .unwrap_or_else(|e| panic!("connection {i} to {} broke: {e:#}", c.name));
    }
}

/// `kill -9` of the daemon and a restart: an open TCP connection keeps
/// exchanging data throughout, and new connections succeed while it is down.
#[test]
fn daemon_restart_is_hitless() {
    use std::sync::{
        atomic::{AtomicBool, AtomicU32, Ordering},
        Arc,
    };
    let (topo, dir, d) = setup("restart", FAST_HC, |c| c);
    let config = std::fs::read_to_string(&d.config).unwrap();
    let mut conn = {
        let _in = topo.client.enter().unwrap();
        Conn::open(vip()).unwrap()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let client = topo.client.name.clone();
    let bg = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        std::thread::spawn(move || {
            let f = std::fs::File::open(format!("/run/netns/{client}")).unwrap();
            unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) };
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) && i < 2000 {
                match conn.exchange(format!("tick {i}").as_bytes()) {
                    Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
                std::thread::sleep(Duration::from_millis(20));
                i += 1;
            }
            conn
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    d.kill9();
    // Down: the pinned program keeps forwarding.
    let per = spread(&topo, &Daemon::placeholder(&dir.0), 50);
    assert!(!per.is_empty());
    let d = Daemon::start(&topo.gw, &dir.0, &config).expect("restart");
    assert!(
        d.log_text().contains("adopted the pinned maps"),
        "{}",
        d.log_text()
    );
    assert!(
        d.log_text().contains("took over the pinned XDP link"),
        "{}",
        d.log_text()
    );
    spread(&topo, &d, 50);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let mut conn = bg.join().unwrap();
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "the open connection broke ({} ok)",
        ok.load(Ordering::Relaxed)
    );
    assert!(ok.load(Ordering::Relaxed) > 50);
    let _in = topo.client.enter().unwrap();
    conn.exchange(b"after restart").unwrap();
}

/// `lb` with these arguments, outside the namespaces (pins and the
/// instance lock are the host's); (success, stdout, stderr).
fn lb(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(e2e::lb_bin())
        .args(args)
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn sigterm_keeps_forwarding_and_lb_detach_takes_it_down() {
    let (topo, _dir, d) = setup("stop", FAST_HC, |c| c);
    let pin = e2e::pin_path_of(&std::fs::read_to_string(&d.config).unwrap()).unwrap();
    let xdp_on = || topo.gw.xdp_attached("eth0");
    d.signal(libc::SIGTERM);
    assert!(tests::netns::wait_until(Duration::from_secs(5), || d
        .log_text()
        .contains("keeps forwarding")));
    assert!(xdp_on(), "SIGTERM keeps XDP attached");
    assert!(!spread(&topo, &d, 20).is_empty(), "and forwarding");
    let (ok, out, err) = lb(&["detach", "--pin-path", pin.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("detached from eth0"), "{out}");
    assert!(!xdp_on(), "lb detach detaches");
    assert!(!pin.exists(), "lb detach removes the pins");
}

/// `lb detach` never pulls the data plane from under a running daemon;
/// `lb stop` stops the daemon and XDP keeps forwarding; then `lb detach`.
#[test]
fn lb_stop_stops_the_daemon_and_lb_detach_refuses_under_one() {
    let (topo, _dir, mut d) = setup("stop2", FAST_HC, |c| c);
    let cfg = d.config.to_str().unwrap().to_string();
    let pin = e2e::pin_path_of(&std::fs::read_to_string(&d.config).unwrap()).unwrap();
    let xdp_on = || topo.gw.xdp_attached("eth0");
    let pid = d.child.id();
    let (ok, _, err) = lb(&["detach", "-c", &cfg]);
    assert!(!ok, "detach under a running daemon must fail");
    assert!(
        err.contains(&format!(
            "`lb run` (pid {pid}) is serving gateway.pin_path {}",
            pin.display()
        )),
        "{err}"
    );
    // Found by the pin directory's lock whatever the path's spelling, and
    // without the config (whose admin_socket may have changed since).
    let slash = format!("{}/", pin.display());
    let (ok, _, err) = lb(&[
        "detach",
        "--pin-path",
        &slash,
        "--socket",
        "/nonexistent/lb.sock",
    ]);
    assert!(!ok, "detach by another spelling of the pin path must fail");
    assert!(
        err.contains(&format!("`lb run` (pid {pid}) is serving")),
        "{err}"
    );
    assert!(xdp_on() && pin.exists(), "nothing was detached");
    assert_eq!(spread(&topo, &d, 10).values().sum::<u32>(), 10);
    let (ok, out, err) = lb(&["stop", "-c", &cfg]);
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!("stopped lb run (pid {pid})")),
        "{out}"
    );
    assert!(out.contains("XDP stays attached"), "{out}");
    assert!(d.child.try_wait().unwrap().is_some(), "the daemon exited");
    assert!(xdp_on(), "XDP keeps forwarding");
    assert_eq!(spread(&topo, &d, 10).values().sum::<u32>(), 10);
    let (ok, out, _) = lb(&["stop", "-c", &cfg]);
    assert!(ok && out.contains("no lb run serves"), "{out}");
    let (ok, out, err) = lb(&["detach", "-c", &cfg]);
    assert!(ok, "{err}");
    assert!(out.contains("detached from eth0"), "{out}");
    assert!(!xdp_on() && !pin.exists());
}

/// `lb stop --detach`: the daemon exits, then the data plane goes.
#[test]
fn lb_stop_detach_stops_and_takes_the_data_plane_down() {
    let (topo, _dir, mut d) = setup("stop3", FAST_HC, |c| c);
    let cfg = d.config.to_str().unwrap().to_string();
    let pin = e2e::pin_path_of(&std::fs::read_to_string(&d.config).unwrap()).unwrap();
    let (ok, out, err) = lb(&["stop", "--detach", "-c", &cfg]);
    assert!(ok, "{err}");
    assert!(
        out.contains("stopped lb run") && out.contains("detached from eth0"),
        "{out}"
    );
    assert!(d.child.try_wait().unwrap().is_some(), "the daemon exited");
    assert!(!topo.gw.xdp_attached("eth0") && !pin.exists());
}

/// `lb reload` validates before it asks; `lb status` works while the file
/// is invalid and says the last reload failed (and why); `--json` carries
/// the same; `-c` is accepted by every subcommand.
#[test]
fn reload_and_status_report_on_the_running_config() {
    let (topo, _dir, d) = setup("reload", FAST_HC, |c| c);
    let cfg = d.config.to_str().unwrap().to_string();
    let good = std::fs::read_to_string(&d.config).unwrap();
    let (ok, out, err) = lb(&["check", "-c", &cfg]);
    assert!(ok && out.contains(": ok ("), "{out}{err}");
    // `lb reload` (what `systemctl reload` runs): refused, said, counted.
    let bad = good.replacen("port = 80", "port = \"80\"", 1);
    assert_ne!(bad, good);
    std::fs::write(&d.config, &bad).unwrap();
    let (ok, out, err) = lb(&["reload", "-c", &cfg]);
    assert!(!ok, "{out}");
    assert!(
        out.starts_with("error: reload failed, keeping the running config: ")
            && out.contains("listener[0].port: expected a number, got \"80\""),
        "{out}"
    );
    assert!(err.contains("it keeps the running one"), "{err}");
    // SIGHUP with that file: the same.
    d.signal(libc::SIGHUP);
    d.expect_log(
        &["reload failed, keeping the running config"],
        2,
        Duration::from_secs(5),
        "a failed reload",
    );
    let (ok, out, err) = lb(&["status", "-c", &cfg]);
    assert!(ok, "{err}");
    assert!(
        err.contains("note:") && err.contains("using gateway.admin_socket"),
        "{err}"
    );
    assert!(
        out.contains("last reload: FAILED")
            && out.contains("listener[0].port: expected a number, got \"80\""),
        "{out}"
    );
    assert!(out.contains("web4"), "the running listeners: {out}");
    let (ok, out, err) = lb(&["status", "--json", "-c", &cfg]);
    assert!(ok, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(j["last_reload"]["ok"], false, "{j}");
    assert_eq!(j["reloads"]["error"], 2, "{j}");
    assert_eq!(j["last_reload"]["applied"], false, "{j}");
    let healthy = j["targets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["state"] == "healthy")
        .count();
    assert_eq!(healthy, 6, "three v4 and three v6 targets: {j}");
    assert!(j["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["name"] == "web4"));
    // Another file than the daemon's: refused, it would not be read.
    let elsewhere = d.config.with_file_name("elsewhere.toml");
    std::fs::write(&elsewhere, &good).unwrap();
    let (ok, out, _) = lb(&["reload", "-c", elsewhere.to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!(
            "error: this daemon runs with {cfg}, not {}",
            elsewhere.display()
        )),
        "{out}"
    );
    // A valid file: applied, and the answer says so.
    std::fs::write(&d.config, &good).unwrap();
    let (ok, out, err) = lb(&["reload", "-c", &cfg]);
    assert!(ok, "{out}{err}");
    assert!(out.starts_with("ok: config reloaded:"), "{out}");
    let (_, out, _) = lb(&["status", "-c", &cfg]);
    assert!(out.contains("last reload: ok"), "{out}");
    assert_eq!(spread(&topo, &d, 10).values().sum::<u32>(), 10);
}

/// `Type=notify`: READY=1 once serving; RELOADING=1 then READY=1 on SIGHUP;
/// WATCHDOG=1 every WatchdogSec/2 when systemd asks for it.
#[test]
fn daemon_notifies_systemd() {
    let topo = e2e::served_topology();
    let dir = TempDir::new("notify");
    let path = dir.0.join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let env = format!("NOTIFY_SOCKET={}", path.display());
    // WatchdogSec=400ms: a ping every 200ms.
    let d = Daemon::start_with(
        &topo.gw,
        &dir.0,
        &topo.config(FAST_HC),
        &["env", &env, "WATCHDOG_USEC=400000"],
    )
    .expect("lb run");
    let mut buf = [0u8; 512];
    let mut pings = 0;
    // The next notification other than a watchdog ping (counted).
    let mut next = || loop {
        let n = sock.recv(&mut buf).expect("a notification");
        let m = String::from_utf8_lossy(&buf[..n]).to_string();
        if m == "WATCHDOG=1" {
            pings += 1;
        } else {
            return (m, pings);
        }
    };
    let (ready, _) = next();
    assert!(
        ready.starts_with("READY=1\nSTATUS=serving 4 listener keys, 6 healthy targets"),
        "{ready}"
    );
    std::thread::sleep(Duration::from_secs(1));
    d.signal(libc::SIGHUP);
    let (reloading, pings) = next();
    assert_eq!(reloading, "RELOADING=1");
    assert!(pings >= 3, "{pings} watchdog pings in a second");
    assert_eq!(next().0, "READY=1");
    drop(d);
    assert_eq!(next().0, "STOPPING=1");
}

#[test]
fn a_second_daemon_on_the_same_state_is_refused() {
    let (topo, _dir, d) = setup("twice", FAST_HC, |c| c);
    let out = topo
        .gw
        .command(&[
            e2e::lb_bin().to_str().unwrap(),
            "run",
            "--config",
            d.config.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "already serves gateway.pin_path {}",
            topo.pin_path()
        )),
        "{err}"
    );
    assert!(err.contains(&format!("(pid {})", d.child.id())), "{err}");
    // Started with another admin_socket (its lock file elsewhere): the pin
    // directory's lock still refuses it, with the same plain message.
    let cfg = std::fs::read_to_string(&d.config).unwrap();
    let sock = format!("admin_socket = \"/run/{}.sock\"", topo.gw.name);
    assert!(cfg.contains(&sock), "{cfg}");
    let other = d.config.with_file_name("other.toml");
    let moved = format!("admin_socket = \"/run/{}-2.sock\"", topo.gw.name);
    std::fs::write(&other, cfg.replace(&sock, &moved)).unwrap();
    let out = topo
        .gw
        .command(&[
            e2e::lb_bin().to_str().unwrap(),
            "run",
            "-c",
            other.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "another `lb run` (pid {}) already serves gateway.pin_path {}",
            d.child.id(),
            topo.pin_path()
        )) && !err.contains("XDP failed"),
        "{err}"
    );
    // The first one is unharmed.
    assert_eq!(spread(&topo, &d, 10).values().sum::<u32>(), 10);
}

/// Reloads that pass validation apply in full, or are refused whole with
/// the reason, and never leave later syncs failing: a VIP that moves at
/// `max_vips`; targets replaced while the old ones drain, beyond
/// `max_targets`; a restart-only setting changed.
#[test]
fn reloads_apply_whole_or_not_at_all() {
    let extra = format!("deregistration_delay = \"30s\"\n{FAST_HC}");
    let (topo, _dir, d) = setup("reloads", &extra, |c| {
        c.replace("[gateway]\n", "[gateway]\nmax_vips = 4\nmax_targets = 8\n")
    });
    let cfg = std::fs::read_to_string(&d.config).unwrap();
    let sync_failed = |d: &Daemon| d.log_text().contains("programming the data plane failed");
    // 1. The v4 VIP moves (4 listener keys before and after, max_vips 4).
    let moved = cfg.replace("address = \"10.100.0.1\"", "address = \"10.100.0.9\"");
    d.reload(&moved).unwrap();
    assert!(!sync_failed(&d), "{}", d.log_text());
    let per = e2e::spread(&topo, &d, "10.100.0.9:80".parse().unwrap(), 60);
    assert_eq!(per.len(), 3, "the moved VIP serves: {per:?}");
    // 2. All v6 targets replaced while the old ones drain: 6 + 3 ids > 8.
    let replaced = moved.replacen(
        "[[target_group]]\nname = \"tg6\"",
        "[[target_group]]\nname = \"tg6x\"",
        1,
    );
    let replaced = replaced.replace("target_group = \"tg6\"", "target_group = \"tg6x\"");
    let before = d.log_text().matches("reload refused").count();
    std::fs::write(&d.config, &replaced).unwrap();
    d.signal(libc::SIGHUP);
    d.expect_log(
        &["reload refused", "max_targets = 8", "9 ids"],
        before + 1,
        Duration::from_secs(5),
        "",
    );
    // The running config is whole: both VIPs still reach every target.
    assert_eq!(
        e2e::spread(&topo, &d, "10.100.0.9:80".parse().unwrap(), 60).len(),
        3
    );
    assert_eq!(
        e2e::spread(&topo, &d, "[fd64::1]:80".parse().unwrap(), 60).len(),
        3
    );
    // 3. A restart-only setting: named, the running value kept, and later
    // reloads still apply (b3 deregistered: no new connection reaches it).
    let ring = moved.replace("[gateway]\n", "[gateway]\nring_size = 251\n");
    d.reload(&ring).unwrap();
    assert!(
        d.log_text()
            .contains("gateway.ring_size changed: restart-only"),
        "{}",
        d.log_text()
    );
    let cut = "[[target_group.targets]]\naddress = \"10.1.3.2\"\nport = 8080\nzone = \"b\"\n\n";
    assert!(ring.contains(cut));
    d.reload(&ring.replacen(cut, "", 1)).unwrap();
    assert!(!sync_failed(&d), "{}", d.log_text());
    let per = e2e::spread(&topo, &d, "10.100.0.9:80".parse().unwrap(), 60);
    assert!(!per.contains_key("b3"), "b3 drains: {per:?}");
}

/// An upgrade from a build that kept every flow in `CONNTRACK` (before
/// `CONNTRACK4`) and had no `DIRECT_SLOTS`: the IPv4 flows move to the new
/// table, with their state, and an open connection goes on; every target's
/// replies are checked against direct flows again. The old layout is made
/// from this build's pins: the flows put back into `CONNTRACK`, the two
/// maps' pins removed.
#[test]
fn upgrade_moves_ipv4_flows_into_their_own_table() {
    use aya::maps::{HashMap as BpfMap, Map, MapData};
    use lb_common::{FlowKey, FlowKey4, FlowState};
    let (topo, dir, d) = setup("ct4move", FAST_HC, |c| c);
    let config = std::fs::read_to_string(&d.config).unwrap();
    let pins = e2e::pin_path_of(&config).unwrap().join("maps");
    let mut conn = {
        let _in = topo.client.enter().unwrap();
        Conn::open(vip()).unwrap()
    };
    conn.exchange(b"before").unwrap();
    let (l, p) = (conn.local_addr().unwrap(), conn.peer_addr().unwrap());
    let (src, family) = lb_userspace::model::addr_words(l.ip());
    let key = FlowKey::new(
        src,
        lb_userspace::model::addr_words(p.ip()).0,
        l.port().to_be(),
        p.port().to_be(),
        6,
        family,
    );
    let open4 = || -> BpfMap<_, FlowKey4, FlowState> {
        let m = MapData::from_pin(pins.join("CONNTRACK4")).unwrap();
        BpfMap::try_from(Map::LruHashMap(m)).unwrap()
    };
    let open6 = || -> BpfMap<_, FlowKey, FlowState> {
        let m = MapData::from_pin(pins.join("CONNTRACK")).unwrap();
        BpfMap::try_from(Map::LruHashMap(m)).unwrap()
    };
    let st = open4()
        .get(&key.v4(), 0)
        .expect("the connection is tracked");
    d.kill9();
    // The old build's layout; the flow marked, to be known after the move.
    let marked = FlowState {
        idle_timeout_s: 4321,
        ..st
    };
    open6().insert(key, marked, 0).unwrap();
    std::fs::remove_file(pins.join("CONNTRACK4")).unwrap();
    std::fs::remove_file(pins.join("DIRECT_SLOTS")).unwrap();
    let d = Daemon::start(&topo.gw, &dir.0, &config).expect("restart");
    assert!(
        d.log_text()
            .contains("upgrade: 1 IPv4 flows copied from CONNTRACK to CONNTRACK4"),
        "{}",
        d.log_text()
    );
    let moved = open4()
        .get(&key.v4(), 0)
        .expect("the flow is in CONNTRACK4");
    assert_eq!(moved, marked, "the flow moved with its state");
    assert!(
        open6().get(&key, 0).is_err(),
        "the flow is still in CONNTRACK"
    );
    let direct: aya::maps::Array<_, u8> = aya::maps::Array::try_from(Map::Array(
        MapData::from_pin(pins.join("DIRECT_SLOTS")).unwrap(),
    ))
    .unwrap();
    for b in &topo.backends {
        let (a, _) = lb_userspace::model::addr_words(b.v4.parse().unwrap());
        assert_eq!(
            direct.get(&lb_common::addr_slot(&a), 0).unwrap(),
            1,
            "{}: its replies skip the direct-flow check",
            b.v4
        );
    }
    // The program uses the moved entry: its packets refresh it.
    std::thread::sleep(Duration::from_millis(50));
    {
        let _in = topo.client.enter().unwrap();
        conn.exchange(b"after the upgrade").unwrap();
    }
    let after = open4().get(&key.v4(), 0).unwrap();
    assert!(
        after.last_seen_ns > moved.last_seen_ns,
        "the moved flow was not used"
    );
    // IPv4 flows left in CONNTRACK beside a pinned CONNTRACK4 (a start
    // that failed half-way) are moved by the next start.
    d.kill9();
    let mut left = key;
    left.sport = 1u16.to_be();
    open6().insert(left, marked, 0).unwrap();
    let _d = Daemon::start(&topo.gw, &dir.0, &config).expect("restart");
    assert_eq!(open4().get(&left.v4(), 0).ok(), Some(marked));
    assert!(open6().get(&left, 0).is_err());
}

/// `lb_active_flows` counts live flows only (closed ones leave after the
/// closing timeout), and counting a big table does not hold up the daemon:
/// it is walked off the main loop, in batches.
#[test]
fn active_flows_are_live_flows_and_counted_off_the_main_loop() {
    use aya::maps::{HashMap as BpfMap, Map, MapData};
    use lb_common::{FlowKey, FlowKey4, FlowState};
    let (topo, _dir, d) = setup("liveflows", FAST_HC, |c| {
        c.replace("[gateway]\n", "[gateway]\ntcp_closing_timeout = \"1s\"\n")
    });
    let active = || -> u64 {
        e2e::metrics(&topo.gw)
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("lb_active_flows "))
            .and_then(|v| v.trim().parse().ok())
            .expect("lb_active_flows")
    };
    let conns: Vec<Conn> = {
        let _in = topo.client.enter().unwrap();
        (0..20).map(|_| Conn::open(vip()).unwrap()).collect()
    };
    assert!(
        tests::netns::wait_until(Duration::from_secs(12), || active() == 20),
        "20 open connections: lb_active_flows {}",
        active()
    );
    drop(conns);
    assert!(
        tests::netns::wait_until(Duration::from_secs(15), || active() == 0),
        "closed connections still counted: lb_active_flows {}",
        active()
    );
    // 50,000 live entries (the table holds 65,536) put straight into it.
    let pin = e2e::pin_path_of(&std::fs::read_to_string(&d.config).unwrap()).unwrap();
    let map = MapData::from_pin(pin.join("maps/CONNTRACK4")).unwrap();
    let mut ct: BpfMap<_, FlowKey4, FlowState> = BpfMap::try_from(Map::LruHashMap(map)).unwrap();
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    let now = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
    for i in 0..50_000u32 {
        let k = FlowKey {
            src: [i.to_be(), 0, 0, 0],
            dst: [u32::from_ne_bytes([10, 100, 0, 1]), 0, 0, 0],
            sport: 1000u16.to_be(),
            dport: 80u16.to_be(),
            proto: 6,
            family: 4,
            _pad: [0; 2],
        };
        let v = FlowState {
            backend_id: 1,
            last_seen_ns: now,
            ..Default::default()
        };
        ct.insert(k.v4(), v, 0).unwrap();
    }
    // lb status answers at once throughout, and the count catches up.
    let start = std::time::Instant::now();
    let mut slowest = Duration::ZERO;
    let mut seen = 0;
    while start.elapsed() < Duration::from_secs(12) && seen < 50_000 {
        let t = std::time::Instant::now();
        e2e::lb_status(&d.config).unwrap();
        slowest = slowest.max(t.elapsed());
        seen = active();
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("measured: 50,000 entries counted; slowest lb status meanwhile {slowest:?}");
    assert!(seen >= 50_000, "lb_active_flows {seen}");
    assert!(
        slowest < Duration::from_secs(2),
        "lb status took {slowest:?}"
    );
}

/// An interface dropped from `interfaces` is detached at the restart (its
/// pinned link would keep the program on it), and said so.
#[test]
fn restart_detaches_interfaces_no_longer_configured() {
    let (topo, dir, d) = setup("ifaces", FAST_HC, |c| c);
    let cfg = std::fs::read_to_string(&d.config).unwrap();
    assert!(topo.gw.xdp_attached("eth3"));
    d.kill9();
    let fewer = cfg.replace(", \"eth3\"]", "]");
    assert_ne!(fewer, cfg);
    let d = Daemon::start(&topo.gw, &dir.0, &fewer).expect("restart");
    assert!(
        d.log_text()
            .contains("eth3: no longer in gateway.interfaces: XDP detached"),
        "{}",
        d.log_text()
    );
    assert!(!topo.gw.xdp_attached("eth3"), "eth3 still has XDP");
    // Its target is now behind an interface without XDP: said at the start.
    assert!(
        d.log_text()
            .contains("is reached via eth3, which is not in gateway.interfaces"),
        "{}",
        d.log_text()
    );
    assert!(topo.gw.xdp_attached("eth0"));
    let status = e2e::lb_status(&d.config).unwrap();
    assert!(!status.contains("eth3"), "{status}");
}

/// A pinned link keeps the mode it was made in: after a restart, status and
/// metrics report the kernel's mode, and a different `dataplane` is named
/// as waiting for the pins to go.
#[test]
fn a_taken_over_link_reports_its_real_mode() {
    let (topo, dir, d) = setup("mode", FAST_HC, |c| {
        c.replacen("[gateway]\n", "[gateway]\ndataplane = \"xdp-generic\"\n", 1)
    });
    let cfg = std::fs::read_to_string(&d.config).unwrap();
    assert!(e2e::lb_status(&d.config)
        .unwrap()
        .contains("eth0 (xdp-generic)"));
    d.kill9();
    let native = cfg.replacen("dataplane = \"xdp-generic\"", "dataplane = \"xdp\"", 1);
    assert_ne!(native, cfg);
    let d = Daemon::start(&topo.gw, &dir.0, &native).expect("restart");
    d.expect_log(
        &["eth0: the pinned link runs generic XDP, but dataplane = \"xdp\" asks for native"],
        1,
        Duration::from_secs(1),
        "the mode that waits for the pins to go",
    );
    let status = e2e::lb_status(&d.config).unwrap();
    assert!(status.contains("eth0 (xdp-generic)"), "{status}");
    let m = e2e::metrics(&topo.gw).unwrap();
    assert!(
        m.contains("lb_dataplane_info{interface=\"eth0\",mode=\"xdp-generic\""),
        "{m}"
    );
    assert_eq!(spread(&topo, &d, 10).values().sum::<u32>(), 10);
}

/// A health transition that config makes (checks disabled) is logged like
/// any other.
#[test]
fn config_made_health_transitions_are_logged() {
    let (mut topo, _dir, d) = setup("hcoff", FAST_HC, |c| c);
    topo.backends[1].ns.kill_all();
    d.expect_log(
        &["tg4/10.1.2.2:8080", "-> unhealthy"],
        1,
        Duration::from_secs(5),
        "",
    );
    let cfg = std::fs::read_to_string(&d.config).unwrap();
    let off = cfg.replacen(
        "[target_group.health_check]\n",
        "[target_group.health_check]\nenabled = false\n",
        1,
    );
    d.reload(&off).unwrap();
    assert!(
        d.log_text().contains(
            "target tg4/10.1.2.2:8080 (zone a): unhealthy -> healthy: health checks disabled by config"
        ),
        "{}",
        d.log_text()
    );
}
