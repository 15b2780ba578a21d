//! The refresh lease: while one holder has it, no other process or replica sharing the store
//! refreshes the credential. Writes under a lease are fenced by its [`Lease::fence`].

use std::fmt;

use crate::clock::Timestamp;
use crate::name::CredentialName;

/// A held refresh lease.
pub struct Lease {
    /// The credential.
    pub name: CredentialName,
    /// Random identity of the holder.
    pub owner: String,
    /// Monotonic counter bumped by every acquisition; writes under the lease are fenced by it.
    pub fence: u64,
    /// When the lease expires unless renewed.
    pub expires_at: Timestamp,
    /// True when the previous holder never released its lease (it crashed or hung, possibly in
    /// the middle of a refresh).
    pub took_over_abandoned: bool,
    /// Backend-specific resources released with the lease (e.g. an OS file lock).
    pub guard: Option<Box<dyn Send + Sync>>,
}

impl Lease {
    /// The same lease without its backend resources: what a retried release needs.
    pub fn detached(&self) -> Lease {
        Lease {
            name: self.name.clone(),
            owner: self.owner.clone(),
            fence: self.fence,
            expires_at: self.expires_at,
            took_over_abandoned: self.took_over_abandoned,
            guard: None,
        }
    }
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("name", &self.name)
            .field("owner", &self.owner)
            .field("fence", &self.fence)
            .field("expires_at", &self.expires_at)
            .field("took_over_abandoned", &self.took_over_abandoned)
            .finish_non_exhaustive()
    }
}

/// The result of trying to take a refresh lease.
#[derive(Debug)]
pub enum LeaseAttempt {
    /// The lease is ours.
    Acquired(Lease),
    /// Someone else holds it until at least this time.
    Busy {
        /// When the other holder's lease expires unless renewed.
        held_until: Timestamp,
    },
}

/// What [`CredentialStore::begin_refresh`](super::CredentialStore::begin_refresh) found.
#[derive(Debug)]
// Built once per refresh and moved once: boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum RefreshStart {
    /// The lease is ours, and this is what the store held under it.
    Acquired {
        /// The lease.
        lease: Lease,
        /// The stored credential, read under the lease (`None`: nothing stored).
        stored: Option<super::StoredCredential>,
        /// A previous holder stopped without releasing its lease while sending the refresh
        /// token of the stored generation: a rotated refresh token may never have reached the
        /// store (see [`CredentialStore::mark_in_flight`](super::CredentialStore::mark_in_flight)).
        interrupted: bool,
    },
    /// Someone else holds the lease.
    Busy {
        /// When the other holder's lease expires unless renewed.
        held_until: Timestamp,
    },
}

/// A [`CredentialStore::finish_refresh`](super::CredentialStore::finish_refresh) that wrote
/// nothing because the store failed: the lease is handed back, still held, so the caller can
/// retry the write or release it.
#[derive(Debug)]
pub struct Unfinished {
    /// Why nothing was written.
    pub error: super::StoreError,
    /// The lease, still held.
    pub lease: Lease,
}
