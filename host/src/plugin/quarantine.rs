//! Quarantine for repeat offenders: after N consecutive faults a plugin's
//! calls fail fast for a backoff period, then it is tried again; a healthy
//! call resets it. (Envoy's FAIL_RELOAD, plus a crash-loop brake.)

use super::limits::FaultPolicy;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
struct State {
    consecutive: u32,
    /// Quarantine periods served since the last healthy call.
    strikes: u32,
    until: Option<Instant>,
    last: String,
}

/// A plugin's fault history.
#[derive(Debug)]
pub struct Quarantine {
    policy: FaultPolicy,
    state: Mutex<State>,
}

/// A plugin in quarantine.
#[derive(Debug, Clone)]
pub struct Quarantined {
    /// Consecutive faults.
    pub faults: u32,
    /// Time left.
    pub remaining: Duration,
    /// The last fault.
    pub last: String,
}

impl Quarantine {
    /// A clean history under `policy`.
    pub fn new(policy: FaultPolicy) -> Self {
        Quarantine {
            policy,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Err` while quarantined; once the period is over, lets a trial call through.
    pub fn admit(&self) -> Result<(), Quarantined> {
        let state = self.lock();
        match state.until {
            Some(until) => {
                let now = Instant::now();
                if now < until {
                    Err(Quarantined {
                        faults: state.consecutive,
                        remaining: until - now,
                        last: state.last.clone(),
                    })
                } else {
                    Ok(())
                }
            }
            None => Ok(()),
        }
    }

    /// Records a healthy call: the history is cleared.
    pub fn record_success(&self) {
        *self.lock() = State::default();
    }

    /// Records a fault; returns the quarantine period if this one started it.
    pub fn record_fault(&self, description: &str) -> Option<Duration> {
        let mut state = self.lock();
        state.consecutive = state.consecutive.saturating_add(1);
        state.last = description.chars().take(300).collect();
        let threshold = self.policy.quarantine_after;
        if threshold == 0 || state.consecutive < threshold {
            return None;
        }
        // A failed trial call after a quarantine goes straight back in, for longer.
        let factor = 1u64.checked_shl(state.strikes.min(20)).unwrap_or(u64::MAX);
        let period = Duration::from_millis(
            self.policy
                .backoff_ms
                .saturating_mul(factor)
                .min(self.policy.max_backoff_ms),
        );
        state.strikes = state.strikes.saturating_add(1);
        state.until = Some(Instant::now() + period);
        Some(period)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(after: u32, backoff_ms: u64) -> FaultPolicy {
        FaultPolicy {
            quarantine_after: after,
            backoff_ms,
            max_backoff_ms: backoff_ms * 4,
        }
    }

    #[test]
    fn quarantines_after_threshold_and_success_resets() {
        let q = Quarantine::new(policy(2, 60_000));
        assert!(q.record_fault("trap").is_none());
        assert!(q.admit().is_ok());
        assert_eq!(q.record_fault("trap"), Some(Duration::from_secs(60)));
        let held = q.admit().unwrap_err();
        assert_eq!(held.faults, 2);
        q.record_success();
        assert!(q.admit().is_ok());
        // The count started again: one fault is below the threshold.
        assert!(q.record_fault("trap").is_none());
        assert!(q.admit().is_ok());
    }

    #[test]
    fn failed_trial_doubles_the_backoff_up_to_the_max() {
        let q = Quarantine::new(policy(1, 1000));
        assert_eq!(q.record_fault("a"), Some(Duration::from_millis(1000)));
        assert_eq!(q.record_fault("b"), Some(Duration::from_millis(2000)));
        assert_eq!(q.record_fault("c"), Some(Duration::from_millis(4000)));
        assert_eq!(q.record_fault("d"), Some(Duration::from_millis(4000)));
    }

    #[test]
    fn zero_threshold_never_quarantines() {
        let q = Quarantine::new(policy(0, 1000));
        for _ in 0..100 {
            assert!(q.record_fault("x").is_none());
        }
        assert!(q.admit().is_ok());
    }
}
