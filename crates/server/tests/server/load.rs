//! 200 concurrent clients on the token API for 30 s against a mock IdP with 2 s tokens,
//! refresh-token rotation and reuse revocation: no 401 reaches a client, exactly one refresh
//! per generation, no refresh token reused, the grant survives.

use crate::cred;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::common::{KEY_A, knobs, start};

#[derive(Default)]
struct Counts {
    calls: AtomicU64,
    api_401: AtomicU64,
    errors: AtomicU64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_clients_never_see_a_401() {
    let seconds: u64 = std::env::var("AUTHKEEPER_LOAD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let t = start(knobs(2_000), None).await;
    t.ready().await;
    let counts = Arc::new(Counts::default());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    let mut clients = Vec::new();
    for _ in 0..200 {
        let (http, url, api, counts) = (
            t.http.clone(),
            t.url.clone(),
            t.idp.api_url(),
            Arc::clone(&counts),
        );
        clients.push(tokio::spawn(async move {
            while tokio::time::Instant::now() < deadline {
                if let Err(error) = one_call(&http, &url, &api, &counts).await {
                    eprintln!("client error: {error}");
                    counts.errors.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }
    for client in clients {
        client.await.expect("client task");
    }
    // Stop the broker first: its heartbeat would otherwise refresh between the two readings.
    t.broker.shutdown().await.expect("shutdown");
    let stats = t.idp.stats();
    // The heartbeat also keeps `other` fresh: count the generations of both credentials.
    let mut generations = 0;
    for name in ["crm", "other"] {
        let stored = t
            .store
            .load(&cred(name))
            .await
            .expect("load")
            .expect("stored");
        generations += stored.generation - 1;
    }
    let calls = counts.calls.load(Ordering::Relaxed);
    eprintln!(
        "calls={calls} api_401={} errors={} refresh_calls={} generations={generations}",
        counts.api_401.load(Ordering::Relaxed),
        counts.errors.load(Ordering::Relaxed),
        stats.refresh_calls
    );
    assert!(calls > 1000, "too few calls: {calls}");
    assert_eq!(
        counts.api_401.load(Ordering::Relaxed),
        0,
        "401s reached clients"
    );
    assert_eq!(counts.errors.load(Ordering::Relaxed), 0, "client errors");
    assert!(
        generations >= seconds / 2,
        "tokens were refreshed: {generations}"
    );
    assert_eq!(
        stats.refresh_calls, generations,
        "one refresh per generation"
    );
    assert_eq!(stats.reuse_detected, 0);
    assert_eq!(stats.grants_revoked, 0);
    assert!(stats.grants.iter().all(|g| g.alive), "grant alive");
}

async fn one_call(
    http: &reqwest::Client,
    url: &str,
    api: &str,
    counts: &Counts,
) -> Result<(), String> {
    let token = fetch(
        http.get(format!("{url}/v1/credentials/crm/token?min_ttl=0"))
            .bearer_auth(KEY_A),
    )
    .await?;
    let mut access = token.0;
    for attempt in 0..2 {
        let response = http
            .get(api)
            .bearer_auth(&access)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        counts.calls.fetch_add(1, Ordering::Relaxed);
        match response.status().as_u16() {
            200 => return Ok(()),
            401 if attempt == 0 => {
                counts.api_401.fetch_add(1, Ordering::Relaxed);
                let newer = fetch(
                    http.post(format!("{url}/v1/credentials/crm/rejected"))
                        .bearer_auth(KEY_A)
                        .json(&serde_json::json!({ "generation": token.1 })),
                )
                .await?;
                access = newer.0;
            }
            status => return Err(format!("API answered {status}")),
        }
    }
    Err("still 401 after a refresh".into())
}

async fn fetch(request: reqwest::RequestBuilder) -> Result<(String, u64), String> {
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("broker answered {status}: {body}"));
    }
    Ok((
        body["access_token"].as_str().unwrap_or_default().to_owned(),
        body["generation"].as_u64().unwrap_or_default(),
    ))
}
