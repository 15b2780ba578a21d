//! `authkeeper exec NAME -- CMD...`: run a program with a token file kept fresh.
//!
//! The child finds the path of a file holding a valid access token in `AUTHKEEPER_TOKEN_FILE`
//! (mode 0600, in a private directory, replaced atomically by rename whenever a new generation
//! is stored, so a reader never sees a partial token). The engine runs in this process on the
//! embedded store and refreshes in the background. A private broker for the child listens on
//! a loopback port: its URL is in `AUTHKEEPER_URL` and a one-off key that may use only this
//! credential in `AUTHKEEPER_API_KEY` (token API and proxy, like `authkeeper serve`), and the
//! checkpoint of the task named by `--task` (default: the credential's name) at
//! `AUTHKEEPER_CHECKPOINT_URL` (`PUT`/`GET`/`DELETE`, same key). Signals are forwarded to the
//! child, and authkeeper exits with the child's status.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::Context as _;
use authkeeper_core::name::{CredentialName, TaskName};
use authkeeper_core::{Event, ExposeSecret as _, Keeper, KeeperSettings, RecordStore};
use authkeeper_server::config::{ClientConfig, Listen, Permission, ServerConfig};
use authkeeper_server::{Broker, BrokerConfig, NewKey, upstreams_from};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

use crate::cli::{ExecArgs, GlobalArgs};
use crate::context::Context;

/// Signals forwarded to the child.
const FORWARDED: [SignalKind; 6] = [
    SignalKind::interrupt(),
    SignalKind::terminate(),
    SignalKind::hangup(),
    SignalKind::quit(),
    SignalKind::user_defined1(),
    SignalKind::user_defined2(),
];

pub async fn run(global: &GlobalArgs, args: ExecArgs) -> anyhow::Result<ExitCode> {
    let (program, program_args) = args
        .command
        .split_first()
        .context("no command given after `--`")?;
    let context = Context::load(global)?;
    let store = context.open_store().await?;
    let (changed_tx, mut changed) = watch::channel(0u64);
    let name = args.name.clone();
    let sink = Arc::new(move |event: &Event<'_>| match event {
        Event::Refreshed {
            name: refreshed,
            generation,
            ..
        }
        | Event::Issued {
            name: refreshed,
            generation,
        } if *refreshed == name => {
            changed_tx.send_replace(*generation);
        }
        _ => {}
    });
    let sessions = context.session_pool(store.clone())?;
    let keeper = context.keeper_with_sinks(
        store.clone(),
        &[&args.name],
        KeeperSettings::default(),
        vec![sink],
        sessions.as_ref(),
    )?;
    let first = keeper.token(&args.name, Duration::ZERO).await?;
    let dir = RuntimeDir::create()?;
    let token_file = dir.path().join("token");
    write_atomically(&token_file, first.secret().expose_secret())?;
    let task = match &args.task {
        Some(task) => task.clone(),
        None => TaskName::new(&args.name)?,
    };
    let key = NewKey::generate();
    let broker = Broker::start(
        keeper.clone(),
        private_broker(
            &context,
            store.clone(),
            &args.name,
            &task,
            &key,
            sessions.as_deref(),
        )?,
    )
    .await
    .context("cannot start the private broker for the child")?;
    let writer = tokio::spawn(keep_fresh(
        keeper.clone(),
        args.name.clone(),
        token_file.clone(),
        first.generation(),
        {
            changed.mark_unchanged();
            changed
        },
    ));

    let mut child = tokio::process::Command::new(program)
        .args(program_args)
        // The child's own environment, minus what it must never see: the store key and every
        // secret the configuration references (unless `[server] pass_env` lists it).
        .env_clear()
        .envs(context.child_env().inherited())
        .env("AUTHKEEPER_TOKEN_FILE", &token_file)
        .env("AUTHKEEPER_CREDENTIAL", args.name.as_str())
        .env("AUTHKEEPER_URL", broker.url())
        .env("AUTHKEEPER_API_KEY", key.expose_key())
        .env(
            authkeeper_client::CHECKPOINT_URL_ENV,
            format!("{}/v1/checkpoints/{task}", broker.url()),
        )
        .spawn()
        .with_context(|| format!("cannot start {program}"))?;
    let pid = child.id();
    let mut signals = FORWARDED
        .iter()
        .map(|kind| signal(*kind).map(|stream| (*kind, stream)))
        .collect::<Result<Vec<_>, _>>()
        .context("cannot install signal handlers")?;
    let status = loop {
        let forwarded = futures_signal(&mut signals);
        tokio::select! {
            status = child.wait() => break status.context("waiting for the child")?,
            kind = forwarded => {
                if let Some(pid) = pid {
                    forward(pid, kind);
                }
            }
        }
    };
    writer.abort();
    // Stops the heartbeat and waits for a refresh in flight to be stored.
    if let Err(error) = broker.shutdown().await {
        tracing::warn!(error = %error, "private broker shutdown");
    }
    drop(dir);
    Ok(exit_code(status))
}

