//! Sealing: authenticated encryption of stored secrets with XChaCha20-Poly1305.
//!
//! A sealed value is `b"AKS2"` ‖ key id (8 bytes) ‖ nonce (24 random bytes) ‖ ciphertext+tag.
//! The key id is the first 8 bytes of SHA-256 of the key, so a [`Keyring`] can pick the right key
//! after a rotation. The associated data ([`Binding`]) binds every value to the store it was
//! written to ([`StoreId`]), its record kind, its name and its version (a credential's
//! generation, a record's version): a value copied to another record, another store, or put
//! back over a newer version of its own record does not open.
//!
//! Format 1 (`b"AKS1"`, bound to kind and name only) is opened only by the one-time upgrade of
//! a store ([`Keyring::open_v1`]); once a store is upgraded, a format-1 value in it is refused.

use std::fmt;

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore as _;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use authkeeper_core::StoreError;

/// The first bytes of every sealed value (format 2).
pub const MAGIC: &[u8; 4] = b"AKS2";
/// The first bytes of a format-1 value (bound to kind and name only).
pub const MAGIC_V1: &[u8; 4] = b"AKS1";
/// The length of a key in bytes.
pub const KEY_LEN: usize = 32;
/// The length of a key id in bytes.
pub const KEY_ID_LEN: usize = 8;
/// The length of the random nonce in bytes.
pub const NONCE_LEN: usize = 24;
/// The length of the authentication tag in bytes.
pub const TAG_LEN: usize = 16;
/// The length of the header before the ciphertext.
pub const HEADER_LEN: usize = MAGIC.len() + KEY_ID_LEN + NONCE_LEN;

/// Identifies a key without revealing it: the first 8 bytes of its SHA-256.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId([u8; KEY_ID_LEN]);

impl KeyId {
    /// The raw bytes of the id.
    pub fn as_bytes(&self) -> &[u8; KEY_ID_LEN] {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// A 32-byte sealing key, zeroized on drop. `Debug` shows only its [`KeyId`].
#[derive(Clone)]
pub struct SealKey {
    bytes: Zeroizing<[u8; KEY_LEN]>,
    id: KeyId,
}

impl SealKey {
    /// Wraps raw key bytes.
    pub fn new(bytes: Zeroizing<[u8; KEY_LEN]>) -> Self {
        let digest = Sha256::digest(bytes.as_slice());
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        SealKey {
            bytes,
            id: KeyId(id),
        }
    }

    /// A fresh random key from the operating system's generator.
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        rand::rngs::OsRng.fill_bytes(bytes.as_mut_slice());
        SealKey::new(bytes)
    }

    /// Builds a key from exactly [`KEY_LEN`] bytes; `None` for any other length.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != KEY_LEN {
            return None;
        }
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        key.copy_from_slice(bytes);
        Some(SealKey::new(key))
    }

    /// The key's id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The key as standard base64 (the key file and `AUTHKEEPER_KEY` format).
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(self.bytes.as_slice()))
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(self.bytes.as_slice().into())
    }
}

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// The length of a [`StoreId`] in bytes.
pub const STORE_ID_LEN: usize = 16;

/// A store's identity: random bytes chosen when the store is created (or upgraded to sealing
/// format 2) and bound into every value sealed in it. Not secret.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct StoreId([u8; STORE_ID_LEN]);

impl StoreId {
    /// A fresh random id.
    pub fn generate() -> Self {
        let mut id = [0u8; STORE_ID_LEN];
        rand::rngs::OsRng.fill_bytes(&mut id);
        StoreId(id)
    }

    /// An id from exactly [`STORE_ID_LEN`] bytes; `None` for any other length.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(StoreId)
    }

    /// An id from its bytes.
    pub const fn from_bytes(bytes: [u8; STORE_ID_LEN]) -> Self {
        StoreId(bytes)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; STORE_ID_LEN] {
        &self.0
    }
}

impl fmt::Display for StoreId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for StoreId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreId({self})")
    }
}

