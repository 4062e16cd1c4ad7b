//! A health check that cannot run because this host has no file
//! descriptor left says nothing about the target. (Its own test binary:
//! it lowers the process's descriptor limit.)

use lb_userspace::{
    config::HealthCheck,
    health::probe::{probe, CheckSpec, ProbeError},
};

#[tokio::test]
async fn fd_exhaustion_is_a_local_failure_not_the_targets() {
    let target = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let spec = CheckSpec::new(&HealthCheck::default(), target.local_addr().unwrap());
    assert!(probe(&spec).await.is_ok(), "the target answers");
    // Use up every descriptor under a low limit.
    let lim = libc::rlimit {
        rlim_cur: 64,
        rlim_max: 64,
    };
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    let mut hold = Vec::new();
    while let Ok(f) = std::fs::File::open("/dev/null") {
        hold.push(f);
    }
    match probe(&spec).await {
        Err(ProbeError::Local(m)) => assert!(m.contains("Too many open files"), "{m}"),
        other => panic!("want a local failure, got {other:?}"),
    }
    drop(hold);
    assert!(probe(&spec).await.is_ok(), "and the target still answers");
}
