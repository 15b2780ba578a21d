//! Automatic re-authentication: what happens when refreshing cannot help any more.
//!
//! A refresh token dies: the provider answers `invalid_grant`, the session reaches its absolute
//! lifetime (`max_session_age`), or the provider's `refresh_token_expires_in` passes. The Keeper
//! then calls its [`Reauthenticator`] (from one place, when a failure is classified
//! `needs_reauth`), and its heartbeat asks the reauthenticator for a [`ReloginSchedule`] so that
//! a session is renewed *before* it dies, inside an off-peak window.
//!
//! `authkeeper_login::reauth::LoginReauthenticator` is the implementation built from the
//! configuration:
//!
//! - `grant = "client_credentials"`: nothing to do — every refresh already re-issues a token.
//! - `login = { method = "command", ... }`: runs the external login command in the background
//!   (with its timeout, and capped, jittered backoff between failed attempts) and stores its
//!   token response as a new generation. A failed, timed-out or garbage run stores nothing, so
//!   what was stored is never lost.
//! - device or PKCE login: a human must act. The credential stays `needs_reauth`; the Keeper's
//!   [`Event::NeedsReauth`](crate::events::Event::NeedsReauth) and
//!   [`Event::ReloginDue`](crate::events::Event::ReloginDue) events reach the notifier (the
//!   broker's webhook) and the log, with the login hint `authkeeper login NAME`.
//!
//! Scheduled re-login ([`ReloginPolicy`]): the absolute expiry is the earlier of the session
//! start plus `max_session_age` and the refresh token's own expiry. The re-login runs at the
//! opening of the last `relogin_window` (UTC) that starts before the absolute expiry minus
//! `relogin_margin` (and after the session began); when there is no such window or it was
//! missed, at the expiry minus the margin. Once the absolute expiry passes, the credential is
//! recorded as `needs_reauth` even if the provider would still refresh it. Time comes from
//! the Keeper's [`Clock`](crate::clock::Clock), so tests drive it with a
//! [`ManualClock`](crate::clock::ManualClock).

use std::str::FromStr;
use std::time::Duration;

use crate::clock::Timestamp;
use crate::keeper::Keeper;
use crate::name::CredentialName;
use crate::token::TokenSet;

/// Default [`ReloginPolicy::margin`].
pub const DEFAULT_RELOGIN_MARGIN: Duration = Duration::from_secs(30 * 60);

/// What started a re-authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReauthTrigger {
    /// A refresh failed in a way refreshing cannot fix (`invalid_grant`, lifetime reached).
    RefreshFailed,
    /// The scheduled re-login ahead of the session's absolute expiry is due.
    SessionExpiring {
        /// When the session dies.
        expires_at: Timestamp,
    },
}

/// A request to re-authenticate a credential.
#[derive(Debug, Clone)]
pub struct ReauthRequest {
    /// The credential.
    pub name: CredentialName,
    /// The generation that cannot be refreshed (a newer stored one means someone logged in).
    pub generation: u64,
    /// Why, for logs and notifications (never a secret).
    pub reason: String,
    /// What started it.
    pub trigger: ReauthTrigger,
}

/// When a credential's session should be renewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReloginSchedule {
    /// When to start the re-login.
    pub relogin_at: Timestamp,
    /// When the session dies (absolute expiry).
    pub session_expires_at: Timestamp,
    /// Whether the login method needs no human.
    pub automatic: bool,
}

/// Re-acquires credentials when refreshing cannot help. Installed on the Keeper with
/// [`KeeperBuilder::reauthenticator`](crate::keeper::KeeperBuilder::reauthenticator).
pub trait Reauthenticator: Send + Sync + 'static {
    /// Starts re-authenticating. Called on the refresh path and from the heartbeat: it must not
    /// block (spawn the work). A successful re-login stores a new generation, e.g. with
    /// [`Keeper::import`].
    fn start(&self, keeper: &Keeper, request: ReauthRequest);

    /// The scheduled re-login of `name` given its current tokens, if its session has an
    /// absolute expiry. The default has none.
    fn schedule(&self, name: &str, tokens: &TokenSet, now: Timestamp) -> Option<ReloginSchedule> {
        let _ = (name, tokens, now);
        None
    }
}

