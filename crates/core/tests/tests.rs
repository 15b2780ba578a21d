//! Integration tests of authkeeper-core (one test binary).

mod fixtures;
mod keeper;
