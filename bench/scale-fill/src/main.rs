//! `authkeeper-scale-fill STORE`: the fast path of `bench/scale` for filling an embedded store
//! with many credentials.
//!
//! Reads JSON lines `{"name": "...", "response": {token response}}` from stdin and stores each
//! token response as the named credential's current token set, exactly as `authkeeper import`
//! does (same parser, same expiry rules, same sealing), but in one process instead of one per
//! credential. The key comes from `AUTHKEEPER_KEY`. For every credential it prints one JSON
//! line `{"name", "generation", "issued_at_ms", "expires_at_ms"}` so the caller knows each first
//! generation's refresh schedule.

use std::io::{BufRead as _, Write as _};
use std::path::PathBuf;

use anyhow::Context as _;
use authkeeper_core::{Clock as _, CredentialName, ExpiryDefaults, SystemClock, TokenResponse};
use authkeeper_store::{KeySettings, SqliteStore};
use serde::Deserialize;

/// One input line.
#[derive(Deserialize)]
struct Line {
    /// The credential's name.
    name: String,
    /// The token response, as a token endpoint (or `POST /admin/grants`) answered it.
    response: serde_json::Value,
}

fn main() -> anyhow::Result<()> {
    let path: PathBuf = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .context("usage: authkeeper-scale-fill STORE < lines.jsonl")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a Tokio runtime")?;
    runtime.block_on(fill(path))
}

async fn fill(path: PathBuf) -> anyhow::Result<()> {
    /// Stores in flight at once: the store's group commit makes them share fsyncs.
    const CONCURRENCY: usize = 64;
    let settings = KeySettings::from_env(None);
    anyhow::ensure!(
        settings.env_key.is_some(),
        "set AUTHKEEPER_KEY (base64 of 32 bytes): the broker must open the store with the same key"
    );
    let (store, _) = SqliteStore::open_with_settings(&path, &settings)
        .with_context(|| format!("cannot open the store {}", path.display()))?;
    let store = std::sync::Arc::new(store);
    let clock = SystemClock::new();
    let defaults = ExpiryDefaults::default();
    let stdin = std::io::stdin().lock();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut pending = tokio::task::JoinSet::new();
    let mut lines = stdin.lines().enumerate();
    loop {
        while pending.len() < CONCURRENCY {
            let Some((number, line)) = lines.next() else {
                break;
            };
            let line = line.context("cannot read stdin")?;
            if line.trim().is_empty() {
                continue;
            }
            let line: Line = serde_json::from_str(&line)
                .with_context(|| format!("line {}: not {{\"name\", \"response\"}}", number + 1))?;
            let name = CredentialName::new(&line.name)
                .with_context(|| format!("line {}: invalid name", number + 1))?;
            let body = serde_json::to_vec(&line.response)?;
            let response = TokenResponse::parse_tokens(&body)
                .with_context(|| format!("line {}: not a usable token response", number + 1))?;
            let now = clock.now();
            let tokens = response.into_token_set(now, &defaults);
            let store = std::sync::Arc::clone(&store);
            pending.spawn(async move {
                let generation = authkeeper_core::store::import(&*store, &name, &tokens, now)
                    .await
                    .with_context(|| format!("cannot store `{name}`"))?;
                Ok::<_, anyhow::Error>(serde_json::json!({
                    "name": name.as_str(),
                    "generation": generation,
                    "issued_at_ms": tokens.issued_at.as_millis(),
                    "expires_at_ms": tokens.expires_at.as_millis(),
                }))
            });
        }
        let Some(done) = pending.join_next().await else {
            break;
        };
        let stored = done.context("a store task failed")??;
        serde_json::to_writer(&mut out, &stored)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}