/// A daily time window in UTC, `HH:MM-HH:MM`; it may wrap midnight (`22:00-02:00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWindow {
    /// Opening, in seconds after midnight UTC.
    start: u32,
    /// Closing, in seconds after midnight UTC.
    end: u32,
}

const DAY_MS: i64 = 86_400_000;
const DAY_SECS: u32 = 86_400;

/// Why a time window cannot be parsed.
#[derive(Debug, thiserror::Error)]
#[error("invalid time window {0:?}: expected HH:MM-HH:MM (UTC), e.g. 01:00-05:00")]
pub struct TimeWindowError(String);

impl FromStr for TimeWindow {
    type Err = TimeWindowError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = || TimeWindowError(text.chars().take(40).collect());
        let (start, end) = text.trim().split_once('-').ok_or_else(error)?;
        let parse = |part: &str| -> Option<u32> {
            let (h, m) = part.trim().split_once(':')?;
            let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
            (h < 24 && m < 60).then_some(h * 3600 + m * 60)
        };
        let (start, end) = (
            parse(start).ok_or_else(error)?,
            parse(end).ok_or_else(error)?,
        );
        if start == end {
            return Err(error());
        }
        Ok(TimeWindow { start, end })
    }
}

impl TimeWindow {
    /// Whether `at` falls inside the window.
    pub fn contains(&self, at: Timestamp) -> bool {
        let second = u32::try_from(at.as_millis().rem_euclid(DAY_MS) / 1000).unwrap_or(0);
        if self.start < self.end {
            (self.start..self.end).contains(&second)
        } else {
            second >= self.start || second < self.end
        }
    }

    /// The latest opening of the window at or before `at`.
    pub fn latest_opening(&self, at: Timestamp) -> Timestamp {
        let millis = at.as_millis();
        let opening = millis.div_euclid(DAY_MS) * DAY_MS + i64::from(self.start) * 1000;
        Timestamp::from_millis(if opening <= millis {
            opening
        } else {
            opening - DAY_MS
        })
    }

    /// How long the window stays open.
    pub fn length(&self) -> Duration {
        Duration::from_secs(u64::from((self.end + DAY_SECS - self.start) % DAY_SECS))
    }
}

/// When a session must be renewed: its absolute lifetime and the window for re-logins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReloginPolicy {
    /// Absolute lifetime of a login session (from the login, across refreshes).
    pub max_session_age: Option<Duration>,
    /// When re-logins may run (UTC); `None`: any time.
    pub window: Option<TimeWindow>,
    /// How long before the absolute expiry the re-login must happen at the latest.
    pub margin: Duration,
}

