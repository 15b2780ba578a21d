//! [`MemoryStore`]: both store traits in process memory.
//!
//! For tests, examples and short-lived tools that need no persistence. Leases work between
//! tasks and Keepers of one process; nothing survives a restart.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use zeroize::Zeroizing;

use super::credential::{
    CredentialStatus, CredentialStore, CredentialSummary, Precondition, StoredCredential,
    WriteOutcome,
};
use super::error::StoreError;
use super::lease::{Lease, LeaseAttempt};
use super::record::{Expect, Record, RecordKey, RecordKind, RecordStore};
use crate::clock::Timestamp;
use crate::name::CredentialName;
use crate::token::TokenSet;

#[derive(Default)]
struct LeaseRow {
    owner: String,
    fence: u64,
    expires_at: Timestamp,
    released: bool,
    /// The generation a holder was refreshing from (see [`CredentialStore::mark_in_flight`]).
    in_flight: Option<u64>,
}

#[derive(Default)]
struct State {
    credentials: HashMap<CredentialName, StoredCredential>,
    leases: HashMap<CredentialName, LeaseRow>,
    /// Records by kind, then key (ordered, so a part's records are adjacent).
    records: HashMap<RecordKind, BTreeMap<RecordKey, Record>>,
}

/// An in-memory store.
#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
    reads: AtomicU64,
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

    /// How many reads (`load`, `list`, `get`, `list_children`, `parts`) the store has answered:
    /// lets a test prove that a code path never reads the store.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    fn count_read(&self) {
        self.reads.fetch_add(1, Ordering::Relaxed);
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl CredentialStore for MemoryStore {
    async fn load(&self, name: &CredentialName) -> Result<Option<StoredCredential>, StoreError> {
        self.count_read();
        Ok(self.state().credentials.get(name).cloned())
    }

    async fn list(&self) -> Result<Vec<CredentialSummary>, StoreError> {
        self.count_read();
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

    async fn put(
        &self,
        name: &CredentialName,
        precondition: Precondition,
        tokens: &TokenSet,
        now: Timestamp,
    ) -> Result<WriteOutcome, StoreError> {
        let mut state = self.state();
        let current_generation = state.credentials.get(name).map_or(0, |c| c.generation);
        let (expected, fence) = match precondition {
            Precondition::None => (None, None),
            Precondition::Generation(generation) => (Some(generation), None),
            Precondition::Fenced { generation, fence } => (Some(generation), Some(fence)),
        };
        let fenced_out = fence.is_some_and(|f| state.leases.get(name).is_none_or(|l| l.fence != f));
        if expected.is_some_and(|g| g != current_generation) || fenced_out {
            return Ok(WriteOutcome::Conflict { current_generation });
        }
        let generation = current_generation + 1;
        let status = match precondition {
            Precondition::None => CredentialStatus::default(),
            _ => CredentialStatus {
                last_refresh_at: Some(now),
                ..CredentialStatus::default()
            },
        };
        state.credentials.insert(
            name.clone(),
            StoredCredential {
                name: name.clone(),
                generation,
                tokens: tokens.clone(),
                status,
            },
        );
        Ok(WriteOutcome::Written { generation })
    }

    async fn set_status(
        &self,
        name: &CredentialName,
        generation: u64,
        status: &CredentialStatus,
    ) -> Result<bool, StoreError> {
        match self.state().credentials.get_mut(name) {
            Some(credential) if credential.generation == generation => {
                credential.status = status.clone();
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn delete(&self, name: &CredentialName) -> Result<bool, StoreError> {
        Ok(self.state().credentials.remove(name).is_some())
    }

    async fn try_acquire_lease(
        &self,
        name: &CredentialName,
        owner: &str,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<LeaseAttempt, StoreError> {
        let mut state = self.state();
        let row = state.leases.entry(name.clone()).or_default();
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
            name: name.clone(),
            owner: owner.to_owned(),
            fence: row.fence,
            expires_at: row.expires_at,
            took_over_abandoned: held,
            guard: None,
        }))
    }

    async fn renew_lease(
        &self,
        lease: &Lease,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<Option<Timestamp>, StoreError> {
        let mut state = self.state();
        match state.leases.get_mut(&lease.name) {
            Some(row) if row.fence == lease.fence && row.owner == lease.owner && !row.released => {
                row.expires_at = now + ttl;
                Ok(Some(row.expires_at))
            }
            _ => Ok(None),
        }
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
        lease: &Lease,
        generation: u64,
    ) -> Result<Option<u64>, StoreError> {
        let mut state = self.state();
        let Some(row) = state.leases.get_mut(&lease.name) else {
            return Ok(None);
        };
        let previous = row.in_flight;
        if row.fence == lease.fence && !row.released {
            row.in_flight = Some(generation);
        }
        Ok(previous)
    }
}

#[async_trait]
impl RecordStore for MemoryStore {
    async fn get(&self, kind: RecordKind, key: &RecordKey) -> Result<Option<Record>, StoreError> {
        self.count_read();
        Ok(self
            .state()
            .records
            .get(&kind)
            .and_then(|records| records.get(key))
            .cloned())
    }

    async fn compare_and_put(
        &self,
        kind: RecordKind,
        key: &RecordKey,
        expect: Expect,
        data: &[u8],
        now: Timestamp,
    ) -> Result<Option<u64>, StoreError> {
        let mut state = self.state();
        let records = state.records.entry(kind).or_default();
        let current = records.get(key).map_or(0, |record| record.version);
        if !expect.matches(current) {
            return Ok(None);
        }
        let version = current.saturating_add(1);
        records.insert(
            key.clone(),
            Record {
                key: key.clone(),
                version,
                updated_at: now,
                data: Zeroizing::new(data.to_vec()),
            },
        );
        Ok(Some(version))
    }

    async fn remove(
        &self,
        kind: RecordKind,
        key: &RecordKey,
        expect: Expect,
    ) -> Result<bool, StoreError> {
        let mut state = self.state();
        let Some(records) = state.records.get_mut(&kind) else {
            return Ok(false);
        };
        let matches = records
            .get(key)
            .is_some_and(|record| expect.matches(record.version));
        Ok(matches && records.remove(key).is_some())
    }

    async fn list_children(
        &self,
        kind: RecordKind,
        parent: &RecordKey,
    ) -> Result<Vec<Record>, StoreError> {
        self.count_read();
        if parent.item().is_some() {
            return Ok(Vec::new());
        }
        Ok(self
            .state()
            .records
            .get(&kind)
            .map(|records| {
                records
                    .range(parent.clone()..)
                    .take_while(|(key, _)| key.part() == parent.part())
                    .filter(|(key, _)| key.item().is_some())
                    .map(|(_, record)| record.clone())
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn list_kind(
        &self,
        kind: RecordKind,
        after: Option<&RecordKey>,
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        use std::ops::Bound;
        self.count_read();
        let state = self.state();
        let Some(records) = state.records.get(&kind) else {
            return Ok(Vec::new());
        };
        let start = after.map_or(Bound::Unbounded, |key| Bound::Excluded(key.clone()));
        Ok(records
            .range((start, Bound::Unbounded))
            .take(limit)
            .map(|(_, record)| record.clone())
            .collect())
    }

    async fn parts(&self, kind: RecordKind) -> Result<Vec<RecordKey>, StoreError> {
        self.count_read();
        let state = self.state();
        let mut parts: Vec<RecordKey> = state
            .records
            .get(&kind)
            .map(|records| records.keys().map(RecordKey::parent).collect())
            .unwrap_or_default();
        parts.dedup();
        Ok(parts)
    }
}

/// The shared conformance suites, run on the in-memory store.
#[cfg(all(test, feature = "conformance"))]
mod conformance_tests {
    async fn make() -> (super::MemoryStore, String) {
        (super::MemoryStore::new(), String::new())
    }

    crate::credential_store_conformance_tests!(make);
    crate::record_store_conformance_tests!(make);
}
