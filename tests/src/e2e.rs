//! Helpers for end-to-end tests: project binaries, the daemon under test,
//! and bounded client exchanges (run them from a thread inside the client
//! namespace).

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    process::Child,
    time::Duration,
};

use anyhow::{bail, Context as _, Result};

use crate::netns::{wait_until, Netns};

/// The daemon under test: `lb-under-test` runs `lb_userspace::cli::main`,
/// exactly what `lb` runs, and cargo rebuilds it for integration tests.
pub fn lb_bin() -> PathBuf {
    PathBuf::from(env_or_bin("LB_BIN", "lb-under-test"))
}

fn env_or_bin(var: &str, name: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| bin(name).to_string_lossy().into_owned())
}

/// A binary of this workspace, next to the test executable's target dir.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // Test binaries live in target/<profile>/deps, binaries one level up.
    let here = exe.parent().expect("exe dir");
    let p = [here, here.parent().unwrap_or(here)]
        .iter()
        .map(|d| d.join(name))
        .find(|p| p.exists())
        .unwrap_or(here.join(name));
    assert!(
        p.exists(),
        "{} is missing: build it first (`cargo build -p lb-userspace -p tests`, which `cargo xtask test` does)",
        p.display()
    );
    p
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("lbt-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `lb run` inside a namespace; SIGTERM then SIGKILL on drop.
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
    pub config: PathBuf,
    /// Leave the pins on drop (the daemon was killed to be restarted).
    keep_pins: bool,
}

impl Daemon {
    pub fn start(ns: &Netns, dir: &Path, config: &str) -> Result<Daemon> {
        Self::start_with(ns, dir, config, &[])
    }

    /// Starts `lb run` behind a command prefix (e.g. `setpriv ...`).
    pub fn start_with(ns: &Netns, dir: &Path, config: &str, prefix: &[&str]) -> Result<Daemon> {
        let cfg = dir.join("lb.toml");
        std::fs::write(&cfg, config)?;
        let log = dir.join("lb.log");
        // Appends: a restarted daemon's log follows the first one's.
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let lb = lb_bin();
        let mut argv: Vec<&str> = prefix.to_vec();
        argv.extend([
            lb.to_str().unwrap(),
            "run",
            "--config",
            cfg.to_str().unwrap(),
        ]);
        let child = ns
            .command(&argv)
            .stdout(f.try_clone()?)
            .stderr(f)
            .spawn()
            .context("starting lb run")?;
        let mut d = Daemon {
            child,
            log,
            config: cfg,
            keep_pins: false,
        };
        let before = d.log_text().matches("serving ").count();
        let up = |d: &Daemon| d.log_text().matches("serving ").count() > before;
        let ok = wait_until(Duration::from_secs(30), || {
            up(&d) || d.child.try_wait().ok().flatten().is_some()
        });
        if !ok || !up(&d) {
            bail!("lb did not come up:\n{}", d.log_text());
        }
        Ok(d)
    }

    /// A stand-in for log lookups while no daemon runs (e.g. after kill -9).
    pub fn placeholder(dir: &Path) -> Daemon {
        Daemon {
            child: std::process::Command::new("true")
                .spawn()
                .expect("spawn true"),
            log: dir.join("lb.log"),
            config: dir.join("lb.toml"),
            keep_pins: true,
        }
    }

