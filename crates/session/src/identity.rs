//! A session's browser identity: user agent, language, time zone, window size — what the site
//! sees, the same on every request of the session for its whole life. Chosen when the session is
//! created, from the site's `identity` profiles (stable per session: the same session id always
//! gets the same pick) and the account's own settings, stored with the session, applied to the
//! recipe login's Chromium (CDP emulation), handed out with every lease as Playwright
//! `newContext` options, and used by the HTTP requests authkeeper makes for the session
//! (`User-Agent`, `Accept-Language`).
//!
//! ```toml
//! [sites.portal]
//! identity = { user_agents = ["Mozilla/5.0 (Windows NT 10.0; Win64; x64) ..."], locales = ["en-US", "en-GB"],
//!              timezones = ["America/New_York"], viewports = [[1366, 768], [1920, 1080]] }
//! accounts = [{ name = "alice", identity = { locale = "de-DE", timezone = "Europe/Berlin" } }]
//! ```

use std::hash::{Hash as _, Hasher as _};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// A window size in CSS pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Viewport {
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
}

/// One session's identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// `User-Agent` and `navigator.userAgent` (none: the browser's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// BCP 47 locale (`navigator.language`; `Accept-Language` is derived from it).
    pub locale: String,
    /// IANA time zone.
    pub timezone_id: String,
    /// Window size.
    pub viewport: Viewport,
    /// `navigator.platform` (e.g. `Win32`), when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
}

impl Identity {
    /// The `Accept-Language` value: the locale, then its language with `q=0.9`
    /// (`en-US,en;q=0.9`).
    pub fn accept_language(&self) -> String {
        match self.locale.split_once('-') {
            Some((language, _)) => format!("{},{language};q=0.9", self.locale),
            None => self.locale.clone(),
        }
    }

    /// Playwright `browser.newContext` options: `userAgent`, `locale`, `timezoneId`, `viewport`,
    /// `extraHTTPHeaders` (`Accept-Language`).
    pub fn context_options(&self) -> Value {
        let mut options = json!({
            "locale": self.locale,
            "timezoneId": self.timezone_id,
            "viewport": { "width": self.viewport.width, "height": self.viewport.height },
            "extraHTTPHeaders": { "Accept-Language": self.accept_language() },
        });
        if let Some(user_agent) = &self.user_agent {
            options["userAgent"] = Value::String(user_agent.clone());
        }
        options
    }
}

/// `[sites.NAME] identity`: what sessions of the site may look like.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityProfiles {
    /// User agents to choose from.
    #[serde(default)]
    pub user_agents: Vec<String>,
    /// Locales to choose from (default `en-US`).
    #[serde(default)]
    pub locales: Vec<String>,
    /// Time zones to choose from (default `UTC`).
    #[serde(default)]
    pub timezones: Vec<String>,
    /// Window sizes to choose from (default 1366×768).
    #[serde(default)]
    pub viewports: Vec<[u32; 2]>,
    /// `navigator.platform` values to choose from (default: leave Chromium's).
    #[serde(default)]
    pub platforms: Vec<String>,
}

/// An account's own identity settings (each overrides the site's pick).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityOverride {
    /// The user agent.
    #[serde(default)]
    pub user_agent: Option<String>,
    /// The locale.
    #[serde(default)]
    pub locale: Option<String>,
    /// The time zone.
    #[serde(default)]
    pub timezone: Option<String>,
    /// The window size.
    #[serde(default)]
    pub viewport: Option<[u32; 2]>,
    /// `navigator.platform`.
    #[serde(default)]
    pub platform: Option<String>,
}

/// A deterministic pick from `options` for `seed` (a session key) and `salt` (the field).
fn pick<'a, T>(options: &'a [T], seed: &str, salt: &str) -> Option<&'a T> {
    if options.is_empty() {
        return None;
    }
    // FNV-1a: stable across processes and releases (unlike `DefaultHasher`'s guarantees).
    let mut hasher = Fnv1a::default();
    seed.hash(&mut hasher);
    salt.hash(&mut hasher);
    let index = usize::try_from(hasher.finish() % options.len() as u64).unwrap_or(0);
    options.get(index)
}

#[derive(Default)]
struct Fnv1a(u64);

