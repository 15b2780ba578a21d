//! A fault-injecting mock OAuth 2.0 identity provider and protected API for authkeeper's tests,
//! benchmarks and demo.
//!
//! [`MockIdp::start`] binds a loopback port and serves, on a tokio task:
//!
//! | route | what |
//! | --- | --- |
//! | `POST /token` | RFC 6749 `refresh_token`, `client_credentials` and `authorization_code` (PKCE S256) grants; RFC 8628 device-code grant |
//! | `POST /device/auth` | RFC 8628 device authorization (approves by itself per the `device_*` knobs) |
//! | `GET /authorize` | auto-approving authorization endpoint: redirects back with `code`, `state`, `iss` (`authorize_*` knobs) |
//! | `POST /revoke` | RFC 7009 revocation (a refresh token revokes its whole grant) |
//! | `GET /.well-known/openid-configuration` | discovery (also `/.well-known/oauth-authorization-server`) |
//! | `ANY /api/{*rest}` | protected API (RFC 6750); `/api/admin/...` needs the `admin` scope |
//! | `GET /admin/stats` | [`Stats`] |
//! | `GET`, `PUT /admin/knobs` | [`Knobs`] (PUT merges a partial JSON object) |
//! | `POST /admin/grants` | mint a grant: body `{"client_id"?, "scope"?}`, answer a token response + `grant_id` |
//! | `POST /admin/grants/{id}/revoke` | revoke a grant and all its tokens |
//!
//! Time comes from an injectable [`authkeeper_core::clock::Clock`], shifted by the
//! `clock_offset_ms` knob, so tests expire tokens with a `ManualClock` instead of sleeping.
//! Token and secret values are never logged.
//!
//! [`ForwardProxy`] is a forward HTTP proxy that counts what goes through it, for egress tests.
//!
//! [`login_app::LoginApp`] is a separate server: a cookie-session web app with an HTML login
//! form, CSRF, idle/absolute session timeouts and a refresh endpoint, for browser-session tests.

#![warn(missing_docs)]

mod admin;
mod api;
mod config;
mod discovery;
mod error;
pub mod forward_proxy;
mod login;
pub mod login_app;
mod serve;
pub mod spa;
mod state;
mod token_endpoint;
mod tokens;

use std::net::SocketAddr;

use axum::Router;
use axum::routing::{any, get, post};

pub use crate::api::ADMIN_SCOPE;
pub use crate::config::{DeviceOutcome, ErrorStyle, Knobs, MockClient, MockConfig};
pub use crate::discovery::document as discovery_document;
pub use crate::error::MockError;
pub use crate::forward_proxy::{ForwardProxy, ForwardProxyOptions, ProxyStats};
pub use crate::login_app::{LoginApp, LoginAppConfig, LoginAppStats};
pub use crate::spa::{SpaApp, SpaConfig, SpaStats};
pub use crate::state::{GrantInfo, IdpState, Stats};

/// The axum router of the mock IdP over `state`, for embedding in another server.
pub fn router(state: IdpState) -> Router {
    Router::new()
        .route("/token", post(token_endpoint::token))
        .route("/revoke", post(token_endpoint::revoke))
        .route("/device/auth", post(login::device_authorization))
        .route("/authorize", get(login::authorize))
        .route(
            "/.well-known/openid-configuration",
            get(discovery::configuration),
        )
        .route(
            "/.well-known/oauth-authorization-server",
            get(discovery::configuration),
        )
        .route("/api/{*rest}", any(api::resource))
        .route("/admin/stats", get(admin::stats))
        .route("/admin/knobs", get(admin::get_knobs).put(admin::put_knobs))
        .route("/admin/grants", post(admin::mint_grant))
        .route("/admin/grants/{id}/revoke", post(admin::revoke_grant))
        .with_state(state)
}

/// A running mock IdP. Dropping it aborts the server; [`MockIdp::shutdown`] stops it gracefully.
#[derive(Debug)]
pub struct MockIdp {
    state: IdpState,
    served: serve::Served,
}

impl MockIdp {
    /// Binds `config.listen` and starts serving on a tokio task.
    pub async fn start(config: MockConfig) -> Result<MockIdp, MockError> {
        let bound = serve::bind(config.listen).await?;
        let state = IdpState::new(
            config.clock,
            config.knobs,
            config.clients,
            bound.base_url.clone(),
        )?;
        let served = bound.serve(router(state.clone()));
        tracing::debug!(base_url = %served.base_url, "mock IdP started");
        Ok(MockIdp { state, served })
    }

    /// The bound socket address.
    pub fn addr(&self) -> SocketAddr {
        self.served.addr
    }

    /// `http://HOST:PORT` (an unspecified listen address is shown as loopback).
    pub fn base_url(&self) -> &str {
        &self.served.base_url
    }

    /// The issuer, equal to [`MockIdp::base_url`].
    pub fn issuer(&self) -> &str {
        self.state.issuer()
    }

    /// `{base}/token`.
    pub fn token_url(&self) -> String {
        format!("{}/token", self.served.base_url)
    }

    /// `{base}/device/auth`.
    pub fn device_authorization_url(&self) -> String {
        format!("{}/device/auth", self.served.base_url)
    }

    /// `{base}/authorize`.
    pub fn authorization_url(&self) -> String {
        format!("{}/authorize", self.served.base_url)
    }

    /// `{base}/revoke`.
    pub fn revoke_url(&self) -> String {
        format!("{}/revoke", self.served.base_url)
    }

    /// `{base}/api/resource`, a protected resource any valid token may read.
    pub fn api_url(&self) -> String {
        format!("{}/api/resource", self.served.base_url)
    }

    /// The shared state (counters, knobs, grants).
    pub fn state(&self) -> &IdpState {
        &self.state
    }

    /// A snapshot of the counters and grants.
    pub fn stats(&self) -> Stats {
        self.state.stats()
    }

    /// The current knobs.
    pub fn knobs(&self) -> Knobs {
        Knobs::clone(&self.state.knobs())
    }

    /// Replaces the knobs; fails when a fault rate is outside 0..=1.
    pub fn set_knobs(&self, knobs: Knobs) -> Result<(), MockError> {
        self.state.set_knobs(knobs)
    }

    /// Mints a grant for `client_id` (default: the first client) with `scope` (default: the
    /// client's default scope) and returns the token response JSON, as `/token` would, plus a
    /// non-standard `grant_id` field.
    pub fn mint_grant(
        &self,
        client_id: Option<&str>,
        scope: Option<&str>,
    ) -> Result<serde_json::Value, MockError> {
        let issued = self.state.mint_grant(client_id, scope)?;
        Ok(issued.to_json(&self.state.knobs(), true))
    }

    /// Revokes a grant and every token of it.
    pub fn revoke_grant(&self, id: &str) -> Result<(), MockError> {
        self.state.revoke_grant(id)
    }

    /// Stops accepting connections, lets open requests finish (at most 5 s) and waits for the
    /// server task.
    pub async fn shutdown(self) -> Result<(), MockError> {
        self.served.shutdown().await
    }
}

/// Runs a mock IdP until ctrl-c, then shuts it down gracefully. Logs its base URL at `info`.
pub async fn serve_forever(config: MockConfig) -> Result<(), MockError> {
    let idp = MockIdp::start(config).await?;
    tracing::info!(base_url = %idp.base_url(), "mock IdP listening; ctrl-c stops it");
    tokio::signal::ctrl_c().await.map_err(MockError::Signal)?;
    idp.shutdown().await
}
