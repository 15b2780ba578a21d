//! A real headless Chromium driven over the DevTools protocol (CDP), for login recipes.
//!
//! [`Chromium::launch`] starts the system Chromium (`AUTHKEEPER_CHROMIUM`, default
//! `/usr/bin/chromium`) headless, in its own process group, with a fresh temporary
//! `--user-data-dir` and the flags a closed network needs (`--no-sandbox --disable-gpu
//! --disable-quic --no-first-run --disable-background-networking --disable-component-update
//! --disable-sync`), and connects to its DevTools endpoint (`--remote-debugging-port=0`, read
//! from its stderr).
//!
//! The browser is always cleaned up: [`Chromium::close`] (on success and on error) and dropping
//! a [`Chromium`] (on timeout, or when the future owning it is dropped) kill the whole process
//! group with SIGKILL, reap the browser process, kill any stray process still naming the profile
//! directory, and remove the profile. [`chromium_processes_with_profile`] counts live processes
//! using a profile directory, so tests can prove none is left.
//!
//! A proxy identity (`http://user:pass@host:port`) is passed as `--proxy-server` without its
//! credentials; the credentials answer the proxy's challenge through CDP
//! (`Fetch.authRequired`, enabled per page by [`Chromium::new_page`]).
//!
//! chromiumoxide logs every CDP message at `trace` level (cookie values, typed passwords): its
//! connection is driven in a task with tracing switched off, so nothing of it reaches a log.

use std::collections::VecDeque;
use std::fmt;
use std::io::{BufRead as _, BufReader};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chromiumoxide::cdp::browser_protocol::fetch::{EnableParams, RequestPattern};
use chromiumoxide::handler::HandlerConfig;
use chromiumoxide::{Browser, Page};
use futures_util::StreamExt as _;
use tokio::task::JoinHandle;
use tracing::instrument::WithSubscriber as _;
use url::Url;
use zeroize::Zeroizing;

use authkeeper_login::process::{ChildEnv, kill_process, kill_process_group};

use crate::login::LoginError;

/// The environment variable naming the Chromium executable.
pub const CHROMIUM_ENV: &str = "AUTHKEEPER_CHROMIUM";
/// Where Chromium is looked for when [`CHROMIUM_ENV`] is not set (Debian's `chromium`).
pub const DEFAULT_CHROMIUM: &str = "/usr/bin/chromium";

/// Lines of Chromium's stderr kept for error messages.
const STDERR_LINES: usize = 12;

/// The Chromium executable: `AUTHKEEPER_CHROMIUM` or `/usr/bin/chromium`.
pub fn chromium_path() -> PathBuf {
    std::env::var_os(CHROMIUM_ENV)
        .filter(|value| !value.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_CHROMIUM), PathBuf::from)
}

/// How Chromium is started.
#[derive(Clone)]
pub struct LaunchOptions {
    /// The executable (default: [`chromium_path`]).
    pub executable: PathBuf,
    /// The proxy identity, e.g. `http://user:pass@proxy:3128` (a secret: never logged).
    pub proxy: Option<Zeroizing<String>>,
    /// Where the temporary profile directories are created (default: the system temp dir).
    pub profile_root: Option<PathBuf>,
    /// Bound on starting Chromium and connecting to it.
    pub launch_timeout: Duration,
    /// Extra command-line flags.
    pub extra_args: Vec<String>,
    /// What the browser gets of our environment ([`ChildEnv::minimal`]: never the store key or a
    /// secret the configuration references).
    pub child_env: ChildEnv,
    /// The session's identity, applied to every page ([`Chromium::new_page`]); none: Chromium's
    /// own, except that a headless Chromium does not say `HeadlessChrome` in its user agent.
    pub identity: Option<crate::identity::Identity>,
}

impl Default for LaunchOptions {
    fn default() -> Self {
        LaunchOptions {
            executable: chromium_path(),
            proxy: None,
            profile_root: None,
            launch_timeout: Duration::from_secs(20),
            extra_args: Vec::new(),
            child_env: ChildEnv::default(),
            identity: None,
        }
    }
}