impl ReloginPolicy {
    /// When the session of `tokens` dies: the earlier of its start plus `max_session_age` and
    /// the refresh token's expiry, if either is known.
    pub fn session_expires_at(&self, tokens: &TokenSet) -> Option<Timestamp> {
        let by_age = self
            .max_session_age
            .map(|age| tokens.session_started_at() + age);
        match (by_age, tokens.refresh_token_expires_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// When to re-login (and when the session dies), seen at `now`: the opening of the last
    /// window before `expiry - margin`; `now` when inside that window; `expiry - margin` when the
    /// window was missed, opened before the session began (a session renewed inside the window
    /// must not be renewed again at once), or there is none.
    pub fn relogin_at(&self, tokens: &TokenSet, now: Timestamp) -> Option<(Timestamp, Timestamp)> {
        let expires_at = self.session_expires_at(tokens)?;
        let deadline = expires_at - self.margin;
        let Some(window) = self.window else {
            return Some((deadline, expires_at));
        };
        let opening = window.latest_opening(deadline);
        let at = if opening <= tokens.session_started_at() {
            deadline
        } else if now < opening {
            opening
        } else if now <= deadline && window.contains(now) {
            now
        } else {
            deadline
        };
        Some((at, expires_at))
    }
}

/// The command to run for a human re-login.
pub fn login_hint(name: &str) -> String {
    format!("authkeeper login {name}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::ExpiryDefaults;

    fn at(text: &str) -> Timestamp {
        // "YYYY-MM-DD HH:MM" on 2026-11-23 (day 20415 since the epoch) and later.
        let (day, time) = text.split_once(' ').unwrap();
        let day: i64 = day.parse().unwrap();
        let (h, m) = time.split_once(':').unwrap();
        let (h, m): (i64, i64) = (h.parse().unwrap(), m.parse().unwrap());
        Timestamp::from_millis((20_415 + day) * DAY_MS + (h * 3600 + m * 60) * 1000)
    }

    fn tokens(issued_at: Timestamp) -> TokenSet {
        TokenSet {
            access_token: crate::secret::AccessToken::from("a"),
            token_type: "Bearer".into(),
            refresh_token: Some(crate::secret::RefreshToken::from("r")),
            id_token: None,
            scope: None,
            issued_at,
            expires_at: issued_at + Duration::from_secs(3600),
            refresh_token_expires_at: None,
            extra: Default::default(),
        }
    }

    #[test]
    fn windows_parse_and_wrap() {
        let w: TimeWindow = "01:00-05:00".parse().unwrap();
        assert!(w.contains(at("0 01:00")) && w.contains(at("0 04:59")));
        assert!(!w.contains(at("0 05:00")) && !w.contains(at("0 00:59")));
        assert_eq!(w.length(), Duration::from_secs(4 * 3600));
        let wrap: TimeWindow = "22:00-02:00".parse().unwrap();
        assert!(wrap.contains(at("0 23:00")) && wrap.contains(at("1 01:00")));
        assert!(!wrap.contains(at("0 12:00")));
        assert_eq!(wrap.latest_opening(at("1 01:00")), at("0 22:00"));
        for bad in [
            "",
            "1-2",
            "25:00-01:00",
            "01:00-01:00",
            "01:60-02:00",
            "01:00",
        ] {
            assert!(bad.parse::<TimeWindow>().is_err(), "{bad}");
        }
    }

    #[test]
    fn relogin_is_in_the_last_window_before_the_deadline() {
        let policy = ReloginPolicy {
            max_session_age: Some(Duration::from_secs(24 * 3600)),
            window: Some("01:00-05:00".parse().unwrap()),
            margin: Duration::from_secs(1800),
        };
        let set = tokens(at("0 10:00"));
        let (relogin, expires) = policy.relogin_at(&set, at("0 10:00")).unwrap();
        assert_eq!(expires, at("1 10:00"));
        assert_eq!(relogin, at("1 01:00"));
        // Inside the window: now.
        let (relogin, _) = policy.relogin_at(&set, at("1 02:00")).unwrap();
        assert_eq!(relogin, at("1 02:00"));
        // Missed the window: the deadline.
        let (relogin, _) = policy.relogin_at(&set, at("1 06:00")).unwrap();
        assert_eq!(relogin, at("1 09:30"));
        // The refresh token dies earlier than the session age.
        let mut short = set.clone();
        short.refresh_token_expires_at = Some(at("1 03:00"));
        let (relogin, expires) = policy.relogin_at(&short, at("0 10:00")).unwrap();
        assert_eq!((relogin, expires), (at("1 01:00"), at("1 03:00")));
        // A session renewed inside the window is not renewed again at once: the next window
        // opens after its deadline, so the deadline it is.
        let renewed = tokens(at("1 01:00"));
        let (relogin, expires) = policy.relogin_at(&renewed, at("1 01:00")).unwrap();
        assert_eq!((relogin, expires), (at("2 00:30"), at("2 01:00")));
        // No absolute lifetime: no re-login.
        assert!(
            ReloginPolicy::default()
                .relogin_at(&set, at("0 10:00"))
                .is_none()
        );
    }

    #[test]
    fn session_start_survives_refreshes() {
        let set = tokens(at("0 10:00"));
        let response =
            crate::token::TokenResponse::parse_tokens(br#"{"access_token":"b","expires_in":60}"#)
                .unwrap();
        let next = set.refreshed_with(response, at("0 11:00"), &ExpiryDefaults::default());
        assert_eq!(next.issued_at, at("0 11:00"));
        assert_eq!(next.session_started_at(), at("0 10:00"));
    }
}
