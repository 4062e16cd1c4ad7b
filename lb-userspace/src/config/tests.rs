//! Config parsing and validation, by the messages an operator sees.
use super::*;

const BASE: &str = r#"[gateway]
interfaces = ["eth0"]
zone = "a"

[[listener]]
name = "web"
address = "10.0.0.1"
port = 80
protocol = "tcp"
target_group = "web"

[[target_group]]
name = "web"
[[target_group.targets]]
address = "10.1.0.1"
port = 8080
zone = "a"
"#;

/// The single error of `text`, as printed.
fn error(text: &str) -> String {
    match Config::parse(text) {
        Ok(_) => panic!("config should be rejected:\n{text}"),
        Err(e) => {
            assert_eq!(e.0.len(), 1, "one error expected: {e}");
            e.to_string()
        }
    }
}

#[test]
fn base_is_valid_with_nlb_defaults() {
    let c = Config::parse(BASE).unwrap();
    let tg = &c.target_groups[0];
    assert_eq!(tg.deregistration_delay, Duration::from_secs(300));
    assert!(!tg.cross_zone);
    let hc = &tg.health_check;
    assert_eq!(
        (hc.interval, hc.timeout()),
        (Duration::from_secs(30), Duration::from_secs(10))
    );
    assert_eq!((hc.healthy_threshold, hc.unhealthy_threshold), (5, 2));
    assert_eq!(tg.targets[0].weight, 1);
}

#[test]
fn port_out_of_range_names_field_and_line() {
    let text = format!("{BASE}\n[[listener]]\nname = \"two\"\naddress = \"10.0.0.2\"\nport = 70000\nprotocol = \"udp\"\ntarget_group = \"web\"\n");
    assert_eq!(
        error(&text),
        "listener[1].port: 70000 is out of range (1-65535) at line 22"
    );
}

#[test]
fn announce_defaults_and_errors() {
    assert_eq!(Config::parse(BASE).unwrap().announce, None);
    // A scale-out set shares one hash key.
    let seeded = BASE.replacen(
        "zone = \"a\"\n",
        "zone = \"a\"\nhash_seed = \"0011223344556677\"\n",
        1,
    );
    let on = Config::parse(&format!("{seeded}\n[announce]\n")).unwrap();
    assert_eq!(on.announce, Some(Announce::default()));
    assert!(
        error(&format!("{BASE}\n[announce]\n"))
            .starts_with("gateway.hash_seed: is needed with [announce]"),
        "{}",
        error(&format!("{BASE}\n[announce]\n"))
    );
    assert_eq!(
        error(&format!("{seeded}\n[announce]\ntable = 254\n")),
        "announce.table: 254 is a reserved table (0, 253 default, 254 main, 255 local); use a dedicated one such as 100 at line 21"
    );
    assert_eq!(
        error(&format!("{seeded}\n[announce]\ndevice = \"way-too-long-name0\"\n")),
        "announce.device: \"way-too-long-name0\" is not an interface name (1-15 of a-z, A-Z, 0-9, '-', '_', '.') at line 21"
    );
    assert!(error(&format!("{seeded}\n[announce]\ntabel = 7\n")).contains("unknown field `tabel`"));
    assert_eq!(
        error(&format!("{seeded}\n[announce]\nwithdraw_grace = \"5m\"\n")),
        "announce.withdraw_grace: must be at most 60s (a stop waits that long) at line 21"
    );
    assert_eq!(Announce::default().withdraw_grace, Duration::from_secs(2));
}

#[test]
fn unknown_target_group() {
    let text = BASE.replace("target_group = \"web\"", "target_group = \"nope\"");
    assert_eq!(
        error(&text),
        "listener[0].target_group: unknown target group \"nope\" at line 10"
    );
}

#[test]
fn duplicate_names() {
    let text = format!("{BASE}\n[[target_group]]\nname = \"web\"\n");
    assert_eq!(
        error(&text),
        "target_group[1].name: duplicate target group name \"web\" at line 20"
    );
    let text = format!("{BASE}\n[[listener]]\nname = \"web\"\naddress = \"10.0.0.3\"\nport = 81\nprotocol = \"udp\"\ntarget_group = \"web\"\n");
    assert!(error(&text).starts_with("listener[1].name: duplicate listener name \"web\""));
}