    /// `kill -9`: the daemon dies without any cleanup; pins stay.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.keep_pins = true;
    }

    /// SIGTERM, as `systemctl restart` stops it: the daemon exits and XDP
    /// keeps forwarding from the pins, which stay for the next start.
    pub fn sigterm(mut self) {
        self.signal(libc::SIGTERM);
        if !wait_until(Duration::from_secs(5), || {
            self.child.try_wait().ok().flatten().is_some()
        }) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        self.keep_pins = true;
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Writes a new config and sends SIGHUP; waits until it is applied.
    pub fn reload(&self, config: &str) -> Result<()> {
        let before = self.log_text().matches("config reloaded").count();
        std::fs::write(&self.config, config)?;
        self.signal(libc::SIGHUP);
        if !wait_until(Duration::from_secs(10), || {
            self.log_text().matches("config reloaded").count() > before
        }) {
            bail!("reload not applied:\n{}", self.log_text());
        }
        Ok(())
    }

    /// Waits until the log has `n` lines containing all of `parts`.
    pub fn wait_log(&self, parts: &[&str], n: usize, timeout: Duration) -> bool {
        wait_until(timeout, || {
            self.log_text()
                .lines()
                .filter(|l| parts.iter().all(|p| l.contains(p)))
                .count()
                >= n
        })
    }

    /// Asserts that the log gets `n` lines containing all of `parts` within
    /// `timeout` (`wait_log`); a failure shows `what` (unless empty) and the log.
    #[track_caller]
    pub fn expect_log(&self, parts: &[&str], n: usize, timeout: Duration, what: &str) {
        let found = self.wait_log(parts, n, timeout);
        if what.is_empty() {
            assert!(found, "{}", self.log_text());
        } else {
            assert!(found, "{what}:\n{}", self.log_text());
        }
    }

    pub fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.signal(libc::SIGTERM);
        if !wait_until(Duration::from_secs(5), || {
            self.child.try_wait().ok().flatten().is_some()
        }) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        // The daemon leaves its pins (hitless restarts); the test removes
        // them, unless the daemon was killed to be restarted.
        if self.keep_pins {
            return;
        }
        if let Some(pin) = pin_path_of(&std::fs::read_to_string(&self.config).unwrap_or_default()) {
            let _ = std::fs::remove_dir_all(pin);
        }
    }
}

/// Health checks every second, unhealthy after 2 failures: a dead target
/// is found within 3s.
pub const FAST_HC: &str = "[target_group.health_check]\ninterval = \"1s\"\ntimeout = \"500ms\"\nhealthy_threshold = 2\nunhealthy_threshold = 2\n";

pub fn sock(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().expect("address"), port)
}

/// `n` TCP exchanges with `addr` from the client namespace; every one must
/// complete. Returns how many each backend answered.
pub fn spread(
    topo: &crate::topo::Topology,
    d: &Daemon,
    addr: SocketAddr,
    n: usize,
) -> std::collections::HashMap<String, u32> {
    let _in = topo.client.enter().expect("enter client");
    let mut per = std::collections::HashMap::new();
    for i in 0..n {
        let name = tcp_exchange(addr, format!("c{i}").as_bytes())
            .unwrap_or_else(|e| panic!("#{i}: {e:#}\n{}", d.log_text()));
        *per.entry(name).or_insert(0) += 1;
    }
    per
}

/// The daemon's `/metrics` (default address) in namespace `ns`, fetched
/// from a thread of its own, so the caller may be in any namespace.
pub fn metrics(ns: &Netns) -> Result<String> {
    let name = ns.name.clone();
    std::thread::spawn(move || -> Result<String> {
        let f = std::fs::File::open(format!("/run/netns/{name}"))?;
        if unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) } != 0 {
            bail!("setns: {}", std::io::Error::last_os_error());
        }
        http_get(sock("127.0.0.1", 9650), "/metrics")
    })
    .join()
    .map_err(|_| anyhow::anyhow!("metrics thread panicked"))?
}

/// `lb_xdp_packets_total{reason}` of the daemon in `ns`.
pub fn xdp_reason(ns: &Netns, reason: &str) -> u64 {
    let text = metrics(ns).expect("metrics");
    let want = format!("lb_xdp_packets_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&want))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {want} in metrics"))
}

