//! The credential-injecting reverse proxy against the mock IdP's protected API and small
//! purpose-built upstreams: refresh-and-retry with body replay, pass-through of 401s that
//! cannot be replayed and of 403s, redirects, header hygiene, injection styles, upstream
//! failures, streaming, and a 30-second storm of 200 clients across token expiries.

use crate::cred;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use authkeeper_core::config::{CredentialSettings, InjectConfig};
use authkeeper_core::grant::{ClientAuth, Endpoint, GrantKind, OAuthClientConfig};
use authkeeper_core::policy::RefreshPolicy;
use authkeeper_core::{
    ExpiryDefaults, ExposeSecret, Keeper, MemoryStore, Store, SystemClock, TokenResponse,
};
use authkeeper_mock::{Knobs, MockConfig, MockIdp};
use authkeeper_server::proxy::{Proxy, ProxyConfig, ProxyObserver, Upstream};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, Request, Response, StatusCode, Uri, header};
use axum::response::IntoResponse;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const MIB: usize = 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

/// The mock IdP, a Keeper over a memory store, and one imported grant per credential name.
struct Env {
    idp: MockIdp,
    keeper: Keeper,
    store: Arc<dyn Store>,
    /// The generation each credential was imported as.
    imported: HashMap<String, u64>,
}

fn knobs(access_ttl_ms: u64) -> Knobs {
    Knobs {
        access_ttl_ms,
        rotate_refresh_tokens: true,
        reuse_revokes_grant: true,
        ..Knobs::default()
    }
}

fn settings(idp: &MockIdp) -> CredentialSettings {
    CredentialSettings {
        client: OAuthClientConfig {
            endpoint: Endpoint::TokenUrl(idp.token_url().parse().expect("url")),
            client_id: "mock-client".into(),
            client_secret: Some(authkeeper_core::secret::ClientSecret::from("mock-secret")),
            auth: ClientAuth::ClientSecretBasic,
            scopes: Vec::new(),
            audience: None,
            extra_params: Vec::new(),
            timeout: Duration::from_secs(5),
            proxy: None,
        },
        grant: GrantKind::RefreshToken,
        policy: RefreshPolicy::default(),
        expiry: ExpiryDefaults::default(),
        heartbeat: true,
    }
}

async fn env(knobs: Knobs, names: &[&str]) -> Env {
    let clock = SystemClock::shared();
    let idp = MockIdp::start(MockConfig::default().with_knobs(knobs))
        .await
        .expect("mock idp starts");
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let mut builder = Keeper::builder(store.clone(), Arc::clone(&clock));
    let mut imported = HashMap::new();
    for name in names {
        let response = idp.mint_grant(None, None).expect("grant");
        let body = serde_json::to_vec(&response).expect("json");
        let now = clock.now();
        let tokens = TokenResponse::parse_tokens(&body)
            .expect("tokens")
            .into_token_set(now, &ExpiryDefaults::default());
        let generation = authkeeper_core::store::import(&*store, &cred(name), &tokens, now)
            .await
            .expect("put");
        imported.insert((*name).to_owned(), generation);
        builder = builder.credential(cred(name), settings(&idp));
    }
    let keeper = builder.build().expect("keeper");
    Env {
        idp,
        keeper,
        store,
        imported,
    }
}

impl Env {
    async fn token(&self, name: &str) -> String {
        self.keeper
            .token(name, Duration::ZERO)
            .await
            .expect("token")
            .secret()
            .expose_secret()
            .to_owned()
    }

    async fn stored_generation(&self, name: &str) -> u64 {
        self.store
            .load(&cred(name))
            .await
            .expect("load")
            .expect("stored")
            .generation
    }
}

fn upstream(base: &str) -> Upstream {
    Upstream {
        headers: Vec::new(),
        egress: None,
        base: base.parse().expect("url"),
        inject: InjectConfig::default(),
    }
}

