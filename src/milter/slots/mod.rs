//! Connection slots: how many milter connections may be open at once
//! (`limits.max_connections`), which of them have not negotiated yet and
//! by when they must (`limits.negotiation_timeout_ms`), and what becomes of
//! a new connection when every slot is taken.
//!
//! indymilter takes a slot *before* it accepts, so once its limit is
//! reached new connections wait in the kernel's backlog, unanswered, and
//! the MTA gives up on each after its own timeout. Here indymilter's limit
//! is effectively off and [`Limited`] decides at accept time instead:
//!
//! * a free slot: the connection is admitted;
//! * no free slot, but a connection that has not sent its first command
//!   (OPTNEG): the oldest such connection is closed and the new one takes
//!   its slot. An MTA negotiates at once, so idle connects cannot crowd it
//!   out;
//! * no free slot, and another peer (see `peer.rs`: a unix-socket user,
//!   a remote address, or loopback as one) holds at least two more slots
//!   than the newcomer's peer: one of that peer's connections (one not
//!   negotiated if it has one, else its oldest) is closed and the newcomer
//!   takes its slot. Slots are so shared out evenly between peers: a
//!   hostile local user who negotiates on every slot and sits idle cannot
//!   keep the MTA out, the MTA keeps at least half the slots against one
//!   such user, and an MTA holding no more than half never loses one;
//! * every slot held by a negotiated connection of peers no bigger than
//!   the newcomer's: the new connection is accepted and closed at once,
//!   so the MTA applies its `milter_default_action` without waiting.
//!
//! [`Admitted`] wraps the stream of an admitted connection: it holds the
//! slot until the stream is dropped and closes a connection whose first
//! command has not arrived by the negotiation deadline.
//!
//! This file owns the slot accounting ([`Slots`]: who holds which slot,
//! eviction, the drop warnings); `listener.rs` the accepting ([`Limited`]),
//! `stream.rs` the admitted stream and its negotiation deadline
//! ([`Admitted`]).

mod listener;
mod stream;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::Waker;
use std::time::{Duration, Instant};

use super::peer::Peer;
use crate::config::LimitsConfig;
use crate::metrics::{ConnectionDrop, Metrics};

pub use listener::{Limited, UNLIMITED};
#[cfg(test)]
use stream::Admitted;

/// A connection that has not negotiated (it may be closed to make room).
const PENDING: u8 = 0;
/// The first command arrived: the connection keeps its slot.
const NEGOTIATED: u8 = 1;
/// Closed to make room: its slot went to a newer connection.
const EVICTED: u8 = 2;
/// The negotiation deadline passed.
const TIMED_OUT: u8 = 3;

/// How often the warning about refused or closed connections is logged
/// at most (each connection is counted in the metrics).
const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// The slots of the process, shared by the listener and the sessions.
#[derive(Debug)]
pub struct Slots {
    max: AtomicUsize,
    negotiation_timeout_ms: AtomicU64,
    /// Connections holding a slot.
    open: AtomicUsize,
    /// Who holds which slot.
    table: Mutex<Table>,
    pending_count: AtomicUsize,
    metrics: Metrics,
    started: Instant,
    last_warning_ms: AtomicU64,
}

/// The connections holding slots, by state and by peer.
#[derive(Debug, Default)]
struct Table {
    /// Connections not negotiated yet, oldest first (stale entries are
    /// skipped and compacted away).
    pending: VecDeque<Weak<Conn>>,
    /// Every peer holding a slot (a peer leaves with its last slot).
    peers: HashMap<Peer, Held>,
}

/// The slots one peer holds.
#[derive(Debug, Default)]
struct Held {
    count: usize,
    /// Its connections, oldest first (stale entries compacted away).
    conns: VecDeque<Weak<Conn>>,
}

impl Table {
    /// `peer` gives up one slot.
    fn release(&mut self, peer: Peer) {
        if let Some(h) = self.peers.get_mut(&peer) {
            h.count = h.count.saturating_sub(1);
            if h.count == 0 {
                self.peers.remove(&peer);
            }
        }
    }
}

