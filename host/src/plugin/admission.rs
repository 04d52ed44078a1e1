//! Which calls of a plugin may start: at most `limits.concurrentCalls` at
//! once (a plugin cannot take every call slot of the runtime), and at most
//! `limits.callsPerSecond` for one rollout or analysis run (no plugin output
//! can make the controller spin on it).

use super::limits::Limits;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;
use tokio::sync::{Semaphore, SemaphorePermit};

/// Targets tracked before idle ones are forgotten.
const MAX_TRACKED_TARGETS: usize = 4096;

/// A token bucket: `2 × rate` tokens, refilled at `rate` a second.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
}

/// One plugin's admission control.
pub(crate) struct Admission {
    slots: Semaphore,
    rate: u32,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Admission {
    /// Admission under `limits`.
    pub fn new(limits: &Limits) -> Self {
        Admission {
            slots: Semaphore::new(limits.concurrent_calls.max(1)),
            rate: limits.calls_per_second,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The rate in force (0: none).
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Takes a token for a call serving `target` (`namespace/name`);
    /// false when its rate is used up.
    pub fn take_token(&self, target: &str, now: Instant) -> bool {
        if self.rate == 0 {
            return true;
        }
        let rate = f64::from(self.rate);
        let capacity = 2.0 * rate;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_TRACKED_TARGETS && !buckets.contains_key(target) {
            // Forget targets whose bucket has refilled: they lose nothing.
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.refilled).as_secs_f64() * rate < capacity
            });
        }
        let bucket = buckets.entry(target.to_string()).or_insert(Bucket {
            tokens: capacity,
            refilled: now,
        });
        let elapsed = now.saturating_duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(capacity);
        bucket.refilled = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Waits for one of the plugin's call slots.
    pub async fn slot(&self) -> Option<SemaphorePermit<'_>> {
        self.slots.acquire().await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_target_gets_a_burst_then_its_rate() {
        let admission = Admission::new(&Limits {
            calls_per_second: 5,
            ..Limits::default()
        });
        let t0 = Instant::now();
        let burst = (0..20)
            .take_while(|_| admission.take_token("shop/a", t0))
            .count();
        assert_eq!(burst, 10, "twice the rate at once");
        assert!(
            admission.take_token("shop/b", t0),
            "other targets have their own bucket"
        );
        assert!(!admission.take_token("shop/a", t0 + Duration::from_millis(100)));
        assert!(admission.take_token("shop/a", t0 + Duration::from_millis(200)));
    }

    #[test]
    fn zero_means_no_rate_limit() {
        let admission = Admission::new(&Limits {
            calls_per_second: 0,
            ..Limits::default()
        });
        let now = Instant::now();
        assert!((0..1000).all(|_| admission.take_token("shop/a", now)));
    }
}
