//! The broker's configuration: the `[server]` table and the `[[clients]]` array of
//! `authkeeper.toml`. Every field name here is a public config key.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// The `[server]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Where to listen: `HOST:PORT` (default `127.0.0.1:7878`) or `unix:/path/broker.sock`.
    #[serde(default)]
    pub listen: Listen,
    /// Serve HTTPS with these PEM files (TCP only).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Largest request body accepted by the API routes, in bytes (default 64 KiB).
    #[serde(default = "defaults::max_body")]
    pub max_body: usize,
    /// Largest proxied request body buffered so it can be replayed after a refresh (default 1 MiB).
    #[serde(default = "defaults::proxy_replay_limit")]
    pub proxy_replay_limit: usize,
    /// Timeout of one proxied upstream exchange (default 30s).
    #[serde(default = "defaults::proxy_timeout", with = "humantime_serde")]
    pub proxy_timeout: Duration,
    /// Longest time a client may take to send the request headers (default 10s).
    #[serde(default = "defaults::header_timeout", with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Longest time one API request may take, including a refresh it waits for (default 30s).
    #[serde(default = "defaults::request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Require a client key with the `metrics` permission for `GET /metrics` (default true).
    /// Turn off only where the scrape network is private: the metrics name credentials.
    #[serde(default = "defaults::metrics_auth")]
    pub metrics_auth: bool,
    /// Environment variables that children (the program of `authkeeper exec`, login commands,
    /// Chromium) may inherit although the configuration references them as secrets (e.g.
    /// `HTTP_PROXY`). Nothing else of ours that is secret reaches a child.
    #[serde(default)]
    pub pass_env: Vec<String>,
    /// The broker's public address (re-login links, PKCE redirects; its host is accepted by
    /// `/mcp`).
    #[serde(default)]
    pub public_url: Option<url::Url>,
    /// How long shutdown waits for in-flight requests before closing connections (default 10s).
    #[serde(default = "defaults::shutdown_grace", with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Up to how many credentials metrics carry a `credential` label (default 1000); beyond,
    /// one aggregate series (`credential="*"`) and counts by state.
    #[serde(default = "defaults::per_credential_metrics")]
    pub per_credential_metrics: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: Listen::default(),
            tls: None,
            max_body: defaults::max_body(),
            proxy_replay_limit: defaults::proxy_replay_limit(),
            proxy_timeout: defaults::proxy_timeout(),
            header_timeout: defaults::header_timeout(),
            request_timeout: defaults::request_timeout(),
            metrics_auth: defaults::metrics_auth(),
            pass_env: Vec::new(),
            public_url: None,
            shutdown_grace: defaults::shutdown_grace(),
            per_credential_metrics: defaults::per_credential_metrics(),
        }
    }
}

/// `[server] tls = { cert = "cert.pem", key = "key.pem" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// A listen address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A TCP socket address.
    Tcp(SocketAddr),
    /// A Unix domain socket path (created with mode 0600; a stale file is replaced).
    Unix(PathBuf),
}

impl Default for Listen {
    fn default() -> Self {
        Listen::Tcp(SocketAddr::from(([127, 0, 0, 1], 7878)))
    }
}

/// Why a listen address could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error(
    "invalid listen address {0:?}: use HOST:PORT (e.g. 127.0.0.1:7878) or unix:/path/broker.sock"
)]
pub struct ListenParseError(String);

impl FromStr for Listen {
    type Err = ListenParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(ListenParseError(text.to_owned()));
            }
            return Ok(Listen::Unix(PathBuf::from(path)));
        }
        text.parse()
            .map(Listen::Tcp)
            .map_err(|_| ListenParseError(text.to_owned()))
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listen::Tcp(addr) => write!(f, "{addr}"),
            Listen::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl<'de> Deserialize<'de> for Listen {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// One `[[clients]]` entry: a caller of the broker and what it may use.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// The client's name (shown in logs; never the key).
    pub name: String,
    /// Hex SHA-256 of the client's key, as printed by `authkeeper keys new NAME`.
    pub key_sha256: String,
    /// Credentials this client may use; `"*"` allows every credential.
    #[serde(default)]
    pub credentials: Vec<String>,
    /// Browser-session sites this client may lease sessions of; `"*"` allows every site.
    #[serde(default)]
    pub sites: Vec<String>,
    /// Checkpoint tasks this client may read and write besides its own (the task named like the
    /// client and the tasks `NAME.anything`); `"*"` allows every task.
    #[serde(default)]
    pub checkpoints: Vec<String>,
    /// What the client may do (default `token`, `proxy`, `checkpoints`, and `sessions` when
    /// `sites` is set). A key with `proxy` but not `token` uses the proxy without ever seeing a
    /// token.
    #[serde(default)]
    pub permissions: Option<Vec<Permission>>,
}

