//! Configuration of the mock IdP: the runtime [`Knobs`] (lifetimes, rotation, faults, quirks),
//! the registered [`MockClient`]s and the start-up [`MockConfig`].
//!
//! Every duration carries its unit in its name (`_ms` or `_secs`). Knobs deserialize with
//! defaults for missing fields, so a JSON or TOML file only names what it changes.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};

use authkeeper_core::clock::{SharedClock, SystemClock};
use serde::{Deserialize, Serialize};

use crate::error::MockError;
pub use crate::login::DeviceOutcome;

/// How the IdP and the API report errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorStyle {
    /// RFC 6749 §5.2 JSON bodies on the token endpoint and RFC 6750 `WWW-Authenticate` on the API.
    #[default]
    Standard,
    /// Token-endpoint errors come as an HTML page (OAuth errors) or an empty body (injected
    /// faults) with the right status; no `WWW-Authenticate` header anywhere.
    Nonstandard,
}

/// Runtime behaviour of the mock IdP. Change it at any time with [`crate::MockIdp::set_knobs`]
/// or `PUT /admin/knobs` (a partial JSON object).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Knobs {
    /// Lifetime of an access token, in milliseconds (default 3 600 000 = 1 h). `expires_in` is
    /// this in whole seconds, rounded down, and at least 1.
    pub access_ttl_ms: u64,
    /// Lifetime of each refresh token from its issue, in milliseconds; `None` (default): no limit.
    pub refresh_ttl_ms: Option<u64>,
    /// Issue a new refresh token on every refresh and mark the presented one used (default true).
    pub rotate_refresh_tokens: bool,
    /// Presenting a used refresh token outside the grace window revokes its whole grant
    /// (default true). When false the used token is merely rejected with `invalid_grant`.
    pub reuse_revokes_grant: bool,
    /// How long after its rotation a used refresh token is still accepted, in milliseconds
    /// (default 0: never). Within the window the grant's current refresh token is returned again
    /// with a new access token, like Auth0's / Okta's leeway.
    pub reuse_grace_ms: u64,
    /// Absolute lifetime of a grant from its minting, in milliseconds; after it every refresh
    /// answers `invalid_grant`. `None` (default): no limit.
    pub grant_lifetime_ms: Option<u64>,
    /// Probability (0..=1) that a `/token` request is answered 429. Checked first.
    pub fault_429_rate: f64,
    /// Probability (0..=1) that a `/token` request is answered 500. Checked second.
    pub fault_500_rate: f64,
    /// Probability (0..=1) that a `/token` request is answered 503. Checked third.
    pub fault_503_rate: f64,
    /// `Retry-After` value in seconds sent with injected 429 and 503 answers; `None`: no header.
    pub retry_after_secs: Option<u64>,
    /// Added latency on every `/token` request, in milliseconds (real time, not the clock).
    pub token_latency_ms: u64,
    /// Added latency after a `/token` answer is decided (a refresh token already rotated) and
    /// before it is sent, in milliseconds (real time). Opens the crash window on purpose: a
    /// client killed during it loses the rotated refresh token.
    pub token_answer_delay_ms: u64,
    /// Added latency on every `/api/...` request, in milliseconds (real time, not the clock).
    pub api_latency_ms: u64,
    /// Offset of the IdP's clock from the injected clock, in milliseconds (positive runs ahead).
    /// JWT `iat`/`exp` and every expiry check use the shifted time; `expires_in` stays relative.
    pub clock_offset_ms: i64,
    /// Leave `expires_in` out of token responses.
    pub omit_expires_in: bool,
    /// Send `expires_in` as a JSON string (`"3600"`), like Azure AD v1.
    pub expires_in_as_string: bool,
    /// Issue JWT-shaped access tokens (`header.payload.signature`, payload with `iss`, `sub`,
    /// `iat`, `exp`, `jti`, `scope`, `client_id`; the signature is random) instead of opaque ones.
    pub jwt_access_tokens: bool,
    /// How errors are reported.
    pub error_style: ErrorStyle,
    /// Refresh responses carry no `refresh_token` (a provider that neither rotates nor resends
    /// it). Implies no rotation while on.
    pub omit_refresh_token_on_refresh: bool,
    /// Device flow: the first this many polls are answered `slow_down` (default 0).
    pub device_slow_down_polls: u32,
    /// Device flow: the next this many polls are answered `authorization_pending` (default 0).
    pub device_pending_polls: u32,
    /// Device flow: how the authorization ends after the scripted polls (default approve).
    pub device_outcome: DeviceOutcome,
    /// Device flow: the `interval` sent, in seconds; `None` (default): none, like oidc-provider.
    pub device_interval_secs: Option<u64>,
    /// Device flow: the device code's `expires_in`, in seconds (default 600).
    pub device_expires_in_secs: u64,
    /// Device flow: send `verification_uri_complete` (default true).
    pub device_verification_uri_complete: bool,
    /// `/authorize`: redirect back with this `error` (e.g. `access_denied`) instead of a code.
    pub authorize_error: Option<String>,
    /// `/authorize`: redirect back with a `state` other than the one sent.
    pub authorize_wrong_state: bool,
    /// `/authorize`: redirect back with an `iss` other than the issuer (RFC 9207 mix-up).
    pub authorize_wrong_iss: bool,
    /// `/authorize`: leave `iss` out of the redirect.
    pub authorize_omit_iss: bool,
    /// `/authorize`: store a wrong PKCE challenge, so the client's correct verifier is rejected
    /// at the code exchange.
    pub pkce_corrupt_challenge: bool,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            access_ttl_ms: 3_600_000,
            refresh_ttl_ms: None,
            rotate_refresh_tokens: true,
            reuse_revokes_grant: true,
            reuse_grace_ms: 0,
            grant_lifetime_ms: None,
            fault_429_rate: 0.0,
            fault_500_rate: 0.0,
            fault_503_rate: 0.0,
            retry_after_secs: None,
            token_latency_ms: 0,
            token_answer_delay_ms: 0,
            api_latency_ms: 0,
            clock_offset_ms: 0,
            omit_expires_in: false,
            expires_in_as_string: false,
            jwt_access_tokens: false,
            error_style: ErrorStyle::Standard,
            omit_refresh_token_on_refresh: false,
            device_slow_down_polls: 0,
            device_pending_polls: 0,
            device_outcome: DeviceOutcome::Approve,
            device_interval_secs: None,
            device_expires_in_secs: 600,
            device_verification_uri_complete: true,
            authorize_error: None,
            authorize_wrong_state: false,
            authorize_wrong_iss: false,
            authorize_omit_iss: false,
            pkce_corrupt_challenge: false,
        }
    }
}

