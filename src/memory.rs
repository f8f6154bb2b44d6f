//! The process-wide budget for message bodies held in memory
//! (`limits.memory_budget_bytes`). Every [`crate::spool::Spool`] of the
//! milter draws on it while its bytes are in memory and gives them back
//! when it moves to disk or is dropped; a spool the budget cannot serve
//! goes to disk at once. One budget serves every connection and survives
//! reloads (a reload only changes its limit).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::metrics::Metrics;

/// Default budget (`limits.memory_budget_bytes`): 256 MiB, the size of
/// 64 bodies just under the default spool threshold.
pub const DEFAULT_BUDGET: u64 = 256 * 1024 * 1024;

/// Shared accounting of bytes held in memory. Cheap to clone: clones share
/// the same account.
#[derive(Clone, Debug)]
pub struct MemoryBudget {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    limit: AtomicU64,
    used: AtomicU64,
    peak: AtomicU64,
    /// Mirrors `used` in `autoencrypt_memory_bodies_bytes`, when set.
    metrics: Option<Metrics>,
}

impl MemoryBudget {
    /// A budget of `limit` bytes, exposed in `metrics`.
    pub fn new(limit: u64, metrics: Option<Metrics>) -> Self {
        MemoryBudget {
            inner: Arc::new(Inner {
                limit: AtomicU64::new(limit),
                used: AtomicU64::new(0),
                peak: AtomicU64::new(0),
                metrics,
            }),
        }
    }

    /// Changes the limit (a reload). Bytes already held above a lower
    /// limit stay until released; no new ones are granted until then.
    pub fn set_limit(&self, limit: u64) {
        self.inner.limit.store(limit, Ordering::Relaxed);
    }

    /// The limit in bytes.
    pub fn limit(&self) -> u64 {
        self.inner.limit.load(Ordering::Relaxed)
    }

    /// Bytes held now.
    pub fn used(&self) -> u64 {
        self.inner.used.load(Ordering::Relaxed)
    }

    /// The most bytes ever held at once.
    pub fn peak(&self) -> u64 {
        self.inner.peak.load(Ordering::Relaxed)
    }

    /// Takes `n` bytes if they fit under the limit; `false` leaves the
    /// account unchanged.
    pub fn try_reserve(&self, n: u64) -> bool {
        let limit = self.limit();
        let granted = self
            .inner
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|total| *total <= limit)
            });
        match granted {
            Ok(before) => {
                self.held(before + n, n);
                true
            }
            Err(_) => false,
        }
    }

    /// Takes `n` bytes that are already allocated, over the limit if need
    /// be (an allocator that rounded a reservation up).
    pub fn force_reserve(&self, n: u64) {
        let before = self.inner.used.fetch_add(n, Ordering::AcqRel);
        self.held(before.saturating_add(n), n);
    }

    /// Gives back `n` bytes taken before.
    pub fn release(&self, n: u64) {
        if n == 0 {
            return;
        }
        let _ = self
            .inner
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(n))
            });
        if let Some(m) = &self.inner.metrics {
            m.memory_bodies_add(-i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    fn held(&self, total: u64, added: u64) {
        self.inner.peak.fetch_max(total, Ordering::Relaxed);
        if let Some(m) = &self.inner.metrics {
            m.memory_bodies_add(i64::try_from(added).unwrap_or(i64::MAX));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_up_to_the_limit_and_no_further() {
        let b = MemoryBudget::new(100, None);
        assert!(b.try_reserve(60));
        assert!(!b.try_reserve(41));
        assert_eq!(b.used(), 60);
        assert!(b.try_reserve(40));
        assert!(!b.try_reserve(1));
        b.release(50);
        assert_eq!(b.used(), 50);
        assert_eq!(b.peak(), 100);
    }

    #[test]
    fn clones_share_the_account_and_the_gauge() {
        let m = Metrics::new();
        let b = MemoryBudget::new(10, Some(m.clone()));
        let c = b.clone();
        assert!(b.try_reserve(7));
        assert!(!c.try_reserve(4));
        assert_eq!(m.memory_bodies_bytes(), 7);
        c.release(7);
        assert_eq!(b.used(), 0);
        assert_eq!(m.memory_bodies_bytes(), 0);
    }

    #[test]
    fn a_lower_limit_grants_nothing_until_released() {
        let b = MemoryBudget::new(100, None);
        assert!(b.try_reserve(80));
        b.set_limit(50);
        assert!(!b.try_reserve(1));
        b.release(40);
        assert!(b.try_reserve(10));
        assert_eq!(b.used(), 50);
    }
}