#[test]
fn address_family_mismatch() {
    let text = BASE.replace("address = \"10.1.0.1\"", "address = \"fd01::1\"");
    assert_eq!(
        error(&text),
        "target_group[0].targets[0].address: fd01::1 is not of the family of listener \"web\" (10.0.0.1) at line 15"
    );
}

#[test]
fn listener_key_used_twice() {
    let text = format!("{BASE}\n[[listener]]\nname = \"dup\"\naddress = \"10.0.0.1\"\nport = 80\nprotocol = \"tcp_udp\"\ntarget_group = \"web\"\n");
    let e = Config::parse(&text).unwrap_err().to_string();
    assert!(
        e.contains("listener[1]: 10.0.0.1:80 tcp is already used by listener[0]"),
        "{e}"
    );
}

#[test]
fn snat_needs_an_address() {
    let text = BASE.replace(
        "name = \"web\"\n[[target_group.targets]]",
        "name = \"web\"\nmode = \"snat\"\n[[target_group.targets]]",
    );
    assert!(
        error(&text).starts_with("target_group[0].snat_address: is required when mode = \"snat\"")
    );
}

#[test]
fn health_check_ranges() {
    let hc = |extra: &str| format!("{BASE}\n[target_group.health_check]\n{extra}\n");
    // A zero interval is one error, not also a false one about the timeout.
    assert_eq!(
        error(&hc("interval = \"0s\"")),
        "target_group[0].health_check.interval: 0s is out of range (100ms-300s) at line 20"
    );
    assert!(error(&hc("healthy_threshold = 11"))
        .starts_with("target_group[0].health_check.healthy_threshold: 11 is out of range (2-10)"));
    assert_eq!(
        error(&hc("interval = \"5s\"\ntimeout = \"6s\"")),
        "target_group[0].health_check.timeout: 6s > interval 5s: must be at most the interval at line 21"
    );
    assert!(
        error(&hc("matcher = \"200-600\"")).starts_with("target_group[0].health_check.matcher:")
    );
    assert!(error(&hc("path = \"health\"")).starts_with("target_group[0].health_check.path:"));
}

#[test]
fn bad_values_are_parse_errors_with_lines() {
    let e = error(&BASE.replace("protocol = \"tcp\"", "protocol = \"sctp\""));
    assert_eq!(
        e,
        "listener[0].protocol: unknown variant `sctp`, expected one of `tcp`, `udp`, `tcp_udp`, `tls` at line 9"
    );
    let e = error(&BASE.replace(
        "name = \"web\"\n[[target_group.targets]]",
        "name = \"web\"\nderegistration_delay = \"five\"\n[[target_group.targets]]",
    ));
    assert!(
        e.starts_with("target_group[0].deregistration_delay: bad duration \"five\""),
        "{e}"
    );
    let e = error(&BASE.replace("zone = \"a\"\n\n", "zone = \"a\"\ncolour = \"blue\"\n\n"));
    assert!(
        e.starts_with("gateway.colour: unknown field `colour`") && e.ends_with("at line 4"),
        "{e}"
    );
}

/// Type and syntax errors name the field path and the value written.
#[test]
fn type_errors_name_field_and_value() {
    assert_eq!(
        error(&BASE.replace("port = 80\n", "port = \"80\"\n")),
        "listener[0].port: expected a number, got \"80\" at line 8"
    );
    assert_eq!(
        error(&BASE.replace("\"10.1.0.1\"", "\"10.1.0.300\"")),
        "target_group[0].targets[0].address: \"10.1.0.300\" is not an IP address at line 15"
    );
    assert_eq!(
        error(&BASE.replace("zone = \"a\"\n\n", "zone = 7\n\n")),
        "gateway.zone: expected a string, got 7 at line 3"
    );
}

