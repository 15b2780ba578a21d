//! The external login command: any program that prints a token response JSON on stdout (a
//! headless-browser script, a vault lookup, a company SSO helper).
//!
//! The program runs through `sh -c` in its own process group, with stdin closed and stderr
//! passed through. Its stdout is read up to 1 MiB. A non-zero exit, a timeout (the whole group
//! is killed), or output that is not a token response are errors; nothing is returned then, so
//! the caller stores nothing and the previous token set stays. Retrying with backoff is the
//! caller's decision.

use std::fmt;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt as _;
use zeroize::Zeroizing;

use super::{LoginError, MAX_BODY};
use crate::token::{TokenResponse, TokenResponseError};

/// An external login command to run.
#[derive(Clone)]
pub struct LoginCommand {
    /// The shell command line.
    pub command: String,
    /// Kill it after this long.
    pub timeout: Duration,
    /// Extra environment variables (never secrets: the command gets its own).
    pub env: Vec<(String, String)>,
}

impl fmt::Debug for LoginCommand {
    // The command line may embed a secret by mistake; show only its program.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let program = self.command.split_whitespace().next().unwrap_or("");
        f.debug_struct("LoginCommand")
            .field("program", &program)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Runs `command` and reads the token response it prints.
pub async fn run_login_command(command: &LoginCommand) -> Result<TokenResponse, LoginError> {
    let mut process = tokio::process::Command::new("sh");
    process
        .arg("-c")
        .arg(&command.command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0)
        .kill_on_drop(true);
    for (key, value) in &command.env {
        process.env(key, value);
    }
    let mut child = process.spawn().map_err(LoginError::CommandSpawn)?;
    let group = child.id();
    let Some(mut stdout) = child.stdout.take() else {
        kill_group(group);
        return Err(LoginError::CommandSpawn(std::io::Error::other(
            "no stdout pipe",
        )));
    };
    let run = async {
        let mut output = Zeroizing::new(Vec::new());
        let limit = u64::try_from(MAX_BODY).unwrap_or(u64::MAX) + 1;
        let read = (&mut stdout)
            .take(limit)
            .read_to_end(&mut output)
            .await
            .map_err(LoginError::CommandSpawn)?;
        if read > MAX_BODY {
            return Err(LoginError::CommandOutputTooLarge);
        }
        let status = child.wait().await.map_err(LoginError::CommandSpawn)?;
        Ok((status, output))
    };
    let outcome = tokio::time::timeout(command.timeout, run).await;
    let (status, output) = match outcome {
        Ok(Ok(done)) => done,
        Ok(Err(error)) => {
            kill_group(group);
            return Err(error);
        }
        Err(_elapsed) => {
            kill_group(group);
            return Err(LoginError::CommandTimedOut(command.timeout));
        }
    };
    if !status.success() {
        return Err(LoginError::CommandFailed {
            status: status.to_string(),
        });
    }
    TokenResponse::parse_tokens(&output).map_err(|error| match error {
        // The start of a non-JSON output could be a bare token: never quote it.
        TokenResponseError::NotJson { .. } => LoginError::CommandOutputNotJson {
            bytes: output.len(),
        },
        other => LoginError::CommandOutput(other),
    })
}

/// Kills the command's whole process group (the shell and whatever it started).
fn kill_group(group: Option<u32>) {
    let Some(pid) = group.and_then(|id| i32::try_from(id).ok()) else {
        return;
    };
    if pid <= 0 {
        return;
    }
    // SAFETY: kill(2) with a negative pid signals the process group we created with
    // process_group(0); it touches no memory.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
}
