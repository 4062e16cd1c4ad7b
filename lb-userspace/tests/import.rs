//! `lb import` on saved `aws elbv2 describe-*` outputs (tests/import/*.json:
//! NLB prod-nlb with TCP:80 and TLS:443 to `web`, UDP:53 to `dns`,
//! TCP:8080 to the instance group `legacy`, and an unattached `old-api`):
//! the TOML it writes, the targets, the report, and its errors.

use std::{net::IpAddr, time::Duration};

use lb_userspace::config::{
    import::{import, Imported, Inputs},
    Config, HealthProtocol, Mode, Port, Protocol, Stickiness, Target, TargetGroup,
};
use serde_json::Value;

fn fixture(name: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/import")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The fixtures' texts, which `Inputs` borrows.
struct Files {
    lbs: String,
    listeners: String,
    groups: String,
    attributes: Vec<(&'static str, String)>,
    health: Vec<(&'static str, String)>,
}

impl Files {
    fn new() -> Files {
        Files {
            lbs: fixture("load-balancers.json"),
            listeners: fixture("listeners.json"),
            groups: fixture("target-groups.json"),
            attributes: vec![
                ("web", fixture("attributes-web.json")),
                // By ARN, as `--target-group-arn` names it.
                (
                    "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/dns/9a1c3e5b7d2f4a60",
                    fixture("attributes-dns.json"),
                ),
            ],
            health: vec![
                ("web", fixture("health-web.json")),
                ("dns", fixture("health-dns.json")),
                ("legacy", fixture("health-legacy.json")),
            ],
        }
    }

    fn inputs(&self) -> Inputs<'_> {
        Inputs {
            load_balancers: &self.lbs,
            listeners: &self.listeners,
            target_groups: &self.groups,
            attributes: self
                .attributes
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_str()))
                .collect(),
            health: self
                .health
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_str()))
                .collect(),
            interfaces: vec!["eth0".into()],
            zone: "eu-west-1a".into(),
            ..Inputs::default()
        }
    }

    /// `f` applied to the load balancers file.
    fn edit_lbs(mut self, f: impl FnOnce(&mut Value)) -> Files {
        let mut v: Value = serde_json::from_str(&self.lbs).unwrap();
        f(&mut v);
        self.lbs = v.to_string();
        self
    }
}

fn imported() -> (Imported, Config) {
    let out = import(&Files::new().inputs()).unwrap_or_else(|e| panic!("{e}"));
    let cfg = Config::parse(&out.toml).unwrap_or_else(|e| panic!("{}\n{e}", out.toml));
    (out, cfg)
}

fn group<'a>(cfg: &'a Config, name: &str) -> &'a TargetGroup {
    cfg.target_groups
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no target group {name}"))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The report line that contains every one of `words`.
fn line<'a>(out: &'a Imported, words: &[&str]) -> &'a str {
    out.report
        .iter()
        .find(|l| words.iter().all(|w| l.contains(w)))
        .unwrap_or_else(|| panic!("no report line with {words:?}:\n{}", out.report.join("\n")))
}

#[test]
fn the_toml_passes_lb_check_without_warnings() {
    let (out, cfg) = imported();
    assert!(
        cfg.warnings(&out.toml).is_empty(),
        "{:?}",
        cfg.warnings(&out.toml)
    );
    assert!(
        out.toml.starts_with("# Imported by `lb import` from network load balancer prod-nlb\n# (arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/net/prod-nlb/50dc6c495c0c9188)\n"),
        "{}",
        out.toml
    );
    assert_eq!(cfg.gateway.interfaces, ["eth0"]);
    assert_eq!(cfg.gateway.zone, "eu-west-1a");
    assert!(
        cfg.target_groups.iter().all(|t| t.targets.is_empty()),
        "targets stay out of the TOML"
    );
}

#[test]
fn listeners_map_to_the_vip_of_this_zone_and_tls_is_skipped() {
    let (out, cfg) = imported();
    let got: Vec<_> = cfg
        .listeners
        .iter()
        .map(|l| {
            (
                l.name.as_str(),
                l.address,
                l.port,
                l.protocol,
                l.target_group.as_str(),
            )
        })
        .collect();
    let vip = ip("203.0.113.10");
    assert_eq!(
        got,
        [
            ("udp-53", vip, Port(53), Protocol::Udp, "dns"),
            ("tcp-80", vip, Port(80), Protocol::Tcp, "web"),
            ("tcp-8080", vip, Port(8080), Protocol::Tcp, "legacy"),
        ]
    );
    line(&out, &["listener TLS:443", "Protocol = TLS", "skipped"]);
    line(
        &out,
        &[
            "one address per zone",
            "203.0.113.10 (of eu-west-1a) is used",
            "--vip4",
        ],
    );
}

