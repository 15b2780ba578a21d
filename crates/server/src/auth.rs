//! Client keys: who may call the broker and which credentials each caller may use.
//!
//! A client presents `Authorization: Bearer <key>`. The broker keeps only the SHA-256 of each
//! key (`key_sha256` in `[[clients]]`), hashes the presented key and compares it with every
//! configured hash in constant time, without stopping at the first match.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderMap;
use http::header::AUTHORIZATION;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::config::{ClientConfig, Permission, Permissions};

/// The prefix of every generated client key.
pub const KEY_PREFIX: &str = "ak_";

/// Why the `[[clients]]` configuration is invalid. Never contains a key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientKeyError {
    /// `key_sha256` is not 64 hex digits.
    #[error("client `{0}`: key_sha256 must be 64 hex digits (the output of `authkeeper keys new`)")]
    InvalidHash(String),
    /// Two clients share a name or a key.
    #[error("client `{0}` is configured twice (same name or same key)")]
    Duplicate(String),
    /// A client name outside the rule.
    #[error(
        "client name {0:?}: use 1-64 ASCII letters, digits, '_' or '-' (no '.': a client's own checkpoint tasks are NAME and NAME.anything)"
    )]
    InvalidName(String),
}

/// Whether `name` is a valid client name: 1-64 ASCII letters, digits, `_` or `-`. No `.`, so
/// that the tasks a client owns (`NAME`, `NAME.anything`) can never be another client's.
pub fn is_valid_client_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// What a client may use.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Allowed {
    All,
    Only(HashSet<String>),
}

/// What identifies a credential besides its name, for client scopes (`provider:NAME`,
/// `label:KEY=VALUE`, `label:KEY`) and listing filters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CredentialTags {
    /// The `[providers.NAME]` it inherits from.
    pub provider: Option<String>,
    /// Its labels.
    pub labels: std::collections::BTreeMap<String, String>,
}

impl CredentialTags {
    /// Whether the labels match `selector`: `KEY=VALUE`, or `KEY` for any value.
    pub fn has_label(&self, selector: &str) -> bool {
        match selector.split_once('=') {
            Some((key, value)) => self.labels.get(key).is_some_and(|v| v == value),
            None => self.labels.contains_key(selector),
        }
    }
}

/// The credentials a client may use: names, `provider:NAME`, `label:KEY=VALUE` or `label:KEY`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct CredentialScope {
    all: bool,
    names: HashSet<String>,
    providers: HashSet<String>,
    labels: Vec<String>,
}

impl CredentialScope {
    fn new(entries: &[String]) -> Self {
        let mut scope = CredentialScope::default();
        for entry in entries {
            if entry == "*" {
                scope.all = true;
            } else if let Some(provider) = entry.strip_prefix("provider:") {
                scope.providers.insert(provider.to_owned());
            } else if let Some(label) = entry.strip_prefix("label:") {
                scope.labels.push(label.to_owned());
            } else {
                scope.names.insert(entry.clone());
            }
        }
        scope
    }

    fn allows(&self, credential: &str, tags: Option<&CredentialTags>) -> bool {
        self.all
            || self.names.contains(credential)
            || tags.is_some_and(|tags| {
                tags.provider
                    .as_ref()
                    .is_some_and(|provider| self.providers.contains(provider))
                    || self.labels.iter().any(|label| tags.has_label(label))
            })
    }
}

/// An authenticated caller. Carries its name and permissions, never its key.
#[derive(Clone)]
pub struct ClientIdentity {
    name: Arc<str>,
    permissions: Permissions,
    credentials: Arc<CredentialScope>,
    checkpoints: Arc<Allowed>,
    sites: Arc<Allowed>,
}

impl ClientIdentity {
    /// The client's configured name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this client has `permission`.
    pub fn can(&self, permission: Permission) -> bool {
        self.permissions.contains(permission)
    }

    /// Whether this client may use `credential` (`"*"` in its list allows all) with `tags`
    /// (its provider and labels, for `provider:` and `label:` entries).
    pub fn may_use(&self, credential: &str, tags: Option<&CredentialTags>) -> bool {
        self.credentials.allows(credential, tags)
    }

    /// Whether this client may lease sessions of browser-session `site` (`"*"` allows all).
    pub fn may_use_site(&self, site: &str) -> bool {
        match &*self.sites {
            Allowed::All => true,
            Allowed::Only(names) => names.contains(site),
        }
    }

