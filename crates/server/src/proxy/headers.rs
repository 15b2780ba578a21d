//! Header rewriting: hop-by-hop headers (RFC 9110 §7.6.1) are removed both ways, the caller's
//! broker key never travels upstream, and `X-Forwarded-*` tell the upstream who asked.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Hop-by-hop headers, always removed (plus whatever `Connection` lists).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Removes the hop-by-hop headers and those `Connection` names.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Who sent the request to the broker, for `X-Forwarded-*`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caller<'a> {
    /// The peer address, when the listener knows it (not on a Unix socket).
    pub(crate) ip: Option<IpAddr>,
    /// `http` or `https`.
    pub(crate) proto: &'a str,
}

/// Turns the caller's request headers into the upstream's (everything but the credential).
///
/// Removes hop-by-hop headers, the caller's `Authorization` (its broker key), the header the
/// credential is injected in, and `Expect` (the body is sent right away); sets `Host` to the
/// upstream's and appends the `X-Forwarded-*` headers.
pub(crate) fn prepare_request(
    headers: &mut HeaderMap,
    host: &HeaderValue,
    injected: Option<&HeaderName>,
    caller: Caller<'_>,
) {
    strip_hop_by_hop(headers);
    headers.remove(header::AUTHORIZATION);
    headers.remove(header::EXPECT);
    if let Some(name) = injected {
        headers.remove(name);
    }
    if let Some(original) = headers.remove(header::HOST) {
        headers.insert(X_FORWARDED_HOST, original);
    }
    headers.insert(header::HOST, host.clone());
    if let Ok(proto) = HeaderValue::from_str(caller.proto) {
        headers.insert(X_FORWARDED_PROTO, proto);
    }
    if let Some(ip) = caller.ip {
        let value = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(earlier) if !earlier.trim().is_empty() => format!("{earlier}, {ip}"),
            _ => ip.to_string(),
        };
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(X_FORWARDED_FOR, value);
        }
    }
}

/// The declared body length, if a single valid `Content-Length` says it.
pub(crate) fn content_length(headers: &HeaderMap) -> Option<u64> {
    let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    first.to_str().ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_listed_and_fixed_hop_headers_go() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("close, X-Hop"));
        headers.append(header::CONNECTION, HeaderValue::from_static("x-other"));
        headers.insert("x-hop", HeaderValue::from_static("1"));
        headers.insert("x-other", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::COOKIE, HeaderValue::from_static("a=b"));
        strip_hop_by_hop(&mut headers);
        let left: Vec<_> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["cookie"]);
    }

    #[test]
    fn request_preparation() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer key"),
        );
        headers.insert("x-api-key", HeaderValue::from_static("caller"));
        headers.insert(header::HOST, HeaderValue::from_static("broker:7878"));
        headers.insert(X_FORWARDED_FOR, HeaderValue::from_static("10.0.0.1"));
        headers.insert(header::EXPECT, HeaderValue::from_static("100-continue"));
        let injected = HeaderName::from_static("x-api-key");
        let caller = Caller {
            ip: Some(IpAddr::from([127, 0, 0, 1])),
            proto: "https",
        };
        prepare_request(
            &mut headers,
            &HeaderValue::from_static("api.example.com"),
            Some(&injected),
            caller,
        );
        assert!(headers.get(header::AUTHORIZATION).is_none());
        assert!(headers.get("x-api-key").is_none());
        assert!(headers.get(header::EXPECT).is_none());
        assert_eq!(headers[header::HOST], "api.example.com");
        assert_eq!(headers[X_FORWARDED_HOST], "broker:7878");
        assert_eq!(headers[X_FORWARDED_PROTO], "https");
        assert_eq!(headers[X_FORWARDED_FOR], "10.0.0.1, 127.0.0.1");
    }

    #[test]
    fn content_length_must_be_single_and_numeric() {
        let mut headers = HeaderMap::new();
        assert_eq!(content_length(&headers), None);
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("42"));
        assert_eq!(content_length(&headers), Some(42));
        headers.append(header::CONTENT_LENGTH, HeaderValue::from_static("42"));
        assert_eq!(content_length(&headers), None);
    }
}
