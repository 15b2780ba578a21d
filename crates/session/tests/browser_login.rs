//! Login recipes in a real headless Chromium against the mock login app, and the external
//! login command.

use std::time::{Duration, Instant};

use authkeeper_session::config::SiteConfig;
use authkeeper_session::login::{CommandLogin, LoginError, LoginRequest, SessionLogin, login_for};
use serde_json::json;

/// A site for the mock app at `base` with these recipe steps (JSON) and step timeout.
fn site(base: &str, steps: serde_json::Value, step_timeout: &str, password: &str) -> SiteConfig {
    serde_json::from_value(json!({
        "origin": base,
        "accounts": [{ "name": "alice", "username": "alice", "password": password }],
        "login": { "steps": steps, "step_timeout": step_timeout, "timeout": "60s" },
    }))
    .unwrap()
}

#[cfg(feature = "browser")]
mod browser {
    use std::path::Path;

    use super::*;
    use authkeeper_mock::login_app::{LoginApp, LoginAppConfig};
    fn login_steps() -> serde_json::Value {
        json!([
            { "goto": "/login" },
            { "fill": "#username", "value": "account:username" },
            { "fill": "#password", "value": "account:password" },
            { "click": "button#submit" },
            { "wait_for_url": "/home" },
            { "wait_for": "#welcome" },
        ])
    }

    async fn start_app() -> LoginApp {
        LoginApp::start(LoginAppConfig::new(vec![("alice".into(), "pw".into())]))
            .await
            .unwrap()
    }
    use authkeeper_session::RecipeLogin;
    use authkeeper_session::browser::{LaunchOptions, chromium_processes_with_profile};
    use authkeeper_session::recipe::load_state_and_check_with;

    fn launch_options(root: &Path) -> LaunchOptions {
        LaunchOptions {
            profile_root: Some(root.to_path_buf()),
            ..LaunchOptions::default()
        }
    }

    async fn run_login(
        site: &SiteConfig,
        root: &Path,
    ) -> Result<authkeeper_session::StorageState, LoginError> {
        let login = RecipeLogin::new(site.login.clone().unwrap())
            .unwrap()
            .with_launch_options(launch_options(root));
        let request = LoginRequest {
            identity: None,
            site_name: "portal",
            site,
            account: &site.accounts[0],
        };
        login.login(&request).await
    }

    /// The session's identity is what the login's page sees, and the recipe captures
    /// sessionStorage and IndexedDB besides cookies and localStorage; a fresh browser restores
    /// all of it (`load_state_and_check_with`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_identity_is_applied_and_every_kind_of_storage_is_captured() {
        let app = start_app().await;
        let root = authkeeper_testkit::temp_dir();
        let mut steps = login_steps();
        steps.as_array_mut().unwrap().push(json!({ "evaluate": r#"(async () => {
            localStorage.setItem('seen', JSON.stringify({
                ua: navigator.userAgent, lang: navigator.language, platform: navigator.platform,
                tz: Intl.DateTimeFormat().resolvedOptions().timeZone, w: innerWidth, h: innerHeight }));
            sessionStorage.setItem('tab', 'tab-42');
            await new Promise((resolve, reject) => {
                const open = indexedDB.open('app', 1);
                open.onupgradeneeded = () => open.result.createObjectStore('kv');
                open.onsuccess = () => {
                    const tx = open.result.transaction('kv', 'readwrite');
                    tx.objectStore('kv').put({ refresh: 'idb-value' }, 'auth');
                    tx.oncomplete = () => { open.result.close(); resolve(); };
                    tx.onerror = () => reject(tx.error);
                };
                open.onerror = () => reject(open.error);
            });
        })()"# }));
        let site = site(app.base_url(), steps, "10s", "pw");
        let identity = authkeeper_session::identity::Identity {
            user_agent: Some("Mozilla/5.0 (authkeeper-test) Chrome/130.0".into()),
            locale: "de-DE".into(),
            timezone_id: "Asia/Tokyo".into(),
            viewport: authkeeper_session::identity::Viewport {
                width: 801,
                height: 601,
            },
            platform: Some("Win32".into()),
        };
        let login = RecipeLogin::new(site.login.clone().unwrap())
            .unwrap()
            .with_launch_options(launch_options(root.path()));
        let request = LoginRequest {
            identity: Some(&identity),
            site_name: "portal",
            site: &site,
            account: &site.accounts[0],
        };
        let state = login.login(&request).await.unwrap();
        assert_no_orphan(root.path());
        let origin = state
            .origins
            .iter()
            .find(|o| o.origin == app.base_url())
            .expect("the site's origin");
        let seen = origin
            .local_storage
            .iter()
            .find(|e| e.name == "seen")
            .expect("what the page saw");
        let seen: serde_json::Value = serde_json::from_str(&seen.value).unwrap();
        assert_eq!(seen["ua"], "Mozilla/5.0 (authkeeper-test) Chrome/130.0");
        assert_eq!(seen["lang"], "de-DE");
        assert_eq!(seen["platform"], "Win32");
        assert_eq!(seen["tz"], "Asia/Tokyo");
        assert_eq!(
            (seen["w"].as_u64(), seen["h"].as_u64()),
            (Some(801), Some(601))
        );
        assert_eq!(origin.session_storage.len(), 1);
        assert_eq!(origin.session_storage[0].name, "tab");
        let idb: serde_json::Value =
            serde_json::from_str(&origin.indexed_db_json().expect("IndexedDB captured")).unwrap();
        assert_eq!(idb[0]["name"], "app");
        assert_eq!(idb[0]["stores"][0]["records"][0]["key"], "auth");
        assert_eq!(
            idb[0]["stores"][0]["records"][0]["value"]["refresh"],
            "idb-value"
        );

        // A fresh browser restores all of it: the page reads it back.
        let home = url::Url::parse(&app.home_url()).unwrap();
        let mut restored = state.clone();
        restored.origins.retain(|o| o.origin == app.base_url());
        let seen_back =
            load_state_and_check_with(&launch_options(root.path()), &restored, &home, "#welcome")
                .await
                .unwrap();
        assert!(seen_back.is_some(), "logged in after the restore");
    }