impl std::hash::Hasher for Fnv1a {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        if self.0 == 0 {
            self.0 = 0xcbf2_9ce4_8422_2325;
        }
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

impl IdentityProfiles {
    /// Whether the site configures identities at all.
    pub fn is_configured(&self) -> bool {
        !(self.user_agents.is_empty()
            && self.locales.is_empty()
            && self.timezones.is_empty()
            && self.viewports.is_empty()
            && self.platforms.is_empty())
    }

    /// The identity of the session `seed` (`SITE/ID`), with the account's `overrides`; `None`
    /// when neither the site nor the account configures any (the browser's own then). Without
    /// a user agent in either, the browser's own is kept (a headless Chromium's says so).
    pub fn identity_for(&self, seed: &str, overrides: &IdentityOverride) -> Option<Identity> {
        let overridden = overrides.user_agent.is_some()
            || overrides.locale.is_some()
            || overrides.timezone.is_some()
            || overrides.viewport.is_some()
            || overrides.platform.is_some();
        if !self.is_configured() && !overridden {
            return None;
        }
        let user_agent = overrides
            .user_agent
            .clone()
            .or_else(|| pick(&self.user_agents, seed, "user_agent").cloned());
        let [width, height] = overrides
            .viewport
            .or_else(|| pick(&self.viewports, seed, "viewport").copied())
            .unwrap_or([1366, 768]);
        Some(Identity {
            user_agent,
            locale: overrides
                .locale
                .clone()
                .or_else(|| pick(&self.locales, seed, "locale").cloned())
                .unwrap_or_else(|| "en-US".to_owned()),
            timezone_id: overrides
                .timezone
                .clone()
                .or_else(|| pick(&self.timezones, seed, "timezone").cloned())
                .unwrap_or_else(|| "UTC".to_owned()),
            viewport: Viewport { width, height },
            platform: overrides
                .platform
                .clone()
                .or_else(|| pick(&self.platforms, seed, "platform").cloned()),
        })
    }

    /// Checks the lists (non-empty strings, sane window sizes).
    pub fn validate(&self) -> Result<(), String> {
        let blank = |list: &[String]| list.iter().any(|v| v.trim().is_empty());
        if blank(&self.user_agents) || blank(&self.locales) || blank(&self.timezones) {
            return Err("identity lists may not hold empty strings".to_owned());
        }
        if self
            .viewports
            .iter()
            .any(|[w, h]| !(100..=10_000).contains(w) || !(100..=10_000).contains(h))
        {
            return Err("identity viewports must be 100..=10000 pixels each way".to_owned());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profiles() -> IdentityProfiles {
        IdentityProfiles {
            user_agents: vec!["UA-1".into(), "UA-2".into(), "UA-3".into()],
            locales: vec!["en-US".into(), "de-DE".into()],
            timezones: vec!["America/New_York".into()],
            viewports: vec![[1366, 768], [1920, 1080]],
            platforms: vec![],
        }
    }

    #[test]
    fn picks_are_stable_per_session_and_spread_across_sessions() {
        let site = profiles();
        let none = IdentityOverride::default();
        let a = site.identity_for("portal/alice-0", &none).unwrap();
        assert_eq!(Some(a.clone()), site.identity_for("portal/alice-0", &none));
        let agents: std::collections::BTreeSet<String> = (0..50)
            .filter_map(|i| site.identity_for(&format!("portal/u{i}-0"), &none))
            .filter_map(|identity| identity.user_agent)
            .collect();
        assert_eq!(agents.len(), 3, "{agents:?}");
        assert_eq!(IdentityProfiles::default().identity_for("x", &none), None);
    }

    #[test]
    fn account_overrides_win_and_context_options_are_playwright_shaped() {
        let overrides = IdentityOverride {
            locale: Some("fr-FR".into()),
            viewport: Some([800, 600]),
            ..IdentityOverride::default()
        };
        let identity = profiles().identity_for("portal/a", &overrides).unwrap();
        assert_eq!(identity.locale, "fr-FR");
        assert_eq!(identity.accept_language(), "fr-FR,fr;q=0.9");
        let options = identity.context_options();
        assert_eq!(options["viewport"]["width"], 800);
        assert_eq!(
            options["extraHTTPHeaders"]["Accept-Language"],
            "fr-FR,fr;q=0.9"
        );
        assert_eq!(options["timezoneId"], "America/New_York");
    }
}
