//! Command-line arguments.

use std::path::PathBuf;
use std::time::Duration;

use authkeeper_core::name::{CredentialName, TaskName};
use clap::{Args, Parser, Subcommand, ValueEnum};

/// Keeps OAuth credentials alive for long-running automations: refreshes exactly once,
/// across processes, and never loses a rotated refresh token.
#[derive(Debug, Parser)]
#[command(name = "authkeeper", version, about, max_term_width = 100)]
pub struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Configuration file [default: ./authkeeper.toml when present].
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Store file, overriding the config and AUTHKEEPER_STORE.
    #[arg(long, global = true, value_name = "FILE")]
    pub store: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Use a key file that its group or others can read (refused by default: it decrypts every
    /// stored credential).
    #[arg(long, global = true)]
    pub allow_insecure_key_file: bool,
}

/// Log output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a valid access token (refreshing it first if needed), like
    /// `gcloud auth print-access-token`.
    Token(TokenArgs),
    /// Store a token response (JSON on stdin) as a credential's current tokens.
    Import(ImportArgs),
    /// Show every credential's state (never a secret).
    Status(StatusArgs),
    /// Re-encrypt the store with a new key.
    Rekey(RekeyArgs),
    /// Run the fault-injecting mock identity provider.
    #[cfg(feature = "demo")]
    MockIdp(MockIdpArgs),
    /// Show exactly-once refresh at work: 50 workers share one credential against the mock IdP.
    #[cfg(feature = "demo")]
    Demo(DemoArgs),
    /// Run the broker: HTTP token API, credential-injecting proxy and metrics.
    Serve(ServeArgs),
    /// Run a program with a token file kept fresh (path in AUTHKEEPER_TOKEN_FILE) and a private
    /// broker; signals are forwarded and the program's exit status is returned.
    Exec(ExecArgs),
    /// Manage broker client keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Connections through a running broker (AUTHKEEPER_URL, key in AUTHKEEPER_API_KEY): list,
    /// show, add (from a provider, with labels and a token response on stdin), rm.
    #[command(subcommand)]
    Credentials(CredentialsCommand),
    /// Log a credential in: device code, browser (authorization code + PKCE) or login command.
    Login(crate::commands::login::LoginArgs),
    /// Revoke a credential's tokens at the provider and delete them.
    Logout(crate::commands::logout::LogoutArgs),
    /// Browser sessions: list, import/export storage states, log in, lease, release, retire.
    #[command(subcommand)]
    Sessions(SessionsCommand),
    /// Serve the MCP tools for agents on stdio (call APIs through the injecting proxy, browser
    /// session leases, checkpoints) against the broker at AUTHKEEPER_URL with
    /// AUTHKEEPER_API_KEY.
    Mcp(McpArgs),
    /// Tools for testing authkeeper itself.
    #[command(hide = true, subcommand)]
    Debug(DebugCommand),
}

impl Command {
    /// The log level used when no filter is configured.
    pub fn default_log_level(&self) -> &'static str {
        match self {
            #[cfg(feature = "demo")]
            Command::MockIdp(_) => "info",
            Command::Serve(_) => "info",
            _ => "warn",
        }
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (examples: 60s, 5m, 1h30m)"))
}

/// `authkeeper token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The credential.
    pub name: CredentialName,
    /// The token must stay valid at least this long.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub min_ttl: Duration,
    /// Print JSON with the token type, expiry and generation.
    #[arg(long)]
    pub json: bool,
}

/// `authkeeper import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The credential.
    pub name: CredentialName,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `authkeeper status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `authkeeper rekey`.
#[derive(Debug, Args)]
pub struct RekeyArgs {
    /// Read the new key (base64 of 32 bytes) from this environment variable instead of
    /// generating one; required when the current key comes from AUTHKEEPER_KEY.
    #[arg(long, value_name = "VAR")]
    pub new_key_env: Option<String>,
}

/// `authkeeper exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The credential.
    pub name: CredentialName,
    /// The task whose checkpoint the child may use (`AUTHKEEPER_CHECKPOINT_URL`); default: the
    /// credential's name.
    #[arg(long, value_name = "TASK")]
    pub task: Option<TaskName>,
    /// The program and its arguments (after `--`).
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// `authkeeper mock-idp`.
#[derive(Debug, Args)]
pub struct MockIdpArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub listen: std::net::SocketAddr,
    /// Access-token lifetime.
    #[arg(long, value_parser = parse_duration, default_value = "1h")]
    pub access_ttl: Duration,
    /// Do not rotate refresh tokens.
    #[arg(long)]
    pub no_rotation: bool,
    /// Do not revoke the grant when a used refresh token is presented again.
    #[arg(long)]
    pub no_reuse_detection: bool,
    /// Accept a used refresh token again within this window.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub reuse_grace: Duration,
    /// Share of token requests answered 503.
    #[arg(long, default_value_t = 0.0)]
    pub fault_503_rate: f64,
    /// Added latency of the token endpoint.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub latency: Duration,
    /// Shift the IdP's clock (milliseconds, may be negative).
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    pub clock_offset_ms: i64,
}

