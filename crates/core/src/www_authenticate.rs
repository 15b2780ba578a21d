//! RFC 6750 `WWW-Authenticate` parsing and the verdict on an API response.
//!
//! A protected API says *why* it refused a token: `error="invalid_token"` means the token is
//! expired or revoked (refresh and retry once), `error="insufficient_scope"` means refreshing
//! will not help. A 401 without the header is treated as `invalid_token`; a 403 is never
//! "refresh and retry".

/// One challenge of a `WWW-Authenticate` header (RFC 9110 §11.6.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The auth scheme, e.g. `Bearer` (compare case-insensitively).
    pub scheme: String,
    /// Parameters, names lower-cased, values unquoted.
    pub params: Vec<(String, String)>,
    /// A token68 value, when the challenge has one instead of parameters.
    pub token68: Option<String>,
}

impl Challenge {
    /// The value of parameter `name` (case-insensitive).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// Parses a `WWW-Authenticate` header value into its challenges. Malformed parts are skipped,
/// never an error: the caller falls back to the status code.
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut parser = Parser { rest: header };
    let mut challenges = Vec::new();
    while let Some(challenge) = parser.challenge() {
        challenges.push(challenge);
    }
    challenges
}

struct Parser<'a> {
    rest: &'a str,
}

fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

impl<'a> Parser<'a> {
    fn skip_ws_and_commas(&mut self) {
        self.rest = self
            .rest
            .trim_start_matches(|c: char| c == ',' || c.is_ascii_whitespace());
    }

    fn skip_ws(&mut self) {
        self.rest = self
            .rest
            .trim_start_matches(|c: char| c.is_ascii_whitespace());
    }

    fn token(&mut self) -> Option<&'a str> {
        let end = self
            .rest
            .find(|c: char| !is_tchar(c))
            .unwrap_or(self.rest.len());
        if end == 0 {
            return None;
        }
        let (token, rest) = self.rest.split_at(end);
        self.rest = rest;
        Some(token)
    }

    fn quoted(&mut self) -> Option<String> {
        let mut chars = self.rest.char_indices();
        if chars.next()?.1 != '"' {
            return None;
        }
        let mut value = String::new();
        let mut escaped = false;
        for (index, c) in chars {
            if escaped {
                value.push(c);
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                self.rest = &self.rest[index + 1..];
                return Some(value);
            } else {
                value.push(c);
            }
        }
        // Unterminated: take what there is.
        self.rest = "";
        Some(value)
    }

    /// Skips to the next comma (error recovery).
    fn skip_item(&mut self) {
        let end = self.rest.find(',').unwrap_or(self.rest.len());
        self.rest = &self.rest[end..];
    }

    fn challenge(&mut self) -> Option<Challenge> {
        loop {
            self.skip_ws_and_commas();
            if self.rest.is_empty() {
                return None;
            }
            match self.token() {
                Some(scheme) => return Some(self.challenge_body(scheme.to_owned())),
                None => {
                    // Not a scheme: skip one character and retry.
                    let mut chars = self.rest.chars();
                    chars.next();
                    self.rest = chars.as_str();
                }
            }
        }
    }

    fn challenge_body(&mut self, scheme: String) -> Challenge {
        let mut challenge = Challenge {
            scheme,
            params: Vec::new(),
            token68: None,
        };
        loop {
            self.skip_ws();
            let checkpoint = self.rest;
            if self.rest.starts_with(',') {
                self.rest = &self.rest[1..];
                self.skip_ws();
            }
            let Some(name) = self.token() else {
                // token68 or garbage after the scheme.
                if challenge.params.is_empty()
                    && challenge.token68.is_none()
                    && !self.rest.is_empty()
                    && !self.rest.starts_with(',')
                {
                    let end = self.rest.find(',').unwrap_or(self.rest.len());
                    challenge.token68 = Some(self.rest[..end].trim().to_owned());
                    self.rest = &self.rest[end..];
                    continue;
                }
                if self.rest.is_empty() || self.rest.starts_with(',') {
                    return challenge;
                }
                self.skip_item();
                continue;
            };
            self.skip_ws();
            if !self.rest.starts_with('=') {
                // `name` is the next challenge's scheme (or a token68); rewind.
                if challenge.params.is_empty()
                    && challenge.token68.is_none()
                    && !checkpoint.starts_with(',')
                {
                    let end = self.rest.find(',').unwrap_or(self.rest.len());
                    let tail = self.rest[..end].trim_end();
                    if tail.chars().all(|c| c == '=') {
                        challenge.token68 = Some(format!("{name}{tail}"));
                        self.rest = &self.rest[end..];
                        continue;
                    }
                }
                self.rest = checkpoint;
                return challenge;
            }
            let equals = self.rest.len() - self.rest.trim_start_matches('=').len();
            let after = self.rest[equals..].trim_start();
            if challenge.params.is_empty()
                && challenge.token68.is_none()
                && (after.is_empty() || after.starts_with(','))
            {
                // token68 with padding, e.g. `Negotiate abc123==`.
                challenge.token68 = Some(format!("{name}{}", &self.rest[..equals]));
                self.rest = after;
                continue;
            }
            self.rest = &self.rest[1..];
            self.skip_ws();
            let value = if self.rest.starts_with('"') {
                self.quoted()
            } else {
                self.token().map(str::to_owned)
            };
            match value {
                Some(value) => challenge.params.push((name.to_ascii_lowercase(), value)),
                None => self.skip_item(),
            }
        }
    }
}

