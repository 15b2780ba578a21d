//! The Keeper: hands out access tokens that are valid for at least the caller's `min_ttl`, and
//! refreshes each credential exactly once per expiry however many callers, processes or
//! replicas share it.
//!
//! - Fast path: a fresh cached token is returned without a lock or allocation
//!   ([`Keeper::cached_token`]).
//! - Single-flight: in one process, callers needing a refresh queue on the credential's flight
//!   lock; the first refreshes, the others find the new generation ([`refresh`]).
//! - Across processes: the refresher takes the store's refresh lease, re-reads the stored
//!   generation and skips the network call when someone else already refreshed.
//! - Rotation safety: a new token set is durably stored (fenced write) before anyone sees the
//!   new access token.
//! - Failures are classified; transient ones back off (and open the endpoint's circuit) while
//!   the cached token is served as long as it is valid ([`failure`]).
//! - When refreshing cannot help, callers may wait for a login by someone else
//!   ([`Keeper::token_or_wait`]).
//!
//! Files: [`builder`] assembles a Keeper, [`entry`] is one credential's runtime state, [`cache`]
//! moves records between the store and the in-memory cache, [`refresh`] is the refresh itself,
//! [`lease`] the refresh lease around it, [`heartbeat`] the proactive schedule, [`wait`] the
//! needs-reauth long poll, [`reauth_hook`] automatic re-authentication.

mod builder;
mod cache;
mod due_queue;
mod entry;
mod error;
mod failure;
mod handle;
mod heartbeat;
mod lease;
mod reauth_hook;
mod refresh;
mod registry;
mod wait;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

pub use self::builder::KeeperBuilder;
use self::entry::{Entry, Need};
pub use self::error::KeeperError;
pub use self::handle::Token;
use crate::backoff::{Backoff, CircuitState};
use crate::clock::{SharedClock, Timestamp};
use crate::events::{Event, SharedSink, Trigger};
use crate::name::CredentialName;
use crate::store::{CredentialStatus, CredentialStore, StoredCredential};
use crate::token::TokenSet;

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

struct Inner {
    store: Arc<dyn CredentialStore>,
    clock: SharedClock,
    owner: String,
    settings: KeeperSettings,
    /// Fixed at build time; foldhash keeps the lookup on the fast path cheap.
    entries: HashMap<CredentialName, Arc<Entry>, foldhash::fast::RandomState>,
    /// The names of `entries`, sorted.
    names: Vec<CredentialName>,
    /// Credentials added at runtime.
    connections: registry::Connections,
    /// Makes the entries of both.
    factory: registry::EntryFactory,
    sinks: Vec<SharedSink>,
    schedule_changed: Notify,
    /// The proactive schedule (see [`due_queue`]).
    due: due_queue::DueQueue,
    /// A heartbeat runs: installs queue their credential's next due time.
    heartbeat_running: AtomicBool,
    shutting_down: AtomicBool,
    /// Automatic re-authentication, when installed.
    reauth: Option<reauth_hook::ReauthHook>,
}

/// What a Keeper holds of one credential in memory (see [`Keeper::snapshot`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The cached generation (0: nothing loaded yet).
    pub generation: u64,
    /// When the cached access token expires, if one is cached.
    pub expires_at: Option<Timestamp>,
    /// The status this process last saw.
    pub status: CredentialStatus,
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
            .field("credentials", &self.credential_count())
            .finish_non_exhaustive()
    }
}

impl Keeper {
    /// Starts building a Keeper over `store`, reading time from `clock`.
    pub fn builder(store: Arc<dyn CredentialStore>, clock: SharedClock) -> KeeperBuilder {
        KeeperBuilder::new(store, clock)
    }

    /// The credentials of the configuration, in name order (connections added at runtime:
    /// [`Keeper::credential_names_after`]).
    pub fn credential_names(&self) -> impl Iterator<Item = &CredentialName> {
        self.inner.names.iter()
    }

    /// Up to `limit` credential names after `after` (from the first when `None`), in name
    /// order, configured ones and connections together: pages of a listing without sorting
    /// every name again.
    pub fn credential_names_after(&self, after: Option<&str>, limit: usize) -> Vec<CredentialName> {
        let names = &self.inner.names;
        let fixed = match after {
            None => &names[..],
            Some(after) => &names[names.partition_point(|name| name.as_str() <= after)..],
        };
        let added = self.inner.connections.names_after(after, limit);
        registry::merge_names(fixed, added, limit)
    }

