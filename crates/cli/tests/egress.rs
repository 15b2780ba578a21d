//! A credential's egress proxy: its token requests, its logins and the broker's injecting
//! proxy traffic all go through it, counted at a real forward proxy on loopback; when the proxy
//! is down nothing goes direct.

use authkeeper_mock::{ForwardProxy, ForwardProxyOptions, MockConfig, MockIdp};
use authkeeper_server::NewKey;

use crate::support::{ServeProcess, Workspace, run_with_input};

async fn forward_proxy() -> ForwardProxy {
    ForwardProxy::start(ForwardProxyOptions {
        identity: "egress-a".into(),
        credentials: Some((
            "egress".into(),
            authkeeper_testkit::planted("proxy-password"),
        )),
    })
    .await
    .expect("forward proxy")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_requests_and_proxied_api_calls_go_through_the_egress_proxy_only() {
    let idp = MockIdp::start(MockConfig::default()).await.expect("idp");
    let proxy = forward_proxy().await;
    let key = NewKey::generate();
    let workspace = Workspace::new(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[[clients]]\nname = \"w\"\nkey_sha256 = \"{}\"\ncredentials = [\"api\"]\n\n\
         [credentials.api]\ntoken_url = \"{}\"\nclient_id = \"mock-client\"\nclient_secret = \"mock-secret\"\n\
         upstream = \"{}\"\nproxy = \"{}\"\n",
        key.sha256(),
        idp.token_url(),
        idp.base_url(),
        proxy.url(),
    ));
    // The proxy's password sits inline in this test config (tests only).
    authkeeper_testkit::expect_plaintext(&workspace.config());
    workspace
        .import("api", &idp.mint_grant(None, None).expect("grant"))
        .await;
    let broker = ServeProcess::start(&workspace).await;
    let http = reqwest::Client::new();
    let token_path = format!("{}/token", idp.base_url().trim_start_matches("http://"));
    // 20 refreshes, forced by reporting the current token rejected.
    for _ in 0..20 {
        let token: serde_json::Value = http
            .get(format!("{}/v1/credentials/api/token", broker.url))
            .bearer_auth(key.expose_key())
            .send()
            .await
            .expect("token")
            .json()
            .await
            .expect("json");
        let refreshed = http
            .post(format!("{}/v1/credentials/api/rejected", broker.url))
            .bearer_auth(key.expose_key())
            .json(&serde_json::json!({ "generation": token["generation"] }))
            .send()
            .await
            .expect("rejected");
        assert_eq!(refreshed.status(), 200);
    }
    for _ in 0..5 {
        let answer = http
            .get(format!("{}/proxy/api/api/items", broker.url))
            .bearer_auth(key.expose_key())
            .send()
            .await
            .expect("proxied");
        assert_eq!(answer.status(), 200);
    }
    let seen = proxy.stats();
    let stats = idp.stats();
    println!("at the proxy: {seen:?}; at the IdP: {stats:?}");
    assert_eq!(stats.refresh_calls, 20);
    assert_eq!(
        seen.by_path.get(&token_path).copied().unwrap_or(0),
        20,
        "every token request went through the proxy: {seen:?}"
    );
    let api_path = format!("{}/api/items", idp.base_url().trim_start_matches("http://"));
    assert_eq!(seen.by_path.get(&api_path).copied().unwrap_or(0), 5);
    assert_eq!(seen.refused, 0, "the proxy's credentials were sent");

    // The proxy goes down: refreshes fail (transient) and nothing reaches the IdP directly.
    drop(proxy);
    let token: serde_json::Value = http
        .get(format!("{}/v1/credentials/api/token", broker.url))
        .bearer_auth(key.expose_key())
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    let refused = http
        .post(format!("{}/v1/credentials/api/rejected", broker.url))
        .bearer_auth(key.expose_key())
        .json(&serde_json::json!({ "generation": token["generation"] }))
        .send()
        .await
        .expect("rejected");
    let status = refused.status();
    let problem: serde_json::Value = refused.json().await.unwrap_or_default();
    assert_eq!(status, 503, "{}", problem["type"]);
    let proxied = http
        .get(format!("{}/proxy/api/api/items", broker.url))
        .bearer_auth(key.expose_key())
        .send()
        .await
        .expect("proxied");
    assert_eq!(proxied.status(), 502);
    assert_eq!(idp.stats().refresh_calls, 20, "no direct fallback");
    assert_eq!(idp.stats().api_ok, stats.api_ok, "no direct API call");
    drop(broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_command_gets_the_egress_proxy() {
    let idp = MockIdp::start(MockConfig::default()).await.expect("idp");
    let proxy = forward_proxy().await;
    let dir = authkeeper_testkit::temp_dir();
    let grant = dir.path().join("grant.json");
    let seen = dir.path().join("proxy.txt");
    std::fs::write(
        &grant,
        idp.mint_grant(None, None).expect("grant").to_string(),
    )
    .expect("grant");
    authkeeper_testkit::expect_plaintext(&grant);
    authkeeper_testkit::expect_plaintext(&seen);
    let workspace = Workspace::new(&format!(
        "[credentials.api]\ntoken_url = \"{}\"\nclient_id = \"mock-client\"\nclient_secret = \"mock-secret\"\n\
         proxy = \"env:API_EGRESS\"\nlogin = {{ method = \"command\", command = \"printenv HTTPS_PROXY > {} && cat {}\" }}\n",
        idp.token_url(),
        seen.display(),
        grant.display()
    ));
    let mut login = workspace.command(&["login", "api"]);
    login.env("API_EGRESS", proxy.url());
    let out = run_with_input(login, b"").await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&seen)
            .expect("dumped")
            .trim()
            .trim_end_matches('/'),
        proxy.url()
    );
}
