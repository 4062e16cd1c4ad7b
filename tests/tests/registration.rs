//! Targets registered at runtime (`lb targets`, the elbv2-shaped API on
//! the admin socket) under real traffic: a new target is checked and takes
//! new flows, a deregistered one drains with its open connection working,
//! registrations survive kill -9, SIGTERM and reloads, 100 register in one
//! call, and bad requests get elbv2's error codes and change nothing.
//! Root only; serial; bounded.

use std::{
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use tests::{
    e2e::{self, Conn, Daemon, TempDir, FAST_HC},
    netns::wait_until,
    topo::{Topology, VIP_V4},
};

const B3: &str = "[[target_group.targets]]\naddress = \"10.1.3.2\"\nport = 8080\nzone = \"b\"\n\n";

fn vip() -> SocketAddr {
    SocketAddr::new(VIP_V4.parse().unwrap(), 80)
}

/// The topology's config without b3 in tg4, its state in `dir`, drains of 4s.
fn config(topo: &Topology, dir: &Path) -> String {
    let c = topo.config(&format!("deregistration_delay = \"4s\"\n{FAST_HC}"));
    assert!(c.contains(B3));
    c.replacen(B3, "", 1).replace(
        &format!("state_dir = \"{}\"", topo.state_dir()),
        &format!("state_dir = \"{}\"", dir.join("state").display()),
    )
}

/// `lb` with `args` against the daemon's config.
fn lb(d: &Daemon, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(e2e::lb_bin())
        .args(args)
        .args(["--config", d.config.to_str().unwrap()])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn describe(sock: &str) -> Vec<serde_json::Value> {
    let (st, v) = e2e::admin_post(
        sock,
        "/v1/DescribeTargetHealth",
        r#"{"TargetGroupArn":"tg4"}"#,
    );
    assert_eq!(st, 200, "{v}");
    v["TargetHealthDescriptions"].as_array().unwrap().clone()
}

fn state_of(sock: &str, id: &str) -> Option<(String, String)> {
    describe(sock)
        .iter()
        .find(|t| t["Target"]["Id"] == id)
        .map(|t| {
            (
                t["TargetHealth"]["State"].as_str().unwrap().to_string(),
                t["Source"].as_str().unwrap().to_string(),
            )
        })
}

#[test]
fn registered_targets_serve_drain_and_persist() {
    let topo = e2e::served_topology();
    let dir = TempDir::new("register");
    let d = Daemon::start(&topo.gw, &dir.0, &config(&topo, &dir.0)).expect("lb run");
    let sock = format!("/run/{}.sock", topo.gw.name);
    assert!(!e2e::spread(&topo, &d, vip(), 60).contains_key("b3"));

    // Connection: close load throughout (10 s at one per 10 ms): no
    // registration, restart, reload or drain below may fail one.
    let load = tests::load::start(&topo.client.name, vip(), 1000, Duration::from_millis(10), 8);
    // Registered: initial, checked, then in the rings.
    let t0 = Instant::now();
    let (ok, out) = lb(
        &d,
        &[
            "targets",
            "register",
            "--target-group",
            "tg4",
            "10.1.3.2:8080@b",
        ],
    );
    assert!(ok, "{out}");
    d.expect_log(
        &["target group tg4: registered 1 target(s): 10.1.3.2:8080 (API)"],
        1,
        Duration::from_secs(2),
        "register",
    );
    let first = wait_until(Duration::from_secs(10), || {
        let _in = topo.client.enter().unwrap();
        e2e::tcp_exchange(vip(), b"x").is_ok_and(|n| n == "b3")
    });
    assert!(first, "b3 never took a new flow:\n{}", d.log_text());
    eprintln!(
        "register -> first new flow on the target: {:?}",
        t0.elapsed()
    );
    assert_eq!(
        state_of(&sock, "10.1.3.2"),
        Some(("healthy".into(), "registered".into()))
    );
    let (_, table) = lb(&d, &["targets", "describe", "--target-group", "tg4"]);
    assert!(
        table.lines().any(|l| l.contains("10.1.3.2:8080")
            && l.contains("healthy")
            && l.contains("registered")),
        "{table}"
    );

    // Restarts and reloads keep it: kill -9, SIGTERM, SIGHUP.
    let cfg = std::fs::read_to_string(&d.config).unwrap();
    d.kill9();
    let d = Daemon::start(&topo.gw, &dir.0, &cfg).expect("restart after kill -9");
    assert!(
        d.log_text().contains("1 target(s) registered at runtime"),
        "{}",
        d.log_text()
    );
    assert_eq!(state_of(&sock, "10.1.3.2").unwrap().1, "registered");
    d.sigterm();
    let d = Daemon::start(&topo.gw, &dir.0, &cfg).expect("restart after SIGTERM");
    d.reload(&cfg).unwrap();
    assert!(
        d.log_text().contains("(1 registered at runtime)"),
        "{}",
        d.log_text()
    );
    assert!(e2e::spread(&topo, &d, vip(), 90).contains_key("b3"));

    // Deregistered: draining; its open connection works on, new flows avoid it.
    let mut conn = {
        let _in = topo.client.enter().unwrap();
        (0..200)
            .map(|_| Conn::open(vip()).unwrap())
            .find(|c| c.name == "b3")
            .expect("a connection on b3")
    };
    let (ok, out) = lb(
        &d,
        &[
            "targets",
            "deregister",
            "--target-group",
            "tg4",
            "10.1.3.2:8080",
        ],
    );
    assert!(ok, "{out}");
    assert_eq!(state_of(&sock, "10.1.3.2").unwrap().0, "draining");
    {
        let _in = topo.client.enter().unwrap();
        conn.exchange(b"still here")
            .expect("a draining target keeps its connection");
    }
    assert!(!e2e::spread(&topo, &d, vip(), 60).contains_key("b3"));
    d.expect_log(
        &["target tg4/10.1.3.2:8080 drained"],
        1,
        Duration::from_secs(8),
        "drain end",
    );
    assert_eq!(state_of(&sock, "10.1.3.2"), None);
    // The state file no longer has it: a restart does not bring it back.
    let saved = std::fs::read_to_string(dir.0.join("state/targets.json")).unwrap();
    assert!(!saved.contains("10.1.3.2"), "{saved}");

    let attempts = load.join();
    let failed: Vec<_> = attempts.iter().filter(|a| a.result.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} connections failed meanwhile: {:?}",
        failed.len(),
        attempts.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(
        attempts.iter().any(|a| a.result.as_deref() == Ok("b3")),
        "the load reached the registered target"
    );

    // 100 in one call, and out again in one call.
    let many: Vec<String> = (100..200)
        .map(|i| format!(r#"{{"Id":"10.1.3.{i}","Port":8080,"AvailabilityZone":"b"}}"#))
        .collect();
    let body = format!(
        r#"{{"TargetGroupArn":"arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/tg4/73e2d6bc24d8a067","Targets":[{}]}}"#,
        many.join(",")
    );
    let t = Instant::now();
    let (st, v) = e2e::admin_post(&sock, "/v1/RegisterTargets", &body);
    eprintln!("100 targets registered in one call: {:?}", t.elapsed());
    assert_eq!((st, v), (200, serde_json::json!({})));
    assert_eq!(describe(&sock).len(), 2 + 100);
    assert!(
        e2e::spread(&topo, &d, vip(), 30).len() == 2,
        "the new ones are not healthy: no flows"
    );
    let (st, _) = e2e::admin_post(&sock, "/v1/DeregisterTargets", &body);
    assert_eq!(st, 200);
    assert_eq!(
        describe(&sock)
            .iter()
            .filter(|t| t["TargetHealth"]["State"] != "draining")
            .count(),
        2
    );
}

/// Bad requests: elbv2's error codes, the field or target named, and
/// nothing changed (state file, targets).
#[test]
fn bad_requests_get_elbv2_errors_and_change_nothing() {
    let topo = e2e::served_topology();
    let dir = TempDir::new("register-bad");
    let d = Daemon::start(&topo.gw, &dir.0, &config(&topo, &dir.0)).expect("lb run");
    let sock = format!("/run/{}.sock", topo.gw.name);
    let (st, _) = e2e::admin_post(
        &sock,
        "/v1/RegisterTargets",
        r#"{"TargetGroupArn":"tg4","Targets":[{"Id":"10.1.3.2","Port":8080}]}"#,
    );
    assert_eq!(st, 200);
    let saved = std::fs::read_to_string(dir.0.join("state/targets.json")).unwrap();
    let before = describe(&sock);
    for (body, code, says) in [
        (
            r#"{"TargetGroupArn":"nope","Targets":[{"Id":"10.1.3.9","Port":80}]}"#,
            "TargetGroupNotFound",
            "nope",
        ),
        (
            r#"{"TargetGroupArn":"tg4","Targets":[{"Id":"i-0abc","Port":80}]}"#,
            "InvalidTarget",
            "not an IP address",
        ),
        (
            r#"{"TargetGroupArn":"tg4","Targets":[{"Id":"fd01:3::9","Port":80}]}"#,
            "InvalidTarget",
            "IPv4",
        ),
        (
            r#"{"TargetGroupArn":"tg4","Targets":[{"Id":"10.1.3.9","Port":80}"#,
            "ValidationError",
            "request body",
        ),
        (
            r#"{"TargetGroupArn":"tg4","Targetz":[]}"#,
            "ValidationError",
            "Targetz",
        ),
    ] {
        let (st, v) = e2e::admin_post(&sock, "/v1/RegisterTargets", body);
        assert_eq!(st, 400, "{body}: {v}");
        assert_eq!(v["Error"]["Code"], code, "{body}: {v}");
        assert!(
            v["Error"]["Message"].as_str().unwrap().contains(says),
            "{body}: {v}"
        );
    }
    let (st, v) = e2e::admin_post(
        &sock,
        "/v1/DeregisterTargets",
        r#"{"TargetGroupArn":"tg4","Targets":[{"Id":"10.1.1.2","Port":8080}]}"#,
    );
    assert_eq!(
        (st, v["Error"]["Code"].as_str()),
        (400, Some("InvalidTarget")),
        "{v}"
    );
    assert!(
        v["Error"]["Message"]
            .as_str()
            .unwrap()
            .contains("config file"),
        "{v}"
    );
    let (ok, out) = lb(
        &d,
        &["targets", "register", "--target-group", "tg4", "10.1.3.2"],
    );
    assert!(!ok && out.contains("ADDR:PORT"), "{out}");
    assert_eq!(
        std::fs::read_to_string(dir.0.join("state/targets.json")).unwrap(),
        saved
    );
    assert_eq!(describe(&sock).len(), before.len());
    // The API is the daemon's user's (and root's) only.
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=12345", "--regid=12345", "--clear-groups"])
        .arg(e2e::lb_bin())
        .args([
            "targets",
            "describe",
            "--config",
            d.config.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
}

fn attr(sock: &str, key: &str) -> (String, bool) {
    let (st, v) = e2e::admin_post(
        sock,
        "/v1/DescribeTargetGroupAttributes",
        r#"{"TargetGroupArn":"tg4"}"#,
    );
    assert_eq!(st, 200, "{v}");
    let a = v["Attributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["Key"] == key)
        .unwrap_or_else(|| panic!("no {key}: {v}"))
        .clone();
    (
        a["Value"].as_str().unwrap().to_string(),
        a["SetAtRuntime"] == true,
    )
}

/// NLB's target group attributes modified at runtime take effect on
/// traffic (stickiness: one client, one target), survive a restart, are
/// refused when unknown or malformed, and reset to the file's values.
#[test]
fn attributes_modified_at_runtime_apply_and_persist() {
    let topo = e2e::served_topology();
    let dir = TempDir::new("attrs");
    let cfg = config(&topo, &dir.0);
    let d = Daemon::start(&topo.gw, &dir.0, &cfg).expect("lb run");
    let sock = format!("/run/{}.sock", topo.gw.name);
    assert_eq!(
        e2e::spread(&topo, &d, vip(), 40).len(),
        2,
        "b1 and b2 share flows"
    );
    let set = r#"{"TargetGroupArn":"tg4","Attributes":[{"Key":"stickiness.enabled","Value":"true"},{"Key":"stickiness.type","Value":"source_ip"}]}"#;
    let (st, v) = e2e::admin_post(&sock, "/v1/ModifyTargetGroupAttributes", set);
    assert_eq!(st, 200, "{v}");
    assert_eq!(attr(&sock, "stickiness.enabled"), ("true".into(), true));
    assert_eq!(
        e2e::spread(&topo, &d, vip(), 40).len(),
        1,
        "sticky: one client, one target"
    );
    d.expect_log(
        &["modified attributes stickiness.enabled=true"],
        1,
        Duration::from_secs(2),
        "logged",
    );

    d.kill9();
    let d = Daemon::start(&topo.gw, &dir.0, &cfg).expect("restart");
    assert_eq!(attr(&sock, "stickiness.enabled"), ("true".into(), true));
    assert_eq!(
        e2e::spread(&topo, &d, vip(), 40).len(),
        1,
        "still sticky after a restart"
    );

    for body in [
        r#"{"TargetGroupArn":"tg4","Attributes":[{"Key":"load_balancing.algorithm.type","Value":"x"}]}"#,
        r#"{"TargetGroupArn":"tg4","Attributes":[{"Key":"deregistration_delay.timeout_seconds","Value":"soon"}]}"#,
        r#"{"TargetGroupArn":"tg4","Attributes":[{"Key":"health_check.healthy_threshold_count","Value":"50"}]}"#,
    ] {
        let (st, v) = e2e::admin_post(&sock, "/v1/ModifyTargetGroupAttributes", body);
        assert_eq!(
            (st, v["Error"]["Code"].as_str()),
            (400, Some("InvalidConfigurationRequest")),
            "{body}: {v}"
        );
    }
    let (st, v) = e2e::admin_post(
        &sock,
        "/v1/ResetTargetGroupAttributes",
        r#"{"TargetGroupArn":"tg4","Attributes":[{"Key":"stickiness.enabled"}]}"#,
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(attr(&sock, "stickiness.enabled"), ("false".into(), false));
    assert_eq!(
        e2e::spread(&topo, &d, vip(), 40).len(),
        2,
        "the file's value again"
    );
}

fn listener_idle(sock: &str, listener: &str) -> (String, bool) {
    let body = format!(r#"{{"ListenerArn":"{listener}"}}"#);
    let (st, v) = e2e::admin_post(sock, "/v1/DescribeListenerAttributes", &body);
    assert_eq!(st, 200, "{v}");
    let a = &v["Attributes"][0];
    assert_eq!(a["Key"], "tcp.idle_timeout.seconds", "{v}");
    (
        a["Value"].as_str().unwrap().to_string(),
        a["SetAtRuntime"] == true,
    )
}

/// The idle timeout `lb flows` reports for `client`'s flow, if listed.
fn listed_timeout(sock: &str, client: SocketAddr) -> Option<u64> {
    let (st, v) = e2e::admin_post(sock, "/v1/flows", r#"{"Vip":"10.100.0.1:80"}"#);
    assert_eq!(st, 200, "{v}");
    v["Flows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["Client"] == client.to_string().as_str())
        .map(|f| f["IdleTimeoutS"].as_u64().unwrap())
}

/// NLB's per-listener TCP idle timeout set at runtime: the listener's new
/// flows take it (`lb flows` shows it, and stops listing them once idle
/// past it), its open flows keep the timeout they opened with, the other
/// listener keeps the gateway's; it survives kill -9, bad requests are
/// refused with elbv2's codes, and a reset restores the file's value.
#[test]
fn listener_idle_timeout_set_at_runtime_applies_to_new_flows_and_persists() {
    let topo = e2e::served_topology();
    let dir = TempDir::new("idle");
    let cfg = config(&topo, &dir.0);
    let d = Daemon::start(&topo.gw, &dir.0, &cfg).expect("lb run");
    let sock = format!("/run/{}.sock", topo.gw.name);
    assert_eq!(listener_idle(&sock, "web4"), ("350".into(), false));
    let mut old = {
        let _in = topo.client.enter().unwrap();
        Conn::open(vip()).unwrap()
    };
    let (ok, out) = lb(
        &d,
        &[
            "attributes",
            "set",
            "--listener",
            "web4",
            "tcp.idle_timeout.seconds=2",
        ],
    );
    assert!(ok && out.contains("(set at runtime)"), "{out}");
    d.expect_log(
        &["listener web4: modified attributes tcp.idle_timeout.seconds=2"],
        1,
        Duration::from_secs(2),
        "logged",
    );
    assert_eq!(listener_idle(&sock, "web6"), ("350".into(), false));
    let mut new = {
        let _in = topo.client.enter().unwrap();
        Conn::open(vip()).unwrap()
    };
    let (o, n) = (old.local_addr().unwrap(), new.local_addr().unwrap());
    assert_eq!(listed_timeout(&sock, o), Some(350), "opened before: 350 s");
    assert_eq!(listed_timeout(&sock, n), Some(2), "the listener's 2 s");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        listed_timeout(&sock, n),
        None,
        "idle past 2 s: no longer held"
    );
    assert_eq!(listed_timeout(&sock, o), Some(350), "still held");
    // Past its timeout a flow is picked again: the same target while the
    // ring is unchanged, so the connection goes on.
    new.exchange(b"after idle\n").unwrap();
    old.exchange(b"still here\n").unwrap();

    d.kill9();
    let d = Daemon::start(&topo.gw, &dir.0, &cfg).expect("restart");
    assert_eq!(listener_idle(&sock, "web4"), ("2".into(), true));
    for (body, code) in [
        (
            r#"{"ListenerArn":"web4","Attributes":[{"Key":"tcp.idle_timeout.seconds","Value":"7000"}]}"#,
            "InvalidConfigurationRequest",
        ),
        (
            r#"{"ListenerArn":"web4","Attributes":[{"Key":"idle_timeout.timeout_seconds","Value":"60"}]}"#,
            "InvalidConfigurationRequest",
        ),
        (
            r#"{"ListenerArn":"api","Attributes":[{"Key":"tcp.idle_timeout.seconds","Value":"60"}]}"#,
            "ListenerNotFound",
        ),
        (
            r#"{"ListenerArn":"web4","TargetGroupArn":"tg4","Attributes":[]}"#,
            "ValidationError",
        ),
    ] {
        let (st, v) = e2e::admin_post(&sock, "/v1/ModifyListenerAttributes", body);
        assert_eq!(
            (st, v["Error"]["Code"].as_str()),
            (400, Some(code)),
            "{body}: {v}"
        );
    }
    assert_eq!(
        listener_idle(&sock, "web4"),
        ("2".into(), true),
        "unchanged"
    );
    let (ok, out) = lb(
        &d,
        &[
            "attributes",
            "reset",
            "--listener",
            "web4",
            "tcp.idle_timeout.seconds",
        ],
    );
    assert!(ok, "{out}");
    assert_eq!(listener_idle(&sock, "web4"), ("350".into(), false));
    let fresh = {
        let _in = topo.client.enter().unwrap();
        Conn::open(vip()).unwrap()
    };
    assert_eq!(
        listed_timeout(&sock, fresh.local_addr().unwrap()),
        Some(350)
    );
}
