//! TLS listeners (namespaces, `lb run`, native XDP): the proxy terminates
//! TLS beside XDP on the same gateway and VIP. curl and openssl s_client in
//! the client namespace; HTTP, PROXY v2 and TLS (openssl s_server) targets.
//! Certificates from a test CA made with openssl. Root only; serial;
//! bounded (every client command has a timeout).

use std::{collections::HashSet, path::Path, process::Command, time::Duration};

use tests::{
    e2e::{self, sock, tcp_exchange, Daemon, TempDir, FAST_HC},
    netns::{wait_until, Netns},
    topo::{Topology, VIP_V4},
};

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().expect("runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn openssl(dir: &Path, args: &[&str]) {
    let (ok, text) = run(Command::new("openssl").args(args).current_dir(dir));
    assert!(ok, "openssl {args:?}: {text}");
}

/// A CA, certificates it signed for web.example and api.example (the
/// listener's), one for the targets' addresses, and an unrelated CA.
fn make_certs(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    for ca in ["ca", "other-ca"] {
        let mut a = vec!["req", "-x509"];
        a.extend(ec);
        let (key, crt, subj) = (
            format!("{ca}.key"),
            format!("{ca}.crt"),
            format!("/CN={ca}"),
        );
        a.extend(["-keyout", &key, "-out", &crt, "-days", "2", "-subj", &subj]);
        openssl(dir, &a);
    }
    for (name, san) in [
        ("web", "DNS:web.example"),
        ("api", "DNS:api.example"),
        ("targets", "IP:10.1.1.2,IP:10.1.2.2,IP:10.1.3.2"),
    ] {
        let (key, csr, crt, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
            format!("{name}.ext"),
        );
        std::fs::write(
            dir.join(&ext),
            format!("subjectAltName={san}\nbasicConstraints=CA:FALSE\n"),
        )
        .unwrap();
        let mut a = vec!["req"];
        a.extend(ec);
        let subj = format!("/CN={name}");
        a.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(dir, &a);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "2",
                "-extfile",
                &ext,
            ],
        );
    }
}

fn cert(dir: &Path, name: &str) -> String {
    format!(
        "{{ cert = \"{}/{name}.crt\", key = \"{}/{name}.key\" }}",
        dir.display(),
        dir.display()
    )
}

fn config(topo: &Topology, dir: &Path) -> String {
    let d = dir.display();
    let mut c = topo.config(FAST_HC);
    let listener = |name: &str, port: u16, tg: &str, extra: &str| {
        format!(
            "[[listener]]\nname = \"{name}\"\naddress = \"{VIP_V4}\"\nport = {port}\nprotocol = \"tls\"\ntarget_group = \"{tg}\"\n{extra}\n"
        )
    };
    c += &listener(
        "tls4",
        443,
        "https",
        &format!(
            "certificates = [{}, {}]\nalpn_policy = \"HTTP2Preferred\"\n",
            cert(dir, "web"),
            cert(dir, "api")
        ),
    );
    c += &listener(
        "tls13",
        8443,
        "pp",
        &format!(
            "certificates = [{}]\nsecurity_policy = \"ELBSecurityPolicy-TLS13-1-3-2021-06\"\nalpn_policy = \"HTTP1Only\"\n",
            cert(dir, "web")
        ),
    );
    c += &listener(
        "reenc",
        9443,
        "tls_ok",
        &format!("certificates = [{}]\n", cert(dir, "web")),
    );
    c += &listener(
        "badca",
        9444,
        "tls_bad",
        &format!("certificates = [{}]\n", cert(dir, "web")),
    );
    for (name, port, extra) in [
        ("https", 8081, String::new()),
        ("pp", 8082, "proxy_protocol_v2 = true\n".into()),
        (
            "tls_ok",
            8443,
            format!("target_tls = true\ntarget_ca = \"{d}/ca.crt\"\n"),
        ),
        (
            "tls_bad",
            8443,
            format!("target_tls = true\ntarget_ca = \"{d}/other-ca.crt\"\n"),
        ),
    ] {
        c += &format!("[[target_group]]\nname = \"{name}\"\ncross_zone = true\n{extra}{FAST_HC}\n");
        c += &topo.targets(false, port);
    }
    c
}

