//! `Connection: close` load at a fixed rate: each attempt is one TCP
//! connection (read the server's name, echo a payload, close), started on
//! its schedule by one of a pool of workers, so one slow attempt (a SYN
//! retransmitted after 1 s) does not hold the others back. Bounded in
//! count; each attempt in time (the exchange's 3 s timeouts).

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use crate::e2e::tcp_exchange;

/// One connection attempt.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// When it started, from the load's start.
    pub at: Duration,
    pub took: Duration,
    /// The server that answered, or the error.
    pub result: Result<String, String>,
}

pub struct Load {
    pub start: Instant,
    threads: Vec<std::thread::JoinHandle<()>>,
    out: Arc<Mutex<Vec<Attempt>>>,
}

/// Starts `total` attempts at `addr`, one every `every`, from network
/// namespace `netns` (a name under /run/netns), on `workers` threads.
pub fn start(netns: &str, addr: SocketAddr, total: usize, every: Duration, workers: usize) -> Load {
    let start = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let out = Arc::new(Mutex::new(Vec::with_capacity(total)));
    let threads = (0..workers)
        .map(|_| {
            let (next, out, ns) = (next.clone(), out.clone(), netns.to_string());
            std::thread::spawn(move || {
                let f = std::fs::File::open(format!("/run/netns/{ns}")).expect("netns");
                // SAFETY: a valid namespace fd; this thread only.
                let rc =
                    unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns");
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        return;
                    }
                    let due = start + every * i as u32;
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let t = Instant::now();
                    let result = tcp_exchange(addr, b"load").map_err(|e| format!("{e:#}"));
                    out.lock().unwrap().push(Attempt {
                        at: t - start,
                        took: t.elapsed(),
                        result,
                    });
                }
            })
        })
        .collect();
    Load {
        start,
        threads,
        out,
    }
}

impl Load {
    /// Waits for every attempt; returns them in start order.
    pub fn join(self) -> Vec<Attempt> {
        for t in self.threads {
            let _ = t.join();
        }
        let mut v = std::mem::take(&mut *self.out.lock().unwrap());
        v.sort_by_key(|a| a.at);
        v
    }
}

/// What a run of attempts shows about a failure at `fault` (from the
/// load's start).
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub attempts: usize,
    pub errors: usize,
    /// Attempts that took longer than `slow` (a SYN retransmission).
    pub slow: usize,
    /// From the fault to the start of the last attempt that failed or was
    /// slow: how long clients noticed it.
    pub noticed: Option<Duration>,
}

pub fn outcome(attempts: &[Attempt], fault: Duration, slow: Duration) -> Outcome {
    let bad = |a: &&Attempt| a.result.is_err() || a.took > slow;
    Outcome {
        attempts: attempts.len(),
        errors: attempts.iter().filter(|a| a.result.is_err()).count(),
        slow: attempts.iter().filter(|a| a.took > slow).count(),
        noticed: attempts
            .iter()
            .filter(bad)
            .map(|a| a.at.saturating_sub(fault))
            .max(),
    }
}