/// What a sealed value is bound to: its associated data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding<'a> {
    /// The store the value lives in.
    pub store: StoreId,
    /// The record kind (`credential`, `credential status`, `session`, ...).
    pub kind: &'a str,
    /// The record's name (a credential name, a record key `PART[/ITEM]`).
    pub name: &'a str,
    /// The version the value is written as: a credential's generation, a record's version.
    pub version: u64,
}

impl<'a> Binding<'a> {
    /// A binding of `kind`/`name` at `version` in `store`.
    pub fn new(store: StoreId, kind: &'a str, name: &'a str, version: u64) -> Self {
        Binding {
            store,
            kind,
            name,
            version,
        }
    }

    /// `b"authkeeper\0v2\0"` ‖ store id ‖ version (8 bytes, big-endian) ‖ kind ‖ `0` ‖ name.
    /// Fixed-size fields come first and kinds never contain `0`, so no two bindings share
    /// their bytes.
    fn associated_data(&self) -> Vec<u8> {
        let mut aad =
            Vec::with_capacity(14 + STORE_ID_LEN + 8 + self.kind.len() + 1 + self.name.len());
        aad.extend_from_slice(b"authkeeper\0v2\0");
        aad.extend_from_slice(self.store.as_bytes());
        aad.extend_from_slice(&self.version.to_be_bytes());
        aad.extend_from_slice(self.kind.as_bytes());
        aad.push(0);
        aad.extend_from_slice(self.name.as_bytes());
        aad
    }
}

/// Why a sealed value could not be opened. Never contains key or plaintext bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The value does not start with [`MAGIC`] or is too short to be sealed.
    #[error("not a sealed value (unknown format or truncated)")]
    Malformed,
    /// No key in the keyring has the value's key id.
    #[error("no key with id {0} (wrong key?)")]
    UnknownKeyId(KeyId),
    /// The key id matched but the tag did not verify.
    #[error("authentication failed (wrong key or tampered data)")]
    Authentication,
    /// A format-1 value in a store upgraded to format 2: put back from an old backup, or
    /// written by an older authkeeper still running against the store.
    #[error(
        "sealed in format 1, which this store no longer accepts (restored from an old backup, or written by an older authkeeper)"
    )]
    Outdated,
    /// Encryption failed (only possible for absurdly large values).
    #[error("encryption failed")]
    Encrypt,
}

impl SealError {
    /// The [`StoreError::Decrypt`] for a record of `kind` named `name`.
    pub fn into_store_error(self, kind: &'static str, name: &str) -> StoreError {
        StoreError::Decrypt {
            kind,
            name: name.to_owned(),
            reason: self.to_string(),
        }
    }
}

/// The record kind of a sealed token set (part of its associated data).
pub const CREDENTIAL_KIND: &str = "credential";
/// The record kind of the value that checks the key when a store is opened.
pub const KEY_CHECK_KIND: &str = "key check";
/// The name the key-check value is sealed under.
pub const KEY_CHECK_NAME: &str = "store";
/// The plaintext of the key-check value.
pub const KEY_CHECK_PLAINTEXT: &[u8] = b"authkeeper key check v1";

/// The record kind of a credential's sealed status (its state and token expiry).
pub const CREDENTIAL_STATUS_KIND: &str = "credential status";

/// The associated data of a format-1 value: `b"authkeeper\0" ‖ kind ‖ b"\0" ‖ name`.
fn associated_data_v1(kind: &str, name: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(12 + kind.len() + name.len());
    aad.extend_from_slice(b"authkeeper\0");
    aad.extend_from_slice(kind.as_bytes());
    aad.push(0);
    aad.extend_from_slice(name.as_bytes());
    aad
}

/// Whether `sealed` is a format-1 value (to upgrade).
pub fn is_v1(sealed: &[u8]) -> bool {
    sealed.starts_with(MAGIC_V1)
}

/// The key id in a sealed value's header (either format).
pub fn sealed_key_id(sealed: &[u8]) -> Result<KeyId, SealError> {
    if sealed.len() < HEADER_LEN + TAG_LEN
        || !(sealed.starts_with(MAGIC) || sealed.starts_with(MAGIC_V1))
    {
        return Err(SealError::Malformed);
    }
    let mut id = [0u8; KEY_ID_LEN];
    id.copy_from_slice(&sealed[MAGIC.len()..MAGIC.len() + KEY_ID_LEN]);
    Ok(KeyId(id))
}

