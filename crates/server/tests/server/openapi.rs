//! The OpenAPI document (`docs/openapi.json`, served at `/openapi.json`) matches the router
//! and the real response bodies.

use std::collections::BTreeSet;

use authkeeper_server::app::ROUTES;
use authkeeper_server::problem::ProblemType;
use serde_json::Value;

use super::common::{KEY_A, knobs, start};

pub fn document() -> Value {
    serde_json::from_str(authkeeper_server::api::OPENAPI).expect("docs/openapi.json is JSON")
}

fn schema<'a>(doc: &'a Value, name: &str) -> &'a Value {
    &doc["components"]["schemas"][name]
}

/// Asserts `body` has every required property and nothing undocumented.
pub fn conforms(doc: &Value, name: &str, body: &Value) {
    let schema = schema(doc, name);
    let keys: BTreeSet<&str> = body
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    let required: BTreeSet<&str> = schema["required"]
        .as_array()
        .expect("required")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let documented: BTreeSet<&str> = schema["properties"]
        .as_object()
        .expect("properties")
        .keys()
        .map(String::as_str)
        .collect();
    assert!(
        required.is_subset(&keys),
        "{name}: missing {:?} in {body}",
        required.difference(&keys).collect::<Vec<_>>()
    );
    assert!(
        keys.is_subset(&documented),
        "{name}: undocumented {:?}",
        keys.difference(&documented).collect::<Vec<_>>()
    );
}

#[test]
fn the_document_is_openapi_3_1_and_lists_every_route() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    let on_disk: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/openapi.json"
        ))
        .expect("read docs/openapi.json"),
    )
    .expect("json");
    assert_eq!(on_disk, doc);
    for (method, path) in ROUTES {
        let item = &doc["paths"][*path];
        assert!(item.is_object(), "{path} is not documented");
        if *method != "ANY" {
            assert!(
                item[method.to_lowercase()].is_object(),
                "{method} {path} is not documented"
            );
        }
    }
    let types: Vec<&str> = schema(&doc, "Problem")["properties"]["type"]["enum"]
        .as_array()
        .expect("enum")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for kind in ProblemType::ALL {
        assert!(
            types.contains(&kind.uri().as_str()),
            "{} undocumented",
            kind.uri()
        );
    }
}

#[tokio::test]
async fn real_responses_match_the_document() {
    let t = start(knobs(60_000), None).await;
    t.ready().await;
    let doc = document();
    let served: Value = t
        .get("/openapi.json", None)
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(served, doc);

    let t = &t;
    let json = |path: &'static str| async move {
        t.get(path, Some(KEY_A))
            .send()
            .await
            .expect("send")
            .json::<Value>()
            .await
            .expect("json")
    };
    conforms(&doc, "Token", &json("/v1/credentials/crm/token").await);
    let list = json("/v1/credentials").await;
    conforms(&doc, "CredentialList", &list);
    for item in list["credentials"].as_array().expect("array") {
        conforms(&doc, "CredentialStatus", item);
    }
    conforms(&doc, "CredentialStatus", &json("/v1/credentials/crm").await);
    conforms(&doc, "Problem", &json("/v1/credentials/other").await);
    conforms(&doc, "Problem", &json("/nowhere").await);
    let health: Value = t
        .get("/healthz", None)
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    conforms(&doc, "Health", &health);
    let ready: Value = t
        .get("/readyz", None)
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    conforms(&doc, "Ready", &ready);
    let rejected: Value = t
        .http
        .post(format!("{}/v1/credentials/crm/rejected", t.url))
        .bearer_auth(KEY_A)
        .json(&serde_json::json!({ "generation": 0 }))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    conforms(&doc, "Token", &rejected);
    let saved: Value = t
        .http
        .put(format!("{}/v1/checkpoints/a.job", t.url))
        .bearer_auth(KEY_A)
        .json(&serde_json::json!({ "done": 3 }))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    conforms(&doc, "CheckpointSaved", &saved);
    conforms(&doc, "Problem", &json("/v1/checkpoints/a.none").await);
}
