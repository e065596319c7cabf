//! The memory that request bodies and their parsed JSON may hold at once, across all requests
//! (`KZ_GROUPS_REQUEST_MEMORY_MB`). A request reserves what its body and its tree will take before
//! taking it, and gives it back when its answer has been rendered; while the budget is spent,
//! reservations wait their turn (first come, first served), so any number of large requests at
//! once cannot take more than the budget.
//!
//! Bodies being received and trees being built draw on two pools (a quarter and three quarters of
//! the budget): a request waits for its tree while holding its body, and with one pool bodies
//! could fill it and leave every request waiting for a tree no one can free. Amounts under
//! [`SMALL`] are not reserved, so the ordinary small request never waits behind large ones; the
//! connection limit bounds those.
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Below this a request's memory is not counted against the budget.
pub const SMALL: usize = 64 * 1024;
/// Memory is counted in these.
pub const UNIT: usize = 1024;

pub struct MemoryBudget {
    bodies: Pool,
    trees: Pool,
}

/// An amount of memory that holders reserve from and give back to; while it is spent,
/// reservations wait their turn (first come, first served). The request budget's two pools, and
/// the history queue's bound (`history`).
pub struct Pool {
    units: Arc<Semaphore>,
    total_units: usize,
}

/// Memory held for one request (or one queued change); given back when dropped.
#[derive(Default)]
pub struct Reservation {
    permits: Vec<OwnedSemaphorePermit>,
}

impl Reservation {
    pub fn bytes(&self) -> usize {
        self.permits.iter().map(|p| p.num_permits() * UNIT).sum()
    }

    /// Adds `other` to this reservation.
    pub fn merge(&mut self, other: Reservation) {
        for permit in other.permits {
            match self
                .permits
                .iter_mut()
                .find(|p| Arc::ptr_eq(p.semaphore(), permit.semaphore()))
            {
                Some(mine) => mine.merge(permit),
                None => self.permits.push(permit),
            }
        }
    }
}

impl Pool {
    pub fn new(bytes: usize) -> Self {
        let total_units = (bytes / UNIT).clamp(1, Semaphore::MAX_PERMITS);
        Self {
            units: Arc::new(Semaphore::new(total_units)),
            total_units,
        }
    }

    /// Waits until `bytes` can be held. More than the whole pool is held as the whole pool, so
    /// such a holder runs alone rather than never.
    pub async fn reserve(&self, bytes: usize) -> Reservation {
        let units = bytes.div_ceil(UNIT).min(self.total_units);
        let permits = self
            .units
            .clone()
            .acquire_many_owned(units as u32)
            .await
            .into_iter()
            .collect();
        Reservation { permits }
    }
}

impl MemoryBudget {
    pub fn new(bytes: usize) -> Self {
        Self {
            bodies: Pool::new(bytes / 4),
            trees: Pool::new(bytes - bytes / 4),
        }
    }

    /// Room for `bytes` more of a body being received.
    pub async fn reserve_body(&self, bytes: usize) -> Reservation {
        Self::reserve(&self.bodies, bytes).await
    }

    /// Room for a parsed body's tree (and what its answer may echo of it).
    pub async fn reserve_tree(&self, bytes: usize) -> Reservation {
        Self::reserve(&self.trees, bytes).await
    }

    async fn reserve(pool: &Pool, bytes: usize) -> Reservation {
        if bytes < SMALL {
            return Reservation::default();
        }
        pool.reserve(bytes).await
    }

    /// Bytes not reserved right now.
    pub fn available(&self) -> usize {
        (self.bodies.units.available_permits() + self.trees.units.available_permits()) * UNIT
    }

    pub fn total(&self) -> usize {
        (self.bodies.total_units + self.trees.total_units) * UNIT
    }
}

/// Gives the memory freed by large requests back to the system once they stop coming (a quarter
/// of a second after the last one ends): glibc's allocator otherwise keeps freed heap pages in
/// the process. One trimming task at a time.
pub fn give_back() {
    static ENDED: AtomicU64 = AtomicU64::new(0);
    static TRIMMER: AtomicBool = AtomicBool::new(false);
    ENDED.fetch_add(1, Ordering::AcqRel);
    if TRIMMER.swap(true, Ordering::AcqRel) {
        return;
    }
    tokio::spawn(async {
        loop {
            let seen = ENDED.load(Ordering::Acquire);
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            if ENDED.load(Ordering::Acquire) != seen {
                continue;
            }
            let _ = tokio::task::spawn_blocking(trim).await;
            TRIMMER.store(false, Ordering::Release);
            // A request that ended just now found the trimmer still running: trim for it too.
            if ENDED.load(Ordering::Acquire) == seen || TRIMMER.swap(true, Ordering::AcqRel) {
                return;
            }
        }
    });
}

/// Sets glibc's allocator up so that freed memory can be given back: large blocks (request
/// bodies, long arrays) come straight from the system and go back to it when freed (glibc
/// otherwise raises this threshold to the largest block freed so far, after which such blocks
/// stay in its heap); and at most one heap per core (glibc would add up to eight per core),
/// which keeps threads from waiting on one heap's lock while bounding how much freed memory
/// can sit in heaps (`malloc_trim` gives back the free pages of every heap). Called first
/// thing, before any thread starts.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn set_up_allocator() {
    let arenas = std::thread::available_parallelism().map_or(1, |n| n.get().min(8)) as i32;
    // SAFETY: mallopt only changes glibc's allocation policy for later allocations.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        libc::mallopt(libc::M_ARENA_MAX, arenas);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn set_up_allocator() {}

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
    async fn reservations_wait_while_their_pool_is_spent() {
        // 1 MiB for bodies, 3 MiB for trees.
        let budget = MemoryBudget::new(4 << 20);
        let first = budget.reserve_tree(2 << 20).await;
        assert_eq!(first.bytes(), 2 << 20);
        let waiting = tokio::time::timeout(Duration::from_millis(50), budget.reserve_tree(2 << 20));
        assert!(waiting.await.is_err(), "must wait while the pool is spent");
        // Bodies draw on their own pool meanwhile.
        let body = budget.reserve_body(1 << 20).await;
        assert_eq!(body.bytes(), 1 << 20);
        drop(first);
        let mut second = budget.reserve_tree(2 << 20).await;
        second.merge(body);
        assert_eq!(second.bytes(), 3 << 20);
        assert_eq!(budget.available(), 1 << 20);
        drop(second);
        assert_eq!(budget.available(), budget.total());
    }

    #[tokio::test]
    async fn small_amounts_are_free_and_huge_ones_take_the_whole_pool() {
        let budget = MemoryBudget::new(4 << 20);
        assert_eq!(budget.reserve_body(SMALL - 1).await.bytes(), 0);
        let mut all = budget.reserve_tree(100 << 20).await;
        assert_eq!(all.bytes(), 3 << 20);
        all.merge(budget.reserve_body(SMALL).await);
        assert_eq!(all.bytes(), (3 << 20) + SMALL);
    }
}