#[test]
fn gateway_settings() {
    assert!(
        error(&BASE.replace("zone = \"a\"\n\n", "zone = \"a\"\nring_size = 65536\n\n"))
            .starts_with("gateway.ring_size: 65536 is not a prime number")
    );
    assert!(
        error(&BASE.replace("zone = \"a\"\n\n", "zone = \"a\"\nsnat_ports = \"9-1\"\n\n"))
            .starts_with("gateway.snat_ports:")
    );
    assert!(error(&BASE.replace(
        "zone = \"a\"\n\n",
        "zone = \"a\"\nmetrics_address = \"localhost\"\n\n"
    ))
    .starts_with("gateway.metrics_address:"));
}

#[test]
fn proxy_protocol_needs_the_proxy_data_plane() {
    let text = BASE.replace(
        "name = \"web\"\n[[target_group.targets]]",
        "name = \"web\"\nproxy_protocol_v2 = true\n[[target_group.targets]]",
    );
    assert!(error(&text)
        .starts_with("target_group[0].proxy_protocol_v2: needs gateway.dataplane = \"proxy\""));
    assert!(Config::parse(&text.replace(
        "zone = \"a\"\n\n",
        "zone = \"a\"\ndataplane = \"proxy\"\n\n"
    ))
    .is_ok());
}

#[test]
fn nat_target_may_serve_up_to_four_listeners() {
    let more = |n: usize| {
        let mut t = BASE.to_string();
        for k in 0..n {
            t += &format!("\n[[listener]]\nname = \"l{k}\"\naddress = \"10.0.{k}.9\"\nport = 80\nprotocol = \"tcp\"\ntarget_group = \"web\"\n");
        }
        t
    };
    assert!(Config::parse(&more(3)).is_ok(), "four listeners");
    let e = error(&more(4));
    assert!(e.contains("serves more than 4 nat listeners"), "{e}");
}

#[test]
fn restart_only_settings_keep_their_running_values() {
    let running = Config::parse(BASE).unwrap().gateway;
    let mut new = Config::parse(&BASE.replace(
        "zone = \"a\"\n\n",
        "zone = \"b\"\nring_size = 251\nmax_vips = 8\ntcp_idle_timeout = \"60s\"\n\n",
    ))
    .unwrap()
    .gateway;
    assert_eq!(new.keep_restart_only(&running), ["ring_size", "max_vips"]);
    assert_eq!(
        (new.ring_size, new.max_vips),
        (running.ring_size, running.max_vips)
    );
    // Reloadable settings take their new values.
    assert_eq!(new.zone, "b");
    assert_eq!(new.tcp_idle_timeout, Duration::from_secs(60));
}

