//! The `learned` source: keys the key store learned from authenticated
//! inbound mail (S/MIME signatures, Autocrypt headers) or that an operator
//! imported (`keys import`), at the lowest trust. One key per address and
//! method (the newest message's); the store's failure is a failure, never
//! "no key". Answers are reused for `store.refresh_secs`, and a key this
//! host learns replaces its answer at once (`LearnedSource::forget`).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::address::Address;
use crate::keys::cache::SharedCache;
use crate::keys::{FailReason, KeySource, Lookup, LookupFuture, Traced, TracedFuture};
use crate::material::{KeyMaterial, Method, Provenance, Security, SourceKind, TrustLevel};
use crate::store::{LearnedKey, Store, store_key};

/// Learned keys in the key store.
pub struct LearnedSource {
    store: Store,
    refresh: Duration,
    cache: SharedCache<(String, Method), Lookup>,
}

impl LearnedSource {
    /// The learned keys of `store`, answers reused for `refresh`.
    pub fn new(store: Store, refresh: Duration) -> Arc<Self> {
        Arc::new(LearnedSource {
            store,
            refresh,
            cache: SharedCache::new(),
        })
    }

    /// Drops the cached answer for `addr` (a key was just learned).
    pub(crate) fn forget(&self, addr: &str, method: Method) {
        self.cache.remove(&(addr.to_owned(), method));
    }

    async fn ask(&self, addr: &Address, method: Method) -> Traced {
        let who = store_key(addr);
        let key = (who.clone(), method);
        let (lookup, cached, _) = self
            .cache
            .get_or_fetch(&key, || async {
                match self.store.learned(&who, method).await {
                    Ok(Some(k)) => (found(&k), self.refresh),
                    Ok(None) => (Lookup::NotFound, self.refresh),
                    // Not kept: the next lookup asks again.
                    Err(e) => (
                        Lookup::Failed(FailReason::Network(format!("key store: {e}"))),
                        Duration::ZERO,
                    ),
                }
            })
            .await;
        Traced {
            lookup,
            cached,
            asked: vec![format!(
                "learned key for {who} in {}",
                self.store.describe()
            )],
        }
    }
}

/// A learned key as key material.
fn found(k: &LearnedKey) -> Lookup {
    let at = |t: i64| UNIX_EPOCH + Duration::from_secs(u64::try_from(t).unwrap_or(0));
    let material = KeyMaterial {
        method: k.method,
        data: k.key.clone(),
        origin: format!(
            "learned from {} (first seen {}, last seen {})",
            k.how.as_str(),
            k.first_seen,
            k.last_seen
        ),
        provenance: Provenance {
            source: SourceKind::Learned,
            security: Security::Learned,
            trust: TrustLevel::Learned,
            fetched: at(k.last_seen).min(SystemTime::now()),
        },
        bound_addresses: Vec::new(),
    };
    Lookup::Found {
        keys: vec![material],
        unusable: Vec::new(),
        security: Security::Learned,
    }
}

impl KeySource for LearnedSource {
    fn kind(&self) -> SourceKind {
        SourceKind::Learned
    }

    fn describe(&self) -> String {
        format!("learned keys in the key store ({})", self.store.describe())
    }

    fn lookup<'a>(&'a self, addr: &'a Address, method: Method) -> LookupFuture<'a> {
        Box::pin(async move { self.ask(addr, method).await.lookup })
    }

    fn lookup_traced<'a>(
        &'a self,
        addr: &'a Address,
        method: Method,
        detail: bool,
    ) -> TracedFuture<'a> {
        Box::pin(async move {
            let mut t = self.ask(addr, method).await;
            if !detail {
                t.asked.clear();
            }
            t
        })
    }
}
