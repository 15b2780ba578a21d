//! Loading what every command needs: the configuration, the store and the Keeper.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use authkeeper_core::events::{LogSink, SharedSink};
use authkeeper_core::{Keeper, KeeperSettings, Store, SystemClock};
use authkeeper_store::{KeySettings, SqliteStore};

use crate::cli::GlobalArgs;
use crate::config::Config;

/// The loaded configuration and where it came from.
pub struct Context {
    /// The configuration.
    pub config: Config,
    /// The configuration file's path (it may not exist).
    pub config_path: PathBuf,
    /// The store file.
    pub store_path: PathBuf,
}

impl Context {
    /// Loads the configuration named by the global options.
    pub fn load(global: &GlobalArgs) -> anyhow::Result<Context> {
        let (config, config_path) = Config::load(global.config.as_deref())?;
        let store_path = config.store_path(&config_path, global.store.as_deref())?;
        Ok(Context {
            config,
            config_path,
            store_path,
        })
    }

    /// Opens the embedded store, creating it (and its key) on first use.
    pub fn open_store(&self) -> anyhow::Result<Arc<SqliteStore>> {
        if let Some(dir) = self
            .store_path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            create_private_dir(dir)?;
        }
        let settings = KeySettings::from_env(self.config.key_file(&self.config_path));
        let (store, origin) = SqliteStore::open_with_settings(&self.store_path, &settings)
            .with_context(|| format!("cannot open the store {}", self.store_path.display()))?;
        if origin.was_generated()
            && let Some(key_file) = origin.key_file()
        {
            eprintln!(
                "authkeeper: created a new encryption key in {} (mode 0600). Back it up: without it the store cannot be read.",
                key_file.display()
            );
        }
        Ok(Arc::new(store))
    }

    /// Builds a Keeper over `store` for the named credentials (all configured ones when
    /// `names` is empty).
    pub fn keeper(
        &self,
        store: Arc<dyn Store>,
        names: &[&str],
        settings: KeeperSettings,
    ) -> anyhow::Result<Keeper> {
        self.keeper_with_sinks(store, names, settings, Vec::new())
    }

    /// Like [`Context::keeper`], also reporting events to `sinks` (e.g. the broker's metrics).
    pub fn keeper_with_sinks(
        &self,
        store: Arc<dyn Store>,
        names: &[&str],
        settings: KeeperSettings,
        sinks: Vec<SharedSink>,
    ) -> anyhow::Result<Keeper> {
        let mut builder = Keeper::builder(store, SystemClock::shared())
            .settings(settings)
            .event_sink(Arc::new(LogSink));
        for sink in sinks {
            builder = builder.event_sink(sink);
        }
        for (name, credential) in &self.config.credentials {
            if names.is_empty() || names.contains(&name.as_str()) {
                builder = builder.credential(name, credential.resolve(name)?);
            }
        }
        for name in names {
            if !self.config.credentials.contains_key(*name) {
                anyhow::bail!(authkeeper_core::KeeperError::UnknownCredential(
                    (*name).to_owned()
                ));
            }
        }
        Ok(builder.build()?)
    }
}

/// Creates a directory readable only by its owner (when it does not exist yet).
fn create_private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    if dir.exists() {
        return Ok(());
    }
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}
