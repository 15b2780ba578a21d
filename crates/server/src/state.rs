//! The shared application state handed to every handler.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use authkeeper_core::{CredentialSettings, Keeper, RecordStore};
use authkeeper_session::SessionPool;

use crate::auth::{ClientKeyError, ClientKeys, CredentialTags};
use crate::config::{ClientConfig, ServerConfig};
use crate::metrics::Metrics;
use crate::proxy::{Proxy, ProxyConfig, ProxyError, Upstream};

/// Why the application state could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// `[[clients]]` is invalid.
    #[error(transparent)]
    Clients(#[from] ClientKeyError),
    /// The proxy could not be built.
    #[error(transparent)]
    Proxy(#[from] ProxyError),
}

/// A credential that failed to load at start-up.
#[derive(Debug, Clone)]
pub struct WarmUpFailure {
    /// The credential.
    pub credential: String,
    /// The error class (`needs_reauth`, `transient`...).
    pub class: &'static str,
    /// What went wrong (never a secret).
    pub detail: String,
}

/// An extra readiness check run by `GET /readyz`, e.g. the health of a shared store (Redis):
/// `Err(reason)` makes the broker report not-ready (503) with that reason. The reason must not
/// contain a secret.
#[async_trait::async_trait]
pub trait ReadinessProbe: Send + Sync + std::fmt::Debug + 'static {
    /// Checks readiness now; should answer within a second or two.
    async fn check(&self) -> Result<(), String>;
}

/// Whether start-up work has finished, and how it went.
#[derive(Debug, Default)]
pub struct Readiness {
    warmed_up: AtomicBool,
    failures: Mutex<Vec<WarmUpFailure>>,
}

impl Readiness {
    /// Records the end of warm-up.
    pub fn finish(&self, failures: Vec<WarmUpFailure>) {
        if let Ok(mut slot) = self.failures.lock() {
            *slot = failures;
        }
        self.warmed_up.store(true, Ordering::Release);
    }

    /// Whether warm-up has finished.
    pub fn is_warmed_up(&self) -> bool {
        self.warmed_up.load(Ordering::Acquire)
    }

    /// The credentials that failed to load.
    pub fn failures(&self) -> Vec<WarmUpFailure> {
        self.failures.lock().map(|f| f.clone()).unwrap_or_default()
    }
}

/// Everything the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    keeper: Keeper,
    records: Arc<dyn RecordStore>,
    keys: ClientKeys,
    metrics: Arc<Metrics>,
    proxy: Proxy,
    config: ServerConfig,
    readiness: Readiness,
    probe: Option<Arc<dyn ReadinessProbe>>,
    sessions: Option<Arc<SessionPool>>,
    /// Provider and labels of the credentials that have either (connections come and go).
    tags: RwLock<HashMap<String, Arc<CredentialTags>>>,
    /// The `[providers.NAME]` connections can be created from, resolved.
    providers: HashMap<String, Arc<CredentialSettings>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("keeper", &self.inner.keeper)
            .field("clients", &self.inner.keys)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// Builds the state: validates the client keys and builds the proxy over `upstreams`.
    /// `metrics` should be the sink registered on `keeper` so refreshes are counted.
    pub fn new(
        keeper: Keeper,
        records: Arc<dyn RecordStore>,
        config: ServerConfig,
        clients: &[ClientConfig],
        upstreams: HashMap<String, Upstream>,
        metrics: Arc<Metrics>,
    ) -> Result<AppState, StateError> {
        let keys = ClientKeys::new(clients)?;
        let observer: Arc<dyn crate::proxy::ProxyObserver> = metrics.clone();
        let proxy = Proxy::new(
            keeper.clone(),
            upstreams,
            ProxyConfig {
                replay_limit: config.proxy_replay_limit,
                timeout: config.proxy_timeout,
            },
            Some(observer),
        )?;
        Ok(AppState {
            inner: Arc::new(Inner {
                keeper,
                records,
                keys,
                metrics,
                proxy,
                config,
                readiness: Readiness::default(),
                probe: None,
                sessions: None,
                tags: RwLock::default(),
                providers: HashMap::new(),
            }),
        })
    }

    /// The engine.
    pub fn keeper(&self) -> &Keeper {
        &self.inner.keeper
    }

    /// The record store (checkpoints).
    pub fn records(&self) -> &Arc<dyn RecordStore> {
        &self.inner.records
    }

    /// The client keys.
    pub fn keys(&self) -> &ClientKeys {
        &self.inner.keys
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// The reverse proxy.
    pub fn proxy(&self) -> &Proxy {
        &self.inner.proxy
    }

    /// Adds the upstreams of providers for their connections (call before the state is
    /// shared).
    pub fn with_provider_upstreams(
        mut self,
        upstreams: HashMap<String, Upstream>,
    ) -> Result<AppState, StateError> {
        if upstreams.is_empty() {
            return Ok(self);
        }
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.proxy.add_provider_upstreams(upstreams)?;
        }
        Ok(self)
    }

    /// The `[server]` settings.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    /// Start-up progress.
    pub fn readiness(&self) -> &Readiness {
        &self.inner.readiness
    }

    /// Adds an extra readiness check to `/readyz` (call before the state is shared).
    pub fn with_readiness_probe(mut self, probe: Option<Arc<dyn ReadinessProbe>>) -> AppState {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.probe = probe;
        }
        self
    }

    /// Adds the browser-session pool (call before the state is shared).
    pub fn with_sessions(mut self, sessions: Option<Arc<SessionPool>>) -> AppState {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.sessions = sessions;
        }
        self
    }

    /// Adds the providers and labels of credentials (call before the state is shared).
    pub fn with_credential_tags(self, tags: HashMap<String, CredentialTags>) -> AppState {
        *self.inner.tags.write().unwrap_or_else(|p| p.into_inner()) = tags
            .into_iter()
            .map(|(name, tags)| (name, Arc::new(tags)))
            .collect();
        self
    }

    /// Adds the providers connections may be created from (call before the state is shared).
    pub fn with_providers(
        mut self,
        providers: HashMap<String, Arc<CredentialSettings>>,
    ) -> AppState {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.providers = providers;
        }
        self
    }

    /// The resolved settings of provider `name`.
    pub fn provider(&self, name: &str) -> Option<&Arc<CredentialSettings>> {
        self.inner.providers.get(name)
    }

    /// The provider and labels of `credential`, if it has either.
    pub fn tags(&self, credential: &str) -> Option<Arc<CredentialTags>> {
        self.inner
            .tags
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(credential)
            .cloned()
    }

    /// Sets (or, with `None`, forgets) the provider and labels of `credential`.
    pub fn set_tags(&self, credential: &str, tags: Option<CredentialTags>) {
        let mut all = self.inner.tags.write().unwrap_or_else(|p| p.into_inner());
        match tags {
            Some(tags) => {
                all.insert(credential.to_owned(), Arc::new(tags));
            }
            None => {
                all.remove(credential);
            }
        }
    }

    /// The browser-session pool, when sites are configured.
    pub fn sessions(&self) -> Option<&Arc<SessionPool>> {
        self.inner.sessions.as_ref()
    }

    /// The extra readiness check, if any.
    pub fn readiness_probe(&self) -> Option<&Arc<dyn ReadinessProbe>> {
        self.inner.probe.as_ref()
    }

    /// Whether `credential` is configured in the Keeper.
    pub fn is_configured(&self, credential: &str) -> bool {
        self.inner.keeper.status(credential).is_some()
    }
}
