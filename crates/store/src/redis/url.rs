//! [`RedisUrl`]: a Redis connection URL whose password never shows in `Debug`, `Display` or
//! error messages.

use std::fmt;

use zeroize::Zeroizing;

use authkeeper_core::StoreError;

/// What replaces a password wherever a URL or an error message is shown.
pub const REDACTED: &str = "***";

/// A parsed `redis://`, `rediss://` (TLS), `valkey://`, `valkeys://` or `redis+unix://` URL,
/// with an optional ACL user and password (`redis://user:password@host:6379/0`).
///
/// `Debug` and `Display` show the URL with the password replaced by `***`; the password itself
/// is only handed to the Redis client.
#[derive(Clone)]
pub struct RedisUrl {
    url: url::Url,
    redacted: String,
    /// The password as written in the URL and percent-decoded, for scrubbing messages.
    secrets: Vec<Zeroizing<String>>,
}

impl RedisUrl {
    /// Parses and checks a Redis URL. The error never repeats the URL.
    pub fn parse(text: &str) -> Result<Self, StoreError> {
        let url = url::Url::parse(text).map_err(|e| StoreError::Other {
            message: format!("invalid Redis URL ({e}); expected redis://[user:password@]host[:port][/db] or rediss://..."),
            source: None,
        })?;
        match url.scheme() {
            "redis" | "rediss" | "valkey" | "valkeys" | "redis+unix" | "valkey+unix" | "unix" => {}
            other => {
                return Err(StoreError::Other {
                    message: format!(
                        "invalid Redis URL: unsupported scheme `{other}` (use redis://, rediss:// for TLS, or redis+unix://)"
                    ),
                    source: None,
                });
            }
        }
        let mut secrets = Vec::new();
        if let Some(password) = url.password().filter(|p| !p.is_empty()) {
            secrets.push(Zeroizing::new(password.to_owned()));
            let decoded = percent_decode(password);
            if decoded.as_str() != password && !decoded.is_empty() {
                secrets.push(decoded);
            }
        }
        let redacted = redact_url(&url);
        Ok(RedisUrl {
            url,
            redacted,
            secrets,
        })
    }

    /// Whether the connection uses TLS (`rediss://`, `valkeys://`).
    pub fn is_tls(&self) -> bool {
        matches!(self.url.scheme(), "rediss" | "valkeys")
    }

    /// Whether the URL carries a password.
    pub fn has_password(&self) -> bool {
        !self.secrets.is_empty()
    }

    /// The URL with its password replaced by `***`.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    /// `text` with every occurrence of the password replaced by `***`.
    pub fn scrub(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for secret in &self.secrets {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), REDACTED);
            }
        }
        text
    }

    /// The full URL, password included, for the Redis client only.
    pub(crate) fn expose(&self) -> &url::Url {
        &self.url
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({})", self.redacted)
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

fn redact_url(url: &url::Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() && shown.set_password(Some(REDACTED)).is_err() {
        return format!("{}://{REDACTED}", url.scheme());
    }
    // A query or fragment could carry credentials in some client conventions: drop them.
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

fn percent_decode(text: &str) -> Zeroizing<String> {
    let bytes = text.as_bytes();
    let mut out = Zeroizing::new(Vec::with_capacity(bytes.len()));
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Zeroizing::new(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_redacted_everywhere() {
        let url = RedisUrl::parse("redis://alice:s%40cret-PW@127.0.0.1:6380/2").unwrap();
        for shown in [format!("{url}"), format!("{url:?}")] {
            assert!(!shown.contains("cret-PW"), "{shown}");
            assert!(shown.contains("alice:***@127.0.0.1:6380/2"), "{shown}");
        }
        assert_eq!(url.scrub("auth s@cret-PW failed"), "auth *** failed");
        assert_eq!(url.scrub("auth s%40cret-PW failed"), "auth *** failed");
        assert!(url.has_password());
        assert!(!url.is_tls());
        assert!(RedisUrl::parse("rediss://h:6380").unwrap().is_tls());
    }

    #[test]
    fn bad_urls_are_refused_without_echo() {
        let err = RedisUrl::parse("http://u:topsecret@h")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("topsecret"), "{err}");
        let err = RedisUrl::parse("redis://u:topsecret@h:99999")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("topsecret"), "{err}");
    }
}
