//! The session pool: leases over a [`RecordStore`], exclusive across processes and replicas.
//!
//! Every session is one versioned record ([`RecordStore::compare_and_put`]); taking a lease is
//! a write over the version read, so of two workers (or two replicas) racing for a session only
//! one wins and the other moves on to the next. Sessions live in slots `{account}.{n}` (`n` below
//! `max_sessions_per_account`), which bounds them per account even when replicas race to create
//! one. A session that needs a login is leased first, logged in under that lease, then handed
//! out: nobody else can see it half-made.
//!
//! Files: [`claim`](self) takes a session, [`prepare`](self) probes and logs it in before it is
//! handed out, [`holder`](self) is the worker's heartbeat and release, [`admin`](self) the
//! operator's login, import, export, retire and list, [`maintenance`](self) the janitor.

mod admin;
mod claim;
mod error;
mod holder;
mod lease_id;
mod maintenance;
mod policy;
mod prepare;
mod records;

use self::claim::{Claim, hand_out};
use self::prepare::ProbeVerdict;

pub use self::records::SESSION;
use self::records::Versioned;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use authkeeper_core::name::{AccountName, SessionId, SiteName};
use authkeeper_core::secret_ref::SecretRef;
use authkeeper_core::{ExposeSecret, RecordStore, SharedClock, Timestamp};
use authkeeper_login::process::ChildEnv;
use serde::Serialize;

pub use self::error::LeaseError;
pub use self::maintenance::MaintenanceReport;
use crate::config::{AccountConfig, SiteConfig};
use crate::login::{SessionLogin, login_for};
use crate::model::{Session, SessionState};

/// How many times a lease re-reads the site after losing races before giving up.
const MAX_ATTEMPTS: usize = 16;

/// The id of `account`'s session in `slot`: `{account}.{slot}`.
fn slot_id(account: &AccountName, slot: u32) -> Result<SessionId, LeaseError> {
    Ok(SessionId::new(format!("{account}.{slot}"))?)
}

/// What a worker asks for.
#[derive(Debug, Clone, Default)]
pub struct LeaseRequest {
    /// Only sessions of this account.
    pub account: Option<String>,
    /// Lease length (default: the site's `lease_ttl`; capped by `max_lease_ttl`).
    pub lease_ttl: Option<Duration>,
    /// Who asks (a broker client name, a CLI label): recorded with the lease.
    pub holder: String,
}

/// What a release did to the session.
#[derive(Debug, Clone, Serialize)]
pub struct ReleaseSummary {
    /// The session.
    pub session_id: SessionId,
    /// Its state now (`retired` when the outcome crossed a limit).
    pub state: SessionState,
    /// Why, when retired or needing a login.
    pub reason: Option<String>,
    /// Its error score now.
    pub error_score: f64,
    /// Leases served.
    pub usage_count: u32,
}

/// A session as listed: metadata only, never a cookie value.
#[derive(Debug, Clone, Serialize)]
pub struct SessionSummary {
    /// The session id.
    pub id: SessionId,
    /// The site.
    pub site: SiteName,
    /// The account.
    pub account: AccountName,
    /// Lifecycle state.
    pub state: SessionState,
    /// Why it is retired or needs a login.
    pub reason: Option<String>,
    /// Whether it has a proxy identity (the URL itself is a secret).
    pub has_proxy: bool,
    /// When it was created.
    #[serde(serialize_with = "crate::model::rfc3339::one")]
    pub created_at: Timestamp,
    /// When it was last leased.
    #[serde(serialize_with = "crate::model::rfc3339::option")]
    pub last_used_at: Option<Timestamp>,
    /// When a probe last confirmed it logged in.
    #[serde(serialize_with = "crate::model::rfc3339::option")]
    pub last_checked_at: Option<Timestamp>,
    /// Leases served.
    pub usage_count: u32,
    /// Error score.
    pub error_score: f64,
    /// Logins run for it.
    pub logins: u32,
    /// The lease holder, while leased.
    pub leased_by: Option<String>,
    /// When the lease ends, while leased.
    #[serde(serialize_with = "crate::model::rfc3339::option")]
    pub lease_expires_at: Option<Timestamp>,
    /// Cookies stored.
    pub cookies: usize,
    /// Origins with localStorage stored.
    pub origins: usize,
}

