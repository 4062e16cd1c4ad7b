//! `lb run` the way `dist/lb.service` runs it: an unprivileged user with
//! exactly the unit's ambient capabilities (read from the unit file, so the
//! two cannot drift). Root only (to set that up); serial; bounded.

use tests::{
    e2e::{self, sock, tcp_exchange, udp_exchange, Daemon, TempDir, FAST_HC},
    netns::require_root,
    topo::{Topology, VIP_V4, VIP_V6},
};

/// The service user of the test (nobody).
const UID: u32 = 65534;

/// `AmbientCapabilities=` of the shipped unit, as setpriv wants them
/// (`+bpf,+net_admin,...`).
fn unit_caps() -> String {
    let unit = include_str!("../../dist/lb.service");
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("AmbientCapabilities="))
        .expect("the unit sets AmbientCapabilities");
    let bounding = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit sets CapabilityBoundingSet");
    assert_eq!(line, bounding, "ambient and bounding sets differ");
    // A capability this machine cannot grant is left out, and said so
    // (none of the unit's today; the sandbox lacks CAP_SYS_RESOURCE, which
    // the unit dropped).
    let have = bounding_set();
    line.split_whitespace()
        .filter(|c| {
            let ok = cap_number(c).is_some_and(|n| have & (1 << n) != 0);
            if !ok {
                eprintln!("note: {c} is not in this machine's bounding set; running without it");
            }
            ok
        })
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect::<Vec<_>>()
        .join(",")
}

fn bounding_set() -> u64 {
    let st = std::fs::read_to_string("/proc/self/status").unwrap();
    let hex = st
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .unwrap()
        .trim();
    u64::from_str_radix(hex, 16).unwrap()
}

fn cap_number(name: &str) -> Option<u32> {
    Some(match name {
        "CAP_NET_BIND_SERVICE" => 10,
        "CAP_NET_ADMIN" => 12,
        "CAP_NET_RAW" => 13,
        "CAP_SYS_ADMIN" => 21,
        "CAP_SYS_RESOURCE" => 24,
        "CAP_PERFMON" => 38,
        "CAP_BPF" => 39,
        _ => return None,
    })
}

/// setpriv prefix: user nobody, no groups, only the unit's capabilities
/// (bounding, inheritable and ambient), no new privileges.
fn as_the_unit() -> Vec<String> {
    let caps = unit_caps();
    vec![
        "setpriv".into(),
        format!("--reuid={UID}"),
        format!("--regid={UID}"),
        "--clear-groups".into(),
        format!("--bounding-set=-all,{caps}"),
        format!("--inh-caps=-all,{caps}"),
        format!("--ambient-caps=-all,{caps}"),
        "--no-new-privs".into(),
    ]
}

/// What the unit's `ExecStartPre=+` and `RuntimeDirectory=` prepare: the
/// pin directory and a runtime directory owned by the service user.
fn prepare(dir: &std::path::Path, pin: &str) {
    for d in [pin, dir.to_str().unwrap()] {
        std::fs::create_dir_all(d).unwrap();
        std::os::unix::fs::chown(d, Some(UID), Some(UID)).unwrap();
    }
}

/// The topology with servers, the unit's directories, and a config whose
/// admin socket is in the service user's runtime directory and whose
/// state directory is the service user's (`StateDirectory=lb`).
fn unit_setup(tag: &str) -> (Topology, TempDir, String) {
    let topo = e2e::served_topology();
    let dir = TempDir::new(tag);
    prepare(&dir.0, &topo.pin_path());
    let state = dir.0.join("state");
    prepare(&state, &topo.pin_path());
    let cfg = topo
        .config(FAST_HC)
        .replace(
            &format!("admin_socket = \"/run/{}.sock\"", topo.gw.name),
            &format!("admin_socket = \"{}\"", dir.0.join("lb.sock").display()),
        )
        .replace(
            &format!("state_dir = \"{}\"", topo.state_dir()),
            &format!("state_dir = \"{}\"", state.display()),
        )
        // The lists' LPM trie is written and read under the unit's rights
        // too (the client is allowed, a documentation prefix denied).
        .replacen("[gateway]\n", "[gateway]\ndeny = [\"203.0.113.0/24\"]\n", 1)
        .replacen(
            "target_group = \"tg4\"\n",
            "target_group = \"tg4\"\nallow = [\"10.0.0.0/24\"]\n",
            1,
        );
    (topo, dir, cfg)
}

