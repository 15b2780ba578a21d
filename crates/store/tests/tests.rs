//! Integration tests of authkeeper-store (one test binary; each test uses its own temp dir).

mod binding;
mod common;
mod conformance;
mod corruption;
mod encryption;
mod keys;
mod leases;
mod records;
#[cfg(feature = "redis")]
mod redis_binding;
#[cfg(feature = "redis")]
mod redis_conformance;
#[cfg(feature = "redis")]
mod redis_leases;
#[cfg(feature = "redis")]
mod redis_records;
#[cfg(feature = "redis")]
mod redis_server;
#[cfg(feature = "redis")]
mod redis_store;
mod rekey;

/// A credential name the tests know to be valid.
pub fn cred(name: impl AsRef<str>) -> authkeeper_core::CredentialName {
    authkeeper_core::CredentialName::new(name.as_ref()).expect("valid credential name")
}
