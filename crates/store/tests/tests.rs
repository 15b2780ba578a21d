//! Integration tests of authkeeper-store (one test binary; each test uses its own temp dir).

mod common;
mod conformance;
mod corruption;
mod encryption;
mod keys;
mod leases;
#[cfg(feature = "redis")]
mod redis_conformance;
#[cfg(feature = "redis")]
mod redis_server;
#[cfg(feature = "redis")]
mod redis_sessions;
#[cfg(feature = "redis")]
mod redis_store;
mod rekey;
mod sessions;
