//! Storage-state interchange: Playwright's own files round-trip byte for byte, cookies.txt,
//! RFC 6265 cookie matching and `Set-Cookie` merging, and bad input gives errors, not panics.
//!
//! The fixtures were written by Playwright 1.65.1 (`playwright-core`) driving Chromium, with
//! `tests/fixtures/capture_playwright_state.js`: `playwright_state.json` from
//! `context.storageState({ path })`, `playwright_state_indexeddb.json` with `indexedDB: true`.

use authkeeper_core::Timestamp;
use authkeeper_session::cookies_txt::{parse_cookies_txt, to_cookies_txt};
use authkeeper_session::jar::{cookie_header, merge_set_cookie};
use authkeeper_session::storage_state::{
    MAX_COOKIES, MAX_DOCUMENT_BYTES, NameValue, OriginState, SameSite, StateCookie, StateError,
    StorageState,
};
use url::Url;

const PLAYWRIGHT: &[u8] = include_bytes!("fixtures/playwright_state.json");
const PLAYWRIGHT_IDB: &[u8] = include_bytes!("fixtures/playwright_state_indexeddb.json");

/// 2026-11-23T00:00:00Z, before every persistent cookie of the fixture expires.
const NOW: Timestamp = Timestamp::from_secs(1_795_392_000);

fn url(text: &str) -> Url {
    Url::parse(text).unwrap()
}

fn state_of(cookies: Vec<StateCookie>) -> StorageState {
    StorageState {
        cookies,
        ..StorageState::default()
    }
}

fn cookie(name: &str, domain: &str, path: &str) -> StateCookie {
    StateCookie::new(name, format!("v-{name}"), domain, path)
}

// --- Playwright round trip ------------------------------------------------------------------

#[test]
fn playwright_file_round_trips_byte_for_byte() {
    for fixture in [PLAYWRIGHT, PLAYWRIGHT_IDB] {
        let state = StorageState::from_json(fixture).unwrap();
        assert_eq!(state.to_json().as_bytes(), fixture);
        // And through serde (how a session record embeds it).
        let embedded = serde_json::to_string(&state).unwrap();
        let back: StorageState = serde_json::from_str(&embedded).unwrap();
        assert_eq!(back, state);
        assert_eq!(back.to_json().as_bytes(), fixture);
    }
}

#[test]
fn playwright_file_is_read_faithfully() {
    let state = StorageState::from_json(PLAYWRIGHT).unwrap();
    assert_eq!(state.cookies.len(), 12);
    let dom = state.cookies.iter().find(|c| c.name == "dom").unwrap();
    assert_eq!(dom.value, "x=y");
    assert_eq!(dom.domain, ".example.com");
    assert!(dom.http_only && dom.secure);
    assert_eq!(dom.same_site, SameSite::Strict);
    let plain = state.cookies.iter().find(|c| c.name == "plain").unwrap();
    assert_eq!(plain.expires, -1.0);
    assert!(plain.is_session());
    let part = state.cookies.iter().find(|c| c.name == "part").unwrap();
    assert_eq!(part.partition_key(), Some("http://127.0.0.1"));
    let names: Vec<&str> = part.extra.names().collect();
    assert_eq!(names, ["partitionKey", "_crHasCrossSiteAncestor"]);
    let origin = &state.origins[0];
    assert!(origin.origin.starts_with("http://127.0.0.1:"));
    assert_eq!(origin.local_storage.len(), 3);
    assert_eq!(origin.local_storage[2].name, "");
    assert!(origin.local_storage[1].value.contains('\u{7f}'));
    let idb = StorageState::from_json(PLAYWRIGHT_IDB).unwrap();
    let names: Vec<&str> = idb.origins[0].extra.names().collect();
    assert_eq!(names, ["indexedDB"]);
}

