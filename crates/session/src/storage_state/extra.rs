//! [`Extra`]: the fields of a JSON object this crate does not model, kept in place.

use std::fmt;

use super::*;

/// Fields of a JSON object that this crate does not model (e.g. `partitionKey`,
/// `_crHasCrossSiteAncestor`, `indexedDB`), and the order in which the object listed all its keys,
/// so that a document is written back as it was read.
///
/// `Debug` shows only the unknown fields' names; their contents are zeroized on drop.
#[derive(Clone, Default)]
pub struct Extra {
    pub(super) fields: Vec<(String, Json)>,
    pub(super) order: Vec<String>,
}

impl PartialEq for Extra {
    fn eq(&self, other: &Self) -> bool {
        self.fields == other.fields
    }
}

impl fmt::Debug for Extra {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.fields.iter().map(|(key, _)| key))
            .finish()
    }
}

impl Extra {
    /// True when the object had no unknown field.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Names of the unknown fields, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|(key, _)| key.as_str())
    }

    /// The unknown field `name` when it is a string.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.fields.iter().find_map(|(key, value)| match value {
            Json::String(text) if key == name => Some(text.as_str()),
            _ => None,
        })
    }

    /// Drops the unknown field `name`; true when there was one.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.fields.len();
        self.fields.retain(|(key, _)| key != name);
        before != self.fields.len()
    }

    /// Builds an object: keys in the recorded order, then known keys not recorded (in their
    /// canonical order), then unknown fields not recorded.
    pub(super) fn object(&self, known: Vec<(&'static str, Json)>) -> Json {
        let mut known: Vec<Option<(&'static str, Json)>> = known.into_iter().map(Some).collect();
        let mut unknown_done = vec![false; self.fields.len()];
        let mut out: Vec<(String, Json)> = Vec::with_capacity(known.len() + self.fields.len());
        for key in &self.order {
            if let Some(slot) = known
                .iter_mut()
                .find(|slot| slot.as_ref().is_some_and(|(name, _)| name == key))
            {
                if let Some((name, value)) = slot.take() {
                    out.push((name.to_owned(), value));
                }
            } else if let Some(i) = self
                .fields
                .iter()
                .enumerate()
                .position(|(i, (name, _))| !unknown_done[i] && name == key)
            {
                unknown_done[i] = true;
                out.push((self.fields[i].0.clone(), self.fields[i].1.clone()));
            }
        }
        out.extend(known.into_iter().flatten().map(|(k, v)| (k.to_owned(), v)));
        for (i, (key, value)) in self.fields.iter().enumerate() {
            if !unknown_done[i] {
                out.push((key.clone(), value.clone()));
            }
        }
        Json::Object(out)
    }
}
