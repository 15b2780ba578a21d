//! One type per kind of secret, so a refresh token cannot be passed where an access token is
//! expected.
//!
//! Each wraps a [`SecretString`]: `Debug` prints `[redacted]`, the memory is zeroized on drop,
//! and the value is read only through [`ExposeSecret::expose_secret`].
//!
//! ```
//! use authkeeper_core::secret::{AccessToken, RefreshToken};
//! use authkeeper_core::ExposeSecret as _;
//!
//! let access = AccessToken::from("at-123");
//! let refresh = RefreshToken::from("rt-456");
//! assert_eq!(access.expose_secret(), "at-123");
//! assert_eq!(format!("{refresh:?}"), "RefreshToken([redacted])");
//! ```

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

macro_rules! secret_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone)]
        pub struct $name(SecretString);

        impl $name {
            /// Wraps a secret value.
            pub fn new(value: impl Into<String>) -> Self {
                $name(SecretString::from(value.into()))
            }

            /// The value as a general [`SecretString`] (e.g. to hand to an HTTP form).
            pub fn as_secret_string(&self) -> &SecretString {
                &self.0
            }
        }

        impl ExposeSecret<str> for $name {
            fn expose_secret(&self) -> &str {
                self.0.expose_secret()
            }
        }

        impl From<String> for $name {
            fn from(value: String) -> Self {
                $name::new(value)
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                $name::new(value)
            }
        }

        impl From<SecretString> for $name {
            fn from(value: SecretString) -> Self {
                $name(value)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "([redacted])"))
            }
        }
    };
}

secret_type!(
    /// A bearer access token, sent to APIs.
    AccessToken
);
secret_type!(
    /// A refresh token, sent only to the token endpoint.
    RefreshToken
);
secret_type!(
    /// An OpenID Connect ID token.
    IdToken
);
secret_type!(
    /// An OAuth client secret.
    ClientSecret
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let secrets = [
            format!("{:?}", AccessToken::from("s3cr3t-a")),
            format!("{:?}", RefreshToken::from("s3cr3t-r")),
            format!("{:?}", IdToken::from("s3cr3t-i")),
            format!("{:?}", ClientSecret::from("s3cr3t-c")),
        ];
        for shown in &secrets {
            assert!(!shown.contains("s3cr3t"), "{shown}");
            assert!(shown.ends_with("([redacted])"), "{shown}");
        }
        assert_eq!(
            RefreshToken::from("v".to_owned()).expose_secret(),
            "v",
            "the value is readable on purpose"
        );
    }
}