#[test]
fn web_keeps_its_http_check_and_attributes() {
    let (out, cfg) = imported();
    let web = group(&cfg, "web");
    let hc = &web.health_check;
    assert!(hc.enabled);
    assert_eq!(hc.protocol, HealthProtocol::Http);
    assert_eq!(hc.port, None, "traffic-port");
    assert_eq!(
        (hc.path.as_str(), hc.matcher.as_str()),
        ("/healthz", "200-399")
    );
    assert_eq!(
        (hc.interval, hc.timeout()),
        (Duration::from_secs(10), Duration::from_secs(6))
    );
    assert_eq!((hc.healthy_threshold, hc.unhealthy_threshold), (3, 3));
    assert_eq!(web.deregistration_delay, Duration::from_secs(30));
    assert!(!web.deregistration_connection_termination);
    assert_eq!(web.stickiness, Stickiness::SourceIp);
    assert!(web.cross_zone);
    assert!(!web.proxy_protocol_v2);
    assert_eq!(web.unhealthy_state_routing.minimum_healthy_targets, 2);
    assert_eq!(web.unhealthy_state_routing.minimum_healthy_percentage, 0);
    assert!(web.unhealthy_connection_termination);
    // preserve_client_ip.enabled = false, and no snat address was given.
    assert_eq!((web.mode, web.snat_address), (Mode::Nat, None));
    line(
        &out,
        &[
            "target group web",
            "preserve_client_ip.enabled = false",
            "--snat4",
        ],
    );
    line(
        &out,
        &[
            "target group web",
            "dns_failover.minimum_healthy_targets.count = 1",
        ],
    );
}

#[test]
fn dns_keeps_its_tcp_check_port_and_attributes() {
    let (out, cfg) = imported();
    let dns = group(&cfg, "dns");
    let hc = &dns.health_check;
    assert_eq!(
        (hc.protocol, hc.port),
        (HealthProtocol::Tcp, Some(Port(8053)))
    );
    assert_eq!(
        (hc.interval, hc.timeout()),
        (Duration::from_secs(30), Duration::from_secs(10))
    );
    assert_eq!((hc.healthy_threshold, hc.unhealthy_threshold), (5, 2));
    assert_eq!(dns.deregistration_delay, Duration::from_secs(60));
    assert!(dns.deregistration_connection_termination);
    assert_eq!(dns.stickiness, Stickiness::None);
    assert!(
        !dns.cross_zone,
        "use_load_balancer_configuration: NLB's default"
    );
    assert!(!dns.unhealthy_connection_termination);
    assert_eq!(dns.unhealthy_draining_interval, Duration::from_secs(120));
    assert_eq!(dns.unhealthy_state_routing.minimum_healthy_percentage, 50);
    assert_eq!(dns.mode, Mode::Nat);
    line(
        &out,
        &["target group dns", "use_load_balancer_configuration"],
    );
    line(
        &out,
        &[
            "target group dns",
            "slow_start.duration_seconds",
            "not known here",
        ],
    );
}

#[test]
fn the_instance_group_is_kept_without_targets_and_clamped() {
    let (out, cfg) = imported();
    let legacy = group(&cfg, "legacy");
    assert!(!out.targets.contains_key("legacy"));
    // HealthCheckTimeoutSeconds 10 > interval 5: at most the interval here.
    assert_eq!(legacy.health_check.timeout, Some(Duration::from_secs(5)));
    assert!(
        legacy.mode == Mode::Nat,
        "instance groups preserve client addresses"
    );
    line(
        &out,
        &[
            "target group legacy",
            "TargetType = instance",
            "i-0a1b2c3d4e5f60001",
            "lb targets register",
        ],
    );
    line(
        &out,
        &[
            "target group legacy",
            "HealthCheckTimeoutSeconds = 10",
            "5 is used",
        ],
    );
    line(
        &out,
        &["target group legacy", "no describe-target-group-attributes"],
    );
    line(
        &out,
        &[
            "describe-target-groups",
            "not attached to prod-nlb",
            "not written: old-api",
        ],
    );
    assert!(cfg.target_groups.iter().all(|t| t.name != "old-api"));
}

