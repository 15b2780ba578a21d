//! Integration tests of authkeeper-session (one binary; modules below).
mod browser_login;
mod health;
mod interchange;
mod lifecycle;
mod playwright;
mod pool;
#[allow(dead_code)]
#[path = "../../store/tests/redis_server.rs"]
mod redis_server;
