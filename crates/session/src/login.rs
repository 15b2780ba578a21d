//! How a browser session is created: the [`SessionLogin`] contract and its two implementations.
//!
//! - [`RecipeLogin`] (feature `browser`): runs the declarative `[sites.NAME.login] steps` in a
//!   real headless Chromium over CDP (see [`crate::recipe`]) and captures the storage state.
//! - [`CommandLogin`]: runs `[sites.NAME.login] command` with `sh -c` and reads the Playwright
//!   `storageState` JSON it prints on stdout.
//!
//! [`login_for`] picks one from a site's configuration. Errors never contain a password, a
//! cookie value or a localStorage value; [`LoginError::is_transient`] tells whether retrying
//! later may help.
//!
//! The login command gets these environment variables (on top of the broker's own):
//! `AUTHKEEPER_SITE`, `AUTHKEEPER_ORIGIN`, `AUTHKEEPER_ACCOUNT`, and when configured
//! `AUTHKEEPER_USERNAME`, `AUTHKEEPER_PASSWORD`, `AUTHKEEPER_PROXY` (the account's proxy
//! identity, resolved) and `AUTHKEEPER_IDENTITY` (the session's identity as Playwright
//! `newContext` options, JSON). It runs in its own process group with stdin closed; on timeout (the
//! login's `timeout`) the whole group is killed and reaped. Its stdout is read up to 16 MiB;
//! the last 2 KiB of its stderr are quoted in the error when it fails.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use authkeeper_core::ExposeSecret as _;
use authkeeper_core::secret_ref::{SecretRef, SecretRefError};
use authkeeper_login::process::{ChildEnv, ShellCommand, ShellError, Stderr, run_shell};
use zeroize::Zeroizing;

use crate::config::{AccountConfig, LoginConfig, SiteConfig};
use crate::storage_state::StorageState;

/// Largest stdout read from a login command (16 MiB).
const MAX_COMMAND_STDOUT: usize = 16 << 20;
/// How much of a failed login command's stderr is quoted in the error.
const STDERR_TAIL: usize = 2048;

/// What a login is asked to do: log `account` into `site`.
#[derive(Debug, Clone, Copy)]
pub struct LoginRequest<'a> {
    /// The site's name (the `NAME` of `[sites.NAME]`).
    pub site_name: &'a str,
    /// The site's settings.
    pub site: &'a SiteConfig,
    /// The account to log in as (its secrets are resolved by the login, not before).
    pub account: &'a AccountConfig,
    /// The session's identity (user agent, locale, time zone, window size), if it has one.
    pub identity: Option<&'a crate::identity::Identity>,
}

