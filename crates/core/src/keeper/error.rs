//! [`KeeperError`]: why no token could be handed out, and what to do about it.

use std::time::Duration;

use crate::clock::Timestamp;
use crate::error::{ErrorClass, RefreshError};
use crate::store::StoreError;

/// Why no token could be handed out. Never contains a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeeperError {
    /// The credential is not configured.
    #[error("unknown credential `{0}`")]
    UnknownCredential(String),
    /// A credential of this name exists already.
    #[error("credential `{0}` exists already")]
    AlreadyExists(String),
    /// Nothing is stored for a credential whose grant needs a refresh token.
    #[error("no tokens stored for `{0}`: import or log in first (`authkeeper import {0}`)")]
    NotStored(String),
    /// Refresh cannot help: the grant is dead.
    #[error("credential `{name}` needs re-authentication: {reason}")]
    NeedsReauth {
        /// The credential.
        name: String,
        /// Why.
        reason: String,
    },
    /// The token expired and refreshing is paused (backoff, open circuit, configuration error).
    #[error(
        "credential `{name}` unavailable ({class}): {cause}; next attempt at {next_attempt_at}"
    )]
    Unavailable {
        /// The credential.
        name: String,
        /// What kind of failure.
        class: ErrorClass,
        /// The last failure's cause.
        cause: String,
        /// When the next refresh attempt may happen.
        next_attempt_at: Timestamp,
    },
    /// A refresh attempt failed just now.
    #[error("refreshing `{name}` failed ({class}): {source}")]
    Refresh {
        /// The credential.
        name: String,
        /// What to do.
        class: ErrorClass,
        /// The failure.
        #[source]
        source: RefreshError,
        /// When the next attempt may happen, if at all.
        next_attempt_at: Option<Timestamp>,
    },
    /// The caller asks for more validity than the provider grants.
    #[error("min_ttl {min_ttl:?} of `{name}` is not shorter than the token lifetime {lifetime:?}")]
    MinTtlTooLong {
        /// The credential.
        name: String,
        /// What was asked.
        min_ttl: Duration,
        /// What the provider issues.
        lifetime: Duration,
    },
    /// A caller reported a generation that was never stored (rejections of a future
    /// generation would let any client force refreshes).
    #[error("generation {reported} of `{name}` was never issued (the current one is {current})")]
    UnknownGeneration {
        /// The credential.
        name: String,
        /// What the caller reported.
        reported: u64,
        /// The stored generation.
        current: u64,
    },
    /// Another process held the refresh lease for too long.
    #[error("timed out after {waited:?} waiting for another process to refresh `{name}`")]
    LeaseWaitTimeout {
        /// The credential.
        name: String,
        /// How long we waited.
        waited: Duration,
    },
    /// This process's refresh lost its lease to another holder, whose tokens were stored
    /// instead (fencing); retrying picks them up.
    #[error("the refresh of `{name}` was superseded by another holder's; retry")]
    Superseded {
        /// The credential.
        name: String,
    },
    /// The store failed.
    #[error("store error for `{name}`: {source}")]
    Store {
        /// The credential.
        name: String,
        /// The failure.
        #[source]
        source: StoreError,
    },
}

impl KeeperError {
    /// What to do about this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            KeeperError::UnknownCredential(_)
            | KeeperError::AlreadyExists(_)
            | KeeperError::MinTtlTooLong { .. }
            | KeeperError::UnknownGeneration { .. } => ErrorClass::Configuration,
            KeeperError::NotStored(_) | KeeperError::NeedsReauth { .. } => ErrorClass::NeedsReauth,
            KeeperError::Unavailable { class, .. } | KeeperError::Refresh { class, .. } => *class,
            KeeperError::LeaseWaitTimeout { .. }
            | KeeperError::Superseded { .. }
            | KeeperError::Store { .. } => ErrorClass::Transient,
        }
    }
}
