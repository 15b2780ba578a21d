//! Why a pool operation failed. Never contains a cookie, password or proxy credential.

use std::time::Duration;

use authkeeper_core::StoreError;

use crate::login::LoginError;

/// Why a lease, heartbeat, release, import or export failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// No `[sites.NAME]` is configured under this name.
    #[error("unknown site `{0}`")]
    UnknownSite(String),
    /// The site has no account of this name.
    #[error("site `{site}` has no account `{account}`")]
    UnknownAccount {
        /// The site.
        site: String,
        /// The account asked for.
        account: String,
    },
    /// No session of the site can be handed out now: every one is leased (or retired with no
    /// way to create a new one).
    #[error("no session of site `{site}` is free{}", match .retry_after { Some(after) => format!(" (the next lease ends in {} ms)", after.as_millis()), None => String::new() })]
    Exhausted {
        /// The site.
        site: String,
        /// When one may be free again (the soonest lease expiry), if any is leased.
        retry_after: Option<Duration>,
    },
    /// The lease id is malformed or names no session.
    #[error("unknown lease `{0}`")]
    UnknownLease(String),
    /// The lease expired and was reclaimed or taken by another worker: the caller no longer
    /// holds the session and must lease again.
    #[error("lease `{0}` is no longer held (expired and reclaimed, or released)")]
    LeaseLost(String),
    /// The session does not exist.
    #[error("site `{site}` has no session `{id}`")]
    UnknownSession {
        /// The site.
        site: String,
        /// The session id.
        id: String,
    },
    /// A storage state was refused (malformed, or cookies that belong to another site).
    #[error("invalid storage state: {0}")]
    InvalidState(String),
    /// The site has no way to create a session (`[sites.NAME.login]` is missing).
    #[error("site `{0}` has no login configured: import a storage state or add [sites.{0}.login]")]
    NoLogin(String),
    /// A login ran and failed.
    #[error("login to site `{site}` as `{account}` failed: {source}")]
    LoginFailed {
        /// The site.
        site: String,
        /// The account.
        account: String,
        /// Why.
        #[source]
        source: LoginError,
    },
    /// A secret reference (password, proxy) could not be resolved.
    #[error("site `{site}`, account `{account}`: {message}")]
    Secret {
        /// The site.
        site: String,
        /// The account.
        account: String,
        /// What is missing (never the value).
        message: String,
    },
    /// Too many concurrent writers on the same records: try again.
    #[error("site `{0}`: too much contention on its session records, try again")]
    Contention(String),
    /// A name built from the configuration is not a valid name (e.g. a session id
    /// `{account}.{slot}` longer than 128 characters).
    #[error(transparent)]
    InvalidName(#[from] authkeeper_core::name::NameError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl LeaseError {
    /// True when trying again later may succeed (exhausted pool, contention, store outage,
    /// transient login failure).
    pub fn is_transient(&self) -> bool {
        match self {
            LeaseError::Exhausted { .. } | LeaseError::Contention(_) => true,
            LeaseError::Store(StoreError::Unavailable { .. }) => true,
            LeaseError::LoginFailed { source, .. } => source.is_transient(),
            _ => false,
        }
    }
}
