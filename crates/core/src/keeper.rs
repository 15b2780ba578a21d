//! The Keeper: hands out access tokens that are valid for at least the caller's `min_ttl`, and
//! refreshes each credential exactly once per expiry however many callers, processes or
//! replicas share it.
//!
//! - Fast path: a fresh cached token is returned without a lock or allocation
//!   ([`Keeper::cached_token`]).
//! - Single-flight: in one process, callers needing a refresh queue on the credential's flight
//!   lock; the first refreshes, the others find the new generation.
//! - Across processes: the refresher takes the store's refresh lease, re-reads the stored
//!   generation and skips the network call when someone else already refreshed.
//! - Rotation safety: a new token set is durably stored (fenced compare-and-put) before anyone
//!   sees the new access token.
//! - Failures are classified; transient ones back off (and open the endpoint's circuit) while
//!   the cached token is served as long as it is valid.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use rand::Rng;
use secrecy::SecretString;
use tokio::sync::Notify;

use crate::backoff::{Backoff, CircuitBreaker, CircuitState};
use crate::clock::{SharedClock, Timestamp};
use crate::config::CredentialSettings;
use crate::error::{ErrorClass, RefreshError};
use crate::events::{Event, SharedSink, Trigger};
use crate::grant::{GrantKind, GrantRequest, OAuthClient};
use crate::policy::Schedule;
use crate::store::{
    CredentialState, CredentialStatus, Lease, LeaseAttempt, Store, StoreError, StoredCredential,
    WriteOutcome,
};
use crate::token::TokenSet;

mod reauth_hook;

/// Engine-wide settings.
#[derive(Debug, Clone)]
pub struct KeeperSettings {
    /// Longest a refresh lease is held without renewal. Must exceed the token request timeout;
    /// the effective TTL per credential is at least twice its timeout plus 5 s.
    pub lease_ttl: Duration,
    /// How often a caller waiting for another process's refresh re-reads the store.
    pub poll_interval: Duration,
    /// Backoff after failed refreshes.
    pub backoff: Backoff,
    /// Consecutive transient failures after which an endpoint's circuit opens.
    pub breaker_threshold: u32,
    /// Refresh due tokens in background tasks while serving the cached one (long-running
    /// processes). When false, a caller finding its token due refreshes it before returning —
    /// right for short-lived processes such as `authkeeper token`, which must not exit while a
    /// background refresh is between the provider's answer and the durable write.
    pub background_refresh: bool,
    /// Raise `lease_ttl` to at least twice the token request timeout plus 5 s (default true).
    /// Turn off only to make a lease expire mid-refresh on purpose (tests of fencing).
    pub lease_ttl_floor: bool,
}

impl Default for KeeperSettings {
    fn default() -> Self {
        KeeperSettings {
            lease_ttl: Duration::from_secs(30),
            poll_interval: Duration::from_millis(20),
            backoff: Backoff::default(),
            breaker_threshold: 5,
            background_refresh: true,
            lease_ttl_floor: true,
        }
    }
}

/// Why no token could be handed out. Never contains a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeeperError {
    /// The credential is not configured.
    #[error("unknown credential `{0}`")]
    UnknownCredential(String),
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
            KeeperError::UnknownCredential(_) | KeeperError::MinTtlTooLong { .. } => {
                ErrorClass::Configuration
            }
            KeeperError::NotStored(_) | KeeperError::NeedsReauth { .. } => ErrorClass::NeedsReauth,
            KeeperError::Unavailable { class, .. } | KeeperError::Refresh { class, .. } => *class,
            KeeperError::LeaseWaitTimeout { .. }
            | KeeperError::Superseded { .. }
            | KeeperError::Store { .. } => ErrorClass::Transient,
        }
    }
}

/// An access token handed out by the Keeper. Cheap to clone; `Debug` shows no secret.
#[derive(Clone)]
pub struct AccessToken {
    current: Arc<Current>,
}

impl AccessToken {
    /// The token value (read it with [`secrecy::ExposeSecret`]).
    pub fn secret(&self) -> &SecretString {
        &self.current.tokens.access_token
    }

    /// The token type, usually `Bearer`.
    pub fn token_type(&self) -> &str {
        &self.current.tokens.token_type
    }

    /// The generation this token belongs to; pass it to [`Keeper::rejected`] on a 401.
    pub fn generation(&self) -> u64 {
        self.current.generation
    }

