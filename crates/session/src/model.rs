//! The stored session record and what a worker reports when it returns a lease.

use std::fmt;

use authkeeper_core::Timestamp;
use authkeeper_core::name::{AccountName, SessionId, SiteName};
use serde::{Deserialize, Serialize};

use crate::storage_state::StorageState;

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SessionState {
    /// Logged in (as far as anyone knows): can be leased.
    #[default]
    Active,
    /// The site logged it out: a login must run before anyone leases it.
    NeedsLogin,
    /// Retired (usage, error score, age, logged out, or by an operator): never leased again.
    Retired,
}

impl SessionState {
    /// The snake_case name used in APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionState::Active => "active",
            SessionState::NeedsLogin => "needs_login",
            SessionState::Retired => "retired",
        }
    }
}

/// The lease a session is under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseInfo {
    /// The lease id handed to the worker (`{site}~{session}~{nonce}`).
    pub lease_id: String,
    /// Who holds it (the broker client's name, or a CLI label).
    pub holder: String,
    /// When it ends unless renewed by a heartbeat.
    pub expires_at: Timestamp,
    /// The TTL the worker asked for, in milliseconds: a heartbeat that names none renews by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
}

/// A browser session record (stored sealed, as JSON, in a
/// [`RecordStore`](authkeeper_core::RecordStore) as record kind `session`, key `SITE/ID`).
#[derive(Clone, Serialize, Deserialize)]
pub struct Session {
    /// The session id within the site.
    pub id: SessionId,
    /// The site.
    pub site: SiteName,
    /// The account it is logged in as.
    pub account: AccountName,
    /// The proxy URL it was created with (resolved from the account's reference; may hold
    /// credentials: sealed at rest, never logged). Every lease hands it out with the session:
    /// the site keeps seeing one identity.
    #[serde(default)]
    pub proxy: Option<String>,
    /// What the session looks like to the site (user agent, locale, time zone, window size),
    /// fixed when it is created.
    #[serde(default)]
    pub identity: Option<crate::identity::Identity>,
    /// Cookies and localStorage.
    pub storage_state: StorageState,
    /// Lifecycle state.
    #[serde(default)]
    pub state: SessionState,
    /// Why it was retired or needs a login.
    #[serde(default)]
    pub reason: Option<String>,
    /// When it was created (logged in).
    pub created_at: Timestamp,
    /// When it was last leased.
    #[serde(default)]
    pub last_used_at: Option<Timestamp>,
    /// When a probe last confirmed it logged in.
    #[serde(default)]
    pub last_checked_at: Option<Timestamp>,
    /// When a cookie refresh last extended it.
    #[serde(default)]
    pub last_refreshed_at: Option<Timestamp>,
    /// How many leases it has served.
    #[serde(default)]
    pub usage_count: u32,
    /// Crawlee-style error score: up on errors and blocks, down on successes.
    #[serde(default)]
    pub error_score: f64,
    /// Absolute expiry (from `max_age`, or the earliest persistent cookie that must not expire).
    #[serde(default)]
    pub expires_at: Option<Timestamp>,
    /// The current lease, if any (an expired lease is as good as none).
    #[serde(default)]
    pub lease: Option<LeaseInfo>,
    /// Logins run for this session (1 after creation).
    #[serde(default)]
    pub logins: u32,
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("site", &self.site)
            .field("account", &self.account)
            .field("state", &self.state)
            .field("usage_count", &self.usage_count)
            .field("error_score", &self.error_score)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// True when a lease is held and not expired at `now`.
    pub fn is_leased(&self, now: Timestamp) -> bool {
        self.lease
            .as_ref()
            .is_some_and(|lease| lease.expires_at > now)
    }
}

/// What a worker reports when it releases a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The session worked.
    Ok,
    /// The site blocked the worker (403, 429, CAPTCHA).
    Blocked,
    /// The site logged the session out.
    LoggedOut,
    /// Something else failed.
    Error,
}

impl Outcome {
    /// The snake_case name used in APIs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Blocked => "blocked",
            Outcome::LoggedOut => "logged_out",
            Outcome::Error => "error",
        }
    }
}

/// A lease handed to a worker.
#[derive(Clone, Serialize)]
pub struct SessionLease {
    /// Pass it to heartbeat and release.
    pub lease_id: String,
    /// The session.
    pub session_id: SessionId,
    /// The site.
    pub site: SiteName,
    /// The account.
    pub account: AccountName,
    /// The proxy identity the session must be used with (resolved URL), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    /// The session's identity as Playwright `newContext` options (`userAgent`, `locale`,
    /// `timezoneId`, `viewport`, `extraHTTPHeaders`), if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<serde_json::Value>,
    /// Cookies and localStorage to load into the browser (or to compute a `Cookie` header from).
    pub storage_state: StorageState,
    /// When the lease ends unless renewed (RFC 3339 in JSON).
    #[serde(serialize_with = "rfc3339::one")]
    pub lease_expires_at: Timestamp,
}

/// Serializes timestamps as RFC 3339 strings, like every other time in the broker's API.
pub(crate) mod rfc3339 {
    use authkeeper_core::Timestamp;
    use serde::Serializer;

    /// One timestamp.
    pub fn one<S: Serializer>(at: &Timestamp, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&at.to_rfc3339())
    }

    /// An optional timestamp (`null` when absent).
    pub fn option<S: Serializer>(at: &Option<Timestamp>, serializer: S) -> Result<S::Ok, S::Error> {
        match at {
            Some(at) => serializer.serialize_str(&at.to_rfc3339()),
            None => serializer.serialize_none(),
        }
    }
}

impl fmt::Debug for SessionLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionLease")
            .field("lease_id", &self.lease_id)
            .field("session_id", &self.session_id)
            .field("site", &self.site)
            .field("account", &self.account)
            .field("lease_expires_at", &self.lease_expires_at)
            .finish_non_exhaustive()
    }
}