fn proxy(
    env: &Env,
    upstreams: Vec<(&str, Upstream)>,
    config: ProxyConfig,
    observer: Option<Arc<dyn ProxyObserver>>,
) -> Proxy {
    let upstreams = upstreams
        .into_iter()
        .map(|(name, upstream)| (name.to_owned(), upstream))
        .collect();
    Proxy::new(env.keeper.clone(), upstreams, config, observer).expect("proxy")
}

/// Serves `router` on a loopback port (with the peer address as `ConnectInfo`).
async fn serve(router: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    });
    addr
}

/// `ANY /proxy/{name}{rest}` → [`Proxy::forward`]; returns `http://addr`.
async fn serve_proxy(proxy: Proxy) -> String {
    async fn handle(State(proxy): State<Proxy>, request: Request<Body>) -> Response<Body> {
        let raw = request
            .uri()
            .path_and_query()
            .map_or("", |p| p.as_str())
            .to_owned();
        let after = raw.strip_prefix("/proxy/").unwrap_or_default();
        let end = after.find(['/', '?']).unwrap_or(after.len());
        let (name, rest) = after.split_at(end);
        proxy.forward(name, rest, request).await
    }
    let addr = serve(Router::new().fallback(handle).with_state(proxy)).await;
    format!("http://{addr}")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(256)
        .build()
        .expect("client")
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Deterministic pseudo-random bytes.
fn noise(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

async fn problem_type(response: reqwest::Response) -> String {
    assert_eq!(
        header_text(response.headers(), "content-type").as_deref(),
        Some("application/problem+json")
    );
    let body: serde_json::Value = response.json().await.expect("problem json");
    body["type"].as_str().unwrap_or_default().to_owned()
}

/// Records every proxied status.
#[derive(Default)]
struct Recorder(Mutex<Vec<(String, u16)>>);

impl ProxyObserver for Recorder {
    fn proxy_response(&self, credential: &str, status: u16) {
        self.0
            .lock()
            .expect("lock")
            .push((credential.to_owned(), status));
    }
}

/// An upstream that refuses (401 `invalid_token`) the first token it sees, forever, and
/// accepts any other, answering the SHA-256 of the body. Paths `/scope401` and `/plain403`
/// always refuse in their own way.
#[derive(Default)]
struct Gatekeeper {
    refused: Mutex<Option<String>>,
    /// (Authorization, body length, body SHA-256) of every request.
    seen: Mutex<Vec<(String, usize, String)>>,
}

async fn gatekeeper(
    State(gate): State<Arc<Gatekeeper>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let auth = header_text(&headers, "authorization").unwrap_or_default();
    let digest = sha256_hex(&body);
    gate.seen
        .lock()
        .expect("lock")
        .push((auth.clone(), body.len(), digest.clone()));
    match uri.path() {
        "/scope401" => {
            return (
                StatusCode::UNAUTHORIZED,
                [(
                    header::WWW_AUTHENTICATE,
                    "Bearer error=\"insufficient_scope\", scope=\"x\"",
                )],
            )
                .into_response();
        }
        "/plain403" => return StatusCode::FORBIDDEN.into_response(),
        _ => {}
    }
    let refused = {
        let mut refused = gate.refused.lock().expect("lock");
        refused.get_or_insert_with(|| auth.clone()) == &auth
    };
    if refused {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer error=\"invalid_token\"")],
            "token refused",
        )
            .into_response();
    }
    axum::Json(serde_json::json!({"len": body.len(), "sha256": digest})).into_response()
}

