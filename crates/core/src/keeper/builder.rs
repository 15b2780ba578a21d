//! [`KeeperBuilder`]: the credentials, store, clock, sinks and settings of a [`Keeper`].

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use rand::Rng as _;
use tokio::sync::Notify;

use super::{Inner, Keeper, KeeperError, KeeperSettings, reauth_hook};
use crate::clock::SharedClock;
use crate::config::CredentialSettings;
use crate::events::SharedSink;
use crate::name::CredentialName;
use crate::reauth::Reauthenticator;
use crate::source::TokenSource;
use crate::store::{CredentialStore, StoreError};

/// Builds a [`Keeper`].
pub struct KeeperBuilder {
    store: Arc<dyn CredentialStore>,
    clock: SharedClock,
    settings: KeeperSettings,
    credentials: Vec<(CredentialName, Arc<CredentialSettings>)>,
    sinks: Vec<SharedSink>,
    http: Option<reqwest::Client>,
    reauth: Option<Arc<dyn Reauthenticator>>,
    sources: HashMap<CredentialName, Arc<dyn TokenSource>>,
}

impl KeeperBuilder {
    pub(super) fn new(store: Arc<dyn CredentialStore>, clock: SharedClock) -> KeeperBuilder {
        KeeperBuilder {
            store,
            clock,
            settings: KeeperSettings::default(),
            credentials: Vec::new(),
            sinks: Vec::new(),
            http: None,
            reauth: None,
            sources: HashMap::new(),
        }
    }

    /// Gets `name`'s tokens from `source` instead of a token endpoint (`grant = "session"`).
    pub fn token_source(mut self, name: CredentialName, source: Arc<dyn TokenSource>) -> Self {
        self.sources.insert(name, source);
        self
    }

    /// Adds a credential.
    pub fn credential(self, name: CredentialName, settings: CredentialSettings) -> Self {
        self.credential_shared(name, Arc::new(settings))
    }

    /// Adds a credential whose settings other credentials share (those of one provider): the
    /// settings and their OAuth client are kept once for all of them, not once per credential.
    pub fn credential_shared(
        mut self,
        name: CredentialName,
        settings: Arc<CredentialSettings>,
    ) -> Self {
        self.credentials.push((name, settings));
        self
    }

    /// Replaces the engine-wide settings.
    pub fn settings(mut self, settings: KeeperSettings) -> Self {
        self.settings = settings;
        self
    }

    /// Adds an event sink.
    pub fn event_sink(mut self, sink: SharedSink) -> Self {
        self.sinks.push(sink);
        self
    }

    /// Re-authenticates credentials when refreshing cannot help, and renews sessions ahead of
    /// their absolute expiry (see [`crate::reauth`]).
    pub fn reauthenticator(mut self, reauth: Arc<dyn Reauthenticator>) -> Self {
        self.reauth = Some(reauth);
        self
    }

    /// Uses this HTTP client for token requests (default: a fresh one that follows no redirect).
    pub fn http_client(mut self, http: reqwest::Client) -> Self {
        self.http = Some(http);
        self
    }

    /// Builds the engine.
    pub fn build(self) -> Result<Keeper, KeeperError> {
        let http = match self.http {
            Some(http) => http,
            None => reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| KeeperError::Store {
                    name: String::new(),
                    source: StoreError::Other {
                        message: "cannot build the HTTP client".into(),
                        source: Some(Box::new(e)),
                    },
                })?,
        };
        let factory = super::registry::EntryFactory::new(
            http,
            self.settings.breaker_threshold,
            self.settings.backoff,
        );
        let mut entries = HashMap::with_hasher(foldhash::fast::RandomState::default());
        for (name, settings) in self.credentials {
            let source = self.sources.get(&name).cloned();
            let entry = factory.entry(name.clone(), settings, source)?;
            entries.insert(name, Arc::new(entry));
        }
        let owner = format!(
            "{}-{:016x}",
            std::process::id(),
            rand::thread_rng().r#gen::<u64>()
        );
        let mut names: Vec<CredentialName> = entries.keys().cloned().collect();
        names.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
        Ok(Keeper {
            inner: Arc::new(Inner {
                store: self.store,
                clock: self.clock,
                owner,
                settings: self.settings,
                entries,
                names,
                connections: Default::default(),
                factory,
                sinks: self.sinks,
                schedule_changed: Notify::new(),
                due: Default::default(),
                heartbeat_running: AtomicBool::new(false),
                shutting_down: AtomicBool::new(false),
                reauth: self.reauth.map(reauth_hook::ReauthHook::new),
            }),
        })
    }
}
