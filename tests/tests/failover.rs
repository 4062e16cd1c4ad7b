//! A target fails under `Connection: close` load (namespaces, `lb run`,
//! native XDP): passive health and SYN redispatch keep clients from
//! noticing, long before the active checks would. Root only; serial;
//! bounded (400 attempts, 3 s timeouts each).

use std::{net::SocketAddr, time::Duration};

use tests::{
    e2e::{self, Daemon, TempDir},
    load::{self, Attempt},
    topo::{Topology, VIP_V4},
};

/// Checks every second, but 10 failures to go unhealthy: the active
/// checks cannot act within these tests' load, passive health must.
const SLOW_TO_FAIL: &str = "[target_group.health_check]\ninterval = \"1s\"\ntimeout = \"500ms\"\nhealthy_threshold = 2\nunhealthy_threshold = 10\n";
/// 400 attempts, one per 10 ms, on 16 workers; the fault after 1 s.
const ATTEMPTS: usize = 400;
const EVERY: Duration = Duration::from_millis(10);
const FAULT_AT: Duration = Duration::from_secs(1);
/// Longer than this: the attempt's SYN was retransmitted (after 1 s).
const SLOW: Duration = Duration::from_millis(900);
const B2: &str = "tg4/10.1.2.2:8080";

fn vip() -> SocketAddr {
    SocketAddr::new(VIP_V4.parse().unwrap(), 80)
}

fn setup(tag: &str, group_keys: &str) -> (Topology, TempDir, Daemon) {
    let topo = e2e::served_topology();
    let dir = TempDir::new(tag);
    let cfg = topo.config(&format!("{group_keys}{SLOW_TO_FAIL}"));
    let d = Daemon::start(&topo.gw, &dir.0, &cfg).expect("lb run");
    assert_eq!(e2e::spread(&topo, &d, vip(), 60).len(), 3);
    (topo, dir, d)
}

/// Runs the load; `fault` breaks b2 at `FAULT_AT`.
fn under_load(topo: &mut Topology, fault: impl FnOnce(&mut Topology)) -> Vec<Attempt> {
    let l = load::start(&topo.client.name, vip(), ATTEMPTS, EVERY, 16);
    std::thread::sleep(FAULT_AT.saturating_sub(l.start.elapsed()));
    fault(topo);
    l.join()
}

fn errors(a: &[Attempt]) -> Vec<String> {
    a.iter()
        .filter_map(|a| {
            a.result
                .as_ref()
                .err()
                .map(|e| format!("at {:?}: {e}", a.at))
        })
        .collect()
}

/// Errors in connecting (refused, timed out): what a balancer decides.
/// The others are connections the killed process held (accepted, or
/// queued in its backlog, when it died): lost with it, behind any balancer.
fn connect_errors(a: &[Attempt]) -> Vec<String> {
    errors(a)
        .into_iter()
        .filter(|e| {
            e.split(": ")
                .nth(1)
                .is_some_and(|m| m.starts_with("connect "))
        })
        .collect()
}