#[test]
fn targets_per_group_skip_the_draining_one() {
    let (out, cfg) = imported();
    let t = |a: &str, port: u16, zone: &str| Target {
        address: ip(a),
        port: Port(port),
        zone: zone.into(),
        weight: 1,
    };
    assert_eq!(
        out.targets["web"],
        [
            t("10.0.1.10", 8080, "eu-west-1a"),
            t("10.0.2.10", 8080, "eu-west-1b")
        ]
    );
    assert_eq!(
        out.targets["dns"],
        [
            t("10.0.1.53", 53, "eu-west-1a"),
            t("192.168.10.53", 53, "eu-west-1a")
        ]
    );
    assert_eq!(out.targets.len(), 2);
    line(
        &out,
        &[
            "target group web",
            "10.0.1.11:8080",
            "draining",
            "not imported",
        ],
    );
    line(
        &out,
        &["192.168.10.53:53", "AvailabilityZone = all", "eu-west-1a"],
    );

    // With the targets in their groups, the config is still valid.
    let mut merged = cfg;
    for tg in &mut merged.target_groups {
        tg.targets
            .extend(out.targets.get(&tg.name).cloned().unwrap_or_default());
    }
    assert_eq!(merged.validate(), []);
}

#[test]
fn the_load_balancers_own_settings_are_reported() {
    let (out, _) = imported();
    line(
        &out,
        &["load balancer prod-nlb", "Scheme = internet-facing"],
    );
    line(
        &out,
        &[
            "load balancer prod-nlb",
            "SecurityGroups = sg-0123456789abcdef0",
        ],
    );
}

#[test]
fn a_snat_address_makes_groups_without_client_ip_snat() {
    let f = Files::new();
    let out = import(&Inputs {
        snat4: Some(ip("10.0.0.5")),
        ..f.inputs()
    })
    .unwrap();
    let cfg = Config::parse(&out.toml).unwrap();
    let web = group(&cfg, "web");
    assert_eq!(
        (web.mode, web.snat_address),
        (Mode::Snat, Some(ip("10.0.0.5")))
    );
    // Client addresses were preserved for these: still nat.
    assert_eq!(group(&cfg, "dns").mode, Mode::Nat);
    assert_eq!(group(&cfg, "legacy").mode, Mode::Nat);
}

#[test]
fn the_output_does_not_depend_on_aws_order() {
    let f = Files::new();
    let a = import(&f.inputs()).unwrap();
    let reverse = |text: &str, key: &str| {
        let mut v: Value = serde_json::from_str(text).unwrap();
        v[key].as_array_mut().unwrap().reverse();
        v.to_string()
    };
    let listeners = reverse(&f.listeners, "Listeners");
    let groups = reverse(&f.groups, "TargetGroups");
    let web = reverse(&f.health[0].1, "TargetHealthDescriptions");
    let attrs = reverse(&f.attributes[0].1, "Attributes");
    let mut i = f.inputs();
    i.listeners = &listeners;
    i.target_groups = &groups;
    i.health[0].1 = &web;
    i.attributes[0].1 = &attrs;
    i.attributes.reverse();
    let b = import(&i).unwrap();
    assert_eq!(a.toml, b.toml);
    assert_eq!(a.targets, b.targets);
    assert_eq!(a.report, b.report);
}

#[test]
fn a_given_vip_is_used_and_an_nlb_without_addresses_needs_one() {
    let f = Files::new().edit_lbs(|v| {
        for z in v["LoadBalancers"][0]["AvailabilityZones"]
            .as_array_mut()
            .unwrap()
        {
            z.as_object_mut().unwrap().remove("LoadBalancerAddresses");
        }
    });
    let e = import(&f.inputs()).unwrap_err();
    assert_eq!(
        e,
        "load balancer prod-nlb has no fixed IPv4 address (AvailabilityZones[].LoadBalancerAddresses): give the listeners' IPv4 VIP with --vip4"
    );
    let out = import(&Inputs {
        vip4: Some(ip("192.0.2.1")),
        ..f.inputs()
    })
    .unwrap();
    let cfg = Config::parse(&out.toml).unwrap();
    assert!(cfg.listeners.iter().all(|l| l.address == ip("192.0.2.1")));
    assert!(!out
        .report
        .iter()
        .any(|l| l.contains("one address per zone")));
}