/// Creates a logged-in storage state for one site and account.
#[async_trait]
pub trait SessionLogin: Send + Sync + fmt::Debug {
    /// Logs in and returns the browser's storage state (cookies and localStorage).
    async fn login(&self, request: &LoginRequest<'_>) -> Result<StorageState, LoginError>;
}

/// Why a login failed. Never contains a password, a cookie value or a localStorage value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoginError {
    /// The site's `[login]` table is unusable (e.g. both `steps` and `command`, or neither).
    #[error("invalid login configuration: {0}")]
    Config(String),
    /// A recipe step is malformed; `step` counts from 1.
    #[error("invalid login recipe: step {step}: {reason}")]
    InvalidRecipe {
        /// The step's number (1-based).
        step: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A recipe step did not complete within `step_timeout`.
    #[error(
        "login step {step} ({action}) did not complete within {}",
        humantime_serde::re::humantime::format_duration(*.timeout)
    )]
    StepTimeout {
        /// The step's number (1-based).
        step: usize,
        /// The action and its selector or URL (never a filled value).
        action: String,
        /// The bound that was exceeded.
        timeout: Duration,
    },
    /// A recipe step failed (navigation error, script exception, element not usable).
    #[error("login step {step} ({action}) failed: {message}")]
    StepFailed {
        /// The step's number (1-based).
        step: usize,
        /// The action and its selector or URL (never a filled value).
        action: String,
        /// What went wrong.
        message: String,
    },
    /// The site refused the login page: HTTP 403, 429 or 5xx on a main document.
    #[error("the site answered HTTP {status} (blocked or unavailable)")]
    Blocked {
        /// The HTTP status.
        status: u16,
    },
    /// A `goto` step's page answered another 4xx status (a wrong URL, most likely).
    #[error("login step {step} ({action}): the page answered HTTP {status}")]
    HttpStatus {
        /// The step's number (1-based).
        step: usize,
        /// The action and its URL.
        action: String,
        /// The HTTP status.
        status: u16,
    },
    /// Chromium could not be started or the DevTools connection failed.
    #[error("browser: {0}")]
    Browser(String),
    /// Chromium is not installed where it is looked for.
    #[error(
        "no Chromium executable at {path}: install it (apt-get install chromium) or set AUTHKEEPER_CHROMIUM"
    )]
    BrowserNotFound {
        /// Where it was looked for.
        path: String,
    },
    /// This build has no browser support (feature `browser` off) but the site has a recipe.
    #[error(
        "login recipes need a browser, but authkeeper-session was built without the `browser` feature"
    )]
    BrowserUnavailable,
    /// The login command could not run or failed.
    #[error("login command: {0}")]
    Command(String),
    /// A secret (password, proxy, `env:`/`file:` fill value) could not be resolved.
    #[error("cannot resolve {what}: {source}")]
    Secret {
        /// Which secret (e.g. `the password of account alice`).
        what: String,
        /// Why.
        #[source]
        source: SecretRefError,
    },
    /// The login produced no usable storage state (the command's output is not one, or the
    /// browser's cookies could not be read).
    #[error("invalid storage state: {0}")]
    InvalidState(String),
    /// The whole login did not complete within the login's `timeout`.
    #[error(
        "the login did not complete within {}",
        humantime_serde::re::humantime::format_duration(*.0)
    )]
    Timeout(Duration),
}

impl LoginError {
    /// True when trying again later may succeed (blocked, timed out, browser or command
    /// failures); false for configuration errors (invalid recipe, missing secret, no browser).
    pub fn is_transient(&self) -> bool {
        match self {
            LoginError::Blocked { .. }
            | LoginError::Timeout(_)
            | LoginError::StepTimeout { .. }
            | LoginError::StepFailed { .. }
            | LoginError::Browser(_)
            | LoginError::Command(_) => true,
            LoginError::Config(_)
            | LoginError::InvalidRecipe { .. }
            | LoginError::HttpStatus { .. }
            | LoginError::BrowserNotFound { .. }
            | LoginError::BrowserUnavailable
            | LoginError::Secret { .. }
            | LoginError::InvalidState(_) => false,
        }
    }
}

/// The login of a site's configuration: `None` when it has no `[login]` table.
///
/// A recipe is validated here, so a malformed one fails at configuration time.
/// The login of `site` (none when it has no `[login]` table); children it starts get
/// `child_env`'s minimal environment.
pub fn login_for(
    site: &SiteConfig,
    child_env: &ChildEnv,
) -> Result<Option<Arc<dyn SessionLogin>>, LoginError> {
    let Some(login) = &site.login else {
        return Ok(None);
    };
    match (&login.command, login.steps.is_empty()) {
        (Some(_), false) => Err(LoginError::Config(
            "[login] has both `steps` and `command`; keep one".to_owned(),
        )),
        (Some(command), true) => Ok(Some(Arc::new(
            CommandLogin::new(command.clone(), login.timeout).with_child_env(child_env.clone()),
        ))),
        (None, false) => recipe_login(login, child_env),
        (None, true) => Err(LoginError::Config(
            "[login] needs `steps` (a recipe) or `command`".to_owned(),
        )),
    }
}

#[cfg(feature = "browser")]
fn recipe_login(
    login: &LoginConfig,
    child_env: &ChildEnv,
) -> Result<Option<Arc<dyn SessionLogin>>, LoginError> {
    let launch = crate::browser::LaunchOptions {
        child_env: child_env.clone(),
        ..crate::browser::LaunchOptions::default()
    };
    Ok(Some(Arc::new(
        RecipeLogin::new(login.clone())?.with_launch_options(launch),
    )))
}