impl fmt::Debug for LaunchOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LaunchOptions")
            .field("executable", &self.executable)
            .field("proxy", &self.proxy.as_ref().map(|_| "[redacted]"))
            .field("profile_root", &self.profile_root)
            .field("launch_timeout", &self.launch_timeout)
            .field("extra_args", &self.extra_args)
            .field("child_env", &self.child_env)
            .field("identity", &self.identity)
            .finish()
    }
}

/// A running headless Chromium with a CDP connection. Dropping it kills the browser.
pub struct Chromium {
    browser: Browser,
    handler: JoinHandle<()>,
    process: ChromiumProcess,
    proxy_credentials: Option<(Zeroizing<String>, Zeroizing<String>)>,
    identity: Option<crate::identity::Identity>,
}

impl fmt::Debug for Chromium {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chromium")
            .field("pid", &self.process.pid)
            .field("profile", &self.process.profile)
            .finish_non_exhaustive()
    }
}

impl Chromium {
    /// Starts Chromium and connects to it.
    pub async fn launch(options: &LaunchOptions) -> Result<Chromium, LoginError> {
        let executable = &options.executable;
        if !executable.is_file() {
            return Err(LoginError::BrowserNotFound {
                path: executable.display().to_string(),
            });
        }
        let proxy = options
            .proxy
            .as_ref()
            .map(|proxy| ProxySettings::parse(proxy))
            .transpose()?;
        let profile = create_profile_dir(options.profile_root.as_deref())
            .map_err(|error| LoginError::Browser(format!("cannot create a profile: {error}")))?;
        let mut command = std::process::Command::new(executable);
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--disable-default-apps",
                "--disable-dev-shm-usage",
                "--disable-breakpad",
                "--disable-domain-reliability",
                "--disable-client-side-phishing-detection",
                "--disable-features=Translate,MediaRouter,OptimizationHints,AutofillServerCommunication",
                "--metrics-recording-only",
                "--password-store=basic",
                "--use-mock-keychain",
                "--mute-audio",
                "--hide-scrollbars",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()));
        if let Some(proxy) = &proxy {
            // Everything through the proxy, loopback included: a session's egress is part of
            // its identity (Chromium bypasses proxies for loopback unless told not to).
            command
                .arg(format!("--proxy-server={}", proxy.server))
                .arg("--proxy-bypass-list=<-loopback>");
        }
        command
            .args(&options.extra_args)
            .arg("about:blank")
            .env_clear()
            .envs(options.child_env.minimal())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut process = match command.spawn() {
            Ok(child) => ChromiumProcess::new(child, profile.clone()),
            Err(error) => {
                let _ = std::fs::remove_dir_all(&profile);
                return Err(LoginError::Browser(format!(
                    "cannot start {}: {error}",
                    executable.display()
                )));
            }
        };
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        let (url_sender, url_receiver) = tokio::sync::oneshot::channel();
        if let Some(stderr) = process.child.as_mut().and_then(|child| child.stderr.take()) {
            let tail = Arc::clone(&stderr_tail);
            // Drains stderr for the browser's whole life, so it never blocks on a full pipe.
            let spawned = std::thread::Builder::new()
                .name("chromium-stderr".to_owned())
                .spawn(move || read_stderr(stderr, url_sender, &tail));
            if let Err(error) = spawned {
                process.kill_and_reap();
                return Err(LoginError::Browser(format!(
                    "cannot start a thread: {error}"
                )));
            }
        }
        let ws_url = match tokio::time::timeout(options.launch_timeout, url_receiver).await {
            Ok(Ok(url)) => url,
            Ok(Err(_closed)) => {
                let status = process.kill_and_reap();
                return Err(LoginError::Browser(format!(
                    "Chromium exited before opening its DevTools endpoint ({}){}",
                    status.unwrap_or_else(|| "status unknown".to_owned()),
                    tail_text(&stderr_tail)
                )));
            }
            Err(_elapsed) => {
                process.kill_and_reap();
                return Err(LoginError::Browser(format!(
                    "Chromium did not open its DevTools endpoint within {}{}",
                    humantime_serde::re::humantime::format_duration(options.launch_timeout),
                    tail_text(&stderr_tail)
                )));
            }
        };
        let config = HandlerConfig {
            request_timeout: Duration::from_secs(30),
            ..HandlerConfig::default()
        };
        let connected = tokio::time::timeout(
            options.launch_timeout,
            Browser::connect_with_config(ws_url, config),
        )
        .await;
        let (browser, mut handler) = match connected {
            Ok(Ok(connected)) => connected,
            Ok(Err(error)) => {
                process.kill_and_reap();
                return Err(LoginError::Browser(format!(
                    "cannot connect to Chromium's DevTools endpoint: {error}"
                )));
            }
            Err(_elapsed) => {
                process.kill_and_reap();
                return Err(LoginError::Browser(
                    "connecting to Chromium's DevTools endpoint timed out".to_owned(),
                ));
            }
        };
        let handler = tokio::spawn(
            async move {
                while let Some(event) = handler.next().await {
                    if event.is_err() {
                        break;
                    }
                }
            }
            // chromiumoxide traces whole CDP messages (values included): keep them out of logs.
            .with_subscriber(tracing::subscriber::NoSubscriber::default()),
        );
        Ok(Chromium {
            browser,
            handler,
            process,
            proxy_credentials: proxy.and_then(|proxy| proxy.credentials),
            identity: options.identity.clone(),
        })
    }

    /// Opens a new page (tab), answering proxy authentication when the proxy has credentials.
    pub async fn new_page(&self) -> Result<Page, LoginError> {
        let page = self
            .browser
            .new_page("about:blank")
            .await
            .map_err(|error| LoginError::Browser(format!("cannot open a page: {error}")))?;
        if let Some((username, password)) = &self.proxy_credentials {
            page.authenticate(chromiumoxide::auth::Credentials {
                username: username.to_string(),
                password: password.to_string(),
            })
            .await
            .map_err(|error| {
                LoginError::Browser(format!("cannot enable proxy authentication: {error}"))
            })?;
            // `authenticate` enables interception asynchronously; enabling it here as well (the
            // same parameters) makes sure it is on before the first navigation.
            let enable = EnableParams::builder()
                .handle_auth_requests(true)
                .pattern(RequestPattern::builder().url_pattern("*").build())
                .build();
            page.execute(enable).await.map_err(|error| {
                LoginError::Browser(format!("cannot enable proxy authentication: {error}"))
            })?;
        }
        self.emulate(&page).await?;
        Ok(page)
    }

    /// Applies the session's identity to `page` (user agent, `Accept-Language`, platform,
    /// locale, time zone, window size) before its first navigation.
    async fn emulate(&self, page: &Page) -> Result<(), LoginError> {
        use chromiumoxide::cdp::browser_protocol::emulation::{
            SetDeviceMetricsOverrideParams, SetLocaleOverrideParams, SetTimezoneOverrideParams,
            SetUserAgentOverrideParams,
        };
        let failed = |what: &str, error: chromiumoxide::error::CdpError| {
            LoginError::Browser(format!("cannot set the {what}: {error}"))
        };
        let identity = self.identity.as_ref();
        let user_agent = match identity.and_then(|i| i.user_agent.clone()) {
            Some(user_agent) => user_agent,
            None => self
                .browser
                .user_agent()
                .await
                .map_err(|e| failed("user agent", e))?
                .replace("HeadlessChrome", "Chrome"),
        };
        let mut agent = SetUserAgentOverrideParams::new(user_agent);
        if let Some(identity) = identity {
            agent.accept_language = Some(identity.accept_language());
            agent.platform = identity.platform.clone();
        }
        page.execute(agent)
            .await
            .map_err(|e| failed("user agent", e))?;
        let Some(identity) = identity else {
            return Ok(());
        };
        page.execute(
            SetLocaleOverrideParams::builder()
                .locale(identity.locale.replace('-', "_"))
                .build(),
        )
        .await
        .map_err(|e| failed("locale", e))?;
        page.execute(SetTimezoneOverrideParams::new(identity.timezone_id.clone()))
            .await
            .map_err(|e| failed("time zone", e))?;
        page.execute(SetDeviceMetricsOverrideParams::new(
            i64::from(identity.viewport.width),
            i64::from(identity.viewport.height),
            1.0,
            false,
        ))
        .await
        .map_err(|e| failed("window size", e))?;
        Ok(())
    }

    /// The CDP connection (browser-level commands such as `Storage.getCookies`).
    pub fn cdp(&self) -> &Browser {
        &self.browser
    }

    /// The temporary profile directory (`--user-data-dir`).
    pub fn profile_dir(&self) -> &Path {
        &self.process.profile
    }

    /// The browser process id.
    pub fn pid(&self) -> u32 {
        self.process.pid
    }

    /// Stops the browser: kills its process group (SIGKILL), kills any stray process naming
    /// the profile, reaps the browser and removes the profile, on a blocking thread (dropping
    /// this future part-way still finishes the cleanup).
    ///
    /// Chromium's helper processes (zygotes) are the browser's children: once it is gone they
    /// are re-parented to PID 1, which reaps them. In a container, run the broker under an
    /// init (`docker run --init`, tini) so that PID 1 reaps.
    pub async fn close(mut self) {
        self.handler.abort();
        let mut process = std::mem::take(&mut self.process);
        let cleanup = tokio::task::spawn_blocking(move || {
            process.kill_and_reap();
            process.remove_profile();
        });
        let _ = cleanup.await;
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        self.handler.abort();
        // `process` drops right after: it kills, reaps and removes the profile.
    }
}

