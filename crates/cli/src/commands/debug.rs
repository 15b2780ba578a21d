//! Hidden tools for authkeeper's own tests (e.g. hold a refresh lease, then be killed).

use std::process::ExitCode;

use anyhow::bail;
use authkeeper_core::{Clock as _, LeaseAttempt, SystemClock};

use crate::cli::{DebugCommand, GlobalArgs};
use crate::context::Context;

pub async fn run(global: &GlobalArgs, command: DebugCommand) -> anyhow::Result<ExitCode> {
    match command {
        DebugCommand::HoldLease { name, hold, ttl } => {
            let context = Context::load(global)?;
            let store = context.open_store().await?;
            let owner = format!("debug-{}", std::process::id());
            let lease = match store
                .try_acquire_lease(&name, &owner, SystemClock::new().now(), ttl)
                .await?
            {
                LeaseAttempt::Acquired(lease) => lease,
                LeaseAttempt::Busy { held_until } => {
                    bail!("the lease of `{name}` is held until {held_until}")
                }
            };
            println!(
                "holding lease of `{name}` fence={} until {}",
                lease.fence, lease.expires_at
            );
            tokio::time::sleep(hold).await;
            store.release_lease(lease).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
