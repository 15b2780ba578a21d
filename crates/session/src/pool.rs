//! Session leases over a store (placeholder; being written).

/// Why a lease operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Placeholder.
    #[error("not implemented")]
    NotImplemented,
}

/// The pool of sessions of every configured site.
#[derive(Debug)]
pub struct SessionPool;