async fn start_gatekeeper() -> (Arc<Gatekeeper>, String) {
    let gate = Arc::new(Gatekeeper::default());
    let router = Router::new()
        .fallback(gatekeeper)
        .with_state(Arc::clone(&gate));
    let addr = serve(router).await;
    (gate, format!("http://{addr}"))
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// 200 clients for 30 s through the proxy while 2-second tokens rotate: no 401 reaches a
/// client, exactly one refresh per generation, no refresh-token reuse, the grant survives.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn storm_of_200_clients_across_expiries_sees_no_401() {
    let env = env(knobs(2000), &["api"]).await;
    let recorder = Arc::new(Recorder::default());
    let proxy = proxy(
        &env,
        vec![("api", upstream(env.idp.base_url()))],
        ProxyConfig::default(),
        Some(recorder.clone()),
    );
    let base = serve_proxy(proxy).await;
    let client = client();
    let ok = Arc::new(AtomicU64::new(0));
    let unauthorized = Arc::new(AtomicU64::new(0));
    let other = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let (client, ok, unauthorized, other) = (
            client.clone(),
            Arc::clone(&ok),
            Arc::clone(&unauthorized),
            Arc::clone(&other),
        );
        let url = format!("{base}/proxy/api/api/resource?client={i}");
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                match client.get(&url).send().await {
                    Ok(response) => {
                        let counter = match response.status() {
                            StatusCode::OK => &ok,
                            StatusCode::UNAUTHORIZED => &unauthorized,
                            _ => &other,
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                        let _ = response.bytes().await;
                    }
                    Err(_) => {
                        other.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("client task");
    }
    // Let a refresh started by the last requests finish.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let generations = env.stored_generation("api").await - env.imported["api"];
    let stats = env.idp.stats();
    let (ok, unauthorized, other) = (
        ok.load(Ordering::Relaxed),
        unauthorized.load(Ordering::Relaxed),
        other.load(Ordering::Relaxed),
    );
    println!(
        "storm: {ok} ok, {unauthorized} 401, {other} other, {generations} generations, {} refresh calls, {} upstream 401s",
        stats.refresh_calls, stats.api_unauthorized
    );
    assert_eq!(unauthorized, 0, "no 401 may reach a client");
    assert_eq!(other, 0, "every request succeeds");
    assert!(ok > 1000, "the proxy served only {ok} requests");
    assert!(generations >= 10, "tokens expire every 2 s: {generations}");
    assert_eq!(
        stats.refresh_calls, generations,
        "one refresh per generation"
    );
    assert_eq!(stats.reuse_detected, 0);
    assert!(stats.grants.iter().all(|g| g.alive), "the grant survives");
    assert_eq!(recorder.0.lock().expect("lock").len() as u64, ok);
}

/// A 1 MiB body whose first attempt is refused arrives intact on the retry, after exactly one
/// refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mib_body_survives_refresh_and_retry() {
    let env = env(knobs(3_600_000), &["api"]).await;
    let (gate, gate_url) = start_gatekeeper().await;
    let proxy = proxy(
        &env,
        vec![("api", upstream(&gate_url))],
        ProxyConfig::default(),
        None,
    );
    let base = serve_proxy(proxy).await;
    let first_token = env.token("api").await;
    let body = noise(MIB);
    let sent = sha256_hex(&body);
    let response = client()
        .post(format!("{base}/proxy/api/upload"))
        .header("authorization", "Bearer broker-key")
        .body(body)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::OK);
    let answer: serde_json::Value = response.json().await.expect("json");
    assert_eq!(answer["sha256"], sent.as_str());
    assert_eq!(answer["len"], MIB);
    let seen = gate.seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 2, "one refused attempt, one retry");
    assert_eq!(seen[0].0, format!("Bearer {first_token}"));
    assert_ne!(seen[1].0, seen[0].0, "the retry carries the new token");
    assert!(seen.iter().all(|(_, len, sha)| *len == MIB && *sha == sent));
    assert_eq!(env.idp.stats().refresh_calls, 1);
    assert_eq!(env.stored_generation("api").await, env.imported["api"] + 1);
}