    /// How many credentials this Keeper holds (configured and added).
    pub fn credential_count(&self) -> usize {
        self.inner.names.len() + self.inner.connections.len()
    }

    /// The credential called `name`, if this Keeper has it.
    pub fn credential(&self, name: &str) -> Option<CredentialName> {
        self.lookup(name).map(|entry| entry.name.clone())
    }

    /// Whether `name` was added at runtime ([`Keeper::add_credential`]) rather than configured.
    pub fn is_connection(&self, name: &str) -> bool {
        !self.inner.entries.contains_key(name) && self.inner.connections.get(name).is_some()
    }

    /// Adds credential `name` while running (a connection). Its tokens are loaded on first use
    /// (or by [`Keeper::reload`], [`Keeper::warm_up`]). Fails when the name is taken.
    pub async fn add_credential(
        &self,
        name: CredentialName,
        settings: Arc<crate::config::CredentialSettings>,
    ) -> Result<(), KeeperError> {
        if self.inner.entries.contains_key(name.as_str()) {
            return Err(KeeperError::AlreadyExists(name.to_string()));
        }
        let entry = Arc::new(self.inner.factory.entry(name.clone(), settings, None)?);
        if !self.inner.connections.insert(Arc::clone(&entry)) {
            return Err(KeeperError::AlreadyExists(name.to_string()));
        }
        if self.inner.heartbeat_running.load(Ordering::Acquire) && entry.settings.heartbeat {
            self.reschedule(&entry);
        }
        Ok(())
    }

    /// Removes a credential added at runtime; `false` when there is none of that name (a
    /// configured credential cannot be removed). A refresh in flight finishes; nothing is
    /// scheduled for it any more.
    pub fn remove_credential(&self, name: &str) -> bool {
        match self.inner.connections.remove(name) {
            Some(entry) => {
                entry.removed.store(true, Ordering::Release);
                true
            }
            None => false,
        }
    }

    /// The entry of `name`, configured or added.
    fn lookup(&self, name: &str) -> Option<Arc<Entry>> {
        match self.inner.entries.get(name) {
            Some(entry) => Some(Arc::clone(entry)),
            None => self.inner.connections.get(name),
        }
    }