    /// When the token expires.
    pub fn expires_at(&self) -> Timestamp {
        self.current.tokens.expires_at
    }

    /// The whole token set.
    pub fn tokens(&self) -> &TokenSet {
        &self.current.tokens
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessToken")
            .field("generation", &self.current.generation)
            .field("expires_at", &self.current.tokens.expires_at)
            .finish_non_exhaustive()
    }
}

/// The cached generation of a credential.
struct Current {
    generation: u64,
    tokens: TokenSet,
    schedule: Schedule,
}

/// What a caller needs from a refresh.
#[derive(Debug, Clone, Copy)]
enum Need {
    /// A token usable for at least this long.
    Serves(Duration),
    /// A token whose refresh is not yet due (proactive refresh).
    NotDue,
    /// A generation newer than this one (the caller's token was rejected).
    NewerThan(u64),
    /// A token usable for at least this long whose refresh is not due yet.
    Fresh(Duration),
}

impl Need {
    fn satisfied_by(self, current: &Current, now: Timestamp) -> bool {
        match self {
            Need::Serves(min_ttl) => current.schedule.serves(now, min_ttl),
            Need::NotDue => !current.schedule.is_due(now),
            Need::NewerThan(generation) => current.generation > generation,
            Need::Fresh(min_ttl) => {
                current.schedule.serves(now, min_ttl) && !current.schedule.is_due(now)
            }
        }
    }

    /// Whether a still-valid cached token may stand in when refreshing is impossible.
    fn accepts_stale(self) -> bool {
        !matches!(self, Need::NewerThan(_))
    }
}

/// One credential's runtime state.
struct Entry {
    name: Arc<str>,
    settings: CredentialSettings,
    client: OAuthClient,
    breaker: Arc<CircuitBreaker>,
    current: ArcSwapOption<Current>,
    /// Single-flight: held while loading or refreshing.
    flight: tokio::sync::Mutex<()>,
    /// A proactive refresh task is scheduled or running.
    proactive_pending: AtomicBool,
    /// No proactive attempt before this time (millis), mirrors `status.next_attempt_at`.
    retry_not_before: AtomicI64,
    status: Mutex<CredentialStatus>,
}

impl Entry {
    fn status(&self) -> CredentialStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_status(&self, status: CredentialStatus) {
        let not_before = match (status.state, status.next_attempt_at) {
            (CredentialState::NeedsReauth, _) => i64::MAX,
            (_, Some(at)) => at.as_millis(),
            (_, None) => i64::MIN,
        };
        self.retry_not_before.store(not_before, Ordering::Release);
        *self.status.lock().unwrap_or_else(|p| p.into_inner()) = status;
    }

    fn generation(&self) -> u64 {
        self.current.load().as_ref().map_or(0, |c| c.generation)
    }
}

struct Inner {
    store: Arc<dyn Store>,
    clock: SharedClock,
    owner: String,
    settings: KeeperSettings,
    /// Fixed at build time; foldhash keeps the lookup on the fast path cheap.
    entries: HashMap<Arc<str>, Arc<Entry>, foldhash::fast::RandomState>,
    sinks: Vec<SharedSink>,
    schedule_changed: Notify,
    shutting_down: AtomicBool,
    /// Automatic re-authentication, when installed.
    reauth: Option<reauth_hook::ReauthHook>,
}

/// The token engine. Cheap to clone; safe for concurrent use.
#[derive(Clone)]
pub struct Keeper {
    inner: Arc<Inner>,
}

