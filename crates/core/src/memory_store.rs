//! [`MemoryStore`]: a [`Store`] that keeps everything in process memory.
//!
//! For tests, examples and short-lived tools that need no persistence. Leases work between
//! tasks and Keepers of one process; nothing survives a restart.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use crate::clock::Timestamp;
use crate::store::{
    CredentialStatus, CredentialSummary, Lease, LeaseAttempt, Store, StoreError, StoredCheckpoint,
    StoredCredential, StoredSession, WriteOutcome, validate_name,
};
use crate::token::TokenSet;

#[derive(Default)]
struct LeaseRow {
    owner: String,
    fence: u64,
    expires_at: Timestamp,
    released: bool,
    /// The generation a holder was refreshing from (see [`Store::mark_in_flight`]).
    in_flight: Option<u64>,
}

#[derive(Default)]
struct State {
    credentials: HashMap<String, StoredCredential>,
    leases: HashMap<String, LeaseRow>,
    checkpoints: HashMap<String, StoredCheckpoint>,
    /// Session records by site, then id. A site without records has no entry.
    sessions: HashMap<String, HashMap<String, StoredSession>>,
}

/// An in-memory store.
#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn load(&self, name: &str) -> Result<Option<StoredCredential>, StoreError> {
        validate_name(name)?;
        Ok(self.state().credentials.get(name).cloned())
    }

    async fn list(&self) -> Result<Vec<CredentialSummary>, StoreError> {
        let mut list: Vec<_> = self
            .state()
            .credentials
            .values()
            .map(|c| CredentialSummary {
                name: c.name.clone(),
                generation: c.generation,
                expires_at: c.tokens.expires_at,
                status: c.status.clone(),
            })
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(list)
    }

    async fn put(&self, name: &str, tokens: &TokenSet, _now: Timestamp) -> Result<u64, StoreError> {
        validate_name(name)?;
        let mut state = self.state();
        let generation = state.credentials.get(name).map_or(0, |c| c.generation) + 1;
        state.credentials.insert(
            name.to_owned(),
            StoredCredential {
                name: name.to_owned(),
                generation,
                tokens: tokens.clone(),
                status: CredentialStatus::default(),
            },
        );
        Ok(generation)
    }

    async fn compare_and_put(
        &self,
        name: &str,
        expected_generation: u64,
        fence: Option<u64>,
        tokens: &TokenSet,
        now: Timestamp,
    ) -> Result<WriteOutcome, StoreError> {
        validate_name(name)?;
        let mut state = self.state();
        let current_generation = state.credentials.get(name).map_or(0, |c| c.generation);
        let fenced_out = fence.is_some_and(|f| state.leases.get(name).is_none_or(|l| l.fence != f));
        if current_generation != expected_generation || fenced_out {
            return Ok(WriteOutcome::Conflict { current_generation });
        }
        let generation = current_generation + 1;
        state.credentials.insert(
            name.to_owned(),
            StoredCredential {
                name: name.to_owned(),
                generation,
                tokens: tokens.clone(),
                status: CredentialStatus {
                    last_refresh_at: Some(now),
                    ..CredentialStatus::default()
                },
            },
        );
        Ok(WriteOutcome::Written { generation })
    }

    async fn set_status(
        &self,
        name: &str,
        generation: u64,
        status: &CredentialStatus,
    ) -> Result<bool, StoreError> {
        validate_name(name)?;
        match self.state().credentials.get_mut(name) {
            Some(credential) if credential.generation == generation => {
                credential.status = status.clone();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn delete(&self, name: &str) -> Result<bool, StoreError> {
        validate_name(name)?;
        Ok(self.state().credentials.remove(name).is_some())
    }

    async fn try_acquire_lease(
        &self,
        name: &str,
        owner: &str,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<LeaseAttempt, StoreError> {
        validate_name(name)?;
        let mut state = self.state();
        let row = state.leases.entry(name.to_owned()).or_default();
        let held = row.fence > 0 && !row.released;
        if held && now < row.expires_at {
            return Ok(LeaseAttempt::Busy {
                held_until: row.expires_at,
            });
        }
        row.fence += 1;
        row.owner = owner.to_owned();
        row.expires_at = now + ttl;
        row.released = false;
        Ok(LeaseAttempt::Acquired(Lease {
            name: name.to_owned(),
            owner: owner.to_owned(),
            fence: row.fence,
            expires_at: row.expires_at,
            took_over_abandoned: held,
            guard: None,
        }))
    }

    async fn release_lease(&self, lease: Lease) -> Result<(), StoreError> {
        if let Some(row) = self.state().leases.get_mut(&lease.name)
            && row.fence == lease.fence
            && row.owner == lease.owner
        {
            row.released = true;
            row.in_flight = None;
        }
        Ok(())
    }

    async fn mark_in_flight(
        &self,
        name: &str,
        fence: u64,
        generation: u64,
    ) -> Result<Option<u64>, StoreError> {
        validate_name(name)?;
        let mut state = self.state();
        let Some(row) = state.leases.get_mut(name) else {
            return Ok(None);
        };
        let previous = row.in_flight;
        if row.fence == fence && !row.released {
            row.in_flight = Some(generation);
        }
        Ok(previous)
    }

    async fn put_checkpoint(
        &self,
        task: &str,
        data: &[u8],
        now: Timestamp,
    ) -> Result<u64, StoreError> {
        validate_name(task)?;
        let mut state = self.state();
        let version = state.checkpoints.get(task).map_or(0, |c| c.version) + 1;
        state.checkpoints.insert(
            task.to_owned(),
            StoredCheckpoint {
                task: task.to_owned(),
                data: zeroize::Zeroizing::new(data.to_vec()),
                version,
                updated_at: now,
            },
        );
        Ok(version)
    }

    async fn get_checkpoint(&self, task: &str) -> Result<Option<StoredCheckpoint>, StoreError> {
        validate_name(task)?;
        Ok(self.state().checkpoints.get(task).cloned())
    }

    async fn delete_checkpoint(&self, task: &str) -> Result<bool, StoreError> {
        validate_name(task)?;
        Ok(self.state().checkpoints.remove(task).is_some())
    }

    async fn list_sessions(&self, site: &str) -> Result<Vec<StoredSession>, StoreError> {
        validate_name(site)?;
        Ok(self
            .state()
            .sessions
            .get(site)
            .map(|records| records.values().cloned().collect())
            .unwrap_or_default())
    }

    async fn list_session_sites(&self) -> Result<Vec<String>, StoreError> {
        let mut sites: Vec<String> = self.state().sessions.keys().cloned().collect();
        sites.sort();
        Ok(sites)
    }

    async fn load_session(
        &self,
        site: &str,
        id: &str,
    ) -> Result<Option<StoredSession>, StoreError> {
        validate_name(site)?;
        validate_name(id)?;
        Ok(self
            .state()
            .sessions
            .get(site)
            .and_then(|records| records.get(id))
            .cloned())
    }

    async fn compare_and_put_session(
        &self,
        site: &str,
        id: &str,
        expected_version: u64,
        data: &[u8],
    ) -> Result<Option<u64>, StoreError> {
        validate_name(site)?;
        validate_name(id)?;
        let mut state = self.state();
        let current = state
            .sessions
            .get(site)
            .and_then(|records| records.get(id))
            .map_or(0, |record| record.version);
        if current != expected_version {
            return Ok(None);
        }
        let version = current.saturating_add(1);
        state.sessions.entry(site.to_owned()).or_default().insert(
            id.to_owned(),
            StoredSession {
                site: site.to_owned(),
                id: id.to_owned(),
                data: zeroize::Zeroizing::new(data.to_vec()),
                version,
            },
        );
        Ok(Some(version))
    }

    async fn delete_session(
        &self,
        site: &str,
        id: &str,
        expected_version: u64,
    ) -> Result<bool, StoreError> {
        validate_name(site)?;
        validate_name(id)?;
        let mut state = self.state();
        let Some(records) = state.sessions.get_mut(site) else {
            return Ok(false);
        };
        let matches = records
            .get(id)
            .is_some_and(|record| expected_version == 0 || record.version == expected_version);
        if !matches {
            return Ok(false);
        }
        records.remove(id);
        if records.is_empty() {
            state.sessions.remove(site);
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn checkpoints_round_trip_and_are_versioned() {
        let store = MemoryStore::new();
        let t0 = Timestamp::from_millis(1_000);
        assert!(store.get_checkpoint("job").await.unwrap().is_none());
        assert_eq!(
            store.put_checkpoint("job", b"{\"n\":1}", t0).await.unwrap(),
            1
        );
        assert_eq!(
            store.put_checkpoint("job", b"{\"n\":2}", t0).await.unwrap(),
            2
        );
        let saved = store.get_checkpoint("job").await.unwrap().unwrap();
        assert_eq!((&saved.data[..], saved.version), (&b"{\"n\":2}"[..], 2));
        assert!(
            !format!("{saved:?}").contains("\"n\""),
            "Debug shows the contents"
        );
        assert!(store.delete_checkpoint("job").await.unwrap());
        assert!(!store.delete_checkpoint("job").await.unwrap());
        assert!(matches!(
            store.put_checkpoint("a/b", b"{}", t0).await,
            Err(StoreError::InvalidName(_))
        ));
    }

    #[tokio::test]
    async fn sessions_are_versioned_per_site() {
        let store = MemoryStore::new();
        assert_eq!(
            store
                .compare_and_put_session("shop", "s1", 0, b"{\"n\":1}")
                .await
                .unwrap(),
            Some(1)
        );
        assert_eq!(
            store
                .compare_and_put_session("shop", "s1", 0, b"{}")
                .await
                .unwrap(),
            None
        );
        let loaded = store.load_session("shop", "s1").await.unwrap().unwrap();
        assert_eq!((&loaded.data[..], loaded.version), (&b"{\"n\":1}"[..], 1));
        assert!(!format!("{loaded:?}").contains("\"n\""));
        assert!(store.load_session("mail", "s1").await.unwrap().is_none());
        assert_eq!(store.list_session_sites().await.unwrap(), vec!["shop"]);
        assert!(!store.delete_session("shop", "s1", 2).await.unwrap());
        assert!(store.delete_session("shop", "s1", 1).await.unwrap());
        assert!(store.list_session_sites().await.unwrap().is_empty());
    }
}

/// The shared conformance suite, run on the in-memory store.
#[cfg(all(test, feature = "conformance"))]
mod conformance_tests {
    async fn make() -> (super::MemoryStore, String) {
        (super::MemoryStore::new(), String::new())
    }

    crate::store_conformance_tests!(make);
}
