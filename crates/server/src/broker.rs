//! The running broker: binds the listener (TCP, TLS or a Unix socket), serves the router with
//! header-read timeouts, loads credentials in the background (readiness), and shuts down
//! gracefully: stop accepting, finish in-flight requests, then let the Keeper finish and
//! persist any refresh in flight.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use authkeeper_core::name::CredentialName;
use authkeeper_core::{CredentialConfig, Keeper, RecordStore};
use authkeeper_session::SessionPool;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

use crate::auth::CredentialTags;
use crate::config::{ClientConfig, Listen, ServerConfig, TlsConfig};
use crate::metrics::Metrics;
use crate::proxy::Upstream;
use crate::state::{AppState, ReadinessProbe, StateError, WarmUpFailure};

/// Why the broker could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The listen address could not be bound.
    #[error("cannot listen on {listen}: {source}")]
    Bind {
        /// The address.
        listen: String,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// Another process is listening on the Unix socket.
    #[error("{0} is in use by a running process")]
    SocketInUse(PathBuf),
    /// A file that is not a socket is in the way of the Unix socket.
    #[error("{0} exists and is not a socket: refusing to replace it")]
    NotASocket(PathBuf),
    /// The TLS files could not be used.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// The state could not be built.
    #[error(transparent)]
    State(#[from] StateError),
    /// The server task failed.
    #[error("the server task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Everything the broker needs besides the Keeper.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// The `[server]` table.
    pub server: ServerConfig,
    /// Where checkpoints are kept (usually the same store as the Keeper's credentials).
    pub records: Arc<dyn RecordStore>,
    /// The `[[clients]]` entries.
    pub clients: Vec<ClientConfig>,
    /// Upstreams of proxied credentials.
    pub upstreams: HashMap<String, Upstream>,
    /// The metrics sink registered on the Keeper (a fresh one when `None`: then refreshes are
    /// not counted).
    pub metrics: Option<Arc<Metrics>>,
    /// Run the Keeper's heartbeat (proactive refreshes) while serving (default false here;
    /// `authkeeper serve` turns it on).
    pub heartbeat: bool,
    /// An extra `/readyz` check, e.g. the shared store's health (none: the store answering a
    /// listing is enough).
    pub readiness_probe: Option<Arc<dyn ReadinessProbe>>,
    /// The browser-session pool (none: the session routes answer 403).
    pub sessions: Option<Arc<SessionPool>>,
    /// How often the session janitor runs (reclaim expired leases, probes, cookie refresh);
    /// `None`: never (tests drive it by hand).
    pub session_maintenance: Option<Duration>,
    /// Provider and labels of the credentials that have either (see [`tags_from`]).
    pub credential_tags: HashMap<String, CredentialTags>,
    /// The providers connections are created from (`POST /v1/credentials`), resolved.
    pub providers: HashMap<String, Arc<authkeeper_core::CredentialSettings>>,
    /// The upstreams of providers that have one: their connections' `/proxy` target.
    pub provider_upstreams: HashMap<String, Upstream>,
}

impl BrokerConfig {
    /// The defaults (loopback listener, no clients, no upstreams, no sessions), checkpoints in
    /// `records`.
    pub fn new(records: Arc<dyn RecordStore>) -> BrokerConfig {
        BrokerConfig {
            server: ServerConfig::default(),
            records,
            clients: Vec::new(),
            upstreams: HashMap::new(),
            metrics: None,
            heartbeat: false,
            readiness_probe: None,
            sessions: None,
            session_maintenance: None,
            credential_tags: HashMap::new(),
            providers: HashMap::new(),
            provider_upstreams: HashMap::new(),
        }
    }
}

/// The upstream of a provider (or credential) `config` names, without a session's identity: the
/// base URL, how the token is presented, the egress proxy.
pub fn upstream_of(
    name: &str,
    config: &CredentialConfig,
) -> Result<Option<Upstream>, authkeeper_core::config::ConfigError> {
    let Some(base) = config.upstream.clone() else {
        return Ok(None);
    };
    Ok(Some(Upstream {
        base,
        inject: config.inject.clone(),
        egress: config.egress(name)?,
        headers: Vec::new(),
    }))
}

/// The provider and labels of every credential that has either, for client scopes
/// (`provider:NAME`, `label:KEY=VALUE`) and listing filters.
pub fn tags_from(
    credentials: &BTreeMap<CredentialName, Arc<CredentialConfig>>,
) -> HashMap<String, CredentialTags> {
    credentials
        .iter()
        .filter(|(_, config)| config.provider.is_some() || !config.labels.is_empty())
        .map(|(name, config)| {
            (
                name.to_string(),
                CredentialTags {
                    provider: config.provider.clone(),
                    labels: config.labels.clone(),
                },
            )
        })
        .collect()
}

/// The upstreams of every credential with an `upstream` URL, with their egress proxies. A
/// credential backed by a browser session (`grant = "session"`) goes out like its session:
/// through the account's proxy (unless it names its own) with the session's `User-Agent` and
/// `Accept-Language`; `sessions` is the pool holding those sessions.
pub fn upstreams_from(
    credentials: &BTreeMap<CredentialName, Arc<CredentialConfig>>,
    sessions: Option<&authkeeper_session::SessionPool>,
) -> Result<HashMap<String, Upstream>, authkeeper_core::config::ConfigError> {
    let mut upstreams = HashMap::new();
    for (name, config) in credentials {
        let Some(base) = config.upstream.clone() else {
            continue;
        };
        let mut upstream = Upstream {
            base,
            inject: config.inject.clone(),
            egress: config.egress(name.as_str())?,
            headers: Vec::new(),
        };
        if let (authkeeper_core::grant::GrantKind::Session, Some(pool), Some(site), Some(account)) =
            (config.grant, sessions, &config.site, &config.account)
        {
            let invalid = |message: String| authkeeper_core::config::ConfigError::Invalid {
                name: name.to_string(),
                message,
            };
            let (identity, proxy) = pool
                .identity_and_proxy(site, account)
                .map_err(|e| invalid(e.to_string()))?;
            if upstream.egress.is_none()
                && let Some(proxy) = proxy
            {
                upstream.egress = Some(
                    authkeeper_core::egress::ProxyUrl::parse(&proxy)
                        .map_err(|e| invalid(format!("the account's proxy: {e}")))?,
                );
            }
            if let Some(identity) = identity {
                if let Some(user_agent) = identity
                    .user_agent
                    .as_deref()
                    .and_then(|ua| http::HeaderValue::from_str(ua).ok())
                {
                    upstream
                        .headers
                        .push((http::header::USER_AGENT, user_agent));
                }
                if let Ok(language) = http::HeaderValue::from_str(&identity.accept_language()) {
                    upstream
                        .headers
                        .push((http::header::ACCEPT_LANGUAGE, language));
                }
            }
        }
        upstreams.insert(name.to_string(), upstream);
    }
    Ok(upstreams)
}

/// Where the broker listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoundAddr {
    /// TCP, with or without TLS.
    Tcp {
        /// The bound address (the real port when 0 was asked).
        addr: SocketAddr,
        /// Whether TLS is on.
        tls: bool,
    },
    /// A Unix socket.
    Unix(PathBuf),
}

