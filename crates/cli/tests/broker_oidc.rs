//! The broker's token API under load against the real `oidc-provider`: 200 concurrent clients
//! of an `authkeeper serve` process for 30 s, 5 s access tokens with refresh-token rotation.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use authkeeper_server::NewKey;
use tokio::io::AsyncBufReadExt as _;

use crate::support::Workspace;
use crate::support::oidc_provider::OidcProvider;

const CLIENTS: usize = 200;
const RUN_FOR: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_broker_clients_keep_a_real_oidc_provider_grant_alive() {
    let provider = Arc::new(OidcProvider::start(5).expect("oidc-provider (run scripts/test)"));
    let login = provider.login().await.expect("scripted login");
    let key = NewKey::generate();
    let workspace = Workspace::new(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[[clients]]\nname = \"load\"\nkey_sha256 = \"{}\"\ncredentials = [\"api\"]\n\n\
         [credentials.api]\nissuer = \"{}\"\nclient_id = \"{}\"\nclient_secret = \"{}\"\n",
        key.sha256(),
        provider.issuer(),
        provider.client_id(),
        provider.client_secret()
    ));
    workspace.import("api", &login).await;
    let mut broker = workspace
        .command(&["serve"])
        .env("AUTHKEEPER_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("authkeeper serve");
    let mut lines = tokio::io::BufReader::new(broker.stdout.take().expect("stdout")).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("broker started in time")
        .expect("read")
        .expect("listening line");
    let base = line
        .rsplit(' ')
        .next()
        .expect("url at the end of the line")
        .to_owned();

    let http = reqwest::Client::new();
    let unauthorized = Arc::new(AtomicU64::new(0));
    let calls = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + RUN_FOR;
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (http, base, key, provider, unauthorized, calls) = (
            http.clone(),
            base.clone(),
            key.expose_key().to_owned(),
            Arc::clone(&provider),
            Arc::clone(&unauthorized),
            Arc::clone(&calls),
        );
        clients.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let answer: serde_json::Value = http
                    // Ask for a token that outlives the API call (oidc-provider's /me answers slowly
                    // under 200 clients), as a worker should.
                    .get(format!("{base}/v1/credentials/api/token?min_ttl=1"))
                    .bearer_auth(&key)
                    .send()
                    .await
                    .expect("token API")
                    .error_for_status()
                    .expect("token API status")
                    .json()
                    .await
                    .expect("token JSON");
                let token = answer["access_token"].as_str().expect("access_token");
                let status = provider.userinfo_status(token).await.expect("userinfo");
                calls.fetch_add(1, Ordering::Relaxed);
                if status == 401 {
                    unauthorized.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
    }
    for client in clients {
        client.await.expect("client");
    }
    let _ = terminate(&broker);
    let _ = broker.wait().await;
    let generations = workspace.generation("api").await - 1;
    let redeemed = provider
        .stderr_log()
        .matches("refresh_token.consumed")
        .count() as u64;
    println!(
        "{} calls by {CLIENTS} broker clients in {RUN_FOR:?}: {generations} refreshes, {redeemed} refresh tokens redeemed",
        calls.load(Ordering::Relaxed)
    );
    assert!(calls.load(Ordering::Relaxed) > 1000, "clients ran");
    assert_eq!(
        unauthorized.load(Ordering::Relaxed),
        0,
        "a client got a dead token"
    );
    assert!(
        (4..=10).contains(&generations),
        "~7 refreshes expected, got {generations}"
    );
    assert_eq!(redeemed, generations, "one redemption per generation");
    assert!(
        !provider.stderr_log().contains("grant.revoked"),
        "grant alive"
    );
}

/// Asks the broker to shut down gracefully (SIGTERM).
fn terminate(child: &tokio::process::Child) -> std::io::Result<()> {
    let pid = child.id().ok_or_else(|| std::io::Error::other("exited"))?;
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .map(|_| ())
}
