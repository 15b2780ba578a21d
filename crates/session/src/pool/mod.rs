//! The session pool: leases over a [`Store`], exclusive across processes and replicas.
//!
//! Every session is one versioned record ([`Store::compare_and_put_session`]); taking a lease is
//! a write over the version read, so of two workers (or two replicas) racing for a session only
//! one wins and the other moves on to the next. Sessions live in slots `{account}.{n}` (`n` below
//! `max_sessions_per_account`), which bounds them per account even when replicas race to create
//! one. A session that needs a login is leased first, logged in under that lease, then handed
//! out: nobody else can see it half-made.

mod error;
mod lease_id;
mod maintenance;
mod policy;
mod records;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use authkeeper_core::secret_ref::SecretRef;
use authkeeper_core::{ExposeSecret, SharedClock, Store, Timestamp};
use rand::seq::SliceRandom;
use serde::Serialize;

pub use self::error::LeaseError;
use self::lease_id::{new_lease_id, parse_lease_id};
pub use self::maintenance::MaintenanceReport;
use self::records::Versioned;
use crate::config::{AccountConfig, SiteConfig};
use crate::health::{self, ProbeOutcome, ProbeResult};
use crate::login::{LoginRequest, SessionLogin, login_for};
use crate::model::{LeaseInfo, Outcome, Session, SessionLease, SessionState};
use crate::storage_state::StorageState;

/// How many times a lease re-reads the site after losing races before giving up.
const MAX_ATTEMPTS: usize = 16;

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
    pub session_id: String,
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
    pub id: String,
    /// The site.
    pub site: String,
    /// The account.
    pub account: String,
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

/// A configured site with its login method and HTTP clients (one per proxy identity).
struct Site {
    name: String,
    config: SiteConfig,
    login: Option<Arc<dyn SessionLogin>>,
    clients: Mutex<HashMap<Option<String>, reqwest::Client>>,
}