impl SessionSummary {
    fn of(session: &Session, now: Timestamp) -> Self {
        let lease = session
            .lease
            .as_ref()
            .filter(|lease| lease.expires_at > now);
        SessionSummary {
            id: session.id.clone(),
            site: session.site.clone(),
            account: session.account.clone(),
            state: session.state,
            reason: session.reason.clone(),
            has_proxy: session.proxy.is_some(),
            created_at: session.created_at,
            last_used_at: session.last_used_at,
            last_checked_at: session.last_checked_at,
            usage_count: session.usage_count,
            error_score: session.error_score,
            logins: session.logins,
            leased_by: lease.map(|lease| lease.holder.clone()),
            lease_expires_at: lease.map(|lease| lease.expires_at),
            cookies: session.storage_state.cookies.len(),
            origins: session.storage_state.origins.len(),
        }
    }
}

/// Counters of what the pool did, for metrics.
#[derive(Debug, Default)]
pub struct PoolCounters {
    /// Leases handed out.
    pub leases: std::sync::atomic::AtomicU64,
    /// Lease requests refused because every session was taken.
    pub exhausted: std::sync::atomic::AtomicU64,
    /// Releases per outcome: ok, blocked, logged_out, error.
    pub releases: [std::sync::atomic::AtomicU64; 4],
    /// Logins that succeeded.
    pub logins_ok: std::sync::atomic::AtomicU64,
    /// Logins that failed.
    pub logins_failed: std::sync::atomic::AtomicU64,
    /// Probes that found a session logged out.
    pub probes_logged_out: std::sync::atomic::AtomicU64,
    /// Probes that found it logged in.
    pub probes_logged_in: std::sync::atomic::AtomicU64,
    /// Expired leases reclaimed.
    pub reclaimed: std::sync::atomic::AtomicU64,
    /// Sessions retired.
    pub retired: std::sync::atomic::AtomicU64,
    /// Cookie refreshes that extended a session.
    pub cookie_refreshes: std::sync::atomic::AtomicU64,
}

fn bump(counter: &std::sync::atomic::AtomicU64) {
    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// How many sessions of one site were in each state at the janitor's last pass (what the
/// metrics show; a scrape never reads the store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteCensus {
    /// The site.
    pub site: SiteName,
    /// Active (logged in) sessions.
    pub active: i64,
    /// Sessions waiting for a login.
    pub needs_login: i64,
    /// Retired sessions.
    pub retired: i64,
    /// Sessions under an unexpired lease.
    pub leased: i64,
}

