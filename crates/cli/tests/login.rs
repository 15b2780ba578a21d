//! `authkeeper login` and `authkeeper logout` as processes: the device flow and the
//! authorization code + PKCE flow end to end against the real oidc-provider (approval scripted
//! through its dev interaction forms), the same flows and their failures against the mock IdP,
//! and the external login command (success, timeout, garbage, non-zero exit) leaving the
//! previous tokens untouched.

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use authkeeper_mock::{Knobs, MockConfig, MockIdp};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::Child;

use crate::support::Workspace;
use crate::support::oidc_provider::{CLIENT_ID, CLIENT_SECRET, OidcProvider};

/// A running `authkeeper login` whose stderr is read line by line.
struct Running {
    child: Child,
    stderr: tokio::sync::mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn spawn(workspace: &Workspace, args: &[&str]) -> Running {
        let mut command = workspace.command(args);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn authkeeper");
        let pipe = child.stderr.take().expect("stderr");
        let (tx, stderr) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(pipe).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let _ = tx.send(line);
            }
        });
        Running {
            child,
            stderr,
            seen: Vec::new(),
        }
    }

    /// The rest of the first stderr line starting with `prefix`.
    async fn line_after(&mut self, prefix: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let line = tokio::time::timeout_at(deadline, self.stderr.recv())
                .await
                .unwrap_or_else(|_| panic!("no `{prefix}` line; stderr so far: {:?}", self.seen))
                .unwrap_or_else(|| panic!("stderr closed before `{prefix}`: {:?}", self.seen));
            self.seen.push(line.clone());
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.trim().to_owned();
            }
        }
    }

    async fn finish(mut self) -> (Output, String) {
        let output = tokio::time::timeout(Duration::from_secs(60), self.child.wait_with_output())
            .await
            .expect("login finishes")
            .expect("output");
        while let Ok(line) = self.stderr.try_recv() {
            self.seen.push(line);
        }
        (output, self.seen.join("\n"))
    }
}

fn json(output: &Output, stderr: &str) -> Value {
    assert!(
        output.status.success(),
        "exit {:?}; stderr:\n{stderr}",
        output.status.code()
    );
    serde_json::from_slice(&output.stdout).expect("JSON on stdout")
}

fn oidc_workspace(provider: &OidcProvider, name: &str, login: &str) -> Workspace {
    Workspace::new(&format!(
        "[credentials.{name}]\nissuer = \"{}\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret = \"{CLIENT_SECRET}\"\n\
         scopes = [\"openid\", \"offline_access\", \"api\"]\nlogin = {login}\n",
        provider.issuer()
    ))
}

async fn active(provider: &OidcProvider, token: &str) -> bool {
    provider.introspect(token).await.expect("introspection")["active"] == true
}

#[tokio::test]
async fn oidc_device_flow_login_token_and_logout() {
    let provider = OidcProvider::start(30).expect("oidc-provider");
    let workspace = oidc_workspace(&provider, "dev", "{ method = \"device\" }");
    let started = Instant::now();
    let mut login = Running::spawn(
        &workspace,
        &["login", "dev", "--json", "--poll-interval", "200ms"],
    );
    let user_code = login.line_after("user code:").await;
    provider
        .approve_device(&user_code, "alice")
        .await
        .expect("approval through the device pages");
    let (output, stderr) = login.finish().await;
    let result = json(&output, &stderr);
    assert_eq!(result["name"], "dev");
    assert_eq!(result["generation"], 1);
    assert_eq!(result["has_refresh_token"], true);
    assert!(stderr.contains("verification uri: "), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(30));

    let access = workspace.token("dev").await.expect("token works");
    assert!(active(&provider, &access).await);

    let out = workspace.run(&["logout", "dev", "--json"], b"").await;
    let result = json(&out, &String::from_utf8_lossy(&out.stderr));
    assert_eq!(result["revocation"], "revoked");
    assert_eq!(
        result["revoked"],
        serde_json::json!(["refresh_token", "access_token"])
    );
    assert_eq!(result["deleted"], true);
    assert!(!active(&provider, &access).await, "revoked at the IdP");
    assert!(
        provider.stderr_log().contains("grant.revoked"),
        "revoking the refresh token ended the grant"
    );
    assert_eq!(workspace.generation("dev").await, 0, "deleted locally");
    assert!(workspace.token("dev").await.is_err());
}