#[test]
fn export_writes_javascript_numbers_and_key_order() {
    let mut c = StateCookie::new("sid", "s3cr3t", ".example.com", "/");
    c.expires = 1735689600.5;
    c.http_only = true;
    let mut s = StateCookie::new("session", "x", "app.example.com", "/app");
    s.same_site = SameSite::None;
    s.secure = true;
    let state = StorageState {
        cookies: vec![c, s],
        origins: vec![OriginState::new(
            "https://app.example.com",
            vec![NameValue::new("k", "v")],
        )],
        ..StorageState::default()
    };
    let expected = r#"{
  "cookies": [
    {
      "name": "sid",
      "value": "s3cr3t",
      "domain": ".example.com",
      "path": "/",
      "expires": 1735689600.5,
      "httpOnly": true,
      "secure": false,
      "sameSite": "Lax"
    },
    {
      "name": "session",
      "value": "x",
      "domain": "app.example.com",
      "path": "/app",
      "expires": -1,
      "httpOnly": false,
      "secure": true,
      "sameSite": "None"
    }
  ],
  "origins": [
    {
      "origin": "https://app.example.com",
      "localStorage": [
        {
          "name": "k",
          "value": "v"
        }
      ]
    }
  ]
}"#;
    assert_eq!(state.to_json(), expected);
    let empty = StorageState::default();
    assert_eq!(
        empty.to_json(),
        "{\n  \"cookies\": [],\n  \"origins\": []\n}"
    );
}

#[test]
fn unknown_fields_keep_their_place() {
    let input = r#"{
  "future": {
    "b": [
      1,
      1e+21,
      0.000001,
      null,
      true
    ],
    "a": "x"
  },
  "cookies": [
    {
      "name": "a",
      "sourcePort": 443,
      "value": "b",
      "domain": "example.com",
      "path": "/",
      "expires": -1,
      "httpOnly": false,
      "secure": false,
      "sameSite": "Lax"
    }
  ],
  "origins": []
}"#;
    let state = StorageState::from_json(input.as_bytes()).unwrap();
    assert_eq!(state.to_json(), input);
    // Known fields removed from the order still come back, missing optional fields get defaults.
    let short = br#"{"cookies":[{"name":"a","value":"b","domain":"example.com","path":"/"}]}"#;
    let state = StorageState::from_json(short).unwrap();
    assert!(state.to_json().contains("\"sameSite\": \"Lax\"\n"));
    assert!(state.to_json().ends_with("\"origins\": []\n}"));
}

#[test]
fn debug_never_shows_values() {
    let state = StorageState::from_json(PLAYWRIGHT_IDB).unwrap();
    let debug = format!("{state:?} {:?}", state.origins[0].local_storage);
    for secret in ["v1", "x=y", "abc", "empty key", "secret-idb", "\"v5\""] {
        assert!(!debug.contains(secret), "{secret} in {debug}");
    }
    assert!(debug.contains("dom"));
}

// --- helpers ----------------------------------------------------------------------------------

#[test]
fn expiry_helpers() {
    let state = StorageState::from_json(PLAYWRIGHT).unwrap();
    assert_eq!(
        state.earliest_expiry(),
        Some(Timestamp::from_millis(1_795_444_277_237))
    );
    let later = state.without_expired(Timestamp::from_secs(1_800_000_000));
    assert!(later.cookies.iter().all(|c| c.name != "lax"));
    assert!(later.cookies.iter().any(|c| c.name == "plain"));
    assert_eq!(later.origins, state.origins);
    assert_eq!(StorageState::default().earliest_expiry(), None);
}

#[test]
fn cookies_for_the_wrong_site_are_reported_by_name_and_domain() {
    let state = state_of(vec![
        cookie("sid", ".example.com", "/"),
        cookie("sso", "login.example.com", "/"),
    ]);
    assert!(
        state
            .ensure_cookies_for(&url("https://app.example.com"))
            .is_ok()
    );
    assert!(
        state
            .cookies_for_domain_mismatch(&url("https://app.example.com"))
            .is_empty()
    );
    let err = state
        .ensure_cookies_for(&url("https://portal.other.org"))
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, StateError::WrongDomain { count: 2, .. }));
    assert!(text.contains("\"sid\" @ \".example.com\""), "{text}");
    assert!(text.contains("portal.other.org"));
    assert!(!text.contains("v-sid"));
    // Some cookies for the site: fine, and the others are listed.
    let mut mixed = state.clone();
    mixed.cookies.push(cookie("x", "portal.other.org", "/"));
    assert!(
        mixed
            .ensure_cookies_for(&url("https://portal.other.org"))
            .is_ok()
    );
    assert_eq!(
        mixed
            .cookies_for_domain_mismatch(&url("https://portal.other.org"))
            .len(),
        2
    );
}

