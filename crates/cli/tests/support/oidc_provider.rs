//! A real OpenID Connect provider for integration tests: the npm package `oidc-provider`
//! (scripts/oidc-provider/server.mjs) on loopback, with short access-token lifetimes and
//! refresh-token rotation. Nobody here wrote it, so tests against it check authkeeper against a
//! provider that behaves like real ones do (including revoking the whole grant when a consumed
//! refresh token is replayed).
//!
//! `scripts/test` installs the npm packages and exports `AUTHKEEPER_OIDC_PROVIDER_DIR`; without
//! that variable the helper looks in `<repo>/scripts/oidc-provider`.
//!
//! ```ignore
//! let idp = OidcProvider::start(5)?;
//! let tokens = idp.login().await?;           // authorization code + PKCE through the login forms
//! let rt = tokens["refresh_token"].as_str().unwrap();
//! let resp = idp.refresh(rt).await?;         // rotates the refresh token
//! ```
#![allow(dead_code)]

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use serde_json::Value;
use url::Url;

/// The one client registered in server.mjs.
pub const CLIENT_ID: &str = "authkeeper-test";
pub const CLIENT_SECRET: &str = "authkeeper-test-secret";
/// Registered redirect URI. The client is a "native" client, so any port on a loopback host
/// (`http://127.0.0.1:<port>/callback`) is accepted as well (RFC 8252 §7.3).
pub const REDIRECT_URI: &str = "http://127.0.0.1/callback";
/// Scopes that yield an access token, an id token and a refresh token.
pub const SCOPE: &str = "openid offline_access api";

const READY_TIMEOUT: Duration = Duration::from_secs(90);
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Knobs for [`OidcProvider::start_with`].
#[derive(Debug, Clone)]
pub struct OidcProviderOptions {
    /// Access token (and client-credentials token) lifetime, seconds.
    pub access_ttl_secs: u64,
    /// Refresh token and grant lifetime, seconds.
    pub refresh_ttl_secs: u64,
}

impl Default for OidcProviderOptions {
    fn default() -> Self {
        Self {
            access_ttl_secs: 5,
            refresh_ttl_secs: 3600,
        }
    }
}

/// A running `oidc-provider` child process. Killed (and reaped) on drop.
pub struct OidcProvider {
    child: Child,
    // Kept open: the server exits when its stdin closes, so a crashed test binary leaves no
    // orphan node process behind.
    stdin: Option<ChildStdin>,
    issuer: String,
    port: u16,
    stderr: Arc<Mutex<String>>,
}

/// Directory holding `server.mjs` and `node_modules/oidc-provider`.
pub fn provider_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("AUTHKEEPER_OIDC_PROVIDER_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    repo_root().join("scripts").join("oidc-provider")
}

/// The workspace root (`crates/cli/../..`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("..")
}

impl OidcProvider {
    /// Starts the provider with the given access-token lifetime and defaults otherwise.
    pub fn start(access_ttl_secs: u64) -> Result<Self> {
        Self::start_with(OidcProviderOptions {
            access_ttl_secs,
            ..OidcProviderOptions::default()
        })
    }

