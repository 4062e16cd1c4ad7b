//! The README's config examples and its lists of defaults are what the code
//! does: each `toml` block passes `lb check` without warnings, and every
//! gateway and `[announce]` key is listed with its real default.

use lb_userspace::config::{Announce, Config, Gateway};

fn readme() -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    std::fs::read_to_string(p).expect("README.md")
}

/// The ```toml blocks.
fn toml_blocks(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in text.lines() {
        match (&mut cur, line.trim()) {
            (None, "```toml") => cur = Some(String::new()),
            (Some(_), "```") => out.push(cur.take().unwrap()),
            (Some(b), _) => {
                b.push_str(line);
                b.push('\n');
            }
            _ => {}
        }
    }
    out
}

/// The `key = value` spans of the paragraph that starts with `start`.
fn listed(text: &str, start: &str) -> Vec<(String, String)> {
    let from = text
        .find(start)
        .unwrap_or_else(|| panic!("{start:?} in README"));
    let para = &text[from..from + text[from..].find("\n\n").unwrap()];
    para.split('`')
        .skip(1)
        .step_by(2)
        .filter_map(|s| s.split_once(" = "))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Field names of a struct's `Debug` output (`Name { a: .., b: .. }`).
fn fields(debug: &str) -> Vec<String> {
    let inner = &debug[debug.find('{').unwrap() + 1..debug.rfind('}').unwrap()];
    inner
        .split(", ")
        .filter_map(|f| f.split_once(": ").map(|(k, _)| k.trim().to_string()))
        .filter(|k| k.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        .collect()
}

/// Self-signed certificates for the names the README's TLS example uses,
/// in a directory removed on drop.
struct TlsFiles {
    dir: String,
}

impl TlsFiles {
    fn new() -> TlsFiles {
        let dir = std::env::temp_dir().join(format!("lb-readme-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["www", "api"] {
            let out = std::process::Command::new("openssl")
                .args([
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                ])
                .args([
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    &format!("/CN={name}.example"),
                ])
                .args([
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.crt"),
                ])
                .current_dir(&dir)
                .output()
                .expect("openssl");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        TlsFiles {
            dir: format!("{}/", dir.display()),
        }
    }
}

impl Drop for TlsFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn config_examples_pass_lb_check() {
    let text = readme();
    let blocks = toml_blocks(&text);
    assert!(!blocks.is_empty(), "no toml example in the README");
    let tls = TlsFiles::new();
    for b in blocks {
        // TLS examples name certificates under /etc/lb/tls: made here.
        let b = b.replace("/etc/lb/tls/", &tls.dir);
        let cfg = Config::parse(&b).unwrap_or_else(|e| panic!("README example:\n{b}\n{e}"));
        let w = cfg.warnings(&b);
        assert!(w.is_empty(), "README example warns: {w:?}");
    }
}

/// Each `key = value` listed after `start` deserializes to `T`'s default
/// (so the README states the real default), and every field of `T` is
/// listed.
fn defaults_listed<T>(start: &str, what: &str)
where
    T: serde::de::DeserializeOwned + std::fmt::Debug + Default,
{
    let text = readme();
    let keys = listed(&text, start);
    let want = format!("{:?}", T::default());
    for (k, v) in &keys {
        let got: T = toml::from_str(&format!("{k} = {v}"))
            .unwrap_or_else(|e| panic!("README {what}.{k} = {v}: {e}"));
        assert_eq!(format!("{got:?}"), want, "README says {what}.{k} = {v}");
    }
    let named: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
    for f in fields(&want) {
        assert!(
            named.contains(&f.as_str()),
            "README does not list {what}.{f}"
        );
    }
}

#[test]
fn gateway_defaults_are_as_listed() {
    defaults_listed::<Gateway>("Gateway keys and their defaults", "gateway");
}

#[test]
fn announce_defaults_are_as_listed() {
    defaults_listed::<Announce>("`[announce]` (absent by default)", "announce");
}

/// The README's list of restart-only gateway keys is the code's.
#[test]
fn restart_only_keys_are_as_listed() {
    use std::time::Duration;
    let text = readme();
    let from = text
        .find("What needs a\n   restart")
        .expect("restart list in README");
    let para = &text[from..from + text[from..].find("`systemctl restart lb`").unwrap()];
    let mut listed: Vec<&str> = para.split('`').skip(1).step_by(2).collect();
    listed.sort();
    let s = Duration::from_secs(1);
    // Every field differs from the default (a new field must be added here).
    let mut all = Gateway {
        interfaces: vec!["x".into()],
        zone: "z".into(),
        dataplane: lb_userspace::config::DataplaneKind::Proxy,
        pin_path: "/x".into(),
        metrics_address: String::new(),
        admin_socket: "/y".into(),
        state_dir: "/z".into(),
        ring_size: 3,
        max_vips: 1,
        max_targets: 1,
        conntrack_size: 1,
        snat_table_size: 1,
        passthrough_table_size: 1,
        snat_ports: "1-2".into(),
        tcp_idle_timeout: s,
        udp_idle_timeout: s,
        proxy_connect_timeout: s,
        proxy_udp_sessions: 1,
        tcp_closing_timeout: s,
        fib_cache: s,
        tcp_syn_timeout: s,
        new_flow_limit: lb_userspace::config::FlowLimit::Off,
        hash_seed: "x".into(),
        deny: vec!["10.0.0.0/8".parse().unwrap()],
        reply_source_check: false,
        answer_ping: false,
        unreachable_routes: false,
    };
    let mut kept = all.keep_restart_only(&Gateway::default());
    kept.sort();
    assert_eq!(listed, kept);
}
