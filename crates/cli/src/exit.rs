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

/// The exit code for an error chain: the first `KeeperError` in it decides.
pub fn code_for(error: &anyhow::Error) -> ExitCode {
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
