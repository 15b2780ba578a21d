//! The runtime state of one credential: its cached generation, single-flight lock, status and
//! what a caller needs from a refresh.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;

use crate::backoff::CircuitBreaker;
use crate::clock::Timestamp;
use crate::config::CredentialSettings;
use crate::grant::OAuthClient;
use crate::name::CredentialName;
use crate::policy::Schedule;
use crate::store::{CredentialState, CredentialStatus};
use crate::token::TokenSet;

/// The cached generation of a credential.
pub(super) struct Current {
    pub(super) generation: u64,
    pub(super) tokens: TokenSet,
    pub(super) schedule: Schedule,
    /// The generation this one replaced and when its token expired, so that a late report of
    /// it being rejected can still be judged (expired in flight, or refused early).
    pub(super) previous: Option<(u64, Timestamp)>,
}

/// The smallest growth of the delivery margin after a token expired in flight.
pub(super) const MIN_DELIVERY_STEP: Duration = Duration::from_millis(100);

/// What a caller needs from a refresh.
#[derive(Debug, Clone, Copy)]
pub(super) enum Need {
    /// A token usable for at least this long.
    Serves(Duration),
    /// A token whose refresh is not yet due (proactive refresh).
    NotDue,
    /// A generation newer than this one (the caller's token was rejected).
    NewerThan(u64),
    /// A token usable for at least this long whose refresh is not due yet.
    Fresh(Duration),
}

impl Need {
    pub(super) fn satisfied_by(self, current: &Current, now: Timestamp) -> bool {
        match self {
            Need::Serves(min_ttl) => current.schedule.serves(now, min_ttl),
            Need::NotDue => !current.schedule.is_due(now),
            Need::NewerThan(generation) => current.generation > generation,
            Need::Fresh(min_ttl) => {
                current.schedule.serves(now, min_ttl) && !current.schedule.is_due(now)
            }
        }
    }

    /// Whether a still-valid cached token may stand in when refreshing is impossible.
    pub(super) fn accepts_stale(self) -> bool {
        !matches!(self, Need::NewerThan(_))
    }
}

/// One credential's runtime state.
pub(super) struct Entry {
    pub(super) name: CredentialName,
    pub(super) settings: Arc<CredentialSettings>,
    pub(super) client: Arc<OAuthClient>,
    /// Where tokens come from instead of the token endpoint (`grant = "session"`).
    pub(super) source: Option<Arc<dyn crate::source::TokenSource>>,
    pub(super) breaker: Arc<CircuitBreaker>,
    pub(super) current: ArcSwapOption<Current>,
    /// Single-flight: held while loading or refreshing.
    pub(super) flight: tokio::sync::Mutex<()>,
    /// A proactive refresh task is scheduled or running.
    pub(super) proactive_pending: AtomicBool,
    /// No proactive attempt before this time (millis), mirrors `status.next_attempt_at`.
    pub(super) retry_not_before: AtomicI64,
    /// Learned time (millis) a handed-out token needs to reach its API, taken off the hand-out
    /// window: see [`Entry::learn_late_delivery`].
    delivery_margin_ms: AtomicU64,
    /// A token of the cached generation was reported as expired in flight.
    late_this_generation: AtomicBool,
    /// The sequence number of this credential's live item in the due queue (0: none).
    pub(super) scheduled_seq: AtomicU64,
    /// Removed at runtime ([`super::Keeper::remove_credential`]).
    pub(super) removed: AtomicBool,
    status: Mutex<CredentialStatus>,
}

impl Entry {
    /// A fresh entry with nothing cached.
    pub(super) fn new(
        name: CredentialName,
        settings: Arc<CredentialSettings>,
        client: Arc<OAuthClient>,
        source: Option<Arc<dyn crate::source::TokenSource>>,
        breaker: Arc<CircuitBreaker>,
    ) -> Entry {
        Entry {
            name,
            settings,
            client,
            source,
            breaker,
            current: ArcSwapOption::empty(),
            flight: tokio::sync::Mutex::new(()),
            proactive_pending: AtomicBool::new(false),
            retry_not_before: AtomicI64::new(i64::MIN),
            delivery_margin_ms: AtomicU64::new(0),
            late_this_generation: AtomicBool::new(false),
            scheduled_seq: AtomicU64::new(0),
            removed: AtomicBool::new(false),
            status: Mutex::new(CredentialStatus::default()),
        }
    }

    /// The learned delivery margin.
    pub(super) fn delivery_margin(&self) -> Duration {
        Duration::from_millis(self.delivery_margin_ms.load(Ordering::Acquire))
    }

    /// A token expired between hand-out and use: double the delivery margin (at least
    /// [`MIN_DELIVERY_STEP`]; the schedule caps it at a quarter of the lifetime). Returns the
    /// new margin.
    pub(super) fn learn_late_delivery(&self, lifetime: Duration) -> Duration {
        self.late_this_generation.store(true, Ordering::Release);
        let cap = u64::try_from(
            lifetime
                .mul_f64(crate::policy::MAX_DELIVERY_SHARE)
                .as_millis(),
        )
        .unwrap_or(u64::MAX);
        let step = u64::try_from(MIN_DELIVERY_STEP.as_millis()).unwrap_or(u64::MAX);
        let updated = self
            .delivery_margin_ms
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |old| {
                Some(old.saturating_mul(2).max(step).min(cap))
            })
            .map_or(0, |old| old.saturating_mul(2).max(step).min(cap));
        Duration::from_millis(updated)
    }

    /// A new generation is cached: after a generation without late deliveries the margin
    /// decays slowly (2% per generation), so that a burst of slowness does not shorten the
    /// hand-out window forever, yet a steady delay keeps it.
    pub(super) fn next_generation_margin(&self) -> Duration {
        if !self.late_this_generation.swap(false, Ordering::AcqRel) {
            let _ =
                self.delivery_margin_ms
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |old| {
                        (old > 0).then(|| if old < 20 { 0 } else { old * 49 / 50 })
                    });
        }
        self.delivery_margin()
    }

    /// The status this process last saw.
    pub(super) fn status(&self) -> CredentialStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the status, and the earliest time of the next proactive attempt with it.
    pub(super) fn set_status(&self, status: CredentialStatus) {
        let not_before = match (status.state, status.next_attempt_at) {
            (CredentialState::NeedsReauth, _) => i64::MAX,
            (_, Some(at)) => at.as_millis(),
            (_, None) => i64::MIN,
        };
        self.retry_not_before.store(not_before, Ordering::Release);
        *self.status.lock().unwrap_or_else(|p| p.into_inner()) = status;
    }

    /// The cached generation (0: nothing cached).
    pub(super) fn generation(&self) -> u64 {
        self.current.load().as_ref().map_or(0, |c| c.generation)
    }
}