/// What an API response means for the token that was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiVerdict {
    /// Not an authentication failure.
    Accepted,
    /// The token is expired, revoked or malformed: refresh (compare-and-refresh) and retry once.
    InvalidToken {
        /// The server's description, if any.
        description: Option<String>,
    },
    /// The token lacks a scope: refreshing will not help.
    InsufficientScope {
        /// The scope the server asked for, if it said.
        scope: Option<String>,
    },
    /// Forbidden for another reason: never refresh and retry.
    Forbidden,
    /// The request itself is malformed (`invalid_request`).
    InvalidRequest,
}

impl ApiVerdict {
    /// Whether a compare-and-refresh followed by one retry can help.
    pub fn should_refresh(&self) -> bool {
        matches!(self, ApiVerdict::InvalidToken { .. })
    }
}

/// Judges an API response from its status and `WWW-Authenticate` header values.
pub fn classify_api_response<'a>(
    status: u16,
    www_authenticate: impl IntoIterator<Item = &'a str>,
) -> ApiVerdict {
    if status != 401 && status != 403 && status != 400 {
        return ApiVerdict::Accepted;
    }
    let bearer_error = www_authenticate
        .into_iter()
        .flat_map(parse_challenges)
        .find(|c| c.scheme.eq_ignore_ascii_case("bearer") || c.scheme.eq_ignore_ascii_case("dpop"))
        .map(|c| {
            (
                c.param("error").map(str::to_owned),
                c.param("error_description").map(str::to_owned),
                c.param("scope").map(str::to_owned),
            )
        });
    match (status, bearer_error) {
        (_, Some((Some(error), _, scope))) if error == "insufficient_scope" => {
            ApiVerdict::InsufficientScope { scope }
        }
        (401, Some((Some(error), description, _))) if error == "invalid_token" => {
            ApiVerdict::InvalidToken { description }
        }
        (_, Some((Some(error), _, _))) if error == "invalid_request" => ApiVerdict::InvalidRequest,
        // RFC 6750 §3.1: a 401 without an error code (or without the header at all) means
        // authentication is missing or the token was not accepted.
        (401, _) => ApiVerdict::InvalidToken { description: None },
        (403, _) => ApiVerdict::Forbidden,
        _ => ApiVerdict::Accepted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc6750_challenges() {
        let parsed = parse_challenges(
            r#"Bearer realm="example", error="invalid_token", error_description="The access token expired""#,
        );
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].scheme, "Bearer");
        assert_eq!(parsed[0].param("realm"), Some("example"));
        assert_eq!(parsed[0].param("ERROR"), Some("invalid_token"));
        assert_eq!(
            parsed[0].param("error_description"),
            Some("The access token expired")
        );
    }

    #[test]
    fn parses_several_challenges_and_token68() {
        let parsed =
            parse_challenges(r#"Basic realm="x", Bearer error=invalid_token, Negotiate abc123=="#);
        let schemes: Vec<_> = parsed.iter().map(|c| c.scheme.as_str()).collect();
        assert_eq!(schemes, ["Basic", "Bearer", "Negotiate"]);
        assert_eq!(parsed[1].param("error"), Some("invalid_token"));
        assert_eq!(parsed[2].token68.as_deref(), Some("abc123=="));
    }

    #[test]
    fn escaped_and_unterminated_quotes_do_not_break_parsing() {
        let parsed =
            parse_challenges(r#"Bearer error_description="say \"hi\"", error="invalid_token""#);
        assert_eq!(parsed[0].param("error_description"), Some(r#"say "hi""#));
        assert_eq!(parsed[0].param("error"), Some("invalid_token"));
        let broken = parse_challenges(r#"Bearer error="invalid_tok"#);
        assert_eq!(broken[0].param("error"), Some("invalid_tok"));
    }

    #[test]
    fn verdict_table() {
        let table: &[(u16, &[&str], ApiVerdict)] = &[
            (200, &[], ApiVerdict::Accepted),
            (401, &[], ApiVerdict::InvalidToken { description: None }),
            (
                401,
                &[r#"Bearer realm="api""#],
                ApiVerdict::InvalidToken { description: None },
            ),
            (
                401,
                &[r#"Bearer error="invalid_token", error_description="expired""#],
                ApiVerdict::InvalidToken {
                    description: Some("expired".into()),
                },
            ),
            (
                403,
                &[r#"Bearer error="insufficient_scope", scope="admin""#],
                ApiVerdict::InsufficientScope {
                    scope: Some("admin".into()),
                },
            ),
            (
                401,
                &[r#"Bearer error="insufficient_scope""#],
                ApiVerdict::InsufficientScope { scope: None },
            ),
            (403, &[], ApiVerdict::Forbidden),
            (
                403,
                &[r#"Bearer error="invalid_token""#],
                ApiVerdict::Forbidden,
            ),
            (
                400,
                &[r#"Bearer error="invalid_request""#],
                ApiVerdict::InvalidRequest,
            ),
            (400, &[], ApiVerdict::Accepted),
            (
                500,
                &[r#"Bearer error="invalid_token""#],
                ApiVerdict::Accepted,
            ),
        ];
        for (status, headers, expected) in table {
            assert_eq!(
                &classify_api_response(*status, headers.iter().copied()),
                expected,
                "{status} {headers:?}"
            );
        }
        assert!(!ApiVerdict::Forbidden.should_refresh());
    }

    #[test]
    fn arbitrary_input_never_panics() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let alphabet: Vec<char> = "Bearer error=\"invalid_token\", \\,=  realm scope é\u{0}\t"
            .chars()
            .collect();
        for _ in 0..20_000 {
            let len = rng.gen_range(0..60);
            let input: String = (0..len)
                .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
                .collect();
            let _ = parse_challenges(&input);
            let _ = classify_api_response(401, [input.as_str()]);
        }
    }
}
