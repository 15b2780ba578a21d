//! Sealing: authenticated encryption of stored secrets with XChaCha20-Poly1305.
//!
//! A sealed value is `b"AKS1"` ‖ key id (8 bytes) ‖ nonce (24 random bytes) ‖ ciphertext+tag.
//! The key id is the first 8 bytes of SHA-256 of the key, so a [`Keyring`] can pick the right key
//! after a rotation. The associated data binds every value to its record kind and name
//! ([`associated_data`]): a value copied to another record does not open.

use std::fmt;

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore as _;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use authkeeper_core::StoreError;

/// The first bytes of every sealed value (format version 1).
pub const MAGIC: &[u8; 4] = b"AKS1";
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

/// The associated data of a sealed value: `b"authkeeper\0" ‖ kind ‖ b"\0" ‖ name`.
pub fn associated_data(kind: &str, name: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(12 + kind.len() + name.len());
    aad.extend_from_slice(b"authkeeper\0");
    aad.extend_from_slice(kind.as_bytes());
    aad.push(0);
    aad.extend_from_slice(name.as_bytes());
    aad
}

/// The key id in a sealed value's header.
pub fn sealed_key_id(sealed: &[u8]) -> Result<KeyId, SealError> {
    if sealed.len() < HEADER_LEN + TAG_LEN || &sealed[..MAGIC.len()] != MAGIC {
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

    /// Seals `plaintext` with the primary key, bound to `kind` and `name`.
    pub fn seal(&self, kind: &str, name: &str, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let aad = associated_data(kind, name);
        let ciphertext = self
            .primary
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| SealError::Encrypt)?;
        let mut sealed = Vec::with_capacity(HEADER_LEN + ciphertext.len());
        sealed.extend_from_slice(MAGIC);
        sealed.extend_from_slice(self.primary.id().as_bytes());
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        Ok(sealed)
    }

    /// Opens a value sealed for `kind` and `name` with whichever key its id names.
    pub fn open(
        &self,
        kind: &str,
        name: &str,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let id = sealed_key_id(sealed)?;
        let key = self.key(id).ok_or(SealError::UnknownKeyId(id))?;
        let nonce = XNonce::from_slice(&sealed[MAGIC.len() + KEY_ID_LEN..HEADER_LEN]);
        let aad = associated_data(kind, name);
        key.cipher()
            .decrypt(
                nonce,
                Payload {
                    msg: &sealed[HEADER_LEN..],
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| SealError::Authentication)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SealKey {
        SealKey::new(Zeroizing::new([byte; KEY_LEN]))
    }

    #[test]
    fn round_trip_and_format() {
        let ring = Keyring::new(key(1));
        let sealed = ring.seal("credential", "crm", b"secret").unwrap();
        assert_eq!(&sealed[..4], MAGIC);
        assert_eq!(sealed.len(), HEADER_LEN + 6 + TAG_LEN);
        assert_eq!(sealed_key_id(&sealed).unwrap(), key(1).id());
        assert_eq!(
            ring.open("credential", "crm", &sealed).unwrap().as_slice(),
            b"secret"
        );
    }

    #[test]
    fn associated_data_binds_kind_and_name() {
        let ring = Keyring::new(key(1));
        let sealed = ring.seal("credential", "crm", b"secret").unwrap();
        assert_eq!(
            ring.open("credential", "crm2", &sealed),
            Err(SealError::Authentication)
        );
        assert_eq!(
            ring.open("session", "crm", &sealed),
            Err(SealError::Authentication)
        );
    }

    #[test]
    fn wrong_key_and_tampering_are_reported_without_secrets() {
        let sealed = Keyring::new(key(1))
            .seal("credential", "crm", b"secret")
            .unwrap();
        let other = Keyring::new(key(2));
        let err = other.open("credential", "crm", &sealed).unwrap_err();
        assert!(matches!(err, SealError::UnknownKeyId(_)));
        assert!(err.to_string().contains("wrong key?"));

        let ring = Keyring::new(key(1));
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(
            ring.open("credential", "crm", &tampered),
            Err(SealError::Authentication)
        );
        assert_eq!(
            ring.open("credential", "crm", &sealed[..10]),
            Err(SealError::Malformed)
        );
    }

    #[test]
    fn previous_keys_open_old_values_and_primary_seals() {
        let old = Keyring::new(key(1))
            .seal("credential", "crm", b"old")
            .unwrap();
        let ring = Keyring::with_previous(key(2), vec![key(1), key(2), key(1)]);
        assert_eq!(ring.previous().len(), 1);
        assert_eq!(
            ring.open("credential", "crm", &old).unwrap().as_slice(),
            b"old"
        );
        let new = ring.seal("credential", "crm", b"new").unwrap();
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
        let valid = ring.seal("credential", "x", b"payload").unwrap();
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
            assert!(ring.open("credential", "x", &bytes).is_err());
        }
    }
}
