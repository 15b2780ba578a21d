//! `authkeeper serve`: the broker. Loads the configuration, opens the store, builds the Keeper
//! (background refresh, heartbeat, metrics sink) and serves the HTTP API until SIGINT or
//! SIGTERM, then shuts down gracefully: in-flight requests finish and a refresh in flight is
//! stored before the process exits.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use authkeeper_core::KeeperSettings;
use authkeeper_core::events::SharedSink;
use authkeeper_server::{Broker, BrokerConfig, Metrics, upstreams_from};

use crate::cli::{GlobalArgs, ServeArgs};
use crate::context::Context;

pub async fn run(global: &GlobalArgs, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let context = Context::load(global)?;
    let mut server = context.config.server.clone();
    if let Some(listen) = args.listen {
        server.listen = listen;
    }
    if context.config.clients.is_empty() {
        tracing::warn!(
            "no [[clients]] configured: every API request will be refused with 401. Create a key with `authkeeper keys new NAME`"
        );
        eprintln!(
            "authkeeper: WARNING: no [[clients]] in the config, so every API request will get 401; run `authkeeper keys new NAME`"
        );
    }
    let store = context.open_store()?;
    let metrics = Arc::new(Metrics::new());
    let sink: SharedSink = metrics.clone();
    let keeper = context.keeper_with_sinks(store, &[], KeeperSettings::default(), vec![sink])?;
    let config = BrokerConfig {
        server,
        clients: context.config.clients.clone(),
        upstreams: upstreams_from(&context.config.credentials),
        metrics: Some(metrics),
        heartbeat: true,
    };
    let broker = Broker::start(keeper, config)
        .await
        .context("cannot start the broker")?;
    println!("authkeeper broker listening on {}", broker.url());
    broker.run_until(shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let terminate = async {
        match signal(SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(error) => {
                tracing::warn!(error = %error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
    tracing::info!("shutting down: finishing in-flight requests and refreshes");
}
