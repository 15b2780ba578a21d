//! `authkeeper demo`: exactly-once refresh at work.
//!
//! Starts the mock IdP in-process (short access tokens, refresh-token rotation, reuse
//! detection that revokes the grant), stores one grant in a temporary encrypted store, and
//! runs many workers calling the protected API with tokens from one Keeper. Prints requests,
//! worker-visible 401s, token-endpoint calls and whether the grant survived.

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use authkeeper_core::config::CredentialSettings;
use authkeeper_core::grant::{ClientAuth, Endpoint, GrantKind, OAuthClientConfig};
use authkeeper_core::name::CredentialName;
use authkeeper_core::policy::RefreshPolicy;
use authkeeper_core::secret::ClientSecret;
use authkeeper_core::{
    Clock as _, Event, ExpiryDefaults, ExposeSecret, Keeper, Store, SystemClock, TokenResponse,
};
use authkeeper_mock::{Knobs, MockConfig, MockIdp};
use authkeeper_store::{KeySettings, SqliteStore};
use serde::Serialize;

use crate::cli::DemoArgs;
use crate::exit::DEMO_FAILED;

const NAME: &str = "demo";

/// What the demo measured.
#[derive(Debug, Serialize)]
struct Summary {
    workers: usize,
    duration_seconds: f64,
    access_token_ttl_seconds: f64,
    requests: u64,
    requests_per_second: f64,
    worker_visible_401s: u64,
    refresh_calls: u64,
    generations: u64,
    refreshes_per_expiry: f64,
    reuse_detected: u64,
    grant_survived: bool,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    unauthorized: AtomicU64,
    errors: AtomicU64,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.workers > 0, "--workers must be at least 1");
    anyhow::ensure!(
        args.ttl >= Duration::from_secs(1),
        "--ttl must be at least 1s"
    );
    let knobs = Knobs {
        access_ttl_ms: args.ttl.as_millis() as u64,
        rotate_refresh_tokens: true,
        reuse_revokes_grant: true,
        ..Knobs::default()
    };
    let idp = MockIdp::start(MockConfig::default().with_knobs(knobs)).await?;
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let (store, _) =
        SqliteStore::open_with_settings(dir.path().join("demo.db"), &KeySettings::from_env(None))?;
    let store: Arc<dyn Store> = Arc::new(store);
    let grant = serde_json::to_vec(&idp.mint_grant(None, None)?)?;
    let now = SystemClock::new().now();
    let tokens =
        TokenResponse::parse_tokens(&grant)?.into_token_set(now, &ExpiryDefaults::default());
    let name = CredentialName::new(NAME)?;
    authkeeper_core::store::import(&*store, &name, &tokens, now).await?;

    let generation = Arc::new(AtomicU64::new(1));
    let seen_generation = Arc::clone(&generation);
    let keeper = Keeper::builder(store.clone(), SystemClock::shared())
        .credential(name.clone(), settings(&idp)?)
        .event_sink(Arc::new(move |event: &Event<'_>| {
            if let Event::Refreshed { generation, .. } = event {
                seen_generation.fetch_max(*generation, Ordering::Relaxed);
            }
        }))
        .build()?;
    let heartbeat = keeper.spawn_heartbeat();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.workers)
        .build()?;
    let counters = Arc::new(Counters::default());
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + args.duration;
    let mut workers = Vec::with_capacity(args.workers);
    for _ in 0..args.workers {
        let (keeper, http, counters, api) = (
            keeper.clone(),
            http.clone(),
            Arc::clone(&counters),
            idp.api_url(),
        );
        let think = args.think;
        workers.push(tokio::spawn(async move {
            while tokio::time::Instant::now() < deadline {
                call_api(&keeper, &http, &api, &counters).await;
                if !think.is_zero() {
                    tokio::time::sleep(think).await;
                }
            }
        }));
    }
    let progress = tokio::spawn(show_progress(
        Arc::clone(&counters),
        Arc::clone(&generation),
        args.duration,
        args.json,
    ));
    for worker in workers {
        worker.await.context("a worker panicked")?;
    }
    progress.abort();
    heartbeat.abort();
    keeper.shutdown().await;
    let elapsed = started.elapsed().as_secs_f64();
    let stats = idp.stats();
    let stored_generation = store.load(&name).await?.map_or(0, |c| c.generation);
    let generations = stored_generation.saturating_sub(1);
    let grant_alive = stats.grants.iter().all(|g| g.alive) && stats.grants_revoked == 0;
    let requests = counters.requests.load(Ordering::Relaxed);
    let summary = Summary {
        workers: args.workers,
        duration_seconds: round2(elapsed),
        access_token_ttl_seconds: args.ttl.as_secs_f64(),
        requests,
        requests_per_second: round2(requests as f64 / elapsed),
        worker_visible_401s: counters.unauthorized.load(Ordering::Relaxed),
        refresh_calls: stats.refresh_calls,
        generations,
        refreshes_per_expiry: if generations == 0 {
            0.0
        } else {
            round2(stats.refresh_calls as f64 / generations as f64)
        },
        reuse_detected: stats.reuse_detected,
        grant_survived: grant_alive,
    };
    idp.shutdown().await?;
    print_summary(&summary, args.json)?;
    let errors = counters.errors.load(Ordering::Relaxed);
    if errors > 0 {
        eprintln!("authkeeper demo: {errors} request(s) failed without reaching the API");
    }
    if summary.worker_visible_401s > 0 || !summary.grant_survived || errors > 0 {
        return Ok(ExitCode::from(DEMO_FAILED));
    }
    Ok(ExitCode::SUCCESS)
}

