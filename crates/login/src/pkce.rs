//! Authorization code with PKCE (RFC 7636, `S256`) for a native app with a loopback redirect
//! (RFC 8252): build the authorization URL, wait for the redirect, check `state` and the
//! RFC 9207 `iss` parameter, and exchange the code.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};
use sha2::Digest as _;
use url::Url;

use super::loopback::{CallbackParams, LoopbackListener};
use super::{LoginClient, LoginError, random_urlsafe};
use authkeeper_core::token::TokenResponse;

/// A PKCE code verifier (secret) and its `S256` challenge.
pub struct Pkce {
    verifier: SecretString,
    challenge: String,
}

impl Pkce {
    /// A fresh verifier: 32 random bytes, base64url (43 characters, RFC 7636 §4.1).
    pub fn generate() -> Pkce {
        Pkce::from_verifier(SecretString::from(random_urlsafe(32)))
    }

    /// The pair for a given verifier.
    pub fn from_verifier(verifier: SecretString) -> Pkce {
        let challenge = s256_challenge(verifier.expose_secret());
        Pkce {
            verifier,
            challenge,
        }
    }

    /// The verifier, sent with the code exchange.
    pub fn verifier(&self) -> &SecretString {
        &self.verifier
    }

    /// The `S256` challenge, sent in the authorization request.
    pub fn challenge(&self) -> &str {
        &self.challenge
    }
}

impl fmt::Debug for Pkce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkce")
            .field("verifier", &"[redacted]")
            .field("challenge", &self.challenge)
            .finish()
    }
}

/// `BASE64URL(SHA256(verifier))` (RFC 7636 §4.2).
pub fn s256_challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()))
}

/// An authorization request in flight: the URL to open and what the redirect must match.
pub struct AuthorizationRequest {
    /// The URL to open in the browser.
    pub url: Url,
    /// The redirect URI sent (the exchange repeats it).
    pub redirect_uri: String,
    state: String,
    pkce: Pkce,
}

impl fmt::Debug for AuthorizationRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorizationRequest")
            .field("redirect_uri", &self.redirect_uri)
            .field("pkce", &self.pkce)
            .finish_non_exhaustive()
    }
}

impl AuthorizationRequest {
    /// The `state` sent.
    pub fn state(&self) -> &str {
        &self.state
    }

    /// The PKCE pair.
    pub fn pkce(&self) -> &Pkce {
        &self.pkce
    }

    /// Checks a redirect: `state` first (CSRF), then `iss` when sent (RFC 9207; against
    /// `expected_issuer` when known), then an `error`, and returns the code.
    pub fn check_callback(
        &self,
        params: &CallbackParams,
        expected_issuer: Option<&str>,
    ) -> Result<SecretString, LoginError> {
        let state_ok = params
            .get("state")
            .is_some_and(|s| constant_time_eq(s.as_bytes(), self.state.as_bytes()));
        if !state_ok {
            return Err(LoginError::StateMismatch);
        }
        if let (Some(got), Some(expected)) = (params.get("iss"), expected_issuer)
            && got.trim_end_matches('/') != expected.trim_end_matches('/')
        {
            return Err(LoginError::IssuerMismatch {
                expected: expected.to_owned(),
                got: super::sanitize(got),
            });
        }
        if let Some(error) = params.get("error") {
            let description = params.get("error_description").map(super::sanitize);
            return Err(if error == "access_denied" {
                LoginError::AccessDenied { description }
            } else {
                LoginError::Authorization {
                    error: super::sanitize(error),
                    description,
                }
            });
        }
        params
            .get("code")
            .filter(|c| !c.is_empty())
            .map(|c| SecretString::from(c.to_owned()))
            .ok_or(LoginError::MissingCode)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// How to run the authorization code flow.
#[derive(Debug, Clone, Default)]
pub struct PkceOptions {
    /// Loopback port (0: any free port).
    pub redirect_port: u16,
    /// How long to wait for the redirect.
    pub timeout: Duration,
    /// Extra authorization request parameters (e.g. `prompt=consent`).
    pub authorization_params: BTreeMap<String, String>,
}

impl LoginClient {
    /// Builds an authorization request for `redirect_uri`: `response_type=code`, client id,
    /// scopes, a random `state`, the PKCE `S256` challenge and `extra` parameters.
    pub async fn authorization_request(
        &self,
        redirect_uri: &str,
        extra: &BTreeMap<String, String>,
    ) -> Result<AuthorizationRequest, LoginError> {
        let mut url = self.authorization_endpoint().await?.ok_or_else(|| {
            LoginError::Config(
                "the provider has no authorization endpoint: set authorization_url or use another \
                 login method"
                    .into(),
            )
        })?;
        let config = self.oauth.config();
        let state = random_urlsafe(24);
        let pkce = Pkce::generate();
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("response_type", "code")
                .append_pair("client_id", &config.client_id)
                .append_pair("redirect_uri", redirect_uri)
                .append_pair("state", &state)
                .append_pair("code_challenge", pkce.challenge())
                .append_pair("code_challenge_method", "S256");
            if !config.scopes.is_empty() {
                query.append_pair("scope", &config.scopes.join(" "));
            }
            if let Some(audience) = &config.audience {
                query.append_pair("audience", audience);
            }
            for (key, value) in extra {
                query.append_pair(key, value);
            }
        }
        Ok(AuthorizationRequest {
            url,
            redirect_uri: redirect_uri.to_owned(),
            state,
            pkce,
        })
    }

    /// Exchanges an authorization code (RFC 6749 §4.1.3 with the PKCE verifier).
    pub async fn exchange_code(
        &self,
        request: &AuthorizationRequest,
        code: &SecretString,
    ) -> Result<TokenResponse, LoginError> {
        let mut form = url::form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "authorization_code");
        form.append_pair("code", code.expose_secret());
        form.append_pair("redirect_uri", &request.redirect_uri);
        form.append_pair("code_verifier", request.pkce.verifier.expose_secret());
        self.token_request(form, false)
            .await
            .map_err(|source| LoginError::Endpoint {
                what: "authorization code exchange",
                source,
            })
    }

    /// The whole flow: binds the loopback listener, calls `show_url` with the authorization URL
    /// (to open a browser or print it), waits for the redirect (at most `options.timeout` by the
    /// injected clock), checks it and exchanges the code.
    pub async fn login_with_pkce(
        &self,
        options: &PkceOptions,
        show_url: &mut (dyn FnMut(&Url) + Send),
    ) -> Result<TokenResponse, LoginError> {
        let listener = LoopbackListener::bind(options.redirect_port).await?;
        let request = self
            .authorization_request(&listener.redirect_uri(), &options.authorization_params)
            .await?;
        let issuer = self.expected_issuer().await?;
        show_url(&request.url);
        let deadline = self.clock.now() + options.timeout;
        let code = tokio::select! {
            result = listener.wait_for_callback(|params| request.check_callback(params, issuer.as_deref())) => result?,
            () = self.clock.sleep_until(deadline) => return Err(LoginError::TimedOut(options.timeout)),
        };
        drop(listener);
        self.exchange_code(&request, &code).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7636_appendix_b_example() {
        assert_eq!(
            s256_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let pkce = Pkce::generate();
        assert_eq!(pkce.verifier().expose_secret().len(), 43);
        assert!(!format!("{pkce:?}").contains(pkce.verifier().expose_secret()));
    }
}