#[test]
fn runs_native_xdp_under_the_units_capabilities() {
    require_root();
    let (topo, dir, cfg) = unit_setup("unit");
    // A TLS listener beside XDP: port 443 and a key readable by the service
    // user only, as the unit has them.
    let cfg = cfg + &tls_listener(&topo, &dir.0);
    let prefix = as_the_unit();
    let prefix: Vec<&str> = prefix.iter().map(String::as_str).collect();
    let d = Daemon::start_with(&topo.gw, &dir.0, &cfg, &prefix).expect("lb run");
    let log = d.log_text();
    assert!(log.contains("XDP attached in native mode"), "{log}");
    let out = topo
        .client
        .command(&[
            "timeout",
            "5",
            "openssl",
            "s_client",
            "-quiet",
            "-connect",
            &format!("{VIP_V4}:443"),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write as _;
            c.stdin.take().unwrap().write_all(b"over tls\n")?;
            c.wait_with_output()
        })
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("over tls"),
        "TLS listener under the unit: {text}\n{}",
        d.log_text()
    );
    assert!(!log.contains("falling back"), "{log}");
    let per = e2e::spread(&topo, &d, sock(VIP_V4, 80), 90);
    assert_eq!(per.len(), 3, "balanced over all targets: {per:?}");
    {
        let _in = topo.client.enter().unwrap();
        udp_exchange(sock(VIP_V6, 80), b"v6 udp").unwrap();
        tcp_exchange(sock(VIP_V6, 80), b"v6 tcp").unwrap();
    }
    let status = e2e::lb_status(&d.config).expect("lb status");
    assert!(status.contains("xdp-native"), "{status}");
    // The VIPs' unreachable routes, made under the unit's capabilities (the
    // v6 one: the v4 VIP is the gateway's own address here, for TLS).
    let routes = topo
        .gw
        .ip(&["-6", "route", "show", "proto", "245"])
        .unwrap();
    let routes = String::from_utf8_lossy(&routes.stdout);
    assert!(
        routes.contains(&format!("unreachable {VIP_V6}")),
        "{routes}\n{}",
        d.log_text()
    );
    let m = e2e::metrics(&topo.gw).expect("metrics");
    assert!(
        m.contains("lb_xdp_packets_total{reason=\"fwd_to_backend\"}"),
        "{m}"
    );
    // SIGHUP reload, then `lb reload` as the unit's ExecReload runs it
    // (its user, its capabilities), then a restart that adopts the pins.
    d.reload(&cfg.replace("interval = \"1s\"", "interval = \"2s\""))
        .unwrap_or_else(|e| panic!("SIGHUP: {e:#}"));
    let config = std::fs::read_to_string(&d.config).unwrap();
    let mut reload: Vec<String> = as_the_unit();
    reload.extend([
        e2e::lb_bin().to_str().unwrap().to_string(),
        "reload".into(),
        "-c".into(),
        d.config.to_str().unwrap().to_string(),
    ]);
    let out = std::process::Command::new(&reload[0])
        .args(&reload[1..])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.starts_with("ok: config reloaded:"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.kill9();
    let d = Daemon::start_with(&topo.gw, &dir.0, &config, &prefix).expect("restart");
    let log = d.log_text();
    assert!(log.contains("adopted the pinned maps"), "{log}");
    assert!(log.contains("took over the pinned XDP link"), "{log}");
    assert_eq!(e2e::spread(&topo, &d, sock(VIP_V4, 80), 30).len(), 3);
}