/// A body over the replay limit streams upstream once; the 401 on it reaches the caller, and
/// the token is still replaced for the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_the_replay_limit_streams_and_its_401_passes_through() {
    let env = env(knobs(3_600_000), &["api"]).await;
    let (gate, gate_url) = start_gatekeeper().await;
    let config = ProxyConfig {
        replay_limit: 64 * 1024,
        ..ProxyConfig::default()
    };
    let proxy = proxy(&env, vec![("api", upstream(&gate_url))], config, None);
    let base = serve_proxy(proxy).await;
    let body = noise(256 * 1024);
    let sent = sha256_hex(&body);
    // Chunked (no Content-Length): the proxy reads past the limit, then streams the rest.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        body.chunks(16 * 1024).map(|c| Ok(c.to_vec())).collect();
    let response = client()
        .put(format!("{base}/proxy/api/upload"))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.text().await.expect("body"), "token refused");
    {
        let seen = gate.seen.lock().expect("lock");
        assert_eq!(seen.len(), 1, "no retry");
        assert_eq!((seen[0].1, seen[0].2.as_str()), (body.len(), sent.as_str()));
    }
    // The refused generation is replaced in the background: the next request gets through.
    let started = Instant::now();
    while env.idp.stats().refresh_calls == 0 && started.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(env.idp.stats().refresh_calls, 1);
    // With a Content-Length over the limit: streamed from the first byte, and accepted now.
    let response = client()
        .put(format!("{base}/proxy/api/upload"))
        .body(body)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::OK);
    let answer: serde_json::Value = response.json().await.expect("json");
    assert_eq!(answer["sha256"], sent.as_str());
    assert_eq!(gate.seen.lock().expect("lock").len(), 2);
    assert_eq!(env.idp.stats().refresh_calls, 1);
}

/// 403s and `insufficient_scope` 401s are the caller's business: passed through, never
/// retried, no refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_and_insufficient_scope_pass_through_without_refresh() {
    let env = env(knobs(3_600_000), &["api", "gate"]).await;
    let (gate, gate_url) = start_gatekeeper().await;
    let proxy = proxy(
        &env,
        vec![
            ("api", upstream(env.idp.base_url())),
            ("gate", upstream(&gate_url)),
        ],
        ProxyConfig::default(),
        None,
    );
    let base = serve_proxy(proxy).await;
    let client = client();
    let response = client
        .post(format!("{base}/proxy/api/api/admin/users"))
        .body("x")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let challenge = header_text(response.headers(), "www-authenticate").unwrap_or_default();
    assert!(challenge.contains("insufficient_scope"), "{challenge}");
    assert_eq!(env.idp.stats().api_forbidden, 1);

    let response = client
        .get(format!("{base}/proxy/gate/scope401"))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = client
        .get(format!("{base}/proxy/gate/plain403"))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(gate.seen.lock().expect("lock").len(), 2, "one attempt each");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stats = env.idp.stats();
    assert_eq!(stats.refresh_calls, 0);
    assert_eq!(stats.api_forbidden, 1);
}

/// What the redirecting upstream and the other origin saw.
#[derive(Default)]
struct Seen(Mutex<Vec<HeaderMap>>);

