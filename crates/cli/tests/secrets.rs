//! Planted secrets never reach logs, errors, status output or the bytes on disk.

use authkeeper_mock::{MockClient, MockConfig, MockIdp};

use crate::support::Workspace;

const CLIENT_SECRET: &str = "PLANTED-CLIENT-SECRET-5f2b";

#[tokio::test]
async fn planted_secrets_stay_out_of_logs_output_and_files() {
    let idp = MockIdp::start(
        MockConfig::default().with_clients(vec![MockClient::new("planted", CLIENT_SECRET)]),
    )
    .await
    .expect("idp");
    let workspace = Workspace::with_credential("api", &idp.token_url(), "planted", CLIENT_SECRET);
    // Inline secrets are for tests only: this config holds one on purpose.
    authkeeper_testkit::expect_plaintext(&workspace.config());
    let grant = idp.mint_grant(None, None).expect("grant");
    let first_access = grant["access_token"].as_str().expect("access").to_owned();
    let first_refresh = grant["refresh_token"].as_str().expect("refresh").to_owned();
    workspace.import("api", &grant).await;

    let mut transcript = String::new();
    let mut record = |out: &std::process::Output, stdout_is_token: bool| {
        if !stdout_is_token {
            transcript.push_str(&String::from_utf8_lossy(&out.stdout));
        }
        transcript.push_str(&String::from_utf8_lossy(&out.stderr));
    };
    // A forced refresh with the most verbose logging.
    let mut command = workspace.command(&["token", "api", "--min-ttl", "3590s"]);
    command.env("AUTHKEEPER_LOG", "trace");
    let out = crate::support::run_with_input(command, b"").await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let second_access = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    record(&out, true);
    for args in [&["status"][..], &["status", "--json"][..]] {
        let mut command = workspace.command(args);
        command.env("AUTHKEEPER_LOG", "trace");
        record(&crate::support::run_with_input(command, b"").await, false);
    }
    // An error path: the IdP refuses a wrong client secret.
    std::fs::write(
        workspace.config(),
        format!(
            "[store]\npath = \"authkeeper.db\"\n[credentials.api]\ntoken_url = \"{}\"\nclient_id = \"planted\"\nclient_secret = \"{CLIENT_SECRET}\"\n[credentials.cc]\ntoken_url = \"{}\"\nclient_id = \"planted\"\ngrant = \"client_credentials\"\nclient_secret = \"{CLIENT_SECRET}-WRONG\"\n",
            idp.token_url(),
            idp.token_url()
        ),
    )
    .expect("config");
    let mut command = workspace.command(&["token", "cc"]);
    command.env("AUTHKEEPER_LOG", "trace");
    let out = crate::support::run_with_input(command, b"").await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "invalid_client is a configuration error"
    );
    record(&out, false);

    let stats = idp.stats();
    assert_eq!(stats.refresh_success, 1);
    assert!(
        transcript.contains("invalid_client"),
        "the error is explained: {transcript}"
    );
    let secrets = [
        first_access.as_str(),
        first_refresh.as_str(),
        second_access.as_str(),
        CLIENT_SECRET,
    ];
    for secret in secrets {
        assert!(
            !transcript.contains(secret),
            "a secret reached the output: {transcript}"
        );
    }
    for entry in std::fs::read_dir(workspace.path()).expect("dir").flatten() {
        if entry.file_name() == "authkeeper.toml" || !entry.path().is_file() {
            continue;
        }
        let bytes = std::fs::read(entry.path()).expect("read");
        for secret in &secrets[..3] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{} holds a secret in plaintext",
                entry.path().display()
            );
        }
    }
}
