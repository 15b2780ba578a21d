//! authkeeper-server: the broker behind `authkeeper serve`.
//!
//! - [`config`]: the `[server]` and `[[clients]]` tables.
//! - [`broker`]: binding (TCP, TLS, Unix socket), serving, graceful shutdown ([`Broker`]).
//! - [`app`]: the router ([`router`]) with authentication, logging and timeouts.
//! - [`api`] handlers, [`auth`] client keys (and `authorize`, the one authorization extractor), [`metrics`] Prometheus metrics, [`problem`]
//!   RFC 9457 errors, [`proxy`] the credential-injecting reverse proxy, [`state`] shared state.
//! - [`notify`]: the re-authentication webhook ([`notify::Notifier`], an event sink).
//!
//! Tests start the real broker in-process with [`Broker::start`] on `127.0.0.1:0`.

pub mod api;
pub mod app;
pub mod auth;
mod authorize;
pub mod broker;
pub mod checkpoints;
pub mod config;
pub mod connections;
pub mod mcp;
pub mod metrics;
pub mod notify;
pub mod problem;
pub mod proxy;
mod sessions;
pub mod state;

pub use app::router;
pub use auth::{ClientIdentity, ClientKeys, CredentialTags, NewKey};
pub use broker::{
    BoundAddr, Broker, BrokerConfig, BrokerError, serve, tags_from, upstream_of, upstreams_from,
};
pub use config::{ClientConfig, Listen, ServerConfig, TlsConfig};
pub use metrics::Metrics;
pub use problem::{Problem, ProblemType};
pub use state::{AppState, ReadinessProbe};
