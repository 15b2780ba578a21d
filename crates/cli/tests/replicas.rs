//! Broker replicas on Redis, end to end: `authkeeper serve` processes sharing a real
//! `redis-server` (started here on a free port, stopped here), workers spread across them, and
//! the in-process mock IdP with 2 s access tokens, rotation and reuse revocation.
//!
//! - 3 replicas, 300 workers, 60 s: one token-endpoint call per expiry, no 401 reaches a worker,
//!   the grant stays alive; prints refresh calls per expiry and the propagation delay of each
//!   new generation to every replica (p50/p99).
//! - A replica killed with SIGKILL while it holds the refresh lease, after the IdP rotated the
//!   refresh token and before the write: without a reuse grace the next holder's retry is
//!   refused and the credential goes to needs_reauth with reason `lost_in_crash` (metric and
//!   error log); with a grace window (Auth0/Okta leeway) the retry succeeds and the grant lives.
//! - Redis restarted mid-run: no 401, `/readyz` 503 while Redis is down, 200 again afterwards.
//! - Two replicas racing on an expired lease: fencing refuses the stale writer's token set.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use authkeeper_mock::{Knobs, MockConfig, MockIdp, Stats};
use authkeeper_server::NewKey;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::AsyncBufReadExt as _;

use crate::redis_server::RedisServer;
use crate::support::bin;

const PREFIX: &str = "ak-test:";
/// What a worker asks for: enough validity left to make its API call even when the 2 shared
/// cores are oversubscribed (with 2 s tokens this makes each generation be refreshed after
/// ~0.5 s; still exactly one token-endpoint call per generation).
const MIN_TTL_SECS: u64 = 1;
const CREDENTIAL: &str = "api";
/// A worker's pause between two iterations (its "work").
const WORKER_PAUSE: Duration = Duration::from_millis(100);

/// Redis, the mock IdP, a shared config and the replicas using them.
struct Cluster {
    redis: RedisServer,
    idp: MockIdp,
    dir: tempfile::TempDir,
    store_key: String,
    client_key: NewKey,
    http: reqwest::Client,
    replicas: Vec<Replica>,
}

/// One `authkeeper serve` process.
struct Replica {
    child: tokio::process::Child,
    url: String,
    pid: u32,
    log: PathBuf,
}

impl Cluster {
    /// Starts Redis (AOF with fsync always, so a restart keeps the data), the mock IdP with
    /// `knobs`, and writes a config with `store_extra` lines in `[store]` and the credential's
    /// token request `timeout`; imports a grant.
    async fn start(knobs: Knobs, store_extra: &str, timeout: &str) -> Cluster {
        let redis = tokio::task::spawn_blocking(|| {
            RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"])
        })
        .await
        .expect("redis");
        let idp = MockIdp::start(MockConfig::default().with_knobs(knobs))
            .await
            .expect("mock idp");
        let dir = authkeeper_testkit::temp_dir();
        let client_key = NewKey::generate();
        let store_key = {
            use base64::Engine as _;
            let bytes: [u8; 32] = std::array::from_fn(|i| (i as u8).wrapping_mul(37) ^ 0x5a);
            base64::engine::general_purpose::STANDARD.encode(bytes)
        };
        let config = format!(
            "[store]\nkind = \"redis\"\nurl = \"{url}\"\nprefix = \"{PREFIX}\"\n{store_extra}\n\n\
             [[clients]]\nname = \"workers\"\nkey_sha256 = \"{hash}\"\ncredentials = [\"{CREDENTIAL}\"]\npermissions = [\"token\", \"metrics\"]\n\n\
             [credentials.{CREDENTIAL}]\ntoken_url = \"{token_url}\"\nclient_id = \"mock-client\"\n\
             client_secret = \"mock-secret\"\ntimeout = \"{timeout}\"\n",
            url = redis.url(),
            hash = client_key.sha256(),
            token_url = idp.token_url(),
        );
        std::fs::write(dir.path().join("authkeeper.toml"), config).expect("config");
        let cluster = Cluster {
            redis,
            idp,
            dir,
            store_key,
            client_key,
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(512)
                .timeout(Duration::from_secs(20))
                .build()
                .expect("http"),
            replicas: Vec::new(),
        };
        let grant = cluster.idp.mint_grant(None, None).expect("grant");
        let out = cluster
            .command(&["import", CREDENTIAL])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn import");
        let out = feed(out, grant.to_string().as_bytes()).await;
        assert!(
            out.status.success(),
            "import into Redis failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        cluster
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("authkeeper.toml")
    }

    /// `authkeeper --config CONFIG ARGS...` with the store key in the environment.
    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(bin());
        command
            .arg("--config")
            .arg(self.config())
            .args(args)
            .env("AUTHKEEPER_KEY", &self.store_key)
            .env_remove("AUTHKEEPER_STORE")
            .env_remove("RUST_LOG")
            .env("AUTHKEEPER_LOG", "warn,authkeeper_core=info")
            .kill_on_drop(true);
        command
    }