impl SiteCensus {
    /// The counts by state name (`active`, `needs_login`, `retired`, `leased`).
    pub fn counts(&self) -> [(&'static str, i64); 4] {
        [
            ("active", self.active),
            ("needs_login", self.needs_login),
            ("retired", self.retired),
            ("leased", self.leased),
        ]
    }
}

/// A configured site with its login method and HTTP clients (one per proxy identity).
struct Site {
    name: SiteName,
    config: SiteConfig,
    login: Option<Arc<dyn SessionLogin>>,
    clients: Mutex<HashMap<Option<String>, reqwest::Client>>,
}

/// The sessions of every configured site. Cheap to share behind an `Arc`; safe for concurrent
/// use by any number of tasks, processes and replicas on the same store.
pub struct SessionPool {
    store: Arc<dyn RecordStore>,
    clock: SharedClock,
    sites: BTreeMap<SiteName, Site>,
    counters: PoolCounters,
    census: Mutex<BTreeMap<SiteName, SiteCensus>>,
}

impl fmt::Debug for SessionPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionPool")
            .field("sites", &self.sites.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl SessionPool {
    /// A pool over `store` for `sites`; the login method of each site comes from its `[login]`
    /// table. Fails on an invalid recipe.
    pub fn new(
        store: Arc<dyn RecordStore>,
        clock: SharedClock,
        sites: impl IntoIterator<Item = (SiteName, SiteConfig)>,
    ) -> Result<Self, LeaseError> {
        let mut built = BTreeMap::new();
        for (name, config) in sites {
            let login = login_for(&config, &ChildEnv::default()).map_err(|source| {
                LeaseError::LoginFailed {
                    site: name.to_string(),
                    account: String::new(),
                    source,
                }
            })?;
            built.insert(
                name.clone(),
                Site {
                    name,
                    config,
                    login,
                    clients: Mutex::new(HashMap::new()),
                },
            );
        }
        Ok(SessionPool {
            store,
            clock,
            sites: built,
            counters: PoolCounters::default(),
            census: Mutex::new(BTreeMap::new()),
        })
    }

    /// Gives the logins of every site (login commands, Chromium) `child_env`'s minimal
    /// environment (see [`authkeeper_login::process::ChildEnv`]). Fails like [`SessionPool::new`].
    pub fn with_child_env(mut self, child_env: &ChildEnv) -> Result<Self, LeaseError> {
        for site in self.sites.values_mut() {
            site.login =
                login_for(&site.config, child_env).map_err(|source| LeaseError::LoginFailed {
                    site: site.name.to_string(),
                    account: String::new(),
                    source,
                })?;
        }
        Ok(self)
    }

    /// Replaces the login method of `site` (tests, embedding applications).
    pub fn with_login(mut self, site: &str, login: Arc<dyn SessionLogin>) -> Self {
        if let Some(entry) = self.sites.get_mut(site) {
            entry.login = Some(login);
        }
        self
    }

    /// The names of the configured sites.
    pub fn site_names(&self) -> impl Iterator<Item = &SiteName> {
        self.sites.keys()
    }

    /// What the pool has done so far.
    pub fn counters(&self) -> &PoolCounters {
        &self.counters
    }

    /// The sessions of each site by state, as the janitor last counted them.
    pub fn census(&self) -> Vec<SiteCensus> {
        self.census
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Records the census of `site` from the sessions just read.
    pub(super) fn count(&self, site: &SiteName, sessions: &[Versioned], now: Timestamp) {
        let mut census = SiteCensus {
            site: site.clone(),
            active: 0,
            needs_login: 0,
            retired: 0,
            leased: 0,
        };
        for entry in sessions {
            match entry.session.state {
                SessionState::Active => census.active += 1,
                SessionState::NeedsLogin => census.needs_login += 1,
                SessionState::Retired => census.retired += 1,
            }
            if entry.session.is_leased(now) {
                census.leased += 1;
            }
        }
        self.census
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(site.clone(), census);
    }

    /// Writes `session` over `expected_version` (0: new); `Ok(None)`: someone else wrote first.
    async fn write_record(
        &self,
        session: &Session,
        expected_version: u64,
    ) -> Result<Option<u64>, authkeeper_core::StoreError> {
        records::write(
            self.store.as_ref(),
            session,
            expected_version,
            self.clock.now(),
        )
        .await
    }

    /// The identity and the resolved proxy URL of `account`'s first session at `site` (what a
    /// credential backed by that session presents to its API).
    pub fn identity_and_proxy(
        &self,
        site: &str,
        account: &str,
    ) -> Result<(Option<crate::identity::Identity>, Option<String>), LeaseError> {
        let site = self.site(site)?;
        let Some(config) = site.config.account(account) else {
            return Err(LeaseError::UnknownAccount {
                site: site.name.to_string(),
                account: account.to_owned(),
            });
        };
        let id = slot_id(&config.name, 0)?;
        let identity = site
            .config
            .identity
            .identity_for(&format!("{}/{id}", site.name), &config.identity);
        Ok((identity, resolve_proxy(site, config)?))
    }

    /// The configuration of site `name`.
    pub fn site_config(&self, name: &str) -> Option<&crate::config::SiteConfig> {
        self.sites.get(name).map(|site| &site.config)
    }

    fn site(&self, name: &str) -> Result<&Site, LeaseError> {
        self.sites
            .get(name)
            .ok_or_else(|| LeaseError::UnknownSite(name.chars().take(64).collect()))
    }
}

/// Resolves the account's proxy reference.
fn resolve_proxy(site: &Site, account: &AccountConfig) -> Result<Option<String>, LeaseError> {
    let Some(reference) = &account.proxy else {
        return Ok(None);
    };
    resolve_secret(reference)
        .map(Some)
        .map_err(|message| LeaseError::Secret {
            site: site.name.to_string(),
            account: account.name.to_string(),
            message,
        })
}

fn resolve_secret(reference: &SecretRef) -> Result<String, String> {
    reference
        .resolve()
        .map(|secret| secret.expose_secret().to_owned())
        .map_err(|error| error.to_string())
}
