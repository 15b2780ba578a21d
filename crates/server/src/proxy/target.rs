//! Where a proxied request goes: the upstream base joined with the caller's path (dot segments
//! resolved, never above the base path), the caller's query, and the credential when it travels
//! as a query parameter; and how an upstream `Location` is shown to the caller.

use http::header::{HeaderName, HeaderValue};
use http::uri::{Authority, Scheme, Uri};
use url::Url;
use url::form_urlencoded;

use super::{ProxyError, Upstream};

/// Why a caller's path cannot be proxied (answered with a 400 problem).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PathError {
    /// Not starting with `/`, or with characters a URI path may not contain.
    #[error("the path is malformed: {0}")]
    Malformed(&'static str),
    /// `..` segments climb above the upstream's base path.
    #[error("the path climbs above the upstream's base path")]
    Escapes,
}

/// How the token is presented to the upstream.
#[derive(Debug, Clone)]
pub(crate) enum Injection {
    /// In this header, after this prefix.
    Header {
        /// The header.
        name: HeaderName,
        /// Text before the token, e.g. `Bearer `.
        prefix: String,
    },
    /// As this query parameter.
    Query(String),
}

/// A request's target on the upstream, without the credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// The absolute path on the upstream, still percent-encoded.
    pub(crate) path: String,
    /// The caller's query, minus the injected parameter.
    pub(crate) query: Option<String>,
}

/// One credential's upstream, validated.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    base: Url,
    /// The base path without its trailing `/` (empty for the root).
    base_path: String,
    scheme: Scheme,
    authority: Authority,
    /// The `Host` header for the upstream.
    pub(crate) host: HeaderValue,
    pub(crate) injection: Injection,
    /// `/proxy/{name}`: where the upstream's base lives for the caller.
    caller_prefix: String,
    /// Headers set on every request (see [`Upstream::headers`]).
    pub(crate) headers: Vec<(http::HeaderName, HeaderValue)>,
}

impl Route {
    /// Validates `upstream` for credential `name`.
    pub(crate) fn new(name: &str, upstream: &Upstream) -> Result<Route, ProxyError> {
        let invalid = |reason: &str| ProxyError::InvalidUpstream {
            name: name.to_owned(),
            reason: reason.to_owned(),
        };
        let base = upstream.base.clone();
        let scheme = match base.scheme() {
            "http" => Scheme::HTTP,
            "https" => Scheme::HTTPS,
            _ => return Err(invalid("the scheme must be http or https")),
        };
        if !base.username().is_empty() || base.password().is_some() {
            return Err(invalid("credentials in the URL are not supported"));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(invalid("the URL may not have a query or a fragment"));
        }
        let host = base
            .host_str()
            .ok_or_else(|| invalid("the URL has no host"))?;
        let authority_text = match base.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        let authority: Authority = authority_text
            .parse()
            .map_err(|_| invalid("the host is not a valid authority"))?;
        let host = HeaderValue::from_str(authority.as_str())
            .map_err(|_| invalid("the host is not a valid header value"))?;
        let injection = match upstream.inject.header_and_prefix() {
            Some((header, prefix)) => Injection::Header {
                name: HeaderName::from_bytes(header.as_bytes())
                    .map_err(|_| invalid("inject.header is not a valid header name"))?,
                prefix: prefix.to_owned(),
            },
            None => match &upstream.inject.query {
                Some(param) if !param.is_empty() => Injection::Query(param.clone()),
                _ => return Err(invalid("inject.query is empty")),
            },
        };
        if let Injection::Header { prefix, .. } = &injection
            && HeaderValue::from_str(prefix).is_err()
        {
            return Err(invalid("inject.prefix is not a valid header value"));
        }
        Ok(Route {
            base_path: base.path().trim_end_matches('/').to_owned(),
            base,
            scheme,
            authority,
            host,
            injection,
            caller_prefix: format!("/proxy/{name}"),
            headers: upstream.headers.clone(),
        })
    }