impl fmt::Debug for Keeper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keeper")
            .field("owner", &self.inner.owner)
            .field(
                "credentials",
                &self.inner.entries.keys().collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// Builds a [`Keeper`].
pub struct KeeperBuilder {
    store: Arc<dyn Store>,
    clock: SharedClock,
    settings: KeeperSettings,
    credentials: Vec<(String, CredentialSettings)>,
    sinks: Vec<SharedSink>,
    http: Option<reqwest::Client>,
    reauth: Option<Arc<dyn crate::reauth::Reauthenticator>>,
}

impl KeeperBuilder {
    /// Adds a credential.
    pub fn credential(mut self, name: impl Into<String>, settings: CredentialSettings) -> Self {
        self.credentials.push((name.into(), settings));
        self
    }

    /// Replaces the engine-wide settings.
    pub fn settings(mut self, settings: KeeperSettings) -> Self {
        self.settings = settings;
        self
    }

    /// Adds an event sink.
    pub fn event_sink(mut self, sink: SharedSink) -> Self {
        self.sinks.push(sink);
        self
    }

    /// Re-authenticates credentials when refreshing cannot help, and renews sessions ahead of
    /// their absolute expiry (see [`crate::reauth`]).
    pub fn reauthenticator(mut self, reauth: Arc<dyn crate::reauth::Reauthenticator>) -> Self {
        self.reauth = Some(reauth);
        self
    }

    /// Uses this HTTP client for token requests (default: a fresh one).
    pub fn http_client(mut self, http: reqwest::Client) -> Self {
        self.http = Some(http);
        self
    }

    /// Builds the engine.
    pub fn build(self) -> Result<Keeper, KeeperError> {
        let http = match self.http {
            Some(http) => http,
            None => reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| KeeperError::Store {
                    name: String::new(),
                    source: StoreError::Other {
                        message: "cannot build the HTTP client".into(),
                        source: Some(Box::new(e)),
                    },
                })?,
        };
        let mut breakers: HashMap<String, Arc<CircuitBreaker>> = HashMap::new();
        let mut entries = HashMap::with_hasher(foldhash::fast::RandomState::default());
        for (name, settings) in self.credentials {
            crate::store::validate_name(&name).map_err(|source| KeeperError::Store {
                name: name.clone(),
                source,
            })?;
            let client = OAuthClient::new(settings.client.clone(), http.clone());
            let breaker = Arc::clone(breakers.entry(client.endpoint_key()).or_insert_with(|| {
                Arc::new(CircuitBreaker::new(
                    self.settings.breaker_threshold,
                    self.settings.backoff,
                ))
            }));
            let name: Arc<str> = Arc::from(name);
            let entry = Entry {
                name: Arc::clone(&name),
                settings,
                client,
                breaker,
                current: ArcSwapOption::empty(),
                flight: tokio::sync::Mutex::new(()),
                proactive_pending: AtomicBool::new(false),
                retry_not_before: AtomicI64::new(i64::MIN),
                status: Mutex::new(CredentialStatus::default()),
            };
            entries.insert(name, Arc::new(entry));
        }
        let owner = format!(
            "{}-{:016x}",
            std::process::id(),
            rand::thread_rng().r#gen::<u64>()
        );
        Ok(Keeper {
            inner: Arc::new(Inner {
                store: self.store,
                clock: self.clock,
                owner,
                settings: self.settings,
                entries,
                sinks: self.sinks,
                schedule_changed: Notify::new(),
                shutting_down: AtomicBool::new(false),
                reauth: self.reauth.map(reauth_hook::ReauthHook::new),
            }),
        })
    }
}

impl Keeper {
    /// Starts building a Keeper over `store`, reading time from `clock`.
    pub fn builder(store: Arc<dyn Store>, clock: SharedClock) -> KeeperBuilder {
        KeeperBuilder {
            store,
            clock,
            settings: KeeperSettings::default(),
            credentials: Vec::new(),
            sinks: Vec::new(),
            http: None,
            reauth: None,
        }
    }

