//! The IdP's shared state: clients, knobs, grants, refresh and access tokens, and counters.
//!
//! All token bookkeeping lives behind one `RwLock`: the API's token check takes the read lock,
//! the token endpoint the write lock, and no lock is ever held across an `.await`. Expired
//! tokens are swept lazily from the write path at most every [`SWEEP_EVERY_MS`] of IdP time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use authkeeper_core::clock::{SharedClock, Timestamp};
use serde::{Deserialize, Serialize};

use crate::config::{Knobs, MockClient};
use crate::error::MockError;
use crate::tokens::{Issued, JwtClaims, jwt_token, opaque_token};

/// Minimum IdP time between two sweeps of expired tokens, in milliseconds.
pub const SWEEP_EVERY_MS: i64 = 5_000;

/// A snapshot of the IdP's counters and grants (`GET /admin/stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Stats {
    /// Every `POST /token`, whatever its outcome.
    pub token_requests: u64,
    /// `POST /token` with `grant_type=refresh_token` (including fault-injected ones).
    pub refresh_calls: u64,
    /// Refreshes that issued a token (grace-window retries included).
    pub refresh_success: u64,
    /// `POST /token` with `grant_type=client_credentials` (including fault-injected ones).
    pub client_credentials_calls: u64,
    /// Client-credentials requests that issued a token.
    pub client_credentials_success: u64,
    /// Used refresh tokens presented outside the grace window.
    pub reuse_detected: u64,
    /// Used refresh tokens presented inside the grace window (and accepted).
    pub reuse_in_grace: u64,
    /// Grants minted (`POST /admin/grants` or [`crate::MockIdp::mint_grant`]).
    pub grants_minted: u64,
    /// Grants revoked, for any reason (reuse, `/revoke`, admin).
    pub grants_revoked: u64,
    /// `invalid_grant` answers.
    pub invalid_grant: u64,
    /// `invalid_client` answers.
    pub invalid_client: u64,
    /// Injected 429/500/503 answers.
    pub faults_injected: u64,
    /// `POST /revoke` requests.
    pub revocations: u64,
    /// `POST /device/auth` requests answered with a device code.
    pub device_authorizations: u64,
    /// `POST /token` polls with the device-code grant.
    pub device_polls: u64,
    /// `GET /authorize` requests.
    pub authorizations: u64,
    /// API requests answered 200.
    pub api_ok: u64,
    /// API requests answered 401.
    pub api_unauthorized: u64,
    /// API requests answered 403.
    pub api_forbidden: u64,
    /// Grants neither revoked nor past their absolute lifetime.
    pub active_grants: u64,
    /// Access tokens currently tracked (expired ones linger until the next sweep).
    pub access_tokens_tracked: u64,
    /// Every grant, oldest first.
    pub grants: Vec<GrantInfo>,
}

/// One grant in [`Stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GrantInfo {
    /// The grant id (`g1`, `g2`, ...).
    pub id: String,
    /// The client it belongs to.
    pub client_id: String,
    /// Its subject (`user-<n>`).
    pub sub: String,
    /// Its scope.
    pub scope: String,
    /// Neither revoked nor past its absolute lifetime.
    pub alive: bool,
    /// Number of successful refreshes.
    pub generation: u64,
    /// When it was minted, in IdP time, milliseconds since the Unix epoch.
    pub created_at_ms: i64,
}

/// The atomic counters behind [`Stats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub token_requests: AtomicU64,
    pub refresh_calls: AtomicU64,
    pub refresh_success: AtomicU64,
    pub client_credentials_calls: AtomicU64,
    pub client_credentials_success: AtomicU64,
    pub reuse_detected: AtomicU64,
    pub reuse_in_grace: AtomicU64,
    pub grants_minted: AtomicU64,
    pub grants_revoked: AtomicU64,
    pub invalid_grant: AtomicU64,
    pub invalid_client: AtomicU64,
    pub faults_injected: AtomicU64,
    pub revocations: AtomicU64,
    pub device_authorizations: AtomicU64,
    pub device_polls: AtomicU64,
    pub authorizations: AtomicU64,
    pub api_ok: AtomicU64,
    pub api_unauthorized: AtomicU64,
    pub api_forbidden: AtomicU64,
}

/// Adds one to a counter.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// Why a refresh was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GrantError {
    /// `invalid_grant` with a description.
    InvalidGrant(&'static str),
    /// `invalid_scope`: more scope asked than the grant holds.
    InvalidScope,
}

/// Why an access token was refused by the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AccessError {
    /// Unknown, revoked, or expired and already swept.
    Unknown,
    /// Known but past its expiry.
    Expired,
}

