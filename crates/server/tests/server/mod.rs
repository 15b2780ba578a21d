//! Broker integration tests.

mod common;

mod bad_input;
mod connections;
mod keys;
mod listeners;
mod listing;
mod load;
mod openapi;
mod reauth;
mod sessions;
mod shutdown;
