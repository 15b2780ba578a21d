//! Exactly-once refresh across OS processes sharing one store file: against the mock IdP (with
//! reuse detection that revokes the grant), against the real `oidc-provider`, and with a lease
//! holder killed with SIGKILL.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use authkeeper_mock::{Knobs, MockConfig, MockIdp};
use tokio::io::AsyncBufReadExt as _;

use crate::support::Workspace;
use crate::support::oidc_provider::OidcProvider;

const PROCESS_LOOPS: usize = 4;
const RUN_FOR: Duration = Duration::from_secs(30);

async fn rotating_idp(access_ttl_ms: u64) -> MockIdp {
    let knobs = Knobs {
        access_ttl_ms,
        rotate_refresh_tokens: true,
        reuse_revokes_grant: true,
        ..Knobs::default()
    };
    MockIdp::start(MockConfig::default().with_knobs(knobs))
        .await
        .expect("mock idp")
}

/// Runs `PROCESS_LOOPS` loops of `authkeeper token api` + one API call each for `RUN_FOR`.
/// Returns (processes run, API calls answered 401).
async fn run_process_loops<F, Fut>(workspace: Arc<Workspace>, call_api: F) -> (u64, u64)
where
    F: Fn(String) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = u16> + Send,
{
    let processes = Arc::new(AtomicU64::new(0));
    let unauthorized = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + RUN_FOR;
    let mut loops = Vec::new();
    for _ in 0..PROCESS_LOOPS {
        let (workspace, processes, unauthorized, call_api) = (
            Arc::clone(&workspace),
            Arc::clone(&processes),
            Arc::clone(&unauthorized),
            call_api.clone(),
        );
        loops.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let token = match workspace.token("api").await {
                    Ok(token) => token,
                    Err(out) => panic!(
                        "authkeeper token failed: {}",
                        String::from_utf8_lossy(&out.stderr)
                    ),
                };
                processes.fetch_add(1, Ordering::Relaxed);
                let status = call_api(token).await;
                assert!(status == 200 || status == 401, "API status {status}");
                if status == 401 {
                    unauthorized.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for task in loops {
        task.await.expect("process loop");
    }
    (
        processes.load(Ordering::Relaxed),
        unauthorized.load(Ordering::Relaxed),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_processes_refresh_once_per_expiry_against_the_mock() {
    let idp = rotating_idp(2000).await;
    let workspace = Arc::new(Workspace::with_credential(
        "api",
        &idp.token_url(),
        "mock-client",
        "mock-secret",
    ));
    workspace
        .import("api", &idp.mint_grant(None, None).expect("grant"))
        .await;
    let http = reqwest::Client::new();
    let api = idp.api_url();
    let (processes, unauthorized) = run_process_loops(Arc::clone(&workspace), move |token| {
        let (http, api) = (http.clone(), api.clone());
        async move {
            http.get(&api)
                .bearer_auth(token)
                .send()
                .await
                .expect("api")
                .status()
                .as_u16()
        }
    })
    .await;
    let stats = idp.stats();
    let generations = workspace.generation("api").await - 1;
    println!(
        "{processes} `authkeeper token` processes in {RUN_FOR:?}: {} refresh calls for {generations} generations ({:.2} per expiry)",
        stats.refresh_calls,
        stats.refresh_calls as f64 / generations.max(1) as f64
    );
    assert!(processes > 100, "only {processes} processes ran");
    assert_eq!(unauthorized, 0, "a process handed out a dead token");
    assert_eq!(
        stats.reuse_detected, 0,
        "a refresh token was redeemed twice"
    );
    assert_eq!(stats.grants_revoked, 0, "grant alive");
    assert_eq!(
        stats.refresh_calls, generations,
        "one token-endpoint call per expiry"
    );
    assert!(
        generations >= 12,
        "30 s of 2 s tokens needs ~18 refreshes, got {generations}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_processes_keep_a_real_oidc_provider_grant_alive() {
    let provider = OidcProvider::start(5).expect("oidc-provider (run scripts/test to install it)");
    let login = provider.login().await.expect("scripted login");
    assert!(
        login.get("refresh_token").is_some(),
        "login returned a refresh token"
    );
    // The token endpoint is found by OIDC discovery from the issuer.
    let workspace = Arc::new(Workspace::new(&format!(
        "[credentials.api]\nissuer = \"{}\"\nclient_id = \"{}\"\nclient_secret = \"{}\"\n",
        provider.issuer(),
        provider.client_id(),
        provider.client_secret()
    )));
    workspace.import("api", &login).await;
    let provider = Arc::new(provider);
    let checker = Arc::clone(&provider);
    let (processes, unauthorized) = run_process_loops(Arc::clone(&workspace), move |token| {
        let provider = Arc::clone(&checker);
        async move { provider.userinfo_status(&token).await.expect("userinfo") }
    })
    .await;
    let generations = workspace.generation("api").await - 1;
    let redeemed = provider
        .stderr_log()
        .matches("refresh_token.consumed")
        .count() as u64;
    println!(
        "{processes} processes against oidc-provider: {generations} refreshes of 5 s tokens in {RUN_FOR:?}, {redeemed} refresh tokens redeemed"
    );
    assert_eq!(
        unauthorized,
        0,
        "a process handed out a dead token:\n{}",
        provider.stderr_log()
    );
    assert!(
        (4..=10).contains(&generations),
        "~7 refreshes expected, got {generations}"
    );
    assert_eq!(
        redeemed, generations,
        "one refresh-token redemption at the provider per generation"
    );
    // The grant survived: one more refresh through authkeeper still works (a replayed refresh
    // token would have revoked the whole grant).
    let out = workspace
        .run(&["token", "api", "--min-ttl", "4s"], b"")
        .await;
    assert!(
        out.status.success(),
        "grant dead: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        provider.stderr_log()
    );
    assert!(
        !provider.stderr_log().contains("grant.revoked"),
        "provider revoked the grant"
    );
}

/// A workspace whose credential `api` holds a fresh grant of `idp`.
async fn workspace_with_grant(idp: &MockIdp) -> Workspace {
    let workspace =
        Workspace::with_credential("api", &idp.token_url(), "mock-client", "mock-secret");
    workspace
        .import("api", &idp.mint_grant(None, None).expect("grant"))
        .await;
    workspace
}

/// Starts `authkeeper debug hold-lease api` and returns once it holds the refresh lease.
async fn hold_lease(workspace: &Workspace, ttl: &str) -> tokio::process::Child {
    let mut holder = workspace
        .command(&["debug", "hold-lease", "api", "--ttl", ttl])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("holder");
    let mut lines = tokio::io::BufReader::new(holder.stdout.take().expect("stdout")).lines();
    let line = lines.next_line().await.expect("read").expect("holder line");
    assert!(line.starts_with("holding lease"), "{line}");
    holder
}

/// Runs `authkeeper token api` needing 3.7 s of a 4 s token (usable 3.6 s), which forces a
/// refresh now; returns the token and how long it took.
async fn forced_refresh(workspace: &Workspace) -> (String, Duration) {
    let started = Instant::now();
    let out = workspace
        .run(&["token", "api", "--min-ttl", "3700ms"], b"")
        .await;
    let waited = started.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        waited,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_holder_killed_before_calling_the_idp_does_not_block_others() {
    let idp = rotating_idp(4000).await;
    let workspace = workspace_with_grant(&idp).await;
    let mut holder = hold_lease(&workspace, "20s").await;
    holder.start_kill().expect("SIGKILL");
    holder.wait().await.expect("reaped");
    let (token, waited) = forced_refresh(&workspace).await;
    assert!(
        waited < Duration::from_secs(20),
        "waited {waited:?}: longer than the dead holder's lease"
    );
    let status = reqwest::Client::new()
        .get(idp.api_url())
        .bearer_auth(&token)
        .send()
        .await
        .expect("api")
        .status();
    assert_eq!(status, 200);
    let stats = idp.stats();
    assert_eq!(
        (
            stats.refresh_calls,
            stats.reuse_detected,
            stats.grants_revoked
        ),
        (1, 0, 0)
    );
    println!("took over a SIGKILLed holder's lease after {waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_lease_holder_is_taken_over_when_its_lease_expires() {
    let idp = rotating_idp(4000).await;
    let workspace = workspace_with_grant(&idp).await;
    // The holder keeps its OS lock but stops (SIGSTOP): only the lease expiry frees the credential.
    let mut holder = hold_lease(&workspace, "2s").await;
    let pid = holder.id().expect("pid");
    let stopped = std::process::Command::new("kill")
        .args(["-STOP", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(stopped.success());
    let (_, waited) = forced_refresh(&workspace).await;
    holder.start_kill().expect("SIGKILL");
    let _ = holder.wait().await;
    assert!(
        waited >= Duration::from_millis(1000),
        "did not wait for the lease: {waited:?}"
    );
    assert!(waited < Duration::from_secs(15), "waited {waited:?}");
    assert_eq!(idp.stats().refresh_calls, 1);
}
