//! Exit codes, so scripts can tell "log in again" from "try later".
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | any other error |
//! | 2 | configuration or usage error (fix the config) |
//! | 3 | the credential needs re-authentication (import or log in) |
//! | 4 | temporarily unavailable (retry later) |
//! | 5 | permission (scope) error |
//! | 6 | the demo saw a 401 or lost the grant |

use std::process::ExitCode;

use authkeeper_core::{ErrorClass, KeeperError};

/// The demo's failure code.
#[cfg(feature = "demo")]
pub const DEMO_FAILED: u8 = 6;

/// A problem of the configuration file or of a name given on the command line: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigurationError(pub String);

/// Whether `cause` is a configuration problem of any layer.
fn is_configuration(cause: &(dyn std::error::Error + 'static)) -> bool {
    cause.is::<ConfigurationError>()
        || cause.is::<authkeeper_core::config::ConfigError>()
        || cause.is::<authkeeper_core::name::NameError>()
        || cause.is::<authkeeper_server::auth::ClientKeyError>()
        || cause.is::<toml::de::Error>()
        || matches!(
            cause.downcast_ref::<authkeeper_store::KeyError>(),
            Some(authkeeper_store::KeyError::InsecureKeyFile { .. })
        )
}

/// The exit code for an error chain: a configuration problem anywhere in it is 2, else the
/// first `KeeperError` in it decides.
pub fn code_for(error: &anyhow::Error) -> ExitCode {
    if error.chain().any(is_configuration) {
        return ExitCode::from(2);
    }
    let class = error
        .chain()
        .find_map(|cause| cause.downcast_ref::<KeeperError>())
        .map(KeeperError::class);
    ExitCode::from(match class {
        Some(ErrorClass::Configuration) => 2,
        Some(ErrorClass::NeedsReauth) => 3,
        Some(ErrorClass::Transient) => 4,
        Some(ErrorClass::Permission) => 5,
        None => 1,
    })
}
