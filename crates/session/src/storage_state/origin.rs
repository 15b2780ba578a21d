//! [`OriginState`]: the localStorage (and sessionStorage) of one origin, and its entries.

use std::fmt;

use url::Url;
use zeroize::Zeroize;

use super::*;

/// localStorage and sessionStorage of one origin; its IndexedDB databases (Playwright's
/// `indexedDB` format) are kept as they are in [`OriginState::extra`].
#[derive(Clone, PartialEq, Default)]
pub struct OriginState {
    /// The origin, e.g. `https://app.example.com`.
    pub origin: String,
    /// Its localStorage entries, in order.
    pub local_storage: Vec<NameValue>,
    /// Its sessionStorage entries (authkeeper's `sessionStorage` key: Playwright has none and
    /// ignores it; written only when there are entries, so Playwright's files stay identical).
    pub session_storage: Vec<NameValue>,
    /// Fields this crate does not model (e.g. `indexedDB`), kept for the round trip.
    pub extra: Extra,
}

impl fmt::Debug for OriginState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OriginState")
            .field("origin", &self.origin)
            .field("local_storage_entries", &self.local_storage.len())
            .field("session_storage_entries", &self.session_storage.len())
            .field("extra", &self.extra)
            .finish()
    }
}

impl OriginState {
    /// An origin with these localStorage entries.
    pub fn new(origin: impl Into<String>, local_storage: Vec<NameValue>) -> Self {
        OriginState {
            origin: origin.into(),
            local_storage,
            session_storage: Vec::new(),
            extra: Extra::default(),
        }
    }

    /// The origin's IndexedDB databases in Playwright's format (`indexedDB`), as compact JSON
    /// text (a secret: values may hold tokens), if any.
    pub fn indexed_db_json(&self) -> Option<zeroize::Zeroizing<String>> {
        self.extra
            .fields
            .iter()
            .find(|(key, _)| key == "indexedDB")
            .and_then(|(_, value)| serde_json::to_string(value).ok())
            .map(zeroize::Zeroizing::new)
    }

    /// Replaces the origin's IndexedDB databases with `json` (Playwright's format: an array).
    pub fn set_indexed_db_json(&mut self, json: &str) -> Result<(), StateError> {
        let databases: Json =
            serde_json::from_str(json).map_err(|err| StateError::MalformedJson {
                line: err.line(),
                column: err.column(),
                reason: "the IndexedDB export is not valid JSON".to_owned(),
            })?;
        if !matches!(databases, Json::Array(_)) {
            return Err(invalid("indexedDB", "expected an array of databases"));
        }
        match self
            .extra
            .fields
            .iter_mut()
            .find(|(key, _)| key == "indexedDB")
        {
            Some((_, value)) => *value = databases,
            None => self.extra.fields.push(("indexedDB".to_owned(), databases)),
        }
        Ok(())
    }

    /// Checks what [`StorageState::from_json`] checks for one origin.
    pub fn validate(&self) -> Result<(), StateError> {
        self.validate_at("origin")
    }

    pub(super) fn validate_at(&self, at: &str) -> Result<(), StateError> {
        let ok = Url::parse(&self.origin).is_ok_and(|url| {
            url.origin().is_tuple()
                && url.path() == "/"
                && url.query().is_none()
                && url.fragment().is_none()
                && url.username().is_empty()
                && url.password().is_none()
        });
        if !ok {
            return Err(invalid(
                at,
                "origin is not a URL origin like https://app.example.com",
            ));
        }
        if self.local_storage.len() > MAX_LOCAL_STORAGE_ENTRIES
            || self.session_storage.len() > MAX_LOCAL_STORAGE_ENTRIES
        {
            return Err(StateError::TooMany {
                what: "localStorage entries in one origin",
                count: self.local_storage.len(),
                limit: MAX_LOCAL_STORAGE_ENTRIES,
            });
        }
        Ok(())
    }

