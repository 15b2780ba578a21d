//! The two storage traits every backend implements, and [`MemoryStore`].
//!
//! - [`CredentialStore`]: token sets, generations, statuses, refresh leases with fencing and
//!   in-flight markers — what exactly-once refreshing needs ([`credential`], [`lease`]).
//! - [`RecordStore`]: one generic store of sealed, versioned records (kind + key → bytes, with
//!   compare-and-put) for checkpoints, browser sessions and whatever comes next ([`record`]).
//!
//! [`Store`] is both at once: a backend implements the two traits and gets it for free, and an
//! `Arc<dyn Store>` converts to either trait object.

pub mod credential;
pub mod error;
pub mod lease;
pub mod memory;
pub mod record;

pub use credential::{
    CredentialState, CredentialStatus, CredentialStore, CredentialSummary, Precondition,
    StoredCredential, WriteOutcome, import,
};
pub use error::StoreError;
pub use lease::{Lease, LeaseAttempt, RefreshStart, Unfinished};
pub use memory::MemoryStore;
pub use record::{Expect, Record, RecordKey, RecordKind, RecordStore, decode_json, encode_json};

/// A backend that is both a [`CredentialStore`] and a [`RecordStore`] (every backend of this
/// workspace). Implemented for every type that implements the two.
pub trait Store: CredentialStore + RecordStore {}

impl<T: CredentialStore + RecordStore + ?Sized> Store for T {}
