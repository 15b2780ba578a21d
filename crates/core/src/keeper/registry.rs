//! Where the Keeper finds a credential's runtime state, and how entries are made.
//!
//! Credentials of the configuration are fixed when the Keeper is built and looked up without a
//! lock on the fast path. Connections — credentials added while running
//! ([`super::Keeper::add_credential`]) — live behind a read-write lock, consulted only when the
//! fixed map does not know a name. [`EntryFactory`] builds both kinds so that credentials share
//! what they can: one HTTP client per egress proxy, one OAuth client per shared settings, one
//! circuit breaker per token endpoint.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex, RwLock, Weak};

use super::KeeperError;
use super::entry::Entry;
use crate::backoff::{Backoff, CircuitBreaker};
use crate::config::CredentialSettings;
use crate::grant::OAuthClient;
use crate::name::CredentialName;
use crate::source::TokenSource;
use crate::store::StoreError;

/// What entries share, created on first use.
#[derive(Default)]
struct Shared {
    /// One HTTP client per egress proxy URL.
    proxied: HashMap<String, reqwest::Client>,
    /// One OAuth client per shared settings (keyed by the settings' address; the settings stay
    /// alive while an entry holds the client).
    clients: HashMap<usize, Weak<OAuthClient>>,
    /// One circuit breaker per token endpoint.
    breakers: HashMap<String, Arc<CircuitBreaker>>,
}

/// Builds entries that share HTTP clients, OAuth clients and circuit breakers.
pub(super) struct EntryFactory {
    http: reqwest::Client,
    breaker_threshold: u32,
    backoff: Backoff,
    shared: Mutex<Shared>,
}

impl EntryFactory {
    /// A factory whose entries use `http` (unless their settings name an egress proxy).
    pub(super) fn new(http: reqwest::Client, breaker_threshold: u32, backoff: Backoff) -> Self {
        EntryFactory {
            http,
            breaker_threshold,
            backoff,
            shared: Mutex::new(Shared::default()),
        }
    }

    /// The runtime state of a new credential `name`.
    pub(super) fn entry(
        &self,
        name: CredentialName,
        settings: Arc<CredentialSettings>,
        source: Option<Arc<dyn TokenSource>>,
    ) -> Result<Entry, KeeperError> {
        let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        let key = Arc::as_ptr(&settings) as usize;
        let client = match shared.clients.get(&key).and_then(Weak::upgrade) {
            Some(client) => client,
            None => {
                let http = match &settings.client.proxy {
                    None => self.http.clone(),
                    Some(proxy) => match shared.proxied.get(proxy.expose_url()) {
                        Some(client) => client.clone(),
                        None => {
                            let client = crate::egress::http_client(Some(proxy)).map_err(|e| {
                                KeeperError::Store {
                                    name: name.to_string(),
                                    source: StoreError::Other {
                                        message: e.to_string(),
                                        source: None,
                                    },
                                }
                            })?;
                            shared
                                .proxied
                                .insert(proxy.expose_url().to_owned(), client.clone());
                            client
                        }
                    },
                };
                let client = Arc::new(OAuthClient::new(settings.client.clone(), http));
                shared.clients.insert(key, Arc::downgrade(&client));
                client
            }
        };
        let (threshold, backoff) = (self.breaker_threshold, self.backoff);
        let breaker = Arc::clone(
            shared
                .breakers
                .entry(client.endpoint_key())
                .or_insert_with(|| Arc::new(CircuitBreaker::new(threshold, backoff))),
        );
        Ok(Entry::new(name, settings, client, source, breaker))
    }
}

/// The connections: credentials added at runtime.
#[derive(Default)]
pub(super) struct Connections {
    entries: RwLock<HashMap<CredentialName, Arc<Entry>, foldhash::fast::RandomState>>,
    names: RwLock<BTreeSet<CredentialName>>,
}

impl Connections {
    /// The connection called `name`.
    pub(super) fn get(&self, name: &str) -> Option<Arc<Entry>> {
        self.entries
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// Adds `entry`; `false` when the name is taken.
    pub(super) fn insert(&self, entry: Arc<Entry>) -> bool {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if entries.contains_key(&entry.name) {
            return false;
        }
        self.names
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(entry.name.clone());
        entries.insert(entry.name.clone(), entry);
        true
    }

    /// Removes the connection called `name`, returning it.
    pub(super) fn remove(&self, name: &str) -> Option<Arc<Entry>> {
        let removed = self
            .entries
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        if removed.is_some() {
            self.names
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(name);
        }
        removed
    }

    /// How many there are.
    pub(super) fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Up to `limit` names after `after`, in name order.
    pub(super) fn names_after(&self, after: Option<&str>, limit: usize) -> Vec<CredentialName> {
        let names = self.names.read().unwrap_or_else(|p| p.into_inner());
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        names
            .range::<str, _>((lower, Bound::Unbounded))
            .take(limit)
            .cloned()
            .collect()
    }

    /// Every connection's entry (e.g. for a reload after missed change events).
    pub(super) fn all(&self) -> Vec<Arc<Entry>> {
        self.entries
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

/// Merges two name-ordered lists, keeping at most `limit` names.
pub(super) fn merge_names(
    fixed: &[CredentialName],
    added: Vec<CredentialName>,
    limit: usize,
) -> Vec<CredentialName> {
    let mut merged = Vec::with_capacity(limit.min(fixed.len() + added.len()));
    let mut fixed = fixed.iter().peekable();
    let mut added = added.into_iter().peekable();
    while merged.len() < limit {
        let next = match (fixed.peek(), added.peek()) {
            (Some(a), Some(b)) if a.as_str() <= b.as_str() => fixed.next().cloned(),
            (Some(_), Some(_)) => added.next(),
            (Some(_), None) => fixed.next().cloned(),
            (None, Some(_)) => added.next(),
            (None, None) => None,
        };
        match next {
            Some(name) => merged.push(name),
            None => break,
        }
    }
    merged
}