#[test]
fn bounds_an_operator_can_rely_on() {
    let gw = |k: &str| BASE.replace("zone = \"a\"\n\n", &format!("zone = \"a\"\n{k}\n\n"));
    let tg = |k: &str| {
        BASE.replace(
            "name = \"web\"\n[[target_group.targets]]",
            &format!("name = \"web\"\n{k}\n[[target_group.targets]]"),
        )
    };
    for (text, want) in [
        (
            tg("deregistration_delay = \"100000000s\""),
            "target_group[0].deregistration_delay:",
        ),
        (gw("conntrack_size = 100000000"), "gateway.conntrack_size:"),
        (gw("snat_table_size = 0"), "gateway.snat_table_size:"),
        (
            gw("passthrough_table_size = 10"),
            "gateway.passthrough_table_size:",
        ),
        (gw("tcp_idle_timeout = \"0s\""), "gateway.tcp_idle_timeout:"),
        (gw("tcp_syn_timeout = \"10m\""), "gateway.tcp_syn_timeout:"),
        (
            gw("hash_seed = \"secret\""),
            "gateway.hash_seed: must be 16 hex digits",
        ),
        (gw("new_flow_limit = 0"), "gateway.new_flow_limit:"),
        (gw("udp_idle_timeout = \"2h\""), "gateway.udp_idle_timeout:"),
        (
            gw("tcp_closing_timeout = \"1h\""),
            "gateway.tcp_closing_timeout:",
        ),
        (
            tg("[target_group.health_check]\ninterval = \"10m\"\ntimeout = \"5s\""),
            "target_group[0].health_check.interval:",
        ),
        (
            tg("[target_group.health_check]\nunhealthy_threshold = 1"),
            "target_group[0].health_check.unhealthy_threshold: 1 is out of range (2-10)",
        ),
        (
            BASE.replace(
                "protocol = \"tcp\"",
                "protocol = \"tcp\"\ntcp_idle_timeout = \"2h\"",
            ),
            "listener[0].tcp_idle_timeout: 2h is out of range (1s-6000s)",
        ),
        (
            BASE.replace(
                "protocol = \"tcp\"",
                "protocol = \"udp\"\ntcp_idle_timeout = \"60s\"",
            )
            .replace(
                "name = \"web\"\n[[target_group.targets]]",
                "name = \"web\"\nhealth_check = { enabled = false }\n[[target_group.targets]]",
            ),
            "listener[0].tcp_idle_timeout: a UDP listener has no TCP idle timeout",
        ),
        (
            BASE.replace("address = \"10.0.0.1\"", "address = \"0.0.0.0\""),
            "listener[0].address: 0.0.0.0 cannot be a VIP",
        ),
        (
            BASE.replace("address = \"10.0.0.1\"", "address = \"10.1.0.1\""),
            "listener[0].address: 10.1.0.1 is also target_group[0].targets[0]'s address",
        ),
    ] {
        let e = error(&text);
        assert!(e.starts_with(want), "{want}: got {e}");
        assert!(e.contains("line "), "{e}: no line");
    }
    assert!(error(&gw("conntrack_size = 100000000")).contains("MiB"));
}

#[test]
fn snat_table_must_cover_conntrack() {
    let text = BASE
        .replace(
            "name = \"web\"\n[[target_group.targets]]",
            "name = \"web\"\nmode = \"snat\"\nsnat_address = \"10.1.0.1\"\n[[target_group.targets]]",
        )
        .replace(
            "zone = \"a\"\n\n",
            "zone = \"a\"\nconntrack_size = 8192\nsnat_table_size = 4096\n\n",
        );
    assert!(
        error(&text).starts_with("gateway.snat_table_size: 4096 is smaller than conntrack_size")
    );
}

/// NLB's minimum interval without a timeout: the default timeout fits it
/// (the README's example, which failed before).
#[test]
fn default_timeout_fits_the_interval() {
    let hc = |extra: &str| {
        let c = Config::parse(&format!("{BASE}\n[target_group.health_check]\n{extra}\n")).unwrap();
        c.target_groups[0].health_check.timeout()
    };
    assert_eq!(hc("interval = \"5s\""), Duration::from_secs(5));
    assert_eq!(
        hc("interval = \"30s\"\nprotocol = \"http\""),
        Duration::from_secs(6)
    );
    assert_eq!(
        hc("interval = \"2s\"\ntimeout = \"1s\""),
        Duration::from_secs(1)
    );
}

/// An error about one target points at that target's own lines.
#[test]
fn target_errors_point_at_the_target() {
    let text = format!("{BASE}[[target_group.targets]]\naddress = \"10.1.0.1\"\nport = 8080\n");
    assert_eq!(
        error(&text),
        "target_group[0].targets[1]: duplicate target 10.1.0.1:8080 at line 18"
    );
    let text = format!(
        "{BASE}[[target_group.targets]]\naddress = \"10.1.0.2\"\nport = 8080\nweight = 1001\n"
    );
    assert_eq!(
        error(&text),
        "target_group[0].targets[1].weight: 1001 is out of range (0-1000) at line 21"
    );
}

