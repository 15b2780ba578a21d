//! Integration tests of the `authkeeper` command (one test binary): real OS processes, real
//! sockets, short token lifetimes.

mod bad_input;
mod broker_oidc;
mod commands;
mod connections;
mod cross_process;
mod demo;
mod egress;
mod exec;
mod login;
mod oidc_smoke;
#[allow(dead_code)]
#[path = "../../store/tests/redis_server.rs"]
mod redis_server;
mod replicas;
mod secrets;
mod security;
mod session_credential;
mod sessions;
mod support;