/// The browser process and its profile directory; dropping it kills, reaps and removes.
#[derive(Default)]
struct ChromiumProcess {
    child: Option<Child>,
    pid: u32,
    profile: PathBuf,
}

impl ChromiumProcess {
    fn new(child: Child, profile: PathBuf) -> Self {
        ChromiumProcess {
            pid: child.id(),
            child: Some(child),
            profile,
        }
    }

    /// Kills the process group and any stray process naming the profile, and reaps the browser.
    /// Returns the browser's exit status when it had one.
    fn kill_and_reap(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        let status = match child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            _ => None,
        };
        // Helpers (zygote, renderers) are in the same group even when the browser has exited.
        kill_process_group(Some(self.pid));
        let _ = child.kill();
        let _ = child.wait();
        self.child = None;
        if !self.profile.as_os_str().is_empty() {
            kill_processes_with_profile(&self.profile);
        }
        status
    }

    fn remove_profile(&mut self) {
        if self.profile.as_os_str().is_empty() {
            return;
        }
        // Chromium keeps its singleton socket in a scratch directory of its own under the temp
        // dir (`org.chromium.Chromium.*`), linked from the profile: a killed browser leaves it.
        if let Ok(target) = std::fs::read_link(self.profile.join("SingletonSocket"))
            && let Some(scratch) = target.parent()
            && scratch
                .file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with("org.chromium.Chromium."))
        {
            let _ = std::fs::remove_dir_all(scratch);
        }
        // Chromium may still be writing when killed; a second try catches late files.
        if std::fs::remove_dir_all(&self.profile).is_err() {
            std::thread::sleep(Duration::from_millis(50));
            let _ = std::fs::remove_dir_all(&self.profile);
        }
        self.profile = PathBuf::new();
    }
}

