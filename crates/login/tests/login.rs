//! Login methods against the mock IdP, time driven by a `ManualClock`: every device-flow
//! answer (pending, slow_down, expired_token, access_denied, local expiry, timeout), every
//! authorization-code failure (state, iss, error, PKCE verifier, timeout), the external login
//! command, and revocation.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use authkeeper_core::clock::{Clock, ManualClock, SharedClock, Timestamp};
use authkeeper_core::error::RefreshError;
use authkeeper_core::grant::{ClientAuth, Endpoint, OAuthClient, OAuthClientConfig};
use authkeeper_core::{ExpiryDefaults, ExposeSecret, SecretString};
use authkeeper_login::process::ChildEnv;
use authkeeper_login::{
    DeviceEvent, LoginClient, LoginCommand, LoginEndpoints, LoginError, PkceOptions, PollOptions,
    TokenTypeHint, run_login_command,
};
use authkeeper_mock::{DeviceOutcome, Knobs, MockClient, MockConfig, MockIdp};

struct Harness {
    idp: MockIdp,
    clock: Arc<ManualClock>,
    client: LoginClient,
}

async fn harness(knobs: Knobs) -> Harness {
    harness_with(knobs, true).await
}

async fn harness_with(knobs: Knobs, issuer: bool) -> Harness {
    let clock = ManualClock::new(Timestamp::from_secs(1_700_000_000));
    let shared: SharedClock = clock.clone();
    let idp = MockIdp::start(
        MockConfig::default()
            .with_clock(shared.clone())
            .with_knobs(knobs),
    )
    .await
    .expect("mock starts");
    let endpoint = if issuer {
        Endpoint::Issuer(idp.base_url().parse().unwrap())
    } else {
        Endpoint::TokenUrl(idp.token_url().parse().unwrap())
    };
    let config = OAuthClientConfig {
        endpoint,
        client_id: MockClient::DEFAULT_ID.into(),
        client_secret: Some(authkeeper_core::secret::ClientSecret::from(
            MockClient::DEFAULT_SECRET,
        )),
        auth: ClientAuth::ClientSecretBasic,
        scopes: vec!["api.read".into()],
        audience: None,
        extra_params: vec![],
        timeout: Duration::from_secs(5),
        proxy: None,
    };
    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let client = LoginClient::new(
        OAuthClient::new(config, http),
        shared,
        LoginEndpoints::default(),
    );
    Harness { idp, clock, client }
}

/// Polls with an observer that jumps the clock to each poll time and records the intervals.
async fn poll(h: &Harness, options: PollOptions) -> (Result<(), LoginError>, Vec<u64>) {
    let authorization = h.client.start_device().await.expect("device authorization");
    assert!(authorization.user_code.len() >= 8);
    let intervals = Arc::new(Mutex::new(Vec::new()));
    let clock = h.clock.clone();
    let seen = intervals.clone();
    let mut observer = move |event: &DeviceEvent| {
        if let DeviceEvent::Waiting {
            next_poll_at,
            interval,
        } = event
        {
            seen.lock().unwrap().push(interval.as_secs());
            clock.set(*next_poll_at);
        }
    };
    let result = tokio::time::timeout(
        Duration::from_secs(20),
        h.client
            .poll_device(&authorization, &options, &mut observer),
    )
    .await
    .expect("polling ends");
    let intervals = intervals.lock().unwrap().clone();
    (
        result.map(|tokens| {
            let set = tokens.into_token_set(h.clock.now(), &ExpiryDefaults::default());
            assert!(set.refresh_token.is_some());
        }),
        intervals,
    )
}

#[tokio::test]
async fn device_flow_keeps_polling_while_pending_at_the_default_interval() {
    let h = harness(Knobs {
        device_pending_polls: 3,
        ..Knobs::default()
    })
    .await;
    let (result, intervals) = poll(&h, PollOptions::default()).await;
    result.expect("approved after three pending answers");
    assert_eq!(
        intervals,
        [5, 5, 5, 5],
        "no interval sent: 5 s (RFC 8628 §3.2)"
    );
    let stats = h.idp.stats();
    assert_eq!(stats.device_polls, 4);
    assert_eq!(stats.grants_minted, 1);
}

#[tokio::test]
async fn device_flow_slow_down_adds_five_seconds_each_time() {
    let h = harness(Knobs {
        device_interval_secs: Some(2),
        device_slow_down_polls: 2,
        device_pending_polls: 1,
        ..Knobs::default()
    })
    .await;
    let (result, intervals) = poll(&h, PollOptions::default()).await;
    result.expect("approved");
    assert_eq!(intervals, [2, 7, 12, 12]);
    assert_eq!(h.idp.stats().device_polls, 4);
}