/// `lb status` of the daemon whose config is at `config`.
pub fn lb_status(config: &Path) -> Result<String> {
    let out = std::process::Command::new(lb_bin())
        .args(["status", "--config", config.to_str().unwrap()])
        .output()?;
    if !out.status.success() {
        bail!("lb status: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// GET `path` over HTTP/1.1 (run it inside the right namespace).
pub fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, T)?;
    s.set_read_timeout(Some(T))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// `gateway.pin_path` of a config text.
pub fn pin_path_of(config: &str) -> Option<PathBuf> {
    config
        .lines()
        .find_map(|l| l.trim().strip_prefix("pin_path = "))
        .map(|v| PathBuf::from(v.trim_matches('"')))
}

/// Starts `lb-testsrv` (TCP and UDP on `port`) in one namespace and waits
/// until it listens.
pub fn start_server(ns: &mut Netns, name: &str, port: u16) -> Result<()> {
    start_servers([(ns, name.to_string())], port)
}

/// A long-lived TCP connection to a `lb-testsrv`.
pub struct Conn {
    w: TcpStream,
    r: BufReader<TcpStream>,
    pub name: String,
}

impl Conn {
    pub fn open(addr: SocketAddr) -> Result<Conn> {
        let s = TcpStream::connect_timeout(&addr, T).with_context(|| format!("connect {addr}"))?;
        s.set_read_timeout(Some(T))?;
        s.set_write_timeout(Some(T))?;
        let mut r = BufReader::new(s.try_clone()?);
        let mut name = String::new();
        r.read_line(&mut name)?;
        Ok(Conn {
            w: s,
            r,
            name: name.trim().to_string(),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.w.local_addr()
    }

    pub fn peer_addr(&self) -> std::io::Result<SocketAddr> {
        self.w.peer_addr()
    }

    /// Sends `payload` and expects it echoed.
    pub fn exchange(&mut self, payload: &[u8]) -> Result<()> {
        self.w.write_all(payload)?;
        let mut echo = vec![0u8; payload.len()];
        self.r.read_exact(&mut echo)?;
        if echo != payload {
            bail!("echo differs");
        }
        Ok(())
    }
}

/// The three-backend topology with `lb-testsrv` (TCP and UDP on 8080)
/// on every backend. Root only.
pub fn served_topology() -> crate::topo::Topology {
    crate::netns::require_root();
    let mut topo = crate::topo::Topology::build(3).expect("topology");
    serve_backends(&mut topo, 8080).expect("servers");
    topo
}

/// Starts `lb-testsrv` (TCP and UDP on `port`) on every backend of the
/// topology, each named after its backend.
pub fn serve_backends(topo: &mut crate::topo::Topology, port: u16) -> Result<()> {
    start_servers(
        topo.backends
            .iter_mut()
            .map(|b| (&mut b.ns, b.name.clone())),
        port,
    )
}

/// Starts `lb-testsrv` in each namespace (name, TCP and UDP on `port`) and
/// waits until they listen.
pub fn start_servers<'a>(
    backends: impl IntoIterator<Item = (&'a mut Netns, String)>,
    port: u16,
) -> Result<()> {
    let srv = bin("lb-testsrv");
    for (ns, name) in backends {
        let p = port.to_string();
        ns.spawn(&[
            srv.to_str().unwrap(),
            "--name",
            &name,
            "--tcp",
            &p,
            "--udp",
            &p,
        ])?;
        let ok = wait_until(Duration::from_secs(10), || {
            ns.exec(&["ss", "-ltn"])
                .map(|o| String::from_utf8_lossy(&o.stdout).contains(&format!(":{port} ")))
                .unwrap_or(false)
        });
        if !ok {
            bail!("lb-testsrv did not listen in {}", ns.name);
        }
    }
    Ok(())
}

const T: Duration = Duration::from_secs(3);

/// TCP: reads the server's name, sends `payload`, expects it echoed.
pub fn tcp_exchange(addr: SocketAddr, payload: &[u8]) -> Result<String> {
    let s = TcpStream::connect_timeout(&addr, T).with_context(|| format!("connect {addr}"))?;
    s.set_read_timeout(Some(T))?;
    s.set_write_timeout(Some(T))?;
    let mut r = BufReader::new(s.try_clone()?);
    let mut name = String::new();
    r.read_line(&mut name).context("reading the server name")?;
    let mut w = s;
    w.write_all(payload)?;
    let mut echo = vec![0u8; payload.len()];
    r.read_exact(&mut echo).context("reading the echo")?;
    if echo != payload {
        bail!("echo differs from what was sent");
    }
    Ok(name.trim().to_string())
}

/// UDP: sends `payload` from a fresh socket, expects "NAME:payload".
pub fn udp_exchange(addr: SocketAddr, payload: &[u8]) -> Result<String> {
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse()?
    } else {
        "[::]:0".parse()?
    };
    let s = UdpSocket::bind(bind)?;
    s.set_read_timeout(Some(T))?;
    s.send_to(payload, addr)?;
    let mut buf = vec![0u8; payload.len() + 64];
    let (n, from) = s
        .recv_from(&mut buf)
        .with_context(|| format!("udp reply from {addr}"))?;
    if from != addr {
        bail!("reply came from {from}, not {addr}");
    }
    let got = &buf[..n];
    let colon = got
        .iter()
        .position(|&b| b == b':')
        .context("no name in reply")?;
    if &got[colon + 1..] != payload {
        bail!("udp echo differs");
    }
    Ok(String::from_utf8_lossy(&got[..colon]).to_string())
}

/// `bin` is on the PATH.
pub fn have(bin: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// One POST to the daemon's admin socket, as `curl --unix-socket` sends
/// it: (HTTP status, JSON body or null).
pub fn admin_post(sock: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: lb\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    let json = out.split_once("\r\n\r\n").unwrap().1;
    (
        status,
        serde_json::from_str(json).unwrap_or(serde_json::Value::Null),
    )
}

/// Starts HAProxy in `ns` with config `text` (written to `conf`), and
/// waits until it listens on `addr` (as `ss -ltn` shows it).
pub fn start_haproxy(
    ns: &Netns,
    conf: &Path,
    text: &str,
    addr: &str,
) -> Result<std::process::Child> {
    std::fs::write(conf, text)?;
    let child = ns
        .command(&["haproxy", "-db", "-f", conf.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    if !wait_until(Duration::from_secs(10), || {
        ns.exec(&["ss", "-ltn"])
            .map(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("{addr} ")))
            .unwrap_or(false)
    }) {
        bail!("haproxy did not start");
    }
    Ok(child)
}

/// A do-nothing XDP program on `dev` in `ns` (detached when the returned
/// value drops). On veth, frames another program sends back with XDP_TX
/// are delivered to a peer only once the peer has an XDP program (GRO on
/// it is not enough, unlike redirected frames): a test-bed quirk, real NICs
/// transmit XDP_TX frames themselves.
pub fn xdp_pass_on(
    ns: &crate::netns::Netns,
    dev: &str,
) -> Result<lb_userspace::dataplane::xdp::XdpDataplane> {
    use lb_userspace::dataplane::xdp::{Sizes, XdpDataplane, PROG_PASS};
    let mut p = XdpDataplane::load(Sizes {
        ring_size: 7,
        max_vips: 1,
        max_targets: 1,
        conntrack: 1024,
        snat: 1024,
        passthrough: 1024,
    })?;
    let _in = ns.enter()?;
    p.program(PROG_PASS)?
        .attach(dev, aya::programs::XdpMode::Driver)
        .with_context(|| format!("xdp_pass on {} {dev}", ns.name))?;
    Ok(p)
}

/// The XDP program's non-zero packet counters (`lb_xdp_packets_total`
/// lines of the gateway's metrics), for failure messages.
pub fn xdp_reasons(ns: &crate::netns::Netns) -> String {
    metrics(ns)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("lb_xdp_packets_total") && !l.ends_with(" 0"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One of the XDP program's packet counters, by reason name, in `metrics`.
pub fn xdp_count(metrics: &str, reason: &str) -> u64 {
    let prefix = format!("lb_xdp_packets_total{{reason=\"{reason}\"}}");
    metrics
        .lines()
        .find(|l| l.starts_with(&prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

/// The VIPs as local addresses of the gateway, as the proxy data plane
/// needs them (it terminates connections).
pub fn make_vips_local(topo: &crate::topo::Topology) -> Result<()> {
    let (v4, v6) = (
        format!("{}/32", crate::topo::VIP_V4),
        format!("{}/128", crate::topo::VIP_V6),
    );
    topo.gw.ip(&["addr", "add", &v4, "dev", "lo"])?;
    topo.gw
        .ip(&["-6", "addr", "add", &v6, "dev", "lo", "nodad"])?;
    Ok(())
}

/// A self-signed ECDSA P-256 certificate for `cn` made with openssl:
/// `dir/NAME.crt` and `dir/NAME.key`; their paths.
pub fn self_signed(dir: &Path, name: &str, cn: &str) -> Result<(PathBuf, PathBuf)> {
    let (crt, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
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
            &format!("/CN={cn}"),
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()?;
    if !out.status.success() {
        bail!("openssl req: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok((crt, key))
}
