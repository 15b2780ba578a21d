//! `authkeeper exec`: a child reading its token file across several expiries always finds a
//! valid token; signals reach the child; the child's exit status is ours.

use std::time::Duration;

use authkeeper_mock::{Knobs, MockConfig, MockIdp};

use crate::support::Workspace;

/// A child that reads the token file every 50 ms for 10 s, calls the API with it and prints the
/// status of each call.
const CHILD: &str = r#"
import os, sys, time, urllib.request, urllib.error
path, api = os.environ["AUTHKEEPER_TOKEN_FILE"], sys.argv[1]
mode = oct(os.stat(path).st_mode & 0o777)
deadline = time.time() + 10
while time.time() < deadline:
    with open(path) as f:
        token = f.read().strip()
    request = urllib.request.Request(api, headers={"Authorization": "Bearer " + token})
    try:
        status = urllib.request.urlopen(request, timeout=5).status
    except urllib.error.HTTPError as e:
        status = e.code
    print(status, flush=True)
    time.sleep(0.05)
print("mode", mode)
sys.exit(7)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_reading_the_token_file_across_expiries_always_finds_a_valid_token() {
    let knobs = Knobs {
        access_ttl_ms: 3000,
        rotate_refresh_tokens: true,
        reuse_revokes_grant: true,
        ..Knobs::default()
    };
    let idp = MockIdp::start(MockConfig::default().with_knobs(knobs))
        .await
        .expect("idp");
    let workspace =
        Workspace::with_credential("api", &idp.token_url(), "mock-client", "mock-secret");
    workspace
        .import("api", &idp.mint_grant(None, None).expect("grant"))
        .await;
    let api = idp.api_url();
    let out = workspace
        .run(&["exec", "api", "--", "python3", "-c", CHILD, &api], b"")
        .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(7),
        "the child's exit status: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let statuses: Vec<&str> = stdout.lines().filter(|l| !l.starts_with("mode")).collect();
    assert!(statuses.len() > 50, "the child ran: {stdout}");
    assert!(
        statuses.iter().all(|s| *s == "200"),
        "every read token was valid: {stdout}"
    );
    assert!(stdout.contains("mode 0o600"), "{stdout}");
    let stats = idp.stats();
    assert!(
        stats.refresh_calls >= 3,
        "the token was refreshed across expiries: {}",
        stats.refresh_calls
    );
    assert_eq!((stats.reuse_detected, stats.grants_revoked), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_are_forwarded_to_the_child() {
    let idp = MockIdp::start(MockConfig::default()).await.expect("idp");
    let workspace =
        Workspace::with_credential("api", &idp.token_url(), "mock-client", "mock-secret");
    workspace
        .import("api", &idp.mint_grant(None, None).expect("grant"))
        .await;
    let script = "trap 'echo got-term; exit 42' TERM; echo ready; while true; do sleep 0.05; done";
    let mut command = workspace.command(&["exec", "api", "--", "sh", "-c", script]);
    command.stdout(std::process::Stdio::piped());
    let mut child = command.spawn().expect("exec");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let ready = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("in time");
    assert_eq!(ready.expect("read").as_deref(), Some("ready"));
    let pid = child.id().expect("pid").to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(sent.success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits")
        .expect("status");
    assert_eq!(status.code(), Some(42), "exit status of the child");
    let rest = lines.next_line().await.expect("read");
    assert_eq!(rest.as_deref(), Some("got-term"));
}

/// A child asking the private broker for its token, and for a credential it may not use.
const BROKER_CHILD: &str = r#"
import json, os, urllib.request, urllib.error
base, key = os.environ["AUTHKEEPER_URL"], os.environ["AUTHKEEPER_API_KEY"]
def get(path):
    request = urllib.request.Request(base + path, headers={"Authorization": "Bearer " + key})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as e:
        return e.code, None
status, body = get("/v1/credentials/api/token")
with open(os.environ["AUTHKEEPER_TOKEN_FILE"]) as f:
    same = body is not None and body["access_token"] == f.read().strip()
print(status, same, get("/v1/credentials/other/token")[0])
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_child_gets_a_private_broker_limited_to_its_credential() {
    let idp = MockIdp::start(MockConfig::default()).await.expect("idp");
    let workspace = Workspace::new(&format!(
        "[credentials.api]\ntoken_url = \"{0}\"\nclient_id = \"mock-client\"\nclient_secret = \"mock-secret\"\n\
         [credentials.other]\ntoken_url = \"{0}\"\nclient_id = \"mock-client\"\nclient_secret = \"mock-secret\"\n",
        idp.token_url()
    ));
    workspace
        .import("api", &idp.mint_grant(None, None).expect("grant"))
        .await;
    workspace
        .import("other", &idp.mint_grant(None, None).expect("grant"))
        .await;
    let out = workspace
        .run(&["exec", "api", "--", "python3", "-c", BROKER_CHILD], b"")
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "200 True 403");
}

/// A child that resumes from its checkpoint: reads it (404: start at 0), saves `next + 10`,
/// prints what it found, and checks it may not touch another task's checkpoint.
const CHECKPOINT_CHILD: &str = r#"
import json, os, urllib.request, urllib.error
url, key = os.environ["AUTHKEEPER_CHECKPOINT_URL"], os.environ["AUTHKEEPER_API_KEY"]
auth = {"Authorization": "Bearer " + key}
def call(method, target, body=None):
    headers = dict(auth)
    if body is not None:
        headers["content-type"] = "application/json"
    request = urllib.request.Request(target, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
status, body = call("GET", url)
start = json.loads(body)["next"] if status == 200 else 0
status, _ = call("PUT", url, json.dumps({"next": start + 10}).encode())
other, _ = call("GET", url.rsplit("/", 1)[0] + "/someone-else")
print("task", url.rsplit("/", 1)[1], "start", start, "put", status, "other", other)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_child_resumes_from_its_task_checkpoint() {
    let idp = MockIdp::start(MockConfig::default()).await.expect("idp");
    let workspace =
        Workspace::with_credential("api", &idp.token_url(), "mock-client", "mock-secret");
    workspace
        .import("api", &idp.mint_grant(None, None).expect("grant"))
        .await;
    let mut seen = Vec::new();
    for args in [
        &[
            "exec",
            "api",
            "--task",
            "crawl",
            "--",
            "python3",
            "-c",
            CHECKPOINT_CHILD,
        ][..],
        &[
            "exec",
            "api",
            "--task",
            "crawl",
            "--",
            "python3",
            "-c",
            CHECKPOINT_CHILD,
        ][..],
        &["exec", "api", "--", "python3", "-c", CHECKPOINT_CHILD][..],
    ] {
        let out = workspace.run(args, b"").await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        seen.push(String::from_utf8_lossy(&out.stdout).trim().to_owned());
    }
    assert_eq!(
        seen,
        vec![
            "task crawl start 0 put 200 other 403",
            "task crawl start 10 put 200 other 403",
            "task api start 0 put 200 other 403",
        ]
    );
}
