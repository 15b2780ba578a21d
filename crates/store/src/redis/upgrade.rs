//! The one-time upgrade of a prefix from sealing format 1 (values bound to kind and name) to
//! format 2 (bound to the prefix's store id, kind, name and version; a credential's status and
//! expiry sealed beside its tokens), run by the first replica of the new version that connects.
//!
//! Each value is replaced only if it is still the one read (script `RESEAL`), so replicas that
//! connect at the same moment may both run it, and the key check is rewritten last: a replica
//! that crashes half-way leaves a format-1 key check and the next one finishes the job. Upgrade
//! every replica of a prefix together: one of the old version would keep writing format 1, which
//! the upgraded ones refuse.

use authkeeper_core::name::CredentialName;
use authkeeper_core::store::{RecordKey, RecordKind, RecordStore as _};
use authkeeper_core::{CredentialState, CredentialStatus, StoreError, Timestamp};

use super::credentials::{parse_millis, parse_u64};
use super::{RedisStore, error};
use crate::record::encode_status;
use crate::seal::{
    Binding, CREDENTIAL_KIND, CREDENTIAL_STATUS_KIND, KEY_CHECK_KIND, KEY_CHECK_NAME,
    KEY_CHECK_PLAINTEXT, StoreId, is_v1,
};

/// The record kinds that existed while values were sealed in format 1.
const FORMAT_1_KINDS: [RecordKind; 2] = [RecordKind::new("session"), RecordKind::new("checkpoint")];

/// The fields of a format-1 credential hash: generation, sealed, expiry, plaintext status.
const CREDENTIAL_FIELDS: [&str; 8] = [
    "generation",
    "sealed",
    "expires_at",
    "state",
    "last_refresh_at",
    "failures",
    "reason",
    "next_attempt_at",
];

impl RedisStore {
    /// Re-seals every format-1 value of the prefix in format 2, then the key check.
    pub(super) async fn upgrade_to_format_2(&self, store: StoreId) -> Result<(), StoreError> {
        let credentials = self.upgrade_credentials(store).await?;
        let records = self.upgrade_records(store).await?;
        let sealed = self
            .inner
            .keyring
            .seal(
                &Binding::new(store, KEY_CHECK_KIND, KEY_CHECK_NAME, 0),
                KEY_CHECK_PLAINTEXT,
            )
            .map_err(|e| e.into_store_error(KEY_CHECK_KIND, KEY_CHECK_NAME))?;
        let mut conn = self.conn();
        let _: () = self
            .timed(
                "writing the key check",
                ::redis::cmd("SET")
                    .arg(self.inner.keys.key_check())
                    .arg(sealed.as_slice())
                    .query_async(&mut conn),
            )
            .await?;
        tracing::info!(redis = %self.inner.url, prefix = self.prefix(), credentials, records, "upgraded the prefix to sealing format 2 (values bound to their version and this store)");
        Ok(())
    }