/// The keys of a store: a primary key that seals, and previous keys that still open old values.
#[derive(Clone, Debug)]
pub struct Keyring {
    primary: SealKey,
    previous: Vec<SealKey>,
}

impl Keyring {
    /// A keyring with one key.
    pub fn new(primary: SealKey) -> Self {
        Keyring {
            primary,
            previous: Vec::new(),
        }
    }

    /// A keyring with a primary key and previous keys accepted for opening (duplicates of the
    /// primary are dropped).
    pub fn with_previous(primary: SealKey, previous: Vec<SealKey>) -> Self {
        let mut unique: Vec<SealKey> = Vec::with_capacity(previous.len());
        for key in previous {
            if key.id() != primary.id() && unique.iter().all(|k| k.id() != key.id()) {
                unique.push(key);
            }
        }
        Keyring {
            primary,
            previous: unique,
        }
    }

    /// The key that seals new values.
    pub fn primary(&self) -> &SealKey {
        &self.primary
    }

    /// Older keys, only used to open values.
    pub fn previous(&self) -> &[SealKey] {
        &self.previous
    }

    /// The key with id `id`, if the keyring has it.
    pub fn key(&self, id: KeyId) -> Option<&SealKey> {
        std::iter::once(&self.primary)
            .chain(self.previous.iter())
            .find(|key| key.id() == id)
    }

    /// Seals `plaintext` with the primary key, bound to `binding`.
    pub fn seal(&self, binding: &Binding<'_>, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        self.encrypt(MAGIC, &binding.associated_data(), plaintext)
    }

    /// Opens a value sealed for `binding` with whichever key its id names. A format-1 value is
    /// [`SealError::Outdated`].
    pub fn open(
        &self,
        binding: &Binding<'_>,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let id = sealed_key_id(sealed)?;
        if is_v1(sealed) {
            return Err(SealError::Outdated);
        }
        self.decrypt(id, sealed, &binding.associated_data())
    }

    /// Opens a format-1 value sealed for `kind` and `name`: only for upgrading a store to
    /// format 2 (re-seal what this returns with [`Keyring::seal`]).
    pub fn open_v1(
        &self,
        kind: &str,
        name: &str,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let id = sealed_key_id(sealed)?;
        if !is_v1(sealed) {
            return Err(SealError::Malformed);
        }
        self.decrypt(id, sealed, &associated_data_v1(kind, name))
    }

