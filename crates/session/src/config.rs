//! Per-site settings, the `[sites.NAME]` tables of the configuration file.
//!
//! ```toml
//! [sites.portal]
//! origin = "https://portal.example.com"
//! accounts = [{ name = "alice", username = "alice@example.com", password = "env:PORTAL_ALICE" }]
//!
//! [sites.portal.login]                # a recipe run in headless Chromium ...
//! steps = [
//!   { goto = "/login" },
//!   { fill = "#username", value = "account:username" },
//!   { fill = "#password", value = "account:password" },
//!   { click = "button[type=submit]" },
//!   { wait_for_url = "/home" },
//! ]
//! # command = "node login.js"          # ... or a command printing a storageState JSON
//!
//! [sites.portal.probe]
//! url = "/api/me"
//! logged_out_status = [401]
//!
//! [sites.portal.pool]
//! max_usage = 50
//! ```

use std::time::Duration;

use authkeeper_core::name::AccountName;
use authkeeper_core::secret_ref::SecretRef;
use serde::Deserialize;
use url::Url;

/// Settings of one site.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    /// The site's base URL: relative URLs of the recipe, probe and refresh resolve against it.
    pub origin: Url,
    /// The accounts sessions are created for.
    #[serde(default)]
    pub accounts: Vec<AccountConfig>,
    /// How a session is created (or re-created when logged out).
    #[serde(default)]
    pub login: Option<LoginConfig>,
    /// How to tell whether a session is still logged in.
    #[serde(default)]
    pub probe: Option<ProbeConfig>,
    /// A cookie-based silent refresh that extends a session without a login.
    #[serde(default)]
    pub refresh: Option<CookieRefreshConfig>,
    /// Pool policy: usage, error score, age, leases.
    #[serde(default)]
    pub pool: PoolPolicy,
    /// What sessions look like: user agents, locales, time zones, window sizes to give new
    /// sessions (one identity per session, for its whole life).
    #[serde(default)]
    pub identity: crate::identity::IdentityProfiles,
}

impl SiteConfig {
    /// The account called `name`.
    pub fn account(&self, name: &str) -> Option<&AccountConfig> {
        self.accounts.iter().find(|account| account.name == name)
    }

    /// `url` resolved against [`SiteConfig::origin`] (absolute URLs are kept).
    pub fn resolve(&self, url: &str) -> Result<Url, url::ParseError> {
        self.origin.join(url)
    }
}

/// An account of a site. Its secrets are references (`env:`, `file:`), resolved only when a
/// login runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    /// The account's name within the site (letters, digits, `.`, `_`, `-`).
    pub name: AccountName,
    /// The login name (not a secret), used by `account:username` in a recipe.
    #[serde(default)]
    pub username: Option<String>,
    /// The password, used by `account:password` in a recipe.
    #[serde(default)]
    pub password: Option<SecretRef>,
    /// Proxy identity (e.g. `http://user:pass@proxy:3128`) the account's session is created with
    /// and always handed out with. A secret: never logged.
    #[serde(default)]
    pub proxy: Option<SecretRef>,
    /// The account's own identity settings (override the site's picks).
    #[serde(default)]
    pub identity: crate::identity::IdentityOverride,
}

/// How sessions of a site are created: a recipe in headless Chromium or an external command.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginConfig {
    /// Declarative steps run in a real headless Chromium over CDP.
    #[serde(default)]
    pub steps: Vec<RecipeStep>,
    /// Instead of steps: a command (run by `sh -c`) that prints a Playwright storageState JSON on
    /// stdout. It gets `AUTHKEEPER_SITE`, `AUTHKEEPER_ORIGIN`, `AUTHKEEPER_ACCOUNT`,
    /// `AUTHKEEPER_USERNAME`, `AUTHKEEPER_PASSWORD` (when configured) in its environment.
    #[serde(default)]
    pub command: Option<String>,
    /// Origins whose localStorage is captured after a recipe (default: the site's origin).
    #[serde(default)]
    pub origins: Vec<String>,
    /// Bound on the whole login.
    #[serde(default = "defaults::login_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Bound on each step that waits (goto, wait_for, wait_for_url, click, fill).
    #[serde(default = "defaults::step_timeout", with = "humantime_serde")]
    pub step_timeout: Duration,
}