    /// Starts the provider on a free loopback port and waits until it listens.
    pub fn start_with(options: OidcProviderOptions) -> Result<Self> {
        let dir = provider_dir();
        let server = dir.join("server.mjs");
        ensure!(
            server.is_file(),
            "oidc-provider server not found at {}: set AUTHKEEPER_OIDC_PROVIDER_DIR or run scripts/test",
            server.display()
        );
        ensure!(
            dir.join("node_modules").join("oidc-provider").is_dir(),
            "oidc-provider not installed in {}: run scripts/test (or `npm ci` there)",
            dir.display()
        );

        let mut child = Command::new("node")
            .arg(&server)
            .arg("0")
            .current_dir(&dir)
            .env("ACCESS_TTL", options.access_ttl_secs.to_string())
            .env("REFRESH_TTL", options.refresh_ttl_secs.to_string())
            .env_remove("PORT")
            .env_remove("OIDC_PROVIDER_WATCH_STDIN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning `node` for oidc-provider (is Node.js installed?)")?;

        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr_pipe = child.stderr.take().expect("piped stderr");

        let stderr = Arc::new(Mutex::new(String::new()));
        {
            let stderr = Arc::clone(&stderr);
            let echo = std::env::var_os("AUTHKEEPER_OIDC_PROVIDER_LOG").is_some();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr_pipe).lines() {
                    let Ok(line) = line else { break };
                    if echo {
                        eprintln!("[oidc-provider] {line}");
                    }
                    let mut log = stderr.lock().unwrap_or_else(|e| e.into_inner());
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }

        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let first = reader.read_line(&mut line).map(|_| line);
            let _ = ready_tx.send(first);
            // Keep draining so the child never blocks on a full pipe.
            let _ = std::io::copy(
                &mut reader.into_inner().take(u64::MAX),
                &mut std::io::sink(),
            );
        });

        let mut provider = OidcProvider {
            child,
            stdin,
            issuer: String::new(),
            port: 0,
            stderr,
        };

        let line = match ready_rx.recv_timeout(READY_TIMEOUT) {
            Ok(Ok(line)) if !line.trim().is_empty() => line,
            Ok(Ok(_)) => bail!(
                "oidc-provider exited before it was ready (run scripts/test to install it); stderr:\n{}",
                provider.wait_for_stderr()
            ),
            Ok(Err(e)) => bail!(
                "reading oidc-provider's ready line: {e}; stderr:\n{}",
                provider.wait_for_stderr()
            ),
            Err(_) => bail!(
                "oidc-provider did not print its ready line within {READY_TIMEOUT:?}; stderr:\n{}",
                provider.stderr_log()
            ),
        };
        let ready: Value = serde_json::from_str(line.trim())
            .with_context(|| format!("oidc-provider's ready line is not JSON: {line:?}"))?;
        provider.issuer = ready["issuer"]
            .as_str()
            .ok_or_else(|| anyhow!("ready line has no issuer: {line}"))?
            .to_owned();
        provider.port = ready["port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| anyhow!("ready line has no port: {line}"))?;
        Ok(provider)
    }

    /// Gives the stderr reader a moment to collect the output of an exited child.
    fn wait_for_stderr(&mut self) -> String {
        for _ in 0..20 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(100));
        self.stderr_log()
    }

    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }
    pub fn port(&self) -> u16 {
        self.port
    }
    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer)
    }
    pub fn authorization_url(&self) -> String {
        format!("{}/auth", self.issuer)
    }
    pub fn token_url(&self) -> String {
        format!("{}/token", self.issuer)
    }
    pub fn userinfo_url(&self) -> String {
        format!("{}/me", self.issuer)
    }
    pub fn device_authorization_url(&self) -> String {
        format!("{}/device/auth", self.issuer)
    }
    pub fn introspection_url(&self) -> String {
        format!("{}/token/introspection", self.issuer)
    }
    pub fn revocation_url(&self) -> String {
        format!("{}/token/revocation", self.issuer)
    }
    pub fn client_id(&self) -> &str {
        CLIENT_ID
    }
    pub fn client_secret(&self) -> &str {
        CLIENT_SECRET
    }
    pub fn redirect_uri(&self) -> &str {
        REDIRECT_URI
    }

    /// Everything the provider wrote to stderr so far (JSON event lines such as `grant.error`,
    /// `grant.revoked`, plus warnings). Set `AUTHKEEPER_OIDC_PROVIDER_LOG=1` to echo it live.
    pub fn stderr_log(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Scripted authorization-code login with PKCE S256 through the provider's development
    /// login and consent forms. Returns the token response (access_token, refresh_token,
    /// id_token, expires_in, scope, token_type).
    pub async fn login(&self) -> Result<Value> {
        self.login_as("alice").await
    }

    /// Like [`login`](Self::login) for a given subject (the login form's `login` field
    /// becomes the account id / `sub`).
    pub async fn login_as(&self, subject: &str) -> Result<Value> {
        let verifier = random_token();
        let challenge = base64url(&sha256(verifier.as_bytes()));
        let state = random_token();
        let mut auth = Url::parse(&self.authorization_url())?;
        auth.query_pairs_mut()
            .append_pair("client_id", CLIENT_ID)
            .append_pair("response_type", "code")
            .append_pair("redirect_uri", REDIRECT_URI)
            .append_pair("scope", SCOPE)
            .append_pair("prompt", "consent")
            .append_pair("state", &state)
            .append_pair("nonce", &random_token())
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");

        let (callback, page) = self
            .drive_interactions(browser_client()?, auth, REDIRECT_URI, subject)
            .await?;
        if let Some(page) = page {
            bail!("login flow ended at {callback} instead of the redirect URI:\n{page}");
        }
        let params: std::collections::HashMap<String, String> =
            callback.query_pairs().into_owned().collect();
        if let Some(error) = params.get("error") {
            bail!(
                "authorization failed: {error} {:?}",
                params.get("error_description")
            );
        }
        ensure!(
            params.get("state") == Some(&state),
            "state mismatch in {callback}"
        );
        if let Some(iss) = params.get("iss") {
            ensure!(iss == &self.issuer, "iss mismatch in {callback}");
        }
        let code = params
            .get("code")
            .ok_or_else(|| anyhow!("no code in {callback}"))?;

        let resp = api_client()?
            .post(self.token_url())
            .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", REDIRECT_URI),
                ("code_verifier", verifier.as_str()),
            ])
            .send()
            .await?;
        let status = resp.status();
        let body: Value = resp.json().await.context("token response is not JSON")?;
        ensure!(
            status.is_success(),
            "code exchange failed: {status} {body}\n{}",
            self.stderr_log()
        );
        ensure!(
            body.get("refresh_token").is_some(),
            "no refresh_token in {body}"
        );
        Ok(body)
    }

    /// Plays the browser for an authorization URL built by someone else (e.g. `authkeeper
    /// login` with `--no-browser`): logs in as `subject`, consents, and returns the URL the
    /// provider finally redirects to (the caller's `redirect_uri` with `code`, `state`, `iss`),
    /// without requesting it.
    pub async fn authorize_in_browser(
        &self,
        authorization_url: &str,
        subject: &str,
    ) -> Result<Url> {
        let url = Url::parse(authorization_url)?;
        let redirect_uri = url
            .query_pairs()
            .find(|(k, _)| k == "redirect_uri")
            .map(|(_, v)| v.into_owned())
            .ok_or_else(|| anyhow!("no redirect_uri in {url}"))?;
        let (callback, page) = self
            .drive_interactions(browser_client()?, url, &redirect_uri, subject)
            .await?;
        if let Some(page) = page {
            bail!("login flow ended at {callback} instead of the redirect URI:\n{page}");
        }
        Ok(callback)
    }

    /// Completes a device authorization (RFC 8628) as the user would in a browser: enters
    /// `user_code` at `/device`, confirms, logs in as `subject` and consents. Afterwards the
    /// device-code grant at `/token` succeeds.
    pub async fn approve_device(&self, user_code: &str, subject: &str) -> Result<()> {
        let client = browser_client()?;
        let device = Url::parse(&format!("{}/device", self.issuer))?;
        let resp = client.get(device.clone()).send().await?;
        let page = expect_page(resp).await?;
        let form = Form::parse(&page, &device)?;
        let mut fields = form.hidden;
        fields.push(("user_code".into(), user_code.into()));
        let resp = client
            .post(form.action.clone())
            .form(&fields)
            .send()
            .await?;
        let page = expect_page(resp).await?;
        let form = Form::parse(&page, &form.action)?;
        let mut fields = form.hidden;
        if !fields.iter().any(|(k, _)| k == "confirm") {
            fields.push(("confirm".into(), "yes".into()));
        }
        let resp = client
            .post(form.action.clone())
            .form(&fields)
            .send()
            .await?;
        ensure!(
            resp.status().is_redirection(),
            "device confirmation did not redirect: {}",
            resp.status()
        );
        let next = redirect_target(&resp, &form.action)?;
        // Nothing redirects out of the device flow: it ends on a "Sign-in Success" page.
        let (end, page) = self
            .drive_interactions(client, next, "\0never", subject)
            .await?;
        let page = page.unwrap_or_default();
        ensure!(
            page.contains("Sign-in Success"),
            "device flow ended at {end}:\n{page}"
        );
        Ok(())
    }

    /// Follows redirects and fills the login / consent forms until a redirect to a URL starting
    /// with `stop_at` (returns that URL) or a page without a form (returns its URL and text).
    async fn drive_interactions(
        &self,
        client: reqwest::Client,
        start: Url,
        stop_at: &str,
        subject: &str,
    ) -> Result<(Url, Option<String>)> {
        let mut resp = client.get(start.clone()).send().await?;
        let mut current = start;
        for _ in 0..20 {
            if resp.status().is_redirection() {
                let next = redirect_target(&resp, &current)?;
                if next.as_str().starts_with(stop_at) {
                    return Ok((next, None));
                }
                resp = client.get(next.clone()).send().await?;
                current = next;
                continue;
            }
            let page = expect_page(resp).await?;
            if !page.contains("<form") {
                // A final page (the device flow's "Sign-in Success").
                return Ok((current, Some(page)));
            }
            let form = Form::parse(&page, &current)?;
            let prompt = form
                .hidden
                .iter()
                .find(|(k, _)| k == "prompt")
                .map(|(_, v)| v.clone())
                .ok_or_else(|| anyhow!("form without a prompt field at {current}:\n{page}"))?;
            let mut fields = form.hidden.clone();
            match prompt.as_str() {
                "login" => {
                    fields.push(("login".into(), subject.into()));
                    fields.push(("password".into(), "any-password".into()));
                }
                "consent" => {}
                other => bail!("unexpected prompt {other:?} at {current}:\n{page}"),
            }
            resp = client
                .post(form.action.clone())
                .form(&fields)
                .send()
                .await?;
            current = form.action;
        }
        bail!("too many steps in the login flow (last at {current})")
    }

    /// `grant_type=refresh_token` at the token endpoint (client_secret_basic). Returns the raw
    /// response so tests can look at errors.
    pub async fn refresh(&self, refresh_token: &str) -> Result<reqwest::Response> {
        Ok(api_client()?
            .post(self.token_url())
            .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ])
            .send()
            .await?)
    }

    /// `grant_type=client_credentials` token response (scope `api`).
    pub async fn client_credentials(&self) -> Result<Value> {
        let resp = api_client()?
            .post(self.token_url())
            .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
            .form(&[("grant_type", "client_credentials"), ("scope", "api")])
            .send()
            .await?;
        let status = resp.status();
        let body: Value = resp.json().await?;
        ensure!(
            status.is_success(),
            "client_credentials failed: {status} {body}"
        );
        Ok(body)
    }

    /// HTTP status of `GET /me` with the access token (200 valid, 401 expired/revoked).
    pub async fn userinfo_status(&self, access_token: &str) -> Result<u16> {
        Ok(api_client()?
            .get(self.userinfo_url())
            .bearer_auth(access_token)
            .send()
            .await?
            .status()
            .as_u16())
    }

    /// Token introspection response (`{"active": bool, ...}`).
    pub async fn introspect(&self, token: &str) -> Result<Value> {
        let resp = api_client()?
            .post(self.introspection_url())
            .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
            .form(&[("token", token)])
            .send()
            .await?;
        let status = resp.status();
        let body: Value = resp.json().await?;
        ensure!(status.is_success(), "introspection failed: {status} {body}");
        Ok(body)
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client for API calls (no cookies, no redirects, no proxy).
fn api_client() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(HTTP_TIMEOUT)
        .build()?)
}