#[tokio::test]
async fn oidc_authorization_code_pkce_login_token_and_logout() {
    let provider = OidcProvider::start(30).expect("oidc-provider");
    let workspace = oidc_workspace(
        &provider,
        "web",
        "{ method = \"pkce\", authorization_params = { prompt = \"consent\" } }",
    );
    let mut login = Running::spawn(&workspace, &["login", "web", "--json", "--no-browser"]);
    let url = login.line_after("authorization url:").await;
    assert!(url.contains("code_challenge_method=S256"), "{url}");
    let callback = provider
        .authorize_in_browser(&url, "bob")
        .await
        .expect("login and consent");
    assert!(
        callback.query().is_some_and(|q| q.contains("iss=")),
        "{callback}"
    );
    let page = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(callback)
        .send()
        .await
        .expect("loopback callback");
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("close this tab"));
    let (output, stderr) = login.finish().await;
    let result = json(&output, &stderr);
    assert_eq!(result["generation"], 1);
    assert_eq!(result["has_refresh_token"], true);

    let access = workspace.token("web").await.expect("token works");
    assert_eq!(provider.userinfo_status(&access).await.unwrap(), 200);

    let out = workspace.run(&["logout", "web"], b"").await;
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("revoked the refresh token and access token")
    );
    assert!(!active(&provider, &access).await);
    assert_eq!(workspace.generation("web").await, 0);
}

fn mock_workspace(idp: &MockIdp, name: &str, extra: &str) -> Workspace {
    Workspace::new(&format!(
        "[credentials.{name}]\nissuer = \"{}\"\nclient_id = \"mock-client\"\nclient_secret = \"mock-secret\"\n{extra}\n",
        idp.issuer()
    ))
}

#[tokio::test]
async fn mock_device_flow_with_pending_answers() {
    let idp = MockIdp::start(MockConfig::default().with_knobs(Knobs {
        device_pending_polls: 2,
        ..Knobs::default()
    }))
    .await
    .unwrap();
    // No login table: the discovered device endpoint makes `device` the method.
    let workspace = mock_workspace(&idp, "api", "");
    let login = Running::spawn(
        &workspace,
        &["login", "api", "--json", "--poll-interval", "50ms"],
    );
    let (output, stderr) = login.finish().await;
    let result = json(&output, &stderr);
    assert_eq!(result["method"], "device");
    assert!(stderr.contains("user code: "), "{stderr}");
    assert_eq!(idp.stats().device_polls, 3);
    workspace.token("api").await.expect("token");
}

#[tokio::test]
async fn client_credentials_login_reissues() {
    let idp = MockIdp::start(MockConfig::default()).await.unwrap();
    let workspace = mock_workspace(&idp, "svc", "grant = \"client_credentials\"");
    let out = workspace.run(&["login", "svc", "--json"], b"").await;
    let result = json(&out, &String::from_utf8_lossy(&out.stderr));
    assert_eq!(result["method"], "client_credentials");
    assert_eq!(result["has_refresh_token"], false);
    assert_eq!(idp.stats().client_credentials_success, 1);
}

#[tokio::test]
async fn mock_pkce_failures_store_nothing() {
    let idp = MockIdp::start(MockConfig::default().with_knobs(Knobs {
        authorize_wrong_state: true,
        ..Knobs::default()
    }))
    .await
    .unwrap();
    let workspace = mock_workspace(&idp, "api", "login = { method = \"pkce\" }");
    let mut login = Running::spawn(&workspace, &["login", "api", "--no-browser"]);
    let url = login.line_after("authorization url:").await;
    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let answer = http.get(&url).send().await.unwrap();
    let location = answer.headers()["location"].to_str().unwrap().to_owned();
    let page = http.get(&location).send().await.unwrap();
    assert_eq!(page.status(), 400);
    let (output, stderr) = login.finish().await;
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("state does not match"), "{stderr}");
    assert_eq!(workspace.generation("api").await, 0);

    // Nobody comes back: the login times out.
    idp.set_knobs(Knobs::default()).unwrap();
    let out = workspace
        .run(&["login", "api", "--no-browser", "--timeout", "1s"], b"")
        .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("did not complete within 1s"), "{stderr}");
}