/// One step of a login recipe: a table with exactly one action key.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RecipeStep {
    /// Navigate to this URL (relative to the site's origin) and wait for the load.
    #[serde(default)]
    pub goto: Option<String>,
    /// Type `value` into the element matching this CSS selector.
    #[serde(default)]
    pub fill: Option<String>,
    /// For `fill`: `account:username`, `account:password`, `env:NAME`, `file:PATH` or a literal.
    #[serde(default)]
    pub value: Option<String>,
    /// Click the element matching this CSS selector.
    #[serde(default)]
    pub click: Option<String>,
    /// Wait until an element matches this CSS selector.
    #[serde(default)]
    pub wait_for: Option<String>,
    /// Wait until the page URL's path (or the whole URL, when absolute) is this.
    #[serde(default)]
    pub wait_for_url: Option<String>,
    /// Evaluate this JavaScript in the page (its result is ignored unless it throws).
    #[serde(default)]
    pub evaluate: Option<String>,
}

/// How to tell whether a session is still logged in: a request with the session's cookies.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    /// The URL to request (GET, redirects not followed), relative to the origin.
    pub url: String,
    /// A redirect whose `Location` path starts with this means logged out (e.g. `/login`).
    #[serde(default)]
    pub logged_out_redirect: Option<String>,
    /// These statuses mean logged out (default 401).
    #[serde(default = "defaults::logged_out_status")]
    pub logged_out_status: Vec<u16>,
    /// A body containing this text means logged out (e.g. `Sign in`).
    #[serde(default)]
    pub logged_out_marker: Option<String>,
    /// How often every session is probed in the background.
    #[serde(default = "defaults::probe_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// A session not probed for this long is probed before it is leased.
    #[serde(default = "defaults::probe_max_staleness", with = "humantime_serde")]
    pub max_staleness: Duration,
    /// Bound on one probe request.
    #[serde(default = "defaults::probe_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

/// A cookie-based silent refresh: a request sent with the session's cookies whose `Set-Cookie`
/// answers update the stored state.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CookieRefreshConfig {
    /// The URL (relative to the origin), e.g. `/api/auth/refresh`.
    pub url: String,
    /// The method (default `POST`).
    #[serde(default = "defaults::refresh_method")]
    pub method: String,
    /// The `Origin` header to send (default: the site's origin).
    #[serde(default)]
    pub origin: Option<String>,
    /// How often to refresh each idle session (default 5 minutes).
    #[serde(default = "defaults::refresh_interval", with = "humantime_serde")]
    pub interval: Duration,
}

/// Pool policy of a site. Defaults follow Crawlee's SessionPool.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolPolicy {
    /// A session used this many times is retired (0: no limit).
    pub max_usage: u32,
    /// A session whose error score reaches this is retired.
    pub max_error_score: f64,
    /// Subtracted from the error score on an `ok` release (never below 0).
    pub error_score_decrement: f64,
    /// Added to the error score on an `error` release.
    pub error_score_increment: f64,
    /// Added to the error score on a `blocked` release.
    pub blocked_score_increment: f64,
    /// A session older than this is retired.
    #[serde(with = "humantime_serde")]
    pub max_age: Option<Duration>,
    /// Sessions kept per account (each with its own lease).
    pub max_sessions_per_account: u32,
    /// Lease length when the worker asks none.
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// Longest lease a worker may ask.
    #[serde(with = "humantime_serde")]
    pub max_lease_ttl: Duration,
    /// Retire (and re-create) a session released as `logged_out` instead of re-logging it in
    /// place.
    pub retire_on_logged_out: bool,
}

impl Default for PoolPolicy {
    fn default() -> Self {
        PoolPolicy {
            max_usage: 50,
            max_error_score: 3.0,
            error_score_decrement: 0.5,
            error_score_increment: 1.0,
            blocked_score_increment: 3.0,
            max_age: None,
            max_sessions_per_account: 1,
            lease_ttl: Duration::from_secs(300),
            max_lease_ttl: Duration::from_secs(3600),
            retire_on_logged_out: true,
        }
    }
}

mod defaults {
    use std::time::Duration;

    pub fn login_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub fn step_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn logged_out_status() -> Vec<u16> {
        vec![401]
    }
    pub fn probe_interval() -> Duration {
        Duration::from_secs(300)
    }
    pub fn probe_max_staleness() -> Duration {
        Duration::from_secs(60)
    }
    pub fn probe_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn refresh_method() -> String {
        "POST".to_owned()
    }
    pub fn refresh_interval() -> Duration {
        Duration::from_secs(300)
    }
}
