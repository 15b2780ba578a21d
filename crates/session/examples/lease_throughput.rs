//! Lease/release round trips per second through the session pool, on the embedded SQLite store
//! (durable: every write is fsynced) and in memory, with W concurrent workers over N sessions.
//!
//! `cargo run --release -p authkeeper-session --no-default-features --example lease_throughput -- [W] [N] [SECONDS]`

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use authkeeper_core::{MemoryStore, Store, SystemClock};
use authkeeper_session::{
    LeaseError, LeaseRequest, Outcome, SessionPool, SiteConfig, StateCookie, StorageState,
};
use authkeeper_store::{Keyring, SealKey, SqliteStore};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let workers: usize = args.next().map_or(Ok(32), |a| a.parse())?;
    let sessions: usize = args.next().map_or(Ok(10), |a| a.parse())?;
    let seconds: u64 = args.next().map_or(Ok(5), |a| a.parse())?;
    let dir = tempfile::tempdir()?;
    let sqlite = SqliteStore::open(
        dir.path().join("bench.db"),
        Keyring::new(SealKey::new(zeroize::Zeroizing::new([1u8; 32]))),
    )?;
    for (name, store) in [
        ("memory", Arc::new(MemoryStore::new()) as Arc<dyn Store>),
        (
            "sqlite (WAL, synchronous=FULL)",
            Arc::new(sqlite) as Arc<dyn Store>,
        ),
    ] {
        let rate = run(store, workers, sessions, Duration::from_secs(seconds)).await?;
        println!(
            "{name:<32} {workers} workers, {sessions} sessions: {rate:>8.0} lease+release round trips/s"
        );
    }
    Ok(())
}

async fn run(
    store: Arc<dyn Store>,
    workers: usize,
    sessions: usize,
    duration: Duration,
) -> Result<f64, Box<dyn std::error::Error>> {
    let accounts: Vec<String> = (0..sessions)
        .map(|i| format!("{{ name = \"a{i}\" }}"))
        .collect();
    let site: SiteConfig = toml::from_str(&format!(
        "origin = \"https://portal.example.com\"\naccounts = [{}]\n[pool]\nmax_usage = 0\n",
        accounts.join(", ")
    ))?;
    let pool = Arc::new(SessionPool::new(
        store,
        SystemClock::shared(),
        [("portal".parse().expect("site name"), site)],
    )?);
    for i in 0..sessions {
        // A realistic state: 10 cookies of ~100 bytes.
        let cookies = (0..10)
            .map(|c| StateCookie::new(format!("c{c}"), "v".repeat(100), "portal.example.com", "/"))
            .collect();
        let state = StorageState {
            cookies,
            ..StorageState::default()
        };
        pool.import("portal", &format!("a{i}"), state).await?;
    }
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let (pool, done, stop) = (pool.clone(), done.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let request = LeaseRequest {
                holder: format!("w{worker}"),
                ..LeaseRequest::default()
            };
            while !stop.load(Ordering::Relaxed) {
                match pool.lease("portal", &request).await {
                    Ok(lease) => {
                        if pool
                            .release(&lease.lease_id, Outcome::Ok, None)
                            .await
                            .is_ok()
                        {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        // The memory store never suspends: let the timer and the other tasks run.
                        tokio::task::yield_now().await;
                    }
                    Err(LeaseError::Exhausted { .. } | LeaseError::Contention(_)) => {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err(error) => {
                        eprintln!("lease failed: {error}");
                        return;
                    }
                }
            }
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await?;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}
