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
use authkeeper_core::{Clock as _, ExpiryDefaults, Store as _, SystemClock, TokenResponse};
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
    let settings = KeySettings::from_env(None);
    anyhow::ensure!(
        settings.env_key.is_some(),
        "set AUTHKEEPER_KEY (base64 of 32 bytes): the broker must open the store with the same key"
    );
    let (store, _) = SqliteStore::open_with_settings(&path, &settings)
        .with_context(|| format!("cannot open the store {}", path.display()))?;
    let clock = SystemClock::new();
    let defaults = ExpiryDefaults::default();
    let stdin = std::io::stdin().lock();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for (number, line) in stdin.lines().enumerate() {
        let line = line.context("cannot read stdin")?;
        if line.trim().is_empty() {
            continue;
        }
        let line: Line = serde_json::from_str(&line)
            .with_context(|| format!("line {}: not {{\"name\", \"response\"}}", number + 1))?;
        let body = serde_json::to_vec(&line.response)?;
        let response = TokenResponse::parse_tokens(&body)
            .with_context(|| format!("line {}: not a usable token response", number + 1))?;
        let now = clock.now();
        let tokens = response.into_token_set(now, &defaults);
        let generation = store
            .put(&line.name, &tokens, now)
            .await
            .with_context(|| format!("cannot store `{}`", line.name))?;
        serde_json::to_writer(
            &mut out,
            &serde_json::json!({
                "name": line.name,
                "generation": generation,
                "issued_at_ms": tokens.issued_at.as_millis(),
                "expires_at_ms": tokens.expires_at.as_millis(),
            }),
        )?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}
