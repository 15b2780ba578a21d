//! Time as a dependency: a [`Clock`] trait with the system clock and a manual clock for tests.
//!
//! Every decision the engine makes about expiry goes through a `Clock`, so tests can move time
//! forward by hand instead of sleeping.

use std::fmt;
use std::future::Future;
use std::ops::{Add, Sub};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// A point in time as milliseconds since the Unix epoch (UTC).
///
/// Milliseconds are precise enough for token lifetimes and cheap to compare, store and move
/// between processes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// Builds a timestamp from milliseconds since the Unix epoch.
    pub const fn from_millis(millis: i64) -> Self {
        Timestamp(millis)
    }

    /// Builds a timestamp from whole seconds since the Unix epoch (saturating).
    pub const fn from_secs(secs: i64) -> Self {
        Timestamp(secs.saturating_mul(1000))
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// Whole seconds since the Unix epoch (rounded down).
    pub const fn as_secs(self) -> i64 {
        self.0.div_euclid(1000)
    }

    /// The time from `earlier` to `self`, or zero when `earlier` is later.
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0).max(0) as u64)
    }

    /// Milliseconds from `earlier` to `self`; negative when `earlier` is later.
    pub const fn millis_since(self, earlier: Timestamp) -> i64 {
        self.0.saturating_sub(earlier.0)
    }

    /// The wall-clock time of this timestamp.
    pub fn to_system_time(self) -> SystemTime {
        if self.0 >= 0 {
            UNIX_EPOCH + Duration::from_millis(self.0 as u64)
        } else {
            UNIX_EPOCH - Duration::from_millis(self.0.unsigned_abs())
        }
    }

    /// Converts a wall-clock time; times before the epoch saturate to the epoch.
    pub fn from_system_time(time: SystemTime) -> Self {
        match time.duration_since(UNIX_EPOCH) {
            Ok(since) => Timestamp(i64::try_from(since.as_millis()).unwrap_or(i64::MAX)),
            Err(_) => Timestamp::EPOCH,
        }
    }

    /// RFC 3339 text of this instant (UTC, millisecond precision). Instants outside the years
    /// 1970–9999 are shown as the nearest end of that range (RFC 3339 has four-digit years).
    pub fn to_rfc3339(self) -> String {
        const LAST_MILLI_OF_9999: i64 = 253_402_300_799_999;
        let shown = Timestamp(self.0.clamp(0, LAST_MILLI_OF_9999));
        humantime::format_rfc3339_millis(shown.to_system_time()).to_string()
    }
}

fn duration_millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl Add<Duration> for Timestamp {
    type Output = Timestamp;
    fn add(self, rhs: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(duration_millis(rhs)))
    }
}

impl Sub<Duration> for Timestamp {
    type Output = Timestamp;
    fn sub(self, rhs: Duration) -> Timestamp {
        Timestamp(self.0.saturating_sub(duration_millis(rhs)))
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_rfc3339())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

/// A future returned by [`Clock::sleep_until`].
pub type Sleep<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// A source of the current time that can also wait for a moment to arrive.
///
/// Implementations must be cheap to call: [`Clock::now`] is on the engine's fast path.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;

    /// Completes once [`Clock::now`] has reached `deadline`.
    fn sleep_until(&self, deadline: Timestamp) -> Sleep<'_>;
}

/// A shareable clock handle.
pub type SharedClock = Arc<dyn Clock>;

/// The operating system's wall clock, optionally shifted by a fixed offset.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock {
    offset_millis: i64,
}

impl SystemClock {
    /// The system clock without offset.
    pub const fn new() -> Self {
        SystemClock { offset_millis: 0 }
    }

    /// The system clock shifted by `offset_millis` (positive runs ahead). Used by the mock IdP to
    /// simulate a provider whose clock is off.
    pub const fn with_offset_millis(offset_millis: i64) -> Self {
        SystemClock { offset_millis }
    }

    /// A shareable handle to the unshifted system clock.
    pub fn shared() -> SharedClock {
        Arc::new(SystemClock::new())
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let now = Timestamp::from_system_time(SystemTime::now());
        Timestamp(now.0.saturating_add(self.offset_millis))
    }

    fn sleep_until(&self, deadline: Timestamp) -> Sleep<'_> {
        let wait = deadline.saturating_since(self.now());
        Box::pin(tokio::time::sleep(wait))
    }
}

/// A clock that only moves when told to. Sleepers wake when [`ManualClock::advance`] or
/// [`ManualClock::set`] moves time past their deadline.
#[derive(Debug)]
pub struct ManualClock {
    millis: AtomicI64,
    changed: watch::Sender<i64>,
}

impl ManualClock {
    /// A manual clock showing `start`.
    pub fn new(start: Timestamp) -> Arc<Self> {
        let (changed, _) = watch::channel(start.0);
        Arc::new(ManualClock {
            millis: AtomicI64::new(start.0),
            changed,
        })
    }

    /// A manual clock starting at the current system time.
    pub fn starting_now() -> Arc<Self> {
        Self::new(SystemClock::new().now())
    }

    /// Moves time forward by `by` and wakes every sleeper whose deadline has passed.
    pub fn advance(&self, by: Duration) {
        let now =
            self.millis.fetch_add(duration_millis(by), Ordering::SeqCst) + duration_millis(by);
        self.changed.send_replace(now);
    }

    /// Sets the time to `to` (which may go backwards, to test clock jumps).
    pub fn set(&self, to: Timestamp) {
        self.millis.store(to.0, Ordering::SeqCst);
        self.changed.send_replace(to.0);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.millis.load(Ordering::SeqCst))
    }

    fn sleep_until(&self, deadline: Timestamp) -> Sleep<'_> {
        let mut changes = self.changed.subscribe();
        Box::pin(async move {
            while self.now() < deadline {
                if changes.changed().await.is_err() {
                    return;
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_arithmetic_saturates() {
        let t = Timestamp::from_secs(10);
        assert_eq!((t + Duration::from_millis(1500)).as_millis(), 11_500);
        assert_eq!((t - Duration::from_secs(20)).as_millis(), -10_000);
        assert_eq!(t.saturating_since(Timestamp::from_secs(20)), Duration::ZERO);
        assert_eq!(
            Timestamp::from_millis(i64::MAX) + Duration::from_secs(1),
            Timestamp::from_millis(i64::MAX)
        );
    }

    #[test]
    fn rfc3339_text_never_panics_outside_four_digit_years() {
        assert_eq!(
            Timestamp::from_millis(i64::MAX).to_rfc3339(),
            "9999-12-31T23:59:59.999Z"
        );
        assert_eq!(
            Timestamp::from_millis(-5).to_rfc3339(),
            "1970-01-01T00:00:00.000Z"
        );
    }

    #[tokio::test]
    async fn manual_clock_wakes_sleepers_only_when_advanced_past_deadline() {
        let clock = ManualClock::new(Timestamp::from_secs(100));
        let deadline = Timestamp::from_secs(105);
        let sleeper = {
            let clock = Arc::clone(&clock);
            tokio::spawn(async move { clock.sleep_until(deadline).await })
        };
        clock.advance(Duration::from_secs(4));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        clock.advance(Duration::from_secs(1));
        tokio::time::timeout(Duration::from_secs(5), sleeper)
            .await
            .expect("sleeper woke")
            .expect("no panic");
    }
}
