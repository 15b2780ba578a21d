//! Between the store and the in-memory cache: loading, installing newer generations, and
//! deciding from the cached status whether a refresh may be tried or a cached token served.

use std::sync::Arc;
use std::time::Duration;

use super::entry::{Current, Entry, Need};
use super::{Keeper, KeeperError, Token};
use crate::clock::Timestamp;
use crate::error::ErrorClass;
use crate::grant::GrantKind;
use crate::store::{CredentialState, StoredCredential};

impl Keeper {
    /// Reads the stored state of a credential into the cache.
    pub(super) async fn load(&self, entry: &Arc<Entry>) -> Result<(), KeeperError> {
        let _flight = entry.flight.lock().await;
        if entry.current.load().is_some() {
            return Ok(());
        }
        match self.read_store(entry).await? {
            Some(record) => {
                self.install(entry, record);
                Ok(())
            }
            None if matches!(
                entry.settings.grant,
                GrantKind::ClientCredentials | GrantKind::Session
            ) =>
            {
                Ok(())
            }
            None => Err(KeeperError::NotStored(entry.name.to_string())),
        }
    }

    pub(super) async fn read_store(
        &self,
        entry: &Entry,
    ) -> Result<Option<StoredCredential>, KeeperError> {
        self.inner
            .store
            .load(&entry.name)
            .await
            .map_err(|source| KeeperError::Store {
                name: entry.name.to_string(),
                source,
            })
    }

    /// Puts a stored record into the cache (if it is not older than what is cached).
    pub(super) fn install(&self, entry: &Arc<Entry>, record: StoredCredential) {
        let cached = entry.generation();
        if record.generation < cached {
            return;
        }
        let recovered = entry.status().state == CredentialState::NeedsReauth
            && record.status.state == CredentialState::Valid;
        entry.set_status(record.status);
        if recovered {
            self.emit(crate::events::Event::Recovered {
                name: entry.name.as_str(),
                generation: record.generation,
            });
        }
        if record.generation > cached || entry.current.load().is_none() {
            let previous = entry
                .current
                .load()
                .as_ref()
                .map(|old| (old.generation, old.tokens.expires_at));
            let margin = if previous.is_some() {
                entry.next_generation_margin()
            } else {
                entry.delivery_margin()
            };
            let schedule = entry.settings.policy.schedule_with_margin(
                &entry.name,
                record.generation,
                &record.tokens,
                margin,
            );
            entry.current.store(Some(Arc::new(Current {
                generation: record.generation,
                tokens: record.tokens,
                schedule,
                previous,
            })));
            self.reschedule(entry);
        }
    }

    /// An API rejected the token of `generation`: if it had reached the end of its hand-out
    /// window by now, it expired between hand-out and use, so the credential's delivery margin
    /// grows and the cached generation's schedule is redrawn with it (no token-endpoint call).
    pub(super) fn judge_rejection(&self, entry: &Arc<Entry>, generation: u64) {
        let Some(current) = entry.current.load_full() else {
            return;
        };
        let expired_at = if current.generation == generation {
            Some(current.tokens.expires_at)
        } else {
            current
                .previous
                .filter(|(previous, _)| *previous == generation)
                .map(|(_, expires_at)| expires_at)
        };
        let Some(expires_at) = expired_at else {
            return;
        };
        let policy = &entry.settings.policy;
        let lifetime = current.schedule.lifetime;
        let now = self.now();
        if now < expires_at - policy.effective_skew(lifetime) {
            return; // refused well before expiry: revoked, not late
        }
        let margin = entry.learn_late_delivery(lifetime);
        tracing::info!(
            credential = %entry.name,
            generation,
            delivery_margin_ms = margin.as_millis() as u64,
            "a token expired between hand-out and use; handing tokens out earlier"
        );
        let redrawn = Arc::new(Current {
            generation: current.generation,
            tokens: current.tokens.clone(),
            schedule: policy.schedule_with_margin(
                &entry.name,
                current.generation,
                &current.tokens,
                margin,
            ),
            previous: current.previous,
        });
        let _ = entry.current.compare_and_swap(&current, Some(redrawn));
        self.reschedule(entry);
    }

    /// Decides whether a refresh may be attempted now; `Some(error)` when not.
    pub(super) fn gate(&self, entry: &Entry, now: Timestamp) -> Option<KeeperError> {
        let status = entry.status();
        let reason = || {
            status
                .reason
                .clone()
                .unwrap_or_else(|| status.state.to_string())
        };
        match status.state {
            CredentialState::NeedsReauth => Some(KeeperError::NeedsReauth {
                name: entry.name.to_string(),
                reason: reason(),
            }),
            CredentialState::BackingOff | CredentialState::Disabled => match status.next_attempt_at
            {
                Some(at) if now < at => Some(KeeperError::Unavailable {
                    name: entry.name.to_string(),
                    class: if status.state == CredentialState::Disabled {
                        ErrorClass::Configuration
                    } else {
                        ErrorClass::Transient
                    },
                    cause: reason(),
                    next_attempt_at: at,
                }),
                _ => None,
            },
            CredentialState::Valid | CredentialState::Refreshing => None,
        }
    }

    /// When refreshing is impossible: the cached token if it is still valid and acceptable,
    /// else the error.
    pub(super) fn serve_or(
        &self,
        entry: &Entry,
        need: Need,
        error: KeeperError,
    ) -> Result<Token, KeeperError> {
        if need.accepts_stale()
            && let Some(current) = entry.current.load_full()
            && current.schedule.serves(self.now(), Duration::ZERO)
        {
            return Ok(Token { current });
        }
        Err(error)
    }

    pub(super) fn satisfied(&self, entry: &Entry, need: Need) -> Option<Token> {
        let current = entry.current.load_full()?;
        need.satisfied_by(&current, self.now())
            .then_some(Token { current })
    }
}
