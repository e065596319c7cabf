//! The memory that request bodies and their parsed JSON may hold at once, across all requests
//! (`KZ_GROUPS_REQUEST_MEMORY_MB`). A request reserves what its body and its tree will take before
//! taking it, and gives it back when its answer has been rendered; while the budget is spent,
//! reservations wait their turn (first come, first served), so any number of large requests at
//! once cannot take more than the budget. Amounts under [`SMALL`] are not reserved, so the
//! ordinary small request never waits behind large ones; the connection limit bounds those.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Below this a request's memory is not counted against the budget.
pub const SMALL: usize = 64 * 1024;
const UNIT: usize = 1024;

pub struct MemoryBudget {
    units: Arc<Semaphore>,
    total_units: usize,
}

/// Memory held for one request; given back when dropped.
#[derive(Default)]
pub struct Reservation {
    permit: Option<OwnedSemaphorePermit>,
}

impl Reservation {
    pub fn bytes(&self) -> usize {
        self.permit.as_ref().map_or(0, |p| p.num_permits() * UNIT)
    }

    /// Adds `other` to this reservation.
    pub fn merge(&mut self, other: Reservation) {
        match (&mut self.permit, other.permit) {
            (Some(mine), Some(theirs)) => mine.merge(theirs),
            (mine @ None, theirs) => *mine = theirs,
            (Some(_), None) => {}
        }
    }
}

impl MemoryBudget {
    pub fn new(bytes: usize) -> Self {
        let total_units = (bytes / UNIT).clamp(1, Semaphore::MAX_PERMITS);
        Self {
            units: Arc::new(Semaphore::new(total_units)),
            total_units,
        }
    }

    /// Waits until `bytes` can be held. More than the whole budget is held as the whole budget,
    /// so such a request runs alone rather than never.
    pub async fn reserve(&self, bytes: usize) -> Reservation {
        if bytes < SMALL {
            return Reservation::default();
        }
        let units = bytes.div_ceil(UNIT).min(self.total_units);
        let permit = self
            .units
            .clone()
            .acquire_many_owned(units as u32)
            .await
            .ok();
        Reservation { permit }
    }

    /// Bytes not reserved right now.
    pub fn available(&self) -> usize {
        self.units.available_permits() * UNIT
    }

    pub fn total(&self) -> usize {
        self.total_units * UNIT
    }
}

/// Gives the memory freed by large requests back to the system, a moment after they end (at most
/// one pass at a time): glibc's allocator otherwise keeps freed heap pages in the process.
pub fn give_back() {
    static PENDING: AtomicBool = AtomicBool::new(false);
    if PENDING.swap(true, Ordering::AcqRel) {
        return;
    }
    tokio::spawn(async {
        // Lets the answer that ended the request be written and freed first.
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        PENDING.store(false, Ordering::Release);
        let _ = tokio::task::spawn_blocking(trim).await;
    });
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim only returns free pages of glibc's own arenas to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn reservations_wait_while_the_budget_is_spent() {
        let budget = MemoryBudget::new(1 << 20);
        let first = budget.reserve(768 * 1024).await;
        assert_eq!(first.bytes(), 768 * 1024);
        assert_eq!(budget.available(), 256 * 1024);
        let waiting = tokio::time::timeout(Duration::from_millis(50), budget.reserve(512 * 1024));
        assert!(
            waiting.await.is_err(),
            "must wait while the budget is spent"
        );
        drop(first);
        let second = budget.reserve(512 * 1024).await;
        assert_eq!(budget.available(), 512 * 1024);
        drop(second);
        assert_eq!(budget.available(), 1 << 20);
    }

    #[tokio::test]
    async fn small_amounts_are_free_and_huge_ones_take_the_whole_budget() {
        let budget = MemoryBudget::new(1 << 20);
        assert_eq!(budget.reserve(SMALL - 1).await.bytes(), 0);
        let mut all = budget.reserve(10 << 20).await;
        assert_eq!(all.bytes(), 1 << 20);
        all.merge(Reservation::default());
        assert_eq!(all.bytes(), 1 << 20);
        assert_eq!(budget.available(), 0);
    }
}