/// A redirect to another origin is handed to the caller as it is; following it, the other
/// origin never sees the credential. Locations on the upstream's base are rewritten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_never_carry_the_credential_to_another_origin() {
    let env = env(knobs(3_600_000), &["api"]).await;
    let other_seen = Arc::new(Seen::default());
    let other = serve(
        Router::new()
            .fallback(
                |State(seen): State<Arc<Seen>>, headers: HeaderMap| async move {
                    seen.0.lock().expect("lock").push(headers);
                    "landed"
                },
            )
            .with_state(Arc::clone(&other_seen)),
    )
    .await;
    let upstream_seen = Arc::new(Seen::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let upstream_addr = listener.local_addr().expect("addr");
    let redirector = Router::new()
        .fallback(
            move |State(seen): State<Arc<Seen>>, uri: Uri, headers: HeaderMap| async move {
                seen.0.lock().expect("lock").push(headers);
                let location = match uri.path() {
                    "/base/away" => format!("http://{other}/landing"),
                    "/base/here" => format!("http://{upstream_addr}/base/next?x=1"),
                    "/base/relative" => "/base/other#top".to_owned(),
                    _ => "/outside".to_owned(),
                };
                (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
            },
        )
        .with_state(Arc::clone(&upstream_seen));
    tokio::spawn(async move {
        let _ = axum::serve(listener, redirector).await;
    });
    let proxy = proxy(
        &env,
        vec![("api", upstream(&format!("http://{upstream_addr}/base")))],
        ProxyConfig::default(),
        None,
    );
    let base = serve_proxy(proxy).await;
    let token = env.token("api").await;
    let location = |response: &reqwest::Response| {
        header_text(response.headers(), "location").unwrap_or_default()
    };

    let response = client()
        .get(format!("{base}/proxy/api/away"))
        .header("authorization", "Bearer broker-key")
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::FOUND);
    let away = location(&response);
    assert_eq!(away, format!("http://{other}/landing"), "left untouched");
    // The caller follows it with a plain client.
    let landed = reqwest::get(&away).await.expect("follow");
    assert_eq!(landed.text().await.expect("body"), "landed");
    // A client that follows redirects by itself ends up there too, without our credential.
    let followed = reqwest::get(format!("{base}/proxy/api/away"))
        .await
        .expect("follow");
    assert_eq!(followed.text().await.expect("body"), "landed");
    let seen_upstream = upstream_seen.0.lock().expect("lock").clone();
    assert!(
        seen_upstream
            .iter()
            .all(|h| header_text(h, "authorization") == Some(format!("Bearer {token}"))),
        "the upstream itself gets the credential"
    );
    let seen_other = other_seen.0.lock().expect("lock").clone();
    assert_eq!(seen_other.len(), 2);
    for headers in &seen_other {
        assert!(headers.get("authorization").is_none(), "{headers:?}");
        assert!(
            !format!("{headers:?}").contains(&token),
            "the token never reaches another origin"
        );
    }

    let response = client()
        .get(format!("{base}/proxy/api/here"))
        .send()
        .await
        .expect("send");
    assert_eq!(location(&response), "/proxy/api/next?x=1");
    let response = client()
        .get(format!("{base}/proxy/api/relative"))
        .send()
        .await
        .expect("send");
    assert_eq!(location(&response), "/proxy/api/other#top");
    let response = client()
        .get(format!("{base}/proxy/api/elsewhere"))
        .send()
        .await
        .expect("send");
    assert_eq!(
        location(&response),
        format!("http://{upstream_addr}/outside")
    );
}

/// Echoes what it received and answers with hop-by-hop headers of its own.
async fn echo(uri: Uri, headers: HeaderMap) -> Response<Body> {
    let received: HashMap<String, String> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_owned()))
        .collect();
    let body = serde_json::json!({"uri": uri.to_string(), "headers": received});
    (
        [
            ("connection", "x-resp-hop"),
            ("x-resp-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("x-resp-kept", "1"),
        ],
        axum::Json(body),
    )
        .into_response()
}