/// The sessions of every configured site. Cheap to share behind an `Arc`; safe for concurrent
/// use by any number of tasks, processes and replicas on the same store.
pub struct SessionPool {
    store: Arc<dyn Store>,
    clock: SharedClock,
    sites: BTreeMap<String, Site>,
    counters: PoolCounters,
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
        store: Arc<dyn Store>,
        clock: SharedClock,
        sites: impl IntoIterator<Item = (String, SiteConfig)>,
    ) -> Result<Self, LeaseError> {
        let mut built = BTreeMap::new();
        for (name, config) in sites {
            authkeeper_core::store::validate_name(&name)?;
            let login = login_for(&config).map_err(|source| LeaseError::LoginFailed {
                site: name.clone(),
                account: String::new(),
                source,
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
        })
    }

    /// Replaces the login method of `site` (tests, embedding applications).
    pub fn with_login(mut self, site: &str, login: Arc<dyn SessionLogin>) -> Self {
        if let Some(entry) = self.sites.get_mut(site) {
            entry.login = Some(login);
        }
        self
    }

    /// The names of the configured sites.
    pub fn site_names(&self) -> impl Iterator<Item = &str> {
        self.sites.keys().map(String::as_str)
    }

    /// What the pool has done so far.
    pub fn counters(&self) -> &PoolCounters {
        &self.counters
    }

    fn site(&self, name: &str) -> Result<&Site, LeaseError> {
        self.sites
            .get(name)
            .ok_or_else(|| LeaseError::UnknownSite(name.chars().take(64).collect()))
    }

    /// Leases one session of `site` to one worker: never the same session to two holders at
    /// once. Re-logs in a session that needs it (or whose probe finds it logged out) before
    /// handing it out, and creates sessions in free slots when the site has a login.
    pub async fn lease(
        &self,
        site_name: &str,
        request: &LeaseRequest,
    ) -> Result<SessionLease, LeaseError> {
        let site = self.site(site_name)?;
        if let Some(account) = &request.account
            && site.config.account(account).is_none()
        {
            return Err(LeaseError::UnknownAccount {
                site: site.name.clone(),
                account: account.clone(),
            });
        }
        let policy = &site.config.pool;
        let ttl = request.lease_ttl.unwrap_or(policy.lease_ttl).clamp(
            Duration::from_secs(1),
            policy.max_lease_ttl.max(Duration::from_secs(1)),
        );
        for _ in 0..MAX_ATTEMPTS {
            let now = self.clock.now();
            let sessions = records::load_site(self.store.as_ref(), &site.name).await?;
            match self.claim(site, sessions, request, ttl, now).await? {
                Claim::Taken(taken) => match self.prepare(site, *taken, ttl).await? {
                    Some(lease) => {
                        bump(&self.counters.leases);
                        return Ok(lease);
                    }
                    None => continue,
                },
                Claim::Lost => {
                    tokio::task::yield_now().await;
                    continue;
                }
                Claim::Exhausted { retry_after } => {
                    bump(&self.counters.exhausted);
                    return Err(LeaseError::Exhausted {
                        site: site.name.clone(),
                        retry_after,
                    });
                }
            }
        }
        Err(LeaseError::Contention(site.name.clone()))
    }

    /// Takes a session (free, needing a login, or a new one in a free slot) under a lease.
    async fn claim(
        &self,
        site: &Site,
        mut sessions: Vec<Versioned>,
        request: &LeaseRequest,
        ttl: Duration,
        now: Timestamp,
    ) -> Result<Claim, LeaseError> {
        let policy = &site.config.pool;
        let wanted = |session: &Session| {
            request
                .account
                .as_ref()
                .is_none_or(|account| &session.account == account)
        };
        // A claim holds the session long enough to probe and log in before the worker's TTL starts.
        let claim_ttl = ttl + self.preparation_allowance(site);
        sessions.shuffle(&mut rand::thread_rng());

        let mut lost_any = false;
        // 1. A free, active session.
        for entry in sessions.iter_mut() {
            let session = &mut entry.session;
            if session.state != SessionState::Active || session.is_leased(now) || !wanted(session) {
                continue;
            }
            if let Some(reason) = policy::expired(session, policy, now)
                .or_else(|| policy::limit_reached(session, policy))
            {
                let mut retired = session.clone();
                policy::retire(&mut retired, reason);
                retired.lease = None;
                if records::write(self.store.as_ref(), &retired, entry.version)
                    .await?
                    .is_some()
                {
                    bump(&self.counters.retired);
                    tracing::info!(site = %site.name, session = %retired.id, reason, "session retired");
                }
                continue;
            }
            let mut taken = session.clone();
            let hold = if self.probe_due(site, &taken, now) {
                claim_ttl
            } else {
                ttl
            };
            taken.lease = Some(self.new_lease(site, &taken, &request.holder, now + hold));
            taken.usage_count += 1;
            taken.last_used_at = Some(now);
            match records::write(self.store.as_ref(), &taken, entry.version).await? {
                Some(version) => {
                    return Ok(Claim::Taken(Box::new(Versioned {
                        session: taken,
                        version,
                    })));
                }
                None => lost_any = true,
            }
        }

        if site.login.is_some() {
            // 2. A session that needs a login (logged out, or a failed login before).
            for entry in sessions.iter() {
                let session = &entry.session;
                if session.state != SessionState::NeedsLogin
                    || session.is_leased(now)
                    || !wanted(session)
                {
                    continue;
                }
                let mut taken = session.clone();
                taken.lease = Some(self.new_lease(site, &taken, &request.holder, now + claim_ttl));
                taken.usage_count += 1;
                taken.last_used_at = Some(now);
                match records::write(self.store.as_ref(), &taken, entry.version).await? {
                    Some(version) => {
                        return Ok(Claim::Taken(Box::new(Versioned {
                            session: taken,
                            version,
                        })));
                    }
                    None => lost_any = true,
                }
            }
            // 3. A free slot: none stored there yet, or only a retired session.
            for slot in 0..policy.max_sessions_per_account.max(1) {
                for account in site
                    .config
                    .accounts
                    .iter()
                    .filter(|a| request.account.as_ref().is_none_or(|w| &a.name == w))
                {
                    let id = format!("{}.{slot}", account.name);
                    let existing = sessions.iter().find(|entry| entry.session.id == id);
                    let expected_version = match existing {
                        None => 0,
                        Some(entry)
                            if entry.session.state == SessionState::Retired
                                && !entry.session.is_leased(now) =>
                        {
                            entry.version
                        }
                        Some(_) => continue,
                    };
                    let mut fresh = self.new_session(site, account, &id, now)?;
                    fresh.lease =
                        Some(self.new_lease(site, &fresh, &request.holder, now + claim_ttl));
                    fresh.usage_count = 1;
                    fresh.last_used_at = Some(now);
                    match records::write(self.store.as_ref(), &fresh, expected_version).await? {
                        Some(version) => {
                            return Ok(Claim::Taken(Box::new(Versioned {
                                session: fresh,
                                version,
                            })));
                        }
                        None => lost_any = true,
                    }
                }
            }
        }

        if lost_any {
            return Ok(Claim::Lost);
        }
        let retry_after = sessions
            .iter()
            .filter_map(|entry| entry.session.lease.as_ref())
            .filter(|lease| lease.expires_at > now)
            .map(|lease| lease.expires_at.saturating_since(now))
            .min();
        Ok(Claim::Exhausted { retry_after })
    }

    /// How much longer than the worker's TTL a claim holds a session: time to probe and log in.
    fn preparation_allowance(&self, site: &Site) -> Duration {
        let login = site
            .config
            .login
            .as_ref()
            .map_or(Duration::ZERO, |login| login.timeout);
        let probe = site
            .config
            .probe
            .as_ref()
            .map_or(Duration::ZERO, |probe| probe.timeout);
        login + probe + Duration::from_secs(5)
    }

    fn new_lease(
        &self,
        site: &Site,
        session: &Session,
        holder: &str,
        expires_at: Timestamp,
    ) -> LeaseInfo {
        LeaseInfo {
            lease_id: new_lease_id(&site.name, &session.id),
            holder: holder.to_owned(),
            expires_at,
        }
    }

    /// A session record for `account` in slot `id`, waiting for its first login.
    fn new_session(
        &self,
        site: &Site,
        account: &AccountConfig,
        id: &str,
        now: Timestamp,
    ) -> Result<Session, LeaseError> {
        let proxy = resolve_proxy(site, account)?;
        Ok(Session {
            id: id.to_owned(),
            site: site.name.clone(),
            account: account.name.clone(),
            proxy,
            storage_state: StorageState::default(),
            state: SessionState::NeedsLogin,
            reason: Some("new".to_owned()),
            created_at: now,
            last_used_at: None,
            last_checked_at: None,
            last_refreshed_at: None,
            usage_count: 0,
            error_score: 0.0,
            expires_at: None,
            lease: None,
            logins: 0,
        })
    }

    /// Makes a claimed session ready for the worker: logs it in when it needs it, probes it when
    /// its last check is stale, then starts the worker's TTL. `None`: the session turned out
    /// unusable (blocked) and was put back; the caller tries another.
    async fn prepare(
        &self,
        site: &Site,
        mut taken: Versioned,
        ttl: Duration,
    ) -> Result<Option<SessionLease>, LeaseError> {
        let ready = taken.session.state == SessionState::Active
            && !self.probe_due(site, &taken.session, self.clock.now());
        if ready {
            // Claimed with the worker's TTL already: nothing more to write.
            return Ok(Some(hand_out(taken.session)));
        }
        if taken.session.state == SessionState::NeedsLogin {
            taken = self.login_in_place(site, taken).await?;
        } else {
            match self.probe(site, &taken.session).await {
                ProbeVerdict::LoggedIn(state) => {
                    taken.session.storage_state = state;
                    taken.session.last_checked_at = Some(self.clock.now());
                }
                ProbeVerdict::LoggedOut => {
                    tracing::info!(site = %site.name, session = %taken.session.id, "probe found the session logged out: logging in again");
                    if site.login.is_none() {
                        self.put_back(site, taken, |session| {
                            session.state = SessionState::NeedsLogin;
                            session.reason = Some("logged_out".to_owned());
                        })
                        .await?;
                        return Ok(None);
                    }
                    taken = self.login_in_place(site, taken).await?;
                }
                ProbeVerdict::Blocked(status) => {
                    tracing::warn!(site = %site.name, session = %taken.session.id, status, "probe was blocked: session not handed out");
                    let policy = site.config.pool.clone();
                    self.put_back(site, taken, |session| {
                        policy::apply_outcome(session, Outcome::Blocked, &policy)
                    })
                    .await?;
                    return Ok(None);
                }
                ProbeVerdict::Unknown => {}
            }
        }
        let now = self.clock.now();
        let lease = taken
            .session
            .lease
            .as_mut()
            .ok_or_else(|| LeaseError::Contention(site.name.clone()))?;
        lease.expires_at = now + ttl;
        let lease = lease.clone();
        match records::write(self.store.as_ref(), &taken.session, taken.version).await? {
            Some(_) => {}
            None => return Err(LeaseError::LeaseLost(lease.lease_id)),
        }
        tracing::debug!(site = %site.name, session = %taken.session.id, holder = %lease.holder, "session leased");
        Ok(Some(hand_out(taken.session)))
    }

    /// Whether `session` must be probed before it is handed out: the site has a probe and the
    /// session's last check is older than `max_staleness`.
    fn probe_due(&self, site: &Site, session: &Session, now: Timestamp) -> bool {
        site.config.probe.as_ref().is_some_and(|probe| {
            session
                .last_checked_at
                .is_none_or(|checked| now.saturating_since(checked) >= probe.max_staleness)
        })
    }

    /// Clears the lease of a claimed session after `change`, so others may take it.
    async fn put_back(
        &self,
        site: &Site,
        mut taken: Versioned,
        change: impl FnOnce(&mut Session),
    ) -> Result<(), LeaseError> {
        change(&mut taken.session);
        taken.session.lease = None;
        if taken.session.state == SessionState::Retired {
            bump(&self.counters.retired);
        }
        if records::write(self.store.as_ref(), &taken.session, taken.version)
            .await?
            .is_none()
        {
            tracing::warn!(site = %site.name, session = %taken.session.id, "session changed while held: not put back");
        }
        Ok(())
    }

    /// Runs the site's login for a session held under a claim and stores the result. On failure
    /// the session is put back needing a login, and the error returned.
    async fn login_in_place(
        &self,
        site: &Site,
        mut taken: Versioned,
    ) -> Result<Versioned, LeaseError> {
        let Some(login) = site.login.clone() else {
            return Err(LeaseError::NoLogin(site.name.clone()));
        };
        let account_name = taken.session.account.clone();
        let Some(account) = site.config.account(&account_name) else {
            return Err(LeaseError::UnknownAccount {
                site: site.name.clone(),
                account: account_name,
            });
        };
        let started = std::time::Instant::now();
        let request = LoginRequest {
            site_name: &site.name,
            site: &site.config,
            account,
        };
        match login.login(&request).await {
            Ok(state) => {
                bump(&self.counters.logins_ok);
                let now = self.clock.now();
                let session = &mut taken.session;
                if session.logins == 0 {
                    session.created_at = now;
                }
                session.storage_state = state;
                session.state = SessionState::Active;
                session.reason = None;
                session.logins += 1;
                session.last_checked_at = Some(now);
                session.last_refreshed_at = Some(now);
                tracing::info!(site = %site.name, session = %session.id, account = %session.account, elapsed_ms = started.elapsed().as_millis() as u64, "session logged in");
                match records::write(self.store.as_ref(), session, taken.version).await? {
                    Some(version) => {
                        taken.version = version;
                        Ok(taken)
                    }
                    None => Err(LeaseError::Contention(site.name.clone())),
                }
            }
            Err(source) => {
                bump(&self.counters.logins_failed);
                tracing::warn!(site = %site.name, session = %taken.session.id, account = %account.name, error = %source, "login failed");
                let reason = if source.is_transient() {
                    "login_failed_transient"
                } else {
                    "login_failed"
                };
                self.put_back(site, taken, |session| {
                    session.state = SessionState::NeedsLogin;
                    session.reason = Some(reason.to_owned());
                })
                .await?;
                Err(LeaseError::LoginFailed {
                    site: site.name.clone(),
                    account: account.name.clone(),
                    source,
                })
            }
        }
    }

    /// The HTTP client for a proxy identity (redirects off, no cookie store of its own).
    fn client(&self, site: &Site, proxy: Option<&str>) -> Option<reqwest::Client> {
        let timeout = site
            .config
            .probe
            .as_ref()
            .map_or(Duration::from_secs(10), |probe| probe.timeout);
        let mut clients = site
            .clients
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let key = proxy.map(str::to_owned);
        if let Some(client) = clients.get(&key) {
            return Some(client.clone());
        }
        match health::http_client(proxy, timeout) {
            Ok(client) => {
                clients.insert(key, client.clone());
                Some(client)
            }
            Err(error) => {
                tracing::warn!(site = %site.name, %error, "cannot build an HTTP client for probes");
                None
            }
        }
    }

    async fn probe(&self, site: &Site, session: &Session) -> ProbeVerdict {
        let Some(client) = self.client(site, session.proxy.as_deref()) else {
            return ProbeVerdict::Unknown;
        };
        let outcome = health::probe(
            &client,
            &site.config,
            &session.storage_state,
            self.clock.now(),
        )
        .await;
        ProbeVerdict::from_result(outcome, &self.counters)
    }

    /// Renews a lease for `ttl` (default: the site's `lease_ttl`). Fails with
    /// [`LeaseError::LeaseLost`] when the lease was reclaimed or released.
    pub async fn heartbeat(
        &self,
        lease_id: &str,
        ttl: Option<Duration>,
    ) -> Result<Timestamp, LeaseError> {
        let (site, id) = self.lease_target(lease_id)?;
        let policy = &site.config.pool;
        let ttl = ttl.unwrap_or(policy.lease_ttl).clamp(
            Duration::from_secs(1),
            policy.max_lease_ttl.max(Duration::from_secs(1)),
        );
        for _ in 0..MAX_ATTEMPTS {
            let mut held = self.held(site, id, lease_id).await?;
            let expires_at = self.clock.now() + ttl;
            if let Some(lease) = held.session.lease.as_mut() {
                lease.expires_at = expires_at;
            }
            if records::write(self.store.as_ref(), &held.session, held.version)
                .await?
                .is_some()
            {
                return Ok(expires_at);
            }
        }
        Err(LeaseError::Contention(site.name.clone()))
    }

    /// Returns a lease with the worker's outcome and, optionally, the session's updated storage
    /// state. Applies the pool policy (error score, usage, retirement).
    pub async fn release(
        &self,
        lease_id: &str,
        outcome: Outcome,
        storage_state: Option<StorageState>,
    ) -> Result<ReleaseSummary, LeaseError> {
        let (site, id) = self.lease_target(lease_id)?;
        for _ in 0..MAX_ATTEMPTS {
            let mut held = self.held(site, id, lease_id).await?;
            let session = &mut held.session;
            if let Some(state) = &storage_state {
                session.storage_state = state.clone();
            }
            let was_retired = session.state == SessionState::Retired;
            policy::apply_outcome(session, outcome, &site.config.pool);
            session.lease = None;
            if records::write(self.store.as_ref(), session, held.version)
                .await?
                .is_some()
            {
                let index = match outcome {
                    Outcome::Ok => 0,
                    Outcome::Blocked => 1,
                    Outcome::LoggedOut => 2,
                    Outcome::Error => 3,
                };
                bump(&self.counters.releases[index]);
                if !was_retired && session.state == SessionState::Retired {
                    bump(&self.counters.retired);
                    tracing::info!(site = %site.name, session = %session.id, reason = session.reason.as_deref().unwrap_or(""), "session retired");
                }
                return Ok(ReleaseSummary {
                    session_id: session.id.clone(),
                    state: session.state,
                    reason: session.reason.clone(),
                    error_score: session.error_score,
                    usage_count: session.usage_count,
                });
            }
        }
        Err(LeaseError::Contention(site.name.clone()))
    }

    fn lease_target<'a>(&self, lease_id: &'a str) -> Result<(&Site, &'a str), LeaseError> {
        let unknown = || LeaseError::UnknownLease(lease_id.chars().take(200).collect());
        let parsed = parse_lease_id(lease_id).ok_or_else(unknown)?;
        let site = self.sites.get(parsed.site).ok_or_else(unknown)?;
        Ok((site, parsed.session_id))
    }

    /// The session `id` if `lease_id` still holds it.
    async fn held(&self, site: &Site, id: &str, lease_id: &str) -> Result<Versioned, LeaseError> {
        let current = records::load_one(self.store.as_ref(), &site.name, id)
            .await?
            .ok_or_else(|| LeaseError::UnknownLease(lease_id.chars().take(200).collect()))?;
        // An expired lease nobody took over is still the caller's: renewing it is safe.
        match &current.session.lease {
            Some(lease) if lease.lease_id == lease_id => Ok(current),
            _ => Err(LeaseError::LeaseLost(lease_id.chars().take(200).collect())),
        }
    }

    /// Logs `account` in now, whatever its session's state: re-logs its free session in place,
    /// or creates one in a free slot. For operators (`authkeeper sessions login`) and warm-up.
    pub async fn login(
        &self,
        site_name: &str,
        account: &str,
        holder: &str,
    ) -> Result<SessionSummary, LeaseError> {
        let site = self.site(site_name)?;
        if site.login.is_none() {
            return Err(LeaseError::NoLogin(site.name.clone()));
        }
        let request = LeaseRequest {
            account: Some(account.to_owned()),
            lease_ttl: None,
            holder: holder.to_owned(),
        };
        if site.config.account(account).is_none() {
            return Err(LeaseError::UnknownAccount {
                site: site.name.clone(),
                account: account.to_owned(),
            });
        }
        let ttl = site.config.pool.lease_ttl;
        for _ in 0..MAX_ATTEMPTS {
            let now = self.clock.now();
            let sessions = records::load_site(self.store.as_ref(), &site.name).await?;
            match self.claim(site, sessions, &request, ttl, now).await? {
                Claim::Taken(mut taken) => {
                    // A forced login does not count as a use.
                    taken.session.usage_count = taken.session.usage_count.saturating_sub(1);
                    let logged_in = self.login_in_place(site, *taken).await?;
                    let mut released = logged_in.session.clone();
                    released.lease = None;
                    let summary = SessionSummary::of(&released, self.clock.now());
                    self.put_back(site, logged_in, |_| {}).await?;
                    return Ok(summary);
                }
                Claim::Lost => continue,
                Claim::Exhausted { retry_after } => {
                    return Err(LeaseError::Exhausted {
                        site: site.name.clone(),
                        retry_after,
                    });
                }
            }
        }
        Err(LeaseError::Contention(site.name.clone()))
    }

    /// Retires a session now (an operator's decision); a worker holding it can still release it.
    pub async fn retire(&self, site_name: &str, id: &str, reason: &str) -> Result<(), LeaseError> {
        let site = self.site(site_name)?;
        for _ in 0..MAX_ATTEMPTS {
            let mut current = records::load_one(self.store.as_ref(), &site.name, id)
                .await?
                .ok_or_else(|| LeaseError::UnknownSession {
                    site: site.name.clone(),
                    id: id.to_owned(),
                })?;
            if current.session.state == SessionState::Retired {
                return Ok(());
            }
            policy::retire(&mut current.session, reason);
            if records::write(self.store.as_ref(), &current.session, current.version)
                .await?
                .is_some()
            {
                bump(&self.counters.retired);
                tracing::info!(site = %site.name, session = %id, reason, "session retired");
                return Ok(());
            }
        }
        Err(LeaseError::Contention(site.name.clone()))
    }

    /// Stores a storage state (from Playwright, a `cookies.txt`, another tool) as the session of
    /// `account`: replaces the state of its free session, or creates one in a free slot. Refuses
    /// a state none of whose cookies belong to the site.
    pub async fn import(
        &self,
        site_name: &str,
        account_name: &str,
        state: StorageState,
    ) -> Result<SessionSummary, LeaseError> {
        let site = self.site(site_name)?;
        let account =
            site.config
                .account(account_name)
                .ok_or_else(|| LeaseError::UnknownAccount {
                    site: site.name.clone(),
                    account: account_name.to_owned(),
                })?;
        state
            .ensure_cookies_for(&site.config.origin)
            .map_err(|error| LeaseError::InvalidState(error.to_string()))?;
        for _ in 0..MAX_ATTEMPTS {
            let now = self.clock.now();
            let sessions = records::load_site(self.store.as_ref(), &site.name).await?;
            let mut lost = false;
            for slot in 0..site.config.pool.max_sessions_per_account.max(1) {
                let id = format!("{}.{slot}", account.name);
                let existing = sessions.iter().find(|entry| entry.session.id == id);
                let (mut session, version) = match existing {
                    Some(entry) if entry.session.is_leased(now) => continue,
                    Some(entry) if entry.session.state != SessionState::Retired => {
                        (entry.session.clone(), entry.version)
                    }
                    Some(entry) => (self.new_session(site, account, &id, now)?, entry.version),
                    None => (self.new_session(site, account, &id, now)?, 0),
                };
                session.storage_state = state.clone();
                session.state = SessionState::Active;
                session.reason = None;
                session.last_checked_at = None;
                session.logins = session.logins.max(1);
                match records::write(self.store.as_ref(), &session, version).await? {
                    Some(_) => {
                        tracing::info!(site = %site.name, session = %id, cookies = state.cookies.len(), "storage state imported");
                        return Ok(SessionSummary::of(&session, now));
                    }
                    None => lost = true,
                }
            }
            if !lost {
                return Err(LeaseError::Exhausted {
                    site: site.name.clone(),
                    retry_after: None,
                });
            }
        }
        Err(LeaseError::Contention(site.name.clone()))
    }

    /// The storage state of session `id`, or of the newest active session of an account when
    /// `id` names an account.
    pub async fn export(
        &self,
        site_name: &str,
        id_or_account: &str,
    ) -> Result<StorageState, LeaseError> {
        let site = self.site(site_name)?;
        let sessions = records::load_site(self.store.as_ref(), &site.name).await?;
        let by_id = sessions
            .iter()
            .find(|entry| entry.session.id == id_or_account);
        let by_account = || {
            sessions
                .iter()
                .filter(|entry| {
                    entry.session.account == id_or_account
                        && entry.session.state == SessionState::Active
                })
                .max_by_key(|entry| entry.session.created_at)
        };
        by_id
            .or_else(by_account)
            .map(|entry| entry.session.storage_state.clone())
            .ok_or_else(|| LeaseError::UnknownSession {
                site: site.name.clone(),
                id: id_or_account.to_owned(),
            })
    }

    /// Every session of `site` (or of every configured site), metadata only.
    pub async fn list(&self, site: Option<&str>) -> Result<Vec<SessionSummary>, LeaseError> {
        let now = self.clock.now();
        let names: Vec<&str> = match site {
            Some(name) => vec![self.site(name)?.name.as_str()],
            None => self.site_names().collect(),
        };
        let mut out = Vec::new();
        for name in names {
            let mut sessions: Vec<SessionSummary> = records::load_site(self.store.as_ref(), name)
                .await?
                .iter()
                .map(|entry| SessionSummary::of(&entry.session, now))
                .collect();
            sessions.sort_by(|a, b| a.id.cmp(&b.id));
            out.extend(sessions);
        }
        Ok(out)
    }
}

