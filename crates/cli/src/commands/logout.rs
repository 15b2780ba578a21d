//! `authkeeper logout NAME`: revoke the credential's tokens at the provider (RFC 7009) when it
//! has a revocation endpoint, then delete them from the store.
//!
//! A failed revocation deletes nothing, so it can be retried; `--local-only` skips it.

use std::process::ExitCode;

use anyhow::Context as _;
use authkeeper_core::SystemClock;
use authkeeper_core::grant::OAuthClient;
use authkeeper_login::{LoginClient, LoginSettings, TokenTypeHint};

use crate::cli::GlobalArgs;
use crate::context::Context;

/// `authkeeper logout`.
#[derive(Debug, clap::Args)]
pub struct LogoutArgs {
    /// The credential.
    pub name: authkeeper_core::name::CredentialName,
    /// Only delete the stored tokens; do not revoke them at the provider.
    #[arg(long)]
    pub local_only: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What happened at the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Revocation {
    /// Revoked (the listed token kinds).
    Revoked,
    /// The provider has no revocation endpoint.
    Unsupported,
    /// `--local-only`.
    Skipped,
    /// Nothing was stored.
    NothingStored,
}

impl Revocation {
    fn as_str(self) -> &'static str {
        match self {
            Revocation::Revoked => "revoked",
            Revocation::Unsupported => "unsupported",
            Revocation::Skipped => "skipped",
            Revocation::NothingStored => "nothing_stored",
        }
    }
}

pub async fn run(global: &GlobalArgs, args: LogoutArgs) -> anyhow::Result<ExitCode> {
    let context = Context::load(global)?;
    let store = context.open_store().await?;
    let stored = store.load(&args.name).await?;
    let mut revoked: Vec<&'static str> = Vec::new();
    let revocation = match &stored {
        None => Revocation::NothingStored,
        Some(_) if args.local_only => Revocation::Skipped,
        Some(stored) => {
            let credential = context.config.credentials.get(&args.name).with_context(|| {
                format!(
                    "`{}` is not configured, so its tokens cannot be revoked; use --local-only to delete them anyway",
                    args.name
                )
            })?;
            let settings = credential.resolve(&args.name)?;
            let login = LoginSettings::from_config(&args.name, credential)?;
            let http = authkeeper_core::egress::http_client(settings.client.proxy.as_ref())?;
            let client = LoginClient::new(
                OAuthClient::new(settings.client, http),
                SystemClock::shared(),
                login.endpoints,
            );
            let retry_hint =
                || "nothing was deleted; try again, or use --local-only to delete without revoking";
            if client
                .revocation_endpoint()
                .await
                .with_context(retry_hint)?
                .is_none()
            {
                Revocation::Unsupported
            } else {
                // The refresh token first: revoking it ends the grant at most providers.
                let tokens = &stored.tokens;
                if let Some(refresh) = &tokens.refresh_token {
                    client
                        .revoke(refresh, TokenTypeHint::RefreshToken)
                        .await
                        .with_context(retry_hint)?;
                    revoked.push(TokenTypeHint::RefreshToken.as_str());
                }
                client
                    .revoke(&tokens.access_token, TokenTypeHint::AccessToken)
                    .await
                    .with_context(retry_hint)?;
                revoked.push(TokenTypeHint::AccessToken.as_str());
                Revocation::Revoked
            }
        }
    };
    let deleted = match stored {
        Some(_) => store.delete(&args.name).await?,
        None => false,
    };
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "name": args.name,
                "revocation": revocation.as_str(),
                "revoked": revoked,
                "deleted": deleted,
            })
        );
    } else {
        let what = match revocation {
            Revocation::NothingStored => {
                format!("nothing is stored for `{}`; nothing to do", args.name)
            }
            Revocation::Revoked => format!(
                "revoked the {} of `{}` at the provider and deleted the stored tokens",
                revoked.join(" and ").replace('_', " "),
                args.name
            ),
            Revocation::Unsupported => format!(
                "the provider of `{}` has no revocation endpoint: deleted the stored tokens only (they stay valid at the provider until they expire)",
                args.name
            ),
            Revocation::Skipped => format!(
                "deleted the stored tokens of `{}` without revoking them (--local-only)",
                args.name
            ),
        };
        println!("{what}");
    }
    Ok(ExitCode::SUCCESS)
}
