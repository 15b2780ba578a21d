//! The Keeper against the mock identity provider: single-flight, proactive refresh, backoff,
//! classification, compare-and-refresh and rotation safety.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use authkeeper_core::config::CredentialSettings;
use authkeeper_core::grant::{ClientAuth, Endpoint, GrantKind, OAuthClientConfig};
use authkeeper_core::policy::RefreshPolicy;
use authkeeper_core::store::{CredentialSummary, LeaseAttempt};
use authkeeper_core::{
    Clock, CredentialName, CredentialState, CredentialStatus, CredentialStore, ErrorClass, Event,
    ExpiryDefaults, ExposeSecret, Keeper, KeeperError, KeeperSettings, Lease, ManualClock,
    MemoryStore, Precondition, SharedClock, Store, StoreError, StoredCredential, SystemClock,
    Timestamp, TokenResponse, TokenSet, WriteOutcome,
};
use authkeeper_mock::{Knobs, MockConfig, MockIdp};
use tokio::sync::mpsc;

/// A credential name the tests know to be valid.
fn cred(name: &str) -> CredentialName {
    CredentialName::new(name).expect("valid name")
}

fn settings(idp: &MockIdp, grant: GrantKind, auth: ClientAuth, secret: &str) -> CredentialSettings {
    CredentialSettings {
        client: OAuthClientConfig {
            endpoint: Endpoint::TokenUrl(idp.token_url().parse().expect("url")),
            client_id: "mock-client".into(),
            client_secret: Some(authkeeper_core::secret::ClientSecret::from(secret)),
            auth,
            scopes: Vec::new(),
            audience: None,
            extra_params: Vec::new(),
            timeout: Duration::from_secs(5),
            proxy: None,
        },
        grant,
        policy: RefreshPolicy::default(),
        expiry: ExpiryDefaults::default(),
        heartbeat: true,
    }
}

async fn start_idp(clock: SharedClock, knobs: Knobs) -> MockIdp {
    MockIdp::start(MockConfig::default().with_clock(clock).with_knobs(knobs))
        .await
        .expect("mock idp starts")
}

fn knobs(access_ttl_ms: u64) -> Knobs {
    Knobs {
        access_ttl_ms,
        rotate_refresh_tokens: true,
        reuse_revokes_grant: true,
        ..Knobs::default()
    }
}

/// A Keeper over `store` with one refresh_token credential `api` of `idp` (basic auth).
fn api_keeper(
    idp: &MockIdp,
    store: Arc<dyn CredentialStore>,
    clock: SharedClock,
    sink: Option<Arc<dyn authkeeper_core::EventSink>>,
) -> Keeper {
    let mut builder = Keeper::builder(store, clock).credential(
        cred("api"),
        settings(
            idp,
            GrantKind::RefreshToken,
            ClientAuth::ClientSecretBasic,
            "mock-secret",
        ),
    );
    if let Some(sink) = sink {
        builder = builder.event_sink(sink);
    }
    builder.build().expect("keeper")
}

/// Mints a grant at the mock and stores it as credential `name`.
async fn import_grant(idp: &MockIdp, store: &dyn CredentialStore, name: &str, now: Timestamp) {
    let response = idp.mint_grant(None, None).expect("grant");
    let body = serde_json::to_vec(&response).expect("json");
    let tokens = TokenResponse::parse_tokens(&body)
        .expect("tokens")
        .into_token_set(now, &ExpiryDefaults::default());
    authkeeper_core::store::import(store, &cred(name), &tokens, now)
        .await
        .expect("put");
}

/// Collects events into a channel.
fn event_channel() -> (
    Arc<dyn authkeeper_core::EventSink>,
    mpsc::UnboundedReceiver<String>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let sink = move |event: &Event<'_>| {
        let kind = match event {
            Event::Refreshed { .. } => "refreshed",
            Event::RefreshFailed { class, .. } => class.as_str(),
            Event::NeedsReauth { .. } => "needs_reauth_event",
            Event::Issued { .. } => "issued",
            Event::Rejected { .. } => "rejected",
            _ => "other",
        };
        let _ = tx.send(kind.to_owned());
    };
    (Arc::new(sink), rx)
}

