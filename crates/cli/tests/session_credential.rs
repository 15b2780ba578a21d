//! A credential backed by a browser session (`grant = "session"`) against a single-page-app style
//! site that binds its login to the user agent and to the egress it came through: a real
//! Chromium logs the account in through the account's forward proxy, the broker serves the JWT
//! the app keeps in localStorage to 8 worker processes × 10 threads through its injecting proxy,
//! and renews it through the app's rotating HttpOnly refresh cookie — one renewal per expiry, 0
//! worker-visible 401s, no refresh-cookie reuse, every request through the proxy with one user
//! agent. `AUTHKEEPER_SPA_SECONDS` sets the run length (default 25; the issue's run is 120).

use std::collections::BTreeMap;
use std::time::Duration;

use authkeeper_mock::{ForwardProxy, ForwardProxyOptions, SpaApp, SpaConfig};
use authkeeper_server::NewKey;

use crate::support::{ServeProcess, Workspace};

const USER_AGENT: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36 authkeeper-spa-test";
const PROCESSES: usize = 8;
const THREADS: usize = 10;

/// One worker process: THREADS threads calling the API through the broker's proxy until the
/// deadline; prints `{"requests": N, "statuses": {"200": N, ...}}`.
const WORKER: &str = r#"
import json, sys, threading, time, urllib.request, urllib.error
base, key, seconds, threads = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
deadline = time.monotonic() + seconds
lock = threading.Lock()
statuses = {}
def work():
    while time.monotonic() < deadline:
        request = urllib.request.Request(base + "/proxy/spa-api/api/data", headers={"Authorization": "Bearer " + key})
        try:
            with urllib.request.urlopen(request, timeout=20) as response:
                status = response.status
                response.read()
        except urllib.error.HTTPError as error:
            status = error.code
        except Exception:
            status = 0
        with lock:
            statuses[str(status)] = statuses.get(str(status), 0) + 1
        time.sleep(0.005)
workers = [threading.Thread(target=work) for _ in range(threads)]
for w in workers: w.start()
for w in workers: w.join()
print(json.dumps({"requests": sum(statuses.values()), "statuses": statuses}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eighty_workers_use_a_session_backed_credential_through_one_identity() {
    let seconds: u64 = std::env::var("AUTHKEEPER_SPA_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(25);
    let password = authkeeper_testkit::planted("spa-password");
    let proxy = ForwardProxy::start(ForwardProxyOptions {
        identity: "egress-alice".into(),
        credentials: Some(("alice-egress".into(), authkeeper_testkit::planted("egress"))),
    })
    .await
    .expect("forward proxy");
    let spa = SpaApp::start(SpaConfig {
        token_ttl: Duration::from_secs(10),
        ..SpaConfig::new(vec![("alice".into(), password.clone())])
    })
    .await
    .expect("spa");
    let key = NewKey::generate();
    let workspace = Workspace::new(&format!(
        r##"
[server]
listen = "127.0.0.1:0"

[[clients]]
name = "w"
key_sha256 = "{hash}"
credentials = ["spa-api"]

[sites.spa]
origin = "{origin}"
accounts = [{{ name = "alice", username = "alice", password = "{password}", proxy = "{proxy}" }}]
identity = {{ user_agents = ["{USER_AGENT}"], locales = ["en-GB"], timezones = ["Europe/London"] }}

[sites.spa.login]
steps = [
  {{ goto = "/login" }},
  {{ fill = "#username", value = "account:username" }},
  {{ fill = "#password", value = "account:password" }},
  {{ click = "#submit" }},
  {{ wait_for_url = "/app" }},
  {{ wait_for = "#ready" }},
]

[credentials.spa-api]
grant = "session"
site = "spa"
account = "alice"
token_from = {{ local_storage = "access_token" }}
renew = {{ refresh_url = "/api/auth/refresh" }}
upstream = "{origin}"
timeout = "5s"
"##,
        hash = key.sha256(),
        origin = spa.base_url(),
        proxy = proxy.url(),
    ));
    // Inline secrets are for tests only: this config holds the password and the proxy's.
    authkeeper_testkit::expect_plaintext(&workspace.config());
    let broker = ServeProcess::start(&workspace).await;

    let mut workers = Vec::new();
    for _ in 0..PROCESSES {
        workers.push(
            tokio::process::Command::new("python3")
                .args([
                    "-c",
                    WORKER,
                    &broker.url,
                    key.expose_key(),
                    &seconds.to_string(),
                    &THREADS.to_string(),
                ])
                .stdout(std::process::Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .expect("python3 worker"),
        );
    }
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    let mut requests = 0;
    for worker in workers {
        let out = worker.wait_with_output().await.expect("worker");
        assert!(out.status.success(), "a worker failed");
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("worker report");
        requests += report["requests"].as_u64().unwrap_or(0);
        for (status, count) in report["statuses"].as_object().into_iter().flatten() {
            *statuses.entry(status.clone()).or_default() += count.as_u64().unwrap_or(0);
        }
    }
    let app = spa.stats();
    let egress = proxy.stats();
    println!(
        "{PROCESSES} processes x {THREADS} threads, {seconds} s: {requests} requests, statuses {statuses:?}; \
         app: {} logins, {} refreshes, {} API OK, {} API 401, reuse {}, identity mismatches {}, by egress {:?}, user agents {}; \
         proxy: {} forwarded, {} refused",
        app.logins,
        app.refreshes,
        app.api_ok,
        app.api_unauthorized,
        app.reuse_detected,
        app.identity_mismatch,
        app.by_egress,
        app.user_agents.len(),
        egress.forwarded,
        egress.refused,
    );
    assert!(requests > 100, "the workers got through: {requests}");
    assert_eq!(
        statuses.get("200").copied().unwrap_or(0),
        requests,
        "every worker request succeeded: {statuses:?}"
    );
    assert_eq!(app.reuse_detected, 0, "no refresh cookie was used twice");
    assert_eq!(
        app.identity_mismatch, 0,
        "one user agent and egress throughout"
    );
    assert_eq!(app.logins, 1, "one login");
    // Renewed at 80 % of the 10 s lifetime: one refresh per ~8 s, never two for one expiry.
    assert!(
        app.refreshes >= seconds / 10 && app.refreshes <= seconds / 8 + 1,
        "one refresh per expiry: {} refreshes in {seconds} s of 10 s tokens",
        app.refreshes
    );
    assert_eq!(
        app.by_egress.keys().collect::<Vec<_>>(),
        ["egress-alice"],
        "nothing reached the app directly"
    );
    assert_eq!(
        app.user_agents.iter().collect::<Vec<_>>(),
        [USER_AGENT],
        "one user agent"
    );
    let total: u64 = app.by_egress.values().sum();
    assert!(
        egress.forwarded >= total,
        "every request the app saw went through the proxy ({} forwarded, {total} seen)",
        egress.forwarded
    );
    drop(broker);
}
