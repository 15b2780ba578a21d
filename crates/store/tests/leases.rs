//! The refresh lease across processes: crash release through the OS lock, takeover of hung
//! holders with fencing, and two store instances on one file.

use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use authkeeper_core::{
    CredentialStore as _, ExposeSecret as _, Lease, LeaseAttempt, Precondition, Timestamp,
    WriteOutcome,
};
use authkeeper_store::key::parse_env_key;
use authkeeper_store::lock::{lock_dir, lock_file_name};
use authkeeper_store::{Keyring, SqliteStore};

use crate::common::{fixture, key, now, open, planted_tokens};
use crate::cred;

const HOUR: Duration = Duration::from_secs(3600);

async fn acquire(
    store: &SqliteStore,
    name: &str,
    owner: &str,
    at: Timestamp,
    ttl: Duration,
) -> Lease {
    match store
        .try_acquire_lease(&cred(name), owner, at, ttl)
        .await
        .expect("try_acquire_lease")
    {
        LeaseAttempt::Acquired(lease) => lease,
        LeaseAttempt::Busy { held_until } => panic!("{owner}: busy until {held_until}"),
    }
}

async fn busy_until(store: &SqliteStore, name: &str, owner: &str, at: Timestamp) -> Timestamp {
    match store
        .try_acquire_lease(&cred(name), owner, at, HOUR)
        .await
        .expect("try_acquire_lease")
    {
        LeaseAttempt::Busy { held_until } => held_until,
        LeaseAttempt::Acquired(lease) => panic!("{owner} acquired {lease:?}"),
    }
}

fn later(by: u64) -> Timestamp {
    now() + Duration::from_secs(by)
}

#[tokio::test]
async fn a_dropped_lease_is_taken_over_at_once() {
    let fx = fixture();
    let first = open(&fx.db, &key(1));
    let second = open(&fx.db, &key(1));
    first
        .put(
            &cred("crm"),
            Precondition::None,
            &planted_tokens("0"),
            now(),
        )
        .await
        .expect("put");
    let dead = acquire(&first, "crm", "dead", now(), HOUR).await;
    let dead_fence = dead.fence;
    busy_until(&second, "crm", "next", now()).await;
    // The process dies: the kernel drops its OS lock, its lease row stays unreleased.
    drop(dead);
    let next = acquire(&second, "crm", "next", now(), HOUR).await;
    assert!(next.took_over_abandoned);
    assert!(next.fence > dead_fence);
    assert!(next.guard.is_some(), "taken over through the OS lock");
    assert_eq!(
        first
            .put(
                &cred("crm"),
                Precondition::Fenced {
                    generation: 1,
                    fence: dead_fence
                },
                &planted_tokens("dead"),
                now()
            )
            .await
            .expect("cas"),
        WriteOutcome::Conflict {
            current_generation: 1
        }
    );
    second.release_lease(next).await.expect("release");
    let again = acquire(&first, "crm", "again", now(), HOUR).await;
    assert!(!again.took_over_abandoned);
}

#[tokio::test]
async fn a_hung_holder_is_taken_over_without_the_os_lock_and_fenced_out() {
    let fx = fixture();
    let a = open(&fx.db, &key(1));
    let b = open(&fx.db, &key(1));
    a.put(
        &cred("crm"),
        Precondition::None,
        &planted_tokens("0"),
        now(),
    )
    .await
    .expect("put");
    let hung = acquire(&a, "crm", "hung", now(), Duration::from_secs(10)).await;
    assert_eq!(busy_until(&b, "crm", "b", later(5)).await, later(10));

    let taker = acquire(&b, "crm", "taker", later(11), Duration::from_secs(30)).await;
    assert!(taker.took_over_abandoned);
    assert!(
        taker.guard.is_none(),
        "the OS lock is still the hung holder's"
    );
    assert!(taker.fence > hung.fence);
    assert_eq!(
        a.put(
            &cred("crm"),
            Precondition::Fenced {
                generation: 1,
                fence: hung.fence
            },
            &planted_tokens("hung"),
            later(12)
        )
        .await
        .expect("cas"),
        WriteOutcome::Conflict {
            current_generation: 1
        }
    );
    // The hung holder wakes up and releases: the taker's lease must survive it.
    a.release_lease(hung).await.expect("release");
    assert_eq!(busy_until(&a, "crm", "c", later(12)).await, later(41));
    assert_eq!(
        b.put(
            &cred("crm"),
            Precondition::Fenced {
                generation: 1,
                fence: taker.fence
            },
            &planted_tokens("taker"),
            later(12)
        )
        .await
        .expect("cas"),
        WriteOutcome::Written { generation: 2 }
    );
    // The taker dies without the OS lock: its lease blocks others until it expires.
    let taker_fence = taker.fence;
    drop(taker);
    busy_until(&a, "crm", "c", later(40)).await;
    let c = acquire(&a, "crm", "c", later(42), HOUR).await;
    assert!(c.took_over_abandoned);
    assert!(c.fence > taker_fence);
    assert!(c.guard.is_some());
    let stored = a.load(&cred("crm")).await.expect("load").expect("stored");
    assert_eq!(
        stored.tokens.access_token.expose_secret(),
        "PLANTED-ACCESS-taker"
    );
}

#[tokio::test]
async fn an_os_lock_holder_that_has_not_written_its_row_yet_is_waited_for_briefly() {
    let fx = fixture();
    let store = open(&fx.db, &key(1));
    let path = lock_dir(&fx.db).join(lock_file_name("crm"));
    let file: File = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .expect("lock file");
    file.try_lock().expect("lock");
    let held_until = busy_until(&store, "crm", "me", now()).await;
    assert!(
        held_until > now() && held_until <= now() + Duration::from_secs(1),
        "{held_until}"
    );
    drop(file);
    acquire(&store, "crm", "me", now(), HOUR).await;
}

