//! Locking that survives a panic.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// [`Mutex::lock`] for the collector's mutexes: [`lock_unpoisoned`](MutexExt::lock_unpoisoned).
pub trait MutexExt<T: ?Sized> {
    /// Locks, taking the data even when a holder panicked (the lock is poisoned).
    ///
    /// Every mutex in the collector guards state that stays consistent between statements
    /// (counters, maps, cursors, a store handle), and a panicked task must not stop the rest
    /// of the pipeline: refusing the data would turn one failed task into a collector that
    /// no longer collects.
    fn lock_unpoisoned(&self) -> MutexGuard<'_, T>;
}

impl<T: ?Sized> MutexExt<T> for Mutex<T> {
    fn lock_unpoisoned(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
