//! The pins the key store holds (`keys pin`): a snapshot of all of them,
//! which every lookup reads without waiting for the store. A task re-reads
//! it every `store.refresh_secs` (the staleness the documentation promises
//! a fleet), from the first lookup on, for as long as the engine lives; a
//! failed re-read keeps the last snapshot: a pin once seen is never
//! dropped because the store is down, and a reload takes over the
//! snapshot of the engine before it ([`StorePins::take_over`]). Until a
//! first read succeeds nothing is known, and lookups fail (a pinned
//! address must never be encrypted to another key because the store could
//! not be asked).

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
    /// The re-reading task runs.
    ticking: bool,
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

    /// Takes over what `old` (the engine before a reload) has read, when
    /// both read the same store: a reload while the store is down keeps
    /// the pins in force instead of knowing none.
    pub(crate) fn take_over(&self, old: &StorePins) {
        if old.store.describe() != self.store.describe() {
            return;
        }
        let (snapshot, read_at) = {
            let o = old.lock();
            (o.snapshot.clone(), o.read_at)
        };
        let mut s = self.lock();
        if s.snapshot.is_none() {
            s.snapshot = snapshot;
            s.read_at = read_at;
        }
    }

    /// Starts the task that re-reads the pins every `refresh` while this
    /// engine lives (it holds only a weak reference).
    fn tick(self: &Arc<Self>) {
        {
            let mut s = self.lock();
            if s.ticking {
                return;
            }
            s.ticking = true;
        }
        let weak = Arc::downgrade(self);
        let refresh = self.refresh;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(refresh).await;
                let Some(me) = weak.upgrade() else { break };
                let _ = me.reread().await;
            }
        });
    }

    /// The fingerprints pinned for `addr` (empty: not pinned), or why they
    /// cannot be known.
    pub(crate) async fn for_address(
        self: &Arc<Self>,
        addr: &Address,
    ) -> Result<Vec<String>, FailReason> {
        self.tick();
        let key = store_key(addr);
        let (snapshot, start) = {
            let mut s = self.lock();
            // Behind the task (the store was slow): read again now, in the
            // background.
            let stale = s.read_at.is_none_or(|t| t.elapsed() >= 2 * self.refresh);
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
            Ok(_) => self
                .store
                .pending_changes()
                .await
                .ok()
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
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
                if s.snapshot.is_some() {
                    tracing::warn!(
                        "key store {}: pins not re-read ({e}); the last ones read stay in force",
                        self.store.describe()
                    );
                } else {
                    tracing::warn!(
                        "key store {}: pins not read ({e}); lookups fail until they are",
                        self.store.describe()
                    );
                }
                // Try again at the next lookup after `refresh`, not at once.
                if s.snapshot.is_some() {
                    s.read_at = Some(Instant::now());
                }
                Err(e)
            }
        }
    }
}
