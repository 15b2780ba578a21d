//! The `authkeeper.toml` file: store settings and credentials.
//!
//! Precedence: the file, then environment (`AUTHKEEPER_STORE`, `AUTHKEEPER_KEY`), then flags.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::Context;
use authkeeper_core::CredentialConfig;
use authkeeper_core::name::{CredentialName, SiteName};
use authkeeper_server::{ClientConfig, ServerConfig};

use crate::exit::ConfigurationError;
use serde::Deserialize;

/// Adds the `NAME` of every `env:NAME` string in `value` to `names`.
fn collect_env_references(value: &toml::Value, names: &mut BTreeSet<String>) {
    match value {
        toml::Value::String(text) => {
            if let Some(name) = text.strip_prefix("env:") {
                names.insert(name.trim().to_owned());
            }
        }
        toml::Value::Array(items) => {
            for item in items {
                collect_env_references(item, names);
            }
        }
        toml::Value::Table(table) => {
            for item in table.values() {
                collect_env_references(item, names);
            }
        }
        _ => {}
    }
}

/// The credentials whose tables set `provider` and nothing else but `labels`.
fn provider_only(raw: &toml::Table) -> BTreeSet<String> {
    let Some(toml::Value::Table(credentials)) = raw.get("credentials") else {
        return BTreeSet::new();
    };
    credentials
        .iter()
        .filter(|(_, table)| {
            table.as_table().is_some_and(|table| {
                table.contains_key("provider")
                    && table.keys().all(|key| key == "provider" || key == "labels")
            })
        })
        .map(|(name, _)| name.clone())
        .collect()
}

/// Gives every `[credentials.NAME]` table with `provider = "P"` the keys of `[providers.P]` it
/// does not set itself (a table-valued key such as `login` is taken whole, not merged). An
/// unknown provider is a configuration error, as is a provider table that sets `provider`.
fn inherit_providers(raw: &mut toml::Table) -> Result<(), String> {
    let providers = match raw.get("providers") {
        Some(toml::Value::Table(providers)) => providers.clone(),
        Some(_) => return Err("`providers` must be a table of tables".to_owned()),
        None => return Ok(()),
    };
    for (name, provider) in &providers {
        let Some(provider) = provider.as_table() else {
            return Err(format!(
                "provider `{name}` must be a table ([providers.{name}])"
            ));
        };
        if provider.contains_key("provider") || provider.contains_key("labels") {
            return Err(format!(
                "provider `{name}`: `provider` and `labels` belong to credentials, not providers"
            ));
        }
    }
    let Some(toml::Value::Table(credentials)) = raw.get_mut("credentials") else {
        return Ok(());
    };
    for (credential, table) in credentials.iter_mut() {
        let Some(table) = table.as_table_mut() else {
            continue; // reported by the typed parse
        };
        let Some(provider) = table.get("provider") else {
            continue;
        };
        let Some(provider) = provider.as_str() else {
            return Err(format!(
                "credential `{credential}`: `provider` must be a string"
            ));
        };
        let Some(shared) = providers.get(provider).and_then(toml::Value::as_table) else {
            return Err(format!(
                "credential `{credential}`: provider `{provider}` is not configured ([providers.{provider}])"
            ));
        };
        for (key, value) in shared {
            table.entry(key.clone()).or_insert_with(|| value.clone());
        }
    }
    Ok(())
}

/// The default config file, looked up in the working directory.
pub const DEFAULT_CONFIG: &str = "authkeeper.toml";

/// The whole configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where credentials are stored.
    #[serde(default)]
    pub store: StoreConfig,
    /// Broker settings (`authkeeper serve`).
    #[serde(default)]
    pub server: ServerConfig,
    /// Broker clients and what each may use (`authkeeper serve`).
    #[serde(default)]
    pub clients: Vec<ClientConfig>,
    /// What many credentials share, by provider name: any key of a credential table. A
    /// credential with `provider = "NAME"` inherits every key it does not set itself.
    #[serde(default)]
    pub providers: BTreeMap<String, toml::Table>,
    /// Credentials by name. Credentials that set nothing but `provider` share one value.
    #[serde(default)]
    pub credentials: BTreeMap<CredentialName, std::sync::Arc<CredentialConfig>>,
    /// Re-authentication notifications (`authkeeper serve`).
    #[serde(default)]
    pub notify: Option<authkeeper_server::notify::NotifyConfig>,
    /// Browser-session sites by name (`authkeeper sessions`, session leases in `serve`).
    #[serde(default)]
    pub sites: BTreeMap<SiteName, authkeeper_session::SiteConfig>,
    /// Every environment variable an `env:NAME` value of the file names (secrets: children never
    /// inherit them unless `[server] pass_env` lists them).
    #[serde(skip)]
    pub secret_env_vars: BTreeSet<String>,
    /// Credentials that set nothing but `provider` (and `labels`): they share their provider's
    /// settings in memory.
    #[serde(skip)]
    pub provider_only: BTreeSet<String>,
}