/// HTTP on 8081, PROXY v2 on 8082 (lb-testsrv), TLS on 8443 (openssl
/// s_server with the targets' certificate) in every backend.
fn serve_targets(topo: &mut Topology, dir: &Path) {
    let srv = e2e::bin("lb-testsrv");
    let (crt, key) = (dir.join("targets.crt"), dir.join("targets.key"));
    for b in &mut topo.backends {
        b.ns.spawn(&[
            srv.to_str().unwrap(),
            "--name",
            &b.name,
            "--http",
            "8081",
            "--ppv2",
            "8082",
        ])
        .unwrap();
        b.ns.spawn(&[
            "openssl",
            "s_server",
            "-accept",
            "8443",
            "-cert",
            crt.to_str().unwrap(),
            "-key",
            key.to_str().unwrap(),
            "-www",
            "-quiet",
        ])
        .unwrap();
    }
    for b in &topo.backends {
        for port in [8081, 8082, 8443] {
            let addr = sock(&b.v4, port);
            let up = wait_until(Duration::from_secs(10), || {
                let _in = b.ns.enter().unwrap();
                std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            });
            assert!(up, "{addr} listens");
        }
    }
}

/// curl in the client namespace, verifying with the test CA.
fn curl(client: &Netns, dir: &Path, host: &str, port: u16) -> (bool, String) {
    let resolve = format!("{host}:{port}:{VIP_V4}");
    let url = format!("https://{host}:{port}/");
    let ca = dir.join("ca.crt");
    run(&mut client.command(&[
        "curl",
        "-sS",
        "--http1.1",
        "--max-time",
        "5",
        "--cacert",
        ca.to_str().unwrap(),
        "--resolve",
        &resolve,
        &url,
    ]))
}

