//! The pins the key store holds (`keys pin`): a snapshot of all of them,
//! which every lookup reads without waiting for the store. It is re-read
//! in the background once older than `store.refresh_secs` (the staleness
//! the documentation promises a fleet), and a failed re-read keeps the
//! last snapshot: a pin once seen is never dropped because the store is
//! down. Until the first read succeeds nothing is known, and lookups fail
//! (a pinned address must never be encrypted to another key because the
//! store could not be asked).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::address::Address;
use crate::keys::FailReason;
use crate::metrics::Metrics;
use crate::store::{Store, StoreError, store_key};

/// Pins by address (the store's form of it), each a canonical fingerprint.
type Snapshot = Arc<HashMap<String, Vec<String>>>;

#[derive(Default)]
struct State {
    snapshot: Option<Snapshot>,
    read_at: Option<Instant>,
    refreshing: bool,
}

/// The store's pins, as a lookup sees them.
pub(crate) struct StorePins {
    store: Store,
    refresh: Duration,
    metrics: Option<Metrics>,
    state: Mutex<State>,
}

impl StorePins {
    /// Pins of `store`, re-read every `refresh`.
    pub(crate) fn new(store: Store, refresh: Duration, metrics: Option<Metrics>) -> Arc<Self> {
        Arc::new(StorePins {
            store,
            refresh,
            metrics,
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// The fingerprints pinned for `addr` (empty: not pinned), or why they
    /// cannot be known.
    pub(crate) async fn for_address(
        self: &Arc<Self>,
        addr: &Address,
    ) -> Result<Vec<String>, FailReason> {
        let key = store_key(addr);
        let (snapshot, start) = {
            let mut s = self.lock();
            let stale = s.read_at.is_none_or(|t| t.elapsed() >= self.refresh);
            let start = stale && !s.refreshing && s.snapshot.is_some();
            if start {
                s.refreshing = true;
            }
            (s.snapshot.clone(), start)
        };
        match snapshot {
            Some(snap) => {
                if start {
                    let me = Arc::clone(self);
                    tokio::spawn(async move {
                        let _ = me.reread().await;
                    });
                }
                Ok(snap.get(&key).cloned().unwrap_or_default())
            }
            // Never read: this lookup waits for the first read.
            None => match self.reread().await {
                Ok(snap) => Ok(snap.get(&key).cloned().unwrap_or_default()),
                Err(e) => Err(FailReason::Network(format!(
                    "pins in the key store are unknown: {e}"
                ))),
            },
        }
    }

    /// Reads every pin (and the number of key changes awaiting review,
    /// for the metric); keeps the old snapshot when the store fails.
    pub(crate) async fn reread(&self) -> Result<Snapshot, StoreError> {
        let read = self.store.all_pins().await;
        let pending = match &read {
            Ok(_) => self.store.changes(true).await.ok().map(|c| c.len()),
            Err(_) => None,
        };
        let mut s = self.lock();
        s.refreshing = false;
        match read {
            Ok(pins) => {
                let mut map: HashMap<String, Vec<String>> = HashMap::new();
                for p in pins {
                    map.entry(p.address).or_default().push(p.fingerprint);
                }
                let snap: Snapshot = Arc::new(map);
                s.snapshot = Some(Arc::clone(&snap));
                s.read_at = Some(Instant::now());
                if let (Some(m), Some(n)) = (&self.metrics, pending) {
                    m.key_changes_pending(n);
                }
                Ok(snap)
            }
            Err(e) => {
                tracing::warn!(
                    "key store {}: pins not re-read ({e}); the last ones read stay in force",
                    self.store.describe()
                );
                // Try again at the next lookup after `refresh`, not at once.
                if s.snapshot.is_some() {
                    s.read_at = Some(Instant::now());
                }
                Err(e)
            }
        }
    }
}
