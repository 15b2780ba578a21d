//! The `authkeeper` command: keeps OAuth credentials alive for long-running automations.
//!
//! `main` only parses arguments and maps the outcome to an exit code; each command lives in
//! its own module under `commands/`.

mod cli;
mod commands;
mod config;
mod context;
mod exit;
mod logging;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc: returns freed memory to the system and fragments less than the system allocator
/// when a broker holds many credentials (see docs/benchmarks.md, bench/scale).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    logging::init(&cli.global, cli.command.default_log_level());
    authkeeper_store::key::allow_insecure_key_files(cli.global.allow_insecure_key_file);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("authkeeper: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("authkeeper: {error:#}");
            exit::code_for(&error)
        }
    }
}
