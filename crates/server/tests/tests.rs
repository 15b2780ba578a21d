//! Integration tests of the broker: one binary, one module per area. Each test starts the
//! real broker in-process on a loopback port (or a Unix socket) with the mock IdP.

mod proxy;
mod server;

/// A credential name the tests know to be valid.
pub fn cred(name: impl AsRef<str>) -> authkeeper_core::CredentialName {
    authkeeper_core::CredentialName::new(name.as_ref()).expect("valid credential name")
}
