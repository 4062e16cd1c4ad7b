//! Health-check probes (TCP connect, HTTP or HTTPS GET with a status
//! matcher) run as
//! tokio tasks, one per target. Results go to the daemon, which owns the
//! state machines (`tracker`) and the data plane.

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::mpsc,
    task::JoinHandle,
    time::{sleep, timeout, Instant},
};

use crate::config::{parse_matcher, HealthCheck, HealthProtocol};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Tcp,
    Http {
        path: String,
        matcher: Vec<(u16, u16)>,
        host: String,
        /// HTTPS: over TLS.
        tls: bool,
    },
}

/// What to check, and how often.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckSpec {
    pub addr: SocketAddr,
    pub probe: Probe,
    pub interval: Duration,
    pub timeout: Duration,
}

impl CheckSpec {
    pub fn new(hc: &HealthCheck, target: SocketAddr) -> CheckSpec {
        let addr = SocketAddr::new(target.ip(), hc.port.map_or(target.port(), |p| p.0));
        let probe = match hc.protocol {
            HealthProtocol::Tcp => Probe::Tcp,
            HealthProtocol::Http | HealthProtocol::Https => Probe::Http {
                path: hc.path.clone(),
                matcher: parse_matcher(&hc.matcher).unwrap_or_else(|| vec![(200, 399)]),
                host: addr.to_string(),
                tls: hc.protocol == HealthProtocol::Https,
            },
        };
        CheckSpec {
            addr,
            probe,
            interval: hc.interval,
            timeout: hc.timeout(),
        }
    }
}

/// One check result, for the target named by `key` (not by id: ids can be
/// reused after a target is gone, results in flight cannot).
#[derive(Debug, Clone)]
pub struct CheckResult {
    pub key: crate::model::TargetKey,
    pub ok: bool,
    pub reason: String,
}

/// Why a probe did not pass.
#[derive(Debug, PartialEq, Eq)]
pub enum ProbeError {
    /// The target failed the check.
    Target(String),
    /// This host could not run it (no file descriptor, local port or
    /// memory left): nothing is learnt about the target, and it is not
    /// counted against it.
    Local(String),
}

impl From<String> for ProbeError {
    fn from(s: String) -> Self {
        ProbeError::Target(s)
    }
}

fn local_failure(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EADDRNOTAVAIL)
    )
}

/// Runs one probe (without the timeout).
pub async fn probe(spec: &CheckSpec) -> Result<String, ProbeError> {
    let mut s = TcpStream::connect(spec.addr).await.map_err(|e| {
        let m = format!("connect {}: {e}", spec.addr);
        if local_failure(&e) {
            ProbeError::Local(m)
        } else {
            ProbeError::Target(m)
        }
    })?;
    match &spec.probe {
        Probe::Tcp => Ok(format!("tcp connect {} ok", spec.addr)),
        Probe::Http {
            path,
            matcher,
            host,
            tls: false,
        } => http(&mut s, path, matcher, host, "http").await,
        Probe::Http {
            path,
            matcher,
            host,
            tls: true,
        } => {
            let name = rustls::pki_types::ServerName::IpAddress(spec.addr.ip().into());
            let mut t = tokio_rustls::TlsConnector::from(crate::config::tls::client_config())
                .connect(name, s)
                .await
                .map_err(|e| format!("https: TLS handshake with {}: {e}", spec.addr))?;
            http(&mut t, path, matcher, host, "https").await
        }
    }
}

/// `GET path` on `s`; the status line decides.
async fn http(
    s: &mut (impl AsyncReadExt + AsyncWriteExt + Unpin),
    path: &str,
    matcher: &[(u16, u16)],
    host: &str,
    what: &str,
) -> Result<String, ProbeError> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: lb-health-check\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("{what} write: {e}"))?;
    // The status line is all we need.
    let mut buf = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        let m = s
            .read(&mut buf[n..])
            .await
            .map_err(|e| format!("{what} read: {e}"))?;
        if m == 0 {
            break;
        }
        n += m;
    }
    let line = String::from_utf8_lossy(&buf[..n]);
    let code: u16 = line
        .strip_prefix("HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| {
            format!(
                "{what}: not an HTTP response: {:?}",
                line.lines().next().unwrap_or("")
            )
        })?;
    if matcher.iter().any(|&(a, b)| (a..=b).contains(&code)) {
        Ok(format!("{what} {code}"))
    } else {
        Err(format!("{what} {code} does not match").into())
    }
}

