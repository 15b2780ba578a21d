//! The credential store: token sets with their generation and status, and the refresh lease
//! that makes a refresh happen exactly once across processes and replicas.
//!
//! [`CredentialStore`] is what the [`Keeper`](crate::Keeper) needs and nothing more. Every
//! backend (memory, SQLite, Redis) passes the conformance suite in `authkeeper_core::conformance`
//! (feature `conformance`).

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::error::StoreError;
use super::lease::{Lease, LeaseAttempt, RefreshStart, Unfinished};
use crate::clock::Timestamp;
use crate::name::CredentialName;
use crate::token::TokenSet;

/// The lifecycle state of a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CredentialState {
    /// The stored token set is usable or can be refreshed.
    #[default]
    Valid,
    /// A refresh is in flight.
    Refreshing,
    /// Transient failures: waiting before the next attempt.
    BackingOff,
    /// Refresh cannot help: a human or a login method must act.
    NeedsReauth,
    /// Switched off by an operator or by a configuration error.
    Disabled,
}

impl CredentialState {
    /// The snake_case name used in APIs and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialState::Valid => "valid",
            CredentialState::Refreshing => "refreshing",
            CredentialState::BackingOff => "backing_off",
            CredentialState::NeedsReauth => "needs_reauth",
            CredentialState::Disabled => "disabled",
        }
    }

    /// Parses [`CredentialState::as_str`] output.
    pub fn parse(text: &str) -> Option<CredentialState> {
        Some(match text {
            "valid" => CredentialState::Valid,
            "refreshing" => CredentialState::Refreshing,
            "backing_off" => CredentialState::BackingOff,
            "needs_reauth" => CredentialState::NeedsReauth,
            "disabled" => CredentialState::Disabled,
            _ => return None,
        })
    }
}

impl fmt::Display for CredentialState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Non-secret bookkeeping about a credential, shared by every process using the store.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CredentialStatus {
    /// Lifecycle state.
    pub state: CredentialState,
    /// When the last successful refresh was stored.
    pub last_refresh_at: Option<Timestamp>,
    /// Consecutive failed refresh attempts.
    pub failures: u32,
    /// Why the credential is not plainly valid (never contains a secret).
    pub reason: Option<String>,
    /// Earliest time the next refresh may be attempted (backoff), if any.
    pub next_attempt_at: Option<Timestamp>,
}

/// A credential as stored: its token set, generation and status.
#[derive(Debug, Clone)]
pub struct StoredCredential {
    /// The credential's name.
    pub name: CredentialName,
    /// Bumped by every stored token set; starts at 1.
    pub generation: u64,
    /// The current tokens.
    pub tokens: TokenSet,
    /// Bookkeeping.
    pub status: CredentialStatus,
}

/// What can be listed without unsealing a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialSummary {
    /// The credential's name.
    pub name: CredentialName,
    /// The current generation.
    pub generation: u64,
    /// When the current access token expires.
    pub expires_at: Timestamp,
    /// Bookkeeping.
    pub status: CredentialStatus,
}

/// What a token-set write requires of the stored state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Whatever is stored (an import or a login): the status is reset to a fresh valid one.
    None,
    /// The stored generation is this one (0: nothing stored). The status is reset to valid with
    /// `last_refresh_at` = the write's time.
    Generation(u64),
    /// As [`Precondition::Generation`], and the refresh lease still carries `fence` (it was not
    /// taken over): the write of a refresh made under a lease.
    Fenced {
        /// The generation the refresh started from.
        generation: u64,
        /// The fence of the writer's lease.
        fence: u64,
    },
}

/// The outcome of a token-set write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Stored as this generation.
    Written {
        /// The new generation.
        generation: u64,
    },
    /// Not stored: the stored generation was not the expected one, or the writer's lease was
    /// taken over by someone else (fencing).
    Conflict {
        /// The generation in the store now (0 when nothing is stored).
        current_generation: u64,
    },
}

