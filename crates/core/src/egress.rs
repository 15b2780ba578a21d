//! Egress: the forward proxy a credential's traffic goes through. A [`ProxyUrl`] holds
//! credentials, so it is a secret: `Debug` and [`ProxyUrl::redacted`] show only scheme, host and
//! port. [`http_client`] builds the client every token request of such a credential uses: all
//! requests through the proxy, never a silent direct connection when the proxy is down (the
//! request fails and the credential backs off like on any transient error).

use std::fmt;

use secrecy::{ExposeSecret as _, SecretString};
use url::Url;

/// Why a proxy URL is unusable. Never quotes the URL (it may hold a password).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyUrlError {
    /// Not a URL.
    #[error(
        "the proxy is not a URL like http://user:pass@host:port (not shown: it may hold a password)"
    )]
    NotAUrl,
    /// A scheme other than http, https, socks5 or socks5h.
    #[error("unsupported proxy scheme `{0}`: use http, https, socks5 or socks5h")]
    Scheme(String),
    /// No host.
    #[error("the proxy URL has no host")]
    NoHost,
    /// The HTTP client could not be built with it.
    #[error("cannot build an HTTP client for the proxy {0}")]
    Client(String),
}

/// A forward proxy: `http://`, `https://`, `socks5://` (the proxy resolves names: `socks5h://`)
/// with optional `user:password@`.
#[derive(Clone)]
pub struct ProxyUrl {
    url: SecretString,
    shown: String,
}

impl ProxyUrl {
    /// Parses and checks a proxy URL.
    pub fn parse(text: &str) -> Result<ProxyUrl, ProxyUrlError> {
        let url = Url::parse(text.trim()).map_err(|_| ProxyUrlError::NotAUrl)?;
        if !matches!(url.scheme(), "http" | "https" | "socks5" | "socks5h") {
            return Err(ProxyUrlError::Scheme(url.scheme().to_owned()));
        }
        let host = url.host_str().ok_or(ProxyUrlError::NoHost)?;
        let shown = match url.port_or_known_default() {
            Some(port) => format!("{}://{host}:{port}", url.scheme()),
            None => format!("{}://{host}", url.scheme()),
        };
        Ok(ProxyUrl {
            url: SecretString::from(url.as_str().to_owned()),
            shown,
        })
    }

    /// The full URL, credentials included.
    pub fn expose_url(&self) -> &str {
        self.url.expose_secret()
    }

    /// `scheme://host:port`, for logs and errors.
    pub fn redacted(&self) -> &str {
        &self.shown
    }
}

impl fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProxyUrl({})", self.shown)
    }
}

impl PartialEq for ProxyUrl {
    fn eq(&self, other: &Self) -> bool {
        self.expose_url() == other.expose_url()
    }
}

impl Eq for ProxyUrl {}

/// The HTTP client for token requests: through `proxy` for every request (the environment's
/// proxy variables are ignored then), or the default client; redirects are never followed.
pub fn http_client(proxy: Option<&ProxyUrl>) -> Result<reqwest::Client, ProxyUrlError> {
    let mut builder = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
    if let Some(proxy) = proxy {
        let through = reqwest::Proxy::all(proxy.expose_url())
            .map_err(|_| ProxyUrlError::Client(proxy.redacted().to_owned()))?;
        builder = builder.no_proxy().proxy(through);
    }
    builder
        .build()
        .map_err(|_| ProxyUrlError::Client(proxy.map_or("(none)", |p| p.redacted()).to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxies_parse_and_never_show_their_password() {
        let proxy = ProxyUrl::parse("http://user:hunter2@proxy.local:3128").unwrap();
        assert_eq!(proxy.redacted(), "http://proxy.local:3128");
        assert!(!format!("{proxy:?}").contains("hunter2"));
        assert!(proxy.expose_url().contains("hunter2"));
        assert_eq!(
            ProxyUrl::parse("socks5h://p.local").unwrap().redacted(),
            "socks5h://p.local"
        );
        assert_eq!(
            ProxyUrl::parse("ftp://p.local"),
            Err(ProxyUrlError::Scheme("ftp".into()))
        );
        let error = ProxyUrl::parse("not a url hunter2").unwrap_err();
        assert!(!error.to_string().contains("hunter2"));
        assert!(http_client(Some(&proxy)).is_ok());
    }
}
