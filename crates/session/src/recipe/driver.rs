//! Runs a [`super::Recipe`] in a real headless Chromium over CDP (feature `browser`).

use std::future::Future;
use std::time::Duration;

use chromiumoxide::Page;
use chromiumoxide::cdp::browser_protocol::input::InsertTextParams;
use chromiumoxide::cdp::browser_protocol::network::{
    Cookie, CookieParam, CookieSameSite, EventResponseReceived, ResourceType, TimeSinceEpoch,
};
use chromiumoxide::cdp::js_protocol::runtime::EvaluateParams;
use futures_util::{FutureExt as _, StreamExt as _};
use serde_json::Value;
use url::Url;
use zeroize::Zeroizing;

use super::{Action, Recipe};
use crate::browser::{Chromium, LaunchOptions};
use crate::config::{AccountConfig, LoginConfig, SiteConfig};
use crate::login::LoginError;
use crate::storage_state::{Extra, NameValue, OriginState, SameSite, StateCookie, StorageState};

/// Reads an origin's localStorage, sessionStorage and IndexedDB (see the script).
const CAPTURE_SCRIPT: &str = include_str!("capture.js");
/// Writes them back (`__AUTHKEEPER_STATE__` is replaced by the JSON to write).
const RESTORE_SCRIPT: &str = include_str!("restore.js");

/// What [`CAPTURE_SCRIPT`] answers.
#[derive(serde::Deserialize)]
struct CapturedStorage {
    local: Vec<(String, String)>,
    session: Vec<(String, String)>,
    idb: Vec<Value>,
}

/// How often waiting steps look again.
const POLL: Duration = Duration::from_millis(100);
/// Bound on one look (one `Runtime.evaluate`) while waiting.
const POLL_CALL: Duration = Duration::from_secs(2);
/// Bound on a whole [`load_state_and_check`].
const CHECK_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on each navigation of [`load_state_and_check`].
const CHECK_STEP_TIMEOUT: Duration = Duration::from_secs(15);

/// Runs `login.steps` for `account` in a fresh headless Chromium and returns the captured
/// storage state. The browser is killed and its profile removed however this ends.
pub async fn run_recipe(
    site: &SiteConfig,
    account: &AccountConfig,
    login: &LoginConfig,
    options: &LaunchOptions,
) -> Result<StorageState, LoginError> {
    let recipe = Recipe::parse(&login.steps)?;
    let values = recipe.resolve_values(account)?;
    let origins = capture_origins(site, &login.origins)?;
    let mut slot: Option<Chromium> = None;
    let work = async {
        let chromium = slot.insert(Chromium::launch(options).await?);
        let page = chromium.new_page().await?;
        for (index, (action, value)) in recipe.steps.iter().zip(&values).enumerate() {
            let step = index + 1;
            let run = run_step(&page, site, action, value.as_ref(), step);
            match tokio::time::timeout(login.step_timeout, run).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => return Err(error),
                Err(_elapsed) => {
                    return Err(LoginError::StepTimeout {
                        step,
                        action: action.describe(),
                        timeout: login.step_timeout,
                    });
                }
            }
        }
        capture_state(chromium, &page, &origins, login.step_timeout).await
    };
    let outcome = tokio::time::timeout(login.timeout, work).await;
    if let Some(chromium) = slot.take() {
        chromium.close().await;
    }
    match outcome {
        Ok(result) => result,
        Err(_elapsed) => Err(LoginError::Timeout(login.timeout)),
    }
}

/// [`load_state_and_check_with`] with [`LaunchOptions::default`].
pub async fn load_state_and_check(
    state: &StorageState,
    url: &Url,
    selector: &str,
) -> Result<Option<String>, LoginError> {
    load_state_and_check_with(&LaunchOptions::default(), state, url, selector).await
}

