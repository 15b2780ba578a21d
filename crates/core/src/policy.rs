//! When to refresh: the refresh policy.
//!
//! A token is refreshed once `refresh_at` of its lifetime has passed (default 0.8, i.e. when 20%
//! remains), minus a deterministic jitter so that many credentials issued together do not refresh
//! in the same instant, and never later than `expires_at - clock_skew`. The skew is scaled down
//! for very short lifetimes (a 2-second test token cannot keep a 30-second margin).

use std::hash::{Hash, Hasher};
use std::time::Duration;

use crate::clock::Timestamp;
use crate::token::TokenSet;

/// The largest share of a token's lifetime used as clock-skew margin.
const MAX_SKEW_SHARE: f64 = 0.1;

/// The largest share of a token's lifetime taken off its hand-out window for delivery time.
pub const MAX_DELIVERY_SHARE: f64 = 0.25;

/// The smallest clock-skew margin for lifetimes of at least four seconds.
const MIN_SKEW: Duration = Duration::from_secs(1);

/// Parameters of the refresh schedule for one credential.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RefreshPolicy {
    /// Share of the lifetime after which to refresh (0 < refresh_at ≤ 1).
    pub refresh_at: f64,
    /// Safety margin before `expires_at` for clock differences and request latency.
    pub clock_skew: Duration,
    /// Largest share of the lifetime by which a refresh is moved earlier, per credential and
    /// generation (0 ≤ jitter < refresh_at).
    pub jitter: f64,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        RefreshPolicy {
            refresh_at: 0.8,
            clock_skew: Duration::from_secs(30),
            jitter: 0.05,
        }
    }
}

/// Why a policy is unusable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid refresh policy: {0}")]
pub struct PolicyError(&'static str);

impl RefreshPolicy {
    /// Checks the parameters.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if !(self.refresh_at > 0.0 && self.refresh_at <= 1.0) {
            return Err(PolicyError("refresh_at must be in (0, 1]"));
        }
        if !(self.jitter >= 0.0 && self.jitter < self.refresh_at) {
            return Err(PolicyError("jitter must be in [0, refresh_at)"));
        }
        Ok(())
    }

    /// The clock-skew margin applied to a token of this lifetime.
    pub fn effective_skew(&self, lifetime: Duration) -> Duration {
        // Scaled down for short lifetimes, but never below a second (or a quarter of the
        // lifetime): providers compute expiry from whole seconds, so a token may die up to a
        // second before `issued_at + expires_in`.
        let floor = MIN_SKEW.min(lifetime / 4);
        self.clock_skew
            .min(lifetime.mul_f64(MAX_SKEW_SHARE).max(floor))
    }

    /// The schedule of a token set stored as `generation` of credential `name`.
    pub fn schedule(&self, name: &str, generation: u64, tokens: &TokenSet) -> Schedule {
        self.schedule_with_margin(name, generation, tokens, Duration::ZERO)
    }

    /// The schedule when handed-out tokens need `delivery_margin` more to reach their API
    /// (learned from tokens that expired in flight): it is taken off the hand-out window, at
    /// most [`MAX_DELIVERY_SHARE`] of the lifetime, and the refresh is due no later than that.
    pub fn schedule_with_margin(
        &self,
        name: &str,
        generation: u64,
        tokens: &TokenSet,
        delivery_margin: Duration,
    ) -> Schedule {
        let lifetime = tokens.lifetime();
        let delivery = delivery_margin.min(lifetime.mul_f64(MAX_DELIVERY_SHARE));
        let usable_until = tokens.expires_at - self.effective_skew(lifetime) - delivery;
        let planned = tokens.issued_at + lifetime.mul_f64(self.refresh_at);
        let jitter = lifetime.mul_f64(self.jitter * unit_fraction(name, generation));
        let refresh_due_at = (planned - jitter).min(usable_until);
        Schedule {
            lifetime,
            refresh_due_at,
            usable_until,
        }
    }
}

/// When a token should be refreshed and until when it may be handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// The token's lifetime as issued.
    pub lifetime: Duration,
    /// From this moment a refresh is due (done in the background while the token is served).
    pub refresh_due_at: Timestamp,
    /// The token is handed out only before this moment (`expires_at` minus the skew margin).
    pub usable_until: Timestamp,
}

impl Schedule {
    /// Whether the token can be handed out at `now` to a caller needing `min_ttl` of validity.
    #[inline]
    pub fn serves(&self, now: Timestamp, min_ttl: Duration) -> bool {
        now + min_ttl < self.usable_until
    }

    /// Whether a refresh is due at `now`.
    #[inline]
    pub fn is_due(&self, now: Timestamp) -> bool {
        now >= self.refresh_due_at
    }
}