/// Who an accepted access token speaks for.
#[derive(Debug, Clone)]
pub(crate) struct AccessInfo {
    pub sub: Arc<str>,
    pub client_id: Arc<str>,
    pub scope: Arc<str>,
    pub grant_id: Option<Arc<str>>,
}

impl AccessInfo {
    /// Whether the token's scope holds `wanted`.
    pub(crate) fn has_scope(&self, wanted: &str) -> bool {
        self.scope.split_ascii_whitespace().any(|s| s == wanted)
    }
}

#[derive(Debug)]
struct Grant {
    id: Arc<str>,
    client_id: Arc<str>,
    sub: Arc<str>,
    scope: Arc<str>,
    created_at: Timestamp,
    expires_at: Option<Timestamp>,
    revoked: bool,
    generation: u64,
    current_refresh: String,
}

impl Grant {
    fn expired(&self, now: Timestamp) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }

    fn alive(&self, now: Timestamp) -> bool {
        !self.revoked && !self.expired(now)
    }
}

#[derive(Debug)]
struct RefreshRecord {
    grant_id: Arc<str>,
    expires_at: Option<Timestamp>,
    /// When it was rotated away (so it is "used"); `None` while current.
    rotated_at: Option<Timestamp>,
}

#[derive(Debug)]
struct AccessRecord {
    grant_id: Option<Arc<str>>,
    sub: Arc<str>,
    client_id: Arc<str>,
    scope: Arc<str>,
    expires_at: Timestamp,
}

#[derive(Debug, Default)]
struct Store {
    /// Grants in minting order (ids are `g<index+1>`).
    grants: Vec<Grant>,
    grant_index: HashMap<Arc<str>, usize>,
    refresh: HashMap<String, RefreshRecord>,
    access: HashMap<String, AccessRecord>,
    last_sweep: Option<Timestamp>,
}

impl Store {
    fn grant_mut(&mut self, id: &str) -> Option<&mut Grant> {
        let index = *self.grant_index.get(id)?;
        self.grants.get_mut(index)
    }

    fn grant(&self, id: &str) -> Option<&Grant> {
        let index = *self.grant_index.get(id)?;
        self.grants.get(index)
    }

    /// Drops expired access tokens and refresh tokens that can never be accepted again.
    fn maybe_sweep(&mut self, now: Timestamp) {
        let due = self
            .last_sweep
            .is_none_or(|last| !(0..SWEEP_EVERY_MS).contains(&now.millis_since(last)));
        if !due {
            return;
        }
        self.last_sweep = Some(now);
        self.access.retain(|_, record| now < record.expires_at);
        let grants = &self.grants;
        let index = &self.grant_index;
        self.refresh.retain(|_, record| {
            let grant_alive = index
                .get(&record.grant_id)
                .and_then(|i| grants.get(*i))
                .is_some_and(|grant| grant.alive(now));
            grant_alive && record.expires_at.is_none_or(|at| now < at)
        });
    }

    /// Marks a grant revoked and forgets all its tokens. Returns false if it was not alive.
    fn revoke_grant(&mut self, id: &str) -> bool {
        let Some(grant) = self.grant_mut(id) else {
            return false;
        };
        if grant.revoked {
            return false;
        }
        grant.revoked = true;
        self.access
            .retain(|_, record| record.grant_id.as_deref() != Some(id));
        self.refresh.retain(|_, record| &*record.grant_id != id);
        true
    }
}

struct Shared {
    clock: SharedClock,
    issuer: String,
    clients: Vec<MockClient>,
    knobs: RwLock<Arc<Knobs>>,
    store: RwLock<Store>,
    counters: Counters,
    login: crate::login::LoginState,
}

/// The IdP's state, cheap to clone (an `Arc`); the axum router's state.
#[derive(Clone)]
pub struct IdpState {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for IdpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdpState")
            .field("issuer", &self.shared.issuer)
            .finish_non_exhaustive()
    }
}

impl IdpState {
    /// New state for an IdP reachable at `issuer` (e.g. `http://127.0.0.1:8080`, no trailing
    /// slash), with at least one client.
    pub fn new(
        clock: SharedClock,
        knobs: Knobs,
        clients: Vec<MockClient>,
        issuer: impl Into<String>,
    ) -> Result<Self, MockError> {
        if clients.is_empty() {
            return Err(MockError::NoClients);
        }
        knobs.validate()?;
        Ok(IdpState {
            shared: Arc::new(Shared {
                clock,
                issuer: issuer.into(),
                clients,
                knobs: RwLock::new(Arc::new(knobs)),
                store: RwLock::new(Store::default()),
                counters: Counters::default(),
                login: crate::login::LoginState::default(),
            }),
        })
    }

