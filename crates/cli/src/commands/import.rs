//! `authkeeper import NAME`: store a token response read from stdin.

use std::io::Read as _;
use std::process::ExitCode;

use anyhow::Context as _;
use authkeeper_core::token::TokenResponseError;
use authkeeper_core::{Clock as _, ExpiryDefaults, SystemClock, TokenResponse};
use secrecy::zeroize::Zeroizing;

use crate::cli::{GlobalArgs, ImportArgs};
use crate::context::Context;

/// Largest accepted input (1 MiB).
const MAX_INPUT: u64 = 1 << 20;

pub async fn run(global: &GlobalArgs, args: ImportArgs) -> anyhow::Result<ExitCode> {
    let context = Context::load(global)?;
    let expiry = match context.config.credentials.get(&args.name) {
        Some(credential) => ExpiryDefaults {
            default_lifetime: credential.default_ttl,
        },
        None => {
            eprintln!(
                "authkeeper: note: `{}` is not in {}; it is stored but cannot be refreshed until configured",
                args.name,
                context.config_path.display()
            );
            ExpiryDefaults::default()
        }
    };
    let mut input = Zeroizing::new(Vec::new());
    std::io::stdin()
        .take(MAX_INPUT + 1)
        .read_to_end(&mut input)
        .context("cannot read stdin")?;
    anyhow::ensure!(input.len() as u64 <= MAX_INPUT, "input larger than 1 MiB");
    let response = TokenResponse::parse_tokens(&input).map_err(|error| match error {
        // Its start could be a bare token someone piped in: never echo it.
        TokenResponseError::NotJson { .. } => anyhow::anyhow!(
            "stdin is not a usable token response: not JSON or a form-encoded body ({} bytes)",
            input.len()
        ),
        other => anyhow::Error::new(other).context("stdin is not a usable token response"),
    })?;
    let now = SystemClock::new().now();
    let tokens = response.into_token_set(now, &expiry);
    let has_refresh = tokens.refresh_token.is_some();
    let expires_at = tokens.expires_at;
    let store = context.open_store().await?;
    let generation = authkeeper_core::store::import(&*store, &args.name, &tokens, now).await?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "name": args.name,
                "generation": generation,
                "expires_at": expires_at.to_rfc3339(),
                "has_refresh_token": has_refresh,
            })
        );
    } else {
        println!(
            "stored `{}` as generation {generation}: expires {}, {}",
            args.name,
            expires_at,
            if has_refresh {
                "with a refresh token"
            } else {
                "without a refresh token"
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}
