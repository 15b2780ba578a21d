//! `authkeeper sessions ...`: browser sessions in the configured store, without a broker.
//!
//! Storage states are secrets: they are only written where asked (stdout on `export`, files
//! created with mode 0600), never logged.

use std::io::{Read as _, Write as _};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use authkeeper_session::pool::LeaseRequest;
use authkeeper_session::{Outcome, SessionPool, SessionSummary, StorageState};
use serde_json::json;

use crate::cli::{GlobalArgs, OutcomeArg, SessionsCommand, StateFormat};
use crate::context::Context;

pub async fn run(global: &GlobalArgs, command: SessionsCommand) -> anyhow::Result<ExitCode> {
    let context = Context::load(global)?;
    let store = context.open_store().await?;
    let pool = context.session_pool(store)?.context(
        "no [sites.NAME] tables in the configuration: browser sessions need at least one site",
    )?;
    match command {
        SessionsCommand::List { site, json } => list(&pool, site.as_deref(), json).await,
        SessionsCommand::Import {
            site,
            account,
            file,
            format,
        } => {
            let bytes = read_input(file.as_deref())?;
            let state = parse_state(&bytes, format)?;
            let summary = pool.import(&site, &account, state).await?;
            println!(
                "imported {} cookies and {} origins as session {} of {site}",
                summary.cookies, summary.origins, summary.id
            );
            Ok(ExitCode::SUCCESS)
        }
        SessionsCommand::Export {
            site,
            session,
            format,
            out,
        } => {
            let state = pool.export(&site, &session).await?;
            let text = match format {
                StateFormat::CookiesTxt => {
                    authkeeper_session::cookies_txt::to_cookies_txt(&state.cookies)
                }
                StateFormat::Playwright | StateFormat::Auto => state.to_json(),
            };
            match out {
                Some(path) => write_private(&path, text.as_bytes())?,
                None => std::io::stdout().write_all(text.as_bytes())?,
            }
            Ok(ExitCode::SUCCESS)
        }
        SessionsCommand::Login {
            site,
            account,
            json,
        } => {
            let summary = pool.login(&site, &account, "cli").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                println!(
                    "logged in: session {} of {site} ({} cookies, {} origins)",
                    summary.id, summary.cookies, summary.origins
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        SessionsCommand::Lease {
            site,
            account,
            ttl,
            holder,
            state_out,
            json,
        } => {
            let lease = pool
                .lease(
                    &site,
                    &LeaseRequest {
                        account,
                        lease_ttl: ttl,
                        holder,
                    },
                )
                .await?;
            if let Some(path) = &state_out {
                write_private(path, lease.storage_state.to_json().as_bytes())?;
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&lease)?);
            } else {
                println!("{}", lease.lease_id);
                eprintln!(
                    "session {} ({}) leased until {}",
                    lease.session_id,
                    lease.account,
                    lease.lease_expires_at.to_rfc3339()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        SessionsCommand::Heartbeat { lease_id, ttl } => {
            let expires_at = pool.heartbeat(&lease_id, ttl).await?;
            println!("{}", expires_at.to_rfc3339());
            Ok(ExitCode::SUCCESS)
        }
        SessionsCommand::Release {
            lease_id,
            outcome,
            state,
            json,
        } => {
            let state = match state {
                Some(path) => Some(parse_state(
                    &std::fs::read(&path)
                        .with_context(|| format!("cannot read {}", path.display()))?,
                    StateFormat::Playwright,
                )?),
                None => None,
            };
            let summary = pool.release(&lease_id, outcome.into(), state).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                println!(
                    "released session {}: {} (error score {}, used {} times)",
                    summary.session_id,
                    summary.state.as_str(),
                    summary.error_score,
                    summary.usage_count
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        SessionsCommand::Retire {
            site,
            session,
            reason,
        } => {
            pool.retire(&site, &session, &reason).await?;
            println!("retired session {session} of {site}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

impl From<OutcomeArg> for Outcome {
    fn from(outcome: OutcomeArg) -> Outcome {
        match outcome {
            OutcomeArg::Ok => Outcome::Ok,
            OutcomeArg::Blocked => Outcome::Blocked,
            OutcomeArg::LoggedOut => Outcome::LoggedOut,
            OutcomeArg::Error => Outcome::Error,
        }
    }
}

async fn list(pool: &SessionPool, site: Option<&str>, as_json: bool) -> anyhow::Result<ExitCode> {
    let sessions = pool.list(site).await?;
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "sessions": sessions }))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    if sessions.is_empty() {
        println!("no sessions");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<16} {:<20} {:<12} {:>6} {:>6} {:>8}  LEASED BY",
        "SITE", "SESSION", "STATE", "USES", "SCORE", "COOKIES"
    );
    for session in &sessions {
        print_row(session);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_row(session: &SessionSummary) {
    let leased = session.leased_by.as_deref().unwrap_or("-");
    let state = match &session.reason {
        Some(reason) if session.state.as_str() != "active" => {
            format!("{} ({reason})", session.state.as_str())
        }
        _ => session.state.as_str().to_owned(),
    };
    println!(
        "{:<16} {:<20} {:<12} {:>6} {:>6.1} {:>8}  {leased}",
        session.site, session.id, state, session.usage_count, session.error_score, session.cookies
    );
}

/// Reads a file, or stdin for `-`/nothing (capped at 16 MiB).
fn read_input(file: Option<&Path>) -> anyhow::Result<Vec<u8>> {
    const LIMIT: u64 = 16 << 20;
    let mut bytes = Vec::new();
    match file.filter(|path| path.as_os_str() != "-") {
        Some(path) => {
            std::fs::File::open(path)
                .with_context(|| format!("cannot read {}", path.display()))?
                .take(LIMIT + 1)
                .read_to_end(&mut bytes)?;
        }
        None => {
            std::io::stdin().take(LIMIT + 1).read_to_end(&mut bytes)?;
        }
    }
    anyhow::ensure!(
        bytes.len() as u64 <= LIMIT,
        "the storage state is larger than 16 MiB"
    );
    Ok(bytes)
}

/// Parses a Playwright storageState or a cookies.txt.
fn parse_state(bytes: &[u8], format: StateFormat) -> anyhow::Result<StorageState> {
    let looks_json = bytes
        .iter()
        .find(|byte| !byte.is_ascii_whitespace())
        .is_some_and(|byte| *byte == b'{');
    let as_cookies_txt = match format {
        StateFormat::CookiesTxt => true,
        StateFormat::Playwright => false,
        StateFormat::Auto => !looks_json,
    };
    if as_cookies_txt {
        let text = std::str::from_utf8(bytes).context("a cookies.txt must be UTF-8 text")?;
        let cookies = authkeeper_session::cookies_txt::parse_cookies_txt(text)
            .context("invalid cookies.txt")?;
        Ok(StorageState {
            cookies,
            ..StorageState::default()
        })
    } else {
        StorageState::from_json(bytes).context("invalid storage state")
    }
}

/// Writes `bytes` to a new file only the user can read (replacing any file there).
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}
