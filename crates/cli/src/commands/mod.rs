//! One module per command.

mod credentials;
mod debug;
#[cfg(feature = "demo")]
mod demo;
mod exec;
mod import;
mod keys;
pub mod login;
pub mod logout;
mod mcp;
#[cfg(feature = "demo")]
mod mock_idp;
mod rekey;
mod serve;
mod sessions;
mod status;
mod token;

use std::process::ExitCode;

use crate::cli::{Cli, Command};

/// Runs the parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Token(args) => token::run(&cli.global, args).await,
        Command::Import(args) => import::run(&cli.global, args).await,
        Command::Status(args) => status::run(&cli.global, args).await,
        Command::Rekey(args) => rekey::run(&cli.global, args).await,
        #[cfg(feature = "demo")]
        Command::MockIdp(args) => mock_idp::run(args).await,
        #[cfg(feature = "demo")]
        Command::Demo(args) => demo::run(args).await,
        Command::Exec(args) => exec::run(&cli.global, args).await,
        Command::Serve(args) => serve::run(&cli.global, args).await,
        Command::Keys(command) => keys::run(command),
        Command::Credentials(command) => credentials::run(command).await,
        Command::Login(args) => login::run(&cli.global, args).await,
        Command::Logout(args) => logout::run(&cli.global, args).await,
        Command::Sessions(command) => sessions::run(&cli.global, command).await,
        Command::Mcp(args) => mcp::run(args).await,
        Command::Debug(command) => debug::run(&cli.global, command).await,
    }
}

/// Seconds from now until `at` (negative when past), for display.
pub fn seconds_until(at: authkeeper_core::Timestamp) -> f64 {
    use authkeeper_core::Clock as _;
    at.millis_since(authkeeper_core::SystemClock::new().now()) as f64 / 1000.0
}
