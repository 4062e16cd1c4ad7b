//! Target health as NLB counts it: `healthy_threshold` consecutive passes
//! make a target healthy, `unhealthy_threshold` consecutive failures make it
//! unhealthy. A new target starts `Initial` and takes no new flows; its
//! first result decides at once (so a fresh gateway serves within one check,
//! not `healthy_threshold` intervals). Passive health (failed connection
//! attempts seen in the data path) makes a healthy target `Suspect`: no new
//! flows, its flows kept, until `healthy_threshold` checks pass (healthy
//! again) or `unhealthy_threshold` fail (unhealthy). Pure: the caller
//! supplies results.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Initial,
    Healthy,
    /// Passive health tripped: out of new flows until the checks decide.
    Suspect,
    Unhealthy,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Initial => "initial",
            Health::Healthy => "healthy",
            Health::Suspect => "suspect",
            Health::Unhealthy => "unhealthy",
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state change and the check result that caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub from: Health,
    pub to: Health,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct Tracker {
    pub state: Health,
    passes: u32,
    failures: u32,
    healthy_threshold: u32,
    unhealthy_threshold: u32,
    /// Last check's outcome, for `lb status`.
    pub last_reason: String,
}

impl Tracker {
    pub fn new(healthy_threshold: u32, unhealthy_threshold: u32) -> Tracker {
        Tracker {
            state: Health::Initial,
            passes: 0,
            failures: 0,
            healthy_threshold: healthy_threshold.max(1),
            unhealthy_threshold: unhealthy_threshold.max(1),
            last_reason: "not checked yet".into(),
        }
    }

    /// A target whose checks are disabled: always healthy.
    pub fn always_healthy() -> Tracker {
        let mut t = Tracker::new(1, 1);
        t.state = Health::Healthy;
        t.last_reason = "health checks disabled".into();
        t
    }

    /// A target the previous daemon had in service (adopted after a
    /// restart): healthy until its checks say otherwise.
    /// New thresholds (a reload); the counts so far stay.
    pub fn set_thresholds(&mut self, healthy: u32, unhealthy: u32) {
        self.healthy_threshold = healthy.max(1);
        self.unhealthy_threshold = unhealthy.max(1);
    }

    pub fn assume_healthy(mut self) -> Tracker {
        self.state = Health::Healthy;
        self.last_reason = "in service before the restart".into();
        self
    }

    /// Records one check result; returns the transition it caused, if any.
    pub fn observe(&mut self, ok: bool, reason: &str) -> Option<Transition> {
        self.last_reason = reason.to_string();
        if ok {
            self.passes += 1;
            self.failures = 0;
        } else {
            self.failures += 1;
            self.passes = 0;
        }
        let to = match (self.state, ok) {
            (Health::Initial, true) => Health::Healthy,
            (Health::Initial, false) => Health::Unhealthy,
            (Health::Unhealthy, true) if self.passes >= self.healthy_threshold => Health::Healthy,
            (Health::Healthy | Health::Suspect, false)
                if self.failures >= self.unhealthy_threshold =>
            {
                Health::Unhealthy
            }
            (Health::Suspect, true) if self.passes >= self.healthy_threshold => Health::Healthy,
            _ => return None,
        };
        let from = self.state;
        self.state = to;
        Some(Transition {
            from,
            to,
            reason: reason.to_string(),
        })
    }

    /// The data path saw its connection attempts fail: a healthy target
    /// becomes suspect, and passes count again from zero.
    pub fn passive_failure(&mut self, reason: &str) -> Option<Transition> {
        if self.state != Health::Healthy {
            return None;
        }
        self.passes = 0;
        self.state = Health::Suspect;
        Some(Transition {
            from: Health::Healthy,
            to: Health::Suspect,
            reason: reason.to_string(),
        })
    }

    pub fn healthy_threshold(&self) -> u32 {
        self.healthy_threshold
    }

    /// May the target take new flows?
    pub fn in_service(&self) -> bool {
        self.state == Health::Healthy
    }

    /// May it keep its flows (whatever the group's termination settings)?
    pub fn keeps_flows(&self) -> bool {
        matches!(self.state, Health::Healthy | Health::Suspect)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passive_suspicion_until_the_checks_decide() {
        let mut t = Tracker::new(2, 3);
        t.observe(true, "ok");
        let tr = t.passive_failure("passive: 3 of 3 SYNs refused").unwrap();
        assert_eq!((tr.from, tr.to), (Health::Healthy, Health::Suspect));
        assert!(!t.in_service() && t.keeps_flows());
        assert_eq!(t.passive_failure("again"), None, "once");
        assert_eq!(t.observe(true, "ok"), None, "passes count from the mark");
        assert_eq!(t.observe(true, "ok").unwrap().to, Health::Healthy);
        t.passive_failure("refused");
        t.observe(false, "refused");
        t.observe(false, "refused");
        assert_eq!(t.observe(false, "refused").unwrap().to, Health::Unhealthy);
        assert_eq!(t.passive_failure("x"), None, "only a healthy target");
    }

    #[test]
    fn first_result_decides() {
        let mut t = Tracker::new(5, 2);
        assert!(!t.in_service());
        assert_eq!(t.observe(true, "ok").unwrap().to, Health::Healthy);
        let mut t = Tracker::new(5, 2);
        assert_eq!(t.observe(false, "refused").unwrap().to, Health::Unhealthy);
    }

    #[test]
    fn thresholds_count_consecutive_results() {
        let mut t = Tracker::new(3, 2);
        t.observe(true, "ok");
        assert_eq!(
            t.observe(false, "timeout"),
            None,
            "one failure is not enough"
        );
        assert_eq!(
            t.observe(true, "ok"),
            None,
            "a pass resets the failure count"
        );
        assert_eq!(t.observe(false, "timeout"), None);
        let tr = t.observe(false, "timeout").unwrap();
        assert_eq!(
            (tr.from, tr.to, tr.reason.as_str()),
            (Health::Healthy, Health::Unhealthy, "timeout")
        );
        assert_eq!(t.observe(true, "ok"), None);
        assert_eq!(t.observe(true, "ok"), None);
        assert_eq!(
            t.observe(true, "ok").unwrap().to,
            Health::Healthy,
            "3 passes"
        );
        assert!(t.in_service());
    }

    #[test]
    fn disabled_checks_mean_healthy() {
        assert!(Tracker::always_healthy().in_service());
    }
}
