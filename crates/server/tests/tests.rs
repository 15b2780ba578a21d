//! Integration tests of the broker: one binary, one module per area. Each test starts the
//! real broker in-process on a loopback port (or a Unix socket) with the mock IdP.

mod proxy;
mod server;
