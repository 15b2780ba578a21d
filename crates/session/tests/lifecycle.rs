//! A session's whole life against the mock login app, with a real headless Chromium logging in
//! by recipe: created on the first lease, used over plain HTTP with the `Cookie` header computed
//! from its state, logged out server-side, noticed by the probe, silently logged in again before
//! the next lease; and a cookie refresh that extends it without a login.

use std::sync::Arc;
use std::time::Duration;

use authkeeper_core::{Clock, ManualClock, SharedClock, Store, Timestamp};
use authkeeper_mock::login_app::{LoginApp, LoginAppConfig};
use authkeeper_session::jar::cookie_header;
use authkeeper_session::pool::LeaseRequest;
use authkeeper_session::{Outcome, SessionPool, SiteConfig};
use authkeeper_store::{Keyring, SealKey, SqliteStore};
use zeroize::Zeroizing;

fn site(app: &LoginApp, extra: &str) -> SiteConfig {
    let text = format!(
        r##"
origin = "{origin}"
accounts = [{{ name = "alice", username = "alice", password = "wonderland" }}]

[login]
steps = [
  {{ goto = "/login" }},
  {{ fill = "#username", value = "account:username" }},
  {{ fill = "#password", value = "account:password" }},
  {{ click = "#submit" }},
  {{ wait_for = "#welcome" }},
]
timeout = "60s"
step_timeout = "20s"
{extra}
"##,
        origin = app.base_url()
    );
    toml::from_str(&text).expect("site config")
}

struct Setup {
    app: LoginApp,
    clock: Arc<ManualClock>,
    pool: SessionPool,
    _dir: tempfile::TempDir,
}

async fn setup(extra: &str, idle: Duration) -> Setup {
    let clock = ManualClock::new(Timestamp::from_millis(SystemClockNow::now_millis()));
    let shared: SharedClock = clock.clone();
    let app = LoginApp::start(
        LoginAppConfig::new(vec![("alice".into(), "wonderland".into())])
            .with_clock(shared.clone())
            .with_idle_timeout(idle),
    )
    .await
    .expect("login app");
    let dir = authkeeper_testkit::temp_dir();
    let store = SqliteStore::open(
        dir.path().join("s.db"),
        Keyring::new(SealKey::new(Zeroizing::new([3u8; 32]))),
    )
    .expect("store");
    let store: Arc<dyn Store> = Arc::new(store);
    let pool = SessionPool::new(
        store,
        shared,
        [("portal".parse().expect("site name"), site(&app, extra))],
    )
    .expect("pool");
    Setup {
        app,
        clock,
        pool,
        _dir: dir,
    }
}

/// Real time, for the manual clock's start (the browser's cookie expiries are in real time).
struct SystemClockNow;
impl SystemClockNow {
    fn now_millis() -> i64 {
        authkeeper_core::SystemClock::new().now().as_millis()
    }
}

/// `GET /api/me` with the session's cookies, as an HTTP-only worker does.
async fn me(setup: &Setup, state: &authkeeper_session::StorageState) -> reqwest::StatusCode {
    let url = url::Url::parse(&format!("{}/api/me", setup.app.base_url())).unwrap();
    let mut request = reqwest::Client::new().get(url.clone());
    if let Some(header) = cookie_header(state, &url, setup.clock.now()) {
        request = request.header(reqwest::header::COOKIE, header);
    }
    request.send().await.expect("api/me").status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_notices_a_server_side_logout_and_the_session_is_relogged_before_the_next_lease() {
    let setup = setup(
        "[probe]\nurl = \"/api/me\"\nlogged_out_status = [401]\ninterval = \"60s\"\nmax_staleness = \"30s\"\n",
        Duration::from_secs(600),
    )
    .await;
    let request = LeaseRequest {
        holder: "worker".into(),
        ..LeaseRequest::default()
    };

    // First lease: no session yet → Chromium logs in by recipe.
    let lease = setup
        .pool
        .lease("portal", &request)
        .await
        .expect("first lease");
    assert_eq!(setup.app.stats().logins, 1);
    assert!(
        lease
            .storage_state
            .cookies
            .iter()
            .any(|c| c.name == "sid" && c.http_only),
        "HttpOnly sid captured"
    );
    assert!(
        lease
            .storage_state
            .origins
            .iter()
            .any(|o| o.local_storage.iter().any(|e| e.name == "api_token")),
        "localStorage captured"
    );
    assert_eq!(
        me(&setup, &lease.storage_state).await,
        200,
        "the state works over plain HTTP"
    );
    setup
        .pool
        .release(&lease.lease_id, Outcome::Ok, None)
        .await
        .unwrap();

    // The site logs every session out; the scheduled probe notices and logs in again.
    setup.app.expire_sessions();
    assert_eq!(
        me(&setup, &lease.storage_state).await,
        401,
        "the old state is dead now"
    );
    setup.clock.advance(Duration::from_secs(61));
    let report = setup.pool.run_maintenance().await;
    assert_eq!(
        (report.probed, report.logged_out, report.relogged),
        (1, 1, 1),
        "{report:?}"
    );
    assert_eq!(setup.app.stats().logins, 2);

    // The next lease gets the fresh state without waiting for a login.
    let next = setup
        .pool
        .lease("portal", &request)
        .await
        .expect("lease after re-login");
    assert_eq!(next.session_id, lease.session_id);
    assert_eq!(setup.app.stats().logins, 2, "no login on the lease path");
    assert_eq!(me(&setup, &next.storage_state).await, 200);
    setup
        .pool
        .release(&next.lease_id, Outcome::Ok, None)
        .await
        .unwrap();

    // Logged out again, and a lease comes before the janitor: the stale probe runs on the lease
    // path and the worker still gets a working session.
    setup.app.expire_sessions();
    setup.clock.advance(Duration::from_secs(31));
    let third = setup
        .pool
        .lease("portal", &request)
        .await
        .expect("lease with probe");
    assert_eq!(setup.app.stats().logins, 3);
    assert_eq!(me(&setup, &third.storage_state).await, 200);
    setup
        .pool
        .release(&third.lease_id, Outcome::Ok, None)
        .await
        .unwrap();
    setup.app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_refresh_extends_the_session_without_a_login() {
    // The app forgets a session idle for 60 s; the refresh runs every 40 s.
    let setup = setup(
        "[refresh]\nurl = \"/api/auth/refresh\"\ninterval = \"40s\"\n",
        Duration::from_secs(60),
    )
    .await;
    setup
        .pool
        .login("portal", "alice", "test")
        .await
        .expect("login");
    assert_eq!(setup.app.stats().logins, 1);
    let before = setup.pool.export("portal", "alice").await.unwrap();

    for _ in 0..3 {
        setup.clock.advance(Duration::from_secs(41));
        let report = setup.pool.run_maintenance().await;
        assert_eq!(report.refreshed, 1, "{report:?}");
    }
    // 123 s after the login, far past the idle timeout of the first sid.
    assert_eq!(setup.app.stats().refreshes, 3);
    assert_eq!(
        me(&setup, &before).await,
        401,
        "the original sid is gone (rotated, then idle)"
    );
    let lease = setup
        .pool
        .lease(
            "portal",
            &LeaseRequest {
                holder: "w".into(),
                ..LeaseRequest::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        me(&setup, &lease.storage_state).await,
        200,
        "the refreshed state is logged in"
    );
    assert_eq!(setup.app.stats().logins, 1, "never logged in again");
    setup.app.shutdown().await.unwrap();
}
