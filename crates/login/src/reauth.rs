//! [`LoginReauthenticator`]: the automatic re-authentication built from the configuration (see
//! [`authkeeper_core::reauth`] for when the Keeper calls it).
//!
//! - `grant = "client_credentials"`: nothing to do — every refresh already re-issues a token.
//! - `login = { method = "command", ... }`: runs the external login command in the background
//!   (with its timeout, and capped, jittered backoff between failed attempts) and stores its
//!   token response as a new generation. A failed, timed-out or garbage run stores nothing, so
//!   what was stored is never lost.
//! - device or PKCE login: a human must act; the Keeper's events carry the login hint.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::str::FromStr as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use authkeeper_core::backoff::Backoff;
use authkeeper_core::clock::Timestamp;
use authkeeper_core::config::{ConfigError, CredentialConfig, LoginMethod};
use authkeeper_core::events::Event;
use authkeeper_core::grant::GrantKind;
use authkeeper_core::keeper::Keeper;
use authkeeper_core::name::CredentialName;
use authkeeper_core::reauth::{
    DEFAULT_RELOGIN_MARGIN, ReauthRequest, ReauthTrigger, Reauthenticator, ReloginPolicy,
    ReloginSchedule, TimeWindow, login_hint,
};
use authkeeper_core::token::{ExpiryDefaults, TokenSet};

use crate::process::ChildEnv;
use crate::{LoginCommand, LoginSettings, run_login_command};

/// How a credential is re-authenticated.
#[derive(Debug, Clone)]
pub enum ReauthMethod {
    /// `client_credentials`: every refresh re-issues; nothing more to do.
    ClientCredentials,
    /// An external login command, run without a human.
    Command(LoginCommand),
    /// Device or PKCE login: a human must run `authkeeper login NAME`.
    Interactive(Option<LoginMethod>),
}

impl ReauthMethod {
    /// Whether no human is needed.
    pub fn is_automatic(&self) -> bool {
        !matches!(self, ReauthMethod::Interactive(_))
    }
}

/// One credential's re-authentication plan.
#[derive(Debug, Clone)]
pub struct ReauthPlan {
    /// How.
    pub method: ReauthMethod,
    /// When sessions must be renewed.
    pub policy: ReloginPolicy,
    /// Expiry assumptions for the token sets a login command prints.
    pub expiry: ExpiryDefaults,
}

impl ReauthPlan {
    /// The plan of credential `name` from its configuration.
    /// A login command gets `child_env`'s minimal environment and `AUTHKEEPER_CREDENTIAL`,
    /// `AUTHKEEPER_CLIENT_ID`.
    pub fn from_config(
        name: &str,
        config: &CredentialConfig,
        child_env: &ChildEnv,
    ) -> Result<ReauthPlan, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            name: name.to_owned(),
            message,
        };
        let method = if config.grant == GrantKind::ClientCredentials {
            ReauthMethod::ClientCredentials
        } else {
            let login = LoginSettings::from_config(name, config)?;
            match (login.method, &login.command) {
                (Some(LoginMethod::Command), Some(command)) => {
                    ReauthMethod::Command(LoginCommand {
                        command: command.clone(),
                        timeout: login.timeout_for(LoginMethod::Command),
                        child_env: child_env.clone(),
                        env: crate::command::login_command_env(name, config)?,
                    })
                }
                (method, _) => ReauthMethod::Interactive(method),
            }
        };
        let window = config
            .relogin_window
            .as_deref()
            .map(TimeWindow::from_str)
            .transpose()
            .map_err(|e| invalid(format!("relogin_window: {e}")))?;
        if config.max_session_age.is_some_and(|age| age.is_zero()) {
            return Err(invalid("max_session_age must be positive".into()));
        }
        Ok(ReauthPlan {
            method,
            policy: ReloginPolicy {
                max_session_age: config.max_session_age,
                window,
                margin: config.relogin_margin.unwrap_or(DEFAULT_RELOGIN_MARGIN),
            },
            expiry: ExpiryDefaults {
                default_lifetime: config.default_ttl,
            },
        })
    }
}

/// Retry settings of automatic re-authentication.
#[derive(Debug, Clone)]
pub struct ReauthSettings {
    /// Delays between failed login command runs.
    pub backoff: Backoff,
    /// Runs before giving up (then a human must act; the failure is reported).
    pub max_attempts: u32,
    /// What login commands get of our environment.
    pub child_env: ChildEnv,
}

impl Default for ReauthSettings {
    fn default() -> Self {
        ReauthSettings {
            backoff: Backoff {
                base: Duration::from_secs(5),
                cap: Duration::from_secs(300),
            },
            max_attempts: 6,
            child_env: ChildEnv::default(),
        }
    }
}

/// The [`Reauthenticator`] built from the configuration (see the module documentation).
#[derive(Clone, Default)]
pub struct LoginReauthenticator {
    plans: Arc<HashMap<CredentialName, ReauthPlan>>,
    settings: ReauthSettings,
    running: Arc<Mutex<HashSet<CredentialName>>>,
}