#[tokio::test]
async fn two_instances_share_writes_leases_and_change_notifications() {
    let fx = fixture();
    let a = open(&fx.db, &key(1));
    let b = open(&fx.db, &key(1));
    assert_eq!(
        a.put(
            &cred("crm"),
            Precondition::None,
            &planted_tokens("a"),
            now()
        )
        .await
        .expect("put"),
        WriteOutcome::Written { generation: 1 }
    );
    let seen = b.load(&cred("crm")).await.expect("load").expect("stored");
    assert_eq!(seen.tokens.access_token.expose_secret(), "PLANTED-ACCESS-a");

    let lease = acquire(&a, "crm", "a", now(), HOUR).await;
    busy_until(&b, "crm", "b", now()).await;
    let waiter = {
        let b = b.clone();
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            b.wait_for_change(&cred("crm"), 1, Duration::from_secs(20))
                .await;
            started.elapsed()
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        a.put(
            &cred("crm"),
            Precondition::Fenced {
                generation: 1,
                fence: lease.fence
            },
            &planted_tokens("a2"),
            now()
        )
        .await
        .expect("cas"),
        WriteOutcome::Written { generation: 2 }
    );
    let waited = waiter.await.expect("waiter");
    assert!(
        waited < Duration::from_secs(5),
        "wait_for_change took {waited:?}"
    );
    assert_eq!(
        b.put(
            &cred("crm"),
            Precondition::Generation(1),
            &planted_tokens("b"),
            now()
        )
        .await
        .expect("cas"),
        WriteOutcome::Conflict {
            current_generation: 2
        }
    );
    a.release_lease(lease).await.expect("release");
    let lease = acquire(&b, "crm", "b", now(), HOUR).await;
    busy_until(&a, "crm", "a", now()).await;
    b.release_lease(lease).await.expect("release");
}

const CHILD_DB: &str = "AUTHKEEPER_TEST_CHILD_DB";
const CHILD_KEY: &str = "AUTHKEEPER_TEST_CHILD_KEY";

/// Not a test on its own: the lease holder of `a_killed_process_releases_its_lease`, run in a
/// child process. It takes the lease, says so, and waits to be killed.
#[tokio::test]
async fn lease_holder_child() {
    let (Ok(db), Ok(key)) = (std::env::var(CHILD_DB), std::env::var(CHILD_KEY)) else {
        return;
    };
    let store = SqliteStore::open(
        Path::new(&db),
        Keyring::new(parse_env_key(&key).expect("key")),
    )
    .expect("open");
    let lease = acquire(&store, "crm", "child", now(), HOUR).await;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "\nLEASE-ACQUIRED {}", lease.fence).expect("stdout");
    stdout.flush().expect("flush");
    std::thread::sleep(Duration::from_secs(120));
    drop(lease);
}

#[tokio::test]
async fn a_killed_process_releases_its_lease() {
    let fx = fixture();
    let store = open(&fx.db, &key(1));
    store
        .put(
            &cred("crm"),
            Precondition::None,
            &planted_tokens("0"),
            now(),
        )
        .await
        .expect("put");
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "leases::lease_holder_child",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DB, &fx.db)
        .env(CHILD_KEY, key(1).to_base64().as_str())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the child");
    let stdout = child.stdout.take().expect("child stdout");
    let mut lines = BufReader::new(stdout).lines();
    let child_fence: u64 = loop {
        let line = lines
            .next()
            .expect("the child exited before taking the lease")
            .expect("read");
        // libtest may print "test NAME ... " on the same line first.
        if let Some((_, fence)) = line.split_once("LEASE-ACQUIRED ") {
            break fence.trim().parse().expect("fence");
        }
    };
    busy_until(&store, "crm", "parent", now()).await;
    child.kill().expect("kill -9");
    child.wait().expect("reap");
    let lease = acquire(&store, "crm", "parent", now(), HOUR).await;
    assert!(
        lease.took_over_abandoned,
        "the killed holder never released"
    );
    assert!(lease.fence > child_fence);
    store.release_lease(lease).await.expect("release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_storm_across_three_instances_has_one_holder_at_a_time() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let fx = fixture();
    let stores: Vec<SqliteStore> = (0..3).map(|_| open(&fx.db, &key(1))).collect();
    let held = Arc::new(AtomicBool::new(false));
    let fences = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for task in 0..30 {
        let store = stores[task % stores.len()].clone();
        let (held, fences) = (Arc::clone(&held), Arc::clone(&fences));
        tasks.push(tokio::spawn(async move {
            let owner = format!("task-{task}");
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            loop {
                assert!(tokio::time::Instant::now() < deadline, "{owner} starved");
                match store
                    .try_acquire_lease(&cred("storm"), &owner, now(), HOUR)
                    .await
                    .expect("acquire")
                {
                    LeaseAttempt::Acquired(lease) => {
                        assert!(!held.swap(true, Ordering::SeqCst), "two holders at once");
                        assert!(!lease.took_over_abandoned);
                        fences.lock().expect("fences").push(lease.fence);
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        held.store(false, Ordering::SeqCst);
                        store.release_lease(lease).await.expect("release");
                        return;
                    }
                    LeaseAttempt::Busy { .. } => tokio::time::sleep(Duration::from_millis(3)).await,
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    let fences = fences.lock().expect("fences").clone();
    assert_eq!(fences.len(), 30);
    assert!(fences.windows(2).all(|w| w[0] < w[1]), "{fences:?}");
}
