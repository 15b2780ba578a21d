//! `authkeeper token NAME`: print a valid access token.
//!
//! Many processes may run this at once on one store: the store's refresh lease makes exactly
//! one of them call the token endpoint; the others wait for its durable write and print the
//! new token. The refresh runs in the foreground, so the process never exits between the
//! provider's answer and the write.

use std::io::Write as _;
use std::process::ExitCode;

use authkeeper_core::{ExposeSecret, KeeperSettings};

use crate::cli::{GlobalArgs, TokenArgs};
use crate::context::Context;

pub async fn run(global: &GlobalArgs, args: TokenArgs) -> anyhow::Result<ExitCode> {
    let context = Context::load(global)?;
    let store = context.open_store().await?;
    let settings = KeeperSettings {
        background_refresh: false,
        ..KeeperSettings::default()
    };
    let keeper = context.keeper(store, &[&args.name], settings)?;
    let token = keeper.token(&args.name, args.min_ttl).await?;
    let mut stdout = std::io::stdout().lock();
    if args.json {
        let body = serde_json::json!({
            "access_token": token.secret().expose_secret(),
            "token_type": token.token_type(),
            "expires_at": token.expires_at().to_rfc3339(),
            "generation": token.generation(),
        });
        writeln!(stdout, "{body}")?;
    } else {
        writeln!(stdout, "{}", token.secret().expose_secret())?;
    }
    stdout.flush()?;
    Ok(ExitCode::SUCCESS)
}