#[cfg(not(feature = "browser"))]
fn recipe_login(
    login: &LoginConfig,
    _child_env: &ChildEnv,
) -> Result<Option<Arc<dyn SessionLogin>>, LoginError> {
    crate::recipe::Recipe::parse(&login.steps)?;
    Err(LoginError::BrowserUnavailable)
}

/// Resolves an account's password, naming the account (never the value) on failure.
pub(crate) fn resolve_password(
    account: &AccountConfig,
) -> Result<Option<Zeroizing<String>>, LoginError> {
    resolve_optional(account.password.as_ref(), || {
        format!("the password of account {}", account.name)
    })
}

/// Resolves an account's proxy identity.
pub(crate) fn resolve_proxy(
    account: &AccountConfig,
) -> Result<Option<Zeroizing<String>>, LoginError> {
    resolve_optional(account.proxy.as_ref(), || {
        format!("the proxy of account {}", account.name)
    })
}

fn resolve_optional(
    reference: Option<&SecretRef>,
    what: impl FnOnce() -> String,
) -> Result<Option<Zeroizing<String>>, LoginError> {
    reference
        .map(|reference| {
            reference
                .resolve()
                .map(|secret| Zeroizing::new(secret.expose_secret().to_owned()))
                .map_err(|source| LoginError::Secret {
                    what: what(),
                    source,
                })
        })
        .transpose()
}

/// A login by recipe in a real headless Chromium (see [`crate::recipe`]).
#[cfg(feature = "browser")]
#[derive(Debug, Clone)]
pub struct RecipeLogin {
    login: LoginConfig,
    launch: crate::browser::LaunchOptions,
}

#[cfg(feature = "browser")]
impl RecipeLogin {
    /// A recipe login for `login.steps` (validated now), with Chromium from
    /// [`crate::browser::LaunchOptions::default`].
    pub fn new(login: LoginConfig) -> Result<Self, LoginError> {
        crate::recipe::Recipe::parse(&login.steps)?;
        Ok(RecipeLogin {
            login,
            launch: crate::browser::LaunchOptions::default(),
        })
    }

    /// Uses these browser settings (executable, profile root, extra flags). The proxy is always
    /// the account's.
    pub fn with_launch_options(mut self, launch: crate::browser::LaunchOptions) -> Self {
        self.launch = launch;
        self
    }

    /// The login settings this runs.
    pub fn config(&self) -> &LoginConfig {
        &self.login
    }
}

#[cfg(feature = "browser")]
#[async_trait]
impl SessionLogin for RecipeLogin {
    async fn login(&self, request: &LoginRequest<'_>) -> Result<StorageState, LoginError> {
        let mut launch = self.launch.clone();
        launch.proxy = resolve_proxy(request.account)?;
        launch.identity = request.identity.cloned();
        crate::recipe::run_recipe(request.site, request.account, &self.login, &launch).await
    }
}

/// A login by an external command that prints a Playwright `storageState` JSON.
#[derive(Clone)]
pub struct CommandLogin {
    command: String,
    timeout: Duration,
    child_env: ChildEnv,
}

