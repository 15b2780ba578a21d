//! `authkeeper sessions ...` and session leases through `authkeeper serve`, against the mock
//! login app with a real headless Chromium logging in by recipe; bad input never loses what is
//! stored, and a failed login leaves no Chromium behind.

use std::os::unix::fs::PermissionsExt as _;
use std::process::{Output, Stdio};
use std::time::Duration;

use authkeeper_mock::login_app::{LoginApp, LoginAppConfig};
use authkeeper_session::StorageState;
use sha2::Digest as _;
use tokio::io::AsyncBufReadExt as _;

use crate::support::Workspace;

const KEY: &str = "ak_sessions-cli-test-key";

fn workspace(app: &LoginApp) -> Workspace {
    let key_hash = hex(&sha2::Sha256::digest(KEY.as_bytes()));
    let ws = Workspace::new(&format!(
        r##"
[[clients]]
name = "robots"
key_sha256 = "{key_hash}"
sites = ["portal"]

[sites.portal]
origin = "{origin}"
accounts = [{{ name = "alice", username = "alice", password = "wonderland" }}]

[sites.portal.login]
steps = [
  {{ goto = "/login" }},
  {{ fill = "#username", value = "account:username" }},
  {{ fill = "#password", value = "account:password" }},
  {{ click = "#submit" }},
  {{ wait_for = "#welcome" }},
]
step_timeout = "20s"

[sites.portal.probe]
url = "/api/me"
"##,
        origin = app.base_url()
    ));
    std::fs::create_dir_all(ws.path().join("tmp")).unwrap();
    ws
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs `authkeeper ARGS` with TMPDIR inside the workspace (where Chromium profiles go).
async fn run(ws: &Workspace, args: &[&str], stdin: &[u8]) -> Output {
    let mut command = ws.command(args);
    command.env("TMPDIR", ws.path().join("tmp"));
    crate::support::run_with_input(command, stdin).await
}

fn text(output: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// No process names a profile under the workspace's temp dir, and no profile is left there.
fn assert_no_chromium_left(ws: &Workspace) {
    let tmp = ws.path().join("tmp");
    let needle = tmp.to_string_lossy().into_owned();
    let mut alive = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline"))
            && String::from_utf8_lossy(&cmdline).contains(&needle)
        {
            alive.push(entry.file_name());
        }
    }
    assert!(
        alive.is_empty(),
        "chromium processes left behind: {alive:?}"
    );
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "profiles left behind: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_export_import_lease_release_and_bad_input() {
    let app = LoginApp::start(LoginAppConfig::new(vec![(
        "alice".into(),
        "wonderland".into(),
    )]))
    .await
    .unwrap();
    let ws = workspace(&app);

    let login = run(
        &ws,
        &["sessions", "login", "portal", "alice", "--json"],
        b"",
    )
    .await;
    assert!(login.status.success(), "{}", text(&login));
    assert_eq!(app.stats().logins, 1);
    assert_no_chromium_left(&ws);

    let state_file = ws.path().join("state.json");
    authkeeper_testkit::expect_plaintext(&state_file);
    let export = run(
        &ws,
        &[
            "sessions",
            "export",
            "portal",
            "alice",
            "-o",
            state_file.to_str().unwrap(),
        ],
        b"",
    )
    .await;
    assert!(export.status.success(), "{}", text(&export));
    assert_eq!(
        std::fs::metadata(&state_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let exported = std::fs::read(&state_file).unwrap();
    let state = StorageState::from_json(&exported).expect("a Playwright storageState");
    let sid = state
        .cookies
        .iter()
        .find(|c| c.name == "sid")
        .expect("sid cookie");
    assert!(sid.http_only);
    let sid_value = sid.value.clone();

    // Listing and status output never carry a cookie value.
    let list = run(&ws, &["sessions", "list", "--json"], b"").await;
    assert!(list.status.success(), "{}", text(&list));
    assert!(!text(&list).contains(&sid_value));
    let listed: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(listed["sessions"][0]["id"], "alice.0");
    assert_eq!(listed["sessions"][0]["state"], "active");

    // Bad input: malformed JSON, a state of another site, garbage cookies.txt → clear errors,
    // and the stored state is untouched.
    for (input, expect) in [
        (&b"{\"cookies\": [ {\"name\": 1"[..], "line"),
        (&br#"{"cookies":[{"name":"x","value":"v","domain":"evil.example","path":"/","expires":-1,"httpOnly":false,"secure":false,"sameSite":"Lax"}],"origins":[]}"#[..], "evil.example"),
        (&b"not\ta\tcookies\tfile\n"[..], "line 1"),
    ] {
        let import = run(&ws, &["sessions", "import", "portal", "alice", "-"], input).await;
        assert!(!import.status.success(), "{}", text(&import));
        let stderr = String::from_utf8_lossy(&import.stderr);
        assert!(stderr.contains(expect), "{expect}: {}", text(&import));
        assert!(!stderr.contains("panicked"), "{}", text(&import));
    }
    let again = run(&ws, &["sessions", "export", "portal", "alice"], b"").await;
    assert_eq!(again.stdout, exported, "nothing stored was lost");

    // A cookies.txt import works and replaces the state.
    let origin = url::Url::parse(app.base_url()).unwrap();
    let host = origin.host_str().unwrap();
    let cookies_txt = format!(
        "# Netscape HTTP Cookie File\n#HttpOnly_{host}\tFALSE\t/\tFALSE\t0\tsid\timported-value\n"
    );
    let import = run(
        &ws,
        &["sessions", "import", "portal", "alice", "-"],
        cookies_txt.as_bytes(),
    )
    .await;
    assert!(import.status.success(), "{}", text(&import));
    let back = run(
        &ws,
        &[
            "sessions",
            "export",
            "portal",
            "alice.0",
            "--format",
            "cookies-txt",
        ],
        b"",
    )
    .await;
    assert!(
        String::from_utf8_lossy(&back.stdout).contains("imported-value"),
        "{}",
        text(&back)
    );
    let import = run(
        &ws,
        &[
            "sessions",
            "import",
            "portal",
            "alice",
            state_file.to_str().unwrap(),
        ],
        b"",
    )
    .await;
    assert!(import.status.success(), "{}", text(&import));

    // Lease: one holder at a time, release with an outcome.
    let lease = run(
        &ws,
        &["sessions", "lease", "portal", "--json", "--ttl", "1m"],
        b"",
    )
    .await;
    assert!(lease.status.success(), "{}", text(&lease));
    let lease: serde_json::Value = serde_json::from_slice(&lease.stdout).unwrap();
    let busy = run(&ws, &["sessions", "lease", "portal"], b"").await;
    assert!(!busy.status.success());
    assert!(
        String::from_utf8_lossy(&busy.stderr).contains("no session of site `portal` is free"),
        "{}",
        text(&busy)
    );
    let lease_id = lease["lease_id"].as_str().unwrap();
    let release = run(
        &ws,
        &[
            "sessions",
            "release",
            lease_id,
            "--outcome",
            "blocked",
            "--json",
        ],
        b"",
    )
    .await;
    assert!(release.status.success(), "{}", text(&release));
    let summary: serde_json::Value = serde_json::from_slice(&release.stdout).unwrap();
    assert_eq!(summary["state"], "retired");

    // The site blocks logins now: the next lease must log in again and fails clearly, leaving no
    // browser behind and the retired session as it was.
    app.set_blocking(Some(429));
    let blocked = run(&ws, &["sessions", "lease", "portal"], b"").await;
    assert!(!blocked.status.success());
    let stderr = String::from_utf8_lossy(&blocked.stderr);
    assert!(stderr.contains("429"), "{}", text(&blocked));
    assert!(!stderr.contains("wonderland"), "no password in errors");
    assert_no_chromium_left(&ws);
    app.set_blocking(None);
    app.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_hands_out_sessions_created_by_a_real_login() {
    let app = LoginApp::start(LoginAppConfig::new(vec![(
        "alice".into(),
        "wonderland".into(),
    )]))
    .await
    .unwrap();
    let ws = workspace(&app);
    let mut child = ws
        .command(&["serve", "--listen", "127.0.0.1:0"])
        .env("TMPDIR", ws.path().join("tmp"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let url = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let line = lines.next_line().await.unwrap().expect("serve exited");
            if let Some(url) = line.split("listening on ").nth(1) {
                return url.trim().to_owned();
            }
        }
    })
    .await
    .expect("serve printed its address");
    let http = reqwest::Client::new();
    let lease: serde_json::Value = http
        .post(format!("{url}/v1/sessions/portal/lease"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(lease["session_id"], "alice.0", "{lease}");
    assert_eq!(app.stats().logins, 1);
    let state: StorageState = serde_json::from_value(lease["storage_state"].clone()).unwrap();
    let me = format!("{}/api/me", app.base_url());
    let header = authkeeper_session::cookie_header(
        &state,
        &url::Url::parse(&me).unwrap(),
        authkeeper_core::Clock::now(&authkeeper_core::SystemClock::new()),
    )
    .expect("cookies for the site");
    let status = http
        .get(&me)
        .header("cookie", header)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200, "the leased session is logged in");
    let released = http
        .post(format!(
            "{url}/v1/leases/{}/release",
            lease["lease_id"].as_str().unwrap()
        ))
        .bearer_auth(KEY)
        .json(&serde_json::json!({"outcome": "ok"}))
        .send()
        .await
        .unwrap();
    assert_eq!(released.status(), 200);
    let _ = child.start_kill();
    let _ = child.wait().await;
    app.shutdown().await.unwrap();
}
