//! Child processes in their own process group, killed as a group: the one helper behind login
//! commands (here and in `authkeeper-session`) and headless Chromium.
//!
//! A child started with [`ProcessGroup::command`] (or any command given `process_group(0)`)
//! leads a new process group; [`ProcessGroup`] kills that whole group with SIGKILL when asked or
//! when dropped, so a timed-out shell takes whatever it started with it. [`run_shell`] runs a
//! `sh -c` command line with a timeout, reading its stdout up to a limit and keeping the tail of
//! its stderr.
//!
//! [`ChildEnv`] decides what environment a child gets: never the store key or any variable the
//! configuration names as a secret (`env:NAME`), unless the configuration passes it through.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fmt;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _};
use zeroize::Zeroizing;

/// Sends SIGKILL to the process group led by `leader` (a child started with
/// `process_group(0)`). Does nothing for `None` or for pids 0 and 1.
pub fn kill_process_group(leader: Option<u32>) {
    let Some(pid) = leader.and_then(|id| i32::try_from(id).ok()) else {
        return;
    };
    if pid <= 1 {
        return;
    }
    // SAFETY: kill(2) with a negative pid signals the process group our child leads; it
    // touches no memory.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
}

/// Sends SIGKILL to one process. Does nothing for pids 0 and 1.
pub fn kill_process(pid: i32) {
    if pid <= 1 {
        return;
    }
    // SAFETY: kill(2) on a pid; it touches no memory.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

/// The prefix of authkeeper's own variables (`AUTHKEEPER_KEY`, `AUTHKEEPER_STORE`...): none of
/// them is inherited by a child unless passed through; a child gets the ones meant for it set
/// explicitly (`AUTHKEEPER_CREDENTIAL`, `AUTHKEEPER_URL`...).
pub const OWN_PREFIX: &str = "AUTHKEEPER_";

/// What a minimal child environment keeps from ours: what programs need to run, never a secret.
const MINIMAL: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TMPDIR",
    "TERM",
    "XDG_RUNTIME_DIR",
    "DISPLAY",
    "WAYLAND_DISPLAY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];

/// The environment children get, built once from the configuration.
///
/// A variable is *denied* when it is one of authkeeper's own ([`OWN_PREFIX`]) or named by the
/// configuration as a secret (an `env:NAME` reference, the store key); a denied variable reaches
/// a child only when the configuration passes it through (`[server] pass_env`).
/// [`ChildEnv::inherited`] (the program of `authkeeper exec`) is our environment minus the denied
/// variables; [`ChildEnv::minimal`] (login commands, browsers) keeps only what programs need to
/// run (`PATH`, `HOME`, locale, `TZ`, `TMPDIR`...) plus what is passed through.
#[derive(Clone, Default)]
pub struct ChildEnv {
    denied: Arc<BTreeSet<String>>,
    passed: Arc<BTreeSet<String>>,
}

impl fmt::Debug for ChildEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Variable names only, never values.
        f.debug_struct("ChildEnv")
            .field("denied", &self.denied)
            .field("passed", &self.passed)
            .finish()
    }
}

impl ChildEnv {
    /// Denies `denied` (besides authkeeper's own variables) and passes `passed` through.
    pub fn new(
        denied: impl IntoIterator<Item = String>,
        passed: impl IntoIterator<Item = String>,
    ) -> ChildEnv {
        ChildEnv {
            denied: Arc::new(denied.into_iter().collect()),
            passed: Arc::new(passed.into_iter().collect()),
        }
    }

    /// Whether `name` may reach a child.
    pub fn allows(&self, name: &str) -> bool {
        self.passed.contains(name) || !(name.starts_with(OWN_PREFIX) || self.denied.contains(name))
    }

    /// Our environment minus the denied variables (for a program the user runs).
    pub fn inherited(&self) -> Vec<(OsString, OsString)> {
        std::env::vars_os()
            .filter(|(name, _)| name.to_str().is_some_and(|name| self.allows(name)))
            .collect()
    }

    /// The variables programs need to run (`PATH`, `HOME`, locale, `TZ`, `TMPDIR`...) and those
    /// passed through, from our environment (for login commands and browsers).
    pub fn minimal(&self) -> Vec<(OsString, OsString)> {
        std::env::vars_os()
            .filter(|(name, _)| {
                name.to_str().is_some_and(|name| {
                    self.passed.contains(name)
                        || ((MINIMAL.contains(&name) || name.starts_with("LC_"))
                            && self.allows(name))
                })
            })
            .collect()
    }
}