    async fn upgrade_credentials(&self, store: StoreId) -> Result<usize, StoreError> {
        let mut conn = self.conn();
        let names: Vec<String> = self
            .timed(
                "listing credentials",
                ::redis::cmd("SMEMBERS")
                    .arg(self.inner.keys.index())
                    .query_async(&mut conn),
            )
            .await?;
        let mut upgraded = 0;
        for name in names {
            let Ok(name) = CredentialName::new(&name) else {
                continue;
            };
            let values: Vec<Option<Vec<u8>>> = self
                .timed(
                    "reading a credential",
                    ::redis::cmd("HMGET")
                        .arg(self.inner.keys.state(&name))
                        .arg(&CREDENTIAL_FIELDS[..])
                        .query_async(&mut conn),
                )
                .await?;
            let text = |i: usize| {
                values
                    .get(i)
                    .cloned()
                    .flatten()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
            };
            let (Some(generation), Some(Some(sealed))) = (text(0), values.get(1).cloned()) else {
                continue;
            };
            if !is_v1(&sealed) {
                continue;
            }
            let generation = parse_u64(&name, "generation", &generation)?;
            let status = CredentialStatus {
                state: match text(3) {
                    None => CredentialState::Valid,
                    Some(state) => CredentialState::parse(&state)
                        .ok_or_else(|| error::corrupt(&name, "unknown state"))?,
                },
                last_refresh_at: parse_millis(&name, "last_refresh_at", text(4).as_deref())?,
                failures: text(5)
                    .as_deref()
                    .unwrap_or("0")
                    .parse()
                    .map_err(|_| error::corrupt(&name, "failures is not a number"))?,
                reason: text(6),
                next_attempt_at: parse_millis(&name, "next_attempt_at", text(7).as_deref())?,
            };
            let expires_at = parse_millis(&name, "expires_at", text(2).as_deref())?
                .unwrap_or(Timestamp::from_millis(0));
            let keyring = &self.inner.keyring;
            let name = &name;
            let fail = |kind| move |e: crate::SealError| e.into_store_error(kind, name);
            let plaintext = keyring
                .open_v1(CREDENTIAL_KIND, name, &sealed)
                .map_err(fail(CREDENTIAL_KIND))?;
            let resealed = keyring
                .seal(
                    &Binding::new(store, CREDENTIAL_KIND, name, generation),
                    &plaintext,
                )
                .map_err(fail(CREDENTIAL_KIND))?;
            let sealed_status = keyring
                .seal(
                    &Binding::new(store, CREDENTIAL_STATUS_KIND, name, generation),
                    &encode_status(&status, expires_at),
                )
                .map_err(fail(CREDENTIAL_STATUS_KIND))?;
            upgraded += self
                .reseal(
                    self.inner.keys.state(name),
                    &sealed,
                    &resealed,
                    &sealed_status,
                )
                .await?;
        }
        Ok(upgraded)
    }

    async fn upgrade_records(&self, store: StoreId) -> Result<usize, StoreError> {
        let mut upgraded = 0;
        for kind in FORMAT_1_KINDS {
            for part in self.parts(kind).await? {
                let mut keys = vec![part.clone()];
                let items = self
                    .valid_members(
                        "listing records",
                        self.inner.keys.record_items(kind, part.part()),
                    )
                    .await?;
                for item in items {
                    if let Ok(key) = RecordKey::from_segments(part.part(), Some(&item)) {
                        keys.push(key);
                    }
                }
                let rows = self.read_records(kind, &keys).await?;
                for (key, (version, sealed, _)) in keys.into_iter().zip(rows) {
                    let (Some(version), Some(sealed)) = (version, sealed) else {
                        continue;
                    };
                    if !is_v1(&sealed) {
                        continue;
                    }
                    let name = key.to_string();
                    let version = parse_u64(&name, "version", &version)?;
                    let fail = |e: crate::SealError| e.into_store_error(kind.as_str(), &name);
                    let plaintext = self
                        .inner
                        .keyring
                        .open_v1(kind.as_str(), &name, &sealed)
                        .map_err(fail)?;
                    let resealed = self
                        .inner
                        .keyring
                        .seal(
                            &Binding::new(store, kind.as_str(), &name, version),
                            &plaintext,
                        )
                        .map_err(fail)?;
                    upgraded += self
                        .reseal(self.inner.keys.record(kind, &key), &sealed, &resealed, &[])
                        .await?;
                }
            }
        }
        Ok(upgraded)
    }

    /// Replaces `old` by `new` in hash `key` (and sets `sealed_status` unless empty) if `old`
    /// is still there; 1 when replaced.
    async fn reseal(
        &self,
        key: String,
        old: &[u8],
        new: &[u8],
        sealed_status: &[u8],
    ) -> Result<usize, StoreError> {
        let mut conn = self.conn();
        let mut call = self.inner.scripts.reseal.prepare_invoke();
        call.key(key).arg(old).arg(new).arg(sealed_status);
        let replaced: i64 = self
            .timed("re-sealing a value", call.invoke_async(&mut conn))
            .await?;
        Ok(usize::from(replaced == 1))
    }
}
