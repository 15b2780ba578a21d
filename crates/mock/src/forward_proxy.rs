//! [`ForwardProxy`]: a forward HTTP proxy for tests of egress. It forwards absolute-form HTTP
//! requests and tunnels `CONNECT`, checks Basic proxy credentials when configured, counts every
//! request per target, and stamps plain-HTTP requests with `X-Egress-Identity: <identity>` so the
//! server behind it can tell which egress a request came through. A test points a credential or
//! an account at it and checks that nothing went around it.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};

/// The header a forwarded plain-HTTP request carries.
pub const IDENTITY_HEADER: &str = "x-egress-identity";

type Body = BoxBody<Bytes, hyper::Error>;

/// How a [`ForwardProxy`] behaves.
#[derive(Debug, Clone, Default)]
pub struct ForwardProxyOptions {
    /// Stamped on forwarded requests as [`IDENTITY_HEADER`].
    pub identity: String,
    /// Basic credentials a client must send (`Proxy-Authorization`); `None`: open.
    pub credentials: Option<(String, String)>,
}

/// What went through a proxy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Forwarded absolute-form requests.
    pub forwarded: u64,
    /// `CONNECT` tunnels opened.
    pub tunnels: u64,
    /// Requests refused for missing or wrong credentials.
    pub refused: u64,
    /// Forwarded requests and tunnels per target `host:port`.
    pub by_target: BTreeMap<String, u64>,
    /// Forwarded requests per target path (`host:port/path`, no query).
    pub by_path: BTreeMap<String, u64>,
}

#[derive(Default)]
struct Counters {
    forwarded: AtomicU64,
    tunnels: AtomicU64,
    refused: AtomicU64,
    by_target: Mutex<BTreeMap<String, u64>>,
    by_path: Mutex<BTreeMap<String, u64>>,
}

impl Counters {
    fn count(map: &Mutex<BTreeMap<String, u64>>, key: String) {
        let mut map = map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *map.entry(key).or_default() += 1;
    }
}

struct Shared {
    options: ForwardProxyOptions,
    counters: Counters,
    client: Client<HttpConnector, Incoming>,
}

/// A running forward proxy on a loopback port; stops when dropped.
pub struct ForwardProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for ForwardProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardProxy")
            .field("addr", &self.addr)
            .field("identity", &self.shared.options.identity)
            .finish_non_exhaustive()
    }
}

impl Drop for ForwardProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ForwardProxy {
    /// Starts a proxy on `127.0.0.1:0`.
    pub async fn start(options: ForwardProxyOptions) -> std::io::Result<ForwardProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            options,
            counters: Counters::default(),
            client: Client::builder(TokioExecutor::new()).build_http(),
        });
        let accepting = Arc::clone(&shared);
        let task = tokio::spawn(async move {
            // Connections live in this set: stopping the proxy ends them too.
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                while connections.try_join_next().is_some() {}
                let shared = Arc::clone(&accepting);
                connections.spawn(async move {
                    let service = service_fn(move |request| {
                        let shared = Arc::clone(&shared);
                        async move { Ok::<_, Infallible>(handle(shared, request).await) }
                    });
                    let _ = http1::Builder::new()
                        .preserve_header_case(true)
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Ok(ForwardProxy { addr, shared, task })
    }

    /// `http://127.0.0.1:PORT`, with the credentials when the proxy requires them.
    pub fn url(&self) -> String {
        match &self.shared.options.credentials {
            Some((user, password)) => format!("http://{user}:{password}@{}", self.addr),
            None => format!("http://{}", self.addr),
        }
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What went through so far.
    pub fn stats(&self) -> ProxyStats {
        let counters = &self.shared.counters;
        let read = |map: &Mutex<BTreeMap<String, u64>>| {
            map.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()
        };
        ProxyStats {
            forwarded: counters.forwarded.load(Ordering::Relaxed),
            tunnels: counters.tunnels.load(Ordering::Relaxed),
            refused: counters.refused.load(Ordering::Relaxed),
            by_target: read(&counters.by_target),
            by_path: read(&counters.by_path),
        }
    }
}

fn empty(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(Empty::new().map_err(|never| match never {}).boxed());
    *response.status_mut() = status;
    response
}

fn authorized(options: &ForwardProxyOptions, request: &Request<Incoming>) -> bool {
    let Some((user, password)) = &options.credentials else {
        return true;
    };
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    );
    request
        .headers()
        .get(hyper::header::PROXY_AUTHORIZATION)
        .is_some_and(|value| value.as_bytes() == expected.as_bytes())
}

async fn handle(shared: Arc<Shared>, mut request: Request<Incoming>) -> Response<Body> {
    if !authorized(&shared.options, &request) {
        shared.counters.refused.fetch_add(1, Ordering::Relaxed);
        let mut response = empty(StatusCode::PROXY_AUTHENTICATION_REQUIRED);
        response.headers_mut().insert(
            hyper::header::PROXY_AUTHENTICATE,
            hyper::header::HeaderValue::from_static("Basic realm=\"mock-proxy\""),
        );
        return response;
    }
    let Some(authority) = request.uri().authority().map(|a| a.to_string()) else {
        return empty(StatusCode::BAD_REQUEST);
    };
    let target = if authority.contains(':') {
        authority.clone()
    } else {
        format!("{authority}:80")
    };
    if request.method() == hyper::Method::CONNECT {
        shared.counters.tunnels.fetch_add(1, Ordering::Relaxed);
        Counters::count(&shared.counters.by_target, target.clone());
        tokio::spawn(async move {
            let Ok(upgraded) = hyper::upgrade::on(request).await else {
                return;
            };
            let Ok(mut upstream) = TcpStream::connect(&target).await else {
                return;
            };
            let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(upgraded), &mut upstream).await;
        });
        return empty(StatusCode::OK);
    }
    shared.counters.forwarded.fetch_add(1, Ordering::Relaxed);
    Counters::count(&shared.counters.by_target, target.clone());
    Counters::count(
        &shared.counters.by_path,
        format!("{target}{}", request.uri().path()),
    );
    let headers = request.headers_mut();
    headers.remove(hyper::header::PROXY_AUTHORIZATION);
    headers.remove("proxy-connection");
    if let Ok(identity) = hyper::header::HeaderValue::from_str(&shared.options.identity) {
        headers.insert(IDENTITY_HEADER, identity);
    }
    match shared.client.request(request).await {
        Ok(response) => response.map(|body| body.boxed()),
        Err(_) => {
            let mut response = Response::new(
                Full::new(Bytes::from_static(b"the proxy could not reach the target"))
                    .map_err(|never| match never {})
                    .boxed(),
            );
            *response.status_mut() = StatusCode::BAD_GATEWAY;
            response
        }
    }
}