/// A number in [0, 1) derived from the credential and generation: the same in every process, so
/// all of them agree on the schedule, yet different across credentials.
fn unit_fraction(name: &str, generation: u64) -> f64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut hasher);
    generation.hash(&mut hasher);
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(issued_secs: i64, lifetime_ms: u64) -> TokenSet {
        let issued_at = Timestamp::from_secs(issued_secs);
        TokenSet {
            access_token: crate::secret::AccessToken::from("a"),
            token_type: "Bearer".into(),
            refresh_token: None,
            id_token: None,
            scope: None,
            issued_at,
            expires_at: issued_at + Duration::from_millis(lifetime_ms),
            refresh_token_expires_at: None,
            extra: Default::default(),
        }
    }

    #[test]
    fn one_hour_token_refreshes_at_80_percent_minus_jitter() {
        let policy = RefreshPolicy::default();
        let set = tokens(1000, 3_600_000);
        let schedule = policy.schedule("crm", 1, &set);
        let planned = Timestamp::from_secs(1000 + 2880);
        assert!(schedule.refresh_due_at <= planned);
        assert!(schedule.refresh_due_at >= planned - Duration::from_secs(180));
        assert_eq!(
            schedule.usable_until,
            Timestamp::from_secs(1000 + 3600 - 30)
        );
    }

    #[test]
    fn skew_scales_down_for_short_lifetimes() {
        let policy = RefreshPolicy::default();
        // 2 s: a quarter of the lifetime (0.5 s) instead of 30 s.
        let schedule = policy.schedule("t", 1, &tokens(0, 2_000));
        assert_eq!(schedule.usable_until, Timestamp::from_millis(1_500));
        assert!(schedule.refresh_due_at <= Timestamp::from_millis(1_500));
        assert!(schedule.refresh_due_at >= Timestamp::from_millis(1_400));
        // 5 s: one second, since providers round expiry to whole seconds.
        let schedule = policy.schedule("t", 1, &tokens(0, 5_000));
        assert_eq!(schedule.usable_until, Timestamp::from_millis(4_000));
        // 100 s: 10% of the lifetime.
        let schedule = policy.schedule("t", 1, &tokens(0, 100_000));
        assert_eq!(schedule.usable_until, Timestamp::from_millis(90_000));
    }

    #[test]
    fn never_later_than_expiry_minus_skew() {
        let policy = RefreshPolicy {
            refresh_at: 1.0,
            clock_skew: Duration::from_secs(30),
            jitter: 0.0,
        };
        let schedule = policy.schedule("t", 3, &tokens(0, 600_000));
        assert_eq!(schedule.refresh_due_at, Timestamp::from_secs(570));
    }

    #[test]
    fn jitter_spreads_credentials_but_is_stable_per_generation() {
        let policy = RefreshPolicy::default();
        let set = tokens(0, 3_600_000);
        let due: std::collections::BTreeSet<_> = (0..50)
            .map(|i| policy.schedule(&format!("c{i}"), 1, &set).refresh_due_at)
            .collect();
        assert!(
            due.len() > 40,
            "jitter spreads refreshes: {} distinct",
            due.len()
        );
        assert_eq!(
            policy.schedule("c1", 7, &set),
            policy.schedule("c1", 7, &set)
        );
    }

    #[test]
    fn delivery_margin_shortens_the_hand_out_window_up_to_a_quarter() {
        let policy = RefreshPolicy::default();
        let set = tokens(0, 2_000);
        let plain = policy.schedule("t", 1, &set);
        let margin = policy.schedule_with_margin("t", 1, &set, Duration::from_millis(300));
        assert_eq!(plain.usable_until.millis_since(margin.usable_until), 300);
        assert!(margin.refresh_due_at <= margin.usable_until);
        let capped = policy.schedule_with_margin("t", 1, &set, Duration::from_secs(60));
        assert_eq!(plain.usable_until.millis_since(capped.usable_until), 500);
    }

    #[test]
    fn serves_respects_min_ttl() {
        let schedule = RefreshPolicy::default().schedule("t", 1, &tokens(0, 3_600_000));
        let now = Timestamp::from_secs(3000);
        assert!(schedule.serves(now, Duration::from_secs(60)));
        assert!(!schedule.serves(now, Duration::from_secs(600)));
        assert!(schedule.is_due(now));
        assert!(!schedule.is_due(Timestamp::from_secs(10)));
    }

    #[test]
    fn validation_rejects_nonsense() {
        let bad = [
            (0.0, 0.0),
            (1.5, 0.0),
            (0.8, 0.9),
            (f64::NAN, 0.0),
            (0.8, -0.1),
        ];
        for (refresh_at, jitter) in bad {
            let policy = RefreshPolicy {
                refresh_at,
                jitter,
                ..RefreshPolicy::default()
            };
            assert!(policy.validate().is_err(), "{refresh_at} {jitter}");
        }
        assert!(RefreshPolicy::default().validate().is_ok());
    }
}
