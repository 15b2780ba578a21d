//! Bad input gets a clear error, never a panic, and nothing stored is lost.

use authkeeper_mock::{MockConfig, MockIdp};

use crate::support::Workspace;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_clean_failure(out: &std::process::Output, mentions: &str) {
    let text = stderr(out);
    assert!(!out.status.success(), "should fail: {text}");
    assert!(!text.contains("panicked"), "panic: {text}");
    assert!(
        text.to_lowercase().contains(&mentions.to_lowercase()),
        "{text:?} should mention {mentions:?}"
    );
}

#[tokio::test]
async fn broken_token_responses_are_refused_and_keep_what_is_stored() {
    let idp = MockIdp::start(MockConfig::default()).await.expect("idp");
    let workspace =
        Workspace::with_credential("api", &idp.token_url(), "mock-client", "mock-secret");
    workspace
        .import("api", &idp.mint_grant(None, None).expect("grant"))
        .await;
    let good = workspace.token("api").await.expect("token");
    let cases: &[(&[u8], &str)] = &[
        (b"<html><body>502 Bad Gateway</body></html>", "not JSON"),
        (b"", "empty"),
        (br#"{"access_token":"x","expires_in":36"#, "truncated"),
        (br#"{"access_token":"x","expires_in":-10}"#, "expires_in"),
        (
            br#"{"access_token":"x","expires_in":99999999999}"#,
            "expires_in",
        ),
        (br#"{"token_type":"Bearer"}"#, "access_token"),
    ];
    for (input, mentions) in cases {
        let out = workspace.run(&["import", "api"], input).await;
        assert_clean_failure(&out, mentions);
        assert_eq!(out.status.code(), Some(1));
    }
    assert_eq!(
        workspace.token("api").await.expect("still there"),
        good,
        "stored tokens untouched"
    );
    assert_eq!(workspace.generation("api").await, 1);
}

#[tokio::test]
async fn a_corrupt_store_file_is_reported_and_left_alone() {
    let workspace = Workspace::with_credential("api", "http://127.0.0.1:9/token", "c", "s");
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(workspace.store(), &garbage).expect("plant garbage");
    for args in [&["status"][..], &["token", "api"][..]] {
        let out = workspace.run(args, b"").await;
        assert_clean_failure(&out, "store");
    }
    assert_eq!(
        std::fs::read(workspace.store()).expect("read"),
        garbage,
        "file untouched"
    );
}

#[tokio::test]
async fn a_wrong_key_is_a_clear_error_and_the_data_survives() {
    let idp = MockIdp::start(MockConfig::default()).await.expect("idp");
    let workspace =
        Workspace::with_credential("api", &idp.token_url(), "mock-client", "mock-secret");
    workspace
        .import("api", &idp.mint_grant(None, None).expect("grant"))
        .await;
    let good = workspace.token("api").await.expect("token");
    let mut command = workspace.command(&["token", "api"]);
    command.env(
        "AUTHKEEPER_KEY",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    );
    let out = crate::support::run_with_input(command, b"").await;
    assert_clean_failure(&out, "decrypt");
    let mut command = workspace.command(&["status"]);
    command.env("AUTHKEEPER_KEY", "not base64!");
    let out = crate::support::run_with_input(command, b"").await;
    assert_clean_failure(&out, "AUTHKEEPER_KEY");
    assert_eq!(
        workspace.token("api").await.expect("right key still works"),
        good
    );
}

#[tokio::test]
async fn unknown_credentials_and_bad_config_exit_with_configuration_code() {
    let workspace = Workspace::new(
        "[credentials.api]\nclient_id = \"x\"\ntoken_url = \"http://127.0.0.1:9/t\"\nclient_secret = \"s\"\n",
    );
    let out = workspace.run(&["token", "nope"], b"").await;
    assert_clean_failure(&out, "unknown credential");
    assert_eq!(out.status.code(), Some(2));
    let out = workspace.run(&["token", "api"], b"").await;
    assert_clean_failure(&out, "import");
    assert_eq!(out.status.code(), Some(3), "nothing stored: needs a login");
    std::fs::write(workspace.config(), "[credentials.api]\nclient_id = 1\n").expect("config");
    let out = workspace.run(&["status"], b"").await;
    assert_clean_failure(&out, "invalid config");
}