impl fmt::Display for BoundAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BoundAddr::Tcp { addr, tls: false } => write!(f, "http://{addr}"),
            BoundAddr::Tcp { addr, tls: true } => write!(f, "https://{addr}"),
            BoundAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// A running broker.
pub struct Broker {
    addr: BoundAddr,
    state: AppState,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl fmt::Debug for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Broker")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

enum Listener {
    Tcp(TcpListener, Option<TlsAcceptor>),
    Unix(UnixListener, PathBuf),
}

impl Broker {
    /// Binds `config.server.listen`, starts serving on a task and loads the credentials in
    /// the background (`/readyz` answers 200 once done).
    pub async fn start(keeper: Keeper, config: BrokerConfig) -> Result<Broker, BrokerError> {
        let metrics = config.metrics.unwrap_or_default();
        metrics.set_per_credential_limit(config.server.per_credential_metrics);
        metrics.update_credentials(&keeper, keeper.clock().now());
        let tls = match &config.server.tls {
            Some(tls) => Some(tls_acceptor(tls)?),
            None => None,
        };
        let (listener, addr) = bind(&config.server.listen, tls).await?;
        let state = AppState::new(
            keeper.clone(),
            config.records.clone(),
            config.server.clone(),
            &config.clients,
            config.upstreams,
            metrics,
        )?
        .with_readiness_probe(config.readiness_probe)
        .with_sessions(config.sessions.clone())
        .with_credential_tags(config.credential_tags)
        .with_providers(config.providers)
        .with_provider_upstreams(config.provider_upstreams)?;
        let janitor = match (&config.sessions, config.session_maintenance) {
            (Some(pool), Some(every)) => Some(pool.clone().spawn_maintenance(every)),
            _ => None,
        };
        let warm_state = state.clone();
        let warm_up = tokio::spawn(async move {
            let connections = crate::connections::load_all(&warm_state).await;
            if connections > 0 {
                tracing::info!(connections, "connections added from the store");
            }
            let failures = warm_state.keeper().warm_up().await;
            let failures = failures
                .into_iter()
                .map(|(credential, error)| {
                    tracing::warn!(credential = %credential, error = %error, "credential not loaded at start-up");
                    WarmUpFailure {
                        credential,
                        class: error.class().as_str(),
                        detail: error.to_string(),
                    }
                })
                .collect();
            warm_state.readiness().finish(failures);
        });
        let heartbeat = config.heartbeat.then(|| keeper.spawn_heartbeat());
        let (stop, stopped) = oneshot::channel();
        let router = crate::app::router(state.clone());
        let server = config.server;
        let task = tokio::spawn(async move {
            accept_loop(listener, router, &server, stopped).await;
            warm_up.abort();
            if let Some(heartbeat) = heartbeat {
                heartbeat.abort();
            }
            if let Some(janitor) = janitor {
                janitor.abort();
            }
            keeper.shutdown().await;
            tracing::info!("broker stopped");
        });
        Ok(Broker {
            addr,
            state,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Where the broker listens.
    pub fn addr(&self) -> &BoundAddr {
        &self.addr
    }

    /// The base URL (`http://…`, `https://…` or `unix:/path`).
    pub fn url(&self) -> String {
        self.addr.to_string()
    }

    /// The shared state (metrics, readiness, keeper).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `signal` completes, then shuts down gracefully.
    pub async fn run_until(mut self, signal: impl Future<Output = ()>) -> Result<(), BrokerError> {
        let Some(mut task) = self.task.take() else {
            return Ok(());
        };
        tokio::select! {
            () = signal => {}
            result = &mut task => return result.map_err(BrokerError::from),
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        task.await.map_err(BrokerError::from)
    }

    /// Stops accepting connections, finishes in-flight requests (at most `shutdown_grace`),
    /// then waits for refreshes in flight to be stored.
    pub async fn shutdown(self) -> Result<(), BrokerError> {
        self.run_until(async {}).await
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Serves `router` on the address in `config` until `shutdown` completes.
pub async fn serve(
    keeper: Keeper,
    config: BrokerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BrokerError> {
    Broker::start(keeper, config)
        .await?
        .run_until(shutdown)
        .await
}

async fn bind(
    listen: &Listen,
    tls: Option<TlsAcceptor>,
) -> Result<(Listener, BoundAddr), BrokerError> {
    let bind_error = |source| BrokerError::Bind {
        listen: listen.to_string(),
        source,
    };
    match listen {
        Listen::Tcp(addr) => {
            let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
            let addr = listener.local_addr().map_err(bind_error)?;
            let bound = BoundAddr::Tcp {
                addr,
                tls: tls.is_some(),
            };
            Ok((Listener::Tcp(listener, tls), bound))
        }
        Listen::Unix(path) => {
            if tls.is_some() {
                return Err(BrokerError::Tls(
                    "TLS is for TCP listeners; a Unix socket is protected by its file mode".into(),
                ));
            }
            let listener = bind_unix(path).await.map_err(|e| match e {
                UnixBindError::Io(source) => bind_error(source),
                UnixBindError::Broker(error) => error,
            })?;
            Ok((
                Listener::Unix(listener, path.clone()),
                BoundAddr::Unix(path.clone()),
            ))
        }
    }
}

enum UnixBindError {
    Io(std::io::Error),
    Broker(BrokerError),
}

impl From<std::io::Error> for UnixBindError {
    fn from(error: std::io::Error) -> Self {
        UnixBindError::Io(error)
    }
}

/// Binds a Unix socket with mode 0600: bound under a temporary name, restricted, then renamed
/// into place so it is never reachable with wider permissions. A stale socket is replaced.
async fn bind_unix(path: &Path) -> Result<UnixListener, UnixBindError> {
    use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(UnixBindError::Broker(BrokerError::NotASocket(
                path.to_path_buf(),
            )));
        }
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(UnixBindError::Broker(BrokerError::SocketInUse(
                path.to_path_buf(),
            )));
        }
    }
    let mut temp = path.as_os_str().to_owned();
    temp.push(format!(".{}.tmp", std::process::id()));
    let temp = PathBuf::from(temp);
    let _ = std::fs::remove_file(&temp);
    let listener = UnixListener::bind(&temp)?;
    std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&temp, path)?;
    Ok(listener)
}

fn tls_acceptor(config: &TlsConfig) -> Result<TlsAcceptor, BrokerError> {
    let read = |path: &Path| {
        std::fs::read(path)
            .map_err(|e| BrokerError::Tls(format!("cannot read {}: {e}", path.display())))
    };
    let cert_pem = read(&config.cert)?;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            BrokerError::Tls(format!(
                "invalid certificate {}: {e}",
                config.cert.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(BrokerError::Tls(format!(
            "no certificate in {}",
            config.cert.display()
        )));
    }
    let key_pem = read(&config.key)?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|_| BrokerError::Tls(format!("invalid private key in {}", config.key.display())))?
        .ok_or_else(|| BrokerError::Tls(format!("no private key in {}", config.key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| BrokerError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| BrokerError::Tls(format!("certificate and key do not fit: {e}")))?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}

async fn accept_loop(
    listener: Listener,
    router: axum::Router,
    config: &ServerConfig,
    mut stopped: oneshot::Receiver<()>,
) {
    let graceful = GracefulShutdown::new();
    let header_timeout = config.header_timeout;
    loop {
        let accepted = tokio::select! {
            _ = &mut stopped => break,
            accepted = accept(&listener) => accepted,
        };
        match accepted {
            Ok(Accepted::Plain(io, peer)) => {
                spawn_connection(io, &with_peer(&router, peer), header_timeout, &graceful)
            }
            Ok(Accepted::Tls(stream, acceptor, peer)) => {
                let router = with_peer(&router, Some(peer));
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let conn = connection(tls, router, header_timeout);
                            if let Err(error) = watcher.watch(conn).await {
                                tracing::debug!(error = %error, "connection ended with an error");
                            }
                        }
                        Ok(Err(error)) => tracing::debug!(error = %error, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                });
            }
            Err(error) => {
                // Out of file descriptors and the like: wait a little instead of spinning.
                tracing::warn!(error = %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    if let Listener::Unix(_, path) = &listener {
        let _ = std::fs::remove_file(path);
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(config.shutdown_grace) => {
            tracing::warn!("in-flight requests did not finish within shutdown_grace; closing them");
        }
    }
}

enum Accepted {
    Plain(Box<dyn Io>, Option<SocketAddr>),
    Tls(tokio::net::TcpStream, TlsAcceptor, SocketAddr),
}

/// The router for one connection, with the peer's address as `ConnectInfo` (the proxy sends
/// it in `X-Forwarded-For`). Unix-socket peers have none.
fn with_peer(router: &axum::Router, peer: Option<SocketAddr>) -> axum::Router {
    match peer {
        Some(peer) => router
            .clone()
            .layer(axum::Extension(axum::extract::ConnectInfo(peer))),
        None => router.clone(),
    }
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

async fn accept(listener: &Listener) -> std::io::Result<Accepted> {
    match listener {
        Listener::Tcp(listener, tls) => {
            let (stream, peer) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            Ok(match tls {
                Some(acceptor) => Accepted::Tls(stream, acceptor.clone(), peer),
                None => Accepted::Plain(Box::new(stream), Some(peer)),
            })
        }
        Listener::Unix(listener, _) => {
            let (stream, _) = listener.accept().await?;
            Ok(Accepted::Plain(Box::new(stream), None))
        }
    }
}

fn connection<I: Io>(
    io: I,
    router: axum::Router,
    header_timeout: Duration,
) -> hyper::server::conn::http1::Connection<TokioIo<I>, TowerToHyperService<axum::Router>> {
    hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(router))
}

fn spawn_connection(
    io: Box<dyn Io>,
    router: &axum::Router,
    header_timeout: Duration,
    graceful: &GracefulShutdown,
) {
    let conn = graceful.watch(connection(io, router.clone(), header_timeout));
    tokio::spawn(async move {
        if let Err(error) = conn.await {
            tracing::debug!(error = %error, "connection ended with an error");
        }
    });
}