impl Knobs {
    /// Checks that every fault rate is a probability between 0 and 1.
    pub fn validate(&self) -> Result<(), MockError> {
        for (name, rate) in [
            ("fault_429_rate", self.fault_429_rate),
            ("fault_500_rate", self.fault_500_rate),
            ("fault_503_rate", self.fault_503_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(MockError::InvalidKnobs(format!(
                    "{name} must be between 0 and 1, got {rate}"
                )));
            }
        }
        Ok(())
    }

    /// `expires_in` in whole seconds for the current access-token lifetime.
    pub fn expires_in_secs(&self) -> u64 {
        (self.access_ttl_ms / 1000).max(1)
    }
}

/// A registered confidential client.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MockClient {
    /// The `client_id`.
    pub client_id: String,
    /// The `client_secret` (never printed by `Debug`).
    pub client_secret: String,
    /// Scope granted when a request names none (space-separated).
    #[serde(default = "default_scope")]
    pub default_scope: String,
}

fn default_scope() -> String {
    MockClient::DEFAULT_SCOPE.to_owned()
}

impl MockClient {
    /// The default client's id.
    pub const DEFAULT_ID: &'static str = "mock-client";
    /// The default client's secret.
    pub const DEFAULT_SECRET: &'static str = "mock-secret";
    /// The default scope of a client; it lacks `admin`, which `/api/admin/...` requires.
    pub const DEFAULT_SCOPE: &'static str = "api.read api.write";

    /// A client with the default scope.
    pub fn new(client_id: impl Into<String>, client_secret: impl Into<String>) -> Self {
        MockClient {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            default_scope: default_scope(),
        }
    }
}

impl Default for MockClient {
    /// `("mock-client", "mock-secret")`.
    fn default() -> Self {
        MockClient::new(Self::DEFAULT_ID, Self::DEFAULT_SECRET)
    }
}

impl fmt::Debug for MockClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockClient")
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .field("default_scope", &self.default_scope)
            .finish()
    }
}

/// Everything [`crate::MockIdp::start`] needs.
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// Address to bind (default `127.0.0.1:0`: an ephemeral loopback port).
    pub listen: SocketAddr,
    /// Time source (default the system clock); tests inject a `ManualClock`.
    pub clock: SharedClock,
    /// Initial knobs.
    pub knobs: Knobs,
    /// Registered clients (default: one, `("mock-client", "mock-secret")`). The first one is
    /// the default client of minted grants.
    pub clients: Vec<MockClient>,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            clock: SystemClock::shared(),
            knobs: Knobs::default(),
            clients: vec![MockClient::default()],
        }
    }
}

impl MockConfig {
    /// Replaces the clock.
    pub fn with_clock(mut self, clock: SharedClock) -> Self {
        self.clock = clock;
        self
    }

    /// Replaces the knobs.
    pub fn with_knobs(mut self, knobs: Knobs) -> Self {
        self.knobs = knobs;
        self
    }

    /// Replaces the listen address.
    pub fn with_listen(mut self, listen: SocketAddr) -> Self {
        self.listen = listen;
        self
    }

    /// Replaces the registered clients.
    pub fn with_clients(mut self, clients: Vec<MockClient>) -> Self {
        self.clients = clients;
        self
    }
}