/// The process group of a child: killed (SIGKILL) when dropped, unless disarmed.
#[derive(Debug)]
pub struct ProcessGroup {
    leader: Option<u32>,
}

impl ProcessGroup {
    /// A `tokio` command that will lead its own process group and is killed when its handle is
    /// dropped.
    pub fn command(program: impl AsRef<std::ffi::OsStr>) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(program);
        command.process_group(0).kill_on_drop(true);
        command
    }

    /// Guards the group led by the process `leader` (its pid).
    pub fn new(leader: Option<u32>) -> ProcessGroup {
        ProcessGroup { leader }
    }

    /// Kills the whole group now (it stays armed: dropping kills again, harmlessly).
    pub fn kill(&self) {
        kill_process_group(self.leader);
    }

    /// Stops guarding: dropping no longer kills.
    pub fn disarm(&mut self) {
        self.leader = None;
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What to do with a shell command's stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stderr {
    /// Pass it through to ours (a user running the CLI sees the command's messages).
    Inherit,
    /// Keep its last this many bytes for error messages.
    Tail(usize),
}

/// A `sh -c` command line to run.
#[derive(Clone)]
pub struct ShellCommand {
    /// The command line.
    pub command: String,
    /// The environment it starts from (nothing else of ours is inherited), usually
    /// [`ChildEnv::minimal`].
    pub base_env: Vec<(OsString, OsString)>,
    /// Variables added to the environment.
    pub env: Vec<(String, Zeroizing<String>)>,
    /// Kill the group after this long.
    pub timeout: Duration,
    /// Most stdout bytes kept; more is drained and reported as truncated.
    pub stdout_limit: usize,
    /// What happens to stderr.
    pub stderr: Stderr,
}

impl fmt::Debug for ShellCommand {
    // The command line may embed a secret by mistake; show only its program.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let program = self.command.split_whitespace().next().unwrap_or("");
        f.debug_struct("ShellCommand")
            .field("program", &program)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// What a finished shell command left.
pub struct ShellOutput {
    /// How it exited.
    pub status: ExitStatus,
    /// Its stdout, up to the limit. Zeroized when dropped.
    pub stdout: Zeroizing<Vec<u8>>,
    /// Whether stdout went past the limit.
    pub truncated: bool,
    /// The tail of its stderr ([`Stderr::Tail`]), lossy UTF-8, `…`-prefixed when cut.
    pub stderr_tail: String,
}

/// Why a shell command could not be run to its end.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShellError {
    /// `sh` could not be started or waited for, or a pipe failed.
    #[error("cannot run the command: {0}")]
    Io(#[from] std::io::Error),
    /// It ran longer than its timeout; its whole process group was killed.
    #[error("the command did not finish within {0:?}")]
    TimedOut(Duration),
}

/// Runs `shell` through `sh -c` in its own process group with stdin closed and only
/// `base_env` and `env` as its environment. On timeout, or if
/// this future is dropped, the whole group is killed and the shell reaped; once the shell has
/// exited, whatever it left running in its group is killed too.
pub async fn run_shell(shell: &ShellCommand) -> Result<ShellOutput, ShellError> {
    let mut process = ProcessGroup::command("sh");
    process
        .arg("-c")
        .arg(&shell.command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(match shell.stderr {
            Stderr::Inherit => Stdio::inherit(),
            Stderr::Tail(_) => Stdio::piped(),
        });
    process.env_clear().envs(shell.base_env.iter().cloned());
    for (key, value) in &shell.env {
        process.env(key, value.as_str());
    }
    let mut child = process.spawn()?;
    let mut group = ProcessGroup::new(child.id());
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| std::io::Error::other("no stdout pipe"))?;
    let stderr = child.stderr.take();
    let tail = match shell.stderr {
        Stderr::Tail(keep) => keep,
        Stderr::Inherit => 0,
    };
    let run = async {
        let (stdout, stderr_tail) = tokio::join!(read_capped(stdout, shell.stdout_limit), async {
            match stderr {
                Some(stderr) => read_tail(stderr, tail).await,
                None => String::new(),
            }
        });
        let status = child.wait().await;
        (stdout, stderr_tail, status)
    };
    let Ok((stdout, stderr_tail, status)) = tokio::time::timeout(shell.timeout, run).await else {
        group.kill();
        // The shell is dead (SIGKILL): reaping it takes no time.
        let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
        group.disarm();
        return Err(ShellError::TimedOut(shell.timeout));
    };
    // The shell has exited; whatever it left running in its group goes too.
    group.kill();
    group.disarm();
    let status = status?;
    let (stdout, truncated) = stdout?;
    Ok(ShellOutput {
        status,
        stdout,
        truncated,
        stderr_tail,
    })
}

/// Reads up to `limit` bytes, then drains the rest; returns whether more was written.
async fn read_capped(
    mut reader: impl AsyncRead + Unpin,
    limit: usize,
) -> std::io::Result<(Zeroizing<Vec<u8>>, bool)> {
    let mut output = Zeroizing::new(Vec::new());
    let mut buffer = Zeroizing::new(vec![0_u8; 16 * 1024]);
    let mut truncated = false;
    loop {
        let read = reader.read(&mut buffer).await?;
        if read == 0 {
            return Ok((output, truncated));
        }
        let room = limit.saturating_sub(output.len());
        if read > room {
            truncated = true;
        }
        output.extend_from_slice(&buffer[..read.min(room)]);
    }
}

/// Reads everything and keeps the last `keep` bytes, as lossy UTF-8.
async fn read_tail(mut reader: impl AsyncRead + Unpin, keep: usize) -> String {
    let mut tail: Vec<u8> = Vec::new();
    let mut buffer = vec![0_u8; 8 * 1024];
    let mut cut = false;
    loop {
        match reader.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => {
                tail.extend_from_slice(&buffer[..read]);
                if tail.len() > keep {
                    let excess = tail.len() - keep;
                    tail.drain(..excess);
                    cut = true;
                }
            }
        }
    }
    let text = String::from_utf8_lossy(&tail).into_owned();
    if cut { format!("…{text}") } else { text }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell(command: &str, timeout: Duration) -> ShellCommand {
        ShellCommand {
            command: command.to_owned(),
            base_env: ChildEnv::default().minimal(),
            env: vec![("GREETING".to_owned(), Zeroizing::new("hi".to_owned()))],
            timeout,
            stdout_limit: 8,
            stderr: Stderr::Tail(4),
        }
    }