/// `authkeeper demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// How long to run.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub duration: Duration,
    /// Concurrent workers sharing the credential.
    #[arg(long, default_value_t = 50)]
    pub workers: usize,
    /// Access-token lifetime at the mock IdP.
    #[arg(long, value_parser = parse_duration, default_value = "2s")]
    pub ttl: Duration,
    /// Pause of each worker between API calls.
    #[arg(long, value_parser = parse_duration, default_value = "5ms")]
    pub think: Duration,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `authkeeper serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Listen address, overriding `[server] listen` (HOST:PORT or unix:/path/broker.sock).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<authkeeper_server::Listen>,
}

/// `authkeeper mcp`.
#[derive(Debug, Args)]
pub struct McpArgs {
    /// The broker (default: AUTHKEEPER_URL).
    #[arg(long)]
    pub url: Option<url::Url>,
    /// The checkpoint task of tool calls that name none (default: the task of
    /// AUTHKEEPER_CHECKPOINT_URL).
    #[arg(long)]
    pub task: Option<String>,
}

/// `authkeeper credentials`.
#[derive(Debug, Subcommand)]
pub enum CredentialsCommand {
    /// Every credential the key may use, a page at a time (`--json`: one JSON object per line).
    List {
        /// The broker (default: AUTHKEEPER_URL).
        #[arg(long)]
        url: Option<url::Url>,
        /// Only this provider's.
        #[arg(long)]
        provider: Option<String>,
        /// Only with this label: KEY=VALUE, or KEY for any value.
        #[arg(long)]
        label: Option<String>,
        /// Only in this state (valid, refreshing, backing_off, needs_reauth, disabled).
        #[arg(long)]
        state: Option<String>,
        /// One JSON object per credential.
        #[arg(long)]
        json: bool,
    },
    /// One credential's state (never a secret).
    Show {
        /// The broker (default: AUTHKEEPER_URL).
        #[arg(long)]
        url: Option<url::Url>,
        /// The credential.
        name: String,
    },
    /// Create a connection of a provider.
    Add {
        /// The broker (default: AUTHKEEPER_URL).
        #[arg(long)]
        url: Option<url::Url>,
        /// The new credential's name.
        name: String,
        /// The `[providers.NAME]` it belongs to.
        #[arg(long)]
        provider: String,
        /// A label KEY=VALUE (repeatable).
        #[arg(long = "label")]
        labels: Vec<String>,
        /// A scope replacing the provider's (repeatable).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Read the provider's token response (JSON) from stdin and store it as its tokens.
        #[arg(long)]
        token_response: bool,
    },
    /// Delete a connection and its tokens.
    Rm {
        /// The broker (default: AUTHKEEPER_URL).
        #[arg(long)]
        url: Option<url::Url>,
        /// The credential.
        name: String,
    },
}

/// `authkeeper keys`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Print a fresh client key (once) and the `[[clients]]` entry to paste into the config.
    New {
        /// The client's name.
        name: String,
    },
}

/// The format of a storage-state file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StateFormat {
    /// Decide by content: JSON is a Playwright storageState, anything else a cookies.txt.
    Auto,
    /// Playwright `storageState` JSON.
    Playwright,
    /// Netscape `cookies.txt` (cookies only).
    CookiesTxt,
}

/// `authkeeper sessions`.
#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// List sessions (metadata only, never a cookie).
    List {
        /// Only this site.
        #[arg(long)]
        site: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Store a storage state (Playwright JSON or cookies.txt) as an account's session.
    Import {
        /// The site.
        site: String,
        /// The account.
        account: String,
        /// The file (`-` or nothing: stdin).
        file: Option<std::path::PathBuf>,
        /// The file's format.
        #[arg(long, value_enum, default_value = "auto")]
        format: StateFormat,
    },
    /// Write a session's storage state (by session id or account) to stdout or a file (0600).
    Export {
        /// The site.
        site: String,
        /// A session id (`alice.0`) or an account (its newest active session).
        session: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "playwright")]
        format: StateFormat,
        /// Write here (mode 0600) instead of stdout.
        #[arg(long, short)]
        out: Option<std::path::PathBuf>,
    },
    /// Log an account in now (recipe or login command) and store its session.
    Login {
        /// The site.
        site: String,
        /// The account.
        account: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Lease a session: prints the lease (with `--json`, the storage state too).
    Lease {
        /// The site.
        site: String,
        /// Only sessions of this account.
        #[arg(long)]
        account: Option<String>,
        /// Lease length.
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<Duration>,
        /// Who holds it (shown in `sessions list`).
        #[arg(long, default_value = "cli")]
        holder: String,
        /// Also write the storage state here (mode 0600).
        #[arg(long)]
        state_out: Option<std::path::PathBuf>,
        /// Print JSON (includes the storage state).
        #[arg(long)]
        json: bool,
    },
    /// Renew a lease.
    Heartbeat {
        /// The lease id.
        lease_id: String,
        /// New lease length from now.
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<Duration>,
    },
    /// Return a lease with an outcome and, optionally, the updated storage state.
    Release {
        /// The lease id.
        lease_id: String,
        /// How the session did.
        #[arg(long, value_enum, default_value = "ok")]
        outcome: OutcomeArg,
        /// The updated storage state (Playwright JSON).
        #[arg(long)]
        state: Option<std::path::PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Retire a session: it is never leased again (its slot gets a fresh login).
    Retire {
        /// The site.
        site: String,
        /// The session id.
        session: String,
        /// Why (recorded).
        #[arg(long, default_value = "operator")]
        reason: String,
    },
}

/// A release outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutcomeArg {
    /// The session worked.
    Ok,
    /// The site blocked the worker.
    Blocked,
    /// The site logged the session out.
    LoggedOut,
    /// Something else failed.
    Error,
}

/// Hidden testing tools.
#[derive(Debug, Subcommand)]
pub enum DebugCommand {
    /// Take a credential's refresh lease and hold it (until killed or for --hold).
    HoldLease {
        /// The credential.
        name: CredentialName,
        /// How long to hold it.
        #[arg(long, value_parser = parse_duration, default_value = "1h")]
        hold: Duration,
        /// Lease TTL.
        #[arg(long, value_parser = parse_duration, default_value = "30s")]
        ttl: Duration,
    },
}
