//! The external login command: any program that prints a token response JSON on stdout (a
//! headless-browser script, a vault lookup, a company SSO helper).
//!
//! The program runs through `sh -c` in its own process group, with stdin closed and stderr
//! passed through. Its stdout is read up to 1 MiB. A non-zero exit, a timeout (the whole group
//! is killed), or output that is not a token response are errors; nothing is returned then, so
//! the caller stores nothing and the previous token set stays. Retrying with backoff is the
//! caller's decision.

use std::fmt;
use std::time::Duration;

use zeroize::Zeroizing;

use super::{LoginError, MAX_BODY};
use crate::process::{ChildEnv, ShellCommand, ShellError, Stderr, run_shell};
use authkeeper_core::token::{TokenResponse, TokenResponseError};

/// An external login command to run.
#[derive(Clone)]
pub struct LoginCommand {
    /// The shell command line.
    pub command: String,
    /// Kill it after this long.
    pub timeout: Duration,
    /// What it gets of our environment: [`ChildEnv::minimal`] (never the store key or a secret
    /// the configuration references).
    pub child_env: ChildEnv,
    /// Variables set for it ([`login_command_env`]: `AUTHKEEPER_CREDENTIAL`,
    /// `AUTHKEEPER_CLIENT_ID`, and the egress proxy variables; never shown by `Debug`).
    pub env: Vec<(String, String)>,
}

/// What a credential's login command gets: `AUTHKEEPER_CREDENTIAL`, `AUTHKEEPER_CLIENT_ID`, and
/// when the credential has an egress `proxy`, `HTTPS_PROXY`, `HTTP_PROXY` and `ALL_PROXY` (and
/// their lower-case forms) so the login goes out the way its refreshes do.
pub fn login_command_env(
    name: &str,
    config: &authkeeper_core::config::CredentialConfig,
) -> Result<Vec<(String, String)>, authkeeper_core::config::ConfigError> {
    let mut env = vec![
        ("AUTHKEEPER_CREDENTIAL".to_owned(), name.to_owned()),
        ("AUTHKEEPER_CLIENT_ID".to_owned(), config.client_id.clone()),
    ];
    if let Some(proxy) = config.egress(name)? {
        for variable in [
            "HTTPS_PROXY",
            "HTTP_PROXY",
            "ALL_PROXY",
            "https_proxy",
            "http_proxy",
            "all_proxy",
        ] {
            env.push((variable.to_owned(), proxy.expose_url().to_owned()));
        }
    }
    Ok(env)
}

impl fmt::Debug for LoginCommand {
    // The command line may embed a secret by mistake; show only its program.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let program = self.command.split_whitespace().next().unwrap_or("");
        f.debug_struct("LoginCommand")
            .field("program", &program)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Runs `command` and reads the token response it prints.
pub async fn run_login_command(command: &LoginCommand) -> Result<TokenResponse, LoginError> {
    let shell = ShellCommand {
        command: command.command.clone(),
        base_env: command.child_env.minimal(),
        env: command
            .env
            .iter()
            .map(|(key, value)| (key.clone(), Zeroizing::new(value.clone())))
            .collect(),
        timeout: command.timeout,
        stdout_limit: MAX_BODY,
        stderr: Stderr::Inherit,
    };
    let output = run_shell(&shell).await.map_err(|error| match error {
        ShellError::TimedOut(timeout) => LoginError::CommandTimedOut(timeout),
        ShellError::Io(error) => LoginError::CommandSpawn(error),
    })?;
    if output.truncated {
        return Err(LoginError::CommandOutputTooLarge);
    }
    if !output.status.success() {
        return Err(LoginError::CommandFailed {
            status: output.status.to_string(),
        });
    }
    TokenResponse::parse_tokens(&output.stdout).map_err(|error| match error {
        // The start of a non-JSON output could be a bare token: never quote it.
        TokenResponseError::NotJson { .. } => LoginError::CommandOutputNotJson {
            bytes: output.stdout.len(),
        },
        other => LoginError::CommandOutput(other),
    })
}