/// Durable, encrypted storage of credentials and their refresh leases, shared by every process
/// and replica.
///
/// Implementations are safe for concurrent use. Token sets are sealed at rest; the associated
/// data of each sealed value binds it to its kind and name.
#[async_trait]
pub trait CredentialStore: Send + Sync + fmt::Debug + 'static {
    /// Loads a credential, or `None` when nothing is stored under `name`.
    async fn load(&self, name: &CredentialName) -> Result<Option<StoredCredential>, StoreError>;

    /// Lists every stored credential without unsealing secrets.
    async fn list(&self) -> Result<Vec<CredentialSummary>, StoreError>;

    /// Stores `tokens` as the next generation of `name` if `precondition` holds (see
    /// [`Precondition`] for the status each kind of write leaves). The write is durable when this
    /// returns. A refused write changes nothing.
    async fn put(
        &self,
        name: &CredentialName,
        precondition: Precondition,
        tokens: &TokenSet,
        now: Timestamp,
    ) -> Result<WriteOutcome, StoreError>;

    /// Replaces the status of a stored credential if its generation is still `generation`, so a
    /// slow process cannot overwrite the status of a newer token set. Returns whether it was
    /// written (false when nothing is stored or the generation moved).
    async fn set_status(
        &self,
        name: &CredentialName,
        generation: u64,
        status: &CredentialStatus,
    ) -> Result<bool, StoreError>;

    /// Deletes a credential; returns whether something was deleted. Its lease fence survives.
    async fn delete(&self, name: &CredentialName) -> Result<bool, StoreError>;

    /// Tries to take the refresh lease of `name` for `ttl`, without waiting.
    async fn try_acquire_lease(
        &self,
        name: &CredentialName,
        owner: &str,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<LeaseAttempt, StoreError>;

    /// Extends `lease` to `now + ttl` if it is still held by its owner under its fence (nobody
    /// took it over), and returns the new expiry; `None` when it was lost. The holder renews
    /// while its token request runs, so a slow provider never lets the lease lapse under a
    /// live holder.
    async fn renew_lease(
        &self,
        lease: &Lease,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<Option<Timestamp>, StoreError>;

    /// Releases a lease taken with [`CredentialStore::try_acquire_lease`] and clears its
    /// in-flight marker. Releasing a lease that was taken over by someone else does nothing.
    async fn release_lease(&self, lease: Lease) -> Result<(), StoreError>;

    /// Marks that the holder of `lease` is about to send the refresh token of `generation` to the
    /// token endpoint, and returns the marker a previous holder left behind: the generation it
    /// was refreshing from when it stopped without releasing its lease (killed, or hung until its
    /// lease was taken over). `Some(g)` with `g` still the stored generation means the previous
    /// holder may have had a rotated refresh token issued that never reached the store.
    ///
    /// Only the current holder (matching fence) sets the marker; the previous one is returned
    /// either way.
    async fn mark_in_flight(
        &self,
        lease: &Lease,
        generation: u64,
    ) -> Result<Option<u64>, StoreError>;

    /// One page of [`CredentialStore::list`]: the summaries of the credentials whose names sort
    /// after `after` (from the first when `None`), in name order, at most `limit` of them. An
    /// empty page means the end. The provided method lists everything and cuts out the page;
    /// backends with ordered keys read only the page.
    async fn list_page(
        &self,
        after: Option<&CredentialName>,
        limit: usize,
    ) -> Result<Vec<CredentialSummary>, StoreError> {
        let mut all = self.list().await?;
        all.retain(|summary| after.is_none_or(|after| summary.name.as_str() > after.as_str()));
        all.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
        all.truncate(limit);
        Ok(all)
    }

    /// One page of stored credentials (unsealed) named after `after` (from the first when
    /// `None`), in name order, at most `limit`: what a process loads at start-up. An empty page
    /// means the end. The provided method lists a page and loads its credentials one by one;
    /// backends read the page at once.
    async fn load_page(
        &self,
        after: Option<&CredentialName>,
        limit: usize,
    ) -> Result<Vec<StoredCredential>, StoreError> {
        let mut after = after.cloned();
        loop {
            let page = self.list_page(after.as_ref(), limit).await?;
            let Some(last) = page.last() else {
                return Ok(Vec::new());
            };
            after = Some(last.name.clone());
            let mut loaded = Vec::with_capacity(page.len());
            for summary in &page {
                // Gone since the listing (deleted): skipped.
                if let Some(credential) = self.load(&summary.name).await? {
                    loaded.push(credential);
                }
            }
            if !loaded.is_empty() {
                return Ok(loaded);
            }
        }
    }

    /// Starts a refresh in one round trip where the backend can: takes the refresh lease of
    /// `name` for `ttl` (as [`CredentialStore::try_acquire_lease`]), reads the stored credential
    /// under it (as [`CredentialStore::load`]) and, when `mark_in_flight` is set and something is
    /// stored, marks its generation in flight (as [`CredentialStore::mark_in_flight`]), reporting
    /// whether a previous holder was interrupted sending that same generation's refresh token.
    ///
    /// On an error nothing stays held. The marker may be set although the caller then finds no
    /// refresh needed: releasing the lease clears it.
    async fn begin_refresh(
        &self,
        name: &CredentialName,
        owner: &str,
        now: Timestamp,
        ttl: Duration,
        mark_in_flight: bool,
    ) -> Result<RefreshStart, StoreError> {
        let lease = match self.try_acquire_lease(name, owner, now, ttl).await? {
            LeaseAttempt::Acquired(lease) => lease,
            LeaseAttempt::Busy { held_until } => return Ok(RefreshStart::Busy { held_until }),
        };
        let read = async {
            let stored = self.load(name).await?;
            let interrupted = match (&stored, mark_in_flight) {
                (Some(stored), true) => {
                    self.mark_in_flight(&lease, stored.generation).await? == Some(stored.generation)
                }
                _ => false,
            };
            Ok::<_, StoreError>((stored, interrupted))
        };
        match read.await {
            Ok((stored, interrupted)) => Ok(RefreshStart::Acquired {
                lease,
                stored,
                interrupted,
            }),
            Err(error) => {
                if let Err(release) = self.release_lease(lease).await {
                    tracing::debug!(credential = %name, error = %release, "could not release a refresh lease after a failed read");
                }
                Err(error)
            }
        }
    }

    /// Ends a refresh in one round trip where the backend can: stores `tokens` as the
    /// generation after `generation`, fenced by `lease` (as [`CredentialStore::put`] with
    /// [`Precondition::Fenced`]), and releases the lease (as [`CredentialStore::release_lease`]).
    /// When the write is durable or refused ([`WriteOutcome::Conflict`]), the lease is released;
    /// when the store fails, nothing is written and the lease comes back in [`Unfinished`].
    async fn finish_refresh(
        &self,
        lease: Lease,
        generation: u64,
        tokens: &TokenSet,
        now: Timestamp,
    ) -> Result<WriteOutcome, Unfinished> {
        let precondition = Precondition::Fenced {
            generation,
            fence: lease.fence,
        };
        match self.put(&lease.name, precondition, tokens, now).await {
            Ok(outcome) => {
                let name = lease.name.clone();
                if let Err(error) = self.release_lease(lease).await {
                    tracing::warn!(credential = %name, %error, "stored the refreshed tokens but could not release the refresh lease; it expires by itself");
                }
                Ok(outcome)
            }
            Err(error) => Err(Unfinished { error, lease }),
        }
    }

    /// Waits until the generation of `name` may have moved past `seen_generation`, or at most
    /// `timeout`. Backends with notifications return as soon as a change is published; the
    /// provided method polls briefly.
    async fn wait_for_change(
        &self,
        name: &CredentialName,
        seen_generation: u64,
        timeout: Duration,
    ) {
        let _ = (name, seen_generation);
        tokio::time::sleep(timeout.min(Duration::from_millis(20))).await;
    }
}

/// Stores `tokens` as the next generation of `name` whatever is stored (an import or a login)
/// and returns that generation.
pub async fn import(
    store: &dyn CredentialStore,
    name: &CredentialName,
    tokens: &TokenSet,
    now: Timestamp,
) -> Result<u64, StoreError> {
    match store.put(name, Precondition::None, tokens, now).await? {
        WriteOutcome::Written { generation } => Ok(generation),
        WriteOutcome::Conflict { .. } => Err(StoreError::other(format!(
            "the store refused an unconditional write of `{name}`"
        ))),
    }
}
