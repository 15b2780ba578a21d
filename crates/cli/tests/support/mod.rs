//! Shared helpers for the CLI's integration tests: a temp workspace with a config file, the
//! `authkeeper` binary, and real identity providers.

pub mod oidc_provider;

use std::path::{Path, PathBuf};
use std::process::Output;

use tempfile::TempDir;

/// The `authkeeper` binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_authkeeper")
}

/// A temporary directory with an `authkeeper.toml` whose store lives beside it.
pub struct Workspace {
    pub dir: TempDir,
}

impl Workspace {
    /// A workspace whose config holds `credentials` (TOML `[credentials.*]` tables).
    pub fn new(credentials: &str) -> Workspace {
        let dir = authkeeper_testkit::temp_dir();
        let config = format!("[store]\npath = \"authkeeper.db\"\n\n{credentials}\n");
        std::fs::write(dir.path().join("authkeeper.toml"), config).expect("config");
        Workspace { dir }
    }

    /// A workspace with one refresh_token credential `name` for `token_url`.
    pub fn with_credential(
        name: &str,
        token_url: &str,
        client_id: &str,
        client_secret: &str,
    ) -> Workspace {
        Workspace::new(&format!(
            "[credentials.{name}]\ntoken_url = \"{token_url}\"\nclient_id = \"{client_id}\"\nclient_secret = \"{client_secret}\"\n"
        ))
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config(&self) -> PathBuf {
        self.path().join("authkeeper.toml")
    }

    pub fn store(&self) -> PathBuf {
        self.path().join("authkeeper.db")
    }

    /// `authkeeper --config <ws>/authkeeper.toml ARGS...` with a clean environment.
    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(bin());
        command
            .arg("--config")
            .arg(self.config())
            .args(args)
            .env_remove("AUTHKEEPER_KEY")
            .env_remove("AUTHKEEPER_STORE")
            .env_remove("RUST_LOG")
            .env("AUTHKEEPER_LOG", "warn")
            .kill_on_drop(true);
        command
    }

    /// Runs a command to completion with `stdin` as its input.
    pub async fn run(&self, args: &[&str], stdin: &[u8]) -> Output {
        run_with_input(self.command(args), stdin).await
    }

    /// Imports a token response JSON as credential `name`; panics when it fails.
    pub async fn import(&self, name: &str, response: &serde_json::Value) {
        let out = self
            .run(&["import", name], response.to_string().as_bytes())
            .await;
        assert!(
            out.status.success(),
            "import failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `authkeeper token NAME`: the printed token, or the failed output.
    pub async fn token(&self, name: &str) -> Result<String, Output> {
        let out = self.run(&["token", name], b"").await;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(out)
        }
    }

    /// The stored generation, read with `authkeeper status --json`.
    pub async fn generation(&self, name: &str) -> u64 {
        let out = self.run(&["status", "--json"], b"").await;
        assert!(
            out.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status json");
        list.as_array()
            .and_then(|rows| rows.iter().find(|row| row["name"] == name))
            .and_then(|row| row["generation"].as_u64())
            .unwrap_or(0)
    }
}

/// Runs `command` with `stdin` piped in, capturing its output.
pub async fn run_with_input(mut command: tokio::process::Command, stdin: &[u8]) -> Output {
    use tokio::io::AsyncWriteExt as _;
    command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().expect("spawn authkeeper");
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin).await.expect("write stdin");
    }
    child.wait_with_output().await.expect("authkeeper output")
}

/// A running `authkeeper serve` of a workspace; killed when dropped.
pub struct ServeProcess {
    /// Killed when dropped (`kill_on_drop`).
    _child: tokio::process::Child,
    pub url: String,
}

impl ServeProcess {
    /// Starts `authkeeper serve` in `workspace` (whose config listens on `127.0.0.1:0`) and
    /// waits for the line naming its URL.
    pub async fn start(workspace: &Workspace) -> ServeProcess {
        use tokio::io::AsyncBufReadExt as _;
        let mut child = workspace
            .command(&["serve"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("authkeeper serve");
        let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        let line = tokio::time::timeout(std::time::Duration::from_secs(20), lines.next_line())
            .await
            .expect("broker started in time")
            .expect("read")
            .expect("listening line");
        let url = line
            .rsplit(' ')
            .next()
            .expect("url at the end of the line")
            .to_owned();
        ServeProcess { _child: child, url }
    }
}