fn metric(m: &str, family: &str, labels: &[&str]) -> u64 {
    m.lines()
        .find(|l| l.starts_with(family) && labels.iter().all(|x| l.contains(x)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {family} with {labels:?} in\n{m}"))
}

/// b2's service dies (its port refuses): with redispatch (the default)
/// no client sees an error; the target is suspect at once, in the log,
/// status and metrics; its checks bring it back when it returns.
#[test]
fn killed_target_costs_no_connection_errors() {
    let (mut topo, _dir, d) = setup("pkill", "");
    let a = under_load(&mut topo, |t| t.backends[1].ns.kill_all());
    let o = load::outcome(&a, FAULT_AT, SLOW);
    eprintln!("killed, redispatch on: {o:?}");
    assert_eq!(o.attempts, ATTEMPTS);
    assert!(
        connect_errors(&a).is_empty(),
        "clients saw connection errors: {:?}",
        errors(&a)
    );
    assert!(
        errors(&a).len() <= 2,
        "only connections the killed process held may fail: {:?}",
        errors(&a)
    );
    d.expect_log(
        &[B2, "healthy -> suspect: passive:", "SYNs refused"],
        1,
        Duration::from_secs(2),
        "passive trip not logged",
    );
    assert!(
        !d.log_text()
            .contains(&format!("{B2} (zone a): healthy -> unhealthy")),
        "the active checks must not have acted yet"
    );
    let st = e2e::lb_status(&d.config).unwrap();
    assert!(
        st.lines().any(|l| l.contains("10.1.2.2:8080")
            && l.contains("suspect")
            && l.contains("passive:")),
        "{st}"
    );
    let m = e2e::metrics(&topo.gw).unwrap();
    assert_eq!(
        metric(&m, "lb_target_passive_trips_total", &["10.1.2.2:8080"]),
        1
    );
    assert!(
        metric(
            &m,
            "lb_target_connection_attempts_total",
            &["10.1.2.2:8080", "result=\"refused\""]
        ) >= 3
    );
    assert!(e2e::xdp_reason(&topo.gw, "syn_redispatch") >= 3);

    // b2 is back: two passed checks end the suspicion.
    e2e::start_server(&mut topo.backends[1].ns, "b2", 8080).unwrap();
    d.expect_log(
        &[B2, "suspect -> healthy"],
        1,
        Duration::from_secs(6),
        "b2 did not come back",
    );
    let per = e2e::spread(&topo, &d, vip(), 150);
    assert!(
        per.get("b2").copied().unwrap_or(0) > 10,
        "b2 takes new flows again: {per:?}"
    );
}

/// Redispatch off: the refusals reach clients, but only until the streak
/// trips (3 by default, plus what was in flight), not until the active
/// checks (10 s here).
#[test]
fn without_redispatch_errors_stop_at_the_passive_threshold() {
    let (mut topo, _dir, d) = setup("pkill-nr", "syn_redispatch = false\n");
    let a = under_load(&mut topo, |t| t.backends[1].ns.kill_all());
    let o = load::outcome(&a, FAULT_AT, SLOW);
    eprintln!("killed, redispatch off: {o:?}");
    let errs = connect_errors(&a);
    assert!(
        (1..=8).contains(&errs.len()),
        "refusals must reach clients, only until passive health trips: {errs:?}"
    );
    d.expect_log(
        &[B2, "healthy -> suspect"],
        1,
        Duration::from_secs(2),
        "passive trip",
    );
}

/// b2's link goes down (no RST, SYNs vanish): the retransmitted SYNs go
/// to other targets, the unanswered streak trips, and new connections
/// avoid b2.
#[test]
fn blackholed_target_is_avoided_once_syns_go_unanswered() {
    let (mut topo, _dir, d) = setup("pblack", "");
    let a = under_load(&mut topo, |t| {
        t.backends[1]
            .ns
            .ip(&["link", "set", "eth0", "down"])
            .unwrap();
    });
    let o = load::outcome(&a, FAULT_AT, SLOW);
    eprintln!("blackholed, redispatch on: {o:?}");
    assert!(
        errors(&a).is_empty(),
        "clients saw errors: {:?}",
        errors(&a)
    );
    assert!(
        o.slow > 0,
        "some SYNs went to b2 and were retransmitted: {o:?}"
    );
    d.expect_log(
        &[B2, "healthy -> suspect: passive:", "SYNs unanswered"],
        1,
        Duration::from_secs(3),
        "unanswered trip not logged",
    );
    // From now on no connection waits for a retransmission.
    let _in = topo.client.enter().unwrap();
    for i in 0..100 {
        let t = std::time::Instant::now();
        let name = e2e::tcp_exchange(vip(), b"after").unwrap_or_else(|e| panic!("#{i}: {e:#}"));
        assert!(
            t.elapsed() < SLOW && name != "b2",
            "#{i}: {name} after {:?}",
            t.elapsed()
        );
    }
}
