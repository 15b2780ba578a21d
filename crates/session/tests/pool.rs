//! The session pool over real stores: exclusive leases under 200 concurrent requests (embedded
//! SQLite with two pool instances on one file, and Redis with two connections, as two replicas
//! would), reclaiming expired leases, error scores retiring sessions, slots and logins.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use authkeeper_core::{ManualClock, MemoryStore, SharedClock, Store, SystemClock, Timestamp};
use authkeeper_session::login::{LoginError, LoginRequest, SessionLogin};
use authkeeper_session::pool::LeaseRequest;
use authkeeper_session::{
    LeaseError, Outcome, SessionPool, SessionState, SiteConfig, StateCookie, StorageState,
};
use authkeeper_store::{Keyring, SealKey, SqliteStore};
use zeroize::Zeroizing;

use crate::redis_server::RedisServer;

/// A site with `accounts` accounts (a0, a1, ...) and the given extra TOML.
pub fn site(accounts: usize, extra: &str) -> SiteConfig {
    let accounts: Vec<String> = (0..accounts)
        .map(|i| format!("{{ name = \"a{i}\", username = \"user{i}\" }}"))
        .collect();
    let text = format!(
        "origin = \"http://127.0.0.1:9\"\naccounts = [{}]\n{extra}",
        accounts.join(", ")
    );
    toml::from_str(&text).expect("site config")
}

fn state_for(account: &str) -> StorageState {
    StorageState {
        cookies: vec![{
            let mut cookie = StateCookie::new("sid", format!("secret-{account}"), "127.0.0.1", "/");
            cookie.http_only = true;
            cookie
        }],
        origins: Vec::new(),
        extra: Default::default(),
    }
}

fn pool(store: Arc<dyn Store>, clock: SharedClock, config: SiteConfig) -> SessionPool {
    SessionPool::new(
        store,
        clock,
        [("portal".parse().expect("site name"), config)],
    )
    .expect("pool")
}

async fn import_all(pool: &SessionPool, accounts: usize) {
    for i in 0..accounts {
        let account = format!("a{i}");
        pool.import("portal", &account, state_for(&account))
            .await
            .expect("import");
    }
}

fn sqlite_pair(dir: &tempfile::TempDir) -> (Arc<dyn Store>, Arc<dyn Store>) {
    let path = dir.path().join("sessions.db");
    let key = SealKey::new(Zeroizing::new([7u8; 32]));
    let a = SqliteStore::open(&path, Keyring::new(key.clone())).expect("open a");
    let b = SqliteStore::open(&path, Keyring::new(key)).expect("open b");
    (Arc::new(a), Arc::new(b))
}