/// Small deterministic jitter (+-10% of the interval) so checks of many
/// targets do not fire in lockstep.
fn jitter(interval: Duration, id: u32, round: u64) -> Duration {
    let h = lb_common::hash::hash_words(0x6a69_7474, &[id, round as u32, (round >> 32) as u32]);
    let span = interval.as_millis() as u64 / 5; // 20% wide
    let off = if span == 0 { 0 } else { h as u64 % span };
    (interval + Duration::from_millis(off)).saturating_sub(Duration::from_millis(span / 2))
}

/// A running check loop; dropping it stops the loop (a bare `JoinHandle`
/// would only detach it).
pub struct ProbeTask(JoinHandle<()>);

impl Drop for ProbeTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts the check loop of one target: first probe at once, then every
/// interval (with jitter). Stopped when the handle is dropped.
pub fn spawn(
    key: crate::model::TargetKey,
    spec: CheckSpec,
    tx: mpsc::Sender<CheckResult>,
) -> ProbeTask {
    // Jitter seeded by the whole target, so targets of one group on one
    // port are not checked in lockstep.
    let (addr, _) = crate::model::addr_words(key.address);
    let id = lb_common::hash::hash_words(
        1,
        &[
            addr[0],
            addr[1],
            addr[2],
            addr[3],
            spec.addr.port() as u32,
            lb_common::tg_hash(&key.target_group),
        ],
    );
    ProbeTask(tokio::spawn(async move {
        let mut round = 0u64;
        loop {
            let start = Instant::now();
            let (ok, reason) = match timeout(spec.timeout, probe(&spec)).await {
                Ok(Ok(r)) => (true, r),
                Ok(Err(ProbeError::Target(e))) => (false, e),
                Ok(Err(ProbeError::Local(e))) => {
                    log::warn!("health check of {} not run: {e} (a local shortage, not counted against the target)", spec.addr);
                    round += 1;
                    sleep(jitter(spec.interval, id, round)).await;
                    continue;
                }
                Err(_) => (false, format!("timeout after {:?}", spec.timeout)),
            };
            if tx
                .send(CheckResult {
                    key: key.clone(),
                    ok,
                    reason,
                })
                .await
                .is_err()
            {
                return;
            }
            round += 1;
            let next = start + jitter(spec.interval, id, round);
            sleep(next.saturating_duration_since(Instant::now())).await;
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{Health, Tracker};

    fn spec(addr: SocketAddr, probe: Probe) -> CheckSpec {
        CheckSpec {
            addr,
            probe,
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
        }
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        for r in 0..100 {
            let j = jitter(Duration::from_secs(10), 7, r);
            assert!(
                j >= Duration::from_secs(9) && j <= Duration::from_secs(11),
                "{j:?}"
            );
        }
    }

    #[tokio::test]
    async fn http_probe_matches_status() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            for code in [200, 503] {
                let (mut s, _) = l.accept().await.unwrap();
                let mut b = [0u8; 256];
                let _ = s.read(&mut b).await;
                let _ = s
                    .write_all(format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        let sp = spec(
            addr,
            Probe::Http {
                path: "/".into(),
                matcher: vec![(200, 299)],
                host: "x".into(),
                tls: false,
            },
        );
        assert_eq!(probe(&sp).await, Ok("http 200".into()));
        assert_eq!(
            probe(&sp).await,
            Err(ProbeError::Target("http 503 does not match".into()))
        );
    }

    /// With tokio's paused clock: a target that stops answering is unhealthy
    /// within interval x unhealthy_threshold + one interval.
    #[tokio::test(start_paused = true)]
    async fn failure_detected_within_bound() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let sp = spec(addr, Probe::Tcp);
        let key = crate::model::TargetKey {
            target_group: "tg".into(),
            address: addr.ip(),
            port: addr.port(),
        };
        let h = spawn(key, sp.clone(), tx);
        let mut t = Tracker::new(3, 2);
        let r = rx.recv().await.unwrap();
        assert_eq!(t.observe(r.ok, &r.reason).unwrap().to, Health::Healthy);
        let stopped = Instant::now();
        drop(l); // the target goes away
        loop {
            let r = rx.recv().await.unwrap();
            if let Some(tr) = t.observe(r.ok, &r.reason) {
                assert_eq!(tr.to, Health::Unhealthy);
                break;
            }
        }
        let took = Instant::now() - stopped;
        assert!(took <= sp.interval * 3, "took {took:?}");
        drop(h);
    }
}
