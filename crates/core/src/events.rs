//! Events the engine reports: what metrics, logs and notifications are built on.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::Timestamp;
use crate::error::ErrorClass;

/// What started a refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A caller needed a fresher token.
    Demand,
    /// The schedule said it was due (heartbeat or a caller noticing).
    Proactive,
    /// A caller reported the token rejected (compare-and-refresh).
    Rejected,
}

impl Trigger {
    /// The snake_case name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Demand => "demand",
            Trigger::Proactive => "proactive",
            Trigger::Rejected => "rejected",
        }
    }
}

/// Something that happened to a credential. Carries no secret.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event<'a> {
    /// A first token set was stored (import, login, first client_credentials token).
    Issued {
        /// The credential.
        name: &'a str,
        /// Its generation.
        generation: u64,
    },
    /// A refresh succeeded and was stored.
    Refreshed {
        /// The credential.
        name: &'a str,
        /// The new generation.
        generation: u64,
        /// Why it ran.
        trigger: Trigger,
        /// Time spent at the token endpoint.
        latency: Duration,
        /// When the new access token expires.
        expires_at: Timestamp,
    },
    /// A refresh failed.
    RefreshFailed {
        /// The credential.
        name: &'a str,
        /// What to do about it.
        class: ErrorClass,
        /// A short machine-readable cause (`invalid_grant`, `http_503`, `timeout`...).
        cause: &'a str,
        /// Consecutive failures so far.
        failures: u32,
        /// When the next attempt may happen, if it will.
        next_attempt_at: Option<Timestamp>,
        /// Time spent at the token endpoint.
        latency: Duration,
    },
    /// Refresh cannot help any more: a human or a login method must act.
    NeedsReauth {
        /// The credential.
        name: &'a str,
        /// Why.
        reason: &'a str,
    },
    /// A caller reported a token rejected.
    Rejected {
        /// The credential.
        name: &'a str,
        /// The generation the caller used.
        generation: u64,
        /// Whether that led to a refresh (false when a newer generation already existed).
        refreshed: bool,
    },
    /// A refresh lease was taken over from a holder that never released it (crashed or hung).
    LeaseTakenOver {
        /// The credential.
        name: &'a str,
    },
    /// A refreshed token set could not be stored because someone else's write won (fencing).
    WriteFenced {
        /// The credential.
        name: &'a str,
        /// The generation found in the store.
        current_generation: u64,
    },
    /// A refresh holder stopped (was killed) after sending the refresh token of `generation`
    /// and before storing the answer, and the next holder's retry was refused with
    /// `invalid_grant`: the rotated refresh token was lost. The credential needs
    /// re-authentication with reason [`LOST_IN_CRASH`].
    LostInCrash {
        /// The credential.
        name: &'a str,
        /// The generation whose refresh was in flight.
        generation: u64,
    },
    /// A session approaches its absolute expiry (`max_session_age` or the provider's
    /// `refresh_token_expires_in`) and its scheduled re-login is due (see [`crate::reauth`]).
    ReloginDue {
        /// The credential.
        name: &'a str,
        /// When the session dies.
        expires_at: Timestamp,
        /// Whether a login method renews it without a human (command, client_credentials).
        automatic: bool,
    },
    /// A login method re-authenticated the credential without a human.
    Reauthenticated {
        /// The credential.
        name: &'a str,
        /// The new generation.
        generation: u64,
        /// The login method (`command`).
        method: &'a str,
    },
    /// A credential that needed re-authentication works again: a valid token set was stored
    /// (by a login, an import or a login method, in any process sharing the store).
    Recovered {
        /// The credential.
        name: &'a str,
        /// The generation that works.
        generation: u64,
    },
    /// An automatic re-authentication attempt failed.
    ReauthFailed {
        /// The credential.
        name: &'a str,
        /// Why (never a secret).
        cause: &'a str,
        /// Attempts so far.
        attempts: u32,
        /// When the next attempt runs; `None` when it gave up (a human must act).
        next_attempt_at: Option<Timestamp>,
    },
}

/// The reason recorded on a credential whose grant was lost in a crash
/// ([`Event::LostInCrash`]).
pub const LOST_IN_CRASH: &str = "lost_in_crash";
/// Receives events. Must be cheap and must not block: it runs on the refresh path.
pub trait EventSink: Send + Sync + 'static {
    /// Called for every event.
    fn on_event(&self, event: &Event<'_>);
}

impl<F> EventSink for F
where
    F: Fn(&Event<'_>) + Send + Sync + 'static,
{
    fn on_event(&self, event: &Event<'_>) {
        self(event)
    }
}

/// A shareable sink.
pub type SharedSink = Arc<dyn EventSink>;

/// Logs every event with `tracing` (no secrets: events carry none).
#[derive(Debug, Default, Clone, Copy)]
pub struct LogSink;

impl EventSink for LogSink {
    fn on_event(&self, event: &Event<'_>) {
        match event {
            Event::Issued { name, generation } => {
                tracing::info!(credential = %name, generation, "token set stored")
            }
            Event::Refreshed {
                name,
                generation,
                trigger,
                latency,
                expires_at,
            } => tracing::info!(
                credential = %name,
                generation,
                trigger = trigger.as_str(),
                latency_ms = latency.as_millis() as u64,
                expires_at = %expires_at,
                "refreshed"
            ),
            Event::RefreshFailed {
                name,
                class,
                cause,
                failures,
                next_attempt_at,
                ..
            } => tracing::warn!(
                credential = %name,
                class = class.as_str(),
                cause = %cause,
                failures,
                next_attempt_at = ?next_attempt_at,
                "refresh failed"
            ),
            Event::NeedsReauth { name, reason } => {
                tracing::error!(credential = %name, reason = %reason, "credential needs re-authentication")
            }
            Event::Rejected {
                name,
                generation,
                refreshed,
            } => {
                tracing::info!(credential = %name, generation, refreshed, "token reported rejected")
            }
            Event::LeaseTakenOver { name } => tracing::warn!(
                credential = %name,
                "took over an abandoned refresh lease (previous holder crashed or hung)"
            ),
            Event::WriteFenced {
                name,
                current_generation,
            } => tracing::warn!(
                credential = %name,
                current_generation,
                "refreshed tokens discarded: another holder took the refresh lease over"
            ),
            Event::LostInCrash { name, generation } => tracing::error!(
                credential = %name,
                generation,
                reason = LOST_IN_CRASH,
                "the refresh token was lost: a holder was killed between the provider's answer and the durable write, and the provider refused the retry; the credential needs re-authentication"
            ),
            Event::ReloginDue {
                name,
                expires_at,
                automatic,
            } => tracing::warn!(
                credential = %name,
                expires_at = %expires_at,
                automatic,
                "session expires soon: scheduled re-login due"
            ),
            Event::Reauthenticated {
                name,
                generation,
                method,
            } => {
                tracing::info!(credential = %name, generation, method, "re-authenticated automatically")
            }
            Event::Recovered { name, generation } => {
                tracing::info!(credential = %name, generation, "credential works again after re-authentication")
            }
            Event::ReauthFailed {
                name,
                cause,
                attempts,
                next_attempt_at,
            } => tracing::error!(
                credential = %name,
                cause = %cause,
                attempts,
                next_attempt_at = ?next_attempt_at,
                "automatic re-authentication failed"
            ),
        }
    }
}