    /// The upstream target of `path_and_query` (what follows `/proxy/{name}`, percent-encoded).
    pub(crate) fn target(&self, path_and_query: &str) -> Result<Target, PathError> {
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path_and_query, None),
        };
        if let Some(query) = query {
            check_chars(query, true)?;
        }
        let path = if path.is_empty() {
            self.base.path().to_owned()
        } else {
            let relative = normalize(path)?;
            let mut joined = String::with_capacity(self.base_path.len() + relative.len() + 1);
            joined.push_str(&self.base_path);
            joined.push('/');
            joined.push_str(&relative);
            joined
        };
        let query = query.and_then(|query| match &self.injection {
            Injection::Query(param) => without_param(query, param),
            Injection::Header { .. } => (!query.is_empty()).then(|| query.to_owned()),
        });
        Ok(Target { path, query })
    }

    /// The request URI for `target`, with `token` in the query when the credential goes there.
    pub(crate) fn uri(&self, target: &Target, token: &str) -> Result<Uri, PathError> {
        let mut path_and_query = target.path.clone();
        let mut separator = '?';
        if let Some(query) = &target.query {
            path_and_query.push('?');
            path_and_query.push_str(query);
            separator = '&';
        }
        if let Injection::Query(param) = &self.injection {
            path_and_query.push(separator);
            path_and_query.extend(form_urlencoded::byte_serialize(param.as_bytes()));
            path_and_query.push('=');
            path_and_query.extend(form_urlencoded::byte_serialize(token.as_bytes()));
        }
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|_| PathError::Malformed("not a valid URI"))
    }

    /// The caller's view of an upstream `Location`, or `None` to leave it as it is.
    ///
    /// A location under the upstream's base becomes `/proxy/{name}/...`; another location on
    /// the upstream's origin becomes absolute; another origin's is kept (the caller follows it
    /// without our credential). An injected query parameter is removed from any of them.
    pub(crate) fn rewrite_location(&self, target: &Target, value: &HeaderValue) -> Option<String> {
        let raw = value.to_str().ok()?;
        let mut current = self.base.clone();
        current.set_path(&target.path);
        current.set_query(target.query.as_deref());
        let mut resolved = current.join(raw).ok()?;
        let mut stripped = false;
        if let (Injection::Query(param), Some(query)) = (&self.injection, resolved.query()) {
            let kept = without_param(query, param);
            if kept.as_deref() != Some(query) {
                resolved.set_query(kept.as_deref());
                stripped = true;
            }
        }
        let same_origin = resolved.scheme() == self.base.scheme()
            && resolved.host_str() == self.base.host_str()
            && resolved.port_or_known_default() == self.base.port_or_known_default();
        if !same_origin {
            return stripped.then(|| resolved.to_string());
        }
        let path = resolved.path();
        let rest = if path == self.base_path {
            Some("")
        } else {
            path.strip_prefix(self.base_path.as_str())
                .filter(|rest| rest.starts_with('/'))
        };
        let Some(rest) = rest else {
            return Some(resolved.to_string());
        };
        let mut local = String::with_capacity(self.caller_prefix.len() + rest.len() + 16);
        local.push_str(&self.caller_prefix);
        local.push_str(rest);
        if let Some(query) = resolved.query() {
            local.push('?');
            local.push_str(query);
        }
        if let Some(fragment) = resolved.fragment() {
            local.push('#');
            local.push_str(fragment);
        }
        Some(local)
    }
}

/// Resolves `.` and `..` in `path` (which starts with `/`) and returns it without the leading
/// `/`; fails when `..` climbs above the start.
fn normalize(path: &str) -> Result<String, PathError> {
    let Some(relative) = path.strip_prefix('/') else {
        return Err(PathError::Malformed("it must start with `/`"));
    };
    check_chars(relative, false)?;
    let segments: Vec<&str> = relative.split('/').collect();
    let last = segments.len().saturating_sub(1);
    let mut out: Vec<&str> = Vec::with_capacity(segments.len());
    for (index, segment) in segments.into_iter().enumerate() {
        let decoded = percent_decode(segment);
        match decoded.as_slice() {
            b"." => {}
            b".." => {
                if out.pop().is_none() {
                    return Err(PathError::Escapes);
                }
            }
            _ => {
                if decoded.contains(&0) || decoded.contains(&b'\\') {
                    return Err(PathError::Malformed("encoded NUL or backslash"));
                }
                // Servlet containers (Tomcat, Jetty behind Spring) strip `;params` from a segment
                // before resolving dots: `..;x` climbs there. Refuse a dot segment with parameters.
                if is_dot_segment(strip_params(&decoded)) {
                    return Err(PathError::Malformed(
                        "a dot segment with parameters (`..;`)",
                    ));
                }
                if decoded.contains(&b'/')
                    && decoded
                        .split(|&b| b == b'/')
                        .any(|part| is_dot_segment(strip_params(part)))
                {
                    return Err(PathError::Malformed("dot segments behind encoded slashes"));
                }
                out.push(segment);
                continue;
            }
        }
        if index == last {
            // `/a/..` and `/a/.` name a directory: keep the trailing slash.
            out.push("");
        }
    }
    Ok(out.join("/"))
}

