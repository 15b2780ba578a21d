//! `authkeeper login NAME`: acquire a credential's tokens interactively or through its login
//! command, and store them as a new generation.
//!
//! Methods: the device authorization grant (shows the verification URL, the user code and a
//! QR code, with a spinner while polling), authorization code + PKCE with a loopback redirect
//! (opens the browser or prints the URL), an external login command, and for
//! client_credentials credentials a plain re-issue. The protocols live in
//! `authkeeper_core::login`; this module is the terminal side.
//!
//! Lines meant for scripts and tests on stderr: `user code: CODE`, `verification uri: URL` and
//! `authorization url: URL`.

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::time::Duration;

use authkeeper_core::config::LoginMethod;
use authkeeper_core::grant::{GrantKind, GrantRequest, OAuthClient};
use authkeeper_core::{ErrorClass, KeeperError, SystemClock, TokenResponse};
use authkeeper_login::process::ChildEnv;
use authkeeper_login::{
    DeviceAuthorization, DeviceEvent, LoginClient, LoginCommand, LoginError, LoginSettings,
    PkceOptions, PollOptions, run_login_command,
};
use clap::ValueEnum;

use crate::cli::GlobalArgs;
use crate::context::Context;

/// `authkeeper login`.
#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// The credential.
    pub name: authkeeper_core::name::CredentialName,
    /// Login method, overriding the credential's `login.method`.
    #[arg(long, value_enum)]
    pub method: Option<MethodArg>,
    /// Do not open a browser; print the authorization URL only.
    #[arg(long)]
    pub no_browser: bool,
    /// How long the login may take, overriding `login.timeout`.
    #[arg(long, value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Loopback port of the redirect listener, overriding `login.redirect_port` (0: any).
    #[arg(long)]
    pub port: Option<u16>,
    /// Device flow polling interval instead of the provider's (for tests).
    #[arg(long, hide = true, value_parser = parse_duration)]
    pub poll_interval: Option<Duration>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Login methods on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MethodArg {
    /// Device authorization grant (RFC 8628).
    Device,
    /// Authorization code + PKCE with a loopback redirect.
    Pkce,
    /// The credential's external login command.
    Command,
}