async fn next_event(rx: &mut mpsc::UnboundedReceiver<String>, wanted: &str) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(kind) = rx.recv().await {
            if kind == wanted {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {wanted} event within 10 s"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_tasks_share_one_refresh_per_expiry() {
    let clock = SystemClock::shared();
    let idp = start_idp(Arc::clone(&clock), knobs(2000)).await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    import_grant(&idp, &*store, "api", clock.now()).await;
    let keeper = api_keeper(&idp, store.clone(), Arc::clone(&clock), None);
    let heartbeat = keeper.spawn_heartbeat();
    let http = reqwest::Client::new();
    let worker_401s = Arc::new(AtomicU64::new(0));
    let requests = Arc::new(AtomicU64::new(0));
    let run_for = Duration::from_secs(8);
    let deadline = tokio::time::Instant::now() + run_for;
    let mut workers = Vec::new();
    for _ in 0..100 {
        let (keeper, http, api, worker_401s, requests) = (
            keeper.clone(),
            http.clone(),
            idp.api_url(),
            Arc::clone(&worker_401s),
            Arc::clone(&requests),
        );
        workers.push(tokio::spawn(async move {
            while tokio::time::Instant::now() < deadline {
                let token = keeper.token("api", Duration::ZERO).await.expect("token");
                let status = http
                    .get(&api)
                    .bearer_auth(token.secret().expose_secret())
                    .send()
                    .await
                    .expect("api")
                    .status();
                requests.fetch_add(1, Ordering::Relaxed);
                if status == 401 {
                    worker_401s.fetch_add(1, Ordering::Relaxed);
                    keeper
                        .rejected("api", token.generation())
                        .await
                        .expect("rejected");
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    for worker in workers {
        worker.await.expect("worker");
    }
    heartbeat.abort();
    let stats = idp.stats();
    let generation = store
        .load(&cred("api"))
        .await
        .expect("load")
        .expect("stored")
        .generation;
    assert!(requests.load(Ordering::Relaxed) > 1000, "workers ran");
    assert_eq!(
        worker_401s.load(Ordering::Relaxed),
        0,
        "no worker saw a 401"
    );
    assert_eq!(stats.api_unauthorized, 0);
    assert_eq!(
        stats.reuse_detected, 0,
        "no refresh token was redeemed twice"
    );
    assert_eq!(stats.grants_revoked, 0, "grant alive");
    assert_eq!(
        stats.refresh_calls,
        generation - 1,
        "every token-endpoint call became exactly one generation"
    );
    // 8 s of 2 s tokens refreshed at ~80%: about 5 expiries, never more than one call each.
    assert!(
        (4..=7).contains(&stats.refresh_calls),
        "refresh calls: {}",
        stats.refresh_calls
    );
}

#[tokio::test]
async fn refreshes_proactively_when_nobody_asks() {
    let clock = ManualClock::starting_now();
    let shared: SharedClock = clock.clone();
    let idp = start_idp(Arc::clone(&shared), knobs(100_000)).await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    import_grant(&idp, &*store, "api", clock.now()).await;
    let (sink, mut events) = event_channel();
    let keeper = api_keeper(&idp, store.clone(), shared, Some(sink));
    assert!(keeper.warm_up().await.is_empty());
    let heartbeat = keeper.spawn_heartbeat();
    clock.advance(Duration::from_secs(50));
    tokio::task::yield_now().await;
    assert_eq!(idp.stats().refresh_calls, 0, "not due at 50%");
    clock.advance(Duration::from_secs(31));
    next_event(&mut events, "refreshed").await;
    assert_eq!(idp.stats().refresh_calls, 1);
    assert_eq!(
        store
            .load(&cred("api"))
            .await
            .expect("load")
            .expect("stored")
            .generation,
        2
    );
    heartbeat.abort();
}

#[tokio::test]
async fn transient_failures_back_off_and_serve_the_cached_token_while_valid() {
    let clock = ManualClock::starting_now();
    let shared: SharedClock = clock.clone();
    let idp = start_idp(Arc::clone(&shared), knobs(100_000)).await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    import_grant(&idp, &*store, "api", clock.now()).await;
    let keeper = api_keeper(&idp, store.clone(), shared, None);
    let first = keeper.token("api", Duration::ZERO).await.expect("token");
    idp.set_knobs(Knobs {
        fault_503_rate: 1.0,
        retry_after_secs: Some(30),
        ..knobs(100_000)
    })
    .expect("knobs");
    // Due but valid: a caller needing 10 more seconds gets the cached token despite the outage.
    clock.advance(Duration::from_secs(85));
    let served = keeper
        .token("api", Duration::from_secs(12))
        .await
        .expect("cached token while valid");
    assert_eq!(served.generation(), first.generation());
    let status = keeper.status("api").expect("status");
    assert_eq!(status.state, CredentialState::BackingOff);
    assert!(
        status.next_attempt_at.expect("next attempt") >= clock.now() + Duration::from_secs(30),
        "Retry-After honoured"
    );
    let calls = idp.stats().token_requests;
    let _ = keeper
        .token("api", Duration::from_secs(12))
        .await
        .expect("still cached");
    assert_eq!(idp.stats().token_requests, calls, "no call during backoff");
    // Expired while backing off: a fast, clear error naming the cause and the next attempt.
    clock.advance(Duration::from_secs(20));
    let error = keeper
        .token("api", Duration::ZERO)
        .await
        .expect_err("expired");
    assert_eq!(error.class(), ErrorClass::Transient);
    let message = error.to_string();
    assert!(
        message.contains("503") && message.contains("next attempt"),
        "{message}"
    );
    // The endpoint recovers: the next attempt after the backoff succeeds.
    idp.set_knobs(knobs(100_000)).expect("knobs");
    clock.advance(Duration::from_secs(400));
    let fresh = keeper
        .token("api", Duration::ZERO)
        .await
        .expect("recovered");
    assert_eq!(fresh.generation(), first.generation() + 1);
    assert_eq!(
        keeper.status("api").expect("status").state,
        CredentialState::Valid
    );
}

#[tokio::test]
async fn revoked_grant_needs_reauth_without_further_calls() {
    let clock = ManualClock::starting_now();
    let shared: SharedClock = clock.clone();
    let idp = start_idp(Arc::clone(&shared), knobs(10_000)).await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let response = idp.mint_grant(None, None).expect("grant");
    let grant_id = response["grant_id"].as_str().expect("grant id").to_owned();
    let body = serde_json::to_vec(&response).expect("json");
    let tokens = TokenResponse::parse_tokens(&body)
        .expect("tokens")
        .into_token_set(clock.now(), &ExpiryDefaults::default());
    authkeeper_core::store::import(&*store, &cred("api"), &tokens, clock.now())
        .await
        .expect("put");
    let (sink, mut events) = event_channel();
    let keeper = api_keeper(&idp, store.clone(), shared, Some(sink));
    idp.revoke_grant(&grant_id).expect("revoke");
    clock.advance(Duration::from_secs(11));
    let error = keeper
        .token("api", Duration::ZERO)
        .await
        .expect_err("dead grant");
    assert_eq!(error.class(), ErrorClass::NeedsReauth, "{error}");
    next_event(&mut events, "needs_reauth_event").await;
    let calls = idp.stats().token_requests;
    let again = keeper
        .token("api", Duration::ZERO)
        .await
        .expect_err("still dead");
    assert!(matches!(again, KeeperError::NeedsReauth { .. }), "{again}");
    assert_eq!(idp.stats().token_requests, calls, "refresh is not retried");
    let stored = store
        .load(&cred("api"))
        .await
        .expect("load")
        .expect("stored");
    assert_eq!(
        stored.status.state,
        CredentialState::NeedsReauth,
        "other processes see it"
    );
    assert_eq!(
        stored.tokens.access_token.expose_secret(),
        tokens.access_token.expose_secret(),
        "tokens kept"
    );
}

#[tokio::test]
async fn wrong_client_secret_is_a_configuration_error() {
    let clock = SystemClock::shared();
    let idp = start_idp(Arc::clone(&clock), knobs(60_000)).await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let keeper = Keeper::builder(store, clock)
        .credential(
            cred("cc"),
            settings(
                &idp,
                GrantKind::ClientCredentials,
                ClientAuth::ClientSecretPost,
                "PLANTED-WRONG-SECRET",
            ),
        )
        .build()
        .expect("keeper");
    let error = keeper
        .token("cc", Duration::ZERO)
        .await
        .expect_err("bad secret");
    assert_eq!(error.class(), ErrorClass::Configuration, "{error}");
    assert!(error.to_string().contains("invalid_client"), "{error}");
    assert!(
        !error.to_string().contains("PLANTED"),
        "secret not echoed: {error}"
    );
}

#[tokio::test]
async fn client_credentials_are_issued_on_demand_with_basic_and_post() {
    let clock = SystemClock::shared();
    let idp = start_idp(Arc::clone(&clock), knobs(60_000)).await;
    for auth in [ClientAuth::ClientSecretBasic, ClientAuth::ClientSecretPost] {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let keeper = Keeper::builder(store.clone(), Arc::clone(&clock))
            .credential(
                cred("cc"),
                settings(&idp, GrantKind::ClientCredentials, auth, "mock-secret"),
            )
            .build()
            .expect("keeper");
        let token = keeper
            .token("cc", Duration::from_secs(30))
            .await
            .expect("issued");
        assert_eq!(token.generation(), 1);
        let status = reqwest::Client::new()
            .get(idp.api_url())
            .bearer_auth(token.secret().expose_secret())
            .send()
            .await
            .expect("api")
            .status();
        assert_eq!(status, 200);
    }
    assert_eq!(idp.stats().client_credentials_calls, 2);
}

#[tokio::test]
async fn compare_and_refresh_refreshes_once_per_rejected_generation() {
    let clock = SystemClock::shared();
    let idp = start_idp(Arc::clone(&clock), knobs(600_000)).await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    import_grant(&idp, &*store, "api", clock.now()).await;
    let keeper = api_keeper(&idp, store.clone(), clock, None);
    let first = keeper.token("api", Duration::ZERO).await.expect("token");
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let keeper = keeper.clone();
        let generation = first.generation();
        tasks.push(tokio::spawn(async move {
            keeper.rejected("api", generation).await
        }));
    }
    for task in tasks {
        let token = task.await.expect("task").expect("newer token");
        assert_eq!(token.generation(), first.generation() + 1);
    }
    assert_eq!(
        idp.stats().refresh_calls,
        1,
        "20 reports of one generation: one refresh"
    );
    let stale = keeper
        .rejected("api", first.generation())
        .await
        .expect("newer token");
    assert_eq!(stale.generation(), first.generation() + 1);
    assert_eq!(
        idp.stats().refresh_calls,
        1,
        "an old generation's rejection does not refresh"
    );
}

#[tokio::test]
async fn min_ttl_beyond_the_lifetime_is_refused_without_refreshing() {
    let clock = SystemClock::shared();
    let idp = start_idp(Arc::clone(&clock), knobs(60_000)).await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    import_grant(&idp, &*store, "api", clock.now()).await;
    let keeper = api_keeper(&idp, store, clock, None);
    let error = keeper
        .token("api", Duration::from_secs(120))
        .await
        .expect_err("too long");
    assert!(
        matches!(error, KeeperError::MinTtlTooLong { .. }),
        "{error}"
    );
    assert_eq!(idp.stats().refresh_calls, 0);
    assert!(matches!(
        keeper.token("nope", Duration::ZERO).await,
        Err(KeeperError::UnknownCredential(_))
    ));
}

/// A store whose conditional writes always fail, to check rotation safety.
#[derive(Debug, Default)]
struct UnwritableStore {
    inner: MemoryStore,
}

#[async_trait]
impl CredentialStore for UnwritableStore {
    async fn load(&self, name: &CredentialName) -> Result<Option<StoredCredential>, StoreError> {
        self.inner.load(name).await
    }
    async fn list(&self) -> Result<Vec<CredentialSummary>, StoreError> {
        self.inner.list().await
    }
    async fn put(
        &self,
        name: &CredentialName,
        precondition: Precondition,
        tokens: &TokenSet,
        now: Timestamp,
    ) -> Result<WriteOutcome, StoreError> {
        if precondition == Precondition::None {
            return self.inner.put(name, precondition, tokens, now).await;
        }
        Err(StoreError::Unavailable {
            message: "disk full".into(),
            source: None,
        })
    }
    async fn set_status(
        &self,
        name: &CredentialName,
        generation: u64,
        status: &CredentialStatus,
    ) -> Result<bool, StoreError> {
        self.inner.set_status(name, generation, status).await
    }
    async fn delete(&self, name: &CredentialName) -> Result<bool, StoreError> {
        self.inner.delete(name).await
    }
    async fn try_acquire_lease(
        &self,
        name: &CredentialName,
        owner: &str,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<LeaseAttempt, StoreError> {
        self.inner.try_acquire_lease(name, owner, now, ttl).await
    }
    async fn release_lease(&self, lease: Lease) -> Result<(), StoreError> {
        self.inner.release_lease(lease).await
    }
    async fn mark_in_flight(
        &self,
        lease: &Lease,
        generation: u64,
    ) -> Result<Option<u64>, StoreError> {
        self.inner.mark_in_flight(lease, generation).await
    }
    async fn renew_lease(
        &self,
        lease: &Lease,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<Option<Timestamp>, StoreError> {
        self.inner.renew_lease(lease, now, ttl).await
    }
}

#[tokio::test]
async fn a_refreshed_token_is_never_handed_out_before_it_is_stored() {
    let clock = ManualClock::starting_now();
    let shared: SharedClock = clock.clone();
    let idp = start_idp(Arc::clone(&shared), knobs(10_000)).await;
    let store = Arc::new(UnwritableStore::default());
    import_grant(&idp, &*store, "api", clock.now()).await;
    let keeper = api_keeper(&idp, store.clone(), shared, None);
    clock.advance(Duration::from_secs(11));
    let error = keeper
        .token("api", Duration::ZERO)
        .await
        .expect_err("not durable, not served");
    assert!(matches!(error, KeeperError::Store { .. }), "{error}");
    assert_eq!(idp.stats().refresh_success, 1, "the IdP did answer");
}

#[tokio::test]
async fn a_provider_clock_ten_minutes_ahead_does_not_shift_expiry() {
    let clock = ManualClock::starting_now();
    let shared: SharedClock = clock.clone();
    let skewed = Knobs {
        clock_offset_ms: 600_000,
        omit_expires_in: true,
        jwt_access_tokens: true,
        ..knobs(100_000)
    };
    let idp = start_idp(Arc::clone(&shared), skewed).await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    import_grant(&idp, &*store, "api", clock.now()).await;
    let keeper = api_keeper(&idp, store.clone(), shared, None);
    let first = keeper.token("api", Duration::ZERO).await.expect("token");
    let lifetime = first.expires_at().saturating_since(clock.now());
    assert!(
        lifetime <= Duration::from_secs(100) && lifetime >= Duration::from_secs(99),
        "expiry from the JWT lifetime, not the provider's clock: {lifetime:?}"
    );
    clock.advance(Duration::from_secs(90));
    let second = keeper
        .token("api", Duration::from_secs(15))
        .await
        .expect("refreshed");
    assert_eq!(second.generation(), first.generation() + 1);
    let status = reqwest::Client::new()
        .get(idp.api_url())
        .bearer_auth(second.secret().expose_secret())
        .send()
        .await
        .expect("api")
        .status();
    assert_eq!(status, 200);
}

/// A holder killed between the provider's rotation and its write leaves its in-flight marker.
/// The next holder retries with the stored refresh token: refused (no reuse grace), the
/// credential goes to needs_reauth with reason `lost_in_crash` and a `LostInCrash` event — never
/// silently; inside the provider's reuse grace the retry succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_lost_in_a_crash_is_reported_and_recovered_within_the_grace() {
    for grace_ms in [0, 10_000] {
        let clock = SystemClock::shared();
        let knobs = Knobs {
            reuse_grace_ms: grace_ms,
            ..knobs(3_600_000)
        };
        let idp = start_idp(Arc::clone(&clock), knobs).await;
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        import_grant(&idp, &*store, "api", clock.now()).await;
        // The doomed holder: takes the lease, marks the refresh in flight, has the provider
        // rotate the refresh token, and dies before writing (no release).
        let lease = match store
            .try_acquire_lease(
                &cred("api"),
                "doomed",
                clock.now(),
                Duration::from_millis(1),
            )
            .await
            .expect("lease")
        {
            LeaseAttempt::Acquired(lease) => lease,
            LeaseAttempt::Busy { .. } => panic!("lease busy"),
        };
        assert_eq!(store.mark_in_flight(&lease, 1).await.expect("mark"), None);
        let stored = store
            .load(&cred("api"))
            .await
            .expect("load")
            .expect("stored");
        let refresh_token = stored
            .tokens
            .refresh_token
            .as_ref()
            .expect("refresh token")
            .expose_secret()
            .to_owned();
        let rotated = reqwest::Client::new()
            .post(idp.token_url())
            .basic_auth("mock-client", Some("mock-secret"))
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token.as_str()),
            ])
            .send()
            .await
            .expect("rotate");
        assert!(rotated.status().is_success());
        drop(lease);
        tokio::time::sleep(Duration::from_millis(20)).await;

        let lost = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&lost);
        let sink = move |event: &Event<'_>| {
            if matches!(event, Event::LostInCrash { generation: 1, .. }) {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        };
        let keeper = api_keeper(
            &idp,
            store.clone(),
            Arc::clone(&clock),
            Some(Arc::new(sink)),
        );
        let result = keeper.rejected("api", 1).await;
        let stored = store
            .load(&cred("api"))
            .await
            .expect("load")
            .expect("stored");
        if grace_ms == 0 {
            match result {
                Err(KeeperError::NeedsReauth { reason, .. }) => {
                    assert!(reason.starts_with("lost_in_crash"), "{reason}")
                }
                other => panic!("expected needs_reauth (lost_in_crash), got {other:?}"),
            }
            assert_eq!(lost.load(Ordering::Relaxed), 1, "LostInCrash emitted once");
            assert_eq!(stored.status.state, CredentialState::NeedsReauth);
            let reason = stored.status.reason.unwrap_or_default();
            assert!(reason.starts_with("lost_in_crash: "), "{reason}");
            assert_eq!(idp.stats().reuse_detected, 1);
        } else {
            let token = result.expect("recovered within the grace");
            assert_eq!(token.generation(), 2);
            assert_eq!(lost.load(Ordering::Relaxed), 0);
            assert_eq!(stored.status.state, CredentialState::Valid);
            assert_eq!(idp.stats().reuse_in_grace, 1);
            assert_eq!(idp.stats().grants_revoked, 0);
        }
    }
}

/// `Keeper::reload` installs a generation another process stored, without refreshing.
#[tokio::test]
async fn reload_installs_a_newer_stored_generation() {
    let clock = SystemClock::shared();
    let idp = start_idp(Arc::clone(&clock), knobs(3_600_000)).await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    import_grant(&idp, &*store, "api", clock.now()).await;
    let keeper = api_keeper(&idp, store.clone(), Arc::clone(&clock), None);
    assert_eq!(
        keeper
            .token("api", Duration::ZERO)
            .await
            .expect("token")
            .generation(),
        1
    );
    import_grant(&idp, &*store, "api", clock.now()).await;
    assert_eq!(
        keeper
            .cached_token("api", Duration::ZERO)
            .map(|t| t.generation()),
        Some(1)
    );
    keeper.reload("api").await.expect("reload");
    assert_eq!(
        keeper
            .cached_token("api", Duration::ZERO)
            .map(|t| t.generation()),
        Some(2)
    );
    assert!(keeper.reload_all().await.is_empty());
    assert!(matches!(
        keeper.reload("nope").await,
        Err(KeeperError::UnknownCredential(_))
    ));
    assert_eq!(idp.stats().refresh_calls, 0, "reload never refreshes");
}

/// Two Keepers on one store, a lease far shorter than the provider's answer time: the holder
/// renews its lease while the token request runs, so the other never takes it over and redeems
/// the same (rotating) refresh token a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_renews_its_lease_while_a_slow_token_request_runs() {
    let clock = SystemClock::shared();
    let slow = Knobs {
        token_latency_ms: 1_200,
        ..knobs(60_000)
    };
    let idp = start_idp(Arc::clone(&clock), slow).await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    import_grant(
        &idp,
        &*store,
        "api",
        clock.now() - Duration::from_secs(3_600),
    )
    .await;
    let short_lease = KeeperSettings {
        lease_ttl: Duration::from_millis(300),
        lease_ttl_floor: false,
        background_refresh: false,
        ..KeeperSettings::default()
    };
    let keeper = |store: Arc<dyn Store>| {
        Keeper::builder(store, Arc::clone(&clock))
            .credential(
                cred("api"),
                settings(
                    &idp,
                    GrantKind::RefreshToken,
                    ClientAuth::ClientSecretBasic,
                    "mock-secret",
                ),
            )
            .settings(short_lease.clone())
            .build()
            .expect("keeper")
    };
    let (first, second) = (keeper(Arc::clone(&store)), keeper(Arc::clone(&store)));
    let (a, b) = tokio::join!(
        first.token("api", Duration::ZERO),
        second.token("api", Duration::ZERO)
    );
    let (a, b) = (a.expect("first"), b.expect("second"));
    assert_eq!(a.generation(), b.generation(), "one refresh, one token");
    assert_eq!(a.secret().expose_secret(), b.secret().expose_secret());
    let stats = idp.stats();
    assert_eq!(stats.refresh_calls, 1, "{stats:?}");
    assert_eq!(stats.reuse_detected, 0, "{stats:?}");
}

/// A rejection of a generation that was never issued forces no refresh (any client could make
/// the broker hammer the provider otherwise); one stored by another process meanwhile is found.
#[tokio::test]
async fn a_rejection_of_a_future_generation_is_refused_without_a_refresh() {
    let clock = SystemClock::shared();
    let idp = start_idp(Arc::clone(&clock), knobs(60_000)).await;
    let store: Arc<dyn CredentialStore> = Arc::new(MemoryStore::new());
    import_grant(&idp, &*store, "api", clock.now()).await;
    let keeper = api_keeper(&idp, Arc::clone(&store), Arc::clone(&clock), None);
    let current = keeper.token("api", Duration::ZERO).await.expect("token");
    assert_eq!(current.generation(), 1);
    let error = keeper.rejected("api", 99).await.expect_err("never issued");
    assert!(
        matches!(
            error,
            KeeperError::UnknownGeneration {
                reported: 99,
                current: 1,
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(idp.stats().refresh_calls, 0);
    // Another process stores generation 2: reporting it rejected is legitimate.
    let other = api_keeper(&idp, Arc::clone(&store), Arc::clone(&clock), None);
    other.rejected("api", 1).await.expect("refreshed elsewhere");
    let token = keeper
        .rejected("api", 2)
        .await
        .expect("refresh of generation 2");
    assert_eq!(token.generation(), 3);
    assert_eq!(idp.stats().refresh_calls, 2);
}

/// A token source (what renews a `grant = "session"` credential) counts its calls.
#[derive(Debug, Default)]
struct CountingSource {
    calls: AtomicU64,
}

#[async_trait]
impl authkeeper_core::source::TokenSource for CountingSource {
    async fn fetch(
        &self,
        _current: Option<&TokenSet>,
        _now: Timestamp,
    ) -> Result<TokenResponse, authkeeper_core::error::RefreshError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let body = format!(
            r#"{{"access_token":"session-token-{n}","token_type":"Bearer","expires_in":60}}"#
        );
        Ok(TokenResponse::parse_tokens(body.as_bytes()).expect("tokens"))
    }
}

/// A session-backed credential needs nothing stored: its first token comes from the source, and
/// 40 callers on two Keepers sharing a store cause one fetch per expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_source_is_called_once_per_expiry_across_keepers() {
    let clock = ManualClock::starting_now();
    let shared: SharedClock = clock.clone();
    let store: Arc<dyn CredentialStore> = Arc::new(MemoryStore::new());
    let source = Arc::new(CountingSource::default());
    let settings = CredentialSettings {
        client: OAuthClientConfig {
            endpoint: Endpoint::TokenUrl("session://portal/alice".parse().expect("url")),
            client_id: String::new(),
            client_secret: None,
            auth: ClientAuth::None,
            scopes: Vec::new(),
            audience: None,
            extra_params: Vec::new(),
            timeout: Duration::from_secs(5),
            proxy: None,
        },
        grant: GrantKind::Session,
        policy: RefreshPolicy::default(),
        expiry: ExpiryDefaults::default(),
        heartbeat: false,
    };
    let keeper = || {
        Keeper::builder(Arc::clone(&store), Arc::clone(&shared))
            .settings(KeeperSettings {
                background_refresh: false,
                ..KeeperSettings::default()
            })
            .credential(cred("portal-api"), settings.clone())
            .token_source(cred("portal-api"), source.clone())
            .build()
            .expect("keeper")
    };
    let (a, b) = (keeper(), keeper());
    for round in 1..=3u64 {
        let mut calls = Vec::new();
        for i in 0..40 {
            let keeper = if i % 2 == 0 { a.clone() } else { b.clone() };
            calls.push(tokio::spawn(async move {
                keeper.token("portal-api", Duration::ZERO).await
            }));
        }
        for call in calls {
            let token = call.await.expect("task").expect("token");
            assert_eq!(
                token.secret().expose_secret(),
                format!("session-token-{round}")
            );
        }
        assert_eq!(source.calls.load(Ordering::SeqCst), round);
        clock.advance(Duration::from_secs(61));
    }
}

#[tokio::test]
async fn a_token_that_expired_in_flight_moves_the_hand_out_window_earlier() {
    let clock = ManualClock::starting_now();
    let shared: SharedClock = clock.clone();
    let idp = start_idp(Arc::clone(&shared), knobs(10_000)).await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    import_grant(&idp, &*store, "api", clock.now()).await;
    let keeper = api_keeper(&idp, store.clone(), shared, None);
    let first = keeper.token("api", Duration::ZERO).await.expect("token");
    // 10 s tokens are handed out until 1 s (the skew margin) before expiry. This one was used
    // after that point: the API refused it, the report comes at 9.5 s.
    clock.advance(Duration::from_millis(9_500));
    let second = keeper
        .rejected("api", first.generation())
        .await
        .expect("refreshed");
    assert_eq!(second.generation(), 2);
    // A second late report of the same generation (another worker) doubles the margin, 200 ms.
    let again = keeper.rejected("api", 1).await.expect("current");
    assert_eq!(again.generation(), 2);
    assert_eq!(
        idp.stats().refresh_calls,
        1,
        "late reports are no refreshes"
    );
    // Generation 2 (issued at 9.5 s, expiring at 19.5 s) is no longer handed out at 18.35 s,
    // where the plain window (until 18.5 s) still would.
    clock.advance(Duration::from_millis(8_850));
    assert!(keeper.cached_token("api", Duration::ZERO).is_none());
    let third = keeper.token("api", Duration::ZERO).await.expect("token");
    assert_eq!(third.generation(), 3);
    assert_eq!(
        idp.stats().refresh_calls,
        2,
        "still one call per generation"
    );
}

#[tokio::test]
async fn a_rejection_answers_with_a_token_that_is_not_about_to_expire() {
    let clock = ManualClock::starting_now();
    let shared: SharedClock = clock.clone();
    let idp = start_idp(Arc::clone(&shared), knobs(10_000)).await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    import_grant(&idp, &*store, "api", clock.now()).await;
    let keeper = api_keeper(&idp, store.clone(), shared, None);
    let first = keeper.token("api", Duration::ZERO).await.expect("token");
    clock.advance(Duration::from_millis(3_000));
    let second = keeper
        .rejected("api", first.generation())
        .await
        .expect("new");
    assert_eq!(second.generation(), 2);
    // Generation 2 (issued at 3 s) is at the end of its window at 12.5 s when a late report
    // of generation 1 arrives: answering with generation 2 would fail the retry again.
    clock.advance(Duration::from_millis(9_500));
    let third = keeper.rejected("api", 1).await.expect("refreshed");
    assert_eq!(third.generation(), 3);
    assert_eq!(idp.stats().refresh_calls, 2);
}