/// Starts a fresh Chromium profile, loads `state` (cookies through `Storage.setCookies`,
/// localStorage by visiting each origin), navigates to `url` and returns the text of the
/// first element matching `selector`, or `None` when there is none: whether an exported
/// state is logged in, checked in the DOM.
pub async fn load_state_and_check_with(
    options: &LaunchOptions,
    state: &StorageState,
    url: &Url,
    selector: &str,
) -> Result<Option<String>, LoginError> {
    let mut slot: Option<Chromium> = None;
    let work = async {
        let chromium = slot.insert(Chromium::launch(options).await?);
        let cookies = state
            .cookies
            .iter()
            .map(cookie_param)
            .collect::<Result<Vec<_>, _>>()?;
        if !cookies.is_empty() {
            chromium
                .cdp()
                .set_cookies(cookies)
                .await
                .map_err(|error| LoginError::Browser(format!("cannot set the cookies: {error}")))?;
        }
        let page = chromium.new_page().await?;
        for origin in &state.origins {
            restore_origin(&page, origin).await?;
        }
        navigate(&page, url, CHECK_STEP_TIMEOUT).await?;
        let _ = tokio::time::timeout(CHECK_STEP_TIMEOUT, wait_parsed(&page)).await;
        let script = format!(
            "(() => {{ const el = document.querySelector({}); return el ? el.textContent : null; }})()",
            js_string(selector)
        );
        match evaluate(&page, &script).await {
            Ok(Value::String(text)) => Ok(Some(text)),
            Ok(_) => Ok(None),
            Err(message) => Err(LoginError::Browser(format!(
                "cannot query {selector}: {message}"
            ))),
        }
    };
    let outcome = tokio::time::timeout(CHECK_TIMEOUT, work).await;
    if let Some(chromium) = slot.take() {
        chromium.close().await;
    }
    outcome.unwrap_or(Err(LoginError::Timeout(CHECK_TIMEOUT)))
}

/// Writes an origin's localStorage, sessionStorage and IndexedDB in `page` (navigating there
/// first); nothing to do for an origin without any.
pub(crate) async fn restore_origin(page: &Page, origin: &OriginState) -> Result<(), LoginError> {
    let idb = origin.indexed_db_json();
    if origin.local_storage.is_empty() && origin.session_storage.is_empty() && idb.is_none() {
        return Ok(());
    }
    let target = Url::parse(&origin.origin).map_err(|_| {
        LoginError::InvalidState(format!("origin {:?} is not a URL", origin.origin))
    })?;
    navigate(page, &target, CHECK_STEP_TIMEOUT).await?;
    let pairs = |entries: &[NameValue]| -> Vec<(String, String)> {
        entries
            .iter()
            .map(|entry| (entry.name.clone(), entry.value.clone()))
            .collect()
    };
    let idb: Value = match &idb {
        Some(json) => serde_json::from_str(json)
            .map_err(|_| LoginError::InvalidState("the IndexedDB export is not JSON".to_owned()))?,
        None => Value::Array(Vec::new()),
    };
    let state = Zeroizing::new(
        serde_json::json!({
            "local": pairs(&origin.local_storage),
            "session": pairs(&origin.session_storage),
            "idb": idb,
        })
        .to_string(),
    );
    let script = Zeroizing::new(RESTORE_SCRIPT.replace("__AUTHKEEPER_STATE__", &state));
    evaluate(page, script.as_str()).await.map_err(|message| {
        LoginError::Browser(format!(
            "cannot restore the web storage of {}: {message}",
            origin.origin
        ))
    })?;
    Ok(())
}

