//! Netscape `cookies.txt` (curl, wget, yt-dlp, browser export extensions) to and from storage-state
//! cookies.
//!
//! One cookie per line, seven tab-separated fields:
//! `domain  include-subdomains  path  secure  expires  name  value`.
//! `include-subdomains` (`TRUE`/`FALSE`) is the leading `.` of a Playwright domain; `expires` 0 is
//! a session cookie (`-1` in Playwright); a `#HttpOnly_` prefix on the domain marks an HttpOnly
//! cookie; other lines starting with `#` and blank lines are comments. The format has no
//! `SameSite`: imported cookies get `Lax`.
//!
//! Errors give the line number and never the cookie's value.

use crate::storage_state::{
    MAX_COOKIES, MAX_DOCUMENT_BYTES, MAX_EXPIRES, SameSite, StateCookie, StateError, quote_name,
};

const HTTP_ONLY_PREFIX: &str = "#HttpOnly_";

/// The header line [`to_cookies_txt`] writes (curl's).
pub const COOKIES_TXT_HEADER: &str = "# Netscape HTTP Cookie File\n";

fn line_error(line: usize, problem: impl Into<String>) -> StateError {
    StateError::CookiesTxt {
        line,
        problem: problem.into(),
    }
}

fn parse_flag(text: &str, line: usize, what: &str) -> Result<bool, StateError> {
    if text.eq_ignore_ascii_case("TRUE") {
        Ok(true)
    } else if text.eq_ignore_ascii_case("FALSE") {
        Ok(false)
    } else {
        Err(line_error(
            line,
            format!("the {what} field must be TRUE or FALSE"),
        ))
    }
}

/// Parses a Netscape `cookies.txt` file into storage-state cookies (validated like
/// [`crate::StorageState::from_json`] validates cookies).
pub fn parse_cookies_txt(text: &str) -> Result<Vec<StateCookie>, StateError> {
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(StateError::TooLarge {
            size: text.len(),
            limit: MAX_DOCUMENT_BYTES,
        });
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut cookies = Vec::new();
    for (index, raw_line) in text.split('\n').enumerate() {
        let number = index + 1;
        let line = raw_line.strip_suffix('\r').unwrap_or(raw_line);
        let (http_only, line) = match line.strip_prefix(HTTP_ONLY_PREFIX) {
            Some(rest) => (true, rest),
            None => (false, line),
        };
        if line.trim().is_empty() || (!http_only && line.starts_with('#')) {
            continue;
        }
        if cookies.len() >= MAX_COOKIES {
            return Err(StateError::TooMany {
                what: "cookies",
                count: cookies.len() + 1,
                limit: MAX_COOKIES,
            });
        }
        // The value is the rest of the line: it may itself contain tabs.
        let fields: Vec<&str> = line.splitn(7, '\t').collect();
        let (domain, subdomains, path, secure, expires, name, value) = match fields.as_slice() {
            [d, s, p, sec, e, n, v] => (*d, *s, *p, *sec, *e, *n, *v),
            // curl writes a cookie with an empty value as six fields.
            [d, s, p, sec, e, n] => (*d, *s, *p, *sec, *e, *n, ""),
            _ => {
                return Err(line_error(
                    number,
                    format!(
                        "expected 7 tab-separated fields (domain, include-subdomains, path, secure, expires, name, value), found {}",
                        fields.len()
                    ),
                ));
            }
        };
        let include_subdomains = parse_flag(subdomains, number, "include-subdomains")?;
        let secure = parse_flag(secure, number, "secure")?;
        let expires_secs: i64 = expires.trim().parse().map_err(|_| {
            line_error(
                number,
                "the expires field must be whole seconds since the Unix epoch (0: session cookie)",
            )
        })?;
        if expires_secs < 0 {
            return Err(line_error(number, "the expires field is negative"));
        }
        let expires = if expires_secs == 0 {
            -1.0
        } else {
            // Later than the year 9999 (some tools write i64::MAX): the latest expiry allowed.
            (expires_secs as f64).min(MAX_EXPIRES)
        };
        let host = domain.strip_prefix('.').unwrap_or(domain);
        let domain = if include_subdomains {
            format!(".{host}")
        } else {
            host.to_owned()
        };
        let mut cookie = StateCookie::new(name, value, domain, path);
        cookie.expires = expires;
        cookie.http_only = http_only;
        cookie.secure = secure;
        cookie.same_site = SameSite::Lax;
        cookie.validate().map_err(|err| match err {
            StateError::Invalid { problem, .. } => line_error(
                number,
                format!("cookie {}: {problem}", quote_name(&cookie.name)),
            ),
            other => other,
        })?;
        cookies.push(cookie);
    }
    Ok(cookies)
}

/// Writes cookies as a Netscape `cookies.txt` file (curl's layout, `\n` line ends). Session
/// cookies get expiry 0; fractional expiries are rounded down to whole seconds.
pub fn to_cookies_txt(cookies: &[StateCookie]) -> String {
    let mut out = String::from(COOKIES_TXT_HEADER);
    for cookie in cookies {
        let expires = if cookie.is_session() || !cookie.expires.is_finite() {
            0
        } else {
            // An expiry rounding down to 0 would read back as a session cookie.
            (cookie.expires.floor() as i64).max(1)
        };
        let flag = |b: bool| if b { "TRUE" } else { "FALSE" };
        out.push_str(&format!(
            "{}{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
            if cookie.http_only {
                HTTP_ONLY_PREFIX
            } else {
                ""
            },
            cookie.domain,
            flag(cookie.is_domain_cookie()),
            cookie.path,
            flag(cookie.secure),
            expires,
            cookie.name,
            cookie.value,
        ));
    }
    out
}
