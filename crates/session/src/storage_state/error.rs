//! [`StateError`]: why a storage state was rejected, never quoting a value.

/// Why a storage state (or a cookies.txt file, or an import) was rejected.
///
/// Messages name cookies by index, name and domain, origins by index; they never quote a cookie
/// or localStorage value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The document is larger than [`MAX_DOCUMENT_BYTES`].
    #[error("storage state is {size} bytes; the limit is {limit} bytes")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Not JSON at all.
    #[error("storage state is not valid JSON: {reason} at line {line} column {column}")]
    MalformedJson {
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column of the problem.
        column: usize,
        /// What is wrong (a fixed phrase; never input text).
        reason: String,
    },
    /// JSON, but not a valid storage state.
    #[error("invalid storage state: {at}: {problem}")]
    Invalid {
        /// Where: `document`, `cookies[3] "sid"`, `origins[0].localStorage[2]`, ….
        at: String,
        /// What is wrong.
        problem: String,
    },
    /// More cookies, origins or localStorage entries than allowed.
    #[error("storage state has {count} {what}; the limit is {limit}")]
    TooMany {
        /// `cookies`, `origins` or `localStorage entries`.
        what: &'static str,
        /// How many there are.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A cookies.txt line could not be read.
    #[error("cookies.txt line {line}: {problem}")]
    CookiesTxt {
        /// 1-based line number.
        line: usize,
        /// What is wrong (never the cookie's value).
        problem: String,
    },
    /// The state's cookies belong to none of the site's hosts.
    #[error(
        "none of the {count} cookies of the storage state belongs to {host}; cookies (name @ domain): {}",
        cookies.join(", ")
    )]
    WrongDomain {
        /// The site's host.
        host: String,
        /// How many cookies the state has.
        count: usize,
        /// Cookies as `name @ domain` (at most 20 listed).
        cookies: Vec<String>,
    },
}

pub(super) fn invalid(at: impl Into<String>, problem: impl Into<String>) -> StateError {
    StateError::Invalid {
        at: at.into(),
        problem: problem.into(),
    }
}

/// Quotes a name (not a secret) for an error message: escaped, at most 64 characters.
pub(crate) fn quote_name(name: &str) -> String {
    let mut shown: String = name.chars().take(64).collect();
    if shown.len() < name.len() {
        shown.push('…');
    }
    format!("{shown:?}")
}