    pub(super) fn to_value(&self) -> Json {
        let mut known = vec![
            ("origin", Json::String(self.origin.clone())),
            (
                "localStorage",
                Json::Array(self.local_storage.iter().map(NameValue::to_value).collect()),
            ),
        ];
        if !self.session_storage.is_empty() {
            known.push((
                "sessionStorage",
                Json::Array(
                    self.session_storage
                        .iter()
                        .map(NameValue::to_value)
                        .collect(),
                ),
            ));
        }
        self.extra.object(known)
    }

    pub(super) fn from_value(mut json: Json, at: &str) -> Result<OriginState, StateError> {
        let Json::Object(fields) = &mut json else {
            return Err(invalid(
                at,
                format!("expected an object, found {}", json.type_name()),
            ));
        };
        let mut origin = OriginState::default();
        let mut has_origin = false;
        for (key, value) in fields.iter_mut() {
            origin.extra.order.push(key.clone());
            match key.as_str() {
                "origin" => {
                    origin.origin = take_string(value, &format!("{at}.origin"))?;
                    has_origin = true;
                }
                "localStorage" => {
                    origin.local_storage = entries(value, &format!("{at}.localStorage"))?;
                }
                "sessionStorage" => {
                    origin.session_storage = entries(value, &format!("{at}.sessionStorage"))?;
                }
                _ => origin.extra.fields.push((key.clone(), value.take())),
            }
        }
        if !has_origin {
            return Err(invalid(at, "missing \"origin\""));
        }
        origin.validate_at(at)?;
        Ok(origin)
    }
}

/// The entries of a `localStorage` / `sessionStorage` array at `at`.
fn entries(value: &mut Json, at: &str) -> Result<Vec<NameValue>, StateError> {
    let Json::Array(items) = value else {
        return Err(invalid(
            at,
            format!("expected an array, found {}", value.type_name()),
        ));
    };
    if items.len() > MAX_LOCAL_STORAGE_ENTRIES {
        return Err(StateError::TooMany {
            what: "storage entries in one origin",
            count: items.len(),
            limit: MAX_LOCAL_STORAGE_ENTRIES,
        });
    }
    items
        .iter_mut()
        .enumerate()
        .map(|(i, item)| NameValue::from_value(item.take(), &format!("{at}[{i}]")))
        .collect()
}

/// A localStorage or sessionStorage entry. Its name and value are zeroized on drop.
#[derive(Clone, PartialEq, Default)]
pub struct NameValue {
    /// The key.
    pub name: String,
    /// The value (a secret).
    pub value: String,
    /// Fields this crate does not model, kept for the round trip.
    pub extra: Extra,
}

impl Drop for NameValue {
    fn drop(&mut self) {
        self.name.zeroize();
        self.value.zeroize();
    }
}

impl fmt::Debug for NameValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NameValue")
            .field("name", &self.name)
            .field("value", &"[redacted]")
            .finish()
    }
}

impl NameValue {
    /// An entry.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        NameValue {
            name: name.into(),
            value: value.into(),
            extra: Extra::default(),
        }
    }

    pub(super) fn to_value(&self) -> Json {
        self.extra.object(vec![
            ("name", Json::String(self.name.clone())),
            ("value", Json::String(self.value.clone())),
        ])
    }

    pub(super) fn from_value(mut json: Json, at: &str) -> Result<NameValue, StateError> {
        let Json::Object(fields) = &mut json else {
            return Err(invalid(
                at,
                format!("expected an object, found {}", json.type_name()),
            ));
        };
        let mut entry = NameValue::default();
        let (mut has_name, mut has_value) = (false, false);
        for (key, value) in fields.iter_mut() {
            entry.extra.order.push(key.clone());
            match key.as_str() {
                "name" => {
                    entry.name = take_string(value, &format!("{at}.name"))?;
                    has_name = true;
                }
                "value" => {
                    entry.value = take_string(value, &format!("{at}.value"))?;
                    has_value = true;
                }
                _ => entry.extra.fields.push((key.clone(), value.take())),
            }
        }
        if !has_name {
            return Err(invalid(at, "missing \"name\""));
        }
        if !has_value {
            return Err(invalid(at, "missing \"value\""));
        }
        Ok(entry)
    }
}
