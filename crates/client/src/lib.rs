//! authkeeper-client: what a worker uses to talk to authkeeper from Rust.
//!
//! - [`checkpoint`]: a task's saved progress, typed — in a store directly (a worker in the same
//!   process as the Keeper) or through a broker's `/v1/checkpoints/{task}` (a worker started by
//!   `authkeeper exec`). The broker itself stores checkpoints with the same functions.

pub mod checkpoint;

pub use checkpoint::{API_KEY_ENV, CHECKPOINT_URL_ENV, Checkpoint, CheckpointError};
