//! The restart policy's decision when a machine's main process exits (PLATFORM.md §1.14).

use hangar_api_types::RestartPolicy;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExitInfo {
    /// Exit code (when it exited).
    pub code: Option<i32>,
    /// Signal (when it was killed).
    pub signal: Option<i32>,
    /// Killed by the OOM killer.
    pub oom_killed: bool,
    /// The exit was asked for (stop, restart, destroy).
    pub requested_stop: bool,
}

impl ExitInfo {
    /// A clean exit: code 0, not killed.
    pub fn is_success(&self) -> bool {
        self.code == Some(0) && self.signal.is_none() && !self.oom_killed
    }
}

/// What to do after an exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartDecision {
    /// Start it again.
    Restart,
    /// Leave it stopped.
    Stop,
    /// Destroy it (`auto_destroy`).
    Destroy,
}

/// Default `max_retries` when a config gives none.
pub const DEFAULT_MAX_RETRIES: u32 = 10;
/// The window in which restarts are counted.
pub const RESTART_WINDOW_MS: u64 = 5 * 60 * 1000;

/// Remembers recent restarts of one machine and applies its policy.
#[derive(Debug, Clone, Default)]
pub struct RestartTracker {
    restarts_ms: Vec<u64>,
}

impl RestartTracker {
    /// A tracker with no history.
    pub fn new() -> Self {
        Self::default()
    }

    /// Restarts counted in the window ending at `now_ms`.
    pub fn recent(&self, now_ms: u64) -> usize {
        self.restarts_ms
            .iter()
            .filter(|t| now_ms.saturating_sub(**t) < RESTART_WINDOW_MS)
            .count()
    }

    /// Forgets the history (a user start resets the count).
    pub fn reset(&mut self) {
        self.restarts_ms.clear();
    }

    /// Decides, and records a restart when it decides to restart.
    /// `policy` None means the platform default: on-failure, 10 retries in 5 minutes.
    pub fn decide(
        &mut self,
        policy: Option<&RestartPolicy>,
        max_retries: Option<i64>,
        auto_destroy: bool,
        exit: ExitInfo,
        now_ms: u64,
    ) -> RestartDecision {
        let max = max_retries.map_or(DEFAULT_MAX_RETRIES as usize, |m| m.max(0) as usize);
        self.restarts_ms
            .retain(|t| now_ms.saturating_sub(*t) < RESTART_WINDOW_MS);
        let wants = if exit.requested_stop {
            false
        } else {
            match policy {
                Some(RestartPolicy::Always) => {
                    max_retries.is_none() || self.restarts_ms.len() < max
                }
                Some(RestartPolicy::No) => false,
                // on-failure, the default, and anything unknown.
                _ => !exit.is_success() && self.restarts_ms.len() < max,
            }
        };
        if wants {
            self.restarts_ms.push(now_ms);
            RestartDecision::Restart
        } else if auto_destroy {
            RestartDecision::Destroy
        } else {
            RestartDecision::Stop
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crash() -> ExitInfo {
        ExitInfo {
            code: Some(1),
            ..ExitInfo::default()
        }
    }

    #[test]
    fn on_failure_stops_after_max_retries_in_the_window() {
        let mut t = RestartTracker::new();
        let p = RestartPolicy::OnFailure;
        for i in 0..3 {
            assert_eq!(
                t.decide(Some(&p), Some(3), false, crash(), i * 1000),
                RestartDecision::Restart
            );
        }
        assert_eq!(
            t.decide(Some(&p), Some(3), false, crash(), 4000),
            RestartDecision::Stop
        );
        // After the window, it may restart again.
        assert_eq!(
            t.decide(Some(&p), Some(3), false, crash(), 4000 + RESTART_WINDOW_MS),
            RestartDecision::Restart
        );
        let ok = ExitInfo {
            code: Some(0),
            ..ExitInfo::default()
        };
        assert_eq!(
            t.decide(Some(&p), Some(3), false, ok, 0),
            RestartDecision::Stop
        );
    }

    #[test]
    fn always_restarts_even_clean_exits_and_no_never_does() {
        let mut t = RestartTracker::new();
        let ok = ExitInfo {
            code: Some(0),
            ..ExitInfo::default()
        };
        for i in 0..50 {
            assert_eq!(
                t.decide(Some(&RestartPolicy::Always), None, false, ok, i),
                RestartDecision::Restart
            );
        }
        assert_eq!(
            t.decide(Some(&RestartPolicy::No), None, true, crash(), 0),
            RestartDecision::Destroy
        );
        assert_eq!(
            t.decide(Some(&RestartPolicy::No), None, false, crash(), 0),
            RestartDecision::Stop
        );
    }

    #[test]
    fn requested_stops_never_restart_and_default_is_on_failure_ten() {
        let mut t = RestartTracker::new();
        let stop = ExitInfo {
            requested_stop: true,
            signal: Some(15),
            ..ExitInfo::default()
        };
        assert_eq!(
            t.decide(Some(&RestartPolicy::Always), None, false, stop, 0),
            RestartDecision::Stop
        );
        for i in 0..10 {
            assert_eq!(
                t.decide(None, None, false, crash(), i),
                RestartDecision::Restart
            );
        }
        assert_eq!(
            t.decide(None, None, false, crash(), 11),
            RestartDecision::Stop
        );
        let oom = ExitInfo {
            code: Some(0),
            oom_killed: true,
            ..ExitInfo::default()
        };
        assert!(!oom.is_success());
    }
}