/// Runs one step (the caller bounds it by `step_timeout`).
async fn run_step(
    page: &Page,
    site: &SiteConfig,
    action: &Action,
    value: Option<&Zeroizing<String>>,
    step: usize,
) -> Result<(), LoginError> {
    let failed = |message: String| LoginError::StepFailed {
        step,
        action: action.describe(),
        message,
    };
    match action {
        Action::Goto(target) => {
            let url = site
                .resolve(target)
                .map_err(|error| failed(format!("not a URL: {error}")))?;
            let status = goto(page, &url).await.map_err(failed)?;
            match status {
                Some(status @ (403 | 429 | 500..=599)) => Err(LoginError::Blocked { status }),
                Some(status @ 400..=499) => Err(LoginError::HttpStatus {
                    step,
                    action: action.describe(),
                    status,
                }),
                _ => Ok(()),
            }
        }
        Action::Fill { selector, .. } => {
            let Some(value) = value else {
                return Err(failed("no value resolved".to_owned()));
            };
            wait_for_selector(page, selector).await.map_err(failed)?;
            let focus = format!(
                "(() => {{ const el = document.querySelector({}); if (!el) return 'the element is gone'; \
                 el.focus(); if (typeof el.select === 'function') el.select(); \
                 if ('value' in el) el.value = ''; return true; }})()",
                js_string(selector)
            );
            expect_true(evaluate(page, &focus).await).map_err(failed)?;
            page.execute(InsertTextParams::new(value.as_str()))
                .await
                .map_err(|error| failed(format!("cannot type: {error}")))?;
            let change = format!(
                "(() => {{ const el = document.querySelector({}); \
                 if (el) el.dispatchEvent(new Event('change', {{ bubbles: true }})); return true; }})()",
                js_string(selector)
            );
            evaluate(page, &change).await.map(drop).map_err(failed)
        }
        Action::Click(selector) => {
            wait_for_selector(page, selector).await.map_err(failed)?;
            let clicked = match page.find_element(selector.as_str()).await {
                Ok(element) => element.click().await.map(drop).is_ok(),
                Err(_) => false,
            };
            if clicked {
                return Ok(());
            }
            // No box to click (hidden, zero-sized): a DOM click still submits.
            let script = format!(
                "(() => {{ const el = document.querySelector({}); if (!el) return 'the element is gone'; \
                 el.click(); return true; }})()",
                js_string(selector)
            );
            expect_true(evaluate(page, &script).await).map_err(failed)
        }
        Action::WaitFor(selector) => wait_for_selector(page, selector).await.map_err(failed),
        Action::WaitForUrl(target) => {
            let matcher = &UrlMatcher::new(target);
            poll(|| async move {
                let script = "JSON.stringify([location.href, location.pathname + location.search, \
                              location.pathname, document.readyState])";
                let Value::String(json) = evaluate(page, script).await? else {
                    return Ok(None);
                };
                let parts: Vec<String> = serde_json::from_str(&json).unwrap_or_default();
                Ok(match parts.as_slice() {
                    [href, path_query, path, ready] => (ready != "loading"
                        && matcher.matches(href, path_query, path))
                    .then_some(()),
                    _ => None,
                })
            })
            .await;
            Ok(())
        }
        Action::Evaluate(script) => evaluate(page, script).await.map(drop).map_err(failed),
    }
}

/// What `wait_for_url` compares.
enum UrlMatcher {
    Absolute(Url),
    PathAndQuery(String),
    Path(String),
}

impl UrlMatcher {
    fn new(target: &str) -> Self {
        if let Ok(url) = Url::parse(target) {
            UrlMatcher::Absolute(url)
        } else if target.contains('?') {
            UrlMatcher::PathAndQuery(target.to_owned())
        } else {
            UrlMatcher::Path(target.to_owned())
        }
    }

    fn matches(&self, href: &str, path_query: &str, path: &str) -> bool {
        match self {
            UrlMatcher::Absolute(url) => Url::parse(href).is_ok_and(|mut href| {
                href.set_fragment(None);
                let mut url = url.clone();
                url.set_fragment(None);
                href == url
            }),
            UrlMatcher::PathAndQuery(target) => path_query == target,
            UrlMatcher::Path(target) => path == target,
        }
    }
}