    fn decrypt(
        &self,
        id: KeyId,
        sealed: &[u8],
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let key = self.key(id).ok_or(SealError::UnknownKeyId(id))?;
        let nonce = XNonce::from_slice(&sealed[MAGIC.len() + KEY_ID_LEN..HEADER_LEN]);
        key.cipher()
            .decrypt(
                nonce,
                Payload {
                    msg: &sealed[HEADER_LEN..],
                    aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| SealError::Authentication)
    }

    /// Seals `plaintext` in format 1 (tests of the upgrade path only).
    #[doc(hidden)]
    pub fn seal_v1(&self, kind: &str, name: &str, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        self.encrypt(MAGIC_V1, &associated_data_v1(kind, name), plaintext)
    }

    fn encrypt(&self, magic: &[u8; 4], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ciphertext = self
            .primary
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| SealError::Encrypt)?;
        let mut sealed = Vec::with_capacity(HEADER_LEN + ciphertext.len());
        sealed.extend_from_slice(magic);
        sealed.extend_from_slice(self.primary.id().as_bytes());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        Ok(sealed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SealKey {
        SealKey::new(Zeroizing::new([byte; KEY_LEN]))
    }

    const STORE: StoreId = StoreId::from_bytes([9; STORE_ID_LEN]);

    fn bound<'a>(kind: &'a str, name: &'a str, version: u64) -> Binding<'a> {
        Binding::new(STORE, kind, name, version)
    }

    #[test]
    fn round_trip_and_format() {
        let ring = Keyring::new(key(1));
        let sealed = ring
            .seal(&bound("credential", "crm", 1), b"secret")
            .unwrap();
        assert_eq!(&sealed[..4], MAGIC);
        assert_eq!(sealed.len(), HEADER_LEN + 6 + TAG_LEN);
        assert_eq!(sealed_key_id(&sealed).unwrap(), key(1).id());
        assert_eq!(
            ring.open(&bound("credential", "crm", 1), &sealed)
                .unwrap()
                .as_slice(),
            b"secret"
        );
    }

    #[test]
    fn associated_data_binds_store_kind_name_and_version() {
        let ring = Keyring::new(key(1));
        let sealed = ring
            .seal(&bound("credential", "crm", 7), b"secret")
            .unwrap();
        for other in [
            bound("credential", "crm2", 7),
            bound("session", "crm", 7),
            bound("credential", "crm", 6),
            bound("credential", "crm", 8),
            Binding::new(StoreId([8; STORE_ID_LEN]), "credential", "crm", 7),
        ] {
            assert_eq!(
                ring.open(&other, &sealed),
                Err(SealError::Authentication),
                "{other:?}"
            );
        }
    }

    #[test]
    fn format_1_opens_only_for_the_upgrade() {
        let ring = Keyring::new(key(1));
        let old = ring.seal_v1("credential", "crm", b"old").unwrap();
        assert!(is_v1(&old));
        assert_eq!(
            ring.open(&bound("credential", "crm", 1), &old),
            Err(SealError::Outdated)
        );
        assert_eq!(
            ring.open_v1("credential", "crm", &old).unwrap().as_slice(),
            b"old"
        );
        assert_eq!(
            ring.open_v1("credential", "other", &old),
            Err(SealError::Authentication)
        );
        let new = ring.seal(&bound("credential", "crm", 1), b"new").unwrap();
        assert_eq!(
            ring.open_v1("credential", "crm", &new),
            Err(SealError::Malformed)
        );
    }

    #[test]
    fn wrong_key_and_tampering_are_reported_without_secrets() {
        let b = bound("credential", "crm", 1);
        let sealed = Keyring::new(key(1)).seal(&b, b"secret").unwrap();
        let other = Keyring::new(key(2));
        let err = other.open(&b, &sealed).unwrap_err();
        assert!(matches!(err, SealError::UnknownKeyId(_)));
        assert!(err.to_string().contains("wrong key?"));

        let ring = Keyring::new(key(1));
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(ring.open(&b, &tampered), Err(SealError::Authentication));
        assert_eq!(ring.open(&b, &sealed[..10]), Err(SealError::Malformed));
    }

    #[test]
    fn previous_keys_open_old_values_and_primary_seals() {
        let b = bound("credential", "crm", 1);
        let old = Keyring::new(key(1)).seal(&b, b"old").unwrap();
        let ring = Keyring::with_previous(key(2), vec![key(1), key(2), key(1)]);
        assert_eq!(ring.previous().len(), 1);
        assert_eq!(ring.open(&b, &old).unwrap().as_slice(), b"old");
        let new = ring.seal(&b, b"new").unwrap();
        assert_eq!(sealed_key_id(&new).unwrap(), key(2).id());
    }

    #[test]
    fn debug_shows_only_the_key_id() {
        let k = key(0xAB);
        let text = format!("{k:?} {:?}", Keyring::new(k.clone()));
        assert!(text.contains(&k.id().to_string()));
        assert!(!text.contains("171,"), "{text}");
        assert!(!text.contains(k.to_base64().as_str()));
    }

    #[test]
    fn random_bytes_never_panic() {
        let ring = Keyring::new(key(7));
        let b = bound("credential", "x", 1);
        let valid = ring.seal(&b, b"payload").unwrap();
        let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..5000 {
            let len = (next() % 120) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // Half the time, start from a real header so the later checks are exercised too.
            if round % 2 == 0 {
                let keep = len.min(valid.len());
                bytes[..keep].copy_from_slice(&valid[..keep]);
                if len > 0 {
                    let at = (next() as usize) % len;
                    bytes[at] ^= (next() as u8) | 1;
                }
            }
            assert!(ring.open(&b, &bytes).is_err());
            assert!(ring.open_v1("credential", "x", &bytes).is_err());
        }
    }
}
