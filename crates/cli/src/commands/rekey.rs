//! `authkeeper rekey`: re-encrypt every stored secret with a new key.

use std::process::ExitCode;

use anyhow::Context as _;
use authkeeper_store::SealKey;
use authkeeper_store::key::parse_env_key;

use crate::cli::{GlobalArgs, RekeyArgs};
use crate::context::Context;

pub async fn run(global: &GlobalArgs, args: RekeyArgs) -> anyhow::Result<ExitCode> {
    let context = Context::load(global)?;
    let store = context.open_sqlite()?;
    let new_key = match &args.new_key_env {
        Some(var) => {
            let value = std::env::var(var)
                .with_context(|| format!("environment variable {var} is not set"))?;
            parse_env_key(&value).with_context(|| format!("{var} is not a valid key"))?
        }
        None => {
            anyhow::ensure!(
                store.key_file().is_some(),
                "the key comes from AUTHKEEPER_KEY: pass --new-key-env VAR with the new key, then switch AUTHKEEPER_KEY to it"
            );
            SealKey::generate()
        }
    };
    let old_id = store.key_id();
    let new_id = new_key.id();
    let records = store.rekey(new_key).await?;
    println!("re-sealed {records} record(s): key {old_id} -> {new_id}");
    match store.key_file() {
        Some(path) => println!("the key file {} now holds only the new key", path.display()),
        None => println!("now set AUTHKEEPER_KEY to the new key before the next command"),
    }
    Ok(ExitCode::SUCCESS)
}
