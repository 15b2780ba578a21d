//! Automatic re-authentication against the mock IdP: the external login command (success
//! without a human; failure, timeout and garbage with clear errors, backoff and nothing stored
//! lost), scheduled re-login inside its window before the absolute expiry (manual clock, no
//! sleeps), and a device-login credential whose session reaches its absolute lifetime.

use crate::cred;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use authkeeper_core::backoff::Backoff;
use authkeeper_core::{
    Clock, CredentialConfig, CredentialState, CredentialStore, ErrorClass, Event, ExpiryDefaults,
    ExposeSecret, Keeper, ManualClock, MemoryStore, SharedClock, Store, SystemClock, Timestamp,
    TokenResponse,
};
use authkeeper_login::process::ChildEnv;
use authkeeper_login::reauth::{LoginReauthenticator, ReauthSettings};
use authkeeper_mock::{Knobs, MockConfig, MockIdp};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// An event worth checking, with the (injected) time it happened at.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Refreshed(u64),
    ReloginDue {
        expires_at: Timestamp,
        automatic: bool,
    },
    Reauthenticated(u64),
    ReauthFailed {
        cause: String,
        attempts: u32,
        gave_up: bool,
    },
    NeedsReauth(String),
}

struct Setup {
    idp: MockIdp,
    store: Arc<MemoryStore>,
    keeper: Keeper,
    events: mpsc::UnboundedReceiver<(Timestamp, Seen)>,
    grant_id: String,
    _dir: tempfile::TempDir,
}

fn knobs(access_ttl_ms: u64) -> Knobs {
    Knobs {
        access_ttl_ms,
        rotate_refresh_tokens: true,
        reuse_revokes_grant: true,
        ..Knobs::default()
    }
}

/// A credential `api` of `idp` with `extra` config keys, its first grant stored, a Keeper with a
/// [`LoginReauthenticator`]. The login command (if any) may read `$DIR/grant.json`.
async fn setup(
    clock: SharedClock,
    access_ttl_ms: u64,
    extra: Value,
    settings: ReauthSettings,
) -> Setup {
    let idp = MockIdp::start(
        MockConfig::default()
            .with_clock(clock.clone())
            .with_knobs(knobs(access_ttl_ms)),
    )
    .await
    .expect("mock idp");
    let dir = authkeeper_testkit::temp_dir();
    let mut config = json!({
        "token_url": idp.token_url(),
        "client_id": "mock-client",
        "client_secret": "mock-secret",
    });
    let text = extra
        .to_string()
        .replace("$DIR", dir.path().to_str().expect("utf-8 path"));
    let extra: Value = serde_json::from_str(&text).expect("json");
    for (key, value) in extra.as_object().expect("object") {
        config[key] = value.clone();
    }
    let config: CredentialConfig = serde_json::from_value(config).expect("credential config");
    let mut credentials = BTreeMap::new();
    credentials.insert(cred("api"), config.clone());
    let reauth = LoginReauthenticator::from_config(&credentials, settings).expect("plans");
    let store = Arc::new(MemoryStore::new());
    let grant = idp.mint_grant(None, None).expect("grant");
    let grant_id = grant["grant_id"].as_str().expect("grant id").to_owned();
    let tokens = TokenResponse::parse_tokens(&serde_json::to_vec(&grant).expect("json"))
        .expect("tokens")
        .into_token_set(clock.now(), &ExpiryDefaults::default());
    authkeeper_core::store::import(&*store, &cred("api"), &tokens, clock.now())
        .await
        .expect("put");
    let (sender, events) = mpsc::unbounded_channel();
    let event_clock = clock.clone();
    let sink = move |event: &Event<'_>| {
        let seen = match event {
            Event::Refreshed { generation, .. } => Seen::Refreshed(*generation),
            Event::ReloginDue {
                expires_at,
                automatic,
                ..
            } => Seen::ReloginDue {
                expires_at: *expires_at,
                automatic: *automatic,
            },
            Event::Reauthenticated { generation, .. } => Seen::Reauthenticated(*generation),
            Event::ReauthFailed {
                cause,
                attempts,
                next_attempt_at,
                ..
            } => Seen::ReauthFailed {
                cause: (*cause).to_owned(),
                attempts: *attempts,
                gave_up: next_attempt_at.is_none(),
            },
            Event::NeedsReauth { reason, .. } => Seen::NeedsReauth((*reason).to_owned()),
            _ => return,
        };
        let _ = sender.send((event_clock.now(), seen));
    };
    let store_dyn: Arc<dyn Store> = store.clone();
    let keeper = Keeper::builder(store_dyn, clock)
        .credential(cred("api"), config.resolve("api").expect("settings"))
        .event_sink(Arc::new(sink))
        .reauthenticator(Arc::new(reauth))
        .build()
        .expect("keeper");
    Setup {
        idp,
        store,
        keeper,
        events,
        grant_id,
        _dir: dir,
    }
}

