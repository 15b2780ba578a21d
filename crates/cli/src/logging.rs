//! Logging to stderr with `tracing`: `AUTHKEEPER_LOG` (or `RUST_LOG`) filters, `--log-format json`
//! switches to JSON lines. Events carry no secrets; HTTP clients mark credentials sensitive.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

use crate::cli::{GlobalArgs, LogFormat};

/// Installs the global subscriber; `default_level` applies when no filter is set.
pub fn init(global: &GlobalArgs, default_level: &str) {
    let filter = std::env::var("AUTHKEEPER_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .and_then(|text| EnvFilter::try_new(text).ok())
        .unwrap_or_else(|| EnvFilter::new(default_level));
    // Colour only on a terminal: a log written to a file or a pipe gets no escape codes.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match global.log_format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
