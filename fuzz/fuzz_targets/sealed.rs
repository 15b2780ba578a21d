//! `Keyring::open` on arbitrary bytes with a fixed key, and seal → open round trips.
#![no_main]

use authkeeper_store::seal::{HEADER_LEN, MAGIC, TAG_LEN};
use authkeeper_store::{Keyring, SealError, SealKey};
use libfuzzer_sys::fuzz_target;

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
    match mode % 3 {
        // Raw bytes.
        0 => match keyring.open("token_set", "fuzz", rest) {
            Ok(_) => panic!("arbitrary bytes opened"),
            Err(err) => {
                let _ = err.to_string();
                if rest.len() < HEADER_LEN + TAG_LEN || !rest.starts_with(MAGIC) {
                    assert_eq!(err, SealError::Malformed);
                }
            }
        },
        // A well-formed header with the right key id: decryption itself is reached, and forged
        // ciphertext must fail authentication (or be too short).
        1 => {
            let mut forged = Vec::with_capacity(HEADER_LEN + rest.len());
            forged.extend_from_slice(MAGIC);
            forged.extend_from_slice(keyring.primary().id().as_bytes());
            forged.extend_from_slice(rest);
            let err = keyring
                .open("token_set", "fuzz", &forged)
                .expect_err("forgery opened");
            if forged.len() < HEADER_LEN + TAG_LEN {
                assert_eq!(err, SealError::Malformed);
            } else {
                assert_eq!(err, SealError::Authentication);
            }
        }
        // Round trip: [name length] [name] [plaintext...].
        _ => {
            let (name_len, rest) = rest
                .split_first()
                .map_or((0, rest), |(n, r)| (*n as usize, r));
            let name_len = name_len.min(rest.len());
            let name = String::from_utf8_lossy(&rest[..name_len]);
            let plaintext = &rest[name_len..];
            let sealed = keyring.seal("token_set", &name, plaintext).expect("seal");
            assert_eq!(sealed.len(), HEADER_LEN + plaintext.len() + TAG_LEN);
            let opened = keyring
                .open("token_set", &name, &sealed)
                .expect("open own seal");
            assert_eq!(&opened[..], plaintext);
            // After a rotation the old key still opens it.
            let opened = rotated
                .open("token_set", &name, &sealed)
                .expect("open after rotation");
            assert_eq!(&opened[..], plaintext);
            // Bound to kind and name.
            assert!(keyring.open("client_secret", &name, &sealed).is_err());
            assert!(
                keyring
                    .open("token_set", &format!("{name}x"), &sealed)
                    .is_err()
            );
            // Any single flipped bit fails.
            let at = plaintext.len().wrapping_mul(31) % sealed.len();
            let mut tampered = sealed.clone();
            tampered[at] ^= 1 << (name_len % 8);
            assert!(
                keyring.open("token_set", &name, &tampered).is_err(),
                "tampered byte {at} opened"
            );
            // A keyring without the key says so.
            let stranger = Keyring::new(SealKey::from_slice(&[1u8; 32]).unwrap());
            assert!(matches!(
                stranger.open("token_set", &name, &sealed),
                Err(SealError::UnknownKeyId(_))
            ));
        }
    }
});
