//! `cargo xtask run`: the demo. Client, gateway and three backends (two
//! zones) in network namespaces; each backend answers HTTP with its name;
//! `lb run` in the gateway balances VIP 10.100.0.1:80 (and [fd64::1]:80).

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use anyhow::{bail, Context as _, Result};
use lb_testenv::{
    netns::wait_until,
    topo::{Topology, VIP_V4, VIP_V6},
};

use crate::{
    setup::{setup, Needs},
    util::{cargo, is_root, step},
};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn target_bin(name: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or(root.join("target"));
    dir.join("debug").join(name)
}

/// One HTTP GET from the current thread (inside the client namespace).
fn get(addr: SocketAddr) -> Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n"
    )?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body
        .rsplit("\r\n\r\n")
        .next()
        .unwrap_or("")
        .trim()
        .to_string())
}

pub fn run(smoke: bool) -> Result<()> {
    setup(Needs::ALL)?;
    if !is_root() {
        bail!(
            "the demo creates network namespaces and attaches XDP: run `sudo -E cargo xtask run`"
        );
    }
    step("building lb and the demo backend");
    cargo(&["build", "-p", "lb-userspace", "-p", "tests", "--bins"])?;
    let (lb, srv) = (target_bin("lb"), target_bin("lb-testsrv"));
    step("creating namespaces: client, gateway, backends b1 b2 (zone a), b3 (zone b)");
    let mut topo = Topology::build(3)?;
    for b in &mut topo.backends {
        let name = format!("{} (zone {})", b.name, b.zone);
        b.ns.spawn(&[srv.to_str().unwrap(), "--name", &name, "--http", "8080"])?;
    }
    let dir = std::env::temp_dir().join(format!("lb-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let cfg = dir.join("lb.toml");
    std::fs::write(&cfg, topo.config(""))?;
    step(&format!(
        "starting `lb run --config {}` in {}",
        cfg.display(),
        topo.gw.name
    ));
    let log = dir.join("lb.log");
    let logf = std::fs::File::create(&log)?;
    let gw_name = topo.gw.name.clone();
    let mut daemon = topo
        .gw
        .command(&[
            lb.to_str().unwrap(),
            "run",
            "--config",
            cfg.to_str().unwrap(),
        ])
        .stdout(logf.try_clone()?)
        .stderr(logf)
        .spawn()
        .context("starting lb")?;
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let up = wait_until(Duration::from_secs(30), || {
        read_log().contains("serving ") || daemon.try_wait().ok().flatten().is_some()
    });
    eprint!("{}", read_log());
    if !up || !read_log().contains("serving ") {
        let _ = daemon.kill();
        bail!("lb did not start (log above)");
    }
    let answers = {
        let _in = topo.client.enter()?;
        let mut v = Vec::new();
        for i in 0..6 {
            let vip = if i % 2 == 0 { VIP_V4 } else { VIP_V6 };
            let addr = SocketAddr::new(vip.parse()?, 80);
            v.push((addr, get(addr)));
        }
        v
    };
    for (addr, a) in &answers {
        match a {
            Ok(body) => step(&format!("GET http://{addr}/ -> {body}")),
            Err(e) => step(&format!("GET http://{addr}/ failed: {e}")),
        }
    }
    let ok = answers
        .iter()
        .all(|(_, a)| a.as_ref().is_ok_and(|b| b.starts_with('b')));
    if smoke {
        let _ = daemon.kill();
        let _ = daemon.wait();
        let _ = std::fs::remove_dir_all(topo.pin_path());
        let _ = std::fs::remove_dir_all(&dir);
        if !ok {
            bail!(
                "demo smoke test: not every request was answered by a backend\n{}",
                read_log()
            );
        }
        step("demo smoke test passed");
        return Ok(());
    }
    eprintln!();
    step("the demo is up. From another shell:");
    eprintln!(
        "    ip netns exec {} curl -s http://{VIP_V4}/",
        topo.client.name
    );
    eprintln!(
        "    ip netns exec {} curl -s 'http://[{VIP_V6}]/'",
        topo.client.name
    );
    eprintln!(
        "    kill -HUP $(ip netns pids {gw_name} | head -1)   # reload {}",
        cfg.display()
    );
    eprintln!("    log: {}", log.display());
    step("Ctrl-C stops the demo and removes the namespaces");
    unsafe {
        let h = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::signal(libc::SIGINT, h);
        libc::signal(libc::SIGTERM, h);
    }
    while !STOP.load(Ordering::SeqCst) {
        if let Ok(Some(st)) = daemon.try_wait() {
            let _ = std::fs::remove_dir_all(topo.pin_path());
            eprint!("{}", read_log());
            bail!("lb exited ({st})");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    step("stopping");
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let _ = daemon.wait();
    let _ = std::fs::remove_dir_all(topo.pin_path());
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
