//! authkeeper-core: the token engine. It opens no listener, spawns no process and knows no
//! browser or HTTP server: those live in the crates around it.
//!
//! - [`clock`]: time as an injectable dependency.
//! - [`name`]: identifiers validated once; [`secret`]: one type per kind of secret.
//! - [`token`]: token sets and the lenient token-response parser.
//! - [`policy`]: when to refresh; [`backoff`]: how long to wait after failures.
//! - [`error`] and [`www_authenticate`]: classification of token-endpoint and API failures.
//! - [`grant`]: token requests and OIDC discovery; [`config`]: per-credential settings.
//! - [`reauth`]: the re-authentication hook and scheduled re-login policy.
//! - [`keeper`]: the engine; [`store`]: the credential store (with the refresh lease) and the
//!   sealed record store; [`events`]: what the engine reports.
//!
//! Secrets are [`secret`] types over [`secrecy::SecretString`]: redacted in `Debug`, zeroized
//! on drop, readable only through [`ExposeSecret::expose_secret`].

pub mod backoff;
pub mod clock;
pub mod config;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod egress;
pub mod error;
pub mod events;
pub mod grant;
pub mod keeper;
pub mod name;
pub mod policy;
pub mod reauth;
pub mod secret;
pub mod secret_ref;
pub mod source;
pub mod store;
pub mod token;
pub mod www_authenticate;

pub use clock::{Clock, ManualClock, SharedClock, SystemClock, Timestamp};
pub use config::{CredentialConfig, CredentialSettings};
pub use error::{ErrorClass, RefreshError};
pub use events::{Event, EventSink, Trigger};
pub use keeper::{Keeper, KeeperError, KeeperSettings, Snapshot, Token};
pub use name::{CredentialName, NameError, SiteName, TaskName};
pub use secrecy::{ExposeSecret, SecretString};
pub use store::{
    CredentialState, CredentialStatus, CredentialStore, CredentialSummary, Lease, LeaseAttempt,
    MemoryStore, Precondition, RecordStore, RefreshStart, Store, StoreError, StoredCredential,
    Unfinished, WriteOutcome,
};
pub use token::{ExpiryDefaults, TokenResponse, TokenSet};
