//! authkeeper-core: the token engine.
//!
//! - [`clock`]: time as an injectable dependency.
//! - [`token`]: token sets and the lenient token-response parser.
//! - [`policy`]: when to refresh; [`backoff`]: how long to wait after failures.
//! - [`error`] and [`www_authenticate`]: classification of token-endpoint and API failures.
//! - [`grant`]: token requests and OIDC discovery; [`config`]: per-credential settings.
//! - [`reauth`]: automatic re-authentication and scheduled re-login; [`checkpoint`]: a task's
//!   saved progress.
//! - [`keeper`]: the engine; [`store`]: the storage trait with the refresh lease;
//!   [`events`]: what the engine reports.
//!
//! Secrets are [`secrecy::SecretString`]s: redacted in `Debug`, zeroized on drop, readable only
//! through [`ExposeSecret::expose_secret`].

pub mod backoff;
pub mod checkpoint;
pub mod clock;
pub mod config;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod error;
pub mod events;
pub mod grant;
pub mod keeper;
pub mod login;
pub mod memory_store;
pub mod policy;
pub mod reauth;
pub mod secret_ref;
pub mod store;
pub mod token;
pub mod www_authenticate;

pub use clock::{Clock, ManualClock, SharedClock, SystemClock, Timestamp};
pub use config::{CredentialConfig, CredentialSettings};
pub use error::{ErrorClass, RefreshError};
pub use events::{Event, EventSink, Trigger};
pub use keeper::{AccessToken, Keeper, KeeperError, KeeperSettings};
pub use memory_store::MemoryStore;
pub use secrecy::{ExposeSecret, SecretString};
pub use store::{
    CredentialState, CredentialStatus, CredentialSummary, Lease, LeaseAttempt, Store, StoreError,
    StoredCheckpoint, StoredCredential, StoredSession, WriteOutcome,
};
pub use token::{ExpiryDefaults, TokenResponse, TokenSet};