/// Configs that parse but would not do what they say are refused (or, for
/// settings that are ignored, warned about).
#[test]
fn accepted_but_wrong_configs() {
    let empty = Config::parse("").unwrap_err().to_string();
    assert!(
        empty.starts_with(
            "config: no [[listener]]: a config serves at least one listener (and its [[target_group]])\n"
        ),
        "{empty}"
    );
    assert_eq!(
        error(&BASE.replace("interfaces = [\"eth0\"]\n", "")),
        "gateway.interfaces: is empty, but dataplane = \"auto\" attaches XDP to these interfaces: name them (e.g. interfaces = [\"eth0\"]), or set dataplane = \"proxy\" at line 1"
    );
    assert!(
        Config::parse(&BASE.replace("interfaces = [\"eth0\"]\n", "dataplane = \"proxy\"\n"))
            .is_ok()
    );
    let many = format!(
        "{}{}",
        BASE.replace("zone = \"a\"\n\n", "zone = \"a\"\nring_size = 3\n\n"),
        (2..=4)
            .map(|n| format!("[[target_group.targets]]\naddress = \"10.1.0.{n}\"\nport = 8080\n"))
            .collect::<String>()
    );
    assert_eq!(
        error(&many),
        "gateway.ring_size: 3 is smaller than target_group[0]'s 4 targets: every target needs ring slots (about 100 per target keeps the split even; the default is 65537) at line 4"
    );
    assert_eq!(
        error(&BASE.replace("name = \"web\"\naddress", "name = \"we\\\"b\"\naddress")),
        "listener[0].name: \"we\\\"b\" is not a name: 1-64 printable characters, no quotes or backslashes at line 6"
    );
    let udp = BASE.replace("protocol = \"tcp\"", "protocol = \"udp\"");
    assert_eq!(
        error(&udp),
        "target_group[0].health_check.port: is needed: the group serves only UDP listeners, and a TCP check of the UDP traffic port fails on every target; name a TCP (or HTTP) port the targets answer on, or set enabled = false at line 12"
    );
    assert!(Config::parse(&format!("{udp}[target_group.health_check]\nport = 8081\n")).is_ok());
}

#[test]
fn ignored_settings_are_warned_about() {
    let text = BASE.replace(
        "name = \"web\"\n[[target_group.targets]]",
        "name = \"web\"\nsnat_address = \"10.1.0.254\"\n[[target_group.targets]]",
    ) + "[target_group.health_check]\npath = \"/health\"\n";
    let c = Config::parse(&text).unwrap();
    let w: Vec<String> = c.warnings(&text).iter().map(|e| e.to_string()).collect();
    assert_eq!(
        w,
        [
            "target_group[0].snat_address: is ignored: the group's mode is \"nat\" (client addresses are kept); it is used by mode = \"snat\" at line 14",
            "target_group[0].health_check.path: is ignored: the check's protocol is \"tcp\" (a connect); it is used by protocol = \"http\" at line 20",
        ]
    );
    assert!(Config::parse(BASE).unwrap().warnings(BASE).is_empty());
}

#[test]
fn unhealthy_state_routing_needs_and_bounds() {
    let r = |n: u32, p: u32| UnhealthyStateRouting {
        minimum_healthy_targets: n,
        minimum_healthy_percentage: p,
    };
    assert_eq!(r(1, 0).needed(10), 1);
    assert_eq!(r(1, 50).needed(5), 3, "the larger applies, rounded up");
    assert_eq!(r(4, 10).needed(10), 4);
    let text =
        format!("{BASE}[target_group.unhealthy_state_routing]\nminimum_healthy_targets = 0\n");
    assert_eq!(
        error(&text),
        "target_group[0].unhealthy_state_routing.minimum_healthy_targets: 0 is out of range (1 or more, as NLB's) at line 19"
    );
}

#[test]
fn passive_health_defaults_and_bounds() {
    let cfg = Config::parse(BASE).unwrap();
    let tg = &cfg.target_groups[0];
    assert!(tg.syn_redispatch);
    assert_eq!(tg.passive_health.threshold(), 3);
    let text = format!("{BASE}[target_group.passive_health]\nconsecutive_failures = 0\n");
    assert_eq!(
        error(&text),
        "target_group[0].passive_health.consecutive_failures: 0 is out of range (1-255; `enabled = false` turns passive health off) at line 19"
    );
    let off = format!("{BASE}[target_group.passive_health]\nenabled = false\n");
    let cfg = Config::parse(&off).unwrap();
    assert_eq!(cfg.target_groups[0].passive_health.threshold(), 0);
}
