//! What the daemon reports: Prometheus metrics, the `lb status` table, the
//! admin socket they are served on, and systemd notifications. Rendering
//! reads a `View` the daemon builds; it never holds the daemon itself.

pub mod admin;
pub mod elbv2;
pub mod metrics;
pub mod notify;
pub mod sampler;
pub mod status;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use crate::{
    config::{Announce, DataplaneKind},
    dataplane::{Dataplane, Flows},
    model::{Model, TargetKey},
};

/// A target as reported.
#[derive(Debug, Clone)]
pub struct TargetView {
    /// initial, healthy, suspect, unhealthy or draining.
    pub state: &'static str,
    /// Passes its health checks.
    pub healthy: bool,
    /// The last check's result, as logged.
    pub last_check: String,
    /// Draining: the time left.
    pub drain_left: Option<std::time::Duration>,
    /// Suspect: why passive health tripped.
    pub passive: Option<String>,
}

/// When the last reload was, and how it went.
#[derive(Debug, Clone)]
pub struct LastReload {
    pub at: std::time::SystemTime,
    /// Its log line, or why it failed.
    pub result: Result<String, String>,
    /// The new config was taken (a failure after that was in programming
    /// the data plane).
    pub applied: bool,
}

/// Everything metrics and status read, at one moment.
pub struct View<'a> {
    pub model: &'a Model,
    pub targets: BTreeMap<TargetKey, TargetView>,
    pub planes: &'a dyn Dataplane,
    pub sampler: &'a sampler::Sampler,
    pub flows: Flows,
    /// Config reloads: (ok, failed).
    pub reloads: (u64, u64),
    pub last_reload: Option<&'a LastReload>,
    /// Target groups failing open (with their target count), and how often
    /// each started to.
    pub failed_open: &'a BTreeMap<String, (usize, usize)>,
    pub fail_open_total: &'a BTreeMap<String, u64>,
    /// The announcement settings and the addresses read back from the
    /// kernel, when announcing is on.
    pub announced: Option<(&'a Announce, BTreeSet<IpAddr>)>,
    /// Why `auto` fell back to the proxy: (label, text).
    pub fallback: Option<&'a (&'static str, String)>,
    pub dataplane: DataplaneKind,
}

impl View<'_> {
    /// A target's state name; "removed" once it is gone.
    pub fn state(&self, k: &TargetKey) -> &'static str {
        self.targets.get(k).map_or("removed", |t| t.state)
    }
}