    /// Whether this client may read and write the checkpoint of `task`: the task named like
    /// the client, the tasks `NAME.anything`, and the tasks listed in its `checkpoints` (`"*"`
    /// allows all). Client names contain no `.`, so no client owns another's tasks.
    pub fn may_use_checkpoint(&self, task: &str) -> bool {
        let own = task
            .strip_prefix(&*self.name)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'));
        own || match &*self.checkpoints {
            Allowed::All => true,
            Allowed::Only(names) => names.contains(task),
        }
    }
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

struct Client {
    hash: [u8; 32],
    identity: ClientIdentity,
}

/// The configured client keys.
pub struct ClientKeys {
    clients: Vec<Client>,
}

impl fmt::Debug for ClientKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.clients.iter().map(|c| c.identity.name()))
            .finish()
    }
}

impl ClientKeys {
    /// Validates `[[clients]]` into a lookup table.
    pub fn new(configs: &[ClientConfig]) -> Result<ClientKeys, ClientKeyError> {
        let mut clients: Vec<Client> = Vec::with_capacity(configs.len());
        for config in configs {
            if !is_valid_client_name(&config.name) {
                return Err(ClientKeyError::InvalidName(
                    config.name.chars().take(64).collect(),
                ));
            }
            let mut hash = [0u8; 32];
            hex::decode_to_slice(config.key_sha256.trim(), &mut hash)
                .map_err(|_| ClientKeyError::InvalidHash(config.name.clone()))?;
            if clients
                .iter()
                .any(|c| c.hash == hash || c.identity.name() == config.name)
            {
                return Err(ClientKeyError::Duplicate(config.name.clone()));
            }
            let credentials = CredentialScope::new(&config.credentials);
            let checkpoints = if config.checkpoints.iter().any(|c| c == "*") {
                Allowed::All
            } else {
                Allowed::Only(config.checkpoints.iter().cloned().collect())
            };
            let sites = if config.sites.iter().any(|c| c == "*") {
                Allowed::All
            } else {
                Allowed::Only(config.sites.iter().cloned().collect())
            };
            clients.push(Client {
                hash,
                identity: ClientIdentity {
                    name: Arc::from(config.name.as_str()),
                    permissions: Permissions::of(config),
                    credentials: Arc::new(credentials),
                    checkpoints: Arc::new(checkpoints),
                    sites: Arc::new(sites),
                },
            });
        }
        Ok(ClientKeys { clients })
    }

    /// True when no client is configured (every request will be refused).
    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// The client whose key is `presented`, comparing against every configured hash in
    /// constant time.
    pub fn authenticate(&self, presented: &str) -> Option<ClientIdentity> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for client in &self.clients {
            if bool::from(client.hash.ct_eq(&digest)) {
                found = Some(&client.identity);
            }
        }
        found.cloned()
    }

    /// The client presenting the bearer key in `headers`, if any.
    pub fn authenticate_headers(&self, headers: &HeaderMap) -> Option<ClientIdentity> {
        bearer(headers).and_then(|key| self.authenticate(key))
    }
}

