//! `[providers]` and connections end to end: a credential inheriting its provider, and
//! `authkeeper credentials add|list|show|rm` against a running `authkeeper serve`.

use authkeeper_mock::{MockConfig, MockIdp};
use authkeeper_server::NewKey;

use crate::support::{ServeProcess, Workspace};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_and_connections_through_the_cli() {
    let idp = MockIdp::start(MockConfig::default()).await.expect("idp");
    let admin = NewKey::generate();
    let workspace = Workspace::new(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n\
         [[clients]]\nname = \"admin\"\nkey_sha256 = \"{}\"\ncredentials = [\"*\"]\npermissions = [\"token\", \"credentials:write\"]\n\n\
         [providers.mock]\ntoken_url = \"{}\"\nclient_id = \"mock-client\"\nclient_secret = \"mock-secret\"\n\n\
         [credentials.fixed]\nprovider = \"mock\"\nlabels = {{ team = \"a\" }}\n",
        admin.sha256(),
        idp.token_url(),
    ));
    let grant = || serde_json::to_value(idp.mint_grant(None, None).expect("grant")).expect("json");
    // The configured credential works through its provider's endpoint and client.
    workspace.import("fixed", &grant()).await;
    let token = workspace.token("fixed").await.expect("token");
    assert!(!token.is_empty());

    let broker = ServeProcess::start(&workspace).await;
    let cli = |args: &[&str]| {
        let mut command = workspace.command(args);
        command
            .env("AUTHKEEPER_URL", &broker.url)
            .env("AUTHKEEPER_API_KEY", admin.expose_key());
        command
    };
    let run = |args: &'static [&'static str], stdin: Vec<u8>| {
        let command = cli(args);
        async move { crate::support::run_with_input(command, &stdin).await }
    };
    let text = |output: &std::process::Output| String::from_utf8_lossy(&output.stdout).into_owned();

    let added = run(
        &[
            "credentials",
            "add",
            "u1",
            "--provider",
            "mock",
            "--label",
            "tenant=7",
            "--token-response",
        ],
        serde_json::to_vec(&grant()).expect("json"),
    )
    .await;
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    assert!(
        text(&added).contains("u1") && text(&added).contains("valid"),
        "{}",
        text(&added)
    );

    let listed = run(&["credentials", "list"], Vec::new()).await;
    assert!(listed.status.success());
    let listed = text(&listed);
    let names: Vec<&str> = listed
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert_eq!(names, ["fixed", "u1"]);
    let by_label = run(
        &["credentials", "list", "--label", "tenant=7", "--json"],
        Vec::new(),
    )
    .await;
    let rows: Vec<serde_json::Value> = text(&by_label)
        .lines()
        .map(|line| serde_json::from_str(line).expect("json line"))
        .collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["name"], "u1");
    let by_team = run(
        &["credentials", "list", "--label", "team=a", "--json"],
        Vec::new(),
    )
    .await;
    assert!(text(&by_team).contains("\"fixed\"") && !text(&by_team).contains("\"u1\""));

    let shown = run(&["credentials", "show", "u1"], Vec::new()).await;
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).expect("json");
    assert_eq!(shown["state"], "valid");
    assert!(!shown.to_string().contains("access_token"));

    let token = reqwest::Client::new()
        .get(format!("{}/v1/credentials/u1/token", broker.url))
        .bearer_auth(admin.expose_key())
        .send()
        .await
        .expect("send");
    assert_eq!(token.status(), 200);

    let duplicate = run(
        &["credentials", "add", "u1", "--provider", "mock"],
        Vec::new(),
    )
    .await;
    assert!(!duplicate.status.success());
    assert!(String::from_utf8_lossy(&duplicate.stderr).contains("already-exists"));

    let removed = run(&["credentials", "rm", "u1"], Vec::new()).await;
    assert!(
        removed.status.success(),
        "{}",
        String::from_utf8_lossy(&removed.stderr)
    );
    let listed = run(&["credentials", "list", "--json"], Vec::new()).await;
    assert!(!text(&listed).contains("\"u1\""));
    let missing_key = workspace
        .command(&["credentials", "list"])
        .env("AUTHKEEPER_URL", &broker.url)
        .env_remove("AUTHKEEPER_API_KEY")
        .output()
        .await
        .expect("run");
    assert_eq!(missing_key.status.code(), Some(2), "a configuration error");
}
