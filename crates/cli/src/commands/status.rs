//! `authkeeper status`: every credential's state, never a secret.

use std::collections::BTreeMap;
use std::process::ExitCode;

use authkeeper_core::CredentialSummary;
use serde_json::json;

use super::seconds_until;
use authkeeper_core::name::CredentialName;

use crate::cli::{GlobalArgs, StatusArgs};
use crate::context::Context;

pub async fn run(global: &GlobalArgs, args: StatusArgs) -> anyhow::Result<ExitCode> {
    let context = Context::load(global)?;
    let store = context.open_store().await?;
    let mut rows: BTreeMap<CredentialName, Option<CredentialSummary>> = context
        .config
        .credentials
        .keys()
        .map(|name| (name.clone(), None))
        .collect();
    for summary in store.list().await? {
        rows.insert(summary.name.clone(), Some(summary));
    }
    if args.json {
        let list: Vec<_> = rows
            .iter()
            .map(|(name, summary)| match summary {
                Some(s) => json!({
                    "name": name,
                    "configured": context.config.credentials.contains_key(name.as_str()),
                    "state": s.status.state,
                    "generation": s.generation,
                    "expires_at": s.expires_at.to_rfc3339(),
                    "expires_in_seconds": seconds_until(s.expires_at).round() as i64,
                    "last_refresh_at": s.status.last_refresh_at.map(|t| t.to_rfc3339()),
                    "failures": s.status.failures,
                    "reason": s.status.reason,
                    "next_attempt_at": s.status.next_attempt_at.map(|t| t.to_rfc3339()),
                }),
                None => json!({ "name": name, "configured": true, "state": "not_stored" }),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!(
            "no credentials: configure one in {} and `authkeeper import` its tokens",
            context.config_path.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<20} {:<13} {:>11} {:>10} {:<24} {:>8}  REASON",
        "NAME", "STATE", "EXPIRES IN", "GENERATION", "LAST REFRESH", "FAILURES"
    );
    for (name, summary) in rows {
        match summary {
            Some(s) => println!(
                "{:<20} {:<13} {:>11} {:>10} {:<24} {:>8}  {}",
                name,
                s.status.state.as_str(),
                format_seconds(seconds_until(s.expires_at)),
                s.generation,
                s.status
                    .last_refresh_at
                    .map_or_else(|| "-".to_owned(), |t| t.to_rfc3339()),
                s.status.failures,
                s.status.reason.as_deref().unwrap_or("-"),
            ),
            None => println!(
                "{name:<20} {:<13} {:>11} {:>10} {:<24} {:>8}  import or log in first",
                "not_stored", "-", "-", "-", "-"
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn format_seconds(seconds: f64) -> String {
    if seconds <= 0.0 {
        return "expired".to_owned();
    }
    let whole = seconds.round() as u64;
    match whole {
        0..=119 => format!("{whole}s"),
        120..=7199 => format!("{}m", whole / 60),
        _ => format!("{}h{:02}m", whole / 3600, (whole % 3600) / 60),
    }
}
