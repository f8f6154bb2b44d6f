//! The answer cache the network key sources share: answers by key, each
//! reused until its own expiry (the source says how long), at most
//! [`CACHE_CAPACITY`] of them (and, where answers can be large, at most a
//! budget of bytes), and one fetch shared by concurrent lookups of the
//! same key (one `OnceCell` per key). DNS keys it by owner name and record
//! type, the web sources by URL.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::OnceCell;

/// Most answers kept in one cache.
pub const CACHE_CAPACITY: usize = 10_000;

/// One key's answer, when it expires and when it arrived (the provenance
/// of keys read from it); empty while its fetch runs.
type Slot<V> = Arc<OnceCell<(V, Instant, SystemTime)>>;

/// Answers of type `V` by `K`.
pub(crate) struct SharedCache<K, V> {
    slots: Mutex<HashMap<K, Slot<V>>>,
    /// Most bytes the answers may hold together, by `weigh`.
    budget: usize,
    weigh: fn(&V) -> usize,
    /// Bytes held by the filled answers now in the map.
    used: AtomicUsize,
}

impl<K: Hash + Eq + Clone, V: Clone> SharedCache<K, V> {
    /// An empty cache, bounded by [`CACHE_CAPACITY`] answers.
    pub(crate) fn new() -> Self {
        Self::with_budget(usize::MAX, |_| 0)
    }

    /// An empty cache that also holds at most `budget` bytes of answers,
    /// each weighing `weigh` (beyond it, expired answers go first, then
    /// others).
    pub(crate) fn with_budget(budget: usize, weigh: fn(&V) -> usize) -> Self {
        SharedCache {
            slots: Mutex::new(HashMap::new()),
            budget,
            weigh,
            used: AtomicUsize::new(0),
        }
    }

