//! authkeeper-session: logged-in browser identities kept encrypted, leased to one worker at a time,
//! health-checked and re-created by a real browser login.
//!
//! - [`storage_state`]: Playwright `storageState` JSON, the interchange format.
//! - [`config`]: per-site settings: accounts, login recipe or command, probe, pool policy.
//! - [`model`]: the stored session record and lease outcomes.
//! - [`pool`]: leases over a [`authkeeper_core::Store`]: exclusive across processes and replicas.

#![warn(missing_docs)]

pub mod config;
pub mod model;
pub mod pool;
pub mod storage_state;

pub use config::{AccountConfig, LoginConfig, PoolPolicy, ProbeConfig, RecipeStep, SiteConfig};
pub use model::{Outcome, Session, SessionLease, SessionState};
pub use pool::{LeaseError, SessionPool};
pub use storage_state::{OriginState, SameSite, StateCookie, StorageState};