    #[tokio::test]
    async fn captures_caps_and_tails() {
        let output = run_shell(&shell(
            "printf %s \"$GREETING\"; echo 0123456789 >&2",
            Duration::from_secs(10),
        ))
        .await
        .expect("runs");
        assert!(output.status.success());
        assert_eq!(&output.stdout[..], b"hi");
        assert!(!output.truncated);
        assert_eq!(output.stderr_tail, "…789\n");
        let long = run_shell(&shell("printf 0123456789", Duration::from_secs(10)))
            .await
            .expect("runs");
        assert!(long.truncated);
        assert_eq!(&long.stdout[..], b"01234567");
    }

    #[test]
    fn child_env_denies_our_secrets_unless_passed() {
        let env = ChildEnv::new(["CRM_SECRET".to_owned()], ["HTTP_PROXY".to_owned()]);
        assert!(!env.allows("AUTHKEEPER_KEY"));
        assert!(!env.allows("AUTHKEEPER_STORE"));
        assert!(!env.allows("CRM_SECRET"));
        assert!(env.allows("PATH") && env.allows("HTTP_PROXY"));
        let passing = ChildEnv::new(Vec::new(), ["AUTHKEEPER_STORE".to_owned()]);
        assert!(passing.allows("AUTHKEEPER_STORE"), "pass_env wins");
        assert!(!format!("{env:?}").contains('='));
    }

    #[tokio::test]
    async fn a_timeout_kills_the_whole_group() {
        let dir = std::env::temp_dir().join(format!("ak-pg-{}", std::process::id()));
        let marker = dir.display().to_string();
        // The shell starts a grandchild that would outlive it; the group kill takes both.
        let command = format!("sleep 30 & echo started; sleep 30 # {marker}");
        let error = run_shell(&shell(&command, Duration::from_millis(300)))
            .await
            .err()
            .expect("times out");
        assert!(matches!(error, ShellError::TimedOut(_)), "{error}");
        let survivors = std::fs::read_dir("/proc")
            .expect("/proc")
            .filter_map(Result::ok)
            .filter(|entry| {
                std::fs::read(entry.path().join("cmdline"))
                    .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(&marker))
            })
            .count();
        assert_eq!(survivors, 0, "a process of the group survived the timeout");
    }
}