/// A TLS listener on the v4 VIP's port 443 (the address made the
/// gateway's, for the kernel to deliver it), with a self-signed certificate
/// whose key only the service user may read.
fn tls_listener(topo: &Topology, dir: &std::path::Path) -> String {
    topo.gw
        .ip(&["addr", "add", &format!("{VIP_V4}/32"), "dev", "lo"])
        .unwrap();
    let (crt, key) = e2e::self_signed(dir, "tls", "web.example").unwrap();
    for f in [&crt, &key] {
        std::os::unix::fs::chown(f, Some(UID), Some(UID)).unwrap();
    }
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    format!(
        "[[listener]]\nname = \"tls4\"\naddress = \"{VIP_V4}\"\nport = 443\nprotocol = \"tls\"\ntarget_group = \"tg4\"\ncertificates = [{{ cert = \"{}\", key = \"{}\" }}]\n",
        crt.display(),
        key.display()
    )
}

/// `lb run` expected to fail: its exit status and output (bounded).
fn run_failing(ns: &tests::netns::Netns, dir: &std::path::Path, config: &str) -> String {
    let cfg = dir.join("bad.toml");
    std::fs::write(&cfg, config).unwrap();
    let lb = e2e::lb_bin();
    let mut child = ns
        .command(&[
            lb.to_str().unwrap(),
            "run",
            "--config",
            cfg.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let exited = tests::netns::wait_until(std::time::Duration::from_secs(30), || {
        child.try_wait().ok().flatten().is_some()
    });
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        exited && !out.status.success(),
        "lb run should fail:\n{text}"
    );
    text
}

/// A typo in `interfaces` under `dataplane = "auto"`: no silent fallback
/// to the proxy. `lb run` stops and names the interface and the fix, and
/// leaves nothing behind: on a fresh gateway nothing stays attached or
/// pinned; on a running one the earlier pinned state keeps forwarding.
#[test]
fn auto_fails_loud_and_leaves_no_state_behind() {
    let topo = e2e::served_topology();
    let dir = TempDir::new("loud");
    let good = topo.config(FAST_HC);
    let typo = good.replace("\"eth3\"]", "\"eth3\", \"eht0\"]");
    assert_ne!(good, typo);
    let pin = std::path::PathBuf::from(topo.pin_path());
    let text = run_failing(&topo.gw, &dir.0, &typo);
    assert!(text.contains("eht0"), "{text}");
    assert!(text.contains("does not fall back"), "{text}");
    assert!(text.contains("dataplane = \"proxy\""), "{text}");
    assert!(!text.contains("falling back"), "{text}");
    for dev in topo.gw_interfaces() {
        assert!(!topo.gw.xdp_attached(&dev), "{dev} still has XDP attached");
    }
    assert!(!pin.join("maps").exists(), "pinned maps were left behind");
    // A working gateway, stopped (kill -9 keeps its pinned state): the bad
    // start must not take that state down.
    let d = Daemon::start(&topo.gw, &dir.0, &good).expect("lb run");
    d.kill9();
    let text = run_failing(&topo.gw, &dir.0, &typo);
    assert!(text.contains("eht0"), "{text}");
    assert!(
        topo.gw.xdp_attached("eth0"),
        "the earlier run's XDP link is gone"
    );
    assert!(pin.join("maps").exists());
    let per = e2e::spread(&topo, &Daemon::placeholder(&dir.0), sock(VIP_V4, 80), 30);
    assert_eq!(per.values().sum::<u32>(), 30);
    // Clean up the pins the killed daemon left.
    let _ = std::fs::remove_dir_all(&pin);
}

/// Every system call set that `name` (a `@group` of systemd's) allows,
/// expanded, from `systemd-analyze syscall-filter`.
fn systemd_syscalls(name: &str) -> std::collections::BTreeSet<String> {
    let out = std::process::Command::new("systemd-analyze")
        .arg("syscall-filter")
        .output()
        .expect("systemd-analyze (apt-get install systemd)");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut groups: std::collections::HashMap<String, Vec<String>> = Default::default();
    let mut cur = None;
    for l in text.lines() {
        if l.starts_with('@') {
            cur = Some(l.trim().to_string());
            groups.entry(l.trim().to_string()).or_default();
        } else if let (Some(g), Some(m)) = (&cur, Some(l.trim())) {
            if !m.is_empty() && !m.starts_with('#') {
                groups.get_mut(g).unwrap().push(m.to_string());
            }
        }
    }
    let mut out = std::collections::BTreeSet::new();
    let mut todo = vec![name.to_string()];
    while let Some(g) = todo.pop() {
        for m in groups
            .get(&g)
            .unwrap_or_else(|| panic!("no syscall group {g}"))
        {
            if m.starts_with('@') {
                todo.push(m.clone());
            } else {
                out.insert(m.clone());
            }
        }
    }
    out
}

/// A unit directive's value (`SystemCallFilter=...`).
fn unit_value(key: &str) -> String {
    include_str!("../../dist/lb.service")
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("the unit sets {key}"))
        .to_string()
}