/// Hop-by-hop headers go both ways, the broker key never reaches the upstream, cookies do;
/// bearer, custom-header and query-parameter injection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_are_cleaned_and_the_credential_injected_three_ways() {
    let env = env(knobs(3_600_000), &["api", "keyed", "query"]).await;
    let echo_addr = serve(Router::new().fallback(echo)).await;
    let echo_url = format!("http://{echo_addr}");
    let recorder = Arc::new(Recorder::default());
    let proxy = proxy(
        &env,
        vec![
            ("api", upstream(&echo_url)),
            (
                "keyed",
                Upstream {
                    headers: Vec::new(),
                    egress: None,
                    base: echo_url.parse().expect("url"),
                    inject: InjectConfig {
                        header: Some("X-API-Key".into()),
                        ..InjectConfig::default()
                    },
                },
            ),
            (
                "query",
                Upstream {
                    headers: Vec::new(),
                    egress: None,
                    base: echo_url.parse().expect("url"),
                    inject: InjectConfig {
                        query: Some("api_key".into()),
                        ..InjectConfig::default()
                    },
                },
            ),
        ],
        ProxyConfig::default(),
        Some(recorder.clone()),
    );
    let base = serve_proxy(proxy).await;
    let proxy_authority = base.trim_start_matches("http://").to_owned();
    let send = |name: &str, rest: &str| {
        client()
            .get(format!("{base}/proxy/{name}{rest}"))
            .header("authorization", "Bearer broker-key")
            .header("connection", "x-hop-a")
            .header("x-hop-a", "1")
            .header("keep-alive", "timeout=5")
            .header("proxy-authorization", "Basic eHl6")
            .header("te", "trailers")
            .header("cookie", "session=abc")
            .header("x-custom", "kept")
            .header("x-api-key", "caller-supplied")
            .send()
    };

    let response = send("api", "/echo/path").await.expect("send");
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    assert!(headers.get("x-resp-hop").is_none());
    assert!(headers.get("keep-alive").is_none());
    assert_eq!(header_text(&headers, "x-resp-kept").as_deref(), Some("1"));
    let echoed: serde_json::Value = response.json().await.expect("json");
    let got = &echoed["headers"];
    let token = env.token("api").await;
    assert_eq!(got["authorization"], format!("Bearer {token}"));
    for gone in ["x-hop-a", "keep-alive", "proxy-authorization", "te"] {
        assert!(got.get(gone).is_none(), "{gone} was forwarded");
    }
    assert_eq!(got["cookie"], "session=abc");
    assert_eq!(got["x-custom"], "kept");
    assert_eq!(got["x-api-key"], "caller-supplied");
    assert_eq!(got["host"], echo_addr.to_string());
    assert_eq!(got["x-forwarded-for"], "127.0.0.1");
    assert_eq!(got["x-forwarded-host"], proxy_authority.as_str());
    assert_eq!(got["x-forwarded-proto"], "http");
    assert_eq!(echoed["uri"], "/echo/path");

    let response = send("keyed", "/k?x=1").await.expect("send");
    let echoed: serde_json::Value = response.json().await.expect("json");
    let token = env.token("keyed").await;
    assert_eq!(echoed["headers"]["x-api-key"], token.as_str(), "no prefix");
    assert!(echoed["headers"].get("authorization").is_none());
    assert_eq!(echoed["uri"], "/k?x=1");

    let response = send("query", "/q?api_key=evil&x=a%20b")
        .await
        .expect("send");
    let echoed: serde_json::Value = response.json().await.expect("json");
    let token = env.token("query").await;
    let encoded: String = url::form_urlencoded::byte_serialize(token.as_bytes()).collect();
    assert_eq!(echoed["uri"], format!("/q?x=a%20b&api_key={encoded}"));
    assert!(echoed["headers"].get("authorization").is_none());

    let statuses = recorder.0.lock().expect("lock").clone();
    assert_eq!(
        statuses,
        [
            ("api".to_owned(), 200),
            ("keyed".to_owned(), 200),
            ("query".to_owned(), 200)
        ]
    );
}

/// Malformed and escaping paths are 400 problems, unknown credentials 404; nothing is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_paths_and_unknown_credentials_are_problems() {
    let env = env(knobs(3_600_000), &["api"]).await;
    let (gate, gate_url) = start_gatekeeper().await;
    let proxy = proxy(
        &env,
        vec![("api", upstream(&format!("{gate_url}/base/")))],
        ProxyConfig::default(),
        None,
    );
    for path in [
        "/../etc/passwd",
        "/a/%2e%2e/..",
        "/%zz",
        "/..%2f..%2fx",
        "nope",
    ] {
        let response = proxy
            .forward("api", path, Request::new(Body::empty()))
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path}");
    }
    let response = proxy
        .forward("ghost", "/", Request::new(Body::empty()))
        .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(gate.seen.lock().expect("lock").is_empty());
    // Over the wire, raw (HTTP clients would normalize the dot segments away).
    let base = serve_proxy(proxy).await;
    let mut stream = tokio::net::TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .expect("connect");
    stream
        .write_all(
            b"GET /proxy/api/%2E%2E/%2e%2E/x HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        )
        .await
        .expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.contains("urn:authkeeper:problem:invalid-request"),
        "{answer}"
    );
    assert!(gate.seen.lock().expect("lock").is_empty());
}

