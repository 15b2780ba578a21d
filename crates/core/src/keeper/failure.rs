//! What a failed refresh leaves behind: the classified status (backoff, needs_reauth,
//! disabled), events, re-authentication, and the loud `lost_in_crash` case.

use std::sync::Arc;
use std::time::Duration;

use super::entry::{Entry, Need};
use super::{Keeper, KeeperError, Token};
use crate::error::{ErrorClass, RefreshError};
use crate::events::Event;
use crate::store::CredentialState;

impl Keeper {
    /// Records a failed refresh: status, backoff, events; returns what the caller gets.
    pub(super) async fn record_failure(
        &self,
        entry: &Arc<Entry>,
        need: Need,
        generation: u64,
        error: RefreshError,
        latency: Duration,
    ) -> Result<Token, KeeperError> {
        let name = &entry.name;
        let now = self.now();
        let class = error.class();
        let cause = error.cause();
        let mut status = entry.status();
        status.failures = status.failures.saturating_add(1);
        status.reason = Some(format!("{class}: {error}"));
        status.next_attempt_at = match class {
            ErrorClass::Transient => Some(
                now + self
                    .inner
                    .settings
                    .backoff
                    .delay(status.failures, error.retry_after()),
            ),
            ErrorClass::NeedsReauth => None,
            // Configuration and permission problems need a fix: retry rarely, in case it came.
            ErrorClass::Configuration | ErrorClass::Permission => {
                Some(now + self.inner.settings.backoff.cap)
            }
        };
        status.state = match class {
            ErrorClass::Transient => CredentialState::BackingOff,
            ErrorClass::NeedsReauth => CredentialState::NeedsReauth,
            ErrorClass::Configuration | ErrorClass::Permission => CredentialState::Disabled,
        };
        let next_attempt_at = status.next_attempt_at;
        let failures = status.failures;
        match self.inner.store.set_status(name, generation, &status).await {
            Ok(true) => entry.set_status(status),
            Ok(false) => {
                // Another process stored a newer generation meanwhile: its state wins.
                if let Ok(Some(record)) = self.read_store(entry).await {
                    self.install(entry, record);
                }
            }
            Err(store_error) => {
                tracing::warn!(credential = %name, error = %store_error, "could not store the credential status");
                entry.set_status(status);
            }
        }
        self.emit(Event::RefreshFailed {
            name,
            class,
            cause: &cause,
            failures,
            next_attempt_at,
            latency,
        });
        if class == ErrorClass::NeedsReauth {
            let reason = error.to_string();
            self.emit(Event::NeedsReauth {
                name,
                reason: &reason,
            });
            self.reauth_after_failure(entry, generation, &reason);
        }
        let error = KeeperError::Refresh {
            name: name.to_string(),
            class,
            source: error,
            next_attempt_at,
        };
        if let Some(token) = self.satisfied(entry, need) {
            return Ok(token);
        }
        self.serve_or(entry, need, error)
    }

    /// A retry after an interrupted refresh was refused (`invalid_grant`): the rotated refresh
    /// token died with the previous holder. Recorded as needs_reauth with reason
    /// [`crate::events::LOST_IN_CRASH`], loudly.
    pub(super) async fn record_lost_in_crash(
        &self,
        entry: &Arc<Entry>,
        need: Need,
        generation: u64,
        error: RefreshError,
        latency: Duration,
    ) -> Result<Token, KeeperError> {
        let name = &entry.name;
        self.emit(Event::LostInCrash { name, generation });
        let result = self
            .record_failure(entry, need, generation, error, latency)
            .await;
        let mut status = entry.status();
        if status.state == CredentialState::NeedsReauth {
            let cause = status.reason.take().unwrap_or_default();
            status.reason = Some(format!("{}: {cause}", crate::events::LOST_IN_CRASH));
            match self.inner.store.set_status(name, generation, &status).await {
                Ok(true) => entry.set_status(status),
                Ok(false) => {}
                Err(store_error) => {
                    tracing::warn!(credential = %name, error = %store_error, "could not store the credential status");
                    entry.set_status(status);
                }
            }
        }
        match result {
            Err(KeeperError::Refresh { .. }) | Err(KeeperError::NeedsReauth { .. }) => {
                Err(KeeperError::NeedsReauth {
                    name: name.to_string(),
                    reason: entry
                        .status()
                        .reason
                        .unwrap_or_else(|| crate::events::LOST_IN_CRASH.to_owned()),
                })
            }
            other => other,
        }
    }
}
