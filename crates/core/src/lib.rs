//! authkeeper-core: the token engine.
//!
//! - [`clock`]: time as an injectable dependency.
//! - [`token`]: token sets and the lenient token-response parser.
//! - [`store`]: the storage trait every backend implements, with the refresh lease.
//!
//! Secrets are [`secrecy::SecretString`]s: redacted in `Debug`, zeroized on drop, readable only
//! through [`ExposeSecret::expose_secret`].

pub mod clock;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod store;
pub mod token;

pub use clock::{Clock, ManualClock, SharedClock, SystemClock, Timestamp};
pub use secrecy::{ExposeSecret, SecretString};
pub use store::{
    CredentialState, CredentialStatus, CredentialSummary, Lease, LeaseAttempt, Store, StoreError,
    StoredCredential, WriteOutcome,
};
pub use token::{ExpiryDefaults, TokenResponse, TokenSet};