    /// Every entry, configured and added.
    fn all_entries(&self) -> Vec<Arc<Entry>> {
        let mut all: Vec<Arc<Entry>> = self.inner.entries.values().cloned().collect();
        all.extend(self.inner.connections.all());
        all
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn CredentialStore> {
        &self.inner.store
    }

    /// The clock.
    pub fn clock(&self) -> &SharedClock {
        &self.inner.clock
    }

    /// The state of the circuit breaker of a credential's token endpoint.
    pub fn circuit_state(&self, name: &str) -> Option<CircuitState> {
        self.lookup(name).map(|e| e.breaker.state())
    }

    /// The in-memory status of a credential (what this process last saw).
    pub fn status(&self, name: &str) -> Option<CredentialStatus> {
        self.lookup(name).map(|e| e.status())
    }

    /// What this process holds of a credential, from memory (no store access): the cached
    /// generation and expiry, and the status. `None` for an unknown credential.
    pub fn snapshot(&self, name: &str) -> Option<Snapshot> {
        let entry = self.lookup(name)?;
        let current = entry.current.load();
        Some(Snapshot {
            generation: current.as_ref().map_or(0, |c| c.generation),
            expires_at: current.as_ref().map(|c| c.tokens.expires_at),
            status: entry.status(),
        })
    }

    fn entry(&self, name: &str) -> Result<Arc<Entry>, KeeperError> {
        self.lookup(name)
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
    pub fn cached_token(&self, name: &str, min_ttl: Duration) -> Option<Token> {
        match self.inner.entries.get(name) {
            Some(entry) => self.cached_from(entry, min_ttl),
            None => self.cached_from(&self.inner.connections.get(name)?, min_ttl),
        }
    }

    #[inline]
    fn cached_from(&self, entry: &Arc<Entry>, min_ttl: Duration) -> Option<Token> {
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
        Some(Token {
            current: Arc::clone(current),
        })
    }

    /// A token valid for at least `min_ttl`, refreshing (once, shared with every concurrent
    /// caller and process) when needed.
    pub async fn token(&self, name: &str, min_ttl: Duration) -> Result<Token, KeeperError> {
        if let Some(token) = self.cached_token(name, min_ttl) {
            return Ok(token);
        }
        let entry = &self.entry(name)?;
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
        for entry in self.all_entries() {
            let _flight = entry.flight.lock().await;
        }
    }

    /// Reports that an API rejected the token of `generation` as invalid or expired. Refreshes
    /// only if that generation is still current (compare-and-refresh) and returns a token of a
    /// newer generation. A generation newer than the stored one was never issued: refused with
    /// [`KeeperError::UnknownGeneration`], without a refresh.
    pub async fn rejected(&self, name: &str, generation: u64) -> Result<Token, KeeperError> {
        let entry = &self.entry(name)?;
        if entry.current.load().is_none() {
            self.load(entry).await?;
        }
        if generation > entry.generation() {
            // Another process may have stored it since this one looked: read the store.
            if let Some(record) = self.read_store(entry).await? {
                self.install(entry, record);
            }
            if generation > entry.generation() {
                return Err(KeeperError::UnknownGeneration {
                    name: name.to_owned(),
                    reported: generation,
                    current: entry.generation(),
                });
            }
        }
        self.judge_rejection(entry, generation);
        let current_generation = entry.generation();
        if current_generation > generation {
            self.emit(Event::Rejected {
                name,
                generation,
                refreshed: false,
            });
            if let Some(current) = entry.current.load_full()
                && current.schedule.serves(self.now(), Duration::ZERO)
            {
                return Ok(Token { current });
            }
            // The newer generation is itself at the end of its hand-out window: a retry with
            // it would fail the same way.
            return self
                .refresh(entry, Need::Serves(Duration::ZERO), Trigger::Rejected)
                .await;
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
    pub async fn import(
        &self,
        name: &CredentialName,
        tokens: TokenSet,
    ) -> Result<u64, KeeperError> {
        let generation = crate::store::import(&*self.inner.store, name, &tokens, self.now())
            .await
            .map_err(|source| KeeperError::Store {
                name: name.to_string(),
                source,
            })?;
        if let Ok(entry) = &self.entry(name) {
            self.install(
                entry,
                StoredCredential {
                    name: name.clone(),
                    generation,
                    tokens,
                    status: CredentialStatus::default(),
                },
            );
        }
        self.emit(Event::Issued { name, generation });
        Ok(generation)
    }

    /// Loads every configured credential from the store (e.g. at start-up), a page of stored
    /// credentials at a time; returns those that could not be loaded. Callers need not wait
    /// for it: a token request for a credential not loaded yet loads it.
    pub async fn warm_up(&self) -> Vec<(String, KeeperError)> {
        const PAGE: usize = 1000;
        let mut after: Option<CredentialName> = None;
        loop {
            let page = match self.inner.store.load_page(after.as_ref(), PAGE).await {
                Ok(page) => page,
                Err(error) => {
                    // One unreadable record spoils its page: the rest load one by one below,
                    // each with its own error.
                    tracing::debug!(error = %error, "paged warm-up failed; loading one by one");
                    break;
                }
            };
            let Some(last) = page.last() else {
                break;
            };
            after = Some(last.name.clone());
            for record in page {
                if let Some(entry) = self.lookup(record.name.as_str()) {
                    self.install(&entry, record);
                }
            }
        }
        let mut failures = Vec::new();
        for name in &self.inner.names {
            let Some(entry) = self.inner.entries.get(name) else {
                continue;
            };
            if entry.current.load().is_some() {
                continue;
            }
            if let Err(error) = self.load(entry).await {
                failures.push((entry.name.to_string(), error));
            }
        }
        failures
    }

    /// Re-reads `name` from the store and installs a newer generation or status in the cache
    /// (another replica refreshed it). Wakes nobody else and starts no refresh.
    pub async fn reload(&self, name: &str) -> Result<(), KeeperError> {
        let entry = &self.entry(name)?;
        if let Some(record) = self.read_store(entry).await? {
            self.install(entry, record);
        }
        Ok(())
    }

    /// [`Keeper::reload`] for every credential (e.g. after missed change events); returns the
    /// credentials that could not be read.
    pub async fn reload_all(&self) -> Vec<(String, KeeperError)> {
        let mut failures = Vec::new();
        for entry in self.all_entries() {
            if let Err(error) = self.reload(entry.name.as_str()).await {
                failures.push((entry.name.to_string(), error));
            }
        }
        failures
    }
}
