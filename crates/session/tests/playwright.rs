//! Round trip with real Playwright: a Chromium driven by `scripts/playwright/login.mjs` signs into
//! the mock login app, the storage state it writes survives `StorageState::from_json` → import
//! into the encrypted store → export → `to_json` byte for byte, and `check.mjs` finds the
//! exported state logged in — until the app expires every session server-side.
//!
//! Needs `node` on PATH, Chromium (`$AUTHKEEPER_CHROMIUM`, default `/usr/bin/chromium`) and
//! `npm ci` done in `$AUTHKEEPER_PLAYWRIGHT_DIR` (default: the repo's `scripts/playwright`);
//! `scripts/test` provides all three.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use authkeeper_mock::login_app::{LoginApp, LoginAppConfig};
use authkeeper_session::StorageState;
use serde_json::Value;

const USER: &str = "pw-user";
const PASSWORD: &str = "correct horse & battery";
const BAD_PASSWORD: &str = "Wr0ng-Passw0rd-7c1";
/// Generous: a cold Chromium start on a busy 2-core machine.
const NODE_TIMEOUT: Duration = Duration::from_secs(120);
/// login.mjs's exit status for "the form said the credentials are wrong".
const WRONG_CREDENTIALS: i32 = 4;
/// check.mjs's exit status for "not logged in".
const NOT_LOGGED_IN: i32 = 3;

/// The scripts directory, failing loudly (not skipping) when its npm packages are missing.
fn playwright_dir() -> PathBuf {
    let dir = std::env::var_os("AUTHKEEPER_PLAYWRIGHT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/playwright"));
    assert!(
        dir.join("login.mjs").is_file(),
        "{} has no login.mjs: set AUTHKEEPER_PLAYWRIGHT_DIR to scripts/playwright",
        dir.display()
    );
    assert!(
        dir.join("node_modules/playwright-core/package.json")
            .is_file(),
        "playwright-core is not installed in {}: run scripts/test (or `npm ci` there) first",
        dir.display()
    );
    dir
}

/// Runs `node SCRIPT ARGS...` in the scripts directory and returns its output.
async fn node(dir: &Path, script: &str, args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new("node");
    command
        .arg(dir.join(script))
        .args(args)
        .current_dir(dir)
        .kill_on_drop(true);
    let output = command.output();
    match tokio::time::timeout(NODE_TIMEOUT, output).await {
        Ok(Ok(output)) => output,
        Ok(Err(error)) => panic!("cannot run node (is Node.js on PATH?): {error}"),
        Err(_) => panic!("node {script} took more than {NODE_TIMEOUT:?}"),
    }
}

