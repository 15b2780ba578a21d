//! `Keyring::open` (format 2) and `Keyring::open_v1` on arbitrary bytes with a fixed key, and
//! seal → open round trips bound to store, kind, name and version.
#![no_main]

use authkeeper_store::seal::{HEADER_LEN, MAGIC, MAGIC_V1, TAG_LEN};
use authkeeper_store::{Binding, Keyring, SealError, SealKey, StoreId};
use libfuzzer_sys::fuzz_target;

const STORE: StoreId = StoreId::from_bytes([3; 16]);

fn keyrings() -> (Keyring, Keyring) {
    let old = SealKey::from_slice(&[7u8; 32]).unwrap();
    let new = SealKey::from_slice(&[9u8; 32]).unwrap();
    let before = Keyring::new(old.clone());
    let rotated = Keyring::with_previous(new, vec![old]);
    (before, rotated)
}

fuzz_target!(|data: &[u8]| {
    let (keyring, rotated) = keyrings();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let fixed = Binding::new(STORE, "credential", "fuzz", 1);
    match mode % 3 {
        // Raw bytes, in both formats.
        0 => {
            match keyring.open(&fixed, rest) {
                Ok(_) => panic!("arbitrary bytes opened"),
                Err(err) => {
                    let _ = err.to_string();
                    if rest.len() < HEADER_LEN + TAG_LEN
                        || !(rest.starts_with(MAGIC) || rest.starts_with(MAGIC_V1))
                    {
                        assert_eq!(err, SealError::Malformed);
                    } else if rest.starts_with(MAGIC_V1) {
                        assert_eq!(err, SealError::Outdated);
                    }
                }
            }
            assert!(keyring.open_v1("credential", "fuzz", rest).is_err());
        }
        // A well-formed header with the right key id: decryption itself is reached, and forged
        // ciphertext must fail authentication (or be too short).
        1 => {
            let mut forged = Vec::with_capacity(HEADER_LEN + rest.len());
            forged.extend_from_slice(MAGIC);
            forged.extend_from_slice(keyring.primary().id().as_bytes());
            forged.extend_from_slice(rest);
            let err = keyring.open(&fixed, &forged).expect_err("forgery opened");
            if forged.len() < HEADER_LEN + TAG_LEN {
                assert_eq!(err, SealError::Malformed);
            } else {
                assert_eq!(err, SealError::Authentication);
            }
        }
        // Round trip: [name length] [version byte] [name] [plaintext...].
        _ => {
            let (name_len, rest) = rest
                .split_first()
                .map_or((0, rest), |(n, r)| (*n as usize, r));
            let (version, rest) = rest
                .split_first()
                .map_or((1, rest), |(v, r)| (u64::from(*v), r));
            let name_len = name_len.min(rest.len());
            let name = String::from_utf8_lossy(&rest[..name_len]);
            let plaintext = &rest[name_len..];
            let binding = Binding::new(STORE, "credential", &name, version);
            let sealed = keyring.seal(&binding, plaintext).expect("seal");
            assert_eq!(sealed.len(), HEADER_LEN + plaintext.len() + TAG_LEN);
            let opened = keyring.open(&binding, &sealed).expect("open own seal");
            assert_eq!(&opened[..], plaintext);
            // After a rotation the old key still opens it.
            let opened = rotated.open(&binding, &sealed).expect("open after rotation");
            assert_eq!(&opened[..], plaintext);
            // Bound to store, kind, name and version.
            let other_name = format!("{name}x");
            for other in [
                Binding::new(STORE, "session", &name, version),
                Binding::new(STORE, "credential", &other_name, version),
                Binding::new(STORE, "credential", &name, version + 1),
                Binding::new(StoreId::from_bytes([4; 16]), "credential", &name, version),
            ] {
                assert!(keyring.open(&other, &sealed).is_err(), "{other:?} opened");
            }
            assert!(keyring.open_v1("credential", &name, &sealed).is_err());
            // Any single flipped bit fails.
            let at = plaintext.len().wrapping_mul(31) % sealed.len();
            let mut tampered = sealed.clone();
            tampered[at] ^= 1 << (name_len % 8);
            assert!(
                keyring.open(&binding, &tampered).is_err(),
                "tampered byte {at} opened"
            );
            // A keyring without the key says so.
            let stranger = Keyring::new(SealKey::from_slice(&[1u8; 32]).unwrap());
            assert!(matches!(
                stranger.open(&binding, &sealed),
                Err(SealError::UnknownKeyId(_))
            ));
            // Format 1 round trip (the upgrade path), never opened as format 2.
            let v1 = keyring.seal_v1("credential", &name, plaintext).expect("seal v1");
            let opened = keyring.open_v1("credential", &name, &v1).expect("open v1");
            assert_eq!(&opened[..], plaintext);
            assert_eq!(keyring.open(&binding, &v1), Err(SealError::Outdated));
        }
    }
});