#[tokio::test]
async fn login_command_success_and_failures_keep_the_previous_tokens() {
    let idp = MockIdp::start(MockConfig::default()).await.unwrap();
    let dir = authkeeper_testkit::temp_dir();
    let script = dir.path().join("login.sh");
    // The script's behaviour comes from a file the test rewrites between runs.
    let mode = dir.path().join("mode");
    std::fs::write(
        &script,
        format!(
            "case \"$(cat {mode})\" in\n\
             ok) printf '{{\"access_token\":\"cmd-%s\",\"refresh_token\":\"r\",\"expires_in\":3600}}' \"$AUTHKEEPER_CREDENTIAL\" ;;\n\
             hang) sleep 30 ;;\n\
             garbage) echo 'Welcome! <html>' ;;\n\
             fail) echo 'cannot reach the SSO' >&2; exit 7 ;;\n\
             esac\n",
            mode = mode.display()
        ),
    )
    .unwrap();
    let workspace = mock_workspace(
        &idp,
        "crm",
        &format!(
            "login = {{ command = \"sh {}\", timeout = \"1s\" }}",
            script.display()
        ),
    );

    std::fs::write(&mode, "ok").unwrap();
    let out = workspace.run(&["login", "crm", "--json"], b"").await;
    let result = json(&out, &String::from_utf8_lossy(&out.stderr));
    assert_eq!(result["method"], "command");
    assert_eq!(result["generation"], 1);
    assert_eq!(workspace.token("crm").await.unwrap(), "cmd-crm");

    for (mode_text, exit, message) in [
        ("hang", 4, "did not finish within 1s and was killed"),
        ("garbage", 4, "not a token response"),
        ("fail", 4, "login command failed (exit status: 7)"),
    ] {
        std::fs::write(&mode, mode_text).unwrap();
        let started = Instant::now();
        let out = workspace.run(&["login", "crm"], b"").await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(exit), "{mode_text}: {stderr}");
        assert!(stderr.contains(message), "{mode_text}: {stderr}");
        assert!(
            stderr.contains("nothing was stored") || mode_text == "hang",
            "{stderr}"
        );
        assert!(started.elapsed() < Duration::from_secs(15));
        assert_eq!(
            workspace.generation("crm").await,
            1,
            "{mode_text}: nothing stored"
        );
        assert_eq!(
            workspace.token("crm").await.unwrap(),
            "cmd-crm",
            "previous tokens kept"
        );
    }
    assert!(
        String::from_utf8_lossy(&workspace.run(&["login", "crm"], b"").await.stderr)
            .contains("cannot reach the SSO"),
        "the command's stderr is passed through"
    );
}

#[tokio::test]
async fn logout_against_the_mock_and_local_only() {
    let idp = MockIdp::start(MockConfig::default()).await.unwrap();
    let workspace = mock_workspace(&idp, "api", "");
    workspace
        .import("api", &idp.mint_grant(None, None).unwrap())
        .await;
    let out = workspace.run(&["logout", "api", "--json"], b"").await;
    let result = json(&out, &String::from_utf8_lossy(&out.stderr));
    assert_eq!(result["revocation"], "revoked");
    let stats = idp.stats();
    assert_eq!((stats.revocations, stats.active_grants), (2, 0));
    assert_eq!(workspace.generation("api").await, 0);

    // Nothing stored any more: nothing to do, still success.
    let out = workspace.run(&["logout", "api"], b"").await;
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to do"));

    // --local-only never calls the provider.
    workspace
        .import("api", &idp.mint_grant(None, None).unwrap())
        .await;
    let out = workspace
        .run(&["logout", "api", "--local-only", "--json"], b"")
        .await;
    let result = json(&out, &String::from_utf8_lossy(&out.stderr));
    assert_eq!(result["revocation"], "skipped");
    assert_eq!(idp.stats().revocations, 2);
    assert_eq!(idp.stats().active_grants, 1);

    // A failing revocation endpoint deletes nothing.
    workspace
        .import("api", &idp.mint_grant(None, None).unwrap())
        .await;
    drop(idp);
    let out = workspace.run(&["logout", "api"], b"").await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("nothing was deleted"), "{stderr}");
    assert!(workspace.generation("api").await >= 1);
}