/// openssl s_client in the client namespace, `input` on its stdin; its
/// output (what the server sent, and the session summary).
fn s_client(client: &Netns, port: u16, args: &[&str], input: &str) -> String {
    let connect = format!("{VIP_V4}:{port}");
    let mut argv = vec!["timeout", "5", "openssl", "s_client", "-connect", &connect];
    argv.extend(args);
    let mut child = client
        .command(&argv)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
    let out = child.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn metric(m: &str, name: &str, listener: &str) -> u64 {
    let key = format!("{name}_total{{listener=\"{listener}\"}} ");
    m.lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn tls_listeners_terminate_beside_xdp() {
    let mut topo = e2e::served_topology();
    let dir = TempDir::new("tls");
    make_certs(&dir.0);
    serve_targets(&mut topo, &dir.0);
    // The proxy's listeners take what the kernel delivers locally.
    topo.gw
        .ip(&["addr", "add", &format!("{VIP_V4}/32"), "dev", "lo"])
        .unwrap();
    let d = Daemon::start(&topo.gw, &dir.0, &config(&topo, &dir.0)).expect("lb run");
    d.expect_log(
        &["TLS listener tls4", "2 certificate(s) loaded"],
        1,
        Duration::from_secs(5),
        "",
    );
    let (c, log) = (&topo.client, || d.log_text());

    // SNI picks the certificate (curl checks the name against it), the
    // targets answer, and the connections spread over them.
    let mut served = HashSet::new();
    for _ in 0..20 {
        let (ok, out) = curl(c, &dir.0, "web.example", 443);
        assert!(ok, "curl web.example: {out}\n{}", log());
        served.insert(out.trim().to_string());
    }
    assert!(served.len() >= 2, "spread over the targets: {served:?}");
    let (ok, out) = curl(c, &dir.0, "api.example", 443);
    assert!(ok, "curl api.example (the second certificate): {out}");
    let out = s_client(c, 443, &["-servername", "other.example"], "");
    assert!(
        out.contains("CN = web"),
        "an unknown name gets the first certificate: {out}"
    );

    // ALPN per policy: HTTP2Preferred picks h2, HTTP1Only http/1.1, and
    // refuses a client that offers h2 alone.
    let out = s_client(
        c,
        443,
        &["-servername", "web.example", "-alpn", "http/1.1,h2"],
        "",
    );
    assert!(out.contains("ALPN protocol: h2"), "{out}");
    let out = s_client(
        c,
        8443,
        &["-servername", "web.example", "-alpn", "h2,http/1.1"],
        "",
    );
    assert!(out.contains("ALPN protocol: http/1.1"), "{out}");
    let out = s_client(c, 8443, &["-servername", "web.example", "-alpn", "h2"], "");
    assert!(out.contains("no application protocol"), "{out}");

    // Versions: TLS 1.1 is refused by the default policy (the server's
    // alert to a TLS 1.1 hello, not the client's own refusal), TLS 1.2 by
    // the 1.3-only one.
    let refused = |out: &str| out.contains("SSL alert number") && out.contains("Cipher is (NONE)");
    let weak = ["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"];
    let out = s_client(c, 443, &weak, "");
    assert!(refused(&out) && out.contains("written 1"), "{out}");
    let out = s_client(c, 443, &["-tls1_2", "-servername", "web.example"], "");
    assert!(
        out.contains("Protocol  : TLSv1.2"),
        "TLS 1.2 under the default policy: {out}"
    );
    let out = s_client(c, 8443, &["-tls1_2", "-servername", "web.example"], "");
    assert!(
        out.contains("alert protocol version"),
        "TLS 1.2 under TLS13-1-3: {out}"
    );

    // PROXY v2 with the TLS version and the SNI.
    let out = s_client(
        c,
        8443,
        &["-quiet", "-servername", "web.example"],
        "hello\n",
    );
    assert!(
        out.contains("client=10.0.0.2:") && out.contains("tls=TLSv1.3 sni=web.example"),
        "{out}"
    );
    assert!(out.contains("hello"), "and the bytes after it: {out}");

    // TLS to the targets, verified with the CA; a wrong CA fails the
    // handshake with the target, counted.
    let (ok, out) = curl(c, &dir.0, "web.example", 9443);
    assert!(
        ok && out.contains("s_server"),
        "re-encrypted to s_server: {out}\n{}",
        log()
    );
    let (ok, out) = curl(c, &dir.0, "web.example", 9444);
    assert!(!ok, "a target certificate the CA did not sign: {out}");

    // The plain TCP listener on the same VIP is XDP's.
    let before = e2e::xdp_reason(&topo.gw, "fwd_to_backend");
    {
        let _in = c.enter().unwrap();
        tcp_exchange(sock(VIP_V4, 80), b"plain\n").expect("port 80 by XDP");
    }
    assert!(
        e2e::xdp_reason(&topo.gw, "fwd_to_backend") > before,
        "forwarded by XDP"
    );
    let status = e2e::lb_status(&d.config).unwrap();
    assert!(status.contains("xdp-native"), "{status}");

    let m = e2e::metrics(&topo.gw).unwrap();
    assert!(
        metric(&m, "lb_listener_tls_handshakes", "tls4") >= 23,
        "{m}"
    );
    // TLS 1.1 and 1.2 refused, h2 alone refused.
    assert!(
        metric(&m, "lb_listener_client_tls_negotiation_errors", "tls13") >= 2,
        "{m}"
    );
    assert!(
        metric(&m, "lb_listener_client_tls_negotiation_errors", "tls4") >= 1,
        "{m}"
    );
    assert_eq!(
        metric(&m, "lb_listener_target_tls_negotiation_errors", "reenc"),
        0,
        "{m}"
    );
    assert!(
        metric(&m, "lb_listener_target_tls_negotiation_errors", "badca") >= 1,
        "{m}"
    );
}

/// A TLS connection to the VIP (any certificate accepted: the test reads
/// which one it got), handshake done.
fn tls_connect(
    client: &Netns,
    port: u16,
) -> rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream> {
    let _in = client.enter().unwrap();
    let tcp =
        std::net::TcpStream::connect_timeout(&sock(VIP_V4, port), Duration::from_secs(5)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let name = rustls::pki_types::ServerName::try_from("web.example").unwrap();
    let conn =
        rustls::ClientConnection::new(lb_userspace::config::tls::client_config(), name).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock).expect("handshake");
    }
    s
}

fn peer_cert(s: &rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>) -> Vec<u8> {
    s.conn.peer_certificates().expect("a certificate")[0].to_vec()
}

fn der(path: &Path) -> Vec<u8> {
    use rustls::pki_types::{pem::PemObject as _, CertificateDer};
    CertificateDer::from_pem_file(path).unwrap().to_vec()
}

/// One HTTP/1.1 request on a kept-alive connection; the body (the
/// target's name).
fn get(s: &mut rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>) -> String {
    use std::io::{Read as _, Write as _};
    s.write_all(b"GET / HTTP/1.1\r\nHost: web.example\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = s.read(&mut chunk).expect("response");
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            if body.ends_with('\n') {
                return body.trim().to_string();
            }
        }
    }
}