/// The lease a worker gets for a session claimed under its lease.
fn hand_out(session: Session) -> SessionLease {
    let (lease_id, lease_expires_at) = session
        .lease
        .as_ref()
        .map(|lease| (lease.lease_id.clone(), lease.expires_at))
        .unwrap_or_default();
    SessionLease {
        lease_id,
        session_id: session.id.clone(),
        site: session.site.clone(),
        account: session.account.clone(),
        proxy: session.proxy.clone(),
        storage_state: session.storage_state.clone(),
        lease_expires_at,
    }
}

/// What a claim found.
enum Claim {
    Taken(Box<Versioned>),
    /// Lost every race this round: re-read.
    Lost,
    Exhausted {
        retry_after: Option<Duration>,
    },
}

/// A probe's result as the pool acts on it.
enum ProbeVerdict {
    LoggedIn(StorageState),
    LoggedOut,
    Blocked(u16),
    /// The probe could not tell (network, 5xx): the session is handed out as it is.
    Unknown,
}

impl ProbeVerdict {
    fn from_result(result: ProbeResult, counters: &PoolCounters) -> Self {
        match result.outcome {
            ProbeOutcome::LoggedIn => {
                bump(&counters.probes_logged_in);
                ProbeVerdict::LoggedIn(result.state)
            }
            ProbeOutcome::LoggedOut { reason } => {
                bump(&counters.probes_logged_out);
                tracing::info!(%reason, "session probe: logged out");
                ProbeVerdict::LoggedOut
            }
            ProbeOutcome::Blocked { status, .. } => ProbeVerdict::Blocked(status),
            ProbeOutcome::Error(reason) => {
                tracing::warn!(%reason, "session probe failed");
                ProbeVerdict::Unknown
            }
        }
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
            site: site.name.clone(),
            account: account.name.clone(),
            message,
        })
}

fn resolve_secret(reference: &SecretRef) -> Result<String, String> {
    reference
        .resolve()
        .map(|secret| secret.expose_secret().to_owned())
        .map_err(|error| error.to_string())
}
