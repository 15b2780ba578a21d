//! Backoff and circuit breaking for token endpoints.
//!
//! Failed refreshes wait a capped exponential delay with full jitter (a random delay between zero
//! and the exponential bound), never less than the server's `Retry-After`. A [`CircuitBreaker`]
//! per token endpoint stops all credentials of that endpoint from hammering it while it fails,
//! letting one trial request through when the open period ends.

use std::sync::Mutex;
use std::time::Duration;

use rand::Rng;

use crate::clock::Timestamp;

/// Capped exponential backoff with full jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Bound of the first retry delay.
    pub base: Duration,
    /// Largest delay.
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(300),
        }
    }
}

impl Backoff {
    /// The upper bound of the delay after `failures` consecutive failures (≥ 1).
    pub fn bound(&self, failures: u32) -> Duration {
        let exponent = failures.saturating_sub(1).min(30);
        self.base.saturating_mul(1u32 << exponent).min(self.cap)
    }

    /// A random delay in `[0, bound]`, but at least `retry_after` (capped at `cap`).
    pub fn delay(&self, failures: u32, retry_after: Option<Duration>) -> Duration {
        let bound = self.bound(failures);
        let jittered =
            Duration::from_millis(rand::thread_rng().gen_range(0..=bound.as_millis() as u64));
        jittered.max(retry_after.unwrap_or_default().min(self.cap))
    }
}

/// The state of a circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Requests flow.
    Closed,
    /// Requests are refused until this time.
    Open {
        /// When one trial request will be let through.
        until: Timestamp,
    },
    /// One trial request is in flight.
    HalfOpen,
}

impl CircuitState {
    /// A numeric code for metrics: 0 closed, 1 open, 2 half-open.
    pub fn code(self) -> u8 {
        match self {
            CircuitState::Closed => 0,
            CircuitState::Open { .. } => 1,
            CircuitState::HalfOpen => 2,
        }
    }
}

#[derive(Debug)]
struct BreakerInner {
    state: CircuitState,
    consecutive_failures: u32,
    openings: u32,
}

/// A circuit breaker for one token endpoint, shared by every credential that uses it.
#[derive(Debug)]
pub struct CircuitBreaker {
    threshold: u32,
    backoff: Backoff,
    inner: Mutex<BreakerInner>,
}

impl CircuitBreaker {
    /// A breaker that opens after `threshold` consecutive transient failures, for a period that
    /// grows with `backoff` each time it re-opens.
    pub fn new(threshold: u32, backoff: Backoff) -> Self {
        CircuitBreaker {
            threshold: threshold.max(1),
            backoff,
            inner: Mutex::new(BreakerInner {
                state: CircuitState::Closed,
                consecutive_failures: 0,
                openings: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BreakerInner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The current state.
    pub fn state(&self) -> CircuitState {
        self.lock().state
    }

    /// Asks to send a request at `now`: `Err(until)` while open. When the open period has
    /// ended, the first caller gets through (half-open) and the others are refused until it
    /// reports back.
    pub fn try_pass(&self, now: Timestamp) -> Result<(), Timestamp> {
        let mut inner = self.lock();
        match inner.state {
            CircuitState::Closed => Ok(()),
            CircuitState::Open { until } if now < until => Err(until),
            CircuitState::Open { .. } => {
                inner.state = CircuitState::HalfOpen;
                Ok(())
            }
            CircuitState::HalfOpen => Err(now + Duration::from_millis(100)),
        }
    }

    /// Reports a successful request (or one that failed for a non-transient reason: the
    /// endpoint itself works).
    pub fn record_success(&self) {
        let mut inner = self.lock();
        inner.state = CircuitState::Closed;
        inner.consecutive_failures = 0;
        inner.openings = 0;
    }

    /// Reports a transient failure at `now`; returns the state afterwards.
    pub fn record_failure(&self, now: Timestamp, retry_after: Option<Duration>) -> CircuitState {
        let mut inner = self.lock();
        inner.consecutive_failures += 1;
        let reopen = matches!(inner.state, CircuitState::HalfOpen);
        if reopen || inner.consecutive_failures >= self.threshold {
            inner.openings += 1;
            let until = now
                + self
                    .backoff
                    .delay(inner.openings, retry_after)
                    .max(self.backoff.base);
            inner.state = CircuitState::Open { until };
        }
        inner.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_grows_exponentially_and_caps() {
        let backoff = Backoff {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(60),
        };
        let bounds: Vec<u64> = (1..=8).map(|n| backoff.bound(n).as_secs()).collect();
        assert_eq!(bounds, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(backoff.bound(u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn delay_is_within_bound_and_honours_retry_after() {
        let backoff = Backoff {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(60),
        };
        for failures in 1..10 {
            for _ in 0..100 {
                assert!(backoff.delay(failures, None) <= backoff.bound(failures));
            }
        }
        assert!(backoff.delay(1, Some(Duration::from_secs(30))) >= Duration::from_secs(30));
        assert_eq!(
            backoff.delay(1, Some(Duration::from_secs(3600))),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn full_jitter_spreads_delays() {
        let backoff = Backoff {
            base: Duration::from_secs(10),
            cap: Duration::from_secs(60),
        };
        let delays: std::collections::BTreeSet<_> =
            (0..100).map(|_| backoff.delay(3, None)).collect();
        assert!(delays.len() > 50);
    }

    #[test]
    fn breaker_opens_after_threshold_and_half_opens_once() {
        let breaker = CircuitBreaker::new(
            3,
            Backoff {
                base: Duration::from_secs(1),
                cap: Duration::from_secs(10),
            },
        );
        let now = Timestamp::from_secs(100);
        assert!(breaker.try_pass(now).is_ok());
        breaker.record_failure(now, None);
        breaker.record_failure(now, None);
        assert_eq!(breaker.state(), CircuitState::Closed);
        let state = breaker.record_failure(now, Some(Duration::from_secs(5)));
        let CircuitState::Open { until } = state else {
            panic!("open expected, got {state:?}")
        };
        assert!(until >= now + Duration::from_secs(5));
        assert_eq!(breaker.try_pass(now), Err(until));
        // After the open period one trial passes, the next caller is refused.
        assert!(breaker.try_pass(until).is_ok());
        assert!(breaker.try_pass(until).is_err());
        // The trial fails: open again at once.
        assert!(matches!(
            breaker.record_failure(until, None),
            CircuitState::Open { .. }
        ));
        breaker.record_success();
        assert_eq!(breaker.state(), CircuitState::Closed);
        assert!(breaker.try_pass(until).is_ok());
    }
}