/// A broker on a free loopback port whose only client is `key`, limited to `name` and the
/// checkpoint of `task`.
fn private_broker(
    context: &Context,
    records: Arc<dyn RecordStore>,
    name: &str,
    task: &str,
    key: &NewKey,
    sessions: Option<&authkeeper_session::SessionPool>,
) -> anyhow::Result<BrokerConfig> {
    let mut credentials = context.config.credentials.clone();
    credentials.retain(|configured, _| configured == name);
    Ok(BrokerConfig {
        server: ServerConfig {
            listen: Listen::Tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
            ..ServerConfig::default()
        },
        clients: vec![ClientConfig {
            name: "exec".to_owned(),
            key_sha256: key.sha256().to_owned(),
            credentials: vec![name.to_owned()],
            sites: Vec::new(),
            checkpoints: vec![task.to_owned()],
            permissions: Some(vec![
                Permission::Token,
                Permission::Proxy,
                Permission::Checkpoints,
            ]),
        }],
        upstreams: upstreams_from(&credentials, sessions)?,
        metrics: None,
        heartbeat: true,
        readiness_probe: None,
        ..BrokerConfig::new(records)
    })
}

/// Waits for the first of the forwarded signals and returns its number.
async fn futures_signal(signals: &mut [(SignalKind, tokio::signal::unix::Signal)]) -> i32 {
    let waits = signals.iter_mut().map(|(kind, stream)| {
        let number = kind.as_raw_value();
        Box::pin(async move {
            stream.recv().await;
            number
        })
    });
    futures_util::future::select_all(waits).await.0
}

fn forward(pid: u32, signal: i32) {
    let (Ok(pid), Ok(signal)) = (
        i32::try_from(pid),
        nix::sys::signal::Signal::try_from(signal),
    ) else {
        return;
    };
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
}

fn exit_code(status: std::process::ExitStatus) -> ExitCode {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        (None, Some(signal)) => ExitCode::from(u8::try_from(128 + signal).unwrap_or(1)),
        (None, None) => ExitCode::FAILURE,
    }
}

/// Rewrites the token file whenever a new generation is stored.
async fn keep_fresh(
    keeper: Keeper,
    name: CredentialName,
    path: PathBuf,
    mut written: u64,
    mut changed: watch::Receiver<u64>,
) {
    while changed.changed().await.is_ok() {
        match keeper.token(&name, Duration::ZERO).await {
            Ok(token) if token.generation() > written => {
                if let Err(error) = write_atomically(&path, token.secret().expose_secret()) {
                    tracing::error!(error = %error, "cannot update the token file");
                    continue;
                }
                written = token.generation();
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(credential = %name, error = %error, "no fresh token for the token file")
            }
        }
    }
}

/// Writes `token` to `path` through a temporary file and a rename, mode 0600.
fn write_atomically(path: &Path, token: &str) -> anyhow::Result<()> {
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    file.write_all(token.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
        .with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}

/// A private directory (mode 0700) removed when dropped: under `$XDG_RUNTIME_DIR` when set,
/// else the system temporary directory.
struct RuntimeDir(tempfile::TempDir);

impl RuntimeDir {
    fn create() -> anyhow::Result<RuntimeDir> {
        let base = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|dir| dir.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        let dir = tempfile::Builder::new()
            .prefix("authkeeper-exec-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir_in(&base)
            .with_context(|| format!("cannot create a private directory in {}", base.display()))?;
        Ok(RuntimeDir(dir))
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}