/// Something a client key may be allowed to do (`permissions = [...]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum Permission {
    /// Read tokens (`/v1/credentials/{name}/token`, `rejected`, status).
    #[serde(rename = "token")]
    Token,
    /// Call APIs through the credential-injecting proxy (`/proxy/{name}/...`), and read status.
    #[serde(rename = "proxy")]
    Proxy,
    /// Lease browser sessions of its `sites`.
    #[serde(rename = "sessions")]
    Sessions,
    /// Open live browsers (reserved).
    #[serde(rename = "browsers")]
    Browsers,
    /// Read and write its checkpoints.
    #[serde(rename = "checkpoints")]
    Checkpoints,
    /// Create and delete connections (reserved).
    #[serde(rename = "credentials:write")]
    CredentialsWrite,
    /// Scrape `/metrics`.
    #[serde(rename = "metrics")]
    Metrics,
    /// Sign in to the console (reserved).
    #[serde(rename = "console")]
    Console,
}

impl Permission {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Token => "token",
            Permission::Proxy => "proxy",
            Permission::Sessions => "sessions",
            Permission::Browsers => "browsers",
            Permission::Checkpoints => "checkpoints",
            Permission::CredentialsWrite => "credentials:write",
            Permission::Metrics => "metrics",
            Permission::Console => "console",
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// A set of [`Permission`]s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Permissions(u16);

impl Permissions {
    /// The permissions of a `[[clients]]` entry: its explicit list, or the defaults.
    pub fn of(config: &ClientConfig) -> Permissions {
        match &config.permissions {
            Some(list) => list.iter().copied().collect(),
            None => {
                let mut defaults = vec![
                    Permission::Token,
                    Permission::Proxy,
                    Permission::Checkpoints,
                ];
                if !config.sites.is_empty() {
                    defaults.push(Permission::Sessions);
                }
                defaults.into_iter().collect()
            }
        }
    }

    /// Whether `permission` is in the set.
    pub fn contains(self, permission: Permission) -> bool {
        self.0 & permission.bit() != 0
    }
}

impl FromIterator<Permission> for Permissions {
    fn from_iter<I: IntoIterator<Item = Permission>>(iter: I) -> Self {
        Permissions(iter.into_iter().fold(0, |bits, p| bits | p.bit()))
    }
}

impl fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The hash is not a secret, but there is no reason to spread it through logs.
        f.debug_struct("ClientConfig")
            .field("name", &self.name)
            .field("credentials", &self.credentials)
            .field("sites", &self.sites)
            .field("checkpoints", &self.checkpoints)
            .field("permissions", &self.permissions)
            .finish_non_exhaustive()
    }
}

mod defaults {
    use std::time::Duration;

    pub fn max_body() -> usize {
        64 * 1024
    }
    pub fn proxy_replay_limit() -> usize {
        1024 * 1024
    }
    pub fn proxy_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn header_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn request_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn per_credential_metrics() -> usize {
        crate::metrics::PER_CREDENTIAL_LIMIT
    }

    pub fn shutdown_grace() -> Duration {
        Duration::from_secs(10)
    }
    pub fn metrics_auth() -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listen_forms() {
        assert_eq!(
            "unix:/run/a.sock".parse::<Listen>().ok(),
            Some(Listen::Unix("/run/a.sock".into()))
        );
        assert!(matches!(
            "127.0.0.1:0".parse::<Listen>(),
            Ok(Listen::Tcp(_))
        ));
        assert!("localhost".parse::<Listen>().is_err());
        assert!("unix:".parse::<Listen>().is_err());
    }

    #[test]
    fn parses_a_full_table() {
        let config: ServerConfig = toml::from_str(
            r#"
            listen = "unix:/tmp/b.sock"
            tls = { cert = "c.pem", key = "k.pem" }
            max_body = 1024
            proxy_timeout = "5s"
            header_timeout = "2s"
            request_timeout = "20s"
            metrics_auth = true
            "#,
        )
        .expect("parses");
        assert_eq!(config.max_body, 1024);
        assert_eq!(config.proxy_timeout, Duration::from_secs(5));
        assert!(config.metrics_auth);
        assert!(toml::from_str::<ServerConfig>("lisen = 'x'").is_err());
    }
}