/// 200 workers on two pool instances sharing one store lease, hold and release 10 sessions;
/// a shared set proves no session is ever held by two workers at once.
async fn no_double_lease(a: Arc<dyn Store>, b: Arc<dyn Store>) {
    let clock = SystemClock::shared();
    // No usage limit: 600 leases over 10 sessions would retire them all at the default 50.
    let config = site(10, "[pool]\nmax_usage = 0\n");
    let pools = [
        Arc::new(pool(a, clock.clone(), config.clone())),
        Arc::new(pool(b, clock, config)),
    ];
    import_all(&pools[0], 10).await;

    let held: Arc<Mutex<HashSet<String>>> = Arc::default();
    let granted = Arc::new(AtomicUsize::new(0));
    let exhausted = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for worker in 0..200 {
        let pool = pools[worker % 2].clone();
        let held = held.clone();
        let granted = granted.clone();
        let exhausted = exhausted.clone();
        workers.push(tokio::spawn(async move {
            let mut mine = 0;
            while mine < 3 {
                let request = LeaseRequest {
                    holder: format!("w{worker}"),
                    ..LeaseRequest::default()
                };
                let lease = match pool.lease("portal", &request).await {
                    Ok(lease) => lease,
                    Err(LeaseError::Exhausted { .. } | LeaseError::Contention(_)) => {
                        // As a worker honouring Retry-After would: back off, don't spin.
                        exhausted.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(2 + (worker as u64 % 8))).await;
                        continue;
                    }
                    Err(error) => panic!("lease failed: {error}"),
                };
                assert!(
                    held.lock().unwrap().insert(lease.session_id.to_string()),
                    "session {} leased twice at once",
                    lease.session_id
                );
                assert_eq!(
                    lease.storage_state,
                    state_for(&lease.account),
                    "handed out with its own state"
                );
                for _ in 0..3 {
                    tokio::task::yield_now().await;
                }
                assert!(held.lock().unwrap().remove(lease.session_id.as_str()));
                pool.release(&lease.lease_id, Outcome::Ok, None)
                    .await
                    .expect("release");
                granted.fetch_add(1, Ordering::Relaxed);
                mine += 1;
            }
        }));
    }
    for worker in workers {
        worker.await.expect("worker");
    }
    assert_eq!(granted.load(Ordering::Relaxed), 600);
    let sessions = pools[1].list(Some("portal")).await.expect("list");
    assert_eq!(sessions.len(), 10);
    let uses: u32 = sessions.iter().map(|s| s.usage_count).sum();
    assert_eq!(uses, 600, "every grant counted once");
    assert!(
        sessions
            .iter()
            .all(|s| s.leased_by.is_none() && s.state == SessionState::Active)
    );
    println!(
        "200 workers x 3 leases over 10 sessions: 600 grants, {} refusals (all busy), 0 double leases",
        exhausted.load(Ordering::Relaxed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_workers_never_share_a_session_on_sqlite() {
    let dir = authkeeper_testkit::temp_dir();
    let (a, b) = sqlite_pair(&dir);
    no_double_lease(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_workers_never_share_a_session_on_redis() {
    let redis = RedisServer::start();
    let key = SealKey::new(Zeroizing::new([9u8; 32]));
    let connect = || async {
        let store = authkeeper_store::RedisStore::connect(
            &redis.url(),
            "pooltest:",
            Keyring::new(key.clone()),
        )
        .await
        .expect("redis store");
        Arc::new(store) as Arc<dyn Store>
    };
    let (a, b) = (connect().await, connect().await);
    no_double_lease(a, b).await;
}

#[tokio::test]
async fn expired_leases_are_reclaimed_and_the_old_holder_loses_it() {
    let clock = ManualClock::new(Timestamp::from_secs(1_700_000_000));
    let pool = pool(Arc::new(MemoryStore::new()), clock.clone(), site(1, ""));
    import_all(&pool, 1).await;
    let request = LeaseRequest {
        lease_ttl: Some(Duration::from_secs(5)),
        holder: "slow".into(),
        ..Default::default()
    };
    let first = pool.lease("portal", &request).await.unwrap();
    assert!(matches!(
        pool.lease("portal", &request).await,
        Err(LeaseError::Exhausted {
            retry_after: Some(_),
            ..
        })
    ));

    // A heartbeat inside the TTL extends it; one that names no TTL renews by the lease's own
    // (5 s), not the site's default (5 min).
    clock.advance(Duration::from_secs(4));
    let renewed = pool.heartbeat(&first.lease_id, None).await.unwrap();
    assert_eq!(
        renewed,
        authkeeper_core::Clock::now(&*clock) + Duration::from_secs(5)
    );
    clock.advance(Duration::from_secs(4));
    assert_eq!(
        pool.run_maintenance().await.reclaimed,
        0,
        "renewed lease is not reclaimed"
    );

    clock.advance(Duration::from_secs(2));
    let report = pool.run_maintenance().await;
    assert_eq!(report.reclaimed, 1);
    assert!(matches!(
        pool.heartbeat(&first.lease_id, None).await,
        Err(LeaseError::LeaseLost(_))
    ));
    assert!(matches!(
        pool.release(&first.lease_id, Outcome::Ok, None).await,
        Err(LeaseError::LeaseLost(_))
    ));

    // An expired lease nobody reclaimed yet is handed to the next worker too.
    let second = pool.lease("portal", &request).await.unwrap();
    clock.advance(Duration::from_secs(6));
    let third = pool.lease("portal", &request).await.unwrap();
    assert_eq!(second.session_id, third.session_id);
    assert!(matches!(
        pool.release(&second.lease_id, Outcome::Ok, None).await,
        Err(LeaseError::LeaseLost(_))
    ));
    pool.release(&third.lease_id, Outcome::Ok, None)
        .await
        .unwrap();
}

#[tokio::test]
async fn error_scores_and_usage_retire_sessions_as_configured() {
    let clock = ManualClock::new(Timestamp::from_secs(1_700_000_000));
    let pool = pool(
        Arc::new(MemoryStore::new()),
        clock.clone(),
        site(2, "[pool]\nmax_usage = 4\n"),
    );
    import_all(&pool, 2).await;
    let only = |account: &str| LeaseRequest {
        account: Some(account.into()),
        holder: "t".into(),
        ..Default::default()
    };

    // a0: error, error, ok (score 1.5), error (2.5), error (3.5 ≥ 3) → retired.
    for (outcome, expect) in [
        (Outcome::Error, SessionState::Active),
        (Outcome::Error, SessionState::Active),
        (Outcome::Ok, SessionState::Active),
        (Outcome::Error, SessionState::Retired),
    ] {
        let lease = pool.lease("portal", &only("a0")).await.unwrap();
        let summary = pool.release(&lease.lease_id, outcome, None).await.unwrap();
        assert_eq!(summary.state, expect, "{summary:?}");
    }
    // The 4th lease hit max_usage = 4 as well; either way a0 is gone and has no login.
    assert!(matches!(
        pool.lease("portal", &only("a0")).await,
        Err(LeaseError::Exhausted { .. })
    ));

    // a1: blocked retires at once (blocked_score_increment = 3).
    let lease = pool.lease("portal", &only("a1")).await.unwrap();
    let summary = pool
        .release(&lease.lease_id, Outcome::Blocked, None)
        .await
        .unwrap();
    assert_eq!(summary.state, SessionState::Retired);
    assert_eq!(summary.reason.as_deref(), Some("max_error_score"));
    assert!(matches!(
        pool.lease("portal", &LeaseRequest::default()).await,
        Err(LeaseError::Exhausted { .. })
    ));
}

/// A login that hands out a numbered state and counts calls.
#[derive(Debug, Default)]
struct CountingLogin {
    calls: AtomicUsize,
    fail: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl SessionLogin for CountingLogin {
    async fn login(&self, request: &LoginRequest<'_>) -> Result<StorageState, LoginError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::task::yield_now().await;
        if self.fail.load(Ordering::SeqCst) {
            return Err(LoginError::Timeout(Duration::from_secs(1)));
        }
        Ok(state_for(&request.account.name))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_created_by_login_once_per_slot_and_relogged_after_logged_out() {
    let clock = ManualClock::new(Timestamp::from_secs(1_700_000_000));
    let login = Arc::new(CountingLogin::default());
    let config = site(
        2,
        "[pool]\nmax_sessions_per_account = 2\nretire_on_logged_out = false\n",
    );
    let pool = Arc::new(
        pool(Arc::new(MemoryStore::new()), clock.clone(), config)
            .with_login("portal", login.clone()),
    );
    // 20 concurrent requests: 4 slots (2 accounts x 2) are logged in once each; the rest wait.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            pool.lease(
                "portal",
                &LeaseRequest {
                    holder: format!("w{i}"),
                    ..Default::default()
                },
            )
            .await
        }));
    }
    let mut leases = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(lease) => leases.push(lease),
            Err(LeaseError::Exhausted { .. }) => {}
            Err(error) => panic!("{error}"),
        }
    }
    assert_eq!(leases.len(), 4, "one lease per slot");
    assert_eq!(login.calls.load(Ordering::SeqCst), 4, "one login per slot");
    let ids: HashSet<String> = leases.iter().map(|l| l.session_id.to_string()).collect();
    assert_eq!(
        ids,
        HashSet::from(["a0.0".into(), "a0.1".into(), "a1.0".into(), "a1.1".into()])
    );

    // Logged out → the next lease of that session logs it in again first.
    let a0 = leases.iter().find(|l| l.session_id == "a0.0").unwrap();
    pool.release(&a0.lease_id, Outcome::LoggedOut, None)
        .await
        .unwrap();
    let again = pool
        .lease(
            "portal",
            &LeaseRequest {
                account: Some("a0".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(again.session_id, "a0.0");
    assert_eq!(login.calls.load(Ordering::SeqCst), 5);

    // A failed login leaves the session needing a login, and says why.
    pool.release(&again.lease_id, Outcome::LoggedOut, None)
        .await
        .unwrap();
    login.fail.store(true, Ordering::SeqCst);
    let failed = pool
        .lease(
            "portal",
            &LeaseRequest {
                account: Some("a0".into()),
                ..Default::default()
            },
        )
        .await;
    assert!(
        matches!(failed, Err(LeaseError::LoginFailed { .. })),
        "{failed:?}"
    );
    let listed = pool.list(Some("portal")).await.unwrap();
    let a00 = listed.iter().find(|s| s.id == "a0.0").unwrap();
    assert_eq!(a00.state, SessionState::NeedsLogin);
    assert!(
        a00.leased_by.is_none(),
        "a failed login puts the session back"
    );
}

#[tokio::test]
async fn import_refuses_cookies_of_another_site_and_keeps_what_is_stored() {
    let clock = ManualClock::new(Timestamp::from_secs(1_700_000_000));
    let pool = pool(Arc::new(MemoryStore::new()), clock, site(1, ""));
    import_all(&pool, 1).await;
    let mut foreign = state_for("a0");
    foreign.cookies[0].domain = "evil.example".into();
    let error = pool.import("portal", "a0", foreign).await.unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("sid") && text.contains("evil.example"),
        "{text}"
    );
    assert!(
        !text.contains("secret-a0"),
        "no cookie value in errors: {text}"
    );
    assert_eq!(
        pool.export("portal", "a0").await.unwrap(),
        state_for("a0"),
        "stored state kept"
    );
    assert!(matches!(
        pool.import("portal", "nobody", state_for("x")).await,
        Err(LeaseError::UnknownAccount { .. })
    ));
    assert!(matches!(
        pool.lease("nosite", &LeaseRequest::default()).await,
        Err(LeaseError::UnknownSite(_))
    ));
}

/// A session gets one identity from the site's profiles when it is created (an account's own
/// settings win), keeps it across leases and imports of other accounts, and every lease hands
/// it out as Playwright context options.
#[tokio::test]
async fn every_lease_of_a_session_carries_its_one_identity() {
    let config: SiteConfig = toml::from_str(
        r#"
origin = "http://127.0.0.1:9"
identity = { user_agents = ["UA-one", "UA-two", "UA-three"], locales = ["en-US"], timezones = ["Europe/Paris"], viewports = [[1280, 720]] }
accounts = [{ name = "a0" }, { name = "a1", identity = { user_agent = "UA-mine", locale = "fr-FR" } }]
[pool]
max_usage = 0
"#,
    )
    .expect("site");
    let pool = pool(Arc::new(MemoryStore::new()), SystemClock::shared(), config);
    import_all(&pool, 2).await;
    let lease = |account: &'static str| {
        let pool = &pool;
        async move {
            let request = LeaseRequest {
                account: Some(account.parse().expect("account")),
                ..Default::default()
            };
            let lease = pool.lease("portal", &request).await.expect("lease");
            pool.release(&lease.lease_id, Outcome::Ok, None)
                .await
                .expect("release");
            lease.identity.expect("an identity")
        }
    };
    let first = lease("a0").await;
    assert!(
        first["userAgent"]
            .as_str()
            .is_some_and(|ua| ua.starts_with("UA-"))
    );
    assert_eq!(first["timezoneId"], "Europe/Paris");
    assert_eq!(first["viewport"]["width"], 1280);
    assert_eq!(
        first["extraHTTPHeaders"]["Accept-Language"],
        "en-US,en;q=0.9"
    );
    for _ in 0..3 {
        assert_eq!(
            lease("a0").await,
            first,
            "one identity for the session's life"
        );
    }
    let mine = lease("a1").await;
    assert_eq!(mine["userAgent"], "UA-mine");
    assert_eq!(mine["locale"], "fr-FR");
}