impl fmt::Debug for CommandLogin {
    // The command line may embed a secret by mistake: show only its program.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let program = self.command.split_whitespace().next().unwrap_or("");
        f.debug_struct("CommandLogin")
            .field("program", &program)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl CommandLogin {
    /// Runs `command` with `sh -c`, killing it (and everything it started) after `timeout`.
    pub fn new(command: String, timeout: Duration) -> Self {
        CommandLogin {
            command,
            timeout,
            child_env: ChildEnv::default(),
        }
    }

    /// What the command gets of our environment (besides the `AUTHKEEPER_*` variables of the
    /// login): [`ChildEnv::minimal`].
    pub fn with_child_env(mut self, child_env: ChildEnv) -> Self {
        self.child_env = child_env;
        self
    }
}

#[async_trait]
impl SessionLogin for CommandLogin {
    async fn login(&self, request: &LoginRequest<'_>) -> Result<StorageState, LoginError> {
        let account = request.account;
        let mut env: Vec<(&'static str, Zeroizing<String>)> = vec![
            (
                "AUTHKEEPER_SITE",
                Zeroizing::new(request.site_name.to_owned()),
            ),
            (
                "AUTHKEEPER_ORIGIN",
                Zeroizing::new(
                    request
                        .site
                        .origin
                        .as_str()
                        .trim_end_matches('/')
                        .to_owned(),
                ),
            ),
            (
                "AUTHKEEPER_ACCOUNT",
                Zeroizing::new(account.name.to_string()),
            ),
        ];
        if let Some(username) = &account.username {
            env.push(("AUTHKEEPER_USERNAME", Zeroizing::new(username.clone())));
        }
        if let Some(password) = resolve_password(account)? {
            env.push(("AUTHKEEPER_PASSWORD", password));
        }
        if let Some(proxy) = resolve_proxy(account)? {
            env.push(("AUTHKEEPER_PROXY", proxy));
        }
        if let Some(identity) = request.identity {
            // The command applies it (a Playwright context: `JSON.parse` of this variable).
            let options = identity.context_options().to_string();
            env.push(("AUTHKEEPER_IDENTITY", Zeroizing::new(options)));
        }
        let output = run_command(&self.command, &self.child_env, &env, self.timeout).await?;
        parse_state(&output)
    }
}

/// Parses a login's stdout as a storage state; the error never quotes the output.
fn parse_state(output: &[u8]) -> Result<StorageState, LoginError> {
    let state = StorageState::from_json(output).map_err(|error| {
        LoginError::InvalidState(format!(
            "the login command's stdout ({} bytes) is not a storageState JSON: {error}",
            output.len()
        ))
    })?;
    if state.cookies.is_empty() && state.origins.is_empty() {
        return Err(LoginError::InvalidState(
            "the login command printed a storage state with no cookie and no localStorage"
                .to_owned(),
        ));
    }
    Ok(state)
}

/// Runs `command` by `sh -c` in its own process group and returns its stdout.
///
/// On timeout, on error and when the returned future is dropped, the whole group is killed
/// (SIGKILL) and the shell is reaped (see [`authkeeper_login::process`]).
async fn run_command(
    command: &str,
    child_env: &ChildEnv,
    env: &[(&'static str, Zeroizing<String>)],
    timeout: Duration,
) -> Result<Zeroizing<Vec<u8>>, LoginError> {
    let shell = ShellCommand {
        command: command.to_owned(),
        base_env: child_env.minimal(),
        env: env
            .iter()
            .map(|(key, value)| ((*key).to_owned(), value.clone()))
            .collect(),
        timeout,
        stdout_limit: MAX_COMMAND_STDOUT,
        stderr: Stderr::Tail(STDERR_TAIL),
    };
    let output = run_shell(&shell).await.map_err(|error| match error {
        ShellError::TimedOut(timeout) => LoginError::Timeout(timeout),
        other => LoginError::Command(other.to_string()),
    })?;
    if !output.status.success() {
        return Err(LoginError::Command(format!(
            "exited with {}{}",
            output.status,
            quote_stderr(&output.stderr_tail)
        )));
    }
    if output.truncated {
        return Err(LoginError::InvalidState(format!(
            "the login command printed more than {MAX_COMMAND_STDOUT} bytes"
        )));
    }
    Ok(output.stdout)
}

fn quote_stderr(stderr: &str) -> String {
    let stderr = stderr.trim();
    if stderr.is_empty() {
        String::new()
    } else {
        format!("; stderr: {stderr}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_classification() {
        assert!(LoginError::Blocked { status: 429 }.is_transient());
        assert!(LoginError::Timeout(Duration::from_secs(1)).is_transient());
        assert!(LoginError::Browser("x".into()).is_transient());
        assert!(
            !LoginError::InvalidRecipe {
                step: 1,
                reason: "x".into()
            }
            .is_transient()
        );
        assert!(
            !LoginError::Secret {
                what: "x".into(),
                source: SecretRefError::MissingEnv("X".into())
            }
            .is_transient()
        );
    }

    #[test]
    fn garbage_output_is_not_quoted() {
        let error = parse_state(b"{\"cookies\": \"hunter2\"}").unwrap_err();
        assert!(matches!(error, LoginError::InvalidState(_)));
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }
}
