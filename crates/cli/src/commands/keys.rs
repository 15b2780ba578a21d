//! `authkeeper keys new NAME`: print a fresh broker client key once, plus the `[[clients]]`
//! entry (holding only the key's SHA-256) to paste into `authkeeper.toml`.

use std::io::Write as _;
use std::process::ExitCode;

use authkeeper_server::NewKey;

use crate::cli::KeysCommand;

pub fn run(command: KeysCommand) -> anyhow::Result<ExitCode> {
    match command {
        KeysCommand::New { name } => {
            if !authkeeper_server::auth::is_valid_client_name(&name) {
                return Err(crate::exit::ConfigurationError(format!(
                    "invalid client name {:?}: use 1-64 letters, digits, `_` or `-` (no `.`: a client's own checkpoint tasks are NAME and NAME.anything)",
                    name.chars().take(64).collect::<String>()
                ))
                .into());
            }
            let key = NewKey::generate();
            let mut stdout = std::io::stdout().lock();
            writeln!(
                stdout,
                "# Client key for {name:?}: shown only now, give it to the client and store it nowhere else.\n# AUTHKEEPER_BROKER_KEY={}\n",
                key.expose_key()
            )?;
            writeln!(
                stdout,
                "# Paste into authkeeper.toml and list the credentials this client may use (\"*\" = all):"
            )?;
            write!(stdout, "{}", key.config_snippet(&name))?;
            stdout.flush()?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