    /// The issuer URL (also the base URL of every endpoint).
    pub fn issuer(&self) -> &str {
        &self.shared.issuer
    }

    /// The current knobs.
    pub fn knobs(&self) -> Arc<Knobs> {
        Arc::clone(&self.shared.knobs.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Replaces the knobs after validating them.
    pub fn set_knobs(&self, knobs: Knobs) -> Result<(), MockError> {
        knobs.validate()?;
        *self.shared.knobs.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(knobs);
        Ok(())
    }

    /// The IdP's notion of now: the clock plus `clock_offset_ms`.
    pub fn now(&self, knobs: &Knobs) -> Timestamp {
        Timestamp::from_millis(
            self.shared
                .clock
                .now()
                .as_millis()
                .saturating_add(knobs.clock_offset_ms),
        )
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.shared.counters
    }

    /// Pending device authorizations and authorization codes.
    pub(crate) fn login(&self) -> &crate::login::LoginState {
        &self.shared.login
    }

    /// Whether a client with this id is registered.
    pub(crate) fn client_exists(&self, client_id: &str) -> bool {
        self.client(client_id).is_some()
    }

    /// The client with this id and secret, if any.
    pub(crate) fn authenticate(&self, client_id: &str, secret: &str) -> Option<&MockClient> {
        self.client(client_id)
            .filter(|client| client.client_secret == secret)
    }

    fn client(&self, client_id: &str) -> Option<&MockClient> {
        self.shared
            .clients
            .iter()
            .find(|client| client.client_id == client_id)
    }

    fn read(&self) -> RwLockReadGuard<'_, Store> {
        self.shared.store.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Store> {
        self.shared.store.write().unwrap_or_else(|e| e.into_inner())
    }

    fn new_access_token(
        &self,
        knobs: &Knobs,
        now: Timestamp,
        record: AccessRecord,
    ) -> (String, AccessRecord) {
        let token = if knobs.jwt_access_tokens {
            jwt_token(&JwtClaims {
                issuer: &self.shared.issuer,
                sub: &record.sub,
                client_id: &record.client_id,
                scope: &record.scope,
                issued_at: now,
                expires_at: record.expires_at,
            })
        } else {
            opaque_token()
        };
        (token, record)
    }

    /// Mints a new grant for `client_id` (default: the first client) with `scope` (default: the
    /// client's default scope), returning its first access and refresh tokens.
    pub(crate) fn mint_grant(
        &self,
        client_id: Option<&str>,
        scope: Option<&str>,
    ) -> Result<Issued, MockError> {
        let client = match client_id {
            Some(id) => self
                .client(id)
                .ok_or_else(|| MockError::UnknownClient(id.to_owned()))?,
            None => self.shared.clients.first().ok_or(MockError::NoClients)?,
        };
        let knobs = self.knobs();
        let now = self.now(&knobs);
        let scope: Arc<str> = Arc::from(scope.unwrap_or(&client.default_scope));
        let client_id: Arc<str> = Arc::from(client.client_id.as_str());
        let refresh_token = opaque_token();
        let access_expires = now + Duration::from_millis(knobs.access_ttl_ms);
        let mut store = self.write();
        store.maybe_sweep(now);
        let number = store.grants.len() + 1;
        let id: Arc<str> = Arc::from(format!("g{number}"));
        let sub: Arc<str> = Arc::from(format!("user-{number}"));
        let (access_token, record) = self.new_access_token(
            &knobs,
            now,
            AccessRecord {
                grant_id: Some(Arc::clone(&id)),
                sub: Arc::clone(&sub),
                client_id: Arc::clone(&client_id),
                scope: Arc::clone(&scope),
                expires_at: access_expires,
            },
        );
        store.access.insert(access_token.clone(), record);
        store.refresh.insert(
            refresh_token.clone(),
            RefreshRecord {
                grant_id: Arc::clone(&id),
                expires_at: knobs
                    .refresh_ttl_ms
                    .map(|ms| now + Duration::from_millis(ms)),
                rotated_at: None,
            },
        );
        let index = store.grants.len();
        store.grant_index.insert(Arc::clone(&id), index);
        store.grants.push(Grant {
            id: Arc::clone(&id),
            client_id,
            sub,
            scope: Arc::clone(&scope),
            created_at: now,
            expires_at: knobs
                .grant_lifetime_ms
                .map(|ms| now + Duration::from_millis(ms)),
            revoked: false,
            generation: 0,
            current_refresh: refresh_token.clone(),
        });
        drop(store);
        bump(&self.shared.counters.grants_minted);
        tracing::debug!(grant = %id, "grant minted");
        Ok(Issued {
            access_token,
            refresh_token: Some(refresh_token),
            scope,
            grant_id: Some(id),
        })
    }

    /// The `refresh_token` grant for an authenticated client.
    pub(crate) fn refresh(
        &self,
        client_id: &str,
        presented: &str,
        scope: Option<&str>,
    ) -> Result<Issued, GrantError> {
        let knobs = self.knobs();
        let now = self.now(&knobs);
        let rotate = knobs.rotate_refresh_tokens && !knobs.omit_refresh_token_on_refresh;
        let mut store = self.write();
        store.maybe_sweep(now);
        let Some(record) = store.refresh.get(presented) else {
            return Err(GrantError::InvalidGrant(
                "unknown, revoked or expired refresh token",
            ));
        };
        let grant_id = Arc::clone(&record.grant_id);
        let rotated_at = record.rotated_at;
        let token_expired = record.expires_at.is_some_and(|at| now >= at);
        let Some(grant) = store.grant(&grant_id) else {
            return Err(GrantError::InvalidGrant("unknown grant"));
        };
        if &*grant.client_id != client_id {
            return Err(GrantError::InvalidGrant(
                "refresh token was issued to another client",
            ));
        }
        if grant.revoked {
            return Err(GrantError::InvalidGrant("grant revoked"));
        }
        if grant.expired(now) {
            return Err(GrantError::InvalidGrant(
                "grant reached its absolute lifetime",
            ));
        }
        if token_expired {
            return Err(GrantError::InvalidGrant("refresh token expired"));
        }
        let scope: Arc<str> = match scope {
            None => Arc::clone(&grant.scope),
            Some(asked) => {
                let held: Vec<&str> = grant.scope.split_ascii_whitespace().collect();
                if !asked.split_ascii_whitespace().all(|s| held.contains(&s)) {
                    return Err(GrantError::InvalidScope);
                }
                Arc::from(asked)
            }
        };
        let record_template = AccessRecord {
            grant_id: Some(Arc::clone(&grant_id)),
            sub: Arc::clone(&grant.sub),
            client_id: Arc::clone(&grant.client_id),
            scope: Arc::clone(&scope),
            expires_at: now + Duration::from_millis(knobs.access_ttl_ms),
        };
        if let Some(rotated_at) = rotated_at {
            let since = now.millis_since(rotated_at);
            let within_grace = since >= 0 && (since as u64) < knobs.reuse_grace_ms;
            if !within_grace {
                bump(&self.shared.counters.reuse_detected);
                if knobs.reuse_revokes_grant && store.revoke_grant(&grant_id) {
                    bump(&self.shared.counters.grants_revoked);
                    tracing::info!(grant = %grant_id, "refresh token reuse detected: grant revoked");
                }
                return Err(GrantError::InvalidGrant("refresh token already used"));
            }
            bump(&self.shared.counters.reuse_in_grace);
        } else if rotate {
            let successor = opaque_token();
            if let Some(record) = store.refresh.get_mut(presented) {
                record.rotated_at = Some(now);
            }
            store.refresh.insert(
                successor.clone(),
                RefreshRecord {
                    grant_id: Arc::clone(&grant_id),
                    expires_at: knobs
                        .refresh_ttl_ms
                        .map(|ms| now + Duration::from_millis(ms)),
                    rotated_at: None,
                },
            );
            if let Some(grant) = store.grant_mut(&grant_id) {
                grant.current_refresh = successor;
            }
        }
        let (access_token, record) = self.new_access_token(&knobs, now, record_template);
        store.access.insert(access_token.clone(), record);
        let current_refresh = match store.grant_mut(&grant_id) {
            Some(grant) => {
                grant.generation += 1;
                grant.current_refresh.clone()
            }
            None => presented.to_owned(),
        };
        drop(store);
        bump(&self.shared.counters.refresh_success);
        Ok(Issued {
            access_token,
            refresh_token: (!knobs.omit_refresh_token_on_refresh).then_some(current_refresh),
            scope,
            grant_id: Some(grant_id),
        })
    }

    /// The `client_credentials` grant for an authenticated client.
    pub(crate) fn client_credentials(&self, client: &MockClient, scope: Option<&str>) -> Issued {
        let knobs = self.knobs();
        let now = self.now(&knobs);
        let scope: Arc<str> = Arc::from(scope.unwrap_or(&client.default_scope));
        let client_id: Arc<str> = Arc::from(client.client_id.as_str());
        let (access_token, record) = self.new_access_token(
            &knobs,
            now,
            AccessRecord {
                grant_id: None,
                sub: Arc::clone(&client_id),
                client_id,
                scope: Arc::clone(&scope),
                expires_at: now + Duration::from_millis(knobs.access_ttl_ms),
            },
        );
        let mut store = self.write();
        store.maybe_sweep(now);
        store.access.insert(access_token.clone(), record);
        drop(store);
        bump(&self.shared.counters.client_credentials_success);
        Issued {
            access_token,
            refresh_token: None,
            scope,
            grant_id: None,
        }
    }

    /// Revokes a grant and all its tokens. Errors when no grant has this id; revoking an already
    /// revoked grant is fine.
    pub fn revoke_grant(&self, id: &str) -> Result<(), MockError> {
        let mut store = self.write();
        if store.grant(id).is_none() {
            return Err(MockError::UnknownGrant(id.to_owned()));
        }
        let revoked = store.revoke_grant(id);
        drop(store);
        if revoked {
            bump(&self.shared.counters.grants_revoked);
            tracing::debug!(grant = %id, "grant revoked");
        }
        Ok(())
    }

    /// RFC 7009 revocation of a token presented by `client_id`: a refresh token revokes its whole
    /// grant, an access token only itself. Tokens of other clients and unknown tokens are ignored.
    pub(crate) fn revoke_token(&self, client_id: &str, token: &str) {
        let mut store = self.write();
        if let Some(record) = store.refresh.get(token) {
            let grant_id = Arc::clone(&record.grant_id);
            let owned = store
                .grant(&grant_id)
                .is_some_and(|g| &*g.client_id == client_id);
            if owned && store.revoke_grant(&grant_id) {
                bump(&self.shared.counters.grants_revoked);
            }
        } else if store
            .access
            .get(token)
            .is_some_and(|a| &*a.client_id == client_id)
        {
            store.access.remove(token);
        }
    }

    /// Checks an access token presented to the API.
    pub(crate) fn check_access(&self, token: &str) -> Result<AccessInfo, AccessError> {
        let knobs = self.knobs();
        let now = self.now(&knobs);
        let store = self.read();
        let record = store.access.get(token).ok_or(AccessError::Unknown)?;
        if now >= record.expires_at {
            return Err(AccessError::Expired);
        }
        Ok(AccessInfo {
            sub: Arc::clone(&record.sub),
            client_id: Arc::clone(&record.client_id),
            scope: Arc::clone(&record.scope),
            grant_id: record.grant_id.clone(),
        })
    }

    /// A snapshot of the counters and grants.
    pub fn stats(&self) -> Stats {
        let knobs = self.knobs();
        let now = self.now(&knobs);
        let (grants, access_tokens_tracked) = {
            let store = self.read();
            let grants: Vec<GrantInfo> = store
                .grants
                .iter()
                .map(|grant| GrantInfo {
                    id: grant.id.to_string(),
                    client_id: grant.client_id.to_string(),
                    sub: grant.sub.to_string(),
                    scope: grant.scope.to_string(),
                    alive: grant.alive(now),
                    generation: grant.generation,
                    created_at_ms: grant.created_at.as_millis(),
                })
                .collect();
            (grants, store.access.len() as u64)
        };
        let c = &self.shared.counters;
        Stats {
            token_requests: load(&c.token_requests),
            refresh_calls: load(&c.refresh_calls),
            refresh_success: load(&c.refresh_success),
            client_credentials_calls: load(&c.client_credentials_calls),
            client_credentials_success: load(&c.client_credentials_success),
            reuse_detected: load(&c.reuse_detected),
            reuse_in_grace: load(&c.reuse_in_grace),
            grants_minted: load(&c.grants_minted),
            grants_revoked: load(&c.grants_revoked),
            invalid_grant: load(&c.invalid_grant),
            invalid_client: load(&c.invalid_client),
            faults_injected: load(&c.faults_injected),
            revocations: load(&c.revocations),
            device_authorizations: load(&c.device_authorizations),
            device_polls: load(&c.device_polls),
            authorizations: load(&c.authorizations),
            api_ok: load(&c.api_ok),
            api_unauthorized: load(&c.api_unauthorized),
            api_forbidden: load(&c.api_forbidden),
            active_grants: grants.iter().filter(|g| g.alive).count() as u64,
            access_tokens_tracked,
            grants,
        }
    }
}
