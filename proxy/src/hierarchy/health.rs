//! Whether a parent is up: failures within `retry_time` past `fail_threshold` mark it down;
//! once `retry_time` has passed it is tried again, and one success brings it back.
//! An administrator can also take any peer or parent down by hand, with a reason: it then
//! stays down, whatever its failures and successes, until brought up.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use canopy_config::maintenance::Maintenance;
use canopy_config::stats::HealthSnapshot;

use canopy_config::versions::now_rfc3339;

#[derive(Debug, Default)]
pub struct Health {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// When recent failures happened, oldest first; only those within retry_time count.
    failures: VecDeque<Instant>,
    down: Option<Down>,
}

#[derive(Debug, Clone)]
struct Down {
    /// When it was marked down, or last failed a retry.
    since: Instant,
    at: String,
    reason: String,
    cause: Cause,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Cause {
    Failures,
    /// Taken down by hand by this console account or OS user.
    ByHand {
        by: String,
    },
}

impl Down {
    fn by_hand(&self) -> bool {
        matches!(self.cause, Cause::ByHand { .. })
    }
}

impl Health {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a request may try this parent now: up, or down long enough to be retried.
    pub fn available(&self, now: Instant, retry_time: Duration) -> bool {
        match &self.state().down {
            None => true,
            Some(down) => !down.by_hand() && now.duration_since(down.since) >= retry_time,
        }
    }

    /// Counts a failure; returns true when this one marked the parent down.
    pub fn record_failure(
        &self,
        now: Instant,
        threshold: u32,
        retry_time: Duration,
        reason: &str,
    ) -> bool {
        let mut state = self.state();
        if let Some(down) = &mut state.down {
            // A retry that failed: down for another retry_time.
            if !down.by_hand() {
                down.since = now;
            }
            return false;
        }
        state.failures.push_back(now);
        while state
            .failures
            .front()
            .is_some_and(|t| now.duration_since(*t) > retry_time)
        {
            state.failures.pop_front();
        }
        if state.failures.len() as u32 >= threshold {
            state.failures.clear();
            state.down = Some(Down {
                since: now,
                at: now_rfc3339(),
                reason: format!(
                    "{threshold} failures within {} s; last: {reason}",
                    retry_time.as_secs()
                ),
                cause: Cause::Failures,
            });
            return true;
        }
        false
    }

    /// A response came back: the parent is up (unless an administrator took it down).
    /// Returns true when this brought it back.
    pub fn record_success(&self) -> bool {
        let mut state = self.state();
        state.failures.clear();
        if state.down.as_ref().is_some_and(|d| !d.by_hand()) {
            state.down = None;
            return true;
        }
        false
    }

    /// Takes the peer down by hand, as `down` says who did, when and why.
    pub fn take_down(&self, down: &Maintenance) {
        let mut state = self.state();
        state.failures.clear();
        state.down = Some(Down {
            since: Instant::now(),
            at: down.at.clone(),
            reason: down.reason.clone(),
            cause: Cause::ByHand {
                by: down.by.clone(),
            },
        });
    }

    /// Brings the peer up, back to the health checks, whatever put it down.
    pub fn bring_up(&self) {
        let mut state = self.state();
        state.failures.clear();
        state.down = None;
    }

    /// Whether an administrator took the peer down (it then gets no requests or queries).
    pub fn is_down_by_hand(&self) -> bool {
        self.state().down.as_ref().is_some_and(Down::by_hand)
    }

    pub fn snapshot(&self) -> HealthSnapshot {
        match &self.state().down {
            None => HealthSnapshot::default(),
            Some(down) => HealthSnapshot {
                down: true,
                down_since: Some(down.at.clone()),
                down_reason: Some(down.reason.clone()),
                down_by_hand: down.by_hand(),
                down_by: match &down.cause {
                    Cause::ByHand { by } => Some(by.clone()),
                    Cause::Failures => None,
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RETRY: Duration = Duration::from_secs(300);

    #[test]
    fn threshold_failures_within_retry_time_mark_down() {
        let health = Health::default();
        let t0 = Instant::now();
        assert!(!health.record_failure(t0, 3, RETRY, "refused"));
        assert!(!health.record_failure(t0 + Duration::from_secs(1), 3, RETRY, "refused"));
        assert!(health.available(t0, RETRY));
        assert!(health.record_failure(t0 + Duration::from_secs(2), 3, RETRY, "refused"));
        assert!(!health.available(t0 + Duration::from_secs(3), RETRY));
        let snapshot = health.snapshot();
        assert!(snapshot.down);
        assert!(snapshot
            .down_reason
            .unwrap()
            .contains("3 failures within 300 s"));
    }

    #[test]
    fn failures_further_apart_than_retry_time_do_not_add_up() {
        let health = Health::default();
        let t0 = Instant::now();
        health.record_failure(t0, 2, RETRY, "refused");
        assert!(!health.record_failure(t0 + RETRY + Duration::from_secs(1), 2, RETRY, "refused"));
        assert!(health.available(t0 + RETRY + Duration::from_secs(1), RETRY));
    }

    #[test]
    fn a_down_parent_is_retried_after_retry_time_and_a_success_brings_it_back() {
        let health = Health::default();
        let t0 = Instant::now();
        health.record_failure(t0, 1, RETRY, "refused");
        assert!(!health.available(t0 + RETRY - Duration::from_secs(1), RETRY));
        assert!(health.available(t0 + RETRY, RETRY));
        // The retry fails: down for another retry_time from then.
        health.record_failure(t0 + RETRY, 1, RETRY, "refused");
        assert!(!health.available(t0 + RETRY + Duration::from_secs(1), RETRY));
        assert!(health.available(t0 + RETRY * 2, RETRY));
        assert!(health.record_success());
        assert!(!health.snapshot().down);
    }

    #[test]
    fn down_by_hand_stays_down_until_brought_up_by_hand() {
        let health = Health::default();
        health.take_down(&Maintenance {
            name: "squid".into(),
            reason: "maintenance".into(),
            by: "alice".into(),
            at: "2026-11-29T03:00:00.000Z".into(),
        });
        let later = Instant::now() + RETRY * 10;
        assert!(!health.available(later, RETRY));
        assert!(!health.record_success());
        assert!(!health.record_failure(later, 1, RETRY, "refused"));
        let snapshot = health.snapshot();
        assert_eq!(snapshot.down_reason.as_deref(), Some("maintenance"));
        assert_eq!(snapshot.down_by.as_deref(), Some("alice"));
        assert_eq!(
            snapshot.down_since.as_deref(),
            Some("2026-11-29T03:00:00.000Z")
        );
        assert!(snapshot.down_by_hand && health.is_down_by_hand());
        health.bring_up();
        assert!(health.available(later, RETRY));
        assert!(!health.is_down_by_hand());
    }
}