/// The unit's `SystemCallFilter=` and `RestrictAddressFamilies=` allow
/// what `lb run` does: it runs under strace (as the unit's user and
/// capabilities) through start, traffic, `lb status`, `/metrics`, a reload
/// and stop, and every system call and socket family it used must be in
/// those sets (systemd would kill it, or fail the call, otherwise).
#[test]
fn stays_within_the_units_syscall_and_socket_filters() {
    require_root();
    let mut allowed = std::collections::BTreeSet::new();
    for item in unit_value("SystemCallFilter").split_whitespace() {
        if item.starts_with('@') {
            allowed.extend(systemd_syscalls(item));
        } else {
            allowed.insert(item.to_string());
        }
    }
    let families: Vec<String> = unit_value("RestrictAddressFamilies")
        .split_whitespace()
        .map(String::from)
        .collect();
    let (topo, dir, cfg) = unit_setup("strace");
    let trace = dir.0.join("lb.strace");
    let mut prefix = as_the_unit();
    prefix.extend(["strace", "-f", "-qq", "-o", trace.to_str().unwrap()].map(String::from));
    let prefix: Vec<&str> = prefix.iter().map(String::as_str).collect();
    let d = Daemon::start_with(&topo.gw, &dir.0, &cfg, &prefix).expect("lb run under strace");
    assert!(
        d.log_text().contains("XDP attached in native mode"),
        "{}",
        d.log_text()
    );
    e2e::spread(&topo, &d, sock(VIP_V4, 80), 30);
    {
        let _in = topo.client.enter().unwrap();
        udp_exchange(sock(VIP_V6, 80), b"udp").unwrap();
    }
    e2e::lb_status(&d.config).expect("lb status");
    e2e::metrics(&topo.gw).expect("metrics");
    // SIGHUP goes to lb itself (strace does not pass signals on).
    let lb_pid = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|st| {
                    st.rsplit(')')
                        .next()?
                        .split_whitespace()
                        .nth(1)?
                        .parse()
                        .ok()
                })
                == Some(d.child.id() as i32)
        })
        .expect("lb under strace");
    std::fs::write(
        &d.config,
        cfg.replace("interval = \"1s\"", "interval = \"2s\""),
    )
    .unwrap();
    unsafe { libc::kill(lb_pid, libc::SIGHUP) };
    d.expect_log(
        &["config reloaded"],
        1,
        std::time::Duration::from_secs(10),
        "",
    );
    unsafe { libc::kill(lb_pid, libc::SIGTERM) };
    tests::netns::wait_until(std::time::Duration::from_secs(10), || {
        std::fs::metadata(format!("/proc/{lb_pid}")).is_err()
    });
    drop(d);
    let text = std::fs::read_to_string(&trace).unwrap();
    let mut used = std::collections::BTreeSet::new();
    let mut socket_families = std::collections::BTreeSet::new();
    for l in text.lines() {
        let rest = l
            .trim_start_matches(|c: char| c.is_ascii_digit())
            .trim_start();
        let rest = rest.strip_prefix("<... ").unwrap_or(rest);
        if rest.starts_with("---") || rest.starts_with("+++") {
            continue;
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() {
            continue;
        }
        if name == "socket" {
            if let Some(f) = rest
                .strip_prefix("socket(")
                .and_then(|a| a.split(',').next())
            {
                socket_families.insert(f.to_string());
            }
        }
        used.insert(name);
    }
    assert!(used.contains("bpf"), "the trace saw no bpf(): {used:?}");
    let outside: Vec<&String> = used.iter().filter(|s| !allowed.contains(*s)).collect();
    assert!(
        outside.is_empty(),
        "system calls outside SystemCallFilter: {outside:?} (all used: {used:?})"
    );
    let bad: Vec<&String> = socket_families
        .iter()
        .filter(|f| !families.contains(f))
        .collect();
    assert!(
        bad.is_empty(),
        "socket families outside RestrictAddressFamilies: {bad:?}"
    );
    eprintln!(
        "measured: lb used {} system calls and socket families {socket_families:?}",
        used.len()
    );
}