/// `.` or `..`.
fn is_dot_segment(segment: &[u8]) -> bool {
    segment == b"." || segment == b".."
}

/// A decoded segment without its `;parameters`.
fn strip_params(segment: &[u8]) -> &[u8] {
    segment.split(|&b| b == b';').next().unwrap_or_default()
}

/// Checks that `text` only has characters allowed in a URI path (or query) and valid
/// percent-escapes.
fn check_chars(text: &str, query: bool) -> Result<(), PathError> {
    let bytes = text.as_bytes();
    let mut index = 0;
    while index < bytes.len() {
        let byte = bytes[index];
        match byte {
            b'%' => {
                let valid = bytes
                    .get(index + 1..index + 3)
                    .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit));
                if !valid {
                    return Err(PathError::Malformed("an invalid percent-escape"));
                }
                index += 3;
                continue;
            }
            b'?' if !query => return Err(PathError::Malformed("an unexpected `?`")),
            b'a'..=b'z'
            | b'A'..=b'Z'
            | b'0'..=b'9'
            | b'-'
            | b'.'
            | b'_'
            | b'~'
            | b'!'
            | b'$'
            | b'&'
            | b'\''
            | b'('
            | b')'
            | b'*'
            | b'+'
            | b','
            | b';'
            | b'='
            | b':'
            | b'@'
            | b'/'
            | b'?' => {}
            _ => return Err(PathError::Malformed("a character not allowed in a URI")),
        }
        index += 1;
    }
    Ok(())
}

fn hex_value(byte: u8) -> Option<u8> {
    (byte as char).to_digit(16).map(|d| d as u8)
}

/// Percent-decodes `segment` (escapes were validated by [`check_chars`]).
fn percent_decode(segment: &str) -> Vec<u8> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%'
            && let (Some(high), Some(low)) = (
                bytes.get(index + 1).copied().and_then(hex_value),
                bytes.get(index + 2).copied().and_then(hex_value),
            )
        {
            out.push(high << 4 | low);
            index += 3;
            continue;
        }
        out.push(bytes[index]);
        index += 1;
    }
    out
}