/// The shared state of one admitted connection.
#[derive(Debug, Default)]
struct Conn {
    state: AtomicU8,
    peer: Peer,
    waker: Mutex<Option<Waker>>,
}

/// Whether a connection still holds its slot.
fn live(state: u8) -> bool {
    matches!(state, PENDING | NEGOTIATED)
}

impl Conn {
    fn waker(&self) -> MutexGuard<'_, Option<Waker>> {
        self.waker.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Slots {
    /// Slots as configured in `limits`.
    pub fn new(limits: &LimitsConfig, metrics: Metrics) -> Arc<Slots> {
        let slots = Arc::new(Slots {
            max: AtomicUsize::new(limits.max_connections),
            negotiation_timeout_ms: AtomicU64::new(limits.negotiation_timeout_ms),
            open: AtomicUsize::new(0),
            table: Mutex::new(Table::default()),
            pending_count: AtomicUsize::new(0),
            metrics,
            started: Instant::now(),
            last_warning_ms: AtomicU64::new(0),
        });
        slots.publish();
        slots
    }

    /// Applies reloaded limits to connections accepted from now on (a
    /// lower `max_connections` closes nothing that is open).
    pub fn reconfigure(&self, limits: &LimitsConfig) {
        self.max.store(limits.max_connections, Ordering::Relaxed);
        self.negotiation_timeout_ms
            .store(limits.negotiation_timeout_ms, Ordering::Relaxed);
        self.publish();
    }

    /// Connections holding a slot.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Mirrors the counts into the metrics (and so into `/healthz`).
    fn publish(&self) {
        self.metrics.connection_slots(
            self.open.load(Ordering::Relaxed),
            self.pending_count.load(Ordering::Relaxed),
            self.max.load(Ordering::Relaxed),
        );
    }

    /// A slot for a connection from `peer` just accepted, or `None`:
    /// close it.
    fn admit(self: &Arc<Self>, peer: Peer) -> Option<Slot> {
        let conn = Arc::new(Conn {
            peer,
            ..Conn::default()
        });
        let max = self.max.load(Ordering::Relaxed);
        let mut table = self.table();
        let took = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok();
        if !took && !self.evict_over_share(&mut table, peer) && !self.evict_oldest(&mut table) {
            drop(table);
            self.dropped(ConnectionDrop::Limit);
            return None;
        }
        // Entries of connections that negotiated or closed are dropped
        // once they outnumber the slots: the queue stays O(max).
        if table.pending.len() >= 2 * max.max(16) {
            table.pending.retain(|w| {
                w.upgrade()
                    .is_some_and(|c| c.state.load(Ordering::Acquire) == PENDING)
            });
        }
        table.pending.push_back(Arc::downgrade(&conn));
        let held = table.peers.entry(peer).or_default();
        held.count += 1;
        if held.conns.len() >= 2 * held.count + 16 {
            held.conns.retain(|w| {
                w.upgrade()
                    .is_some_and(|c| live(c.state.load(Ordering::Acquire)))
            });
        }
        held.conns.push_back(Arc::downgrade(&conn));
        drop(table);
        self.pending_count.fetch_add(1, Ordering::AcqRel);
        self.publish();
        Some(Slot {
            slots: self.clone(),
            conn,
        })
    }

    /// Closes the oldest connection that has not negotiated; its slot
    /// passes to the caller. `false` when there is none.
    fn evict_oldest(&self, table: &mut Table) -> bool {
        while let Some(weak) = table.pending.pop_front() {
            let Some(conn) = weak.upgrade() else { continue };
            if self.evict(table, &conn, PENDING) {
                self.dropped(ConnectionDrop::Evicted);
                return true;
            }
        }
        false
    }

    /// Closes a connection of the peer holding the most slots, if that
    /// is at least two more than `newcomer` holds (it then still holds at
    /// least as many as the newcomer); its slot passes to the caller. A
    /// connection that has not negotiated goes first, else the oldest.
    fn evict_over_share(&self, table: &mut Table, newcomer: Peer) -> bool {
        let mine = table.peers.get(&newcomer).map_or(0, |h| h.count);
        let Some(top) = table
            .peers
            .iter()
            .filter(|(p, h)| **p != newcomer && h.count > mine + 1)
            .max_by_key(|(_, h)| h.count)
            .map(|(p, _)| *p)
        else {
            return false;
        };
        let candidates: Vec<Arc<Conn>> = table
            .peers
            .get(&top)
            .map(|h| h.conns.iter().filter_map(Weak::upgrade).collect())
            .unwrap_or_default();
        let pending_first = candidates
            .iter()
            .map(|c| (c, PENDING))
            .chain(candidates.iter().map(|c| (c, NEGOTIATED)));
        for (conn, from) in pending_first {
            if self.evict(table, conn, from) {
                self.dropped(ConnectionDrop::OverShare);
                return true;
            }
        }
        false
    }

    /// Closes `conn` if it is in state `from`; its slot passes on.
    fn evict(&self, table: &mut Table, conn: &Conn, from: u8) -> bool {
        if conn
            .state
            .compare_exchange(from, EVICTED, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        if from == PENDING {
            self.pending_count.fetch_sub(1, Ordering::AcqRel);
        }
        table.release(conn.peer);
        if let Some(w) = conn.waker().take() {
            w.wake();
        }
        true
    }

    fn dropped(&self, reason: ConnectionDrop) {
        self.metrics.connection_dropped(reason);
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.last_warning_ms.load(Ordering::Relaxed);
        let interval = u64::try_from(WARN_INTERVAL.as_millis()).unwrap_or(u64::MAX);
        if (last == 0 || now.saturating_sub(last) >= interval)
            && self
                .last_warning_ms
                .compare_exchange(last, now.max(1), Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            let max = self.max.load(Ordering::Relaxed);
            let timeout = self.negotiation_timeout_ms.load(Ordering::Relaxed);
            match reason {
                ConnectionDrop::Limit => tracing::warn!(
                    "milter connection limit ({max}) reached: closing new connections at once \
                     (see autoencrypt_connections_dropped_total)"
                ),
                ConnectionDrop::Evicted => tracing::warn!(
                    "milter connection limit ({max}) reached: closing connections that have not \
                     negotiated to make room (see autoencrypt_connections_dropped_total)"
                ),
                ConnectionDrop::OverShare => tracing::warn!(
                    "milter connection limit ({max}) reached: closing connections of the peer \
                     holding the most slots to make room for another peer \
                     (see autoencrypt_connections_dropped_total)"
                ),
                ConnectionDrop::NegotiationTimeout => tracing::warn!(
                    "closing milter connections that sent no command within {timeout} ms \
                     (see autoencrypt_connections_dropped_total)"
                ),
            }
        }
    }
}

/// One connection's hold on a slot; dropping it frees the slot (unless
/// the slot was passed on when the connection was closed to make room).
#[derive(Debug)]
struct Slot {
    slots: Arc<Slots>,
    conn: Arc<Conn>,
}

impl Slot {
    fn state(&self) -> u8 {
        self.conn.state.load(Ordering::Acquire)
    }

    /// Leaves the pending state for `to`; `false` if it was left already
    /// (evicted).
    fn settle(&self, to: u8) -> bool {
        let ok = self
            .conn
            .state
            .compare_exchange(PENDING, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if ok {
            self.slots.pending_count.fetch_sub(1, Ordering::AcqRel);
            self.slots.publish();
        }
        ok
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        match self.conn.state.swap(TIMED_OUT, Ordering::AcqRel) {
            EVICTED => return,
            PENDING => {
                self.slots.pending_count.fetch_sub(1, Ordering::AcqRel);
            }
            _ => {}
        }
        self.slots.table().release(self.conn.peer);
        self.slots.open.fetch_sub(1, Ordering::AcqRel);
        self.slots.publish();
    }
}