impl Drop for ChromiumProcess {
    fn drop(&mut self) {
        self.kill_and_reap();
        self.remove_profile();
    }
}

/// Reads Chromium's stderr: sends the DevTools URL once, keeps the last lines.
fn read_stderr(
    stderr: std::process::ChildStderr,
    url_sender: tokio::sync::oneshot::Sender<String>,
    tail: &Mutex<VecDeque<String>>,
) {
    let mut url_sender = Some(url_sender);
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end();
        if let Some(url) = text.strip_prefix("DevTools listening on ") {
            if let Some(sender) = url_sender.take() {
                let _ = sender.send(url.trim().to_owned());
            }
            continue;
        }
        if let Ok(mut tail) = tail.lock() {
            if tail.len() == STDERR_LINES {
                tail.pop_front();
            }
            tail.push_back(text.chars().take(300).collect());
        }
    }
}

fn tail_text(tail: &Mutex<VecDeque<String>>) -> String {
    let Ok(tail) = tail.lock() else {
        return String::new();
    };
    if tail.is_empty() {
        return String::new();
    }
    let lines: Vec<&str> = tail.iter().map(String::as_str).collect();
    format!("; stderr: {}", lines.join(" | "))
}

/// Creates a fresh, private profile directory under `root` (default: the temp dir).
fn create_profile_dir(root: Option<&Path>) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt as _;
    let root = root.map_or_else(std::env::temp_dir, Path::to_path_buf);
    std::fs::create_dir_all(&root)?;
    let mut last_error = None;
    for _ in 0..8 {
        let name = format!(
            "authkeeper-chromium-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        );
        let path = root.join(name);
        match std::fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => return Ok(path),
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                last_error = Some(error);
            }
            Err(error) => return Err(error),
        }
    }
    Err(last_error.unwrap_or_else(|| std::io::Error::other("no free profile name")))
}

