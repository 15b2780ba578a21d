//! Integration tests of authkeeper-store (one test binary; each test uses its own temp dir).

mod common;
mod conformance;
mod corruption;
mod encryption;
mod keys;
mod leases;
mod rekey;
