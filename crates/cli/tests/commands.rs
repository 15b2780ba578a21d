//! Everyday commands end to end: import, status, token --json, rekey.

use authkeeper_mock::{MockConfig, MockIdp};

use crate::support::Workspace;

#[tokio::test]
async fn import_status_token_and_rekey() {
    let idp = MockIdp::start(MockConfig::default()).await.expect("idp");
    let workspace =
        Workspace::with_credential("api", &idp.token_url(), "mock-client", "mock-secret");
    workspace
        .import("api", &idp.mint_grant(None, None).expect("grant"))
        .await;
    let key_before =
        std::fs::read(workspace.path().join("authkeeper.db.key")).expect("key file generated");

    let out = workspace.run(&["token", "api", "--json"], b"").await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(token["generation"], 1);
    assert_eq!(token["token_type"], "Bearer");
    assert!(
        token["expires_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );

    let out = workspace.run(&["status"], b"").await;
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("api") && table.contains("valid"), "{table}");

    let out = workspace.run(&["rekey"], b"").await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("re-sealed 1 record"));
    let key_after = std::fs::read(workspace.path().join("authkeeper.db.key")).expect("key file");
    assert_ne!(key_before, key_after, "the key file holds the new key");
    let again = workspace.run(&["token", "api", "--json"], b"").await;
    let again: serde_json::Value = serde_json::from_slice(&again.stdout).expect("json after rekey");
    assert_eq!(
        again["access_token"], token["access_token"],
        "tokens readable with the new key"
    );
}
