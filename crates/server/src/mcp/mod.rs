//! The Model Context Protocol server for agents ([`AuthkeeperMcp`]): tools to call an API through
//! the injecting proxy (the model never sees a token), follow a credential's state and wait for a
//! re-login, lease and return browser sessions, and save and load checkpoints.
//!
//! Two transports: `authkeeper mcp` speaks MCP on stdio and calls a broker over HTTP
//! ([`HttpBackend`], `AUTHKEEPER_URL` and `AUTHKEEPER_API_KEY`); the broker serves MCP's
//! streamable HTTP at `/mcp` ([`service`]) and calls its own routes in process with the key of
//! each MCP request. Either way the broker's authentication and permissions apply to every tool
//! call exactly as to a worker's request. Built on the official Rust SDK, `rmcp`.

mod answer;
mod backend;
mod tools;

use std::sync::Arc;

pub use self::backend::{Backend, BackendError, HttpBackend, RouterBackend};
pub use self::tools::{AuthkeeperMcp, KeySource};

use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};

/// The streamable HTTP service of the broker's `/mcp` route: each session's tools call `router`
/// (the broker's routes) with the `Authorization` header of the MCP request. `allowed_hosts` are
/// the `Host` values accepted (DNS-rebinding protection: loopback names by default).
pub fn service(
    router: axum::Router,
    allowed_hosts: Vec<String>,
) -> StreamableHttpService<AuthkeeperMcp, LocalSessionManager> {
    let backend: Arc<dyn Backend> = Arc::new(RouterBackend::new(router));
    StreamableHttpService::new(
        move || {
            Ok(AuthkeeperMcp::new(
                Arc::clone(&backend),
                KeySource::FromRequest,
                None,
                None,
            ))
        },
        Arc::default(),
        StreamableHttpServerConfig::default().with_allowed_hosts(allowed_hosts),
    )
}
