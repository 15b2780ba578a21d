//! The proxy's path and `Location` handling as plain functions, for the fuzz target
//! (`fuzz/fuzz_targets/proxy_target.rs`). Not a stable API.

use http::header::HeaderValue;

use super::Upstream;
use super::target::Route;
use authkeeper_core::config::InjectConfig;

/// What the proxy does with a caller's path: the upstream request URI (with `token` injected
/// when `query_param` says so) and the caller's view of `location` answered by the upstream.
#[derive(Debug)]
pub struct Outcome {
    /// The request URI, or `None` when the path was refused.
    pub uri: Option<String>,
    /// The rewritten `Location`, when the path was accepted and a rewrite applies.
    pub location: Option<String>,
}

/// Runs the proxy's target computation for credential `fz` on `base` (`None` when the upstream
/// itself is refused).
pub fn run(
    base: &str,
    query_param: Option<&str>,
    path_and_query: &str,
    token: &str,
    location: &[u8],
) -> Option<Outcome> {
    let upstream = Upstream {
        headers: Vec::new(),
        egress: None,
        base: base.parse().ok()?,
        inject: InjectConfig {
            query: query_param.map(str::to_owned),
            ..InjectConfig::default()
        },
    };
    let route = Route::new("fz", &upstream).ok()?;
    let Ok(target) = route.target(path_and_query) else {
        return Some(Outcome {
            uri: None,
            location: None,
        });
    };
    let uri = route.uri(&target, token).ok().map(|uri| uri.to_string());
    let location = HeaderValue::from_bytes(location)
        .ok()
        .and_then(|value| route.rewrite_location(&target, &value));
    Some(Outcome { uri, location })
}
