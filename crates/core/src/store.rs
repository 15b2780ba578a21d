//! The [`Store`] trait: durable, encrypted storage of credentials and the cross-process refresh
//! lease that makes a refresh happen exactly once.
//!
//! Every backend (embedded SQLite, Redis) implements this trait and must pass the conformance
//! suite in `authkeeper_core::conformance` (feature `conformance`).

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
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
    pub name: String,
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
    pub name: String,
    /// The current generation.
    pub generation: u64,
    /// When the current access token expires.
    pub expires_at: Timestamp,
    /// Bookkeeping.
    pub status: CredentialStatus,
}

/// A task's saved progress (see [`crate::checkpoint`]): JSON sealed at rest like a token set.
#[derive(Clone)]
pub struct StoredCheckpoint {
    /// The task name (same rules as a credential name).
    pub task: String,
    /// The JSON document, as saved. Zeroized when dropped; never shown by `Debug`.
    pub data: zeroize::Zeroizing<Vec<u8>>,
    /// Bumped by every save; starts at 1.
    pub version: u64,
    /// When it was saved.
    pub updated_at: Timestamp,
}

impl fmt::Debug for StoredCheckpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredCheckpoint")
            .field("task", &self.task)
            .field("bytes", &self.data.len())
            .field("version", &self.version)
            .field("updated_at", &self.updated_at)
            .finish()
    }
}

/// The record kind of a sealed checkpoint (part of its associated data).
pub const CHECKPOINT_KIND: &str = "checkpoint";

/// The record kind of a sealed browser session (part of its associated data).
pub const SESSION_KIND: &str = "session";

/// A browser session record of one site: an opaque document (JSON owned by `authkeeper-session`)
/// sealed at rest with kind [`SESSION_KIND`] and name `{site}/{id}`.
///
/// Records are versioned: [`Store::compare_and_put_session`] writes only over the version the
/// writer read, which is what makes a session lease exclusive across processes and replicas.
#[derive(Clone)]
pub struct StoredSession {
    /// The site (same rules as a credential name).
    pub site: String,
    /// The session id within the site (same rules as a credential name).
    pub id: String,
    /// The document, as saved. Zeroized when dropped; never shown by `Debug`.
    pub data: zeroize::Zeroizing<Vec<u8>>,
    /// Bumped by every write; starts at 1.
    pub version: u64,
}

impl fmt::Debug for StoredSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredSession")
            .field("site", &self.site)
            .field("id", &self.id)
            .field("bytes", &self.data.len())
            .field("version", &self.version)
            .finish()
    }
}

/// The outcome of a conditional write.
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

/// A held refresh lease: while it is held, no other process using the same store refreshes
/// the credential.
pub struct Lease {
    /// The credential's name.
    pub name: String,
    /// Random identity of the holder.
    pub owner: String,
    /// Monotonic counter bumped by every acquisition; writes under the lease are fenced by it.
    pub fence: u64,
    /// When the lease expires unless renewed.
    pub expires_at: Timestamp,
    /// True when the previous holder never released its lease (it crashed or hung, possibly in
    /// the middle of a refresh).
    pub took_over_abandoned: bool,
    /// Backend-specific resources released with the lease (e.g. an OS file lock).
    pub guard: Option<Box<dyn Send + Sync>>,
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("name", &self.name)
            .field("owner", &self.owner)
            .field("fence", &self.fence)
            .field("expires_at", &self.expires_at)
            .field("took_over_abandoned", &self.took_over_abandoned)
            .finish_non_exhaustive()
    }
}

/// The result of trying to take a refresh lease.
#[derive(Debug)]
pub enum LeaseAttempt {
    /// The lease is ours.
    Acquired(Lease),
    /// Someone else holds it until at least this time.
    Busy {
        /// When the other holder's lease expires unless renewed.
        held_until: Timestamp,
    },
}