#[test]
fn certificates_rotate_on_sighup_while_connections_stay_open() {
    let mut topo = e2e::served_topology();
    let dir = TempDir::new("tlsrot");
    make_certs(&dir.0);
    serve_targets(&mut topo, &dir.0);
    topo.gw
        .ip(&["addr", "add", &format!("{VIP_V4}/32"), "dev", "lo"])
        .unwrap();
    let p = |f: &str| dir.0.join(f);
    std::fs::copy(p("web.crt"), p("live.crt")).unwrap();
    std::fs::copy(p("web.key"), p("live.key")).unwrap();
    let mut cfg = topo.config(FAST_HC);
    cfg += &format!(
        "[[listener]]\nname = \"tls4\"\naddress = \"{VIP_V4}\"\nport = 443\nprotocol = \"tls\"\ntarget_group = \"https\"\ncertificates = [{}]\n\n",
        cert(&dir.0, "live")
    );
    cfg += &format!("[[target_group]]\nname = \"https\"\n{FAST_HC}\n");
    cfg += &topo.targets(false, 8081);
    let d = Daemon::start(&topo.gw, &dir.0, &cfg).expect("lb run");
    let loaded = ["TLS listener tls4", "certificate(s) loaded"];
    d.expect_log(&loaded, 1, Duration::from_secs(5), "");

    let mut open = tls_connect(&topo.client, 443);
    assert_eq!(peer_cert(&open), der(&p("web.crt")));
    let target = get(&mut open);

    // A new certificate in place, then SIGHUP: new connections get it.
    std::fs::copy(p("api.crt"), p("live.crt")).unwrap();
    std::fs::copy(p("api.key"), p("live.key")).unwrap();
    d.reload(&cfg).unwrap();
    d.expect_log(&loaded, 2, Duration::from_secs(5), "reloaded");
    let fresh = tls_connect(&topo.client, 443);
    assert_eq!(peer_cert(&fresh), der(&p("api.crt")), "the new certificate");
    // The open connection goes on, on its session, to its target.
    assert_eq!(get(&mut open), target, "still open, same target");

    // A broken key: the reload is refused naming the field, and the
    // listener keeps serving with the certificate it has.
    std::fs::write(p("live.key"), "-----BEGIN PRIVATE KEY-----\nbroken\n").unwrap();
    d.signal(libc::SIGHUP);
    d.expect_log(
        &["reload failed", "listener[2].certificates[0].key"],
        1,
        Duration::from_secs(5),
        "the bad key named",
    );
    let mut after = tls_connect(&topo.client, 443);
    assert_eq!(
        peer_cert(&after),
        der(&p("api.crt")),
        "the running certificate"
    );
    assert!(!get(&mut after).is_empty());
    assert_eq!(
        get(&mut open),
        target,
        "and the open connection is untouched"
    );
}