/// The bearer token of an `Authorization` header (scheme case-insensitive).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The hex SHA-256 of a client key, the value of `key_sha256`.
pub fn key_sha256(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A freshly generated client key. `Debug` shows only the hash.
pub struct NewKey {
    key: String,
    sha256: String,
}

impl NewKey {
    /// 32 random bytes from the OS, base64url without padding, prefixed `ak_`.
    pub fn generate() -> NewKey {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let key = format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
        let sha256 = key_sha256(&key);
        NewKey { key, sha256 }
    }

    /// The key itself: show it once, store it nowhere.
    pub fn expose_key(&self) -> &str {
        &self.key
    }

    /// Its hex SHA-256 (`key_sha256`).
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The `[[clients]]` snippet for `name` to paste into `authkeeper.toml`.
    pub fn config_snippet(&self, name: &str) -> String {
        let name = toml_string(name);
        format!(
            "[[clients]]\nname = {name}\nkey_sha256 = \"{}\"\ncredentials = []\n# permissions = [\"token\", \"proxy\", \"checkpoints\"]  # the default; add \"sessions\" (with sites = [...]) or \"metrics\"\n",
            self.sha256
        )
    }
}

impl fmt::Debug for NewKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewKey")
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

/// A TOML basic string.
fn toml_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(name: &str, key: &str, credentials: &[&str]) -> ClientConfig {
        ClientConfig {
            name: name.into(),
            key_sha256: key_sha256(key),
            credentials: credentials.iter().map(|s| s.to_string()).collect(),
            sites: vec![],
            checkpoints: vec![],
            permissions: None,
        }
    }

    #[test]
    fn authenticates_and_authorizes() {
        let keys = ClientKeys::new(&[client("a", "ka", &["crm"]), client("b", "kb", &["*"])])
            .expect("valid");
        let a = keys.authenticate("ka").expect("a");
        assert_eq!(a.name(), "a");
        assert!(a.may_use("crm", None) && !a.may_use("other", None));
        assert!(
            keys.authenticate("kb")
                .expect("b")
                .may_use("anything", None)
        );
        assert!(keys.authenticate("kc").is_none());
    }

    #[test]
    fn provider_and_label_scopes_match_tags_not_names() {
        let keys = ClientKeys::new(&[client(
            "a",
            "ka",
            &["provider:crm", "label:tenant=42", "label:vip"],
        )])
        .expect("valid");
        let a = keys.authenticate("ka").expect("a");
        let tags = |provider: Option<&str>, labels: &[(&str, &str)]| CredentialTags {
            provider: provider.map(str::to_owned),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        assert!(a.may_use("x", Some(&tags(Some("crm"), &[]))));
        assert!(
            !a.may_use("crm", Some(&tags(Some("erp"), &[]))),
            "a name is not a provider"
        );
        assert!(a.may_use("x", Some(&tags(None, &[("tenant", "42")]))));
        assert!(!a.may_use("x", Some(&tags(None, &[("tenant", "43")]))));
        assert!(a.may_use("x", Some(&tags(None, &[("vip", "")]))));
        assert!(!a.may_use("x", None));
    }

    #[test]
    fn checkpoint_tasks_are_owned_exactly() {
        let keys = ClientKeys::new(&[client("crm", "k1", &[]), client("crm-sync", "k2", &[])])
            .expect("valid");
        let crm = keys.authenticate("k1").expect("crm");
        assert!(crm.may_use_checkpoint("crm") && crm.may_use_checkpoint("crm.nightly"));
        for other in ["crm-sync", "crm_x", "crm-sync.job", "crmx"] {
            assert!(!crm.may_use_checkpoint(other), "{other}");
        }
        let mut dotted = client("crm.sync", "k3", &[]);
        assert!(ClientKeys::new(std::slice::from_ref(&dotted)).is_err());
        dotted.name = String::new();
        assert!(ClientKeys::new(&[dotted]).is_err());
    }

    #[test]
    fn permissions_default_and_explicit() {
        let mut proxy_only = client("p", "kp", &["crm"]);
        proxy_only.permissions = Some(vec![Permission::Proxy]);
        let keys = ClientKeys::new(&[client("d", "kd", &["crm"]), proxy_only]).expect("valid");
        let default = keys.authenticate("kd").expect("d");
        assert!(default.can(Permission::Token) && default.can(Permission::Proxy));
        assert!(default.can(Permission::Checkpoints) && !default.can(Permission::Metrics));
        assert!(!default.can(Permission::Sessions), "no sites: no sessions");
        let proxy = keys.authenticate("kp").expect("p");
        assert!(proxy.can(Permission::Proxy) && !proxy.can(Permission::Token));
    }

    #[test]
    fn rejects_bad_and_duplicate_hashes() {
        let mut bad = client("a", "k", &[]);
        bad.key_sha256 = "abc".into();
        assert!(ClientKeys::new(&[bad]).is_err());
        assert!(ClientKeys::new(&[client("a", "k", &[]), client("b", "k", &[])]).is_err());
    }

    #[test]
    fn new_keys_are_unique_and_match_their_hash() {
        let (one, two) = (NewKey::generate(), NewKey::generate());
        assert_ne!(one.expose_key(), two.expose_key());
        assert!(one.expose_key().starts_with(KEY_PREFIX));
        assert_eq!(one.expose_key().len(), 3 + 43);
        assert_eq!(key_sha256(one.expose_key()), one.sha256());
        assert!(!format!("{one:?}").contains(one.expose_key()));
        let snippet = one.config_snippet("scra\"pers");
        let parsed: toml::Table = toml::from_str(&snippet).expect("valid toml");
        assert!(parsed.contains_key("clients"));
    }

    #[test]
    fn parses_bearer_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, "bearer  xyz".parse().expect("header"));
        assert_eq!(bearer(&headers), Some("xyz"));
        headers.insert(AUTHORIZATION, "Basic xyz".parse().expect("header"));
        assert_eq!(bearer(&headers), None);
    }
}