#[tokio::test]
async fn device_flow_stops_on_expired_token_and_access_denied() {
    let h = harness(Knobs {
        device_pending_polls: 1,
        device_outcome: DeviceOutcome::Expire,
        ..Knobs::default()
    })
    .await;
    let (result, _) = poll(&h, PollOptions::default()).await;
    let error = result.unwrap_err();
    assert!(matches!(error, LoginError::DeviceCodeExpired), "{error}");
    assert!(error.to_string().contains("expired"), "{error}");

    let h = harness(Knobs {
        device_outcome: DeviceOutcome::Deny,
        ..Knobs::default()
    })
    .await;
    let (result, _) = poll(&h, PollOptions::default()).await;
    let error = result.unwrap_err();
    assert!(matches!(error, LoginError::AccessDenied { .. }), "{error}");
    assert!(error.to_string().contains("denied"), "{error}");
    assert_eq!(h.idp.stats().grants_minted, 0);
}

#[tokio::test]
async fn device_flow_gives_up_at_expires_in_and_at_the_deadline() {
    let h = harness(Knobs {
        device_pending_polls: 1000,
        device_expires_in_secs: 12,
        ..Knobs::default()
    })
    .await;
    let (result, intervals) = poll(&h, PollOptions::default()).await;
    assert!(matches!(result, Err(LoginError::DeviceCodeExpired)));
    assert_eq!(
        intervals,
        [5, 5],
        "polls at 5 s and 10 s; 15 s is past expires_in"
    );

    let h = harness(Knobs {
        device_pending_polls: 1000,
        ..Knobs::default()
    })
    .await;
    let deadline = h.clock.now() + Duration::from_secs(30);
    let (result, intervals) = poll(
        &h,
        PollOptions {
            interval_override: Some(Duration::from_secs(10)),
            deadline: Some(deadline),
        },
    )
    .await;
    assert!(matches!(result, Err(LoginError::TimedOut(_))), "{result:?}");
    assert_eq!(intervals, [10, 10, 10]);
}

#[tokio::test]
async fn device_flow_needs_an_endpoint() {
    let h = harness_with(Knobs::default(), false).await;
    let error = h.client.start_device().await.unwrap_err();
    assert!(matches!(error, LoginError::Config(_)), "{error}");
    assert!(error.to_string().contains("device_authorization_url"));
}

/// Runs the PKCE flow, playing a browser that follows the mock's auto-approving redirect to
/// the loopback listener. Returns the login result and the status of the page the browser saw.
async fn pkce(h: &Harness) -> (Result<(), LoginError>, Option<u16>) {
    let page_status = Arc::new(Mutex::new(None));
    let status = page_status.clone();
    let mut browser = move |url: &url::Url| {
        let url = url.clone();
        let status = status.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap();
            let answer = http.get(url).send().await.unwrap();
            assert_eq!(answer.status(), 302);
            let location = answer.headers()["location"].to_str().unwrap().to_owned();
            assert!(location.starts_with("http://127.0.0.1:"), "{location}");
            let page = http.get(location).send().await.unwrap();
            *status.lock().unwrap() = Some(page.status().as_u16());
        });
    };
    let options = PkceOptions {
        redirect_port: 0,
        timeout: Duration::from_secs(60),
        authorization_params: Default::default(),
    };
    let result = tokio::time::timeout(
        Duration::from_secs(20),
        h.client.login_with_pkce(&options, &mut browser),
    )
    .await
    .expect("login ends");
    // Let the browser task read the page.
    for _ in 0..100 {
        if page_status.lock().unwrap().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = *page_status.lock().unwrap();
    (
        result.map(|tokens| assert!(tokens.has_refresh_token())),
        status,
    )
}

#[tokio::test]
async fn pkce_flow_exchanges_the_code_with_the_verifier() {
    let h = harness(Knobs::default()).await;
    let (result, page) = pkce(&h).await;
    result.expect("login succeeds");
    assert_eq!(page, Some(200));
    let stats = h.idp.stats();
    assert_eq!((stats.authorizations, stats.grants_minted), (1, 1));
}

#[tokio::test]
async fn pkce_flow_rejects_a_forged_state_a_wrong_issuer_and_a_denial() {
    type Expected = fn(&LoginError) -> bool;
    let cases: [(Knobs, Expected); 3] = [
        (
            Knobs {
                authorize_wrong_state: true,
                ..Knobs::default()
            },
            |e| matches!(e, LoginError::StateMismatch),
        ),
        (
            Knobs {
                authorize_wrong_iss: true,
                ..Knobs::default()
            },
            |e| matches!(e, LoginError::IssuerMismatch { got, .. } if got == "https://evil.example"),
        ),
        (
            Knobs {
                authorize_error: Some("access_denied".into()),
                ..Knobs::default()
            },
            |e| matches!(e, LoginError::AccessDenied { .. }),
        ),
    ];
    for (knobs, expected) in cases {
        let h = harness(knobs).await;
        let (result, page) = pkce(&h).await;
        let error = result.unwrap_err();
        assert!(expected(&error), "{error}");
        assert_eq!(page, Some(400), "the browser is told the login failed");
        assert_eq!(h.idp.stats().grants_minted, 0, "no code exchanged");
    }
}

