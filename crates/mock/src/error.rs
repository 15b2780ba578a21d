//! Errors of the mock IdP's library API (not the HTTP error answers, which are its product).

use std::net::SocketAddr;

/// What can go wrong while starting, steering or stopping the mock IdP.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MockError {
    /// The listen address could not be bound.
    #[error("cannot bind the mock IdP to {addr}")]
    Bind {
        /// The address that was asked for.
        addr: SocketAddr,
        /// Why binding failed.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP server stopped with an I/O error.
    #[error("the mock IdP's server failed")]
    Serve(#[source] std::io::Error),
    /// Waiting for ctrl-c failed.
    #[error("cannot listen for ctrl-c")]
    Signal(#[source] std::io::Error),
    /// The server task panicked or was cancelled.
    #[error("the mock IdP's server task ended abnormally")]
    Task(#[source] tokio::task::JoinError),
    /// No client is registered under this id.
    #[error("unknown client {0:?}")]
    UnknownClient(String),
    /// No grant has this id.
    #[error("unknown grant {0:?}")]
    UnknownGrant(String),
    /// The configuration has no client at all.
    #[error("the mock IdP needs at least one client")]
    NoClients,
    /// A knob has an impossible value.
    #[error("invalid knobs: {0}")]
    InvalidKnobs(String),
}
