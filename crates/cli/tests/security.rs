//! What the security hardening promises at the command line: children (the program of `exec`,
//! login commands, Chromium) never see the store key or a secret the configuration references
//! unless `pass_env` lists it.

use authkeeper_mock::{MockConfig, MockIdp};
use base64::Engine as _;

use crate::support::{Workspace, run_with_input};

/// A fresh store key, base64.
fn store_key() -> String {
    base64::engine::general_purpose::STANDARD.encode(rand_bytes())
}

fn rand_bytes() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = (std::process::id() as usize * 31 + i * 7) as u8;
    }
    bytes
}

/// A secret value with a recognizable marker.
fn planted(what: &str) -> String {
    authkeeper_testkit::planted(what)
}

/// The `NAME=value` lines of an `env` dump.
fn parse_env(dump: &str) -> Vec<(String, String)> {
    dump.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
}

/// Asserts the dumped environment holds neither the store key nor the planted secret.
fn assert_scrubbed(dump: &str, key: &str, secret: &str, who: &str) {
    let env = parse_env(dump);
    assert!(!env.is_empty(), "{who} printed no environment");
    for (name, value) in &env {
        assert!(
            !name.starts_with("AUTHKEEPER_KEY") && value != key,
            "{who} inherited the store key ({name})"
        );
        assert_ne!(name, "AUTHKEEPER_STORE", "{who} inherited the store path");
        assert!(
            !value.contains(secret),
            "{who} inherited a secret the config references ({name})"
        );
    }
    assert!(
        env.iter().any(|(name, _)| name == "PATH"),
        "{who} lost PATH: {dump}"
    );
}

