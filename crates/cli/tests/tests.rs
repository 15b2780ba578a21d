//! Integration tests of the `authkeeper` command (one test binary): real OS processes, real
//! sockets, short token lifetimes.

mod bad_input;
mod broker_oidc;
mod commands;
mod cross_process;
mod demo;
mod exec;
mod login;
mod oidc_smoke;
mod secrets;
mod support;