#[tokio::test]
async fn pkce_flow_surfaces_a_rejected_code_verifier() {
    let h = harness(Knobs {
        pkce_corrupt_challenge: true,
        ..Knobs::default()
    })
    .await;
    let (result, _) = pkce(&h).await;
    match result.unwrap_err() {
        LoginError::Endpoint {
            source: RefreshError::OAuth { code, .. },
            ..
        } => assert_eq!(code, "invalid_grant"),
        other => panic!("expected invalid_grant, got {other}"),
    }
}

#[tokio::test]
async fn pkce_flow_times_out_by_the_clock() {
    let h = harness(Knobs::default()).await;
    let options = PkceOptions {
        redirect_port: 0,
        timeout: Duration::from_secs(120),
        authorization_params: Default::default(),
    };
    let mut nobody_opens = |_: &url::Url| {};
    let login = h.client.login_with_pkce(&options, &mut nobody_opens);
    let clock = h.clock.clone();
    let ticker = async move {
        loop {
            tokio::time::sleep(Duration::from_millis(10)).await;
            clock.advance(Duration::from_secs(60));
        }
    };
    let result = tokio::time::timeout(Duration::from_secs(20), async {
        tokio::select! {
            result = login => result,
            () = ticker => unreachable!(),
        }
    })
    .await
    .expect("timed out by the manual clock");
    assert!(matches!(result, Err(LoginError::TimedOut(_))), "{result:?}");
}

fn command(line: &str, timeout: Duration) -> LoginCommand {
    LoginCommand {
        command: line.into(),
        timeout,
        env: vec![("AUTHKEEPER_CREDENTIAL".into(), "crm".into())],
        child_env: ChildEnv::default(),
    }
}

#[tokio::test]
async fn login_command_output_becomes_a_token_response() {
    let tokens = run_login_command(&command(
        r#"echo "progress on stderr" >&2; printf '{"access_token":"at-%s","refresh_token":"rt","expires_in":60}' "$AUTHKEEPER_CREDENTIAL""#,
        Duration::from_secs(10),
    ))
    .await
    .expect("tokens");
    let set = tokens.into_token_set(Timestamp::from_secs(0), &ExpiryDefaults::default());
    assert_eq!(set.access_token.expose_secret(), "at-crm");
    assert_eq!(set.expires_at, Timestamp::from_secs(60));
}

#[tokio::test]
async fn login_command_timeout_kills_the_whole_process_group() {
    let dir = authkeeper_testkit::temp_dir();
    let pid_file = dir.path().join("pid");
    let started = Instant::now();
    let error = run_login_command(&command(
        &format!("sleep 30 & echo $! > {}; wait", pid_file.display()),
        Duration::from_millis(500),
    ))
    .await
    .unwrap_err();
    assert!(matches!(error, LoginError::CommandTimedOut(_)), "{error}");
    assert!(error.to_string().contains("killed"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut gone = false;
    for _ in 0..100 {
        // kill -0: does the process still exist (a reaped child or a zombie of init's)?
        let alive = std::process::Command::new("kill")
            .args(["-0", &pid.to_string()])
            .status()
            .unwrap()
            .success();
        let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true);
        if !alive || zombie {
            gone = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(gone, "the grandchild `sleep` was killed with the group");
}

#[tokio::test]
async fn login_command_failures_are_clear_and_never_quote_output() {
    let cases = [
        ("echo 'eyJsecret-bare-token'", "not JSON"),
        ("echo '{\"access_token\": \"secret-x\"'", "malformed JSON"),
        ("echo '{\"error\":\"nope\"}'", "no access_token"),
        (
            "echo '{\"access_token\":\"secret-x\"}'; exit 3",
            "exit status: 3",
        ),
        ("head -c 2000000 /dev/zero | tr '\\0' a", "more than"),
        ("/nonexistent/login-helper", "exit status: 127"),
    ];
    for (line, expected) in cases {
        let error = run_login_command(&command(line, Duration::from_secs(10)))
            .await
            .unwrap_err();
        let text = error.to_string();
        assert!(text.contains(expected), "{line}: {text}");
        assert!(!text.contains("secret"), "{line}: {text}");
    }
}

#[tokio::test]
async fn revocation_ends_the_grant_or_reports_no_endpoint() {
    let h = harness(Knobs::default()).await;
    let minted = h.idp.mint_grant(None, None).unwrap();
    let refresh = SecretString::from(minted["refresh_token"].as_str().unwrap().to_owned());
    assert!(
        h.client
            .revoke(&refresh, TokenTypeHint::RefreshToken)
            .await
            .expect("revoked")
    );
    let stats = h.idp.stats();
    assert_eq!((stats.revocations, stats.active_grants), (1, 0));

    let h = harness_with(Knobs::default(), false).await;
    assert!(
        !h.client
            .revoke(&refresh, TokenTypeHint::RefreshToken)
            .await
            .expect("no endpoint is not an error")
    );
}