    /// Starts `count` replicas and waits until each is ready.
    async fn spawn_replicas(&mut self, count: usize) {
        for _ in 0..count {
            let index = self.replicas.len();
            let log = self.dir.path().join(format!("replica-{index}.log"));
            let stderr = std::fs::File::create(&log).expect("log file");
            let mut child = self
                .command(&["serve", "--listen", "127.0.0.1:0"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::from(stderr))
                .spawn()
                .expect("spawn authkeeper serve");
            let pid = child.id().expect("pid");
            let stdout = child.stdout.take().expect("stdout");
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            let url = tokio::time::timeout(Duration::from_secs(30), async {
                loop {
                    match lines.next_line().await {
                        Ok(Some(line)) => {
                            if let Some(url) = line.split("listening on ").nth(1) {
                                return url.trim().to_owned();
                            }
                        }
                        _ => panic!(
                            "replica {index} exited: {}",
                            std::fs::read_to_string(&log).unwrap_or_default()
                        ),
                    }
                }
            })
            .await
            .expect("replica printed its address");
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            self.replicas.push(Replica {
                child,
                url,
                pid,
                log,
            });
            assert!(
                self.wait_ready(index, Duration::from_secs(20)).await,
                "replica {index} never became ready"
            );
        }
    }

    /// `GET /readyz` of replica `index`: status and body.
    async fn readyz(&self, index: usize) -> Option<(u16, String)> {
        let response = self
            .http
            .get(format!("{}/readyz", self.replicas[index].url))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.unwrap_or_default()))
    }

    async fn wait_ready(&self, index: usize, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some((200, _)) = self.readyz(index).await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// `GET /metrics` of replica `index`.
    async fn metrics(&self, index: usize) -> String {
        self.http
            .get(format!("{}/metrics", self.replicas[index].url))
            .bearer_auth(self.client_key.expose_key())
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body")
    }

    /// Runs `redis-cli` against the test's Redis.
    fn redis_cli(&self, args: &[&str]) -> String {
        let cli = std::env::var_os("AUTHKEEPER_REDIS_SERVER")
            .map(PathBuf::from)
            .and_then(|server| server.parent().map(|dir| dir.join("redis-cli")))
            .filter(|cli| cli.is_file())
            .unwrap_or_else(|| PathBuf::from("redis-cli"));
        let out = std::process::Command::new(cli)
            .args(["-p", &self.redis.port().to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn state_field(&self, field: &str) -> String {
        self.redis_cli(&[
            "HGET",
            &format!("{PREFIX}{{cred:{CREDENTIAL}}}:state"),
            field,
        ])
    }

    fn lease_field(&self, field: &str) -> String {
        self.redis_cli(&[
            "HGET",
            &format!("{PREFIX}{{cred:{CREDENTIAL}}}:lease"),
            field,
        ])
    }

    /// The stored generation.
    fn generation(&self) -> u64 {
        self.state_field("generation").parse().unwrap_or(0)
    }

    fn log(&self, index: usize) -> String {
        std::fs::read_to_string(&self.replicas[index].log).unwrap_or_default()
    }

    /// Kills replica `index` with SIGKILL.
    async fn kill(&mut self, index: usize) {
        let replica = &mut self.replicas[index];
        kill(Pid::from_raw(replica.pid as i32), Signal::SIGKILL).expect("SIGKILL");
        let _ = replica.child.wait().await;
    }

    /// Starts `workers` workers spread round-robin over the replicas in `replicas`, for `run_for`.
    fn start_workers(
        &self,
        workers: usize,
        replicas: &[usize],
        run_for: Duration,
    ) -> (Arc<Tally>, Vec<tokio::task::JoinHandle<()>>) {
        let tally = Arc::new(Tally::default());
        let deadline = Instant::now() + run_for;
        let handles = (0..workers)
            .map(|i| {
                let index = replicas[i % replicas.len()];
                let worker = Worker {
                    http: self.http.clone(),
                    replica: index,
                    base: self.replicas[index].url.clone(),
                    key: self.client_key.expose_key().to_owned(),
                    api: self.idp.api_url(),
                    tally: Arc::clone(&tally),
                };
                tokio::spawn(async move {
                    // Spread the workers' phases.
                    tokio::time::sleep(WORKER_PAUSE * (i as u32 % 10) / 10).await;
                    worker.run(deadline).await;
                })
            })
            .collect();
        (tally, handles)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for replica in &mut self.replicas {
            let _ = replica.child.start_kill();
        }
    }
}

async fn feed(mut child: tokio::process::Child, input: &[u8]) -> std::process::Output {
    use tokio::io::AsyncWriteExt as _;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input).await.expect("stdin");
    }
    child.wait_with_output().await.expect("output")
}

/// What the workers saw.
#[derive(Default)]
struct Tally {
    iterations: AtomicU64,
    api_ok: AtomicU64,
    /// API answers 401 to a token the broker handed out.
    first_401: AtomicU64,
    /// Still 401 after reporting the token rejected and retrying with the new one.
    final_401: AtomicU64,
    /// Token API errors (no token handed out: e.g. 503 while no refresh was possible).
    token_errors: AtomicU64,
    /// When token API errors happened.
    errors_at: Mutex<Vec<Instant>>,
    /// First time each (replica, generation) was handed out.
    first_seen: Mutex<HashMap<(usize, u64), Instant>>,
}

impl Tally {
    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    fn summary(&self) -> String {
        format!(
            "iterations {} api_ok {} first_401 {} final_401 {} token_errors {}",
            Self::get(&self.iterations),
            Self::get(&self.api_ok),
            Self::get(&self.first_401),
            Self::get(&self.final_401),
            Self::get(&self.token_errors)
        )
    }

    /// For each generation seen on every one of `replicas`: the delay between the first and
    /// the last replica handing it out (the writer installs it at once, the others on the
    /// change event), in milliseconds, sorted.
    fn propagation_ms(&self, replicas: &[usize]) -> Vec<f64> {
        let seen = self.first_seen.lock().expect("tally");
        let mut by_generation: HashMap<u64, Vec<Instant>> = HashMap::new();
        for ((replica, generation), at) in seen.iter() {
            if replicas.contains(replica) {
                by_generation.entry(*generation).or_default().push(*at);
            }
        }
        let mut delays: Vec<f64> = by_generation
            .values()
            .filter(|times| times.len() == replicas.len())
            .filter_map(|times| {
                let first = times.iter().min()?;
                let last = times.iter().max()?;
                Some(last.duration_since(*first).as_secs_f64() * 1000.0)
            })
            .collect();
        delays.sort_by(f64::total_cmp);
        delays
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

struct Worker {
    http: reqwest::Client,
    replica: usize,
    base: String,
    key: String,
    api: String,
    tally: Arc<Tally>,
}

impl Worker {
    async fn run(&self, deadline: Instant) {
        while Instant::now() < deadline {
            self.tally.iterations.fetch_add(1, Ordering::Relaxed);
            let Some((token, generation)) = self.token().await else {
                self.tally.token_errors.fetch_add(1, Ordering::Relaxed);
                self.tally
                    .errors_at
                    .lock()
                    .expect("tally")
                    .push(Instant::now());
                tokio::time::sleep(WORKER_PAUSE).await;
                continue;
            };
            if self.call_api(&token).await == 401 {
                self.tally.first_401.fetch_add(1, Ordering::Relaxed);
                match self.rejected(generation).await {
                    Some((token, _)) if self.call_api(&token).await != 401 => {}
                    Some(_) => {
                        self.tally.final_401.fetch_add(1, Ordering::Relaxed);
                    }
                    None => {
                        self.tally.token_errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            } else {
                self.tally.api_ok.fetch_add(1, Ordering::Relaxed);
            }
            tokio::time::sleep(WORKER_PAUSE).await;
        }
    }

    async fn token(&self) -> Option<(String, u64)> {
        let response = self
            .http
            .get(format!(
                "{}/v1/credentials/{CREDENTIAL}/token?min_ttl={MIN_TTL_SECS}",
                self.base
            ))
            .bearer_auth(&self.key)
            .send()
            .await
            .ok()?;
        self.parse(response).await
    }

    async fn rejected(&self, generation: u64) -> Option<(String, u64)> {
        let response = self
            .http
            .post(format!(
                "{}/v1/credentials/{CREDENTIAL}/rejected",
                self.base
            ))
            .bearer_auth(&self.key)
            .json(&serde_json::json!({ "generation": generation }))
            .send()
            .await
            .ok()?;
        self.parse(response).await
    }

    async fn parse(&self, response: reqwest::Response) -> Option<(String, u64)> {
        if !response.status().is_success() {
            return None;
        }
        let body: serde_json::Value = response.json().await.ok()?;
        let token = body["access_token"].as_str()?.to_owned();
        let generation = body["generation"].as_u64()?;
        let now = Instant::now();
        self.tally
            .first_seen
            .lock()
            .expect("tally")
            .entry((self.replica, generation))
            .or_insert(now);
        Some((token, generation))
    }

    async fn call_api(&self, token: &str) -> u16 {
        match self.http.get(&self.api).bearer_auth(token).send().await {
            Ok(response) => response.status().as_u16(),
            Err(_) => 0,
        }
    }
}

/// 2 s tokens, rotation, reuse revokes the grant.
fn rotating_knobs() -> Knobs {
    Knobs {
        access_ttl_ms: 2000,
        rotate_refresh_tokens: true,
        reuse_revokes_grant: true,
        ..Knobs::default()
    }
}

async fn join(handles: Vec<tokio::task::JoinHandle<()>>) {
    for handle in handles {
        handle.await.expect("worker");
    }
}

fn assert_grant_alive(stats: &Stats) {
    assert_eq!(
        stats.reuse_detected, 0,
        "a refresh token was redeemed twice"
    );
    assert_eq!(stats.grants_revoked, 0, "the grant was revoked");
    assert_eq!(stats.invalid_grant, 0, "a refresh was refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_300_workers_refresh_once_per_expiry() {
    const RUN_FOR: Duration = Duration::from_secs(60);
    let mut cluster = Cluster::start(rotating_knobs(), "", "5s").await;
    cluster.spawn_replicas(3).await;
    let (tally, handles) = cluster.start_workers(300, &[0, 1, 2], RUN_FOR);
    join(handles).await;
    let stats = cluster.idp.stats();
    let generations = cluster.generation() - 1;
    let delays = cluster_delays(&tally);
    println!(
        "3 replicas, 300 workers, {RUN_FOR:?}: {}; {} refresh calls for {generations} generations ({:.3} per expiry); \
         new generation seen by all replicas after p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} generations)",
        tally.summary(),
        stats.refresh_calls,
        stats.refresh_calls as f64 / generations.max(1) as f64,
        percentile(&delays, 50.0),
        percentile(&delays, 99.0),
        percentile(&delays, 100.0),
        delays.len(),
    );
    assert_grant_alive(&stats);
    assert_eq!(Tally::get(&tally.first_401), 0, "a 401 reached a worker");
    assert_eq!(Tally::get(&tally.final_401), 0, "a 401 reached a worker");
    assert_eq!(Tally::get(&tally.token_errors), 0, "the token API failed");
    assert_eq!(
        stats.refresh_calls, generations,
        "one token-endpoint call per expiry"
    );
    assert!(
        generations >= 30,
        "60 s of 2 s tokens needs ~40 refreshes, got {generations}"
    );
    for index in 0..3 {
        assert!(cluster.wait_ready(index, Duration::from_secs(5)).await);
    }
}

fn cluster_delays(tally: &Tally) -> Vec<f64> {
    tally.propagation_ms(&[0, 1, 2])
}

/// Waits until a refresh is between the IdP's rotation and its answer (the mock holds the
/// answer for `token_answer_delay_ms`), then kills the lease holder. Returns its index.
async fn kill_the_holder_after_rotation(cluster: &mut Cluster) -> usize {
    let mut knobs = cluster.idp.knobs();
    knobs.token_answer_delay_ms = 1500;
    let rotated_before = cluster.idp.stats().refresh_success;
    cluster.idp.set_knobs(knobs.clone()).expect("knobs");
    let deadline = Instant::now() + Duration::from_secs(15);
    let victim = loop {
        assert!(Instant::now() < deadline, "no refresh happened");
        if cluster.idp.stats().refresh_success > rotated_before {
            let owner = cluster.lease_field("owner");
            let in_flight = cluster.lease_field("in_flight");
            let pid: u32 = owner
                .split('-')
                .next()
                .and_then(|pid| pid.parse().ok())
                .expect("lease owner names its pid");
            assert!(
                !in_flight.is_empty(),
                "the holder marked its refresh in flight"
            );
            break cluster
                .replicas
                .iter()
                .position(|r| r.pid == pid)
                .expect("the holder is a replica");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    cluster.kill(victim).await;
    knobs.token_answer_delay_ms = 0;
    cluster.idp.set_knobs(knobs).expect("knobs");
    victim
}

/// The replicas' config for the kill tests: a holder that dies blocks the others for one
/// lease TTL at most. The lease must outlast the token request timeout by 1 s.
const SHORT_LEASE: &str = "lease_ttl = \"3s\"";
/// The token request timeout that [`SHORT_LEASE`] allows (the IdP answers within 1.5 s).
const SHORT_TIMEOUT: &str = "2s";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_after_the_idp_rotated_loses_the_grant_loudly() {
    let mut cluster = Cluster::start(rotating_knobs(), SHORT_LEASE, SHORT_TIMEOUT).await;
    cluster.spawn_replicas(3).await;
    let (tally, handles) = cluster.start_workers(300, &[0, 1, 2], Duration::from_secs(20));
    tokio::time::sleep(Duration::from_secs(4)).await;
    let victim = kill_the_holder_after_rotation(&mut cluster).await;
    let survivors: Vec<usize> = (0..3).filter(|i| *i != victim).collect();
    // The next holder takes the lease over once it expires, finds the in-flight marker and
    // retries with the previous refresh token: the provider refuses it (reuse).
    let deadline = Instant::now() + Duration::from_secs(15);
    while cluster.state_field("state") != "needs_reauth" {
        assert!(
            Instant::now() < deadline,
            "the credential never reached needs_reauth"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    join(handles).await;
    let reason = cluster.state_field("reason");
    println!(
        "killed replica {victim}: {}; stored reason {reason:?}; idp {:?}",
        tally.summary(),
        cluster.idp.stats()
    );
    assert!(reason.starts_with("lost_in_crash"), "reason {reason:?}");
    let mut counted = 0;
    let mut logged = 0;
    for &index in &survivors {
        let metrics = cluster.metrics(index).await;
        if metrics.contains("authkeeper_lost_in_crash_total{credential=\"api\"} 1") {
            counted += 1;
        }
        if cluster.log(index).contains("lost_in_crash") {
            logged += 1;
        }
        assert!(
            cluster.wait_ready(index, Duration::from_secs(10)).await,
            "survivor {index} not ready"
        );
    }
    assert_eq!(counted, 1, "exactly one replica counted lost_in_crash");
    assert!(logged >= 1, "lost_in_crash was logged");
    assert_eq!(Tally::get(&tally.final_401), 0, "a 401 reached a worker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_after_the_idp_rotated_is_recovered_within_the_reuse_grace() {
    let knobs = Knobs {
        reuse_grace_ms: 10_000,
        ..rotating_knobs()
    };
    let mut cluster = Cluster::start(knobs, SHORT_LEASE, SHORT_TIMEOUT).await;
    cluster.spawn_replicas(3).await;
    let (tally, handles) = cluster.start_workers(300, &[0, 1, 2], Duration::from_secs(20));
    tokio::time::sleep(Duration::from_secs(4)).await;
    let victim = kill_the_holder_after_rotation(&mut cluster).await;
    let generation_at_kill = cluster.generation();
    let survivors: Vec<usize> = (0..3).filter(|i| *i != victim).collect();
    join(handles).await;
    let stats = cluster.idp.stats();
    println!(
        "killed replica {victim}: {}; idp {stats:?}",
        tally.summary()
    );
    assert_grant_alive(&stats);
    assert!(stats.reuse_in_grace >= 1, "the retry used the grace window");
    assert_eq!(cluster.state_field("state"), "valid");
    assert!(
        cluster.generation() > generation_at_kill + 3,
        "refreshing went on after the kill"
    );
    for &index in &survivors {
        assert!(
            cluster.wait_ready(index, Duration::from_secs(10)).await,
            "survivor {index} not ready"
        );
        assert!(
            !cluster
                .metrics(index)
                .await
                .contains("authkeeper_lost_in_crash_total{"),
            "nothing was lost"
        );
    }
    assert_eq!(Tally::get(&tally.final_401), 0, "a 401 reached a worker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_restarted_mid_run_keeps_workers_served_and_replicas_recover() {
    let mut cluster = Cluster::start(rotating_knobs(), "", "5s").await;
    cluster.spawn_replicas(3).await;
    let (tally, handles) = cluster.start_workers(300, &[0, 1, 2], Duration::from_secs(20));
    tokio::time::sleep(Duration::from_secs(6)).await;
    // Restart right after a new generation is stored, so the outage ends before the next
    // refresh is due and cached tokens stay valid throughout.
    let generation = cluster.generation();
    let deadline = Instant::now() + Duration::from_secs(5);
    while cluster.generation() == generation && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cluster.redis.stop();
    let down = Instant::now();
    // While Redis is down, the replicas say why they are not ready.
    let mut not_ready = None;
    while down.elapsed() < Duration::from_millis(400) && not_ready.is_none() {
        if let Some((503, body)) = cluster.readyz(0).await {
            not_ready = Some(body);
        }
    }
    let redis = &mut cluster.redis;
    tokio::task::block_in_place(|| redis.restart());
    let outage = down.elapsed();
    for index in 0..3 {
        assert!(
            cluster.wait_ready(index, Duration::from_secs(15)).await,
            "replica {index} did not become ready again"
        );
    }
    let recovered = down.elapsed();
    join(handles).await;
    let stats = cluster.idp.stats();
    let generations = cluster.generation() - 1;
    println!(
        "Redis down for {outage:?}, all replicas ready {recovered:?} after the stop: {}; {} refresh calls for {generations} generations; readyz while down: {not_ready:?}",
        tally.summary(),
        stats.refresh_calls
    );
    let errors: Vec<f64> = tally
        .errors_at
        .lock()
        .expect("tally")
        .iter()
        .map(|at| {
            if *at >= down {
                at.duration_since(down).as_secs_f64()
            } else {
                -down.duration_since(*at).as_secs_f64()
            }
        })
        .collect();
    println!(
        "token errors at (s after the stop): {:?}",
        &errors[..errors.len().min(20)]
    );
    let body = not_ready.expect("/readyz answered 503 while Redis was down");
    assert!(body.contains("store"), "reason in {body}");
    let port = cluster.redis.port().to_string();
    assert!(
        !body.contains(&port) && !body.contains("127.0.0.1") && !body.contains(CREDENTIAL),
        "/readyz tells strangers nothing about the store or the credentials: {body}"
    );
    assert_grant_alive(&stats);
    assert_eq!(Tally::get(&tally.first_401), 0, "a 401 reached a worker");
    assert_eq!(Tally::get(&tally.final_401), 0, "a 401 reached a worker");
    assert_eq!(
        Tally::get(&tally.token_errors),
        0,
        "cached tokens were valid throughout the outage"
    );
    assert_eq!(stats.refresh_calls, generations, "one call per expiry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fencing_refuses_the_writer_whose_lease_expired_mid_refresh() {
    // A live holder renews its lease, so only a paused process (GC, SIGSTOP, a frozen VM) can
    // lose it mid-refresh. The test plays the pause by expiring replica 0's lease in Redis
    // while its token request (2.5 s at the IdP) runs; replica 1 takes the lease over. The
    // grace window lets both redemptions of the same refresh token succeed at the IdP, so only
    // fencing keeps replica 0 from writing.
    let knobs = Knobs {
        access_ttl_ms: 3_600_000,
        token_latency_ms: 2500,
        reuse_grace_ms: 30_000,
        ..rotating_knobs()
    };
    let mut cluster = Cluster::start(knobs, "lease_ttl = \"6s\"", "5s").await;
    cluster.spawn_replicas(2).await;
    let reject = |index: usize| {
        let http = cluster.http.clone();
        let url = format!(
            "{}/v1/credentials/{CREDENTIAL}/rejected",
            cluster.replicas[index].url
        );
        let key = cluster.client_key.expose_key().to_owned();
        tokio::spawn(async move {
            let response = http
                .post(url)
                .bearer_auth(key)
                .json(&serde_json::json!({ "generation": 1 }))
                .send()
                .await
                .expect("rejected");
            let status = response.status().as_u16();
            (status, response.text().await.unwrap_or_default())
        })
    };
    let slow = reject(0);
    let deadline = Instant::now() + Duration::from_secs(5);
    while cluster.lease_field("in_flight").is_empty() {
        assert!(
            Instant::now() < deadline,
            "replica 0 never started refreshing"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stale_owner = cluster.lease_field("owner");
    let taker = reject(1);
    // Expire the lease until replica 1 holds it (replica 0 may renew in between).
    let lease_key = format!("{PREFIX}{{cred:{CREDENTIAL}}}:lease");
    let deadline = Instant::now() + Duration::from_secs(2);
    while cluster.lease_field("owner") == stale_owner {
        assert!(Instant::now() < deadline, "replica 1 never took the lease");
        cluster.redis_cli(&["HSET", &lease_key, "expires_at", "0"]);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (slow, taker) = (slow.await.expect("0"), taker.await.expect("1"));
    let stats = cluster.idp.stats();
    let metrics0 = cluster.metrics(0).await;
    let metrics1 = cluster.metrics(1).await;
    println!(
        "stale holder answered {slow:?}; taker answered {}; generation {}; idp {stats:?}",
        taker.0,
        cluster.generation()
    );
    assert_eq!(taker.0, 200, "the taker refreshed: {taker:?}");
    assert_ne!(
        slow.0, 200,
        "the stale holder must not hand out its unstored token"
    );
    assert!(
        metrics0.contains("authkeeper_writes_fenced_total{credential=\"api\"} 1"),
        "the stale write was refused by fencing:\n{metrics0}"
    );
    assert!(
        cluster
            .log(0)
            .contains("refreshed tokens discarded: another holder took the refresh lease over")
    );
    assert!(metrics1.contains("authkeeper_lease_takeovers_total{credential=\"api\"} 1"));
    assert_eq!(cluster.generation(), 2, "exactly one token set was stored");
    assert_eq!(stats.refresh_calls, 2, "both replicas called the IdP");
    assert_eq!(stats.reuse_in_grace, 1);
    assert_grant_alive(&stats);
    assert_eq!(cluster.state_field("state"), "valid");
    // Both replicas serve the stored generation, and it works.
    for index in 0..2 {
        let worker = Worker {
            http: cluster.http.clone(),
            replica: index,
            base: cluster.replicas[index].url.clone(),
            key: cluster.client_key.expose_key().to_owned(),
            api: cluster.idp.api_url(),
            tally: Arc::new(Tally::default()),
        };
        let (token, generation) = worker.token().await.expect("token");
        assert_eq!(generation, 2);
        assert_eq!(worker.call_api(&token).await, 200);
    }
}

/// The store key in the environment is needed: a Redis config without a key is refused with
/// a clear message (no key file is generated for Redis).
#[tokio::test]
async fn a_redis_store_without_a_key_is_refused() {
    let cluster = Cluster::start(rotating_knobs(), "", "5s").await;
    let out = cluster
        .command(&["status"])
        .env_remove("AUTHKEEPER_KEY")
        .output()
        .await
        .expect("status");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("AUTHKEEPER_KEY"), "{stderr}");
    assert!(stderr.contains("key_file"), "{stderr}");
    let out = cluster.command(&["rekey"]).output().await.expect("rekey");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("sqlite"),
        "rekey on Redis is refused clearly"
    );
}

/// A URL with a password comes from an `env:` reference; the password never appears in output,
/// not even when it is wrong.
#[tokio::test]
async fn a_password_url_from_the_environment_works_and_is_never_shown() {
    const PASSWORD: &str = "s3cret-redis-pass";
    let redis =
        tokio::task::spawn_blocking(|| RedisServer::start_with(&["--requirepass", PASSWORD]))
            .await
            .expect("redis");
    let dir = authkeeper_testkit::temp_dir();
    let config = dir.path().join("authkeeper.toml");
    std::fs::write(
        &config,
        "[store]\nkind = \"redis\"\nurl = \"env:AK_TEST_REDIS_URL\"\n",
    )
    .expect("config");
    let run = |url: String| {
        let config = config.clone();
        async move {
            tokio::process::Command::new(bin())
                .arg("--config")
                .arg(&config)
                .args(["status", "--json"])
                .env(
                    "AUTHKEEPER_KEY",
                    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
                )
                .env("AK_TEST_REDIS_URL", url)
                .env("AUTHKEEPER_LOG", "debug")
                .output()
                .await
                .expect("status")
        }
    };
    let good = run(format!("redis://:{PASSWORD}@127.0.0.1:{}/0", redis.port())).await;
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    let bad = run(format!(
        "redis://:wrong-{PASSWORD}@127.0.0.1:{}/0",
        redis.port()
    ))
    .await;
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    assert!(stderr.contains("***"), "{stderr}");
    for out in [&good, &bad] {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!text.contains(PASSWORD), "the password leaked: {text}");
    }
}