    /// No Chromium process names a profile under `root`, and every profile was removed.
    fn assert_no_orphan(root: &Path) {
        assert_eq!(chromium_processes_with_profile(root), 0, "orphan chromium");
        let left: Vec<_> = std::fs::read_dir(root).unwrap().collect();
        assert!(left.is_empty(), "profile directories left: {left:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn recipe_logs_in_and_the_state_is_logged_in_in_a_fresh_browser() {
        let app = start_app().await;
        let root = authkeeper_testkit::temp_dir();
        let site = site(app.base_url(), login_steps(), "10s", "pw");
        let state = run_login(&site, root.path()).await.unwrap();
        assert_no_orphan(root.path());
        assert_eq!(app.stats().logins, 1);

        let sid = state
            .cookies
            .iter()
            .find(|c| c.name == "sid")
            .expect("sid cookie");
        assert!(sid.http_only, "{sid:?}");
        assert_eq!(sid.path, "/");
        assert_eq!(sid.expires, -1.0, "sid is a session cookie");
        let refresh = state
            .cookies
            .iter()
            .find(|c| c.name == "refresh")
            .expect("refresh cookie (HttpOnly, Path=/api/auth)");
        assert!(refresh.http_only);
        assert_eq!(refresh.path, "/api/auth");
        assert!(refresh.expires > 0.0, "refresh has Max-Age");
        let origin = state
            .origins
            .iter()
            .find(|o| o.origin == app.base_url())
            .expect("localStorage of the site's origin");
        let token = origin
            .local_storage
            .iter()
            .find(|e| e.name == "api_token")
            .expect("api_token in localStorage");
        assert!(!token.value.is_empty());
        // Nothing secret in Debug.
        let debug = format!("{state:?}");
        assert!(!debug.contains(&sid.value) && !debug.contains(&token.value));

        // The exported state is logged in, checked in the DOM of a fresh profile.
        let home = url::Url::parse(&app.home_url()).unwrap();
        let welcome =
            load_state_and_check_with(&launch_options(root.path()), &state, &home, "#welcome")
                .await
                .unwrap();
        assert_eq!(welcome.as_deref().map(str::trim), Some("Welcome, alice"));
        assert_no_orphan(root.path());

        // And the check can fail: once the server forgets the session, no welcome.
        app.expire_sessions();
        let welcome =
            load_state_and_check_with(&launch_options(root.path()), &state, &home, "#welcome")
                .await
                .unwrap();
        assert_eq!(welcome, None);
        assert_no_orphan(root.path());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_selector_that_never_appears_fails_within_the_step_timeout() {
        let app = start_app().await;
        let root = authkeeper_testkit::temp_dir();
        let steps = json!([{ "goto": "/login" }, { "wait_for": "#never-there" }]);
        let site = site(app.base_url(), steps, "2s", "pw");
        let started = Instant::now();
        let error = run_login(&site, root.path()).await.unwrap_err();
        let elapsed = started.elapsed();
        assert!(
            matches!(&error, LoginError::StepTimeout { step: 2, timeout, .. } if *timeout == Duration::from_secs(2)),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(
            message.contains("step 2") && message.contains("wait_for #never-there"),
            "{message}"
        );
        // 2 s for the step, plus launching Chromium and the first page.
        assert!(elapsed < Duration::from_secs(12), "took {elapsed:?}");
        assert!(error.is_transient());
        assert_no_orphan(root.path());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_login_timeout_and_a_dropped_login_leave_no_browser() {
        let app = start_app().await;
        let root = authkeeper_testkit::temp_dir();
        let steps = json!([{ "goto": "/login" }, { "wait_for": "#never-there" }]);
        let mut site = site(app.base_url(), steps, "30s", "pw");
        // The whole login's bound.
        site.login.as_mut().unwrap().timeout = Duration::from_secs(3);
        let error = run_login(&site, root.path()).await.unwrap_err();
        assert!(
            matches!(error, LoginError::Timeout(t) if t == Duration::from_secs(3)),
            "{error:?}"
        );
        assert_no_orphan(root.path());

        // The caller gives up first: the login future is dropped while Chromium runs.
        site.login.as_mut().unwrap().timeout = Duration::from_secs(60);
        let dropped =
            tokio::time::timeout(Duration::from_secs(3), run_login(&site, root.path())).await;
        assert!(dropped.is_err(), "the login cannot have finished");
        assert_no_orphan(root.path());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_blocking_site_gives_blocked_with_the_status() {
        let app = start_app().await;
        app.set_blocking(Some(429));
        let root = authkeeper_testkit::temp_dir();
        let site = site(app.base_url(), login_steps(), "5s", "pw");
        let error = run_login(&site, root.path()).await.unwrap_err();
        assert!(
            matches!(error, LoginError::Blocked { status: 429 }),
            "{error:?}"
        );
        assert!(error.is_transient());
        assert_no_orphan(root.path());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wrong_password_times_out_waiting_for_the_url_without_leaking_it() {
        let app = start_app().await;
        let root = authkeeper_testkit::temp_dir();
        let password = "Wr0ng-Secret-Passw0rd";
        let site = site(app.base_url(), login_steps(), "2s", password);
        let error = run_login(&site, root.path()).await.unwrap_err();
        assert!(
            matches!(error, LoginError::StepTimeout { step: 5, .. }),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(message.contains("wait_for_url /home"), "{message}");
        assert!(!message.contains(password) && !format!("{error:?}").contains(password));
        assert_eq!(app.stats().failed_logins, 1, "the form was submitted once");
        assert_no_orphan(root.path());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_proxy_identity_with_credentials_is_answered_over_cdp() {
        let app = start_app().await;
        let root = authkeeper_testkit::temp_dir();
        let proxy = proxy::AuthProxy::start().await;
        let mut site = site(app.base_url(), login_steps(), "10s", "pw");
        site.accounts[0].proxy = Some(authkeeper_core::secret_ref::SecretRef::parse(&format!(
            "http://user:pass@{}",
            proxy.addr
        )));
        let login = RecipeLogin::new(site.login.clone().unwrap())
            .unwrap()
            .with_launch_options(LaunchOptions {
                // Chromium sends loopback traffic through a proxy only when told to.
                extra_args: vec!["--proxy-bypass-list=<-loopback>".into()],
                ..launch_options(root.path())
            });
        let request = LoginRequest {
            identity: None,
            site_name: "portal",
            site: &site,
            account: &site.accounts[0],
        };
        let state = login.login(&request).await.unwrap_or_else(|error| {
            panic!(
                "{error:?} (proxy: {} challenged, {} forwarded)",
                proxy.challenged(),
                proxy.forwarded()
            )
        });
        assert!(state.cookies.iter().any(|c| c.name == "sid"));
        assert!(proxy.challenged() >= 1, "the proxy asked for credentials");
        assert!(
            proxy.forwarded() >= 1,
            "requests went through the proxy with credentials"
        );
        assert_eq!(app.stats().logins, 1);
        // The credentials never reached Chromium's command line.
        assert_no_orphan(root.path());
    }

    #[tokio::test]
    async fn a_missing_chromium_is_a_clear_error() {
        let app = start_app().await;
        let root = authkeeper_testkit::temp_dir();
        let site = site(app.base_url(), login_steps(), "2s", "pw");
        let login = RecipeLogin::new(site.login.clone().unwrap())
            .unwrap()
            .with_launch_options(LaunchOptions {
                executable: "/nonexistent/chromium".into(),
                profile_root: Some(root.path().to_path_buf()),
                ..LaunchOptions::default()
            });
        let request = LoginRequest {
            identity: None,
            site_name: "portal",
            site: &site,
            account: &site.accounts[0],
        };
        let error = login.login(&request).await.unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("/nonexistent/chromium")
                && message.contains("apt-get install chromium"),
            "{message}"
        );
        assert!(!error.is_transient());
    }
}

/// A forward HTTP proxy on loopback that demands `Proxy-Authorization: Basic user:pass`.
#[cfg(feature = "browser")]
mod proxy {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::{TcpListener, TcpStream};

    /// base64("user:pass").
    const EXPECTED: &str = "basic dXNlcjpwYXNz";

    pub struct AuthProxy {
        pub addr: SocketAddr,
        challenged: Arc<AtomicUsize>,
        forwarded: Arc<AtomicUsize>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for AuthProxy {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    impl AuthProxy {
        pub async fn start() -> AuthProxy {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let challenged = Arc::new(AtomicUsize::new(0));
            let forwarded = Arc::new(AtomicUsize::new(0));
            let counters = (Arc::clone(&challenged), Arc::clone(&forwarded));
            let task = tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let counters = (Arc::clone(&counters.0), Arc::clone(&counters.1));
                    tokio::spawn(async move {
                        let _ = serve(client, &counters.0, &counters.1).await;
                    });
                }
            });
            AuthProxy {
                addr,
                challenged,
                forwarded,
                task,
            }
        }

        pub fn challenged(&self) -> usize {
            self.challenged.load(Ordering::SeqCst)
        }

        pub fn forwarded(&self) -> usize {
            self.forwarded.load(Ordering::SeqCst)
        }
    }

    async fn serve(
        mut client: TcpStream,
        challenged: &AtomicUsize,
        forwarded: &AtomicUsize,
    ) -> std::io::Result<()> {
        let mut buffer: Vec<u8> = Vec::new();
        loop {
            let end = loop {
                if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                    break end + 4;
                }
                let mut chunk = [0_u8; 4096];
                let read = client.read(&mut chunk).await?;
                if read == 0 {
                    return Ok(());
                }
                buffer.extend_from_slice(&chunk[..read]);
            };
            let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
            let lower = head.to_ascii_lowercase();
            let authorized = lower.lines().any(|line| {
                line.strip_prefix("proxy-authorization:")
                    .is_some_and(|v| v.trim() == EXPECTED.to_ascii_lowercase())
            });
            if !authorized {
                challenged.fetch_add(1, Ordering::SeqCst);
                // Skip a request body, then ask for credentials.
                let length: usize = lower
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while buffer.len() < end + length {
                    let mut chunk = [0_u8; 4096];
                    let read = client.read(&mut chunk).await?;
                    if read == 0 {
                        return Ok(());
                    }
                    buffer.extend_from_slice(&chunk[..read]);
                }
                buffer.drain(..end + length);
                client
                    .write_all(
                        b"HTTP/1.1 407 Proxy Authentication Required\r\n\
                          Proxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\n\r\n",
                    )
                    .await?;
                continue;
            }
            forwarded.fetch_add(1, Ordering::SeqCst);
            // `GET http://127.0.0.1:PORT/path HTTP/1.1`: connect there and pipe the connection.
            let target = head
                .split_whitespace()
                .nth(1)
                .and_then(|uri| uri.strip_prefix("http://"))
                .and_then(|rest| rest.split('/').next())
                .unwrap_or_default()
                .to_owned();
            let mut upstream = TcpStream::connect(target).await?;
            upstream.write_all(&buffer).await?;
            tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
            return Ok(());
        }
    }
}

fn command_site(command: &str, timeout: &str) -> SiteConfig {
    serde_json::from_value(json!({
        "origin": "http://127.0.0.1:9",
        "accounts": [{ "name": "alice", "username": "alice", "password": "s3cret-pw" }],
        "login": { "command": command, "timeout": timeout },
    }))
    .unwrap()
}

async fn command_login(site: &SiteConfig) -> Result<authkeeper_session::StorageState, LoginError> {
    let login = login_for(site, &Default::default())
        .unwrap()
        .expect("a login");
    let request = LoginRequest {
        identity: None,
        site_name: "portal",
        site,
        account: &site.accounts[0],
    };
    login.login(&request).await
}

#[tokio::test]
async fn the_login_command_prints_a_state_that_is_parsed() {
    let dir = authkeeper_testkit::temp_dir();
    let fixture = dir.path().join("state.json");
    std::fs::write(
        &fixture,
        json!({
            "cookies": [{
                "name": "sid", "value": "fixture-sid", "domain": "127.0.0.1", "path": "/",
                "expires": -1, "httpOnly": true, "secure": false, "sameSite": "Lax"
            }],
            "origins": [{ "origin": "http://127.0.0.1:9", "localStorage": [{ "name": "k", "value": "v" }] }]
        })
        .to_string(),
    )
    .unwrap();
    let site = command_site(&format!("cat '{}'", fixture.display()), "10s");
    let state = command_login(&site).await.unwrap();
    assert_eq!(state.cookies.len(), 1);
    assert_eq!(state.cookies[0].value, "fixture-sid");
    assert_eq!(state.origins[0].local_storage[0].name, "k");

    // The environment carries the site, origin, account and resolved password.
    let script = r#"printf '{"cookies":[{"name":"%s","value":"%s","domain":"127.0.0.1","path":"/","expires":-1,"httpOnly":false,"secure":false,"sameSite":"Lax"}],"origins":[{"origin":"%s","localStorage":[{"name":"k","value":"v"}]}]}' "$AUTHKEEPER_SITE-$AUTHKEEPER_ACCOUNT-$AUTHKEEPER_USERNAME" "$AUTHKEEPER_PASSWORD" "$AUTHKEEPER_ORIGIN""#;
    let state = command_login(&command_site(script, "10s")).await.unwrap();
    assert_eq!(state.cookies[0].name, "portal-alice-alice");
    assert_eq!(state.cookies[0].value, "s3cret-pw");
    assert_eq!(state.origins[0].origin, "http://127.0.0.1:9");
}

#[tokio::test]
async fn garbage_output_is_an_invalid_state_that_quotes_nothing() {
    let site = command_site("echo 'not json but maybe-a-token'", "10s");
    let error = command_login(&site).await.unwrap_err();
    assert!(matches!(error, LoginError::InvalidState(_)), "{error:?}");
    assert!(!error.to_string().contains("maybe-a-token"), "{error}");

    let site = command_site("echo 'it broke' >&2; exit 3", "10s");
    let error = command_login(&site).await.unwrap_err();
    assert!(
        matches!(&error, LoginError::Command(message) if message.contains("it broke")),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_command_past_its_timeout_is_killed() {
    let marker = format!("authkeeper-login-marker-{}", std::process::id());
    let site = command_site(&format!("sh -c 'sleep 30' {marker}; echo never"), "1s");
    let started = Instant::now();
    let error = command_login(&site).await.unwrap_err();
    assert!(matches!(error, LoginError::Timeout(_)), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(error.is_transient());
    // The shell and what it started (the whole process group) are gone.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(count_processes_naming(&marker), 0);
}

/// Live processes whose command line contains `needle`.
fn count_processes_naming(needle: &str) -> usize {
    let own = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            name.chars().all(|c| c.is_ascii_digit()) && name != own
        })
        .filter(|entry| {
            std::fs::read(entry.path().join("cmdline"))
                .map(|cmdline| String::from_utf8_lossy(&cmdline).contains(needle))
                .unwrap_or(false)
        })
        .count()
}

#[test]
fn invalid_recipes_name_the_step() {
    let two_actions = site(
        "http://127.0.0.1:9",
        json!([{ "goto": "/login" }, { "goto": "/login", "click": "#submit" }]),
        "2s",
        "pw",
    );
    let error = login_for(&two_actions, &Default::default()).unwrap_err();
    assert!(
        matches!(error, LoginError::InvalidRecipe { step: 2, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("step 2"), "{error}");
    assert!(!error.is_transient());

    let fill_without_value = site(
        "http://127.0.0.1:9",
        json!([{ "goto": "/login" }, { "click": "#a" }, { "fill": "#password" }]),
        "2s",
        "pw",
    );
    let error = login_for(&fill_without_value, &Default::default()).unwrap_err();
    assert!(
        matches!(error, LoginError::InvalidRecipe { step: 3, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("needs a `value`"), "{error}");

    let no_login: SiteConfig =
        serde_json::from_value(json!({ "origin": "http://127.0.0.1:9" })).unwrap();
    assert!(login_for(&no_login, &Default::default()).unwrap().is_none());
}

#[tokio::test]
async fn an_unresolvable_password_is_a_secret_error() {
    let site = command_site("true", "10s");
    let mut site = site;
    site.accounts[0].password = Some(authkeeper_core::secret_ref::SecretRef::parse(
        "env:AUTHKEEPER_TEST_SURELY_UNSET_PASSWORD",
    ));
    let error = command_login(&site).await.unwrap_err();
    assert!(matches!(error, LoginError::Secret { .. }), "{error:?}");
    assert!(!error.is_transient());
    let _: &dyn SessionLogin = &CommandLogin::new("true".into(), Duration::from_secs(1));
}