/// The `[store]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite` (default) or `redis`.
    #[serde(default)]
    pub kind: Option<String>,
    /// With `kind = "redis"`: the Redis URL (`redis://[user:password@]host:port/db`,
    /// `rediss://` for TLS), or `env:NAME` / `file:PATH` naming where a URL with a password is.
    #[serde(default)]
    pub url: Option<String>,
    /// With `kind = "redis"`: the prefix of every key (default `authkeeper:`).
    #[serde(default)]
    pub prefix: Option<String>,
    /// Refresh lease TTL. When set it is used as is (by default the lease lasts at least twice
    /// the token request timeout plus 5 s); shorter than the token request timeout lets a slow
    /// refresh lose its lease (fencing then discards its result).
    #[serde(default, with = "humantime_serde")]
    pub lease_ttl: Option<std::time::Duration>,
    /// The SQLite file.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// A key file (else `AUTHKEEPER_KEY`, else a key file generated beside the store).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

impl Config {
    /// Loads `path`, or the default file when present, or an empty configuration.
    pub fn load(path: Option<&Path>) -> anyhow::Result<(Config, PathBuf)> {
        let (path, required) = match path {
            Some(path) => (path.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if !required && error.kind() == std::io::ErrorKind::NotFound => {
                return Ok((Config::default(), path));
            }
            Err(error) => {
                return Err(error)
                    .with_context(|| format!("cannot read config {}", path.display()));
            }
        };
        let mut config =
            Config::parse(&text).with_context(|| format!("invalid config {}", path.display()))?;
        if let Ok(raw) = text.parse::<toml::Table>() {
            collect_env_references(&toml::Value::Table(raw), &mut config.secret_env_vars);
        }
        config
            .validate()
            .with_context(|| format!("invalid config {}", path.display()))?;
        Ok((config, path))
    }

    /// Parses the text of a config file, applying `[providers.NAME]` to the credentials that
    /// name one (see [`inherit_providers`]).
    pub fn parse(text: &str) -> anyhow::Result<Config> {
        let mut raw: toml::Table = toml::from_str(text)?;
        if !raw.contains_key("providers") {
            // Parsed from the text, so that errors point at lines.
            return Ok(toml::from_str(text)?);
        }
        let provider_only = provider_only(&raw);
        inherit_providers(&mut raw).map_err(ConfigurationError)?;
        let mut config: Config = toml::Value::Table(raw).try_into()?;
        // Credentials that only name a provider (no labels) are equal: keep one copy of each
        // provider's (a config of 100 000 such credentials would otherwise hold 100 000).
        let mut shared: BTreeMap<String, std::sync::Arc<CredentialConfig>> = BTreeMap::new();
        for (name, credential) in config.credentials.iter_mut() {
            if !provider_only.contains(name.as_str()) || !credential.labels.is_empty() {
                continue;
            }
            let Some(provider) = credential.provider.clone() else {
                continue;
            };
            match shared.get(&provider) {
                Some(first) => *credential = std::sync::Arc::clone(first),
                None => {
                    shared.insert(provider, std::sync::Arc::clone(credential));
                }
            }
        }
        config.provider_only = provider_only;
        Ok(config)
    }

    /// Every `[providers.NAME]`, resolved as a credential would be (connections created through
    /// the API use these settings).
    pub fn resolved_providers(
        &self,
    ) -> anyhow::Result<
        std::collections::HashMap<String, std::sync::Arc<authkeeper_core::CredentialSettings>>,
    > {
        let mut providers = std::collections::HashMap::new();
        for (name, table) in &self.providers {
            let config: CredentialConfig = toml::Value::Table(table.clone())
                .try_into()
                .with_context(|| format!("provider `{name}`"))?;
            let settings = config
                .resolve(name)
                .with_context(|| format!("provider `{name}`"))?;
            providers.insert(name.clone(), std::sync::Arc::new(settings));
        }
        Ok(providers)
    }

    /// The upstreams of the providers that name one (the `/proxy` target of their connections).
    pub fn provider_upstreams(
        &self,
    ) -> anyhow::Result<std::collections::HashMap<String, authkeeper_server::proxy::Upstream>> {
        let mut upstreams = std::collections::HashMap::new();
        for (name, table) in &self.providers {
            let config: CredentialConfig = toml::Value::Table(table.clone())
                .try_into()
                .with_context(|| format!("provider `{name}`"))?;
            if let Some(upstream) = authkeeper_server::upstream_of(name, &config)
                .with_context(|| format!("provider `{name}`"))?
            {
                upstreams.insert(name.clone(), upstream);
            }
        }
        Ok(upstreams)
    }

    /// Checks the whole file (every section, every URL scheme) without resolving secret
    /// references, and reports every problem at once as a [`ConfigurationError`] (exit 2).
    fn validate(&self) -> Result<(), ConfigurationError> {
        let mut problems = Vec::new();
        self.validate_store(&mut problems);
        for (name, provider) in &self.providers {
            // Every key of a provider must be a valid credential key.
            if let Err(error) = toml::Value::Table(provider.clone()).try_into::<CredentialConfig>()
            {
                problems.push(format!("provider `{name}`: {}", error.message()));
            }
        }
        for (name, credential) in &self.credentials {
            // Resolving checks the secret reference too (variable set, file readable).
            if let Err(error) = credential.resolve(name) {
                problems.push(error.to_string());
            }
            if let (Some(site), Some(account)) = (&credential.site, &credential.account) {
                match self.sites.get(site.as_str()) {
                    None => problems.push(format!(
                        "credential `{name}`: site `{site}` is not configured ([sites.{site}])"
                    )),
                    Some(config) if config.account(account).is_none() => problems.push(format!(
                        "credential `{name}`: site `{site}` has no account `{account}`"
                    )),
                    Some(_) => {}
                }
            }
        }
        if let Err(error) = authkeeper_server::ClientKeys::new(&self.clients) {
            problems.push(format!("[[clients]]: {error}"));
        }
        if let Some(notify) = &self.notify
            && !matches!(notify.webhook_url.scheme(), "http" | "https")
        {
            problems.push("[notify] webhook_url must be an http or https URL".to_owned());
        }
        for (name, site) in &self.sites {
            if !matches!(site.origin.scheme(), "http" | "https") {
                problems.push(format!(
                    "[sites.{name}] origin must be an http or https URL"
                ));
            }
            if let Err(error) = authkeeper_session::login_for(site, &Default::default()) {
                problems.push(format!("[sites.{name}.login]: {error}"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigurationError(problems.join("; ")))
        }
    }

    fn validate_store(&self, problems: &mut Vec<String>) {
        match self.store.kind.as_deref() {
            None | Some("sqlite") => {
                if self.store.url.is_some() || self.store.prefix.is_some() {
                    problems.push("[store] url and prefix are for kind = \"redis\"".to_owned());
                }
            }
            Some("redis") => {
                if self.store.url.is_none() {
                    problems.push(
                        "[store] kind = \"redis\" needs url = \"redis://host:6379/0\" (or \"env:NAME\" / \"file:PATH\" for a URL with a password)".to_owned(),
                    );
                }
                if self.store.path.is_some() {
                    problems
                        .push("[store] path is for kind = \"sqlite\"; Redis uses url".to_owned());
                }
                if let Some(url) = &self.store.url
                    && !url.starts_with("env:")
                    && !url.starts_with("file:")
                    && !(url.starts_with("redis://") || url.starts_with("rediss://"))
                {
                    problems.push(
                        "[store] url must be redis:// or rediss:// (or env:NAME / file:PATH)"
                            .to_owned(),
                    );
                }
            }
            Some(other) => {
                problems.push(format!(
                    "unknown store kind {other:?}: use \"sqlite\" or \"redis\""
                ));
            }
        }
        if let Some(ttl) = self.store.lease_ttl {
            // A lease must outlive one token request even before its first renewal.
            let longest = self
                .credentials
                .values()
                .map(|credential| credential.timeout)
                .max()
                .unwrap_or_default();
            let minimum = longest + std::time::Duration::from_secs(1);
            if ttl < minimum {
                problems.push(format!(
                    "[store] lease_ttl = {} is shorter than the minimum {} (the longest token request timeout plus 1 s): a lease must outlive a token request",
                    humantime::format_duration(ttl),
                    humantime::format_duration(minimum)
                ));
            }
        }
    }

    /// The store file: flag, then `AUTHKEEPER_STORE`, then `[store] path` (relative to the
    /// config file), then the user's data directory.
    pub fn store_path(&self, config_path: &Path, flag: Option<&Path>) -> anyhow::Result<PathBuf> {
        if let Some(path) = flag {
            return Ok(path.to_path_buf());
        }
        if let Some(path) = std::env::var_os("AUTHKEEPER_STORE") {
            return Ok(PathBuf::from(path));
        }
        if let Some(path) = &self.store.path {
            return Ok(relative_to(config_path, path));
        }
        let dir = dirs::data_dir()
            .context("no data directory for this user: set [store] path or AUTHKEEPER_STORE")?
            .join("authkeeper");
        Ok(dir.join("authkeeper.db"))
    }

    /// Whether the store is Redis.
    pub fn is_redis(&self) -> bool {
        self.store.kind.as_deref() == Some("redis")
    }

    /// The configured key file, relative to the config file.
    pub fn key_file(&self, config_path: &Path) -> Option<PathBuf> {
        self.store
            .key_file
            .as_ref()
            .map(|p| relative_to(config_path, p))
    }
}

fn relative_to(config_path: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_path_buf();
    }
    match config_path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(path),
        _ => path.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_shipped_example() {
        let text = include_str!("../../../examples/authkeeper.toml");
        let config: Config = toml::from_str(text).expect("examples/authkeeper.toml parses");
        let portal = &config.sites["portal"];
        assert_eq!(portal.accounts[0].name, "alice");
        assert_eq!(portal.login.as_ref().map(|l| l.steps.len()), Some(5));
        assert!(
            authkeeper_session::login_for(portal, &Default::default()).is_ok(),
            "the recipe is valid"
        );
    }

    #[test]
    fn credentials_inherit_their_provider_and_override_it() {
        let text = r#"
            [providers.crm]
            token_url = "https://idp.example.com/oauth/token"
            client_id = "abc"
            client_secret = "inline-secret"
            scopes = ["api.read"]
            refresh_at = 0.7

            [credentials.alice-crm]
            provider = "crm"
            labels = { tenant = "42" }
            scopes = ["api.write"]

            [credentials.bob-crm]
            provider = "crm"
        "#;
        let config = Config::parse(text).expect("parses");
        let alice = &config.credentials["alice-crm"];
        assert_eq!(alice.client_id, "abc");
        assert_eq!(alice.scopes, ["api.write"], "the credential overrides");
        assert_eq!(alice.refresh_at, 0.7, "the provider's policy");
        assert_eq!(alice.provider.as_deref(), Some("crm"));
        assert_eq!(alice.labels["tenant"], "42");
        let bob = &config.credentials["bob-crm"];
        assert_eq!(bob.scopes, ["api.read"]);
        assert!(
            bob.resolve(&CredentialName::new("bob-crm").expect("name"))
                .is_ok()
        );

        let unknown = Config::parse(
            "[providers.crm]\nclient_id = \"a\"\n[credentials.x]\nprovider = \"erp\"\n",
        )
        .expect_err("unknown provider");
        assert!(format!("{unknown:#}").contains("provider `erp` is not configured"));
        let typo = Config::parse(
            "[providers.crm]\nclient_idd = \"a\"\n[credentials.x]\nprovider = \"crm\"\n",
        )
        .expect_err("unknown key");
        assert!(format!("{typo:#}").contains("client_idd"), "{typo:#}");
    }

    #[test]
    fn parses_the_design_example() {
        let text = r#"
            [store]
            kind = "sqlite"
            path = "authkeeper.db"

            [server]
            listen = "127.0.0.1:7878"

            [[clients]]
            name = "scrapers"
            key_sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
            credentials = ["crm"]

            [credentials.crm]
            token_url = "https://idp.example.com/oauth/token"
            client_id = "abc"
            client_secret = "env:CRM_CLIENT_SECRET"
            grant = "refresh_token"
            scopes = ["api.read"]
            upstream = "https://api.example.com"
            refresh_at = 0.8
            clock_skew = "30s"
        "#;
        let config: Config = toml::from_str(text).expect("parses");
        // Secrets are resolved at load: the referenced variable must be set.
        let error = config
            .validate()
            .expect_err("the secret's variable is not set");
        assert!(error.0.contains("CRM_CLIENT_SECRET"), "{error:?}");
        let inline: Config =
            toml::from_str(&text.replace("env:CRM_CLIENT_SECRET", "inline-test-secret"))
                .expect("parses");
        inline.validate().expect("valid");
        let crm = &config.credentials["crm"];
        assert_eq!(crm.clock_skew, std::time::Duration::from_secs(30));
        assert_eq!(
            config
                .store_path(Path::new("/etc/authkeeper/authkeeper.toml"), None)
                .ok(),
            Some(PathBuf::from("/etc/authkeeper/authkeeper.db"))
        );
    }

    #[test]
    fn redis_store_settings_are_checked() {
        let parse = |store: &str| toml::from_str::<Config>(store).expect("parses");
        let config = parse(
            "[store]\nkind = \"redis\"\nurl = \"env:REDIS_URL\"\nprefix = \"x:\"\nlease_ttl = \"3s\"\n",
        );
        config.validate().expect("valid");
        assert!(config.is_redis());
        assert_eq!(
            config.store.lease_ttl,
            Some(std::time::Duration::from_secs(3))
        );
        let error = parse("[store]\nkind = \"redis\"\n")
            .validate()
            .expect_err("no url");
        assert!(error.to_string().contains("needs url"), "{error}");
        let error = parse("[store]\nurl = \"redis://h\"\n")
            .validate()
            .expect_err("url on sqlite");
        assert!(error.to_string().contains("kind = \"redis\""), "{error}");
        let error = parse("[store]\nkind = \"mongo\"\n")
            .validate()
            .expect_err("unknown kind");
        assert!(error.to_string().contains("\"redis\""), "{error}");
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let error = toml::from_str::<Config>("[credentials.x]\nclient_id='a'\ntokenurl='x'")
            .expect_err("typo");
        assert!(error.to_string().contains("tokenurl"), "{error}");
    }

    #[test]
    fn parses_reauth_keys_notify_and_checkpoints() {
        let config: Config = toml::from_str(
            r#"
            [notify]
            webhook_url = "https://hooks.example.com/authkeeper"
            webhook_secret = "env:AUTHKEEPER_WEBHOOK_SECRET"
            max_attempts = 3

            [[clients]]
            name = "scrapers"
            key_sha256 = "00"
            credentials = ["crm"]
            checkpoints = ["nightly"]

            [credentials.crm]
            token_url = "https://idp.example.com/token"
            client_id = "abc"
            login = { method = "command", command = "./login.sh", timeout = "1m" }
            max_session_age = "24h"
            relogin_window = "01:00-05:00"
            relogin_margin = "45m"
            "#,
        )
        .expect("parses");
        let notify = config.notify.expect("notify");
        assert_eq!(notify.max_attempts, 3);
        assert_eq!(config.clients[0].checkpoints, vec!["nightly".to_owned()]);
        let crm = &config.credentials["crm"];
        let plan =
            authkeeper_login::reauth::ReauthPlan::from_config("crm", crm, &Default::default())
                .expect("plan");
        assert!(plan.method.is_automatic());
        assert_eq!(
            plan.policy.max_session_age,
            Some(std::time::Duration::from_secs(24 * 3600))
        );
        let mut bad = CredentialConfig::clone(crm);
        bad.relogin_window = Some("1am-5am".into());
        let error =
            authkeeper_login::reauth::ReauthPlan::from_config("crm", &bad, &Default::default())
                .expect_err("bad window");
        assert!(error.to_string().contains("relogin_window"), "{error}");
    }
}