// --- validation -------------------------------------------------------------------------------

fn doc_with_cookie(fields: &str) -> Vec<u8> {
    format!(r#"{{"cookies":[{{{fields}}}],"origins":[]}}"#).into_bytes()
}

const OK_COOKIE: &str = r#""name":"sid","value":"SECRETVALUE","domain":"example.com","path":"/","expires":-1,"httpOnly":false,"secure":false,"sameSite":"Lax""#;

#[test]
fn malformed_inputs_are_errors_not_panics() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"".to_vec(), "not valid JSON"),
        (b"{".to_vec(), "line 1 column 1"),
        (b"{\n  \"cookies\": [\n    {,\n".to_vec(), "line 3 column 6"),
        (b"[]".to_vec(), "expected an object"),
        (b"null".to_vec(), "expected an object"),
        (b"{}".to_vec(), "not a storage state"),
        (
            br#"{"access_token":"SECRETVALUE"}"#.to_vec(),
            "not a storage state",
        ),
        (br#"{"cookies":{}}"#.to_vec(), "expected an array"),
        (br#"{"cookies":[1]}"#.to_vec(), "expected an object"),
        (br#"{"origins":"x"}"#.to_vec(), "expected an array"),
        (
            doc_with_cookie(r#""value":"SECRETVALUE","domain":"example.com","path":"/""#),
            "missing \"name\"",
        ),
        (
            doc_with_cookie(r#""name":"sid","domain":"example.com","path":"/""#),
            "missing \"value\"",
        ),
        (
            doc_with_cookie(r#""name":"sid","value":"SECRETVALUE","path":"/""#),
            "missing \"domain\"",
        ),
        (
            doc_with_cookie(r#""name":"sid","value":"SECRETVALUE","domain":"example.com""#),
            "missing \"path\"",
        ),
        (
            doc_with_cookie(&OK_COOKIE.replace("\"Lax\"", "\"lax\"")),
            "sameSite must be",
        ),
        (
            doc_with_cookie(&OK_COOKIE.replace("\"Lax\"", "1")),
            "sameSite must be",
        ),
        (
            doc_with_cookie(&OK_COOKIE.replace("\"name\":\"sid\"", "\"name\":\"\"")),
            "name is empty",
        ),
        (
            doc_with_cookie(&OK_COOKIE.replace("\"example.com\"", "\"\"")),
            "domain is empty",
        ),
        (
            doc_with_cookie(&OK_COOKIE.replace("\"example.com\"", "\".\"")),
            "domain is empty",
        ),
        (
            doc_with_cookie(&OK_COOKIE.replace("\"example.com\"", "\"exa mple.com\"")),
            "not a host name",
        ),
        (
            doc_with_cookie(&OK_COOKIE.replace("\"path\":\"/\"", "\"path\":\"x\"")),
            "does not start with '/'",
        ),
        (
            doc_with_cookie(&OK_COOKIE.replace("-1", "-2")),
            "expires must be",
        ),
        (
            doc_with_cookie(&OK_COOKIE.replace("-1", "1e300")),
            "expires must be",
        ),
        (
            doc_with_cookie(&OK_COOKIE.replace("-1", "\"NaN\"")),
            "expected a number",
        ),
        (doc_with_cookie(&OK_COOKIE.replace("-1", "NaN")), "line 1"),
        (
            doc_with_cookie(&OK_COOKIE.replace("-1", "1e999")),
            "not valid JSON",
        ),
        (
            doc_with_cookie(&OK_COOKIE.replace("\"httpOnly\":false", "\"httpOnly\":\"no\"")),
            "expected true or false",
        ),
        (
            doc_with_cookie(&OK_COOKIE.replace("SECRETVALUE", "SECRET;VALUE")),
            "contains ';'",
        ),
        (
            doc_with_cookie(&OK_COOKIE.replace("SECRETVALUE", "SECRET\\nVALUE")),
            "control character",
        ),
        (
            doc_with_cookie(&OK_COOKIE.replace("SECRETVALUE", &"SECRETVALUE".repeat(400))),
            "exceed 4096 bytes",
        ),
        (
            br#"{"cookies":[],"origins":[{"origin":"not a url","localStorage":[]}]}"#.to_vec(),
            "origin is not a URL",
        ),
        (
            br#"{"origins":[{"origin":"https://a.example/path","localStorage":[]}]}"#.to_vec(),
            "origin is not a URL",
        ),
        (
            br#"{"origins":[{"origin":"file:///etc","localStorage":[]}]}"#.to_vec(),
            "origin is not a URL",
        ),
        (
            br#"{"origins":[{"localStorage":[]}]}"#.to_vec(),
            "missing \"origin\"",
        ),
        (
            br#"{"origins":[{"origin":"https://a.example","localStorage":[{"name":"k"}]}]}"#
                .to_vec(),
            "missing \"value\"",
        ),
        (
            br#"{"origins":[{"origin":"https://a.example","localStorage":[{"name":"k","value":7}]}]}"#
                .to_vec(),
            "expected a string",
        ),
        (
            br#"{"origins":[{"origin":"https://a.example","localStorage":{}}]}"#.to_vec(),
            "expected an array",
        ),
        (b"\xff\xfe{}".to_vec(), "not valid JSON"),
        (
            br#"{"cookies":[],"origins":[{"origin":"https://a.example","localStorage":[{"name":"\ud800","value":"x"}]}]}"#
                .to_vec(),
            "not valid JSON",
        ),
        (
            format!("{}1{}", "[".repeat(200), "]".repeat(200)).into_bytes(),
            "recursion limit",
        ),
        (
            br#"{"cookies":[],"origins":[]} trailing"#.to_vec(),
            "trailing characters",
        ),
    ];
    for (input, expected) in cases {
        let shown = String::from_utf8_lossy(&input)
            .chars()
            .take(120)
            .collect::<String>();
        let err = StorageState::from_json(&input).expect_err(&shown);
        let text = err.to_string();
        assert!(
            text.contains(expected),
            "{shown}: {text:?} lacks {expected:?}"
        );
        assert!(!text.contains("SECRET"), "{text}");
    }
}

#[test]
fn oversized_documents_are_refused() {
    let big = vec![b' '; MAX_DOCUMENT_BYTES + 1];
    assert!(matches!(
        StorageState::from_json(&big),
        Err(StateError::TooLarge { .. })
    ));
    let one = r#"{"name":"a","value":"b","domain":"example.com","path":"/"}"#;
    let many = format!(
        r#"{{"cookies":[{}]}}"#,
        vec![one; MAX_COOKIES + 1].join(",")
    );
    assert!(matches!(
        StorageState::from_json(many.as_bytes()),
        Err(StateError::TooMany {
            what: "cookies",
            ..
        })
    ));
}

#[test]
fn duplicate_keys_follow_json_parse() {
    let input = br#"{"cookies":[{"name":"a","value":"first","domain":"example.com","path":"/","value":"last"}]}"#;
    let state = StorageState::from_json(input).unwrap();
    assert_eq!(state.cookies[0].value, "last");
}

#[test]
fn validate_checks_states_built_in_code() {
    let good = state_of(vec![cookie("a", "example.com", "/")]);
    assert!(good.validate().is_ok());
    let mut bad = good.clone();
    bad.cookies[0].expires = f64::NAN;
    assert!(bad.validate().unwrap_err().to_string().contains("expires"));
    let mut bad = good.clone();
    bad.cookies[0].domain = ".".into();
    assert!(bad.validate().is_err());
}

// --- cookies.txt ------------------------------------------------------------------------------

const COOKIES_TXT: &str = "# Netscape HTTP Cookie File\r\n\
# https://curl.se/docs/http-cookies.html\r\n\
\r\n\
.example.com\tTRUE\t/\tTRUE\t1830000000\tsid\tabc123\r\n\
#HttpOnly_app.example.com\tFALSE\t/app\tFALSE\t0\thttponly\tsecret value\r\n\
example.org\tTRUE\t/\tFALSE\t0\tflag\tx\r\n\
localhost\tFALSE\t/\tFALSE\t0\tempty\r\n\
127.0.0.1\tFALSE\t/\tFALSE\t99999999999999\tfar\ta\tb\r\n";

#[test]
fn cookies_txt_imports() {
    let cookies = parse_cookies_txt(COOKIES_TXT).unwrap();
    assert_eq!(cookies.len(), 5);
    assert_eq!(cookies[0].domain, ".example.com");
    assert!(cookies[0].secure);
    assert_eq!(cookies[0].expires, 1_830_000_000.0);
    assert_eq!(cookies[1].domain, "app.example.com");
    assert!(cookies[1].http_only);
    assert!(cookies[1].is_session());
    assert_eq!(cookies[1].value, "secret value");
    assert_eq!(cookies[2].domain, ".example.org", "the flag adds the dot");
    assert_eq!(cookies[3].value, "");
    assert_eq!(
        cookies[4].value, "a\tb",
        "the value is the rest of the line"
    );
    assert_eq!(cookies[4].expires, 253_402_300_799.0);
    assert!(cookies.iter().all(|c| c.same_site == SameSite::Lax));
}

#[test]
fn cookies_txt_round_trips() {
    let cookies = parse_cookies_txt(COOKIES_TXT).unwrap();
    let text = to_cookies_txt(&cookies);
    assert!(text.starts_with("# Netscape HTTP Cookie File\n"));
    assert!(
        text.contains("#HttpOnly_app.example.com\tFALSE\t/app\tFALSE\t0\thttponly\tsecret value\n")
    );
    assert_eq!(parse_cookies_txt(&text).unwrap(), cookies);
    // From a Playwright state: whole-second expiries survive.
    let state = StorageState::from_json(PLAYWRIGHT).unwrap();
    let back = parse_cookies_txt(&to_cookies_txt(&state.cookies)).unwrap();
    assert_eq!(back.len(), state.cookies.len());
    for (a, b) in state.cookies.iter().zip(&back) {
        assert_eq!(
            (&a.name, &a.value, &a.domain, &a.path),
            (&b.name, &b.value, &b.domain, &b.path)
        );
        assert_eq!((a.http_only, a.secure), (b.http_only, b.secure));
        assert_eq!(a.expires.floor(), b.expires.floor());
    }
}

#[test]
fn cookies_txt_errors_name_the_line_not_the_value() {
    let cases = [
        ("example.com\tTRUE\t/\tFALSE\t0\n", 1, "expected 7"),
        (
            "# c\nexample.com\tYES\t/\tFALSE\t0\tn\tSECRET\n",
            2,
            "include-subdomains",
        ),
        (
            "\n\nexample.com\tTRUE\t/\tNO\t0\tn\tSECRET\n",
            3,
            "secure field",
        ),
        (
            "example.com\tTRUE\t/\tFALSE\tsoon\tn\tSECRET\n",
            1,
            "expires field",
        ),
        (
            "example.com\tTRUE\t/\tFALSE\t1.5\tn\tSECRET\n",
            1,
            "expires field",
        ),
        (
            "example.com\tTRUE\t/\tFALSE\t-5\tn\tSECRET\n",
            1,
            "negative",
        ),
        (
            "example.com\tTRUE\t/\tFALSE\t0\t\tSECRET\n",
            1,
            "name is empty",
        ),
        ("\tTRUE\t/\tFALSE\t0\tn\tSECRET\n", 1, "domain is empty"),
        (
            "example.com\tTRUE\tapp\tFALSE\t0\tn\tSECRET\n",
            1,
            "start with '/'",
        ),
        (
            "example.com\tTRUE\t/\tFALSE\t0\tn\tSEC;RET\r\n",
            1,
            "contains ';'",
        ),
        (
            "#HttpOnly_\tTRUE\t/\tFALSE\t0\tn\tSECRET\n",
            1,
            "domain is empty",
        ),
    ];
    for (text, line, expected) in cases {
        let err = parse_cookies_txt(text).unwrap_err();
        let shown = err.to_string();
        assert!(
            matches!(err, StateError::CookiesTxt { line: l, .. } if l == line),
            "{text:?}: {shown}"
        );
        assert!(shown.contains(expected), "{text:?}: {shown}");
        assert!(
            !shown.contains("SECRET") && !shown.contains("SEC;"),
            "{shown}"
        );
    }
    assert!(parse_cookies_txt("").unwrap().is_empty());
    assert!(
        parse_cookies_txt("\u{feff}# Netscape HTTP Cookie File\n")
            .unwrap()
            .is_empty()
    );
}

// --- RFC 6265 matching ------------------------------------------------------------------------

#[test]
fn host_only_and_domain_cookies() {
    let state = state_of(vec![
        cookie("host", "example.com", "/"),
        cookie("dom", ".example.com", "/"),
        cookie("sub", "app.example.com", "/"),
    ]);
    let header = |u: &str| cookie_header(&state, &url(u), NOW);
    assert_eq!(
        header("http://example.com/").as_deref(),
        Some("host=v-host; dom=v-dom")
    );
    assert_eq!(
        header("http://app.example.com/x").as_deref(),
        Some("dom=v-dom; sub=v-sub")
    );
    assert_eq!(
        header("http://deep.app.example.com/").as_deref(),
        Some("dom=v-dom")
    );
    assert_eq!(header("http://notexample.com/"), None);
    assert_eq!(
        header("http://EXAMPLE.com/").as_deref(),
        Some("host=v-host; dom=v-dom")
    );
    assert_eq!(header("ftp://example.com/"), None);
}

#[test]
fn path_prefix_rules() {
    let state = state_of(vec![
        cookie("root", "example.com", "/"),
        cookie("docs", "example.com", "/docs"),
        cookie("slash", "example.com", "/docs/"),
    ]);
    let header = |u: &str| cookie_header(&state, &url(u), NOW);
    assert_eq!(
        header("http://example.com/docs").as_deref(),
        Some("docs=v-docs; root=v-root")
    );
    assert_eq!(
        header("http://example.com/docs/a?q=1").as_deref(),
        Some("slash=v-slash; docs=v-docs; root=v-root"),
        "longer paths first"
    );
    assert_eq!(
        header("http://example.com/docsx").as_deref(),
        Some("root=v-root")
    );
    assert_eq!(
        header("http://example.com/").as_deref(),
        Some("root=v-root")
    );
}

#[test]
fn secure_cookies_only_over_https_or_loopback() {
    let mut secure = cookie("s", "example.com", "/");
    secure.secure = true;
    let mut local = cookie("l", "localhost", "/");
    local.secure = true;
    let mut ip = cookie("i", "127.0.0.1", "/");
    ip.secure = true;
    let state = state_of(vec![secure, cookie("p", "example.com", "/"), local, ip]);
    let header = |u: &str| cookie_header(&state, &url(u), NOW);
    assert_eq!(header("http://example.com/").as_deref(), Some("p=v-p"));
    assert_eq!(
        header("https://example.com/").as_deref(),
        Some("s=v-s; p=v-p")
    );
    assert_eq!(header("http://localhost:8080/").as_deref(), Some("l=v-l"));
    assert_eq!(header("http://127.0.0.1:3000/").as_deref(), Some("i=v-i"));
}

#[test]
fn expired_cookies_are_not_sent() {
    let mut old = cookie("old", "example.com", "/");
    old.expires = NOW.as_secs() as f64 - 1.0;
    let mut edge = cookie("edge", "example.com", "/");
    edge.expires = NOW.as_secs() as f64;
    let mut fresh = cookie("fresh", "example.com", "/");
    fresh.expires = NOW.as_secs() as f64 + 0.5;
    let state = state_of(vec![
        old,
        edge,
        fresh,
        cookie("session", "example.com", "/"),
    ]);
    assert_eq!(
        cookie_header(&state, &url("https://example.com/"), NOW).as_deref(),
        Some("fresh=v-fresh; session=v-session")
    );
}

#[test]
fn playwright_state_gives_the_browser_header() {
    let state = StorageState::from_json(PLAYWRIGHT).unwrap();
    assert_eq!(
        cookie_header(&state, &url("http://127.0.0.1:8080/docs/x"), NOW).as_deref(),
        Some("docs=v5; frac=f; plain=v1; strict=v2; lax=v3; none=v4; quoted=\"a b\"; part=p1")
    );
    assert_eq!(
        cookie_header(&state, &url("https://app.example.com/app/home"), NOW).as_deref(),
        Some("host=ü €😀; dom=x=y")
    );
}

// --- Set-Cookie -------------------------------------------------------------------------------

#[test]
fn set_cookie_adds_replaces_and_deletes() {
    let mut state = StorageState::from_json(PLAYWRIGHT).unwrap();
    let before = state.clone();
    let site = url("http://127.0.0.1:8080/account/settings");
    let summary = merge_set_cookie(
        &mut state,
        &site,
        [
            "plain=new; Path=/",
            "fresh=1; Max-Age=60; HttpOnly; SameSite=Strict",
            "strict=gone; Path=/; Max-Age=0",
            "lax=gone; Path=/; Expires=Thu, 01 Jan 2015 00:00:00 GMT",
            "garbage",
            "evil=1; Domain=example.com",
            "tld=1; Domain=com",
        ],
        NOW,
    );
    assert_eq!(
        (
            summary.added,
            summary.replaced,
            summary.removed,
            summary.rejected
        ),
        (1, 1, 2, 3),
        "{summary:?}"
    );
    let plain_at = before.cookies.iter().position(|c| c.name == "plain");
    let plain = state.cookies.iter().position(|c| c.name == "plain");
    assert_eq!(state.cookies[plain.unwrap()].value, "new");
    // Replaced in place, minus the deleted cookies before it.
    assert!(plain <= plain_at);
    let fresh = state.cookies.last().unwrap();
    assert_eq!(fresh.name, "fresh");
    assert_eq!(fresh.domain, "127.0.0.1");
    assert_eq!(fresh.path, "/account", "default path");
    assert!(fresh.http_only);
    assert_eq!(fresh.same_site, SameSite::Strict);
    assert_eq!(fresh.expires, NOW.as_secs() as f64 + 60.0);
    assert!(
        state
            .cookies
            .iter()
            .all(|c| c.name != "strict" && c.name != "lax")
    );
    assert_eq!(state.origins, before.origins, "localStorage is kept");
    // The part cookie kept its unknown fields.
    assert!(
        state
            .to_json()
            .contains("\"partitionKey\": \"http://127.0.0.1\"")
    );
}

#[test]
fn set_cookie_domain_and_security_rules() {
    let mut state = StorageState::default();
    let https = url("https://app.example.com/");
    let http = url("http://app.example.com/");
    let summary = merge_set_cookie(
        &mut state,
        &https,
        [
            "dom=1; Domain=.Example.com; Secure; SameSite=None",
            "host=1",
            "__Host-ok=1; Secure; Path=/",
            "__Host-bad=1; Secure; Path=/; Domain=example.com",
            "__Secure-bad=1",
            "none=1; SameSite=None",
            "far=1; Max-Age=999999999",
        ],
        NOW,
    );
    assert_eq!((summary.added, summary.rejected), (4, 3), "{summary:?}");
    assert_eq!(state.cookies[0].domain, ".example.com");
    assert_eq!(state.cookies[0].same_site, SameSite::None);
    assert_eq!(state.cookies[1].domain, "app.example.com");
    let far = &state.cookies[3];
    assert_eq!(
        far.expires,
        NOW.as_secs() as f64 + 400.0 * 86400.0,
        "400-day cap"
    );

    // Plain HTTP: no Secure cookie, and no overwriting one.
    let summary = merge_set_cookie(
        &mut state,
        &http,
        ["s=1; Secure", "dom=evil; Domain=example.com"],
        NOW,
    );
    assert_eq!(summary.rejected, 2, "{summary:?}");
    assert_eq!(state.cookies[0].value, "1");
    // Loopback over HTTP may set Secure cookies.
    let mut local = StorageState::default();
    let summary = merge_set_cookie(
        &mut local,
        &url("http://localhost:3000/"),
        ["s=1; Secure; Domain=localhost"],
        NOW,
    );
    assert_eq!(summary.added, 1);
    assert_eq!(local.cookies[0].domain, "localhost");
    assert!(local.cookies[0].secure);
}

#[test]
fn set_cookie_then_header_round_trip() {
    let mut state = StorageState::default();
    let site = url("https://example.com/app/login");
    merge_set_cookie(
        &mut state,
        &site,
        [
            "a=1; Path=/",
            "b=2; Path=/app",
            "c=3; Domain=example.com; Path=/",
        ],
        NOW,
    );
    assert_eq!(
        cookie_header(&state, &url("https://example.com/app/x"), NOW).as_deref(),
        Some("b=2; a=1; c=3")
    );
    assert_eq!(
        cookie_header(&state, &url("https://www.example.com/"), NOW).as_deref(),
        Some("c=3")
    );
    // And the result is a valid Playwright state.
    let json = state.to_json();
    assert_eq!(StorageState::from_json(json.as_bytes()).unwrap(), state);
}