    /// The configured credential names.
    pub fn credential_names(&self) -> impl Iterator<Item = &str> {
        self.inner.entries.keys().map(|k| &**k)
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The clock.
    pub fn clock(&self) -> &SharedClock {
        &self.inner.clock
    }

    /// The state of the circuit breaker of a credential's token endpoint.
    pub fn circuit_state(&self, name: &str) -> Option<CircuitState> {
        self.inner.entries.get(name).map(|e| e.breaker.state())
    }

    /// The in-memory status of a credential (what this process last saw).
    pub fn status(&self, name: &str) -> Option<CredentialStatus> {
        self.inner.entries.get(name).map(|e| e.status())
    }

    fn entry(&self, name: &str) -> Result<&Arc<Entry>, KeeperError> {
        self.inner
            .entries
            .get(name)
            .ok_or_else(|| KeeperError::UnknownCredential(name.chars().take(128).collect()))
    }

    fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    fn emit(&self, event: Event<'_>) {
        for sink in &self.inner.sinks {
            sink.on_event(&event);
        }
    }

    /// The fast path: a cached token usable for `min_ttl`, without locking or waiting. When the
    /// token's refresh is due, a background refresh is started (if a Tokio runtime is running).
    #[inline]
    pub fn cached_token(&self, name: &str, min_ttl: Duration) -> Option<AccessToken> {
        let entry = self.inner.entries.get(name)?;
        let guard = entry.current.load();
        let current = guard.as_ref()?;
        let now = self.now();
        if !current.schedule.serves(now, min_ttl) {
            return None;
        }
        if current.schedule.is_due(now) {
            if !self.inner.settings.background_refresh {
                return None;
            }
            self.nudge(entry, now);
        }
        Some(AccessToken {
            current: Arc::clone(current),
        })
    }

    /// Starts a proactive refresh in the background unless one is pending or backoff forbids it.
    fn nudge(&self, entry: &Arc<Entry>, now: Timestamp) {
        if now.as_millis() < entry.retry_not_before.load(Ordering::Acquire)
            || self.inner.shutting_down.load(Ordering::Acquire)
        {
            return;
        }
        if entry.proactive_pending.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            entry.proactive_pending.store(false, Ordering::Release);
            return;
        };
        let keeper = self.clone();
        let entry = Arc::clone(entry);
        runtime.spawn(async move {
            let _ = keeper
                .refresh(&entry, Need::NotDue, Trigger::Proactive)
                .await;
            entry.proactive_pending.store(false, Ordering::Release);
            keeper.inner.schedule_changed.notify_one();
        });
    }

    /// A token valid for at least `min_ttl`, refreshing (once, shared with every concurrent
    /// caller and process) when needed.
    pub async fn token(&self, name: &str, min_ttl: Duration) -> Result<AccessToken, KeeperError> {
        if let Some(token) = self.cached_token(name, min_ttl) {
            return Ok(token);
        }
        let entry = self.entry(name)?;
        if entry.current.load().is_none() {
            self.load(entry).await?;
            if let Some(token) = self.cached_token(name, min_ttl) {
                return Ok(token);
            }
        }
        if let Some(current) = entry.current.load_full()
            && min_ttl >= current.schedule.lifetime
            && current.schedule.lifetime > Duration::ZERO
        {
            return Err(KeeperError::MinTtlTooLong {
                name: name.to_owned(),
                min_ttl,
                lifetime: current.schedule.lifetime,
            });
        }
        let need = if self.inner.settings.background_refresh {
            Need::Serves(min_ttl)
        } else {
            Need::Fresh(min_ttl)
        };
        self.refresh(entry, need, Trigger::Demand).await
    }