/// The admin socket answers root and the daemon's user only; the metrics
/// endpoint bounds what a client may send and how long it may take, and
/// idle or abusive clients cannot keep it (or the VIPs) from serving.
#[test]
fn admin_endpoints_are_bounded() {
    use std::io::{Read, Write};
    let topo = e2e::served_topology();
    let dir = TempDir::new("admin");
    let d = Daemon::start(&topo.gw, &dir.0, &topo.config(FAST_HC)).expect("lb run");
    // Another user, even with the socket's mode open to it.
    let sock_path = format!("/run/{}.sock", topo.gw.name);
    std::fs::set_permissions(
        &sock_path,
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    let lb = e2e::lb_bin();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=12345", "--regid=12345", "--clear-groups"])
        .arg(&lb)
        .args(["status", "--config", d.config.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("permission denied"), "{text}");
    assert!(!text.contains("data plane"), "{text}");
    assert!(e2e::lb_status(&d.config).unwrap().contains("data plane"));
    // 40 clients that connect and send nothing, and one huge request head.
    let _in = topo.gw.enter().unwrap();
    let metrics: std::net::SocketAddr = "127.0.0.1:9650".parse().unwrap();
    let idle: Vec<std::net::TcpStream> = (0..40)
        .filter_map(|_| std::net::TcpStream::connect(metrics).ok())
        .collect();
    assert!(idle.len() >= 16);
    let mut big = std::net::TcpStream::connect(metrics).unwrap();
    big.set_write_timeout(Some(std::time::Duration::from_secs(2)))
        .unwrap();
    let _ = big.write_all(&vec![b'a'; 1 << 20]);
    drop(_in);
    // VIP traffic is not held up meanwhile.
    assert_eq!(e2e::spread(&topo, &d, sock(VIP_V4, 80), 30).len(), 3);
    // The idle clients are dropped after 5s; the endpoint answers again.
    let _in = topo.gw.enter().unwrap();
    let ok = tests::netns::wait_until(std::time::Duration::from_secs(10), || {
        e2e::http_get(metrics, "/metrics").is_ok_and(|b| b.contains("lb_xdp_packets_total"))
    });
    assert!(ok, "metrics did not recover from idle clients");
    // And the idle ones were closed by the daemon.
    let n = idle.len();
    let mut closed = 0;
    for mut s in idle {
        s.set_read_timeout(Some(std::time::Duration::from_millis(200)))
            .unwrap();
        let r = s.read(&mut [0u8; 16]);
        let reset = r
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset);
        if matches!(r, Ok(0)) || reset {
            closed += 1;
        }
    }
    assert_eq!(closed, n, "idle clients closed by the daemon");
}

/// Checks of the config against the host: a VIP that is an address of an
/// attached interface stops the start (it would take the gateway's own
/// traffic); SNAT ports inside ip_local_port_range are warned about.
#[test]
fn config_is_checked_against_the_host() {
    let topo = e2e::served_topology();
    let dir = TempDir::new("hostcheck");
    let good = topo.config(FAST_HC);
    let text = run_failing(
        &topo.gw,
        &dir.0,
        &good.replacen("address = \"10.100.0.1\"", "address = \"10.0.0.1\"", 1),
    );
    assert!(
        text.contains("listener[0].address: 10.0.0.1 is an address of eth0"),
        "{text}"
    );
    topo.gw
        .sysctl("net.ipv4.ip_local_port_range", "30000 60999")
        .unwrap();
    let mut cfg = good.clone();
    cfg += "[[listener]]\nname = \"s4\"\naddress = \"10.100.0.1\"\nport = 81\nprotocol = \"tcp\"\ntarget_group = \"s4\"\n\n";
    cfg += "[[target_group]]\nname = \"s4\"\nmode = \"snat\"\nsnat_address = \"10.0.0.1\"\n[[target_group.targets]]\naddress = \"10.1.1.2\"\nport = 8080\nzone = \"a\"\n";
    let d = Daemon::start(&topo.gw, &dir.0, &cfg).expect("lb run");
    assert!(
        d.log_text().contains(
            "gateway.snat_ports 20000-32767 overlaps net.ipv4.ip_local_port_range 30000-60999"
        ),
        "{}",
        d.log_text()
    );
}

/// What this wave added, the way the unit runs it: targets registered at
/// runtime are written to the state directory systemd gives the service
/// user (`StateDirectory=lb`), passive health reads and clears its marks
/// through the mmapped map, and `lb flows` walks conntrack, all without
/// root, while `Connection: close` load runs through a target's death.
#[test]
fn registration_and_passive_health_under_the_units_capabilities() {
    require_root();
    let (mut topo, dir, cfg) = unit_setup("unit-reg");
    let state = dir.0.join("state");
    let b3 = "[[target_group.targets]]\naddress = \"10.1.3.2\"\nport = 8080\nzone = \"b\"\n\n";
    let cfg = cfg.replacen(b3, "", 1);
    let prefix = as_the_unit();
    let prefix: Vec<&str> = prefix.iter().map(String::as_str).collect();
    let d = Daemon::start_with(&topo.gw, &dir.0, &cfg, &prefix).expect("lb run");
    let lb = |args: &[&str]| {
        let out = std::process::Command::new(e2e::lb_bin())
            .args(args)
            .args(["--config", d.config.to_str().unwrap()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "lb {args:?}: {text}");
        text
    };
    lb(&[
        "targets",
        "register",
        "--target-group",
        "tg4",
        "10.1.3.2:8080@b",
    ]);
    let saved = state.join("targets.json");
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&saved).unwrap());
    assert_eq!(owner, UID, "written by the service user");
    assert!(tests::netns::wait_until(
        std::time::Duration::from_secs(10),
        || { e2e::spread(&topo, &d, sock(VIP_V4, 80), 30).contains_key("b3") }
    ));
    // b2 dies under load: no connection error, passive health acts.
    let vip = sock(VIP_V4, 80);
    let l = tests::load::start(
        &topo.client.name,
        vip,
        200,
        std::time::Duration::from_millis(10),
        8,
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    topo.backends[1].ns.kill_all();
    let a = l.join();
    let connect_errors = a
        .iter()
        .filter(|x| x.result.as_ref().is_err_and(|e| e.starts_with("connect ")))
        .count();
    assert_eq!(connect_errors, 0, "{a:?}");
    d.expect_log(
        &["tg4/10.1.2.2:8080", "healthy -> suspect: passive:"],
        1,
        std::time::Duration::from_secs(2),
        "passive trip as the service user",
    );
    // Back: its checks clear the mark (the daemon's store into the map).
    e2e::start_server(&mut topo.backends[1].ns, "b2", 8080).unwrap();
    d.expect_log(
        &["tg4/10.1.2.2:8080", "-> healthy"],
        1,
        std::time::Duration::from_secs(6),
        "b2 back",
    );
    let flows = lb(&["flows", "--json"]);
    assert!(flows.contains("\"LiveFlows\""), "{flows}");
}
