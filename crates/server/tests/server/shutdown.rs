//! Graceful shutdown: a refresh in flight completes and is stored before the broker returns.

use crate::cred;
use std::time::Duration;

use super::common::{KEY_A, knobs, start};

#[tokio::test]
async fn a_refresh_in_flight_is_stored_before_shutdown_returns() {
    let mut slow = knobs(60_000);
    slow.token_latency_ms = 1000;
    let t = start(slow, None).await;
    t.ready().await;
    let first: serde_json::Value = t
        .get("/v1/credentials/crm/token", Some(KEY_A))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let generation = first["generation"].as_u64().expect("generation");
    let request = t
        .http
        .post(format!("{}/v1/credentials/crm/rejected", t.url))
        .bearer_auth(KEY_A)
        .json(&serde_json::json!({ "generation": generation }))
        .send();
    let in_flight = tokio::spawn(request);
    // Let the refresh reach the (slow) token endpoint, then shut down.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopped = tokio::time::Instant::now();
    t.broker.shutdown().await.expect("shutdown");
    assert!(stopped.elapsed() >= Duration::from_millis(500));
    let stored = t
        .store
        .load(&cred("crm"))
        .await
        .expect("load")
        .expect("stored");
    assert_eq!(stored.generation, generation + 1, "refreshed tokens stored");
    // The in-flight request was answered with the new token.
    let response = in_flight.await.expect("task").expect("answered");
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["generation"].as_u64(), Some(generation + 1));
}
