//! Client keys: 401 without or with a wrong key, 403 for a credential the key may not use and
//! the same 403 for one that does not exist; health without a key; metrics after a refresh.

use super::common::{KEY_A, KEY_B, KEY_OPS, knobs, problem, start};

#[tokio::test]
async fn no_key_and_wrong_key_get_401_with_a_challenge() {
    let t = start(knobs(60_000), None).await;
    for key in [None, Some("ak_wrong")] {
        let response = t
            .get("/v1/credentials/crm/token", key)
            .send()
            .await
            .expect("send");
        assert_eq!(
            response.headers()["www-authenticate"],
            "Bearer realm=\"authkeeper\""
        );
        let body = problem(response, 401, "unauthorized").await;
        assert!(!body.to_string().contains("ak_wrong"));
    }
    let response = t
        .http
        .get(format!("{}/v1/credentials", t.url))
        .basic_auth("a", Some(KEY_A))
        .send()
        .await
        .expect("send");
    problem(response, 401, "unauthorized").await;
}

#[tokio::test]
async fn forbidden_and_unknown_credentials_are_indistinguishable() {
    let t = start(knobs(60_000), None).await;
    let ok = t
        .get("/v1/credentials/crm/token", Some(KEY_A))
        .send()
        .await
        .expect("send");
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["cache-control"], "no-store");
    let token: serde_json::Value = ok.json().await.expect("json");
    assert!(token["access_token"].is_string() && token["generation"].as_u64() >= Some(1));

    let forbidden = t
        .get("/v1/credentials/other/token", Some(KEY_A))
        .send()
        .await
        .expect("send");
    let forbidden = problem(forbidden, 403, "forbidden").await;
    let unknown = t
        .get("/v1/credentials/nope/token", Some(KEY_A))
        .send()
        .await
        .expect("send");
    let unknown = problem(unknown, 403, "forbidden").await;
    assert_eq!(forbidden, unknown);
    for path in ["/v1/credentials/other", "/v1/credentials/nope"] {
        let response = t.get(path, Some(KEY_A)).send().await.expect("send");
        assert_eq!(problem(response, 403, "forbidden").await, forbidden);
    }

    // Client a lists only what it may use; client b sees everything; nothing secret.
    let list: serde_json::Value = t
        .get("/v1/credentials", Some(KEY_A))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let names: Vec<_> = list["credentials"]
        .as_array()
        .expect("array")
        .iter()
        .map(|c| c["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(names, ["crm"]);
    let all = t
        .get("/v1/credentials", Some(KEY_B))
        .send()
        .await
        .expect("send");
    let all = all.text().await.expect("text");
    assert!(
        all.contains("\"other\"")
            && !all.contains("access_token")
            && !all.contains(token["access_token"].as_str().unwrap_or("x"))
    );
}

#[tokio::test]
async fn health_needs_no_key_and_metrics_count_refreshes() {
    let t = start(knobs(60_000), None).await;
    assert_eq!(
        t.get("/healthz", None).send().await.expect("send").status(),
        200
    );
    t.ready().await;
    // Probes answer a status, nothing about credentials, errors or the store's address.
    let ready: serde_json::Value = t
        .get("/readyz", None)
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(ready, serde_json::json!({ "status": "ready" }));
    let token: serde_json::Value = t
        .get("/v1/credentials/crm/token", Some(KEY_A))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let generation = token["generation"].as_u64().expect("generation");
    let refreshed = t
        .http
        .post(format!("{}/v1/credentials/crm/rejected", t.url))
        .bearer_auth(KEY_A)
        .json(&serde_json::json!({ "generation": generation }))
        .send()
        .await
        .expect("send");
    assert_eq!(refreshed.status(), 200);
    let refreshed: serde_json::Value = refreshed.json().await.expect("json");
    assert_eq!(refreshed["generation"].as_u64(), Some(generation + 1));
    // /metrics needs a key with the `metrics` permission (a worker's key is not enough).
    let anonymous = t.get("/metrics", None).send().await.expect("send");
    assert_eq!(anonymous.status(), 401);
    let worker = t.get("/metrics", Some(KEY_A)).send().await.expect("send");
    assert_eq!(worker.status(), 403);
    let metrics = t.get("/metrics", Some(KEY_OPS)).send().await.expect("send");
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.expect("text");
    for needle in [
        "authkeeper_refreshes_total{credential=\"crm\",result=\"ok\"} 1",
        "authkeeper_rejections_total{credential=\"crm\",refreshed=\"true\"} 1",
        "authkeeper_token_requests_total{credential=\"crm\",outcome=\"ok\"} 1",
        "authkeeper_refresh_duration_seconds_count 1",
        "authkeeper_credentials_needing_reauth 0",
        "authkeeper_circuit_state{credential=\"crm\"} 0",
        "authkeeper_token_expiry_seconds{credential=\"crm\"}",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    assert!(!text.contains(refreshed["access_token"].as_str().unwrap_or("x")));
}
