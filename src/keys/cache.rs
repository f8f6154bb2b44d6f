//! The answer cache the network key sources share: answers by key, each
//! reused until its own expiry (the source says how long), at most
//! [`CACHE_CAPACITY`] of them, and one fetch shared by concurrent lookups
//! of the same key (one `OnceCell` per key). DNS keys it by owner name and
//! record type, the web sources by URL.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
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
}

impl<K: Hash + Eq + Clone, V: Clone> SharedCache<K, V> {
    /// An empty cache.
    pub(crate) fn new() -> Self {
        SharedCache {
            slots: Mutex::new(HashMap::new()),
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
                (answer, Instant::now() + ttl, SystemTime::now())
            })
            .await;
        (answer.clone(), !ran, *fetched)
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
                    evict(&mut cache, now);
                }
                let s: Slot<V> = Arc::new(OnceCell::new());
                cache.insert(key.clone(), s.clone());
                s
            }
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

    /// Puts `answer`, arrived at `fetched`, in the cache for `ttl` (tests
    /// of the lookup paths without a network).
    #[cfg(test)]
    pub(crate) fn insert(&self, key: K, answer: V, ttl: Duration, fetched: SystemTime) {
        let slot: Slot<V> = Arc::new(OnceCell::new_with(Some((
            answer,
            Instant::now() + ttl,
            fetched,
        ))));
        self.lock().insert(key, slot);
    }
}

fn evict<K, V>(cache: &mut HashMap<K, Slot<V>>, now: Instant) {
    cache.retain(|_, s| s.get().is_none_or(|(_, expires, _)| *expires > now));
    if cache.len() >= CACHE_CAPACITY {
        // Still full of live answers: start afresh rather than track
        // recency; the cache only saves fetches.
        cache.retain(|_, s| s.get().is_none());
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
}
