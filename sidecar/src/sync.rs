//! Locks stay usable after a holder panicked. Every lock here guards plain data that each
//! writer leaves consistent between statements (counters, snapshots swapped whole), so a
//! panic elsewhere is no reason to take the daemon's servers down with it.

use std::sync::{LockResult, PoisonError};

/// `lock()`, `read()` and `write()` results, recovered from poisoning.
pub trait Recover<G> {
    fn recover(self) -> G;
}

impl<G> Recover<G> for LockResult<G> {
    fn recover(self) -> G {
        self.unwrap_or_else(PoisonError::into_inner)
    }
}