/// Navigates and returns the main document's HTTP status (when there was a response),
/// read from the `Network.responseReceived` event of the main frame's document. A
/// navigation Chromium fails (e.g. an error status with an empty body) still reports the
/// status when there was one.
async fn goto(page: &Page, url: &Url) -> Result<Option<u16>, String> {
    let mut responses = page
        .event_listener::<EventResponseReceived>()
        .await
        .map_err(|error| format!("cannot listen to responses: {error}"))?;
    let navigated = page.goto(url.as_str()).await.map(drop);
    let main_frame = page.mainframe().await.ok().flatten();
    // The status when `event` is the main frame's document response.
    let document_status = |event: &EventResponseReceived| {
        let in_main_frame = match (&main_frame, &event.frame_id) {
            (Some(main), Some(frame)) => main == frame,
            _ => true,
        };
        (event.r#type == ResourceType::Document && in_main_frame)
            .then(|| u16::try_from(event.response.status).ok())
            .flatten()
    };
    let mut status = None;
    // The document's response comes before its load event, so it is already queued.
    while let Some(Some(event)) = responses.next().now_or_never() {
        status = document_status(&event).or(status);
    }
    if status.is_none() {
        // Not queued yet (a busy handler): give it a moment.
        let wait = async {
            while let Some(event) = responses.next().await {
                if let Some(found) = document_status(&event) {
                    return Some(found);
                }
            }
            None
        };
        status = tokio::time::timeout(Duration::from_millis(300), wait)
            .await
            .ok()
            .flatten();
    }
    match (navigated, status) {
        (Ok(()), status) => Ok(status),
        (Err(_), Some(status)) if status >= 400 => Ok(Some(status)),
        (Err(error), _) => Err(format!("navigation failed: {error}")),
    }
}

/// Navigates within `timeout`, for capture and checks (no status rule).
async fn navigate(page: &Page, url: &Url, timeout: Duration) -> Result<(), LoginError> {
    match tokio::time::timeout(timeout, goto(page, url)).await {
        Ok(Ok(_status)) => Ok(()),
        Ok(Err(message)) => Err(LoginError::Browser(format!("{url}: {message}"))),
        Err(_elapsed) => Err(LoginError::Browser(format!(
            "{url}: navigation did not complete within {}",
            humantime_serde::re::humantime::format_duration(timeout)
        ))),
    }
}

/// Waits until an element matches `selector` (the caller bounds it); an invalid selector
/// fails at once.
async fn wait_for_selector(page: &Page, selector: &str) -> Result<(), String> {
    let script = format!(
        "(() => {{ try {{ return document.querySelector({}) !== null; }} \
         catch (e) {{ return 'invalid selector: ' + e.message; }} }})()",
        js_string(selector)
    );
    let script = &script;
    poll(|| async move {
        Ok(match evaluate(page, script).await? {
            Value::Bool(true) => Some(Ok(())),
            Value::String(message) => Some(Err(message)),
            _ => None,
        })
    })
    .await
}

/// Waits until the document is parsed (`readyState` is not `loading`).
async fn wait_parsed(page: &Page) {
    poll(|| async move {
        Ok(matches!(
            evaluate(page, "document.readyState").await?,
            Value::String(state) if state != "loading"
        )
        .then_some(()))
    })
    .await;
}

/// Calls `check` until it answers `Some`; failed or slow looks (a navigation in progress)
/// count as not yet. The caller bounds the whole wait.
async fn poll<T, F, Fut>(mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, String>>,
{
    loop {
        if let Ok(Ok(Some(done))) = tokio::time::timeout(POLL_CALL, check()).await {
            return done;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `Runtime.evaluate` in the page's main frame, by value, awaiting promises.
async fn evaluate(page: &Page, expression: &str) -> Result<Value, String> {
    let params = EvaluateParams::builder()
        .expression(expression)
        .return_by_value(true)
        .await_promise(true)
        .build()
        .map_err(|error| format!("cannot build Runtime.evaluate: {error}"))?;
    let returns = page
        .execute(params)
        .await
        .map_err(|error| format!("Runtime.evaluate failed: {error}"))?
        .result;
    if let Some(details) = returns.exception_details {
        let message = details
            .exception
            .as_ref()
            .and_then(|exception| exception.description.clone())
            .unwrap_or(details.text);
        let first_line: String = message
            .lines()
            .next()
            .unwrap_or_default()
            .chars()
            .take(300)
            .collect();
        return Err(format!("the script threw: {first_line}"));
    }
    Ok(returns.result.value.unwrap_or(Value::Null))
}

/// A script answered `true`, or a string saying what is wrong.
fn expect_true(result: Result<Value, String>) -> Result<(), String> {
    match result? {
        Value::Bool(true) => Ok(()),
        Value::String(message) => Err(message),
        other => Err(format!("unexpected script result {other}")),
    }
}

/// `text` as a JavaScript string literal.
fn js_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_owned())
}

/// The origins whose localStorage is captured: `origins` resolved against the site's
/// origin, or the site's origin.
fn capture_origins(site: &SiteConfig, origins: &[String]) -> Result<Vec<Url>, LoginError> {
    let mut urls: Vec<Url> = Vec::new();
    let listed: Vec<&str> = if origins.is_empty() {
        vec!["/"]
    } else {
        origins.iter().map(String::as_str).collect()
    };
    for origin in listed {
        let url = site.resolve(origin).map_err(|error| {
            LoginError::Config(format!("login origin {origin:?} is not a URL: {error}"))
        })?;
        let origin_url = url.origin();
        if !origin_url.is_tuple() {
            return Err(LoginError::Config(format!(
                "login origin {origin:?} has no origin"
            )));
        }
        let root = Url::parse(&origin_url.ascii_serialization())
            .map_err(|error| LoginError::Config(format!("login origin {origin:?}: {error}")))?;
        if !urls.contains(&root) {
            urls.push(root);
        }
    }
    Ok(urls)
}

/// Captures every cookie of the browser and the localStorage of `origins`.
async fn capture_state(
    chromium: &Chromium,
    page: &Page,
    origins: &[Url],
    step_timeout: Duration,
) -> Result<StorageState, LoginError> {
    // The last navigation's scripts (which may write localStorage) have run once it loaded.
    let _ = tokio::time::timeout(step_timeout, wait_parsed(page)).await;
    let mut local = Vec::new();
    for origin in origins {
        let serialized = origin.origin().ascii_serialization();
        let here = tokio::time::timeout(step_timeout, evaluate(page, "location.origin")).await;
        if !matches!(&here, Ok(Ok(Value::String(current))) if *current == serialized) {
            navigate(page, origin, step_timeout).await?;
            let _ = tokio::time::timeout(step_timeout, wait_parsed(page)).await;
        }
        let read = tokio::time::timeout(step_timeout, evaluate(page, CAPTURE_SCRIPT)).await;
        let json = match read {
            Ok(Ok(Value::String(json))) => Zeroizing::new(json),
            Ok(Ok(_)) => Zeroizing::new(r#"{"local":[],"session":[],"idb":[]}"#.to_owned()),
            Ok(Err(message)) => {
                return Err(LoginError::Browser(format!(
                    "cannot read the web storage of {serialized}: {message}"
                )));
            }
            Err(_elapsed) => {
                return Err(LoginError::Browser(format!(
                    "reading the web storage of {serialized} timed out"
                )));
            }
        };
        let storage: CapturedStorage = serde_json::from_str(&json).map_err(|_| {
            LoginError::Browser(format!("the web storage of {serialized} is not readable"))
        })?;
        let entries = |pairs: Vec<(String, String)>| -> Vec<NameValue> {
            pairs
                .into_iter()
                .map(|(name, value)| NameValue::new(name, value))
                .collect()
        };
        let mut captured = OriginState::new(serialized.clone(), entries(storage.local));
        captured.session_storage = entries(storage.session);
        if !storage.idb.is_empty() {
            let databases = Zeroizing::new(serde_json::to_string(&storage.idb).map_err(|_| {
                LoginError::Browser(format!("the IndexedDB of {serialized} is not readable"))
            })?);
            captured
                .set_indexed_db_json(&databases)
                .map_err(|error| LoginError::InvalidState(error.to_string()))?;
        }
        if !(captured.local_storage.is_empty()
            && captured.session_storage.is_empty()
            && storage.idb.is_empty())
        {
            local.push(captured);
        }
    }
    let cookies = tokio::time::timeout(step_timeout, chromium.cdp().get_cookies())
        .await
        .map_err(|_| LoginError::Browser("reading the cookies timed out".to_owned()))?
        .map_err(|error| LoginError::Browser(format!("cannot read the cookies: {error}")))?;
    Ok(StorageState {
        cookies: cookies.into_iter().map(state_cookie).collect(),
        origins: local,
        extra: Extra::default(),
    })
}

/// A CDP cookie as a storage-state cookie (`expires` -1 for a session cookie).
fn state_cookie(cookie: Cookie) -> StateCookie {
    StateCookie {
        name: cookie.name,
        value: cookie.value,
        domain: cookie.domain,
        path: cookie.path,
        expires: if cookie.session || cookie.expires <= 0.0 {
            -1.0
        } else {
            cookie.expires
        },
        http_only: cookie.http_only,
        secure: cookie.secure,
        same_site: match cookie.same_site {
            Some(CookieSameSite::Strict) => SameSite::Strict,
            Some(CookieSameSite::None) => SameSite::None,
            _ => SameSite::Lax,
        },
        extra: Extra::default(),
    }
}

/// A storage-state cookie as a `Storage.setCookies` parameter.
fn cookie_param(cookie: &StateCookie) -> Result<CookieParam, LoginError> {
    let mut builder = CookieParam::builder()
        .name(cookie.name.clone())
        .value(cookie.value.clone())
        .domain(cookie.domain.clone())
        .path(cookie.path.clone())
        .secure(cookie.secure)
        .http_only(cookie.http_only)
        .same_site(match cookie.same_site {
            SameSite::Strict => CookieSameSite::Strict,
            SameSite::Lax => CookieSameSite::Lax,
            SameSite::None => CookieSameSite::None,
        });
    if cookie.expires > 0.0 {
        builder = builder.expires(TimeSinceEpoch::new(cookie.expires));
    }
    builder
        .build()
        .map_err(|_| LoginError::InvalidState(format!("cookie {} cannot be loaded", cookie.name)))
}