/// A "browser": a cookie jar, redirects followed by hand.
fn browser_client() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(HTTP_TIMEOUT)
        .build()?)
}

fn redirect_target(resp: &reqwest::Response, base: &Url) -> Result<Url> {
    let location = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .ok_or_else(|| anyhow!("{} from {base} without Location", resp.status()))?
        .to_str()?;
    Ok(base.join(location)?)
}

async fn expect_page(resp: reqwest::Response) -> Result<String> {
    let status = resp.status();
    let url = resp.url().clone();
    let body = resp.text().await?;
    ensure!(status.is_success(), "{status} at {url}:\n{body}");
    Ok(body)
}

/// The first `<form>` of a page: absolute action URL and its hidden inputs.
struct Form {
    action: Url,
    hidden: Vec<(String, String)>,
}

impl Form {
    fn parse(page: &str, base: &Url) -> Result<Self> {
        let start = page
            .find("<form")
            .ok_or_else(|| anyhow!("no <form> at {base}:\n{page}"))?;
        let end = page[start..]
            .find("</form>")
            .map_or(page.len(), |e| start + e);
        let form = &page[start..end];
        let tag_end = form.find('>').unwrap_or(form.len());
        let action = attr(&form[..tag_end], "action").unwrap_or_default();
        let action = base.join(&html_unescape(&action))?;
        let mut hidden = Vec::new();
        let mut rest = form;
        while let Some(i) = rest.find("<input") {
            let tag = &rest[i..];
            let close = tag.find('>').unwrap_or(tag.len());
            let tag_text = &tag[..close];
            if attr(tag_text, "type").as_deref() == Some("hidden")
                && let Some(name) = attr(tag_text, "name")
            {
                let value = attr(tag_text, "value").unwrap_or_default();
                hidden.push((html_unescape(&name), html_unescape(&value)));
            }
            rest = &tag[close..];
        }
        Ok(Form { action, hidden })
    }
}

fn attr(tag: &str, name: &str) -> Option<String> {
    for quote in ['"', '\''] {
        let needle = format!(" {name}={quote}");
        if let Some(i) = tag.find(&needle) {
            let value = &tag[i + needle.len()..];
            let j = value.find(quote)?;
            return Some(value[..j].to_owned());
        }
    }
    None
}

fn html_unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&#x2F;", "/")
        .replace("&#x3D;", "=")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// 256 bits of randomness as 64 hex characters (valid as a PKCE verifier, state or nonce).
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    let from_os = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_ok();
    if !from_os {
        use std::hash::{BuildHasher, Hasher};
        for chunk in bytes.chunks_mut(8) {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos()),
            );
            chunk.copy_from_slice(&h.finish().to_le_bytes());
        }
    }
    let mut out = String::with_capacity(64);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Unpadded base64url (RFC 4648 §5), as PKCE wants.
pub fn base64url(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

/// SHA-256, for the PKCE S256 challenge.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(data).into()
}
