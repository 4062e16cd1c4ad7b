//! Passive health as the daemon reports it: what a trip of the data path's
//! counters (`BACKEND_HEALTH`) says, in one log line.

use lb_common::BackendHealth;

/// Why backend health `now` tripped, from the counts since `prev` (the
/// last poll): "passive: 5 of 5 SYNs refused in 50 ms".
pub fn describe(prev: &BackendHealth, now: &BackendHealth) -> String {
    let refused = now.refused.saturating_sub(prev.refused);
    let unanswered = now.unanswered.saturating_sub(prev.unanswered);
    let answered = now.answered.saturating_sub(prev.answered);
    let attempts = refused + unanswered + answered;
    let what = match (refused, unanswered) {
        (r, 0) => format!("{r} of {attempts} SYNs refused"),
        (0, u) => format!("{u} of {attempts} SYNs unanswered (retransmitted)"),
        (r, u) => format!(
            "{} of {attempts} SYNs failed ({r} refused, {u} unanswered)",
            r + u
        ),
    };
    let span_ms = now.trip_span_ns / 1_000_000;
    format!(
        "passive: {what} in {span_ms} ms, {} in a row",
        now.trip_streak
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trip_lines() {
        let prev = BackendHealth {
            refused: 1,
            answered: 10,
            ..Default::default()
        };
        let now = BackendHealth {
            refused: 6,
            answered: 10,
            trips: 1,
            trip_streak: 5,
            trip_span_ns: 50_000_000,
            ..Default::default()
        };
        assert_eq!(
            describe(&prev, &now),
            "passive: 5 of 5 SYNs refused in 50 ms, 5 in a row"
        );
        let now = BackendHealth {
            unanswered: 3,
            answered: 12,
            refused: 1,
            trip_streak: 3,
            trip_span_ns: 1_200_000_000,
            ..Default::default()
        };
        assert_eq!(
            describe(&prev, &now),
            "passive: 3 of 5 SYNs unanswered (retransmitted) in 1200 ms, 3 in a row"
        );
    }
}
