//! A throwaway `redis-server` per test: a free loopback port, a temp dir, no persistence unless
//! asked, stopped (by PID) on drop. The binary comes from `AUTHKEEPER_REDIS_SERVER` (set by
//! scripts/test) or `PATH`; a missing binary fails the test with a clear message.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
    args: Vec<String>,
}

fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("AUTHKEEPER_REDIS_SERVER").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("redis-server"))
            .find(|candidate| candidate.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "redis-server not found: these tests need a real Redis. Run scripts/test (it installs \
             Debian's redis-server and sets AUTHKEEPER_REDIS_SERVER), or `apt-get install \
             redis-server`, or set AUTHKEEPER_REDIS_SERVER to the binary"
        )
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("find a free port")
        .port()
}

impl RedisServer {
    /// A server without persistence.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A server with extra `redis-server` arguments (e.g. `--appendonly yes`, `--user ...`).
    pub fn start_with(extra: &[&str]) -> Self {
        let mut dir = authkeeper_testkit::temp_dir();
        let mut args: Vec<String> = extra.iter().map(|a| (*a).to_owned()).collect();
        let mut last_error = String::new();
        for _ in 0..5 {
            let mut server = RedisServer {
                child: None,
                port: free_port(),
                dir,
                args,
            };
            match server.spawn() {
                Ok(()) => return server,
                Err(e) => {
                    last_error = e;
                    // Another process took the port between our probe and redis-server's bind.
                    dir = std::mem::replace(&mut server.dir, authkeeper_testkit::temp_dir());
                    args = std::mem::take(&mut server.args);
                }
            }
        }
        panic!("could not start redis-server: {last_error}");
    }

    fn spawn(&mut self) -> Result<(), String> {
        let log = self.dir.path().join("redis.log");
        let mut command = Command::new(binary());
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", binary().display()))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!("redis-server exited with {status}: {log}"));
            }
            if self.answers() {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err("redis-server did not answer PING within 10 s".to_owned());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether something on the port answers PING like Redis (NOAUTH counts: it is up).
    fn answers(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        if stream.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut reply = [0u8; 64];
        match stream.read(&mut reply) {
            Ok(n) => reply[..n].starts_with(b"+PONG") || reply[..n].starts_with(b"-NOAUTH"),
            Err(_) => false,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server (SIGKILL) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and directory.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(e) if Instant::now() > deadline => panic!("cannot restart redis-server: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