    /// Stops starting background refreshes and waits for every refresh in flight to finish
    /// (and be stored). Call before exiting so no rotated refresh token is lost.
    pub async fn shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::Release);
        for entry in self.inner.entries.values() {
            let _flight = entry.flight.lock().await;
        }
    }

    /// Reports that an API rejected the token of `generation` as invalid or expired. Refreshes
    /// only if that generation is still current (compare-and-refresh) and returns a token of a
    /// newer generation.
    pub async fn rejected(&self, name: &str, generation: u64) -> Result<AccessToken, KeeperError> {
        let entry = self.entry(name)?;
        if entry.current.load().is_none() {
            self.load(entry).await?;
        }
        let current_generation = entry.generation();
        if current_generation > generation {
            self.emit(Event::Rejected {
                name,
                generation,
                refreshed: false,
            });
            if let Some(current) = entry.current.load_full() {
                return Ok(AccessToken { current });
            }
        }
        let need = Need::NewerThan(current_generation);
        let result = self.refresh(entry, need, Trigger::Rejected).await;
        self.emit(Event::Rejected {
            name,
            generation,
            refreshed: result.is_ok(),
        });
        result
    }

    /// Stores a token set obtained elsewhere (import, login) as the credential's new generation.
    pub async fn import(&self, name: &str, tokens: TokenSet) -> Result<u64, KeeperError> {
        let store_error = |source| KeeperError::Store {
            name: name.to_owned(),
            source,
        };
        let generation = self
            .inner
            .store
            .put(name, &tokens, self.now())
            .await
            .map_err(store_error)?;
        if let Ok(entry) = self.entry(name) {
            self.install(
                entry,
                StoredCredential {
                    name: name.to_owned(),
                    generation,
                    tokens,
                    status: CredentialStatus::default(),
                },
            );
        }
        self.emit(Event::Issued { name, generation });
        Ok(generation)
    }

    /// Loads every configured credential from the store (e.g. at start-up).
    pub async fn warm_up(&self) -> Vec<(String, KeeperError)> {
        let mut failures = Vec::new();
        for entry in self.inner.entries.values() {
            if let Err(error) = self.load(entry).await {
                failures.push((entry.name.to_string(), error));
            }
        }
        failures
    }

    /// Reads the stored state of a credential into the cache.
    async fn load(&self, entry: &Arc<Entry>) -> Result<(), KeeperError> {
        let _flight = entry.flight.lock().await;
        if entry.current.load().is_some() {
            return Ok(());
        }
        match self.read_store(entry).await? {
            Some(record) => {
                self.install(entry, record);
                Ok(())
            }
            None if entry.settings.grant == GrantKind::ClientCredentials => Ok(()),
            None => Err(KeeperError::NotStored(entry.name.to_string())),
        }
    }

    async fn read_store(&self, entry: &Entry) -> Result<Option<StoredCredential>, KeeperError> {
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
    fn install(&self, entry: &Entry, record: StoredCredential) {
        let cached = entry.generation();
        if record.generation < cached {
            return;
        }
        entry.set_status(record.status);
        if record.generation > cached || entry.current.load().is_none() {
            let schedule =
                entry
                    .settings
                    .policy
                    .schedule(&entry.name, record.generation, &record.tokens);
            entry.current.store(Some(Arc::new(Current {
                generation: record.generation,
                tokens: record.tokens,
                schedule,
            })));
            self.inner.schedule_changed.notify_one();
        }
    }

    /// Decides whether a refresh may be attempted now; `Some(error)` when not.
    fn gate(&self, entry: &Entry, now: Timestamp) -> Option<KeeperError> {
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
    fn serve_or(
        &self,
        entry: &Entry,
        need: Need,
        error: KeeperError,
    ) -> Result<AccessToken, KeeperError> {
        if need.accepts_stale()
            && let Some(current) = entry.current.load_full()
            && current.schedule.serves(self.now(), Duration::ZERO)
        {
            return Ok(AccessToken { current });
        }
        Err(error)
    }

    fn satisfied(&self, entry: &Entry, need: Need) -> Option<AccessToken> {
        let current = entry.current.load_full()?;
        need.satisfied_by(&current, self.now())
            .then_some(AccessToken { current })
    }

    /// Refreshes `entry` once for everyone who needs it.
    async fn refresh(
        &self,
        entry: &Arc<Entry>,
        need: Need,
        trigger: Trigger,
    ) -> Result<AccessToken, KeeperError> {
        let _flight = entry.flight.lock().await;
        if let Some(token) = self.satisfied(entry, need) {
            return Ok(token);
        }
        if let Some(error) = self.gate(entry, self.now()) {
            return self.serve_or(entry, need, error);
        }
        let name = &*entry.name;
        let lease_ttl = self.effective_lease_ttl(entry);
        // Wait for another holder at most one lease TTL plus a margin: by then its lease expired.
        let give_up_at = tokio::time::Instant::now() + lease_ttl + Duration::from_secs(5);
        let mut poll = self.inner.settings.poll_interval;
        loop {
            let attempt = self
                .inner
                .store
                .try_acquire_lease(name, &self.inner.owner, self.now(), lease_ttl)
                .await
                .map_err(|source| KeeperError::Store {
                    name: name.to_owned(),
                    source,
                });
            let attempt = match attempt {
                Ok(attempt) => attempt,
                Err(error) => return self.serve_or(entry, need, error),
            };
            match attempt {
                LeaseAttempt::Acquired(lease) => {
                    if lease.took_over_abandoned {
                        self.emit(Event::LeaseTakenOver { name });
                    }
                    let fence = lease.fence;
                    let result = self.refresh_under_lease(entry, need, trigger, fence).await;
                    self.release_lease(lease).await;
                    return result;
                }
                LeaseAttempt::Busy { .. } => {
                    self.inner
                        .store
                        .wait_for_change(name, entry.generation(), poll)
                        .await;
                    poll = (poll * 2).min(Duration::from_millis(100));
                    match self.read_store(entry).await {
                        Ok(Some(record)) => self.install(entry, record),
                        Ok(None) => {}
                        Err(error) => return self.serve_or(entry, need, error),
                    }
                    if let Some(token) = self.satisfied(entry, need) {
                        return Ok(token);
                    }
                    if let Some(error) = self.gate(entry, self.now()) {
                        return self.serve_or(entry, need, error);
                    }
                    if tokio::time::Instant::now() >= give_up_at {
                        let error = KeeperError::LeaseWaitTimeout {
                            name: name.to_owned(),
                            waited: lease_ttl,
                        };
                        return self.serve_or(entry, need, error);
                    }
                }
            }
        }
    }

    /// The refresh proper, run while holding the store's lease with `fence`.
    async fn refresh_under_lease(
        &self,
        entry: &Entry,
        need: Need,
        trigger: Trigger,
        fence: u64,
    ) -> Result<AccessToken, KeeperError> {
        let name = &*entry.name;
        // Re-read: another process may have refreshed while we waited for the lease.
        let stored = match self.read_store(entry).await {
            Ok(stored) => stored,
            Err(error) => return self.serve_or(entry, need, error),
        };
        let (expected_generation, previous) = match stored {
            Some(record) => {
                let generation = record.generation;
                self.install(entry, record);
                if let Some(token) = self.satisfied(entry, need) {
                    return Ok(token);
                }
                if let Some(error) = self.gate(entry, self.now()) {
                    return self.serve_or(entry, need, error);
                }
                (generation, entry.current.load_full())
            }
            None if entry.settings.grant == GrantKind::ClientCredentials => (0, None),
            None => return Err(KeeperError::NotStored(name.to_owned())),
        };
        let now = self.now();
        if let Err(until) = entry.breaker.try_pass(now) {
            let error = KeeperError::Unavailable {
                name: name.to_owned(),
                class: ErrorClass::Transient,
                cause: "token endpoint circuit open after repeated failures".into(),
                next_attempt_at: until,
            };
            return self.serve_or(entry, need, error);
        }
        let refresh_token = previous
            .as_ref()
            .and_then(|c| c.tokens.refresh_token.clone());
        let request = match (entry.settings.grant, &refresh_token) {
            (GrantKind::ClientCredentials, _) => GrantRequest::ClientCredentials,
            (GrantKind::RefreshToken, Some(token)) => GrantRequest::RefreshToken(token),
            (GrantKind::RefreshToken, None) => {
                entry.breaker.record_success();
                return self
                    .record_failure(
                        entry,
                        need,
                        expected_generation,
                        RefreshError::NoRefreshToken,
                        Duration::ZERO,
                    )
                    .await;
            }
        };
        let interrupted = match self.mark_in_flight(entry, fence, expected_generation).await {
            Ok(interrupted) => interrupted,
            Err(error) => return self.serve_or(entry, need, error),
        };
        let started = tokio::time::Instant::now();
        let outcome = entry.client.request(&request, now).await;
        let latency = started.elapsed();
        let response = match outcome {
            Ok(response) => response,
            Err(error) => {
                if error.class() == ErrorClass::Transient {
                    entry
                        .breaker
                        .record_failure(self.now(), error.retry_after());
                } else {
                    entry.breaker.record_success();
                }
                if interrupted && error.class() == ErrorClass::NeedsReauth {
                    return self
                        .record_lost_in_crash(entry, need, expected_generation, error, latency)
                        .await;
                }
                return self
                    .record_failure(entry, need, expected_generation, error, latency)
                    .await;
            }
        };
        entry.breaker.record_success();
        let received_at = self.now();
        // Lifetimes count from when the request was sent, not when the answer arrived: the
        // provider started the token's clock somewhere in between.
        let tokens = match (&previous, entry.settings.grant) {
            (Some(previous), GrantKind::RefreshToken) => {
                previous
                    .tokens
                    .refreshed_with(response, now, &entry.settings.expiry)
            }
            _ => response.into_token_set(now, &entry.settings.expiry),
        };
        let expires_at = tokens.expires_at;
        match self
            .write_durably(name, expected_generation, fence, &tokens, received_at)
            .await
        {
            Ok(WriteOutcome::Written { generation }) => {
                self.install(
                    entry,
                    StoredCredential {
                        name: name.to_owned(),
                        generation,
                        tokens,
                        status: CredentialStatus {
                            last_refresh_at: Some(received_at),
                            ..CredentialStatus::default()
                        },
                    },
                );
                if expected_generation == 0 {
                    self.emit(Event::Issued { name, generation });
                } else {
                    self.emit(Event::Refreshed {
                        name,
                        generation,
                        trigger,
                        latency,
                        expires_at,
                    });
                }
                self.satisfied(entry, need)
                    .or_else(|| {
                        entry
                            .current
                            .load_full()
                            .map(|current| AccessToken { current })
                    })
                    .ok_or_else(|| KeeperError::NotStored(name.to_owned()))
            }
            Ok(WriteOutcome::Conflict { current_generation }) => {
                self.emit(Event::WriteFenced {
                    name,
                    current_generation,
                });
                match self.read_store(entry).await? {
                    Some(record) => self.install(entry, record),
                    None => return Err(KeeperError::NotStored(name.to_owned())),
                }
                let error = KeeperError::Superseded {
                    name: name.to_owned(),
                };
                self.satisfied(entry, need)
                    .map_or_else(|| self.serve_or(entry, need, error), Ok)
            }
            Err(source) => {
                // The provider may have rotated the refresh token and we could not keep the new
                // one: say so loudly. The new access token is not handed out (it is not durable).
                tracing::error!(credential = %name, error = %source, "refreshed tokens could not be stored; the rotated refresh token may be lost");
                Err(KeeperError::Store {
                    name: name.to_owned(),
                    source,
                })
            }
        }
    }

    /// Writes a refreshed token set, retrying briefly when the store is momentarily unavailable.
    async fn write_durably(
        &self,
        name: &str,
        expected_generation: u64,
        fence: u64,
        tokens: &TokenSet,
        now: Timestamp,
    ) -> Result<WriteOutcome, StoreError> {
        let mut delay = Duration::from_millis(25);
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self
                .inner
                .store
                .compare_and_put(name, expected_generation, Some(fence), tokens, now)
                .await
            {
                // A store restart (Redis failover) can take seconds: keep the rotated refresh
                // token in memory and retry for ~5 s; fencing still refuses a stale write.
                Err(StoreError::Unavailable { .. }) if attempts < 10 => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
                other => return other,
            }
        }
    }

    /// Records a failed refresh: status, backoff, events; returns what the caller gets.
    async fn record_failure(
        &self,
        entry: &Entry,
        need: Need,
        generation: u64,
        error: RefreshError,
        latency: Duration,
    ) -> Result<AccessToken, KeeperError> {
        let name = &*entry.name;
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
            name: name.to_owned(),
            class,
            source: error,
            next_attempt_at,
        };
        if let Some(token) = self.satisfied(entry, need) {
            return Ok(token);
        }
        self.serve_or(entry, need, error)
    }

    /// Releases a refresh lease. When the store is unavailable (e.g. Redis restarting), keeps
    /// retrying in the background until the lease would have expired anyway, so the other
    /// replicas do not wait out a whole lease TTL after a brief outage.
    async fn release_lease(&self, lease: Lease) {
        let retry = Lease {
            name: lease.name.clone(),
            owner: lease.owner.clone(),
            fence: lease.fence,
            expires_at: lease.expires_at,
            took_over_abandoned: lease.took_over_abandoned,
            guard: None,
        };
        let Err(error) = self.inner.store.release_lease(lease).await else {
            return;
        };
        tracing::warn!(credential = %retry.name, error = %error, "could not release the refresh lease; retrying until it expires");
        let keeper = self.clone();
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(50);
            while keeper.now() < retry.expires_at {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
                let attempt = Lease {
                    name: retry.name.clone(),
                    owner: retry.owner.clone(),
                    fence: retry.fence,
                    expires_at: retry.expires_at,
                    took_over_abandoned: retry.took_over_abandoned,
                    guard: None,
                };
                if keeper.inner.store.release_lease(attempt).await.is_ok() {
                    tracing::info!(credential = %retry.name, "released the refresh lease after the store came back");
                    return;
                }
            }
        });
    }

    /// The lease TTL used for `entry` (see [`KeeperSettings::lease_ttl_floor`]).
    fn effective_lease_ttl(&self, entry: &Entry) -> Duration {
        let configured = self.inner.settings.lease_ttl;
        if self.inner.settings.lease_ttl_floor {
            configured.max(entry.settings.client.timeout * 2 + Duration::from_secs(5))
        } else {
            configured
        }
    }

    /// Marks the refresh of `generation` in flight under the lease with `fence` (see
    /// [`Store::mark_in_flight`]). Returns whether a previous holder was interrupted while
    /// refreshing this same generation. Fails when the store cannot record the marker: then no
    /// refresh token is sent.
    async fn mark_in_flight(
        &self,
        entry: &Entry,
        fence: u64,
        generation: u64,
    ) -> Result<bool, KeeperError> {
        if entry.settings.grant != GrantKind::RefreshToken || generation == 0 {
            return Ok(false);
        }
        let name = &*entry.name;
        let previous = self
            .inner
            .store
            .mark_in_flight(name, fence, generation)
            .await
            .map_err(|source| KeeperError::Store {
                name: name.to_owned(),
                source,
            })?;
        let interrupted = previous == Some(generation);
        if interrupted {
            tracing::warn!(
                credential = %name,
                generation,
                "the previous refresh holder stopped while calling the token endpoint; retrying with the same refresh token"
            );
        }
        Ok(interrupted)
    }

    /// A retry after an interrupted refresh was refused (`invalid_grant`): the rotated refresh
    /// token died with the previous holder. Recorded as needs_reauth with reason
    /// [`crate::events::LOST_IN_CRASH`], loudly.
    async fn record_lost_in_crash(
        &self,
        entry: &Entry,
        need: Need,
        generation: u64,
        error: RefreshError,
        latency: Duration,
    ) -> Result<AccessToken, KeeperError> {
        let name = &*entry.name;
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
                    name: name.to_owned(),
                    reason: entry
                        .status()
                        .reason
                        .unwrap_or_else(|| crate::events::LOST_IN_CRASH.to_owned()),
                })
            }
            other => other,
        }
    }

    /// Re-reads `name` from the store and installs a newer generation or status in the cache
    /// (another replica refreshed it). Wakes nobody else and starts no refresh.
    pub async fn reload(&self, name: &str) -> Result<(), KeeperError> {
        let entry = self.entry(name)?;
        if let Some(record) = self.read_store(entry).await? {
            self.install(entry, record);
        }
        Ok(())
    }

    /// [`Keeper::reload`] for every configured credential (e.g. after missed change events);
    /// returns the credentials that could not be read.
    pub async fn reload_all(&self) -> Vec<(String, KeeperError)> {
        let mut failures = Vec::new();
        for name in self.inner.entries.keys() {
            if let Err(error) = self.reload(name).await {
                failures.push((name.to_string(), error));
            }
        }
        failures
    }

    /// Runs the proactive refresh loop until the returned handle is aborted: every credential
    /// with `heartbeat` enabled is refreshed when due, even if nobody asks for it.
    pub fn spawn_heartbeat(&self) -> tokio::task::JoinHandle<()> {
        let keeper = self.clone();
        tokio::spawn(async move { keeper.heartbeat().await })
    }

    async fn heartbeat(&self) {
        const IDLE: Duration = Duration::from_secs(60);
        loop {
            let now = self.now();
            let mut wake_at = now + IDLE;
            for entry in self.inner.entries.values() {
                if !entry.settings.heartbeat {
                    continue;
                }
                if let Some(at) = self.check_relogin(entry, now) {
                    wake_at = wake_at.min(at);
                }
                let due = match entry.current.load().as_ref() {
                    Some(current) => current.schedule.refresh_due_at,
                    None if entry.settings.grant == GrantKind::ClientCredentials => now,
                    None => continue,
                };
                let not_before = entry.retry_not_before.load(Ordering::Acquire);
                if not_before == i64::MAX {
                    continue; // needs re-authentication: nothing to do until someone logs in
                }
                let due = due.max(Timestamp::from_millis(not_before));
                if due <= now {
                    self.nudge(entry, now);
                    // Re-check shortly in case the attempt fails without changing the schedule.
                    wake_at = wake_at.min(now + Duration::from_millis(250));
                } else {
                    wake_at = wake_at.min(due);
                }
            }
            tokio::select! {
                () = self.inner.clock.sleep_until(wake_at) => {}
                () = self.inner.schedule_changed.notified() => {}
            }
        }
    }
}
