//! The pool policy as pure functions over a [`Session`]: what a release does to it and when it
//! is retired. No I/O, no clock of its own.

use authkeeper_core::Timestamp;

use crate::config::PoolPolicy;
use crate::model::{Outcome, Session, SessionState};

/// Applies a worker's outcome to `session` (error score, state) and retires it when a limit is
/// reached. Does not touch the lease.
pub(crate) fn apply_outcome(session: &mut Session, outcome: Outcome, policy: &PoolPolicy) {
    match outcome {
        Outcome::Ok => {
            session.error_score = (session.error_score - policy.error_score_decrement).max(0.0);
        }
        Outcome::Error => session.error_score += policy.error_score_increment,
        Outcome::Blocked => session.error_score += policy.blocked_score_increment,
        Outcome::LoggedOut => {
            if policy.retire_on_logged_out {
                retire(session, "logged_out");
            } else {
                session.state = SessionState::NeedsLogin;
                session.reason = Some("logged_out".to_owned());
            }
        }
    }
    if session.state != SessionState::Retired
        && let Some(reason) = limit_reached(session, policy)
    {
        retire(session, reason);
    }
}

/// Why `session` must be retired under `policy` (usage or error score), if it must.
pub(crate) fn limit_reached(session: &Session, policy: &PoolPolicy) -> Option<&'static str> {
    if policy.max_usage > 0 && session.usage_count >= policy.max_usage {
        Some("max_usage")
    } else if session.error_score >= policy.max_error_score {
        Some("max_error_score")
    } else {
        None
    }
}

/// Why `session` is too old to be handed out at `now`, if it is.
pub(crate) fn expired(
    session: &Session,
    policy: &PoolPolicy,
    now: Timestamp,
) -> Option<&'static str> {
    if let Some(max_age) = policy.max_age
        && now.saturating_since(session.created_at) >= max_age
    {
        return Some("max_age");
    }
    if session
        .expires_at
        .is_some_and(|expires_at| expires_at <= now)
    {
        return Some("expired");
    }
    None
}

/// Marks `session` retired for `reason`.
pub(crate) fn retire(session: &mut Session, reason: &str) {
    session.state = SessionState::Retired;
    session.reason = Some(reason.to_owned());
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::storage_state::StorageState;

    fn session() -> Session {
        Session {
            id: "alice.0".parse().expect("valid"),
            site: "portal".parse().expect("valid"),
            account: "alice".parse().expect("valid"),
            proxy: None,
            identity: None,
            storage_state: StorageState::default(),
            state: SessionState::Active,
            reason: None,
            created_at: Timestamp::from_secs(1_000),
            last_used_at: None,
            last_checked_at: None,
            last_refreshed_at: None,
            usage_count: 0,
            error_score: 0.0,
            expires_at: None,
            lease: None,
            logins: 1,
        }
    }

    #[test]
    fn crawlee_defaults_retire_after_three_errors_and_forgive_on_ok() {
        let policy = PoolPolicy::default();
        let mut s = session();
        apply_outcome(&mut s, Outcome::Error, &policy);
        apply_outcome(&mut s, Outcome::Error, &policy);
        apply_outcome(&mut s, Outcome::Ok, &policy);
        assert_eq!(s.error_score, 1.5);
        assert_eq!(s.state, SessionState::Active);
        apply_outcome(&mut s, Outcome::Error, &policy);
        assert_eq!(s.state, SessionState::Active);
        apply_outcome(&mut s, Outcome::Error, &policy);
        assert_eq!(s.state, SessionState::Retired);
        assert_eq!(s.reason.as_deref(), Some("max_error_score"));
    }

    #[test]
    fn ok_never_goes_below_zero_and_blocked_retires() {
        let policy = PoolPolicy::default();
        let mut s = session();
        apply_outcome(&mut s, Outcome::Ok, &policy);
        assert_eq!(s.error_score, 0.0);
        apply_outcome(&mut s, Outcome::Blocked, &policy);
        assert_eq!(s.state, SessionState::Retired);
    }

    #[test]
    fn usage_limit_retires() {
        let policy = PoolPolicy {
            max_usage: 2,
            ..PoolPolicy::default()
        };
        let mut s = session();
        s.usage_count = 2;
        apply_outcome(&mut s, Outcome::Ok, &policy);
        assert_eq!(s.reason.as_deref(), Some("max_usage"));
    }

    #[test]
    fn logged_out_retires_or_waits_for_login() {
        let mut s = session();
        apply_outcome(&mut s, Outcome::LoggedOut, &PoolPolicy::default());
        assert_eq!(s.state, SessionState::Retired);
        let keep = PoolPolicy {
            retire_on_logged_out: false,
            ..PoolPolicy::default()
        };
        let mut s = session();
        apply_outcome(&mut s, Outcome::LoggedOut, &keep);
        assert_eq!(s.state, SessionState::NeedsLogin);
    }

    #[test]
    fn age_and_absolute_expiry() {
        let policy = PoolPolicy {
            max_age: Some(Duration::from_secs(60)),
            ..PoolPolicy::default()
        };
        let s = session();
        assert_eq!(expired(&s, &policy, Timestamp::from_secs(1_059)), None);
        assert_eq!(
            expired(&s, &policy, Timestamp::from_secs(1_060)),
            Some("max_age")
        );
        let mut s = session();
        s.expires_at = Some(Timestamp::from_secs(1_010));
        assert_eq!(
            expired(&s, &PoolPolicy::default(), Timestamp::from_secs(1_010)),
            Some("expired")
        );
    }
}
