//! Loading what every command needs: the configuration, the store (embedded SQLite or Redis)
//! and the Keeper.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use authkeeper_core::events::{LogSink, SharedSink};
use authkeeper_core::secret_ref::SecretRef;
use authkeeper_core::{Keeper, KeeperSettings, Store, SystemClock};
use authkeeper_login::process::ChildEnv;
use authkeeper_store::{
    KeySettings, Keyring, RedisOptions, RedisStore, RedisUrl, SqliteStore, key::parse_env_key,
    key::read_key_file,
};
use secrecy::ExposeSecret as _;

use crate::cli::GlobalArgs;
use crate::config::Config;

/// An opened store of either kind.
#[derive(Debug, Clone)]
pub enum OpenedStore {
    /// The embedded store.
    Sqlite(Arc<SqliteStore>),
    /// The shared Redis store.
    Redis(RedisStore),
}

impl OpenedStore {
    /// The store behind the [`Store`] trait.
    pub fn shared(&self) -> Arc<dyn Store> {
        match self {
            OpenedStore::Sqlite(store) => Arc::clone(store) as Arc<dyn Store>,
            OpenedStore::Redis(store) => Arc::new(store.clone()),
        }
    }
}

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

    /// Opens the configured store (either kind) behind the [`Store`] trait.
    pub async fn open_store(&self) -> anyhow::Result<Arc<dyn Store>> {
        Ok(self.open_backend().await?.shared())
    }

    /// Opens the configured store, keeping its kind (the broker needs Redis' change events
    /// and health).
    pub async fn open_backend(&self) -> anyhow::Result<OpenedStore> {
        if self.config.is_redis() {
            Ok(OpenedStore::Redis(self.open_redis().await?))
        } else {
            Ok(OpenedStore::Sqlite(self.open_sqlite()?))
        }
    }

    /// Connects to the Redis store. The key must come from `AUTHKEEPER_KEY` or `key_file`:
    /// every replica needs the same key, so none is generated.
    async fn open_redis(&self) -> anyhow::Result<RedisStore> {
        let keyring = match std::env::var("AUTHKEEPER_KEY") {
            Ok(value) if !value.trim().is_empty() => {
                Keyring::new(parse_env_key(&value).context("AUTHKEEPER_KEY is not a valid key")?)
            }
            _ => match self.config.key_file(&self.config_path) {
                Some(path) => read_key_file(&path)
                    .with_context(|| format!("cannot read the key file {}", path.display()))?,
                None => anyhow::bail!(
                    "the Redis store needs the encryption key every replica shares: set AUTHKEEPER_KEY (base64 of 32 bytes) or [store] key_file; no key is generated for Redis"
                ),
            },
        };
        let reference = self
            .config
            .store
            .url
            .as_deref()
            .context("[store] kind = \"redis\" needs url")?;
        let url = SecretRef::parse(reference)
            .resolve()
            .context("cannot read the Redis URL")?;
        let url = RedisUrl::parse(url.expose_secret())?;
        let mut options = RedisOptions::default();
        if let Some(prefix) = &self.config.store.prefix {
            options = options.with_prefix(prefix.clone());
        }
        let shown = url.to_string();
        RedisStore::connect_with(url, keyring, options)
            .await
            .with_context(|| format!("cannot open the Redis store {shown}"))
    }

    /// Opens the embedded store, creating it (and its key) on first use. Fails for Redis.
    pub fn open_sqlite(&self) -> anyhow::Result<Arc<SqliteStore>> {
        anyhow::ensure!(
            !self.config.is_redis(),
            "this command works on the embedded (sqlite) store only, and the config uses kind = \"redis\""
        );
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

    /// The environment children get (the program of `exec`, login commands, Chromium): never
    /// authkeeper's own variables (the store key...) or a variable an `env:` value names, unless
    /// `[server] pass_env` lists it.
    pub fn child_env(&self) -> ChildEnv {
        ChildEnv::new(
            self.config.secret_env_vars.iter().cloned(),
            self.config.server.pass_env.iter().cloned(),
        )
    }

    /// The browser-session pool over `store`, when `[sites.*]` are configured.
    pub fn session_pool(
        &self,
        store: Arc<dyn Store>,
    ) -> anyhow::Result<Option<Arc<authkeeper_session::SessionPool>>> {
        if self.config.sites.is_empty() {
            return Ok(None);
        }
        let pool = authkeeper_session::SessionPool::new(
            store,
            SystemClock::shared(),
            self.config.sites.clone(),
        )
        .and_then(|pool| pool.with_child_env(&self.child_env()))
        .context("invalid [sites] configuration")?;
        Ok(Some(Arc::new(pool)))
    }

    /// Builds a Keeper over `store` for the named credentials (all configured ones when
    /// `names` is empty).
    pub fn keeper(
        &self,
        store: Arc<dyn Store>,
        names: &[&str],
        settings: KeeperSettings,
    ) -> anyhow::Result<Keeper> {
        let sessions = self.session_pool(store.clone())?;
        self.keeper_with_sinks(store, names, settings, Vec::new(), sessions.as_ref())
    }

    /// The automatic re-authentication of the named credentials (all when `names` is empty).
    pub fn reauthenticator(
        &self,
        names: &[&str],
    ) -> anyhow::Result<authkeeper_login::reauth::LoginReauthenticator> {
        let mut credentials = self.config.credentials.clone();
        credentials.retain(|name, _| names.is_empty() || names.contains(&name.as_str()));
        Ok(authkeeper_login::reauth::LoginReauthenticator::from_config(
            &credentials,
            authkeeper_login::reauth::ReauthSettings {
                child_env: self.child_env(),
                ..authkeeper_login::reauth::ReauthSettings::default()
            },
        )?)
    }

    /// Like [`Context::keeper`], also reporting events to `sinks` (e.g. the broker's metrics).
    /// Long-running processes (`background_refresh`) also get automatic re-authentication.
    /// Credentials backed by a browser session (`grant = "session"`) are renewed through
    /// `sessions`.
    pub fn keeper_with_sinks(
        &self,
        store: Arc<dyn Store>,
        names: &[&str],
        settings: KeeperSettings,
        sinks: Vec<SharedSink>,
        sessions: Option<&Arc<authkeeper_session::SessionPool>>,
    ) -> anyhow::Result<Keeper> {
        let mut settings = settings;
        if let Some(ttl) = self.config.store.lease_ttl {
            settings.lease_ttl = ttl;
            settings.lease_ttl_floor = false;
        }
        let long_running = settings.background_refresh;
        let mut builder = Keeper::builder(store, SystemClock::shared())
            .settings(settings)
            .event_sink(Arc::new(LogSink));
        for sink in sinks {
            builder = builder.event_sink(sink);
        }
        // Credentials that only name a provider share its resolved settings.
        let mut shared: std::collections::HashMap<&str, Arc<authkeeper_core::CredentialSettings>> =
            std::collections::HashMap::new();
        for (name, credential) in &self.config.credentials {
            if names.is_empty() || names.contains(&name.as_str()) {
                let settings = match &credential.provider {
                    Some(provider)
                        if self.config.provider_only.contains(name.as_str())
                            && credential.grant != authkeeper_core::grant::GrantKind::Session =>
                    {
                        match shared.get(provider.as_str()) {
                            Some(settings) => Arc::clone(settings),
                            None => {
                                let settings = Arc::new(credential.resolve(name)?);
                                shared.insert(provider.as_str(), Arc::clone(&settings));
                                settings
                            }
                        }
                    }
                    _ => Arc::new(credential.resolve(name)?),
                };
                builder = builder.credential_shared(name.clone(), settings);
                if credential.grant == authkeeper_core::grant::GrantKind::Session {
                    let pool = sessions.ok_or_else(|| {
                        crate::exit::ConfigurationError(format!(
                            "credential `{name}` has grant = \"session\" but no [sites] are configured"
                        ))
                    })?;
                    let source = authkeeper_session::bearer::SessionTokenSource::new(
                        Arc::clone(pool),
                        name.as_str(),
                        credential,
                    )
                    .map_err(crate::exit::ConfigurationError)?;
                    builder = builder.token_source(name.clone(), Arc::new(source));
                }
            }
        }
        for name in names {
            if !self.config.credentials.contains_key(*name) {
                anyhow::bail!(authkeeper_core::KeeperError::UnknownCredential(
                    (*name).to_owned()
                ));
            }
        }
        if long_running {
            // Long-running processes (serve, exec) re-authenticate by themselves.
            builder = builder.reauthenticator(Arc::new(self.reauthenticator(names)?));
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