fn workspace_with_secret(idp: &MockIdp, extra: &str) -> Workspace {
    Workspace::new(&format!(
        "[credentials.api]\ntoken_url = \"{}\"\nclient_id = \"mock-client\"\nclient_secret = \"env:CRM_SECRET\"\n{extra}",
        idp.token_url()
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_child_never_sees_the_store_key_or_referenced_secrets() {
    let idp = MockIdp::start(MockConfig::default()).await.expect("idp");
    let key = store_key();
    let secret = planted("exec-secret");
    for (pass_env, expect_secret) in [
        ("", false),
        ("[server]\npass_env = [\"CRM_SECRET\"]\n", true),
    ] {
        let workspace = workspace_with_secret(&idp, pass_env);
        let mut import = workspace.command(&["import", "api"]);
        import
            .env("AUTHKEEPER_KEY", &key)
            .env("CRM_SECRET", "mock-secret");
        let grant = idp.mint_grant(None, None).expect("grant").to_string();
        let out = run_with_input(import, grant.as_bytes()).await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut exec = workspace.command(&["exec", "api", "--", "env"]);
        exec.env("AUTHKEEPER_KEY", &key)
            .env("CRM_SECRET", &secret)
            .env("UNRELATED_VARIABLE", "kept");
        let out = run_with_input(exec, b"").await;
        let dump = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let env = parse_env(&dump);
        assert!(
            env.iter()
                .any(|(n, v)| n == "UNRELATED_VARIABLE" && v == "kept"),
            "the child keeps the rest of its environment"
        );
        for name in [
            "AUTHKEEPER_TOKEN_FILE",
            "AUTHKEEPER_URL",
            "AUTHKEEPER_API_KEY",
        ] {
            assert!(
                env.iter().any(|(n, _)| n == name),
                "{name} is set for the child"
            );
        }
        if expect_secret {
            assert!(
                env.iter().any(|(n, v)| n == "CRM_SECRET" && *v == secret),
                "pass_env passes CRM_SECRET through"
            );
            assert!(!env.iter().any(|(n, _)| n == "AUTHKEEPER_KEY"));
        } else {
            assert_scrubbed(&dump, &key, &secret, "the exec child");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_command_gets_only_what_it_is_documented_to_get() {
    let idp = MockIdp::start(MockConfig::default()).await.expect("idp");
    let key = store_key();
    let secret = planted("login-secret");
    let dir = authkeeper_testkit::temp_dir();
    let dump = dir.path().join("env.txt");
    let grant = dir.path().join("grant.json");
    authkeeper_testkit::expect_plaintext(&grant);
    std::fs::write(
        &grant,
        idp.mint_grant(None, None).expect("grant").to_string(),
    )
    .expect("grant");
    let workspace = workspace_with_secret(
        &idp,
        &format!(
            "login = {{ method = \"command\", command = \"env > {} && cat {}\" }}\n",
            dump.display(),
            grant.display()
        ),
    );
    let mut login = workspace.command(&["login", "api"]);
    login
        .env("AUTHKEEPER_KEY", &key)
        .env("CRM_SECRET", &secret)
        .env("UNRELATED_VARIABLE", "dropped");
    let out = run_with_input(login, b"").await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&dump).expect("the command dumped its environment");
    assert_scrubbed(&text, &key, &secret, "the login command");
    let env = parse_env(&text);
    assert!(
        env.iter()
            .any(|(n, v)| n == "AUTHKEEPER_CREDENTIAL" && v == "api")
    );
    assert!(
        env.iter()
            .any(|(n, v)| n == "AUTHKEEPER_CLIENT_ID" && v == "mock-client")
    );
    assert!(
        !env.iter().any(|(n, _)| n == "UNRELATED_VARIABLE"),
        "a login command gets a minimal environment"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_and_session_login_commands_get_a_scrubbed_environment() {
    let key = store_key();
    let secret = planted("site-password");
    let dir = authkeeper_testkit::temp_dir();
    let command_dump = dir.path().join("command-env.txt");
    // The site login command gets the account's password by design.
    authkeeper_testkit::expect_plaintext(&command_dump);
    let browser_dump = dir.path().join("browser-env.txt");
    // A "browser" that records its environment and fails to start (the login then fails: we
    // only need what it was given).
    let fake_chromium = dir.path().join("chromium");
    std::fs::write(
        &fake_chromium,
        format!("#!/bin/sh\nenv > {}\nexit 3\n", browser_dump.display()),
    )
    .expect("script");
    std::fs::set_permissions(
        &fake_chromium,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let workspace = Workspace::new(&format!(
        r#"
[sites.recipe]
origin = "http://127.0.0.1:9"
accounts = [{{ name = "alice", username = "alice", password = "env:SITE_PASSWORD" }}]
[sites.recipe.login]
steps = [{{ goto = "/login" }}]

[sites.command]
origin = "http://127.0.0.1:9"
accounts = [{{ name = "alice", username = "alice", password = "env:SITE_PASSWORD" }}]
[sites.command.login]
command = "env > {}; exit 1"
"#,
        command_dump.display()
    ));
    for site in ["recipe", "command"] {
        let mut login = workspace.command(&["sessions", "login", site, "alice"]);
        login
            .env("AUTHKEEPER_KEY", &key)
            .env("SITE_PASSWORD", &secret)
            .env("AUTHKEEPER_CHROMIUM", &fake_chromium);
        let out = run_with_input(login, b"").await;
        assert!(
            !out.status.success(),
            "the {site} login cannot succeed here"
        );
    }
    let browser = std::fs::read_to_string(&browser_dump).expect("the browser started");
    assert_scrubbed(&browser, &key, &secret, "Chromium");
    let command = std::fs::read_to_string(&command_dump).expect("the command ran");
    let env = parse_env(&command);
    // The command gets the account's password on purpose (documented), under its own name only.
    assert!(
        env.iter()
            .any(|(n, v)| n == "AUTHKEEPER_PASSWORD" && *v == secret)
    );
    assert!(
        !env.iter()
            .any(|(n, _)| n == "SITE_PASSWORD" || n == "AUTHKEEPER_KEY"),
        "the session login command inherited a secret variable"
    );
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every configuration mistake is found at load and exits 2 (configuration), naming the problem.
#[tokio::test]
async fn configuration_mistakes_exit_2_at_load() {
    let cases = [
        (
            "invalid TOML",
            "[credentials.api\nclient_id = \"x\"\n",
            "config",
        ),
        (
            "a token_url with an ftp:// scheme",
            "[credentials.api]\ntoken_url = \"ftp://idp.example/token\"\nclient_id = \"x\"\nclient_secret = \"s\"\n",
            "ftp",
        ),
        (
            "a client secret from an unset variable",
            "[credentials.api]\ntoken_url = \"https://idp.example/token\"\nclient_id = \"x\"\nclient_secret = \"env:AUTHKEEPER_TEST_UNSET_SECRET\"\n",
            "AUTHKEEPER_TEST_UNSET_SECRET",
        ),
        (
            "basic client authentication without a secret",
            "[credentials.api]\ntoken_url = \"https://idp.example/token\"\nclient_id = \"x\"\nauth_method = \"client_secret_basic\"\n",
            "client_secret",
        ),
        (
            "a session credential of a site that is not configured",
            "[credentials.api]\ngrant = \"session\"\nsite = \"nowhere\"\naccount = \"alice\"\ntoken_from = { local_storage = \"t\" }\n",
            "nowhere",
        ),
        (
            "a lease shorter than the token request",
            "[store]\nlease_ttl = \"1s\"\n[credentials.api]\ntoken_url = \"https://idp.example/token\"\nclient_id = \"x\"\nclient_secret = \"s\"\n",
            "lease_ttl",
        ),
    ];
    for (what, config, mentions) in cases {
        let workspace = Workspace::new("");
        let text = if config.starts_with("[store]") {
            config.replacen("[store]\n", "[store]\npath = \"authkeeper.db\"\n", 1)
        } else {
            format!("[store]\npath = \"authkeeper.db\"\n\n{config}")
        };
        std::fs::write(workspace.config(), text).expect("config");
        let out = workspace.run(&["status"], b"").await;
        assert_eq!(out.status.code(), Some(2), "{what}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(mentions),
            "{what}: the error names {mentions:?}: {}",
            stderr(&out)
        );
        assert!(!stderr(&out).contains("panicked"), "{what}");
    }
}

/// A key file others can read is refused (exit 2) unless `--allow-insecure-key-file` is given.
#[tokio::test]
async fn a_readable_key_file_is_refused_unless_allowed() {
    use std::os::unix::fs::PermissionsExt as _;
    let workspace = Workspace::new("");
    let out = workspace.run(&["status"], b"").await;
    assert!(out.status.success(), "{}", stderr(&out));
    let key_file = workspace.path().join("authkeeper.db.key");
    let mode = std::fs::metadata(&key_file)
        .expect("key file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "a generated key file is private");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = workspace.run(&["status"], b"").await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--allow-insecure-key-file"),
        "{}",
        stderr(&out)
    );
    let out = workspace
        .run(&["--allow-insecure-key-file", "status"], b"")
        .await;
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Someone piping a raw token into `import` does not get it echoed back.
#[tokio::test]
async fn import_never_quotes_its_input() {
    let workspace = Workspace::with_credential("api", "https://idp.example/token", "x", "s");
    let raw = planted("raw-access-token");
    let out = workspace.run(&["import", "api"], raw.as_bytes()).await;
    assert!(!out.status.success());
    let text = format!("{}{}", stderr(&out), String::from_utf8_lossy(&out.stdout));
    assert!(text.contains("JSON"), "says what was expected: {text}");
    assert!(!text.contains(&raw[..12]), "the input was echoed: {text}");
}

/// Logs written to a pipe or a file carry no ANSI colour codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_to_a_pipe_have_no_colour_codes() {
    let idp = MockIdp::start(MockConfig::default()).await.expect("idp");
    let workspace =
        Workspace::with_credential("api", &idp.token_url(), "mock-client", "mock-secret");
    let mut grant = idp.mint_grant(None, None).expect("grant");
    // `--min-ttl 19s` on a 20 s token: `token` refreshes first.
    grant["expires_in"] = serde_json::json!(20);
    workspace.import("api", &grant).await;
    let mut token = workspace.command(&["token", "--min-ttl", "19s", "api"]);
    token.env("AUTHKEEPER_LOG", "debug");
    let out = run_with_input(token, b"").await;
    assert!(out.status.success(), "{}", stderr(&out));
    let log = stderr(&out);
    assert!(log.contains("refresh"), "the refresh was logged: {log}");
    assert!(!log.contains('\u{1b}'), "ANSI codes in a piped log: {log}");
}
