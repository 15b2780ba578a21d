//! Integration tests of authkeeper-login (one test binary).

mod login;
mod reauth;

/// A credential name the tests know to be valid.
pub fn cred(name: impl AsRef<str>) -> authkeeper_core::CredentialName {
    authkeeper_core::CredentialName::new(name.as_ref()).expect("valid credential name")
}
