//! Refresh capacity of the embedded store: how many refreshes per second its writes sustain,
//! with the token endpoint taken out (an instant provider), so the store is the only cost.
//!
//! Each refresh is what the Keeper does under load: `begin_refresh` (lease + read + in-flight
//! marker) and `finish_refresh` (fenced write + release), with `synchronous=FULL`. Also run:
//! the same work as five separate calls (`try_acquire_lease`, `load`, `mark_in_flight`, `put`,
//! `release_lease`), as the Keeper did before.
//!
//!   cargo bench -p authkeeper-store --bench refresh_capacity -- [--credentials N] [--tasks N] [--seconds S]
//!
//! Prints one line per mode: refreshes/s and p50/p99 latency of one refresh.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use authkeeper_core::store::{LeaseAttempt, Precondition, RefreshStart};
use authkeeper_core::{CredentialName, CredentialStore, Timestamp, TokenSet, WriteOutcome};
use authkeeper_store::SqliteStore;
use authkeeper_store::seal::{Keyring, SealKey};

struct Options {
    credentials: usize,
    tasks: usize,
    seconds: u64,
}

fn options() -> Options {
    let mut options = Options {
        credentials: 10_000,
        tasks: 64,
        seconds: 10,
    };
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        let value = args.get(i + 1).and_then(|v| v.parse::<u64>().ok());
        match (args[i].as_str(), value) {
            ("--credentials", Some(v)) => options.credentials = v as usize,
            ("--tasks", Some(v)) => options.tasks = v as usize,
            ("--seconds", Some(v)) => options.seconds = v,
            ("--smoke", _) => {
                options.credentials = 500;
                options.seconds = 2;
                i += 1;
                continue;
            }
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    options
}

fn tokens(now: Timestamp, n: u64) -> TokenSet {
    TokenSet {
        access_token: authkeeper_core::secret::AccessToken::from(format!("{n:043}")),
        token_type: "Bearer".into(),
        refresh_token: Some(authkeeper_core::secret::RefreshToken::from(format!(
            "r{n:042}"
        ))),
        id_token: None,
        scope: None,
        issued_at: now,
        expires_at: now + Duration::from_secs(300),
        refresh_token_expires_at: None,
        extra: Default::default(),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    TwoWrites,
    FiveCalls,
}

async fn refresh_once(store: &SqliteStore, name: &CredentialName, owner: &str, mode: Mode) -> bool {
    let now = Timestamp::from_system_time(std::time::SystemTime::now());
    let ttl = Duration::from_secs(30);
    match mode {
        Mode::TwoWrites => {
            let Ok(RefreshStart::Acquired { lease, stored, .. }) =
                store.begin_refresh(name, owner, now, ttl, true).await
            else {
                return false;
            };
            let generation = stored.map_or(0, |s| s.generation);
            matches!(
                store
                    .finish_refresh(lease, generation, &tokens(now, generation + 1), now)
                    .await,
                Ok(WriteOutcome::Written { .. })
            )
        }
        Mode::FiveCalls => {
            let Ok(LeaseAttempt::Acquired(lease)) =
                store.try_acquire_lease(name, owner, now, ttl).await
            else {
                return false;
            };
            let generation = match store.load(name).await {
                Ok(Some(stored)) => stored.generation,
                _ => 0,
            };
            let _ = store.mark_in_flight(&lease, generation).await;
            let precondition = Precondition::Fenced {
                generation,
                fence: lease.fence,
            };
            let written = store
                .put(name, precondition, &tokens(now, generation + 1), now)
                .await;
            let _ = store.release_lease(lease).await;
            matches!(written, Ok(WriteOutcome::Written { .. }))
        }
    }
}

async fn run(store: &SqliteStore, names: &Arc<Vec<CredentialName>>, options: &Options, mode: Mode) {
    let next = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(options.seconds);
    let mut tasks = Vec::new();
    for task in 0..options.tasks {
        let (store, names, next) = (store.clone(), Arc::clone(names), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            let owner = format!("bench-{task}");
            let mut latencies = Vec::new();
            let mut failed = 0u64;
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize % names.len();
                let started = Instant::now();
                if refresh_once(&store, &names[i], &owner, mode).await {
                    latencies.push(started.elapsed());
                } else {
                    failed += 1;
                }
            }
            (latencies, failed)
        }));
    }
    let mut latencies = Vec::new();
    let mut failed = 0;
    for task in tasks {
        if let Ok((mut l, f)) = task.await {
            latencies.append(&mut l);
            failed += f;
        }
    }
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let label = match mode {
        Mode::TwoWrites => "begin_refresh + finish_refresh (group commit)",
        Mode::FiveCalls => "five calls (lease, load, mark, put, release)",
    };
    println!(
        "{label}: {} tasks, {} credentials: {:.0} refreshes/s, latency p50 {:.2} ms p99 {:.2} ms, {failed} not written",
        options.tasks,
        names.len(),
        latencies.len() as f64 / options.seconds as f64,
        pct(0.5),
        pct(0.99),
    );
}

#[tokio::main]
async fn main() {
    let options = options();
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(error) => {
            eprintln!("no temporary directory: {error}");
            std::process::exit(1);
        }
    };
    let store = match SqliteStore::open(
        dir.path().join("store.db"),
        Keyring::new(SealKey::generate()),
    ) {
        Ok(store) => store,
        Err(error) => {
            eprintln!("cannot open the store: {error}");
            std::process::exit(1);
        }
    };
    let now = Timestamp::from_system_time(std::time::SystemTime::now());
    let mut names = Vec::with_capacity(options.credentials);
    for i in 0..options.credentials {
        let Ok(name) = CredentialName::new(format!("c{i:07}")) else {
            continue;
        };
        if let Err(error) = store
            .put(&name, Precondition::None, &tokens(now, 0), now)
            .await
        {
            eprintln!("cannot store {name}: {error}");
            std::process::exit(1);
        }
        names.push(name);
    }
    let names = Arc::new(names);
    run(&store, &names, &options, Mode::TwoWrites).await;
    run(&store, &names, &options, Mode::FiveCalls).await;
}