fn settings(idp: &MockIdp) -> anyhow::Result<CredentialSettings> {
    Ok(CredentialSettings {
        client: OAuthClientConfig {
            endpoint: Endpoint::TokenUrl(idp.token_url().parse()?),
            client_id: "mock-client".into(),
            client_secret: Some(ClientSecret::from("mock-secret")),
            auth: ClientAuth::ClientSecretBasic,
            scopes: Vec::new(),
            audience: None,
            extra_params: Vec::new(),
            timeout: Duration::from_secs(5),
            proxy: None,
        },
        grant: GrantKind::RefreshToken,
        policy: RefreshPolicy::default(),
        expiry: ExpiryDefaults::default(),
        heartbeat: true,
    })
}

/// One worker request: token, API call, and on a 401 compare-and-refresh plus one retry.
async fn call_api(keeper: &Keeper, http: &reqwest::Client, api: &str, counters: &Counters) {
    let token = match keeper.token(NAME, Duration::ZERO).await {
        Ok(token) => token,
        Err(error) => {
            tracing::warn!(error = %error, "no token");
            counters.errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    match http
        .get(api)
        .bearer_auth(token.secret().expose_secret())
        .send()
        .await
    {
        Ok(response) => {
            counters.requests.fetch_add(1, Ordering::Relaxed);
            if response.status() == reqwest::StatusCode::UNAUTHORIZED {
                counters.unauthorized.fetch_add(1, Ordering::Relaxed);
                let _ = keeper.rejected(NAME, token.generation()).await;
            }
        }
        Err(_) => {
            counters.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn show_progress(
    counters: Arc<Counters>,
    generation: Arc<AtomicU64>,
    duration: Duration,
    quiet: bool,
) {
    let terminal = std::io::stderr().is_terminal();
    if quiet {
        return;
    }
    let started = Instant::now();
    let every = if terminal {
        Duration::from_millis(250)
    } else {
        Duration::from_secs(5)
    };
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let elapsed = started.elapsed().as_secs_f64();
        let requests = counters.requests.load(Ordering::Relaxed);
        let line = format!(
            "[{elapsed:5.1}s/{:.0}s] requests {requests} ({:.0}/s) · worker 401s {} · generation {}",
            duration.as_secs_f64(),
            requests as f64 / elapsed.max(0.001),
            counters.unauthorized.load(Ordering::Relaxed),
            generation.load(Ordering::Relaxed),
        );
        let mut stderr = std::io::stderr().lock();
        let _ = if terminal {
            write!(stderr, "\r{line}\x1b[K")
        } else {
            writeln!(stderr, "{line}")
        };
        let _ = stderr.flush();
    }
}

fn print_summary(summary: &Summary, json: bool) -> anyhow::Result<()> {
    if std::io::stderr().is_terminal() && !json {
        eprintln!();
    }
    if json {
        println!("{}", serde_json::to_string(summary)?);
        return Ok(());
    }
    println!(
        "{} workers · {:.1}s · access tokens of {:.0}s with rotation and reuse revocation",
        summary.workers, summary.duration_seconds, summary.access_token_ttl_seconds
    );
    println!(
        "  requests              {} ({:.0}/s)",
        summary.requests, summary.requests_per_second
    );
    println!("  worker-visible 401s   {}", summary.worker_visible_401s);
    println!(
        "  token-endpoint calls  {} for {} new generations",
        summary.refresh_calls, summary.generations
    );
    println!(
        "  refreshes per expiry  {:.2}",
        summary.refreshes_per_expiry
    );
    println!("  refresh-token reuse   {}", summary.reuse_detected);
    println!(
        "  grant survived        {}",
        if summary.grant_survived { "yes" } else { "NO" }
    );
    Ok(())
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}
