//! Child processes in their own process group, killed as a group: the one helper behind login
//! commands (here and in `authkeeper-session`) and headless Chromium.
//!
//! A child started with [`ProcessGroup::command`] (or any command given `process_group(0)`)
//! leads a new process group; [`ProcessGroup`] kills that whole group with SIGKILL when asked or
//! when dropped, so a timed-out shell takes whatever it started with it. [`run_shell`] runs a
//! `sh -c` command line with a timeout, reading its stdout up to a limit and keeping the tail of
//! its stderr.

use std::fmt;
use std::process::{ExitStatus, Stdio};
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

/// Runs `shell` through `sh -c` in its own process group with stdin closed. On timeout, or if
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
