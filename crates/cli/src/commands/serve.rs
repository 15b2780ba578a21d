//! `authkeeper serve`: the broker. Loads the configuration, opens the store, builds the Keeper
//! (background refresh, heartbeat, metrics sink) and serves the HTTP API until SIGINT or
//! SIGTERM, then shuts down gracefully: in-flight requests finish and a refresh in flight is
//! stored before the process exits.
//!
//! On the Redis store, a task applies the store's change events to the Keeper's cache (a
//! generation another replica stored is served at once), and `/readyz` also reports Redis'
//! health (not ready, with the reason, while Redis is unreachable; ready again by itself).

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use authkeeper_core::events::SharedSink;
use authkeeper_core::{Keeper, KeeperSettings};
use authkeeper_server::{Broker, BrokerConfig, Metrics, ReadinessProbe, tags_from, upstreams_from};
use authkeeper_store::{ChangeEvent, RedisStore};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::cli::{GlobalArgs, ServeArgs};
use crate::context::{Context, OpenedStore};

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
    let backend = context.open_backend().await?;
    let metrics = Arc::new(Metrics::new());
    let sink: SharedSink = metrics.clone();
    let mut sinks = vec![sink];
    if let Some(notifier) = notifier(&context)? {
        sinks.push(notifier);
    }
    let sessions = context.session_pool(backend.shared())?;
    let keeper = context.keeper_with_sinks(
        backend.shared(),
        &[],
        KeeperSettings::default(),
        sinks,
        sessions.as_ref(),
    )?;
    let (readiness_probe, propagation) = match &backend {
        OpenedStore::Redis(redis) => {
            let probe: Arc<dyn ReadinessProbe> = Arc::new(RedisReadiness(redis.clone()));
            (
                Some(probe),
                Some(spawn_propagation(keeper.clone(), redis.changes())),
            )
        }
        OpenedStore::Sqlite(_) => (None, None),
    };
    let session_maintenance = sessions.as_ref().map(|_| maintenance_interval(&context));
    let config = BrokerConfig {
        server,
        records: backend.shared(),
        clients: context.config.clients.clone(),
        upstreams: upstreams_from(&context.config.credentials, sessions.as_deref())?,
        metrics: Some(metrics),
        heartbeat: true,
        readiness_probe,
        sessions,
        session_maintenance,
        credential_tags: tags_from(&context.config.credentials),
        providers: context.config.resolved_providers()?,
        provider_upstreams: context.config.provider_upstreams()?,
    };
    let broker = Broker::start(keeper, config)
        .await
        .context("cannot start the broker")?;
    println!("authkeeper broker listening on {}", broker.url());
    broker.run_until(shutdown_signal()).await?;
    if let Some(propagation) = propagation {
        propagation.abort();
    }
    Ok(ExitCode::SUCCESS)
}

/// How often the session janitor runs: often enough for the tightest probe or cookie-refresh
/// interval, at most every 10 s (expired leases are reclaimed within that).
fn maintenance_interval(context: &Context) -> std::time::Duration {
    let tightest = context
        .config
        .sites
        .values()
        .flat_map(|site| {
            let probe = site.probe.as_ref().map(|probe| probe.interval);
            let refresh = site.refresh.as_ref().map(|refresh| refresh.interval);
            probe.into_iter().chain(refresh)
        })
        .min()
        .unwrap_or(std::time::Duration::from_secs(10));
    (tightest / 2).clamp(
        std::time::Duration::from_secs(1),
        std::time::Duration::from_secs(10),
    )
}

/// The `[notify]` webhook, when configured: notified of credentials a human must log in again.
fn notifier(context: &Context) -> anyhow::Result<Option<SharedSink>> {
    let Some(config) = &context.config.notify else {
        return Ok(None);
    };
    let reauth = context.reauthenticator(&[])?;
    let automatic = context
        .config
        .credentials
        .keys()
        .filter(|name| reauth.plan(name).is_some_and(|p| p.method.is_automatic()))
        .map(|name| name.to_string())
        .collect();
    let notifier = authkeeper_server::notify::Notifier::start(
        config,
        automatic,
        authkeeper_core::SystemClock::shared(),
    )?;
    Ok(Some(notifier))
}

/// `/readyz` on Redis: ready while Redis answers PING.
#[derive(Debug)]
struct RedisReadiness(RedisStore);

#[async_trait::async_trait]
impl ReadinessProbe for RedisReadiness {
    async fn check(&self) -> Result<(), String> {
        let health = self.0.health().await;
        if health.is_ready() {
            Ok(())
        } else {
            Err(health
                .reason
                .unwrap_or_else(|| "Redis is unreachable".to_owned()))
        }
    }
}

/// Applies the store's change events to the Keeper's cache: a generation (or status) another
/// replica stored is installed at once; after a resubscription or a lag everything is re-read.
fn spawn_propagation(
    keeper: Keeper,
    mut changes: broadcast::Receiver<ChangeEvent>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match changes.recv().await {
                Ok(ChangeEvent::Changed { name, generation }) => {
                    if keeper.status(&name).is_none() {
                        continue; // not a credential this replica serves
                    }
                    if let Err(error) = keeper.reload(&name).await {
                        tracing::debug!(credential = %name, generation, error = %error, "could not reload a changed credential");
                    }
                }
                Ok(ChangeEvent::Resynced) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    for (name, error) in keeper.reload_all().await {
                        tracing::debug!(credential = %name, error = %error, "could not reload after a resubscription");
                    }
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    })
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