    /// Bytes the cached answers hold now (tests).
    #[cfg(test)]
    pub(crate) fn used_bytes(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn release(&self, slot: &Slot<V>) {
        if let Some((v, _, _)) = slot.get() {
            let w = (self.weigh)(v);
            let _ = self
                .used
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                    Some(u.saturating_sub(w))
                });
        }
    }

    /// The answer for `key`: a fresh cached one, or the one `fetch`
    /// produces (with how long it may be reused), which concurrent callers
    /// of the same key share. The flag says whether this caller's `fetch`
    /// did not run (a cache hit or a shared fetch in flight); the time is
    /// when the answer arrived.
    pub(crate) async fn get_or_fetch<F, Fut>(&self, key: &K, fetch: F) -> (V, bool, SystemTime)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = (V, Duration)>,
    {
        let slot = self.slot(key);
        let mut ran = false;
        let (answer, _, fetched) = slot
            .get_or_init(|| async {
                ran = true;
                let (answer, ttl) = fetch().await;
                // Counted before anyone can see it, so that a release
                // never comes first.
                self.used
                    .fetch_add((self.weigh)(&answer), Ordering::Relaxed);
                (answer, Instant::now() + ttl, SystemTime::now())
            })
            .await;
        let answer = answer.clone();
        if ran && self.used.load(Ordering::Relaxed) > self.budget {
            self.shed(key);
        }
        (answer, !ran, *fetched)
    }

    /// Back under the byte budget: expired answers first, then any other
    /// than `keep`'s (the cache only saves fetches).
    fn shed(&self, keep: &K) {
        let mut cache = self.lock();
        let now = Instant::now();
        cache.retain(|_, s| {
            let live = s.get().is_none_or(|(_, expires, _)| *expires > now);
            if !live {
                self.release(s);
            }
            live
        });
        cache.retain(|k, s| {
            if self.used.load(Ordering::Relaxed) <= self.budget || k == keep || s.get().is_none() {
                return true;
            }
            self.release(s);
            false
        });
    }

    /// The live slot for `key`, or a new empty one in its place.
    fn slot(&self, key: &K) -> Slot<V> {
        let mut cache = self.lock();
        let now = Instant::now();
        let fresh = cache
            .get(key)
            .filter(|s| s.get().is_none_or(|(_, expires, _)| *expires > now))
            .cloned();
        match fresh {
            Some(s) => s,
            None => {
                if cache.len() >= CACHE_CAPACITY {
                    self.evict(&mut cache, now);
                }
                let s: Slot<V> = Arc::new(OnceCell::new());
                if let Some(old) = cache.insert(key.clone(), s.clone()) {
                    self.release(&old);
                }
                s
            }
        }
    }

    /// Room for one more: expired answers go, and fetches nobody waits
    /// for any more (cancelled: the SMTP client left); if it is still
    /// full of live answers, it starts afresh rather than track recency.
    fn evict(&self, cache: &mut HashMap<K, Slot<V>>, now: Instant) {
        cache.retain(|_, s| {
            let keep = match s.get() {
                Some((_, expires, _)) => *expires > now,
                None => Arc::strong_count(s) > 1,
            };
            if !keep {
                self.release(s);
            }
            keep
        });
        if cache.len() >= CACHE_CAPACITY {
            cache.retain(|_, s| {
                let pending = s.get().is_none();
                if !pending {
                    self.release(s);
                }
                pending
            });
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Slot<V>>> {
        // A panic elsewhere while holding the lock leaves the map itself
        // intact: keep using it.
        match self.slots.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Drops `key`'s answer, so that the next lookup fetches it (the
    /// answer changed: a key was learned). A fetch in flight finishes for
    /// those waiting on it.
    pub(crate) fn remove(&self, key: &K) {
        if let Some(old) = self.lock().remove(key) {
            self.release(&old);
        }
    }

    /// Puts `answer`, arrived at `fetched`, in the cache for `ttl` (tests
    /// of the lookup paths without a network).
    #[cfg(test)]
    pub(crate) fn insert(&self, key: K, answer: V, ttl: Duration, fetched: SystemTime) {
        self.used
            .fetch_add((self.weigh)(&answer), Ordering::Relaxed);
        let slot: Slot<V> = Arc::new(OnceCell::new_with(Some((
            answer,
            Instant::now() + ttl,
            fetched,
        ))));
        if let Some(old) = self.lock().insert(key, slot) {
            self.release(&old);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn concurrent_lookups_share_one_fetch_and_expired_answers_are_fetched_again() {
        let cache: SharedCache<&str, u32> = SharedCache::new();
        let runs = std::sync::atomic::AtomicU32::new(0);
        let fetch = || async {
            runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::task::yield_now().await;
            (7, Duration::from_secs(60))
        };
        let (a, b) = tokio::join!(
            cache.get_or_fetch(&"k", fetch),
            cache.get_or_fetch(&"k", fetch)
        );
        assert_eq!((a.0, b.0), (7, 7));
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(a.1 != b.1, "exactly one of the two ran the fetch");
        // An answer with no lifetime left is not reused.
        cache.insert("old", 1, Duration::ZERO, SystemTime::now());
        let (v, hit, _) = cache
            .get_or_fetch(&"old", || async { (2, Duration::from_secs(1)) })
            .await;
        assert_eq!((v, hit), (2, false));
    }

    #[tokio::test]
    async fn the_byte_budget_holds_and_the_newest_answer_stays() {
        let cache: SharedCache<u32, Vec<u8>> = SharedCache::with_budget(100, |v| v.len());
        for k in 0..10u32 {
            let (v, _, _) = cache
                .get_or_fetch(&k, || async { (vec![0u8; 40], Duration::from_secs(60)) })
                .await;
            assert_eq!(v.len(), 40);
            assert!(
                cache.used_bytes() <= 100,
                "{} bytes after {k}",
                cache.used_bytes()
            );
        }
        // The last one fetched is still there.
        let (_, hit, _) = cache
            .get_or_fetch(&9, || async { (Vec::new(), Duration::from_secs(60)) })
            .await;
        assert!(hit);
        // Replacing an answer releases the old one's bytes.
        cache.insert(9, vec![0u8; 10], Duration::from_secs(60), SystemTime::now());
        assert!(cache.used_bytes() <= 100);
    }

    #[tokio::test]
    async fn a_fetch_nobody_waits_for_is_evicted() {
        let cache: SharedCache<u32, u32> = SharedCache::new();
        // Started, then dropped (the lookup was cancelled).
        let pending = cache.get_or_fetch(&1, std::future::pending::<(u32, Duration)>);
        let _ = tokio::time::timeout(Duration::from_millis(1), pending).await;
        let mut map = cache.lock();
        assert_eq!(map.len(), 1);
        cache.evict(&mut map, Instant::now());
        assert!(map.is_empty(), "the abandoned slot was kept");
    }
}
