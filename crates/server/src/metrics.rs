//! Prometheus metrics (`GET /metrics`, text exposition format).
//!
//! [`Metrics`] is an [`EventSink`] registered on the Keeper (refresh counters and latency,
//! rejections), a [`ProxyObserver`] for the proxy, and is called by the API handlers for token
//! requests. Gauges describing credentials (seconds until expiry, needing re-auth, circuit
//! state) are recomputed at every scrape from the store and the Keeper.

use std::sync::atomic::AtomicU64;

use authkeeper_core::events::{Event, EventSink};
use authkeeper_core::{CredentialState, Keeper, Timestamp};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::proxy::ProxyObserver;

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CredentialLabel {
    credential: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    credential: String,
    result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    credential: String,
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefreshedLabels {
    credential: String,
    refreshed: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    credential: String,
    status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabel {
    event: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SiteStateLabels {
    site: String,
    state: String,
}

/// The broker's metrics. Cheap to share (`Arc<Metrics>`); safe for concurrent use.
pub struct Metrics {
    registry: Registry,
    refreshes: Family<ResultLabels, Counter>,
    refresh_duration: Histogram,
    token_expiry: Family<CredentialLabel, Gauge<f64, AtomicU64>>,
    token_requests: Family<OutcomeLabels, Counter>,
    rejections: Family<RefreshedLabels, Counter>,
    proxy_requests: Family<StatusLabels, Counter>,
    needing_reauth: Gauge,
    circuit_state: Family<CredentialLabel, Gauge>,
    lost_in_crash: Family<CredentialLabel, Counter>,
    writes_fenced: Family<CredentialLabel, Counter>,
    lease_takeovers: Family<CredentialLabel, Counter>,
    session_events: Family<EventLabel, Counter>,
    sessions: Family<SiteStateLabels, Gauge>,
    credentials: Family<StateLabel, Gauge>,
    /// Label series per credential (else one aggregate `credential="*"` series): on while the
    /// broker holds at most `per_credential_limit` credentials.
    per_credential: std::sync::atomic::AtomicBool,
    per_credential_limit: std::sync::atomic::AtomicUsize,
}

/// Label of the per-state credential count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

/// Credentials up to which metrics carry a `credential` label by default: beyond, a scrape
/// of a million series would cost more than it tells.
pub const PER_CREDENTIAL_LIMIT: usize = 1000;

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric (prefix `authkeeper_`).
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("authkeeper");
        let refreshes = Family::<ResultLabels, Counter>::default();
        registry.register(
            "refreshes",
            "Token refreshes by credential and result (ok, transient, needs_reauth, configuration, permission)",
            refreshes.clone(),
        );
        let refresh_duration = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        registry.register(
            "refresh_duration_seconds",
            "Time spent at the token endpoint per refresh attempt",
            refresh_duration.clone(),
        );
        let token_expiry = Family::<CredentialLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "token_expiry_seconds",
            "Seconds until the current access token expires (negative when expired)",
            token_expiry.clone(),
        );
        let token_requests = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "token_requests",
            "Token API requests by credential and outcome (ok or a problem type)",
            token_requests.clone(),
        );
        let rejections = Family::<RefreshedLabels, Counter>::default();
        registry.register(
            "rejections",
            "Tokens reported rejected, by whether that caused a refresh",
            rejections.clone(),
        );
        let proxy_requests = Family::<StatusLabels, Counter>::default();
        registry.register(
            "proxy_requests",
            "Proxied requests by credential and response status",
            proxy_requests.clone(),
        );
        let needing_reauth = Gauge::default();
        registry.register(
            "credentials_needing_reauth",
            "Credentials a human or login method must re-authenticate",
            needing_reauth.clone(),
        );
        let circuit_state = Family::<CredentialLabel, Gauge>::default();
        registry.register(
            "circuit_state",
            "Circuit breaker of the credential's token endpoint: 0 closed, 1 open, 2 half-open",
            circuit_state.clone(),
        );
        let lost_in_crash = Family::<CredentialLabel, Counter>::default();
        registry.register(
            "lost_in_crash",
            "Grants lost because a refresh holder died between the provider's answer and the durable write",
            lost_in_crash.clone(),
        );
        let writes_fenced = Family::<CredentialLabel, Counter>::default();
        registry.register(
            "writes_fenced",
            "Refreshed token sets refused by fencing because another holder took the refresh lease over",
            writes_fenced.clone(),
        );
        let lease_takeovers = Family::<CredentialLabel, Counter>::default();
        registry.register(
            "lease_takeovers",
            "Refresh leases taken over from a holder that never released them (crashed or hung)",
            lease_takeovers.clone(),
        );
        let session_events = Family::<EventLabel, Counter>::default();
        registry.register(
            "session_events",
            "Browser-session pool events: lease, exhausted, release_ok, release_blocked, release_logged_out, release_error, login_ok, login_failed, probe_logged_in, probe_logged_out, reclaimed, retired, cookie_refresh",
            session_events.clone(),
        );
        let sessions = Family::<SiteStateLabels, Gauge>::default();
        registry.register(
            "sessions",
            "Stored browser sessions by site and state (active, needs_login, retired, leased)",
            sessions.clone(),
        );
        let credentials = Family::<StateLabel, Gauge>::default();
        registry.register(
            "credentials",
            "Credentials held by the broker, by state",
            credentials.clone(),
        );
        Metrics {
            credentials,
            per_credential: std::sync::atomic::AtomicBool::new(true),
            per_credential_limit: std::sync::atomic::AtomicUsize::new(PER_CREDENTIAL_LIMIT),
            session_events,
            sessions,
            lost_in_crash,
            writes_fenced,
            lease_takeovers,
            registry,
            refreshes,
            refresh_duration,
            token_expiry,
            token_requests,
            rejections,
            proxy_requests,
            needing_reauth,
            circuit_state,
        }
    }

    /// Sets how many credentials the broker may hold before metrics stop carrying a
    /// `credential` label (`[server] per_credential_metrics`).
    pub fn set_per_credential_limit(&self, limit: usize) {
        self.per_credential_limit
            .store(limit, std::sync::atomic::Ordering::Relaxed);
    }

    /// The `credential` label of `name`: the name, or `*` above the per-credential limit.
    fn credential_label(&self, name: &str) -> String {
        if self
            .per_credential
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            name.to_owned()
        } else {
            "*".to_owned()
        }
    }

    /// Counts one token API request (`outcome`: `ok` or a problem slug).
    pub fn token_request(&self, credential: &str, outcome: &str) {
        self.token_requests
            .get_or_create(&OutcomeLabels {
                credential: self.credential_label(credential),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Recomputes the credential gauges from what the Keeper holds in memory (a scrape never
    /// reads the store): counts by state, and per credential while there are at most
    /// `per_credential_limit` of them.
    pub fn update_credentials(&self, keeper: &Keeper, now: Timestamp) {
        use std::sync::atomic::Ordering::Relaxed;
        let per_credential = keeper.credential_count() <= self.per_credential_limit.load(Relaxed);
        if self.per_credential.swap(per_credential, Relaxed) && !per_credential {
            self.token_expiry.clear();
            self.circuit_state.clear();
        }
        let mut by_state: std::collections::BTreeMap<&'static str, i64> = Default::default();
        let mut after: Option<String> = None;
        loop {
            let names = keeper.credential_names_after(after.as_deref(), 4096);
            let Some(last) = names.last() else {
                break;
            };
            after = Some(last.to_string());
            for name in &names {
                let Some(snapshot) = keeper.snapshot(name) else {
                    continue;
                };
                *by_state.entry(snapshot.status.state.as_str()).or_default() += 1;
                if !per_credential {
                    continue;
                }
                let label = CredentialLabel {
                    credential: name.to_string(),
                };
                if let Some(expires_at) = snapshot.expires_at {
                    self.token_expiry
                        .get_or_create(&label)
                        .set(expires_at.millis_since(now) as f64 / 1000.0);
                }
                if let Some(circuit) = keeper.circuit_state(name) {
                    self.circuit_state
                        .get_or_create(&label)
                        .set(i64::from(circuit.code()));
                }
            }
        }
        for state in [
            CredentialState::Valid,
            CredentialState::Refreshing,
            CredentialState::BackingOff,
            CredentialState::NeedsReauth,
            CredentialState::Disabled,
        ] {
            self.credentials
                .get_or_create(&StateLabel {
                    state: state.as_str().to_owned(),
                })
                .set(by_state.get(state.as_str()).copied().unwrap_or(0));
        }
        self.needing_reauth.set(
            by_state
                .get(CredentialState::NeedsReauth.as_str())
                .copied()
                .unwrap_or(0),
        );
    }

    /// Brings the session metrics up to date with the pool's counters and its last census
    /// (taken by the janitor; a scrape never reads the store).
    pub fn update_sessions(
        &self,
        counters: &authkeeper_session::pool::PoolCounters,
        census: &[authkeeper_session::pool::SiteCensus],
    ) {
        use std::sync::atomic::Ordering::Relaxed;
        let events = [
            ("lease", &counters.leases),
            ("exhausted", &counters.exhausted),
            ("release_ok", &counters.releases[0]),
            ("release_blocked", &counters.releases[1]),
            ("release_logged_out", &counters.releases[2]),
            ("release_error", &counters.releases[3]),
            ("login_ok", &counters.logins_ok),
            ("login_failed", &counters.logins_failed),
            ("probe_logged_in", &counters.probes_logged_in),
            ("probe_logged_out", &counters.probes_logged_out),
            ("reclaimed", &counters.reclaimed),
            ("retired", &counters.retired),
            ("cookie_refresh", &counters.cookie_refreshes),
        ];
        for (event, value) in events {
            let counter = self.session_events.get_or_create(&EventLabel {
                event: event.to_owned(),
            });
            let total = value.load(Relaxed);
            let seen = counter.get();
            if total > seen {
                counter.inc_by(total - seen);
            }
        }
        self.sessions.clear();
        for site in census {
            for (state, count) in site.counts() {
                self.sessions
                    .get_or_create(&SiteStateLabels {
                        site: site.site.to_string(),
                        state: state.to_owned(),
                    })
                    .set(count);
            }
        }
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

impl EventSink for Metrics {
    fn on_event(&self, event: &Event<'_>) {
        match event {
            Event::Refreshed { name, latency, .. } => {
                self.refreshes
                    .get_or_create(&ResultLabels {
                        credential: self.credential_label(name),
                        result: "ok".to_owned(),
                    })
                    .inc();
                self.refresh_duration.observe(latency.as_secs_f64());
            }
            Event::RefreshFailed {
                name,
                class,
                latency,
                ..
            } => {
                self.refreshes
                    .get_or_create(&ResultLabels {
                        credential: self.credential_label(name),
                        result: class.as_str().to_owned(),
                    })
                    .inc();
                self.refresh_duration.observe(latency.as_secs_f64());
            }
            Event::Rejected {
                name, refreshed, ..
            } => {
                self.rejections
                    .get_or_create(&RefreshedLabels {
                        credential: self.credential_label(name),
                        refreshed: refreshed.to_string(),
                    })
                    .inc();
            }
            Event::LostInCrash { name, .. } => {
                self.lost_in_crash
                    .get_or_create(&CredentialLabel {
                        credential: self.credential_label(name),
                    })
                    .inc();
            }
            Event::WriteFenced { name, .. } => {
                self.writes_fenced
                    .get_or_create(&CredentialLabel {
                        credential: self.credential_label(name),
                    })
                    .inc();
            }
            Event::LeaseTakenOver { name } => {
                self.lease_takeovers
                    .get_or_create(&CredentialLabel {
                        credential: self.credential_label(name),
                    })
                    .inc();
            }
            _ => {}
        }
    }
}

impl ProxyObserver for Metrics {
    fn proxy_response(&self, credential: &str, status: u16) {
        self.proxy_requests
            .get_or_create(&StatusLabels {
                credential: self.credential_label(credential),
                status: status.to_string(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use authkeeper_core::Trigger;

    #[test]
    fn counts_refreshes_and_proxy_responses() {
        let metrics = Metrics::new();
        metrics.on_event(&Event::Refreshed {
            name: "crm",
            generation: 2,
            trigger: Trigger::Proactive,
            latency: Duration::from_millis(20),
            expires_at: Timestamp::from_secs(100),
        });
        metrics.proxy_response("crm", 200);
        metrics.token_request("crm", "ok");
        let text = metrics.encode().expect("encodes");
        assert!(
            text.contains("authkeeper_refreshes_total{credential=\"crm\",result=\"ok\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("authkeeper_proxy_requests_total{credential=\"crm\",status=\"200\"} 1")
        );
        assert!(text.contains("authkeeper_refresh_duration_seconds_count 1"));
    }

    #[tokio::test]
    async fn above_the_limit_credentials_share_one_series_and_are_counted_by_state() {
        let store = std::sync::Arc::new(authkeeper_core::MemoryStore::new());
        let settings: authkeeper_core::CredentialConfig = serde_json::from_value(
            serde_json::json!({"token_url": "http://127.0.0.1:9/token", "client_id": "c", "client_secret": "s"}),
        )
        .expect("config");
        let mut builder = Keeper::builder(store, authkeeper_core::SystemClock::shared());
        for name in ["a", "b", "c"] {
            builder = builder.credential(
                authkeeper_core::CredentialName::new(name).expect("name"),
                settings.resolve(name).expect("settings"),
            );
        }
        let keeper = builder.build().expect("keeper");
        let metrics = Metrics::new();
        metrics.set_per_credential_limit(2);
        metrics.update_credentials(&keeper, Timestamp::from_secs(0));
        metrics.token_request("a", "ok");
        metrics.token_request("b", "ok");
        let text = metrics.encode().expect("encodes");
        assert!(
            text.contains("authkeeper_token_requests_total{credential=\"*\",outcome=\"ok\"} 2"),
            "{text}"
        );
        assert!(!text.contains("credential=\"a\""), "{text}");
        assert!(
            text.contains("authkeeper_credentials{state=\"valid\"} 3"),
            "{text}"
        );
        metrics.set_per_credential_limit(3);
        metrics.update_credentials(&keeper, Timestamp::from_secs(0));
        metrics.token_request("a", "ok");
        assert!(
            metrics
                .encode()
                .expect("encodes")
                .contains("credential=\"a\"")
        );
    }
}