#[test]
fn only_one_network_load_balancer_is_imported() {
    let f = Files::new().edit_lbs(|v| v["LoadBalancers"][0]["Type"] = "application".into());
    assert_eq!(
        import(&f.inputs()).unwrap_err(),
        "load balancer prod-nlb has Type \"application\": only network load balancers (Type \"network\") can be imported"
    );
    let f = Files::new().edit_lbs(|v| {
        let mut other = v["LoadBalancers"][0].clone();
        other["LoadBalancerName"] = "staging-nlb".into();
        v["LoadBalancers"].as_array_mut().unwrap().push(other);
    });
    assert_eq!(
        import(&f.inputs()).unwrap_err(),
        "describe-load-balancers lists 2 load balancers (prod-nlb, staging-nlb): import one at a time (save `aws elbv2 describe-load-balancers --names NAME`)"
    );
    let f = Files::new().edit_lbs(|v| v["LoadBalancers"] = Value::Array(vec![]));
    assert!(import(&f.inputs())
        .unwrap_err()
        .contains("LoadBalancers is empty"));
}

#[test]
fn bad_inputs_are_named() {
    let f = Files::new();
    let mut i = f.inputs();
    i.interfaces.clear();
    assert!(import(&i).unwrap_err().starts_with("no interfaces"));

    let mut i = f.inputs();
    i.health.push(("nope".into(), "{}"));
    assert_eq!(
        import(&i).unwrap_err(),
        "describe-target-health output given for \"nope\": describe-target-groups lists no target group of that name or ARN"
    );

    let mut i = f.inputs();
    i.health[0].1 = r#"{"TargetHealthDescriptions": [{"Target": {"Port": 80}}]}"#;
    assert_eq!(
        import(&i).unwrap_err(),
        "describe-target-health of web: TargetHealthDescriptions[0].Target: missing field `Id` at line 1 column 53"
    );

    let mut i = f.inputs();
    i.listeners = &f.groups;
    assert!(import(&i)
        .unwrap_err()
        .starts_with("describe-listeners: missing field `Listeners`"));
}

/// `lb import` as an operator runs it: the files on its command line, a
/// config that `lb check` accepts, and the state file the daemon reads.
#[test]
fn the_command_writes_a_config_lb_check_accepts_and_the_state_file() {
    let dir = std::env::temp_dir().join(format!("lb-import-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fx = |n: &str| {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/import")
            .join(n)
            .display()
            .to_string()
    };
    let out = dir.join("lb.toml");
    let lb = env!("CARGO_BIN_EXE_lb");
    let run = |args: &[&str]| std::process::Command::new(lb).args(args).output().unwrap();
    let o = run(&[
        "import",
        "--load-balancers",
        &fx("load-balancers.json"),
        "--listeners",
        &fx("listeners.json"),
        "--target-groups",
        &fx("target-groups.json"),
        "--attributes",
        &format!("web={}", fx("attributes-web.json")),
        "--health",
        &format!("web={}", fx("health-web.json")),
        "--health",
        &format!("dns={}", fx("health-dns.json")),
        "--interfaces",
        "eth0,eth1",
        "--zone",
        "eu-west-1a",
        "--out",
        out.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{text}");
    assert!(
        text.contains("no equivalent:") && text.contains("TLS"),
        "{text}"
    );
    let check = run(&["check", out.to_str().unwrap()]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("targets.json")).unwrap()).unwrap();
    assert!(
        state["target_groups"]["web"]
            .as_array()
            .is_some_and(|t| !t.is_empty()),
        "{state}"
    );
    // Never over an existing file.
    let again = run(&[
        "import",
        "--load-balancers",
        &fx("load-balancers.json"),
        "--listeners",
        &fx("listeners.json"),
        "--target-groups",
        &fx("target-groups.json"),
        "--interfaces",
        "eth0",
        "--zone",
        "a",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!again.status.success());
    std::fs::remove_dir_all(&dir).unwrap();
}