/// `query` without the pairs named `param` (other pairs keep their exact encoding); `None`
/// when nothing is left.
fn without_param(query: &str, param: &str) -> Option<String> {
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter(|pair| {
            let key = pair.split('=').next().unwrap_or_default();
            form_urlencoded::parse(key.as_bytes())
                .next()
                .is_none_or(|(decoded, _)| decoded != param)
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use authkeeper_core::config::InjectConfig;

    fn route(base: &str, inject: InjectConfig) -> Route {
        let upstream = Upstream {
            headers: Vec::new(),
            egress: None,
            base: base.parse().expect("url"),
            inject,
        };
        Route::new("crm", &upstream).expect("route")
    }

    fn path(route: &Route, path_and_query: &str) -> Result<String, PathError> {
        route.target(path_and_query).map(|t| match t.query {
            Some(query) => format!("{}?{query}", t.path),
            None => t.path,
        })
    }

    #[test]
    fn joins_and_normalizes_paths() {
        let api = route("http://h:8080/api", InjectConfig::default());
        let cases = [
            ("", "/api"),
            ("/", "/api/"),
            ("/users/7", "/api/users/7"),
            ("/users/7/", "/api/users/7/"),
            ("/a/./b", "/api/a/b"),
            ("/a/../b", "/api/b"),
            ("/a/..", "/api/"),
            ("/a/%2E%2e/b", "/api/b"),
            ("/a//b", "/api/a//b"),
            ("/group%2Fproject?x=1&y", "/api/group%2Fproject?x=1&y"),
        ];
        for (input, expected) in cases {
            assert_eq!(path(&api, input).as_deref(), Ok(expected), "{input}");
        }
        let root = route("https://h/", InjectConfig::default());
        assert_eq!(path(&root, "").as_deref(), Ok("/"));
        assert_eq!(path(&root, "/x").as_deref(), Ok("/x"));
    }

    #[test]
    fn rejects_escapes_and_malformed_paths() {
        let api = route("http://h/api/v1/", InjectConfig::default());
        for input in ["/..", "/a/../..", "/%2e%2e/x", "/../v1/x"] {
            assert_eq!(api.target(input), Err(PathError::Escapes), "{input}");
        }
        // Dot segments with `;parameters` are `..` for servlet containers: refused outright.
        for input in [
            "/..;/admin",
            "/a/..;x=1/..;/admin",
            "/.;/x",
            "/%2e%2e;jsessionid=1/admin",
            "/a%2f..%3bx/b",
            "/x/..%3b/y",
        ] {
            assert!(
                matches!(api.target(input), Err(PathError::Malformed(_))),
                "{input}"
            );
        }
        assert!(api.target("/a;v=1/b").is_ok(), "ordinary parameters pass");
        for input in [
            "x", "/a b", "/%zz", "/%", "/a%00", "/a%5c..", "/..%2f..", "/a\\b", "/é", "/a?b c",
        ] {
            assert!(
                matches!(api.target(input), Err(PathError::Malformed(_))),
                "{input}"
            );
        }
    }

    #[test]
    fn query_injection_replaces_the_callers_value() {
        let api = route(
            "http://h/",
            InjectConfig {
                query: Some("api_key".into()),
                ..InjectConfig::default()
            },
        );
        let target = api
            .target("/x?api_key=evil&q=a%20b&api%5Fkey=2")
            .expect("target");
        assert_eq!(target.query.as_deref(), Some("q=a%20b"));
        let uri = api.uri(&target, "t/k+n").expect("uri");
        assert_eq!(uri.to_string(), "http://h/x?q=a%20b&api_key=t%2Fk%2Bn");
        let bare = api.target("/x").expect("target");
        assert_eq!(
            api.uri(&bare, "t").expect("uri").to_string(),
            "http://h/x?api_key=t"
        );
    }

    #[test]
    fn locations_are_rewritten_only_for_the_same_origin_and_base() {
        let api = route("http://h:8080/api", InjectConfig::default());
        let target = api.target("/users/7").expect("target");
        let rewrite = |location: &str| {
            api.rewrite_location(&target, &HeaderValue::from_str(location).expect("value"))
        };
        assert_eq!(
            rewrite("http://h:8080/api/users/8?x=1").as_deref(),
            Some("/proxy/crm/users/8?x=1")
        );
        assert_eq!(rewrite("/api/next").as_deref(), Some("/proxy/crm/next"));
        assert_eq!(rewrite("8").as_deref(), Some("/proxy/crm/users/8"));
        assert_eq!(rewrite("/api").as_deref(), Some("/proxy/crm"));
        assert_eq!(
            rewrite("/apiary").as_deref(),
            Some("http://h:8080/apiary"),
            "same origin outside the base: absolute"
        );
        assert_eq!(rewrite("http://other:8080/api/x"), None);
        assert_eq!(rewrite("https://h:8080/api/x"), None);
    }

    #[test]
    fn locations_never_show_an_injected_query_token() {
        let api = route(
            "http://h/",
            InjectConfig {
                query: Some("key".into()),
                ..InjectConfig::default()
            },
        );
        let target = api.target("/a").expect("target");
        let rewrite = |location: &str| {
            api.rewrite_location(&target, &HeaderValue::from_str(location).expect("value"))
        };
        assert_eq!(
            rewrite("http://elsewhere/x?key=SECRET&y=1").as_deref(),
            Some("http://elsewhere/x?y=1")
        );
        assert_eq!(rewrite("/b?key=SECRET").as_deref(), Some("/proxy/crm/b"));
        assert_eq!(rewrite("http://elsewhere/x?y=1"), None);
    }

    #[test]
    fn bad_upstreams_are_refused() {
        for base in ["ftp://h/", "http://u:p@h/", "http://h/?q=1"] {
            let upstream = Upstream {
                headers: Vec::new(),
                egress: None,
                base: base.parse().expect("url"),
                inject: InjectConfig::default(),
            };
            assert!(Route::new("crm", &upstream).is_err(), "{base}");
        }
        let upstream = Upstream {
            headers: Vec::new(),
            egress: None,
            base: "http://h/".parse().expect("url"),
            inject: InjectConfig {
                header: Some("bad header".into()),
                ..InjectConfig::default()
            },
        };
        assert!(Route::new("crm", &upstream).is_err());
    }
}