fn describe(output: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// check.mjs's JSON line.
fn check_report(output: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|line| line.starts_with('{'))
        .unwrap_or_else(|| panic!("check.mjs printed no JSON: {}", describe(output)));
    serde_json::from_str(line).unwrap_or_else(|error| panic!("bad JSON {line}: {error}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playwright_storage_state_round_trips_and_stays_logged_in() {
    let dir = playwright_dir();
    let app = LoginApp::start(LoginAppConfig::new(vec![(
        USER.to_owned(),
        PASSWORD.to_owned(),
    )]))
    .await
    .expect("login app starts");
    let base = app.base_url().to_owned();
    let tmp = authkeeper_testkit::temp_dir();
    let playwright_file = tmp.path().join("playwright-state.json");
    let exported_file = tmp.path().join("exported-state.json");
    authkeeper_testkit::expect_plaintext(&playwright_file);
    authkeeper_testkit::expect_plaintext(&exported_file);
    let playwright_path = playwright_file.to_str().expect("utf-8 path");
    let exported_path = exported_file.to_str().expect("utf-8 path");

    // 0. A wrong password is reported as such (exit 4) and writes nothing.
    let wrong = node(
        &dir,
        "login.mjs",
        &[&base, USER, BAD_PASSWORD, playwright_path],
    )
    .await;
    assert_eq!(
        wrong.status.code(),
        Some(WRONG_CREDENTIALS),
        "{}",
        describe(&wrong)
    );
    assert!(!playwright_file.exists());
    assert!(!String::from_utf8_lossy(&wrong.stderr).contains(BAD_PASSWORD));

    // 1. A real browser logs in through the form and Playwright writes the state.
    let login = node(&dir, "login.mjs", &[&base, USER, PASSWORD, playwright_path]).await;
    assert!(
        login.status.success(),
        "login.mjs failed: {}",
        describe(&login)
    );
    let stats = app.stats();
    assert_eq!(
        (stats.logins, stats.failed_logins, stats.csrf_failures),
        (1, 1, 0)
    );

    // 2. Parse it, export it: byte-identical to Playwright's own file.
    let written = std::fs::read(&playwright_file).expect("state file written");
    let state = StorageState::from_json(&written).expect("Playwright's state parses");
    let sid = state
        .cookies
        .iter()
        .find(|cookie| cookie.name == "sid")
        .expect("sid cookie in the state");
    assert_eq!(sid.path, "/");
    assert!(sid.http_only);
    assert!(
        state
            .cookies
            .iter()
            .any(|cookie| cookie.name == "refresh" && cookie.path == "/api/auth"),
        "refresh cookie in the state"
    );
    // Through the encrypted store, as `authkeeper sessions import` / `export` do.
    let store_dir = authkeeper_testkit::temp_dir();
    let store = authkeeper_store::SqliteStore::open(
        store_dir.path().join("sessions.db"),
        authkeeper_store::Keyring::new(authkeeper_store::SealKey::new(zeroize::Zeroizing::new(
            [5u8; 32],
        ))),
    )
    .expect("store");
    let site: authkeeper_session::SiteConfig = toml::from_str(&format!(
        "origin = \"{base}\"\naccounts = [{{ name = \"{USER}\" }}]\n"
    ))
    .expect("site");
    let pool = authkeeper_session::SessionPool::new(
        std::sync::Arc::new(store),
        authkeeper_core::SystemClock::shared(),
        [("app".parse().expect("site name"), site)],
    )
    .expect("pool");
    pool.import("app", USER, state.clone())
        .await
        .expect("import");
    let exported = pool.export("app", USER).await.expect("export").to_json();
    assert!(
        exported.as_bytes() == written.as_slice(),
        "to_json differs from Playwright's file:\n--- playwright\n{}\n--- exported\n{exported}",
        String::from_utf8_lossy(&written)
    );
    std::fs::write(&exported_file, &exported).expect("write the export");

    // 3. A fresh browser context from the export is logged in.
    let check = node(&dir, "check.mjs", &[&base, exported_path]).await;
    let report = check_report(&check);
    assert_eq!(check.status.code(), Some(0), "{}", describe(&check));
    let welcome = report["welcome"].as_str().expect("welcome text");
    assert!(welcome.contains(USER), "{report}");
    let api_token = report["api_token"].as_str().expect("api_token");
    assert!(!api_token.is_empty());
    let stored_token = state
        .origins
        .iter()
        .filter(|origin| origin.origin == base)
        .flat_map(|origin| origin.local_storage.iter())
        .find(|item| item.name == "api_token")
        .map(|item| item.value.clone());
    assert_eq!(
        stored_token.as_deref(),
        Some(api_token),
        "localStorage survived"
    );
    assert!(report["url"].as_str().expect("url").ends_with("/home"));

    // 4. Server-side logout: the same state is no longer logged in, and check.mjs says so.
    app.expire_sessions();
    let check = node(&dir, "check.mjs", &[&base, exported_path]).await;
    assert_eq!(
        check.status.code(),
        Some(NOT_LOGGED_IN),
        "{}",
        describe(&check)
    );
    let report = check_report(&check);
    assert!(report["welcome"].is_null(), "{report}");
    assert!(
        report["url"].as_str().expect("url").contains("/login"),
        "{report}"
    );
    assert_eq!(app.stats().pages, 3, "login.mjs once, check.mjs twice");

    app.shutdown().await.expect("shutdown");
}

/// A state with localStorage, sessionStorage and IndexedDB (Playwright's format, as Playwright
/// 1.65 writes it) goes import → encrypted store → lease → a real Playwright context
/// (`restore.mjs`: Playwright restores IndexedDB itself, sessionStorage by an init script as
/// authkeeper's clients do) and the page sees every value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_storage_and_indexed_db_reach_the_page_through_a_lease() {
    let dir = playwright_dir();
    let app = LoginApp::start(LoginAppConfig::new(vec![(
        USER.to_owned(),
        PASSWORD.to_owned(),
    )]))
    .await
    .expect("login app starts");
    let base = app.base_url().to_owned();
    let origin = base.trim_end_matches('/').to_owned();
    let token = authkeeper_testkit::planted("idb-token");
    let jwt = authkeeper_testkit::planted("ls-jwt");
    let document = serde_json::json!({
        "cookies": [],
        "origins": [{
            "origin": origin,
            "localStorage": [{ "name": "access_token", "value": jwt }],
            "sessionStorage": [{ "name": "tab", "value": "tab-7" }],
            "indexedDB": [{
                "name": "app",
                "version": 2,
                "stores": [
                    {
                        "name": "kv",
                        "autoIncrement": false,
                        "records": [{ "key": "token", "value": token }],
                        "indexes": []
                    },
                    {
                        "name": "items",
                        "autoIncrement": true,
                        "keyPath": "id",
                        "records": [{ "value": { "name": "x", "id": 1 } }],
                        "indexes": [{ "name": "by_name", "keyPath": "name", "multiEntry": false, "unique": false }]
                    }
                ]
            }]
        }]
    });
    let state = StorageState::from_json(document.to_string().as_bytes()).expect("parses");
    assert_eq!(state.origins[0].session_storage.len(), 1);
    assert!(state.origins[0].indexed_db_json().is_some());
    // The export is the import, byte for byte.
    assert_eq!(
        serde_json::from_str::<Value>(&state.to_json()).expect("json"),
        document
    );
    let store_dir = authkeeper_testkit::temp_dir();
    let store = authkeeper_store::SqliteStore::open(
        store_dir.path().join("sessions.db"),
        authkeeper_store::Keyring::new(authkeeper_store::SealKey::new(zeroize::Zeroizing::new(
            [6u8; 32],
        ))),
    )
    .expect("store");
    let site: authkeeper_session::SiteConfig = toml::from_str(&format!(
        "origin = \"{base}\"\naccounts = [{{ name = \"{USER}\" }}]\n"
    ))
    .expect("site");
    let pool = authkeeper_session::SessionPool::new(
        std::sync::Arc::new(store),
        authkeeper_core::SystemClock::shared(),
        [("app".parse().expect("site name"), site)],
    )
    .expect("pool");
    pool.import("app", USER, state).await.expect("import");
    let lease = pool
        .lease("app", &authkeeper_session::LeaseRequest::default())
        .await
        .expect("lease");
    let tmp = authkeeper_testkit::temp_dir();
    let leased_file = tmp.path().join("leased-state.json");
    authkeeper_testkit::expect_plaintext(&leased_file);
    std::fs::write(&leased_file, lease.storage_state.to_json()).expect("write");
    let restored = node(
        &dir,
        "restore.mjs",
        &[
            &format!("{origin}/login"),
            leased_file.to_str().expect("utf-8 path"),
        ],
    )
    .await;
    assert!(restored.status.success(), "{}", describe(&restored));
    let seen: Value = serde_json::from_slice(&restored.stdout).expect("restore.mjs prints JSON");
    assert_eq!(seen["local"]["access_token"], jwt.as_str());
    assert_eq!(seen["session"]["tab"], "tab-7");
    assert_eq!(
        seen["idb"]["app/kv"],
        serde_json::json!([["token", token.as_str()]])
    );
    assert_eq!(
        seen["idb"]["app/items"],
        serde_json::json!([[1, { "name": "x", "id": 1 }]])
    );
}
