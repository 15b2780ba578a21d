//! authkeeper-session: logged-in browser identities kept encrypted, leased to one worker at a time,
//! health-checked and re-created by a real browser login.
//!
//! - [`storage_state`]: Playwright `storageState` JSON, the interchange format.
//! - [`cookies_txt`]: Netscape `cookies.txt` import and export.
//! - [`jar`]: the RFC 6265 `Cookie` header of a state, and `Set-Cookie` answers merged into it.
//! - [`health`]: the logged-in probe and the cookie-based silent refresh.
//! - [`config`]: per-site settings: accounts, login recipe or command, probe, pool policy.
//! - [`model`]: the stored session record and lease outcomes.
//! - [`login`]: how a session is created: a recipe in headless Chromium ([`recipe`], [`browser`])
//!   or an external command.
//! - [`bearer`]: credentials backed by a browser session (`grant = "session"`).
//! - [`pool`]: leases over a [`authkeeper_core::Store`]: exclusive across processes and replicas.

#![warn(missing_docs)]

pub mod bearer;
#[cfg(feature = "browser")]
pub mod browser;
pub mod config;
pub mod cookies_txt;
pub mod health;
pub mod identity;
pub mod jar;
pub mod login;
pub mod model;
pub mod pool;
pub mod recipe;
pub mod storage_state;

pub use config::{AccountConfig, LoginConfig, PoolPolicy, ProbeConfig, RecipeStep, SiteConfig};
pub use cookies_txt::{parse_cookies_txt, to_cookies_txt};
pub use health::{HealthError, ProbeOutcome, ProbeResult, cookie_refresh, http_client, probe};
pub use jar::{MergeSummary, cookie_header, merge_set_cookie};
#[cfg(feature = "browser")]
pub use login::RecipeLogin;
pub use login::{CommandLogin, LoginError, LoginRequest, SessionLogin, login_for};
pub use model::{Outcome, Session, SessionLease, SessionState};
pub use pool::{
    LeaseError, LeaseRequest, MaintenanceReport, ReleaseSummary, SessionPool, SessionSummary,
};
pub use storage_state::{
    Extra, NameValue, OriginState, SameSite, StateCookie, StateError, StorageState,
};