/// The pids of live processes (other than this one) whose command line names `dir`.
fn processes_with_profile(dir: &Path) -> Vec<i32> {
    let needle = dir.as_os_str().as_encoded_bytes();
    if needle.is_empty() {
        return Vec::new();
    }
    let own = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != own)
        .filter(|pid| {
            // A zombie's cmdline is empty; a live process naming the profile matches.
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
                cmdline
                    .split(|byte| *byte == 0)
                    .any(|arg| arg.windows(needle.len()).any(|window| window == needle))
            })
        })
        .filter_map(|pid| i32::try_from(pid).ok())
        .collect()
}

/// How many live processes name `dir` (a profile directory, or a directory containing
/// profiles) on their command line. Zero once every browser using it has been cleaned up.
pub fn chromium_processes_with_profile(dir: &Path) -> usize {
    processes_with_profile(dir).len()
}

fn kill_processes_with_profile(dir: &Path) {
    for pid in processes_with_profile(dir) {
        kill_process(pid);
    }
}

/// A proxy identity split into Chromium's `--proxy-server` value and its credentials.
struct ProxySettings {
    server: String,
    credentials: Option<(Zeroizing<String>, Zeroizing<String>)>,
}

impl ProxySettings {
    /// Parses `scheme://[user[:pass]@]host[:port]`; errors never quote the URL.
    fn parse(proxy: &str) -> Result<ProxySettings, LoginError> {
        let invalid = || {
            LoginError::Config(
                "the account's proxy is not a URL like http://user:pass@host:port".to_owned(),
            )
        };
        let url = Url::parse(proxy).map_err(|_| invalid())?;
        let host = url.host_str().ok_or_else(invalid)?;
        let scheme = url.scheme();
        if !matches!(scheme, "http" | "https" | "socks4" | "socks5") {
            return Err(invalid());
        }
        let server = match url.port() {
            Some(port) => format!("{scheme}://{host}:{port}"),
            None => format!("{scheme}://{host}"),
        };
        let credentials = if url.username().is_empty() {
            None
        } else {
            Some((
                Zeroizing::new(percent_decode(url.username())),
                Zeroizing::new(percent_decode(url.password().unwrap_or(""))),
            ))
        };
        Ok(ProxySettings {
            server,
            credentials,
        })
    }
}

/// Decodes `%XX` escapes (as the URL parser leaves them in user info).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' && index + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[index + 1..index + 3]).ok();
            if let Some(value) = hex.and_then(|hex| u8::from_str_radix(hex, 16).ok()) {
                out.push(value);
                index += 3;
                continue;
            }
        }
        out.push(bytes[index]);
        index += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_credentials_are_stripped_from_the_flag() {
        let proxy = ProxySettings::parse("http://us%40er:p%3Ass@proxy.local:3128").unwrap();
        assert_eq!(proxy.server, "http://proxy.local:3128");
        let (user, pass) = proxy.credentials.unwrap();
        assert_eq!(user.as_str(), "us@er");
        assert_eq!(pass.as_str(), "p:ss");
        assert!(
            ProxySettings::parse("http://proxy.local:3128")
                .unwrap()
                .credentials
                .is_none()
        );
        let error = ProxySettings::parse("not a url with secret").err().unwrap();
        assert!(!error.to_string().contains("secret"));
    }

    #[test]
    fn debug_hides_the_proxy() {
        let options = LaunchOptions {
            proxy: Some(Zeroizing::new("http://u:hunter2@p:1".to_owned())),
            ..LaunchOptions::default()
        };
        assert!(!format!("{options:?}").contains("hunter2"));
    }
}