impl fmt::Debug for LoginReauthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginReauthenticator")
            .field("plans", &self.plans)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl LoginReauthenticator {
    /// A reauthenticator for these plans.
    pub fn new(plans: HashMap<CredentialName, ReauthPlan>, settings: ReauthSettings) -> Self {
        LoginReauthenticator {
            plans: Arc::new(plans),
            settings,
            running: Arc::default(),
        }
    }

    /// The plans of every credential in `credentials` (a config file's `[credentials]`).
    pub fn from_config<C: std::borrow::Borrow<CredentialConfig>>(
        credentials: &BTreeMap<CredentialName, C>,
        settings: ReauthSettings,
    ) -> Result<Self, ConfigError> {
        let plans = credentials
            .iter()
            .map(|(name, config)| {
                let plan = ReauthPlan::from_config(name, config.borrow(), &settings.child_env)?;
                Ok((name.clone(), plan))
            })
            .collect::<Result<HashMap<_, _>, ConfigError>>()?;
        Ok(Self::new(plans, settings))
    }

    /// The plan of `name`.
    pub fn plan(&self, name: &str) -> Option<&ReauthPlan> {
        self.plans.get(name)
    }

    /// Runs the login command of `name` until it succeeds or the attempts are used up.
    async fn run_command(self, keeper: Keeper, request: ReauthRequest, plan: ReauthPlan) {
        let ReauthMethod::Command(command) = &plan.method else {
            return;
        };
        let name = &request.name;
        let _running = RunningGuard {
            running: Arc::clone(&self.running),
            name: name.clone(),
        };
        let mut attempts = 0;
        loop {
            attempts += 1;
            // Someone (a human, another replica) may have logged in meanwhile.
            if let Ok(Some(stored)) = keeper.store().load(name).await
                && stored.generation > request.generation
                && request.trigger == ReauthTrigger::RefreshFailed
            {
                let _ = keeper.reload(name).await;
                return;
            }
            tracing::info!(credential = %name, attempts, reason = %request.reason, "running the login command to re-authenticate");
            let cause = match run_login_command(command).await {
                Ok(response) => {
                    let tokens = response.into_token_set(keeper.clock().now(), &plan.expiry);
                    match keeper.import(name, tokens).await {
                        Ok(generation) => {
                            keeper.emit_event(Event::Reauthenticated {
                                name,
                                generation,
                                method: LoginMethod::Command.as_str(),
                            });
                            return;
                        }
                        Err(error) => error.to_string(),
                    }
                }
                Err(error) => error.to_string(),
            };
            let gave_up = attempts >= self.settings.max_attempts;
            let next_attempt_at = (!gave_up)
                .then(|| keeper.clock().now() + self.settings.backoff.delay(attempts, None));
            keeper.emit_event(Event::ReauthFailed {
                name,
                cause: &cause,
                attempts,
                next_attempt_at,
            });
            let Some(at) = next_attempt_at else {
                return;
            };
            keeper.clock().sleep_until(at).await;
        }
    }
}

/// Forgets a running re-authentication when its task ends (or is dropped).
struct RunningGuard {
    running: Arc<Mutex<HashSet<CredentialName>>>,
    name: CredentialName,
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.name);
    }
}

impl Reauthenticator for LoginReauthenticator {
    fn start(&self, keeper: &Keeper, request: ReauthRequest) {
        let Some(plan) = self.plans.get(&request.name) else {
            return;
        };
        match &plan.method {
            ReauthMethod::ClientCredentials => {
                tracing::warn!(credential = %request.name, reason = %request.reason, "the client_credentials grant was refused: check the client's registration");
            }
            ReauthMethod::Interactive(_) => {
                tracing::warn!(credential = %request.name, reason = %request.reason, login_hint = %login_hint(&request.name), "a human must log in again");
            }
            ReauthMethod::Command(_) => {
                let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                    return;
                };
                if !self
                    .running
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(request.name.clone())
                {
                    return; // already re-authenticating
                }
                let task = self
                    .clone()
                    .run_command(keeper.clone(), request, plan.clone());
                runtime.spawn(task);
            }
        }
    }

    fn schedule(&self, name: &str, tokens: &TokenSet, now: Timestamp) -> Option<ReloginSchedule> {
        let plan = self.plans.get(name)?;
        if matches!(plan.method, ReauthMethod::ClientCredentials) {
            return None;
        }
        let (relogin_at, session_expires_at) = plan.policy.relogin_at(tokens, now)?;
        Some(ReloginSchedule {
            relogin_at,
            session_expires_at,
            automatic: plan.method.is_automatic(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use authkeeper_core::secret::{AccessToken, RefreshToken};

    fn tokens(issued_at: Timestamp) -> TokenSet {
        TokenSet {
            access_token: AccessToken::from("a"),
            token_type: "Bearer".into(),
            refresh_token: Some(RefreshToken::from("r")),
            id_token: None,
            scope: None,
            issued_at,
            expires_at: issued_at + Duration::from_secs(3600),
            refresh_token_expires_at: None,
            extra: Default::default(),
        }
    }

    fn at(day: i64, hour: i64) -> Timestamp {
        Timestamp::from_millis((20_415 + day) * 86_400_000 + hour * 3_600_000)
    }

    #[test]
    fn client_credentials_just_reissue_and_have_no_relogin() {
        let config: CredentialConfig = serde_json::from_value(serde_json::json!({
            "token_url": "https://idp.example/token",
            "client_id": "c",
            "client_secret": "s",
            "grant": "client_credentials",
            "max_session_age": "1h",
        }))
        .unwrap();
        let mut credentials = BTreeMap::new();
        credentials.insert(CredentialName::new("cc").unwrap(), config);
        let reauth =
            LoginReauthenticator::from_config(&credentials, ReauthSettings::default()).unwrap();
        let plan = reauth.plan("cc").unwrap();
        assert!(matches!(plan.method, ReauthMethod::ClientCredentials));
        let set = tokens(at(0, 10));
        assert!(reauth.schedule("cc", &set, at(1, 10)).is_none());
    }
}