/// Writes a fresh grant of `idp` as the login command's output; returns its access token.
fn write_grant(idp: &MockIdp, dir: &Path) -> String {
    let grant = idp.mint_grant(None, None).expect("grant");
    std::fs::write(dir.join("grant.json"), grant.to_string()).expect("write grant");
    authkeeper_testkit::expect_plaintext(&dir.join("grant.json"));
    grant["access_token"]
        .as_str()
        .expect("access token")
        .to_owned()
}

async fn next_event(events: &mut mpsc::UnboundedReceiver<(Timestamp, Seen)>) -> (Timestamp, Seen) {
    tokio::time::timeout(Duration::from_secs(20), events.recv())
        .await
        .expect("no event within 20 s")
        .expect("event channel open")
}

/// Waits for the first event matching `pick`, skipping others.
async fn wait_for<T>(
    events: &mut mpsc::UnboundedReceiver<(Timestamp, Seen)>,
    mut pick: impl FnMut(&Seen) -> Option<T>,
) -> (Timestamp, T) {
    loop {
        let (at, seen) = next_event(events).await;
        if let Some(value) = pick(&seen) {
            return (at, value);
        }
    }
}

fn fast_retries(max_attempts: u32) -> ReauthSettings {
    ReauthSettings {
        backoff: Backoff {
            base: Duration::from_millis(10),
            cap: Duration::from_millis(40),
        },
        max_attempts,
        child_env: ChildEnv::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_command_reauthenticates_without_a_human() {
    let mut t = setup(
        SystemClock::shared(),
        60_000,
        json!({ "login": { "command": "echo run >> $DIR/runs; cat $DIR/grant.json", "timeout": "10s" } }),
        fast_retries(3),
    )
    .await;
    let new_access = write_grant(&t.idp, t._dir.path());
    let first = t.keeper.token("api", Duration::ZERO).await.expect("token");
    t.idp.revoke_grant(&t.grant_id).expect("revoke");
    let error = t
        .keeper
        .rejected("api", first.generation())
        .await
        .expect_err("the grant is dead");
    assert_eq!(error.class(), ErrorClass::NeedsReauth);
    let (_, generation) = wait_for(&mut t.events, |seen| match seen {
        Seen::Reauthenticated(generation) => Some(*generation),
        _ => None,
    })
    .await;
    assert!(generation > first.generation());
    let token = t
        .keeper
        .token("api", Duration::ZERO)
        .await
        .expect("token after re-auth");
    assert_eq!(token.generation(), generation);
    assert_eq!(token.secret().expose_secret(), new_access);
    let stored = t
        .store
        .load(&cred("api"))
        .await
        .expect("load")
        .expect("stored");
    assert_eq!(stored.generation, generation);
    assert_eq!(stored.status.state, CredentialState::Valid);
    let runs = std::fs::read_to_string(t._dir.path().join("runs")).expect("runs");
    assert_eq!(
        runs.lines().count(),
        1,
        "the login command ran more than once"
    );
    // The new grant works for refreshes too.
    let refreshed = t.keeper.rejected("api", generation).await.expect("refresh");
    assert!(refreshed.generation() > generation);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_login_commands_back_off_and_lose_nothing() {
    for (command, expected) in [
        ("exit 3", "the login command failed (exit status: 3)"),
        ("sleep 5", "did not finish within"),
        ("echo not-json-s3cr3t-output", "bytes that are not JSON"),
        (r#"echo '{"token_type":"Bearer"}'"#, "not a token response"),
    ] {
        let mut t = setup(
            SystemClock::shared(),
            60_000,
            json!({ "login": { "method": "command", "command": command, "timeout": "300ms" } }),
            fast_retries(3),
        )
        .await;
        let first = t.keeper.token("api", Duration::ZERO).await.expect("token");
        let before = t
            .store
            .load(&cred("api"))
            .await
            .expect("load")
            .expect("stored");
        t.idp.revoke_grant(&t.grant_id).expect("revoke");
        let error = t
            .keeper
            .rejected("api", first.generation())
            .await
            .expect_err("dead grant");
        assert_eq!(error.class(), ErrorClass::NeedsReauth);
        let mut attempts = Vec::new();
        loop {
            let (_, (cause, attempt, gave_up)) = wait_for(&mut t.events, |seen| match seen {
                Seen::ReauthFailed {
                    cause,
                    attempts,
                    gave_up,
                } => Some((cause.clone(), *attempts, *gave_up)),
                Seen::Reauthenticated(_) => panic!("`{command}` re-authenticated"),
                _ => None,
            })
            .await;
            assert!(cause.contains(expected), "`{command}`: {cause}");
            assert!(!cause.contains("s3cr3t"), "the output was quoted: {cause}");
            attempts.push(attempt);
            if gave_up {
                break;
            }
        }
        assert_eq!(attempts, vec![1, 2, 3], "`{command}`");
        // Nothing stored was lost or replaced.
        let after = t
            .store
            .load(&cred("api"))
            .await
            .expect("load")
            .expect("stored");
        assert_eq!(after.generation, before.generation, "`{command}`");
        assert_eq!(
            after
                .tokens
                .refresh_token
                .as_ref()
                .map(|s| s.expose_secret().to_owned()),
            before
                .tokens
                .refresh_token
                .as_ref()
                .map(|s| s.expose_secret().to_owned()),
        );
        assert_eq!(after.status.state, CredentialState::NeedsReauth);
    }
}

/// 2026-11-23T00:00:00Z plus `day` days and `hh:mm`.
fn utc(day: i64, hh: i64, mm: i64) -> Timestamp {
    Timestamp::from_secs((20_415 + day) * 86_400 + hh * 3600 + mm * 60)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_relogin_runs_inside_its_window_before_the_absolute_expiry() {
    let clock = ManualClock::new(utc(0, 10, 0));
    let shared: SharedClock = clock.clone();
    let mut t = setup(
        shared,
        6 * 3600 * 1000,
        json!({
            "login": { "command": "cat $DIR/grant.json" },
            "max_session_age": "24h",
            "relogin_window": "01:00-05:00",
            "relogin_margin": "30m",
        }),
        fast_retries(3),
    )
    .await;
    let new_access = write_grant(&t.idp, t._dir.path());
    let first = t.keeper.token("api", Duration::ZERO).await.expect("token");
    let heartbeat = t.keeper.spawn_heartbeat();

    // Past the refresh schedule, just before the window: refreshes, no re-login yet.
    clock.set(utc(1, 0, 59));
    let (_, refreshed) = wait_for(&mut t.events, |seen| match seen {
        Seen::Refreshed(generation) => Some(*generation),
        Seen::ReloginDue { .. } => panic!("re-login before its window"),
        _ => None,
    })
    .await;
    assert!(refreshed > first.generation());

    // The window opens: the re-login runs, with the login command, no human.
    clock.set(utc(1, 1, 0));
    let (due_at, (expires_at, automatic)) = wait_for(&mut t.events, |seen| match seen {
        Seen::ReloginDue {
            expires_at,
            automatic,
        } => Some((*expires_at, *automatic)),
        _ => None,
    })
    .await;
    assert!(automatic);
    assert_eq!(expires_at, utc(1, 10, 0), "session start + max_session_age");
    assert_eq!(due_at, utc(1, 1, 0));
    let window: authkeeper_core::reauth::TimeWindow = "01:00-05:00".parse().expect("window");
    assert!(window.contains(due_at), "re-login outside its window");
    assert!(
        due_at <= expires_at - Duration::from_secs(1800),
        "re-login after expiry - margin"
    );
    let (_, generation) = wait_for(&mut t.events, |seen| match seen {
        Seen::Reauthenticated(generation) => Some(*generation),
        _ => None,
    })
    .await;
    let token = t.keeper.token("api", Duration::ZERO).await.expect("token");
    assert_eq!(token.generation(), generation);
    assert_eq!(token.secret().expose_secret(), new_access);
    assert_eq!(token.tokens().session_started_at(), utc(1, 1, 0));
    heartbeat.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_login_sessions_notify_early_then_need_reauth_at_their_absolute_expiry() {
    let clock = ManualClock::new(utc(0, 10, 0));
    let shared: SharedClock = clock.clone();
    let mut t = setup(
        shared,
        3600 * 1000,
        json!({
            "login": { "method": "device" },
            "max_session_age": "8h",
            "relogin_margin": "1h",
        }),
        fast_retries(3),
    )
    .await;
    let first = t.keeper.token("api", Duration::ZERO).await.expect("token");
    let heartbeat = t.keeper.spawn_heartbeat();
    // Deadline 17:00 (no window): the human is told before the session dies.
    clock.set(utc(0, 17, 0));
    let (due_at, (expires_at, automatic)) = wait_for(&mut t.events, |seen| match seen {
        Seen::ReloginDue {
            expires_at,
            automatic,
        } => Some((*expires_at, *automatic)),
        _ => None,
    })
    .await;
    assert!(!automatic);
    assert_eq!(expires_at, utc(0, 18, 0));
    assert_eq!(due_at, utc(0, 17, 0));
    // Nobody logged in: at the absolute expiry the credential needs re-authentication, even
    // though the provider would still refresh it.
    clock.set(utc(0, 18, 0));
    let (_, reason) = wait_for(&mut t.events, |seen| match seen {
        Seen::NeedsReauth(reason) => Some(reason.clone()),
        _ => None,
    })
    .await;
    assert!(reason.contains("absolute lifetime"), "{reason}");
    let status = t.keeper.status("api").expect("status");
    assert_eq!(status.state, CredentialState::NeedsReauth);
    let stored = t
        .store
        .load(&cred("api"))
        .await
        .expect("load")
        .expect("stored");
    assert_eq!(stored.status.state, CredentialState::NeedsReauth);
    assert!(stored.generation >= first.generation());
    // A human logs in (import): valid again, a new session.
    let grant = t.idp.mint_grant(None, None).expect("grant");
    let tokens = TokenResponse::parse_tokens(&serde_json::to_vec(&grant).expect("json"))
        .expect("tokens")
        .into_token_set(clock.now(), &ExpiryDefaults::default());
    let generation = t.keeper.import(&cred("api"), tokens).await.expect("import");
    let token = t.keeper.token("api", Duration::ZERO).await.expect("token");
    assert_eq!(token.generation(), generation);
    assert_eq!(
        t.keeper.status("api").expect("status").state,
        CredentialState::Valid
    );
    heartbeat.abort();
}
