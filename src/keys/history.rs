//! Key history: which keys each source has returned for an address and
//! method before, kept in the key store, and what a rule's
//! `on_key_change` makes of a key it has not returned before. A change is
//! logged and counted (once per fleet: the host whose write recorded it);
//! under `review` only keys an operator approved (or that were there
//! first) are used, the previous ones while they are still valid, and
//! with none the recipient is held (`451`) until `keys approve`.
//!
//! What the store said is kept for `store.refresh_secs`, so a lookup whose
//! keys are all known asks the store nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::address::Address;
use crate::material::{Method, OnKeyChange, SourceKind};
use crate::metrics::Metrics;
use crate::store::{Observation, Seen, Store, store_key};

/// Most (source, address, method) histories kept in memory.
const CAPACITY: usize = 10_000;

type Key = (SourceKind, String, Method);

/// What the store said of one key, and when.
type Cache = HashMap<Key, (Instant, Arc<Vec<Seen>>)>;

/// What the history makes of the keys a source returned.
#[derive(Debug)]
pub(crate) enum Vetted {
    /// Use the keys with these fingerprints (all of them under `accept`;
    /// the approved ones under `review`).
    Use(Vec<String>),
    /// None of the keys returned is approved: these approved ones, which
    /// the source returned before, are used while they are still valid.
    Previous(Vec<Seen>),
    /// The history could not be read or written, and the rule reviews
    /// changes: the lookup fails.
    Failed(String),
}

/// The key store's history, as lookups use it.
pub(crate) struct KeyHistory {
    store: Store,
    refresh: Duration,
    metrics: Option<Metrics>,
    cache: Mutex<Cache>,
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl KeyHistory {
    /// The history in `store`, re-read every `refresh`.
    pub(crate) fn new(store: Store, refresh: Duration, metrics: Option<Metrics>) -> Self {
        KeyHistory {
            store,
            refresh,
            metrics,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        match self.cache.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn cached(&self, key: &Key) -> Option<Arc<Vec<Seen>>> {
        let cache = self.lock();
        cache
            .get(key)
            .filter(|(at, _)| at.elapsed() < self.refresh)
            .map(|(_, seen)| Arc::clone(seen))
    }

    fn remember(&self, key: Key, seen: Arc<Vec<Seen>>) {
        let mut cache = self.lock();
        if cache.len() >= CAPACITY {
            let refresh = self.refresh;
            cache.retain(|_, (at, _)| at.elapsed() < refresh);
            if cache.len() >= CAPACITY {
                cache.clear();
            }
        }
        cache.insert(key, (Instant::now(), seen));
    }

    /// Records `current` (fingerprint, key as found) from `source` for
    /// `addr` and `method`, and says which keys `on_change` lets the
    /// lookup use.
    pub(crate) async fn vet(
        &self,
        source: SourceKind,
        addr: &Address,
        method: Method,
        current: &[(String, Vec<u8>)],
        on_change: OnKeyChange,
    ) -> Vetted {
        let who = store_key(addr);
        let key = (source, who.clone(), method);
        let review = on_change == OnKeyChange::Review;
        let known = self.cached(&key).filter(|seen| {
            current
                .iter()
                .all(|(f, _)| seen.iter().any(|s| &s.fingerprint == f))
        });
        let seen = match known {
            Some(seen) => seen,
            None => {
                let observed = self
                    .store
                    .observe(source.as_str(), &who, method, current, review, unix_now())
                    .await;
                match observed {
                    Ok(Observation::Changed { new, counted, .. }) if counted => {
                        tracing::warn!(
                            "{addr}: {source} returned a new {method} key ({}) for the address; \
                             {}",
                            new.join(", "),
                            if review {
                                "held for review (keys approve) by the rule's on_key_change"
                            } else {
                                "used (on_key_change = \"accept\")"
                            }
                        );
                        if let Some(m) = &self.metrics {
                            m.key_change(source);
                        }
                    }
                    Ok(_) => {}
                    Err(e) if review => {
                        return Vetted::Failed(format!("key history in the store: {e}"));
                    }
                    Err(e) => {
                        // `accept` uses what the source returned either way.
                        tracing::warn!("{addr}: key history not recorded: {e}");
                        return Vetted::Use(current.iter().map(|(f, _)| f.clone()).collect());
                    }
                }
                match self.store.history(source.as_str(), &who, method).await {
                    Ok(seen) => {
                        let seen = Arc::new(seen);
                        self.remember(key, Arc::clone(&seen));
                        seen
                    }
                    Err(e) if review => {
                        return Vetted::Failed(format!("key history in the store: {e}"));
                    }
                    Err(_) => {
                        return Vetted::Use(current.iter().map(|(f, _)| f.clone()).collect());
                    }
                }
            }
        };
        if !review {
            return Vetted::Use(current.iter().map(|(f, _)| f.clone()).collect());
        }
        let approved: Vec<String> = current
            .iter()
            .filter(|(f, _)| seen.iter().any(|s| &s.fingerprint == f && s.approved))
            .map(|(f, _)| f.clone())
            .collect();
        if !approved.is_empty() {
            return Vetted::Use(approved);
        }
        Vetted::Previous(
            seen.iter()
                .filter(|s| s.approved && !current.iter().any(|(f, _)| f == &s.fingerprint))
                .cloned()
                .collect(),
        )
    }
}