/// A refused connection is a 502 problem, a silent upstream a 504 problem after the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_and_slow_are_problems() {
    let env = env(knobs(3_600_000), &["down", "slow"]).await;
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listener.local_addr().expect("addr")
    };
    let slow = serve(Router::new().fallback(|| async {
        tokio::time::sleep(Duration::from_secs(10)).await;
        "too late"
    }))
    .await;
    let proxy = proxy(
        &env,
        vec![
            ("down", upstream(&format!("http://{closed}"))),
            ("slow", upstream(&format!("http://{slow}"))),
        ],
        ProxyConfig {
            timeout: Duration::from_millis(300),
            ..ProxyConfig::default()
        },
        None,
    );
    let base = serve_proxy(proxy).await;
    let token = env.token("down").await;
    let response = client()
        .get(format!("{base}/proxy/down/x"))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let text = response.text().await.expect("body");
    assert!(
        text.contains("urn:authkeeper:problem:upstream-unavailable"),
        "{text}"
    );
    assert!(!text.contains(&token), "no secret in a problem");
    let started = Instant::now();
    let response = client()
        .get(format!("{base}/proxy/slow/x"))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        problem_type(response).await,
        "urn:authkeeper:problem:upstream-timeout"
    );
}

/// A 50 MiB response streams: the caller gets the first bytes while the upstream is still
/// waiting to send the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_responses_stream_without_buffering() {
    const FIRST: usize = 64 * 1024;
    const REST: usize = 50 * MIB;
    let env = env(knobs(3_600_000), &["api"]).await;
    let release = Arc::new(tokio::sync::Notify::new());
    let finished = Arc::new(AtomicU64::new(0));
    let upstream_addr = {
        let (release, finished) = (Arc::clone(&release), Arc::clone(&finished));
        serve(Router::new().fallback(move || {
            let (release, finished) = (Arc::clone(&release), Arc::clone(&finished));
            async move {
                let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
                tokio::spawn(async move {
                    let _ = tx.send(Ok(Bytes::from(vec![b'a'; FIRST]))).await;
                    release.notified().await;
                    let chunk = Bytes::from(vec![b'b'; MIB]);
                    for _ in 0..REST / MIB {
                        if tx.send(Ok(chunk.clone())).await.is_err() {
                            return;
                        }
                    }
                    finished.store(1, Ordering::SeqCst);
                });
                Body::from_stream(tokio_stream_from(rx))
            }
        }))
        .await
    };
    let proxy = proxy(
        &env,
        vec![("api", upstream(&format!("http://{upstream_addr}")))],
        ProxyConfig::default(),
        None,
    );
    let base = serve_proxy(proxy).await;
    let mut response = client()
        .get(format!("{base}/proxy/api/big"))
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), StatusCode::OK);
    let first = tokio::time::timeout(Duration::from_secs(5), response.chunk())
        .await
        .expect("the first bytes arrive before the upstream finished")
        .expect("chunk")
        .expect("some bytes");
    assert!(!first.is_empty() && first.iter().all(|&b| b == b'a'));
    assert_eq!(
        finished.load(Ordering::SeqCst),
        0,
        "the upstream is still waiting"
    );
    release.notify_one();
    let mut total = first.len();
    let started = Instant::now();
    while let Some(chunk) = response.chunk().await.expect("chunk") {
        total += chunk.len();
    }
    println!("streamed {} MiB in {:?}", total / MIB, started.elapsed());
    assert_eq!(total, FIRST + REST);
    assert_eq!(finished.load(Ordering::SeqCst), 1);
}

/// A stream over an mpsc receiver.
fn tokio_stream_from<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}