impl From<MethodArg> for LoginMethod {
    fn from(method: MethodArg) -> LoginMethod {
        match method {
            MethodArg::Device => LoginMethod::Device,
            MethodArg::Pkce => LoginMethod::Pkce,
            MethodArg::Command => LoginMethod::Command,
        }
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (examples: 30s, 2m, 1h)"))
}

pub async fn run(global: &GlobalArgs, args: LoginArgs) -> anyhow::Result<ExitCode> {
    let context = Context::load(global)?;
    let credential = context
        .config
        .credentials
        .get(&args.name)
        .ok_or_else(|| KeeperError::UnknownCredential(args.name.to_string()))?;
    let settings = credential.resolve(&args.name)?;
    let login = LoginSettings::from_config(&args.name, credential)?;
    // Open the store first: a missing key should fail before the user goes through a login.
    let store = context.open_store().await?;
    // Through the credential's egress proxy, like its refreshes.
    let http = authkeeper_core::egress::http_client(settings.client.proxy.as_ref())?;
    let clock = SystemClock::shared();
    let client = LoginClient::new(
        OAuthClient::new(settings.client.clone(), http),
        clock.clone(),
        login.endpoints.clone(),
    );

    let method = match (args.method, login.method) {
        (Some(method), _) => Some(LoginMethod::from(method)),
        (None, Some(method)) => Some(method),
        (None, None) if settings.grant == GrantKind::ClientCredentials => None,
        (None, None) => match client.choose_method().await {
            Ok(method) => Some(method),
            Err(error) => return Ok(report(&error)),
        },
    };
    let outcome = match method {
        None => client
            .oauth()
            .request(&GrantRequest::ClientCredentials, clock.now())
            .await
            .map_err(|source| LoginError::Endpoint {
                what: "client_credentials request",
                source,
            }),
        Some(method) => {
            let timeout = args.timeout.unwrap_or(login.timeout_for(method));
            match method {
                LoginMethod::Device => device(&client, &args, timeout).await,
                LoginMethod::Pkce => pkce(&client, &args, &login, timeout).await,
                LoginMethod::Command => {
                    let child_env = context.child_env();
                    command(&args.name, credential, &login, timeout, &child_env).await
                }
            }
        }
    };
    let response = match outcome {
        Ok(response) => response,
        Err(error) => return Ok(report(&error)),
    };

    let now = clock.now();
    let tokens = response.into_token_set(now, &settings.expiry);
    let has_refresh = tokens.refresh_token.is_some();
    let expires_at = tokens.expires_at;
    let generation = authkeeper_core::store::import(&*store, &args.name, &tokens, now).await?;
    let method_name = method.map_or("client_credentials", LoginMethod::as_str);
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "name": args.name,
                "generation": generation,
                "expires_at": expires_at.to_rfc3339(),
                "has_refresh_token": has_refresh,
                "method": method_name,
            })
        );
    } else {
        println!(
            "logged in `{}` ({method_name}): stored generation {generation}, expires {expires_at}, {}",
            args.name,
            if has_refresh {
                "with a refresh token"
            } else {
                "without a refresh token"
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints a login failure and picks the exit code of its class (see `exit.rs`).
fn report(error: &LoginError) -> ExitCode {
    eprintln!("authkeeper: login failed: {error}");
    ExitCode::from(match error.class() {
        ErrorClass::Configuration => 2,
        ErrorClass::NeedsReauth => 3,
        ErrorClass::Transient => 4,
        ErrorClass::Permission => 5,
    })
}

async fn device(
    client: &LoginClient,
    args: &LoginArgs,
    timeout: Duration,
) -> Result<TokenResponse, LoginError> {
    let authorization = client.start_device().await?;
    show_device_code(&authorization);
    let spinner = Spinner::new("waiting for the login to be approved");
    let options = PollOptions {
        interval_override: args.poll_interval,
        deadline: Some(client.clock().now() + timeout),
    };
    let expires_at = authorization.expires_at;
    let mut observer = |event: &DeviceEvent| match event {
        DeviceEvent::Waiting { .. } => {
            let left = crate::commands::seconds_until(expires_at).max(0.0) as u64;
            spinner.set(format!(
                "waiting for the login to be approved (code expires in {})",
                humantime::format_duration(Duration::from_secs(left))
            ));
        }
        DeviceEvent::SlowDown { interval } => spinner.set(format!(
            "the provider asked to slow down: polling every {}",
            humantime::format_duration(*interval)
        )),
        DeviceEvent::Retrying { cause } => spinner.set(format!("retrying after {cause}")),
        _ => {}
    };
    let result = client
        .poll_device(&authorization, &options, &mut observer)
        .await;
    spinner.finish();
    result
}

fn show_device_code(authorization: &DeviceAuthorization) {
    eprintln!("To log in, open the verification page and enter the user code:");
    eprintln!("verification uri: {}", authorization.verification_uri);
    eprintln!("user code: {}", authorization.user_code);
    if let Some(complete) = &authorization.verification_uri_complete {
        eprintln!("or open: {complete}");
        if std::io::stderr().is_terminal()
            && let Some(qr) = qr_code(complete)
        {
            eprintln!("{qr}");
        }
    }
}

/// A QR code drawn with half-block characters (two modules per character cell).
fn qr_code(text: &str) -> Option<String> {
    use qrcode::render::unicode::Dense1x2;
    let code = qrcode::QrCode::new(text.as_bytes()).ok()?;
    Some(
        code.render::<Dense1x2>()
            .dark_color(Dense1x2::Light)
            .light_color(Dense1x2::Dark)
            .quiet_zone(true)
            .build(),
    )
}

async fn pkce(
    client: &LoginClient,
    args: &LoginArgs,
    login: &LoginSettings,
    timeout: Duration,
) -> Result<TokenResponse, LoginError> {
    let options = PkceOptions {
        redirect_port: args.port.unwrap_or(login.redirect_port),
        timeout,
        authorization_params: login.authorization_params.clone(),
    };
    let open_browser = login.open_browser && !args.no_browser && has_display();
    let spinner = std::sync::Mutex::new(None::<Spinner>);
    let mut show = |url: &url::Url| {
        eprintln!("Open this URL in a browser to log in:");
        eprintln!("authorization url: {url}");
        if open_browser {
            match webbrowser::open(url.as_str()) {
                Ok(()) => eprintln!("(opened in your browser)"),
                Err(error) => eprintln!("(could not open a browser: {error})"),
            }
        }
        if let Ok(mut slot) = spinner.lock() {
            *slot = Some(Spinner::new("waiting for the browser to come back"));
        }
    };
    let result = client.login_with_pkce(&options, &mut show).await;
    if let Ok(mut slot) = spinner.lock()
        && let Some(spinner) = slot.take()
    {
        spinner.finish();
    }
    result
}

/// Whether a graphical browser can be started (so a text browser never takes over the terminal).
fn has_display() -> bool {
    cfg!(target_os = "macos")
        || cfg!(windows)
        || std::env::var_os("DISPLAY").is_some_and(|v| !v.is_empty())
        || std::env::var_os("WAYLAND_DISPLAY").is_some_and(|v| !v.is_empty())
}

async fn command(
    name: &str,
    credential: &authkeeper_core::CredentialConfig,
    login: &LoginSettings,
    timeout: Duration,
    child_env: &ChildEnv,
) -> Result<TokenResponse, LoginError> {
    let command = login.command.clone().ok_or_else(|| {
        LoginError::Config(format!(
            "credential `{name}` has no login.command (login = {{ command = \"...\" }})"
        ))
    })?;
    eprintln!("running the login command of `{name}`...");
    run_login_command(&LoginCommand {
        command,
        timeout,
        child_env: child_env.clone(),
        env: authkeeper_login::command::login_command_env(name, credential)
            .map_err(|e| LoginError::Config(e.to_string()))?,
    })
    .await
}

/// A spinner on stderr, drawn only when stderr is a terminal.
struct Spinner {
    bar: indicatif::ProgressBar,
}

impl Spinner {
    fn new(message: &str) -> Spinner {
        let bar = if std::io::stderr().is_terminal() {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        } else {
            indicatif::ProgressBar::hidden()
        };
        bar.set_message(message.to_owned());
        Spinner { bar }
    }

    fn set(&self, message: String) {
        self.bar.set_message(message);
    }

    fn finish(self) {
        self.bar.finish_and_clear();
    }
}
