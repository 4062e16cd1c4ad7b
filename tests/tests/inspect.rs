//! `lb flows` and `lb explain` against the data path (namespaces, `lb
//! run`, native XDP): 100 open connections are listed with the targets
//! that serve them, and `explain` names the same target for each.
//! Root only; serial; bounded.

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use tests::{
    e2e::{self, Conn, Daemon, TempDir, FAST_HC},
    topo::VIP_V4,
};

#[test]
fn flows_and_explain_agree_with_the_data_path() {
    let topo = e2e::served_topology();
    let dir = TempDir::new("inspect");
    let d = Daemon::start(&topo.gw, &dir.0, &topo.config(FAST_HC)).expect("lb run");
    let sock = format!("/run/{}.sock", topo.gw.name);
    let vip = SocketAddr::new(VIP_V4.parse().unwrap(), 80);
    let served: HashMap<String, String> = topo
        .backends
        .iter()
        .map(|b| (b.name.clone(), format!("{}:8080", b.v4)))
        .collect();
    let conns: Vec<Conn> = {
        let _in = topo.client.enter().unwrap();
        (0..100).map(|_| Conn::open(vip).unwrap()).collect()
    };
    let (st, v) = e2e::admin_post(
        &sock,
        "/v1/flows",
        r#"{"Client":"10.0.0.2","Vip":"10.100.0.1:80"}"#,
    );
    assert_eq!(st, 200, "{v}");
    let listed: HashMap<String, String> = v["Flows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["Client"].as_str().unwrap().to_string(),
                f["Target"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for c in &conns {
        let client = c.local_addr().unwrap();
        let want = &served[&c.name];
        assert_eq!(
            listed.get(&client.to_string()),
            Some(want),
            "lb flows for {client}"
        );
        let body = format!(r#"{{"Client":"{client}","Vip":"{vip}","Protocol":"tcp"}}"#);
        let (st, e) = e2e::admin_post(&sock, "/v1/explain", &body);
        assert_eq!(st, 200, "{e}");
        assert_eq!(
            e["Target"].as_str(),
            Some(want.as_str()),
            "lb explain for {client}: {e}"
        );
    }
    // The CLI's words, and its errors.
    let client = conns[0].local_addr().unwrap().to_string();
    let out = std::process::Command::new(e2e::lb_bin())
        .args(["explain", &client, "10.100.0.1:80/tcp", "--config"])
        .arg(&d.config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains(&format!("target {}", served[&conns[0].name])),
        "{text}"
    );
    assert!(text.contains("cross_zone: the all-zones ring"), "{text}");
    let (st, e) = e2e::admin_post(
        &sock,
        "/v1/explain",
        r#"{"Client":"10.0.0.2:1","Vip":"10.100.0.1:81","Protocol":"tcp"}"#,
    );
    assert_eq!(
        (st, e["Error"]["Code"].as_str()),
        (400, Some("ListenerNotFound")),
        "{e}"
    );
    let out = std::process::Command::new(e2e::lb_bin())
        .args(["flows", "--target", &served["b2"], "--config"])
        .arg(&d.config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let on_b2 = conns.iter().filter(|c| c.name == "b2").count();
    assert_eq!(
        text.lines().filter(|l| l.contains(&served["b2"])).count(),
        on_b2,
        "{text}"
    );
    drop(conns);
}

fn metric(m: &str, family: &str, labels: &[&str]) -> u64 {
    m.lines()
        .find(|l| l.starts_with(family) && labels.iter().all(|x| l.contains(x)))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no {family} with {labels:?} in\n{m}")) as u64
}

/// The CloudWatch-equivalent metrics move with real traffic: replies and
/// their bytes, a client's RST and a target's RST (counted in the XDP
/// program), healthy and unhealthy targets per group and zone, the peak
/// packet rate.
#[test]
fn cloudwatch_equivalents_count_real_traffic() {
    let mut topo = e2e::served_topology();
    let dir = TempDir::new("cw");
    let d = Daemon::start(&topo.gw, &dir.0, &topo.config(FAST_HC)).expect("lb run");
    let vip = SocketAddr::new(VIP_V4.parse().unwrap(), 80);
    let web4 = "listener=\"web4\"";
    let tcp = "protocol=\"tcp\"";
    assert_eq!(e2e::spread(&topo, &d, vip, 30).len(), 3);
    // A client that resets its connection, and one whose target dies.
    let mut on_b1 = {
        let _in = topo.client.enter().unwrap();
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.connect(&vip.into()).unwrap();
        s.set_linger(Some(Duration::ZERO)).unwrap();
        drop(s); // SO_LINGER 0: close sends RST
        (0..100)
            .map(|_| Conn::open(vip).unwrap())
            .find(|c| c.name == "b1")
            .expect("a connection on b1")
    };
    let m = e2e::metrics(&topo.gw).unwrap();
    assert_eq!(
        metric(
            &m,
            "lb_target_group_healthy_targets",
            &["tg4", "zone=\"a\""]
        ),
        2,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "lb_target_group_healthy_targets",
            &["tg4", "zone=\"b\""]
        ),
        1
    );
    topo.backends[0].ns.kill_all();
    {
        let _in = topo.client.enter().unwrap();
        // The dead process's socket answers data with RST.
        let _ = on_b1.exchange(b"anyone there?");
        let _ = on_b1.exchange(b"anyone there?");
    }
    d.expect_log(
        &["tg4/10.1.1.2:8080", "-> unhealthy"],
        1,
        Duration::from_secs(5),
        "b1 unhealthy",
    );
    // Samples are taken every 2 s.
    std::thread::sleep(Duration::from_millis(2500));
    let m = e2e::metrics(&topo.gw).unwrap();
    assert!(
        metric(&m, "lb_listener_reply_packets_total", &[web4, tcp]) >= 30 * 3,
        "{m}"
    );
    assert!(metric(&m, "lb_listener_reply_bytes_total", &[web4, tcp]) > 30 * 40);
    assert!(metric(&m, "lb_listener_client_resets_total", &[web4, tcp]) >= 1);
    assert!(metric(&m, "lb_listener_target_resets_total", &[web4, tcp]) >= 1);
    assert!(metric(&m, "lb_listener_peak_packets_per_second", &[web4, tcp]) > 0);
    assert_eq!(
        metric(
            &m,
            "lb_target_group_healthy_targets",
            &["tg4", "zone=\"a\""]
        ),
        1
    );
    assert_eq!(
        metric(
            &m,
            "lb_target_group_unhealthy_targets",
            &["tg4", "zone=\"a\""]
        ),
        1
    );
    assert!(m.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
}