/// Why a store operation failed. Never contains a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend could not be reached or answered with an I/O error.
    #[error("store unavailable: {message}")]
    Unavailable {
        /// What failed.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// A record could not be decrypted: wrong key, or the data was tampered with.
    #[error("cannot decrypt stored {kind} `{name}`: {reason}")]
    Decrypt {
        /// The record kind.
        kind: &'static str,
        /// The record name.
        name: String,
        /// Why (wrong key, unknown key id, corrupt).
        reason: String,
    },
    /// The stored data is not in a format this version understands.
    #[error("stored data is corrupt or from an unknown version: {0}")]
    Corrupt(String),
    /// A name that cannot be stored.
    #[error(
        "invalid credential name {0:?}: use 1-128 characters of letters, digits, '.', '_', '-'"
    )]
    InvalidName(String),
    /// Anything else, with its source.
    #[error("{message}")]
    Other {
        /// What failed.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl StoreError {
    /// An [`StoreError::Unavailable`] with a source.
    pub fn unavailable(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StoreError::Unavailable {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }
}

/// Checks a credential or record name: 1-128 characters of ASCII letters, digits, `.`, `_`, `-`.
pub fn validate_name(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidName(name.chars().take(64).collect()))
    }
}

/// Durable, encrypted storage of credentials, shared by every process and replica.
///
/// Implementations are safe for concurrent use. Secrets are sealed at rest; the associated data
/// of each sealed value binds it to its kind and name.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// Loads a credential, or `None` when nothing is stored under `name`.
    async fn load(&self, name: &str) -> Result<Option<StoredCredential>, StoreError>;

    /// Lists every stored credential without unsealing secrets.
    async fn list(&self) -> Result<Vec<CredentialSummary>, StoreError>;

    /// Stores `tokens` under `name` whatever is there (import, login): the generation becomes
    /// the stored one plus one, and the status is reset to valid.
    async fn put(&self, name: &str, tokens: &TokenSet, now: Timestamp) -> Result<u64, StoreError>;

    /// Stores `tokens` only if the stored generation is `expected_generation` (0: nothing stored)
    /// and, when `fence` is given, the refresh lease still carries that fence. The status is reset
    /// to valid with `last_refresh_at = now`. The write is durable when this returns.
    async fn compare_and_put(
        &self,
        name: &str,
        expected_generation: u64,
        fence: Option<u64>,
        tokens: &TokenSet,
        now: Timestamp,
    ) -> Result<WriteOutcome, StoreError>;

    /// Replaces the status of a stored credential if its generation is still `generation`, so a
    /// slow process cannot overwrite the status of a newer token set. Returns whether it was
    /// written (false when nothing is stored or the generation moved).
    async fn set_status(
        &self,
        name: &str,
        generation: u64,
        status: &CredentialStatus,
    ) -> Result<bool, StoreError>;

    /// Deletes a credential; returns whether something was deleted.
    async fn delete(&self, name: &str) -> Result<bool, StoreError>;

    /// Tries to take the refresh lease of `name` for `ttl`, without waiting.
    async fn try_acquire_lease(
        &self,
        name: &str,
        owner: &str,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<LeaseAttempt, StoreError>;

    /// Releases a lease taken with [`Store::try_acquire_lease`]. Releasing a lease that was
    /// taken over by someone else does nothing.
    async fn release_lease(&self, lease: Lease) -> Result<(), StoreError>;

    /// Marks that the holder of the lease with `fence` is about to send the refresh token of
    /// `generation` to the token endpoint, and returns the marker a previous holder left behind:
    /// the generation it was refreshing from when it stopped without releasing its lease
    /// (killed, or hung until its lease was taken over). [`Store::release_lease`] clears the
    /// marker, so `Some(g)` with `g` still the stored generation means the previous holder may
    /// have had a rotated refresh token issued that never reached the store.
    ///
    /// Only the current holder (matching `fence`) sets the marker; the previous one is
    /// returned either way. The default keeps no marker and returns `None`.
    async fn mark_in_flight(
        &self,
        name: &str,
        fence: u64,
        generation: u64,
    ) -> Result<Option<u64>, StoreError> {
        let _ = (name, fence, generation);
        Ok(None)
    }

    /// Waits until the generation of `name` may have moved past `seen_generation`, or at most
    /// `timeout`. Backends with notifications return as soon as a change is published; the
    /// default polls.
    async fn wait_for_change(&self, name: &str, seen_generation: u64, timeout: Duration) {
        let _ = (name, seen_generation);
        tokio::time::sleep(timeout.min(Duration::from_millis(20))).await;
    }

    /// Saves the checkpoint of `task` (a JSON document, sealed at rest with kind
    /// [`CHECKPOINT_KIND`]), replacing any previous one; returns its new version. The default
    /// says the backend does not support checkpoints; every backend of this workspace does.
    async fn put_checkpoint(
        &self,
        task: &str,
        data: &[u8],
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        let _ = (task, data, now);
        Err(checkpoints_unsupported())
    }

    /// Loads the checkpoint of `task`, or `None` when none is saved.
    async fn get_checkpoint(&self, task: &str) -> Result<Option<StoredCheckpoint>, StoreError> {
        let _ = task;
        Err(checkpoints_unsupported())
    }

    /// Deletes the checkpoint of `task`; returns whether one was deleted.
    async fn delete_checkpoint(&self, task: &str) -> Result<bool, StoreError> {
        let _ = task;
        Err(checkpoints_unsupported())
    }

    /// Lists the session records of `site` (unsealed), in no particular order.
    ///
    /// Fails with [`StoreError::InvalidName`] for an invalid site, and with
    /// [`StoreError::Decrypt`] when any record of the site cannot be unsealed (the whole listing
    /// fails rather than silently hiding a record). The default says the backend does not support
    /// sessions; every backend of this workspace does.
    async fn list_sessions(&self, site: &str) -> Result<Vec<StoredSession>, StoreError> {
        let _ = site;
        Err(sessions_unsupported())
    }

    /// Lists the sites that have at least one session record (sorted in the backends of this
    /// workspace). Unseals nothing.
    async fn list_session_sites(&self) -> Result<Vec<String>, StoreError> {
        Err(sessions_unsupported())
    }

    /// Loads one session record, or `None` when `site`/`id` has none. The record is bound to its
    /// site and id by the associated data of its seal: a sealed value moved to another record
    /// fails with [`StoreError::Decrypt`] instead of opening. Both names follow
    /// [`validate_name`] ([`StoreError::InvalidName`] otherwise), as in every session method.
    async fn load_session(
        &self,
        site: &str,
        id: &str,
    ) -> Result<Option<StoredSession>, StoreError> {
        let _ = (site, id);
        Err(sessions_unsupported())
    }

    /// Writes the session record `site`/`id` only if its stored version is `expected_version`
    /// (0: it must not exist yet). Returns the new version, or `None` when the version moved (the
    /// caller lost a race and should re-read). The write is durable when this returns, and
    /// atomic with the version check across every process and replica sharing the store: of
    /// concurrent writers over the same version, exactly one gets `Some`. A refused write
    /// changes nothing.
    async fn compare_and_put_session(
        &self,
        site: &str,
        id: &str,
        expected_version: u64,
        data: &[u8],
    ) -> Result<Option<u64>, StoreError> {
        let _ = (site, id, expected_version, data);
        Err(sessions_unsupported())
    }

    /// Deletes the session record `site`/`id` if its stored version is `expected_version`
    /// (0: whatever it is). Returns whether a record was deleted: `false` when there is none or
    /// its version moved (the record is then left as it is).
    async fn delete_session(
        &self,
        site: &str,
        id: &str,
        expected_version: u64,
    ) -> Result<bool, StoreError> {
        let _ = (site, id, expected_version);
        Err(sessions_unsupported())
    }
}

fn sessions_unsupported() -> StoreError {
    StoreError::Other {
        message: "this store does not support browser sessions".to_owned(),
        source: None,
    }
}

fn checkpoints_unsupported() -> StoreError {
    StoreError::Other {
        message: "this store does not support checkpoints".to_owned(),
        source: None,
    }
}
