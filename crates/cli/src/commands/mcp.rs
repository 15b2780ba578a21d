//! `authkeeper mcp`: the MCP server for agents on stdio, calling a broker over HTTP
//! (`AUTHKEEPER_URL`, `AUTHKEEPER_API_KEY`: what `authkeeper exec` gives its child).

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use authkeeper_core::SecretString;
use authkeeper_server::mcp::{AuthkeeperMcp, HttpBackend, KeySource};
use rmcp::ServiceExt as _;

use crate::cli::McpArgs;

pub async fn run(args: McpArgs) -> anyhow::Result<ExitCode> {
    let url = match args.url {
        Some(url) => url,
        None => std::env::var("AUTHKEEPER_URL")
            .map_err(|_| {
                crate::exit::ConfigurationError(
                    "set AUTHKEEPER_URL (or --url) to the broker's address".to_owned(),
                )
            })?
            .parse()
            .map_err(|e| crate::exit::ConfigurationError(format!("AUTHKEEPER_URL: {e}")))?,
    };
    let key = std::env::var("AUTHKEEPER_API_KEY").map_err(|_| {
        crate::exit::ConfigurationError(
            "set AUTHKEEPER_API_KEY to the agent's client key (never pass it as an argument)"
                .to_owned(),
        )
    })?;
    let task = args.task.or_else(task_from_env);
    // Leased storage states go to a private directory removed when the server stops.
    let lease_dir = tempfile::Builder::new()
        .prefix("authkeeper-mcp-")
        .tempdir()
        .context("cannot create a private directory for leased sessions")?;
    let backend = HttpBackend::new(&url).map_err(anyhow::Error::from)?;
    let server = AuthkeeperMcp::new(
        Arc::new(backend),
        KeySource::Fixed(SecretString::from(key)),
        task,
        Some(lease_dir.path().to_owned()),
    );
    tracing::info!(broker = %url, "MCP server on stdio");
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .context("the MCP client did not initialize the session")?;
    running.waiting().await.context("the MCP session failed")?;
    Ok(ExitCode::SUCCESS)
}

/// The checkpoint task `authkeeper exec --task` named (`AUTHKEEPER_CHECKPOINT_URL`).
fn task_from_env() -> Option<String> {
    let url = std::env::var("AUTHKEEPER_CHECKPOINT_URL").ok()?;
    url.rsplit_once("/v1/checkpoints/")
        .map(|(_, task)| task.to_owned())
        .filter(|task| !task.is_empty())
}
