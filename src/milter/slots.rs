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

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker, ready};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use super::peer::{HasPeer, Peer};
use crate::config::LimitsConfig;
use crate::metrics::{ConnectionDrop, Metrics};

/// A connection that has not negotiated (it may be closed to make room).
const PENDING: u8 = 0;
/// The first command arrived: the connection keeps its slot.
const NEGOTIATED: u8 = 1;
/// Closed to make room: its slot went to a newer connection.
const EVICTED: u8 = 2;
/// The negotiation deadline passed.
const TIMED_OUT: u8 = 3;

/// At most this many connections are refused in one accept poll before
/// the accept loop yields to the other tasks on the thread.
const REFUSALS_PER_POLL: usize = 64;

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

/// Follows the packets read until the option negotiation (`O`) is in.
/// Framing as indymilter reads it: a 4-byte length, the kind byte (read
/// even when the length is 0), then length − 1 bytes. Other packets (a
/// macro definition, a zero-length packet) do not negotiate.
#[derive(Debug, Default)]
struct FirstPacket {
    header: [u8; 5],
    have: usize,
    left: u64,
}

impl FirstPacket {
    /// Takes bytes read; `true` once a whole OPTNEG packet is in.
    fn feed(&mut self, mut data: &[u8]) -> bool {
        loop {
            if self.have < 5 {
                let n = (5 - self.have).min(data.len());
                self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
                self.have += n;
                data = &data[n..];
                if self.have < 5 {
                    return false;
                }
                let [a, b, c, d, _] = self.header;
                self.left = u64::from(u32::from_be_bytes([a, b, c, d]).saturating_sub(1));
            }
            let n = u64::try_from(data.len()).unwrap_or(u64::MAX).min(self.left);
            self.left -= n;
            data = &data[usize::try_from(n).unwrap_or(data.len())..];
            if self.left > 0 {
                return false;
            }
            if self.header[4] == b'O' {
                return true;
            }
            self.have = 0;
            if data.is_empty() {
                return false;
            }
        }
    }
}

/// The stream of an admitted connection: holds its slot, and fails reads
/// once the connection was closed to make room or its negotiation
/// deadline passed (indymilter then ends the session and closes it).
#[derive(Debug)]
pub struct Admitted<S> {
    inner: S,
    slot: Slot,
    /// Until the first command is in.
    deadline: Option<Pin<Box<Sleep>>>,
    first: FirstPacket,
}

impl<S> Admitted<S> {
    fn new(inner: S, slot: Slot) -> Self {
        let ms = slot.slots.negotiation_timeout_ms.load(Ordering::Relaxed);
        Admitted {
            inner,
            slot,
            deadline: Some(Box::pin(tokio::time::sleep(Duration::from_millis(ms)))),
            first: FirstPacket::default(),
        }
    }

    fn evicted() -> io::Error {
        io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "closed to make room for another connection at the connection limit",
        )
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Admitted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        // Register before looking, so an eviction in between wakes us (a
        // negotiated connection can be closed to make room too).
        {
            let mut w = this.slot.conn.waker();
            if !w.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *w = Some(cx.waker().clone());
            }
        }
        if this.slot.state() == EVICTED {
            return Poll::Ready(Err(Self::evicted()));
        }
        if let Some(deadline) = this.deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            if this.slot.settle(TIMED_OUT) {
                this.slot.slots.dropped(ConnectionDrop::NegotiationTimeout);
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no milter command within the negotiation timeout",
                )));
            }
            return Poll::Ready(Err(Self::evicted()));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if this.deadline.is_some() && this.first.feed(&buf.filled()[before..]) {
            if !this.slot.settle(NEGOTIATED) {
                return Poll::Ready(Err(Self::evicted()));
            }
            this.deadline = None;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Admitted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A listener whose connections are admitted through [`Slots`] (see the
/// module documentation). Accept errors that concern one connection or a
/// passing shortage of file descriptors are retried, not fatal.
pub struct Limited<L> {
    inner: L,
    slots: Arc<Slots>,
    backoff: Option<Pin<Box<Sleep>>>,
}

impl<L> Limited<L> {
    /// Wraps `inner`.
    pub fn new(inner: L, slots: Arc<Slots>) -> Self {
        Limited {
            inner,
            slots,
            backoff: None,
        }
    }
}

/// Whether an accept error concerns one connection or a passing shortage
/// (EMFILE, ENFILE, ENOBUFS, ENOMEM on Linux), so accepting should go on.
fn transient(e: &io::Error) -> Option<Duration> {
    match e.kind() {
        io::ErrorKind::ConnectionAborted
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::Interrupted => Some(Duration::ZERO),
        _ if matches!(e.raw_os_error(), Some(12 | 23 | 24 | 105)) => {
            Some(Duration::from_millis(100))
        }
        _ => None,
    }
}

impl<L> indymilter::Listener for Limited<L>
where
    L: indymilter::Listener,
    L::Io: HasPeer,
{
    type Io = Admitted<L::Io>;

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Self::Io>> {
        if let Some(b) = self.backoff.as_mut() {
            ready!(b.as_mut().poll(cx));
            self.backoff = None;
        }
        for _ in 0..REFUSALS_PER_POLL {
            let stream = match ready!(self.inner.poll_accept(cx)) {
                Ok(s) => s,
                Err(e) => match transient(&e) {
                    Some(Duration::ZERO) => continue,
                    Some(wait) => {
                        tracing::warn!("milter socket: accept failed, retrying: {e}");
                        let mut sleep = Box::pin(tokio::time::sleep(wait));
                        if sleep.as_mut().poll(cx).is_pending() {
                            self.backoff = Some(sleep);
                            return Poll::Pending;
                        }
                        continue;
                    }
                    None => return Poll::Ready(Err(e)),
                },
            };
            match self.slots.admit(stream.peer()) {
                Some(slot) => return Poll::Ready(Ok(Admitted::new(stream, slot))),
                // Closed at once: the MTA sees the end of the connection
                // and applies milter_default_action.
                None => drop(stream),
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// The indymilter connection limit: high enough never to be reached, as
/// [`Slots`] does the limiting (indymilter would stop accepting instead).
pub const UNLIMITED: usize = tokio::sync::Semaphore::MAX_PERMITS;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    fn slots(max: usize) -> Arc<Slots> {
        let limits = LimitsConfig {
            max_connections: max,
            negotiation_timeout_ms: 100,
            ..LimitsConfig::default()
        };
        Slots::new(&limits, Metrics::new())
    }

    #[test]
    fn accept_errors_of_one_connection_or_out_of_descriptors_are_retried() {
        let e = io::Error::from(io::ErrorKind::ConnectionAborted);
        assert_eq!(transient(&e), Some(Duration::ZERO));
        for errno in [12, 23, 24, 105] {
            let e = io::Error::from_raw_os_error(errno);
            assert_eq!(transient(&e), Some(Duration::from_millis(100)), "{e}");
        }
        // EBADF, EINVAL: the listener itself is broken.
        for errno in [9, 22] {
            assert_eq!(transient(&io::Error::from_raw_os_error(errno)), None);
        }
    }

    #[test]
    fn first_packet_is_followed_across_reads() {
        let mut f = FirstPacket::default();
        assert!(!f.feed(&[0, 0]));
        assert!(!f.feed(&[0, 3, b'O']));
        assert!(!f.feed(&[1]));
        assert!(f.feed(&[2, 99, 99]));
        // Only OPTNEG negotiates: not a zero-length packet, nor a macro
        // definition before it.
        let mut f = FirstPacket::default();
        assert!(!f.feed(&[0, 0, 0, 0]));
        let mut f = FirstPacket::default();
        assert!(!f.feed(&[0, 0, 0, 3, b'D', b'C', 0]));
        assert!(f.feed(&[0, 0, 0, 1, b'O']));
        let mut f = FirstPacket::default();
        assert!(f.feed(&[0, 0, 0, 2, b'D', 0, 0, 0, 0, 1, b'O']));
    }

    #[tokio::test]
    async fn a_full_house_evicts_the_oldest_unnegotiated_then_refuses() {
        let s = slots(2);
        let a = s.admit(Peer::Loopback).unwrap();
        let b = s.admit(Peer::Loopback).unwrap();
        assert!(b.settle(NEGOTIATED));
        assert_eq!(s.open(), 2);
        // Full: `a` has not negotiated and makes room.
        let c = s.admit(Peer::Loopback).unwrap();
        assert_eq!(a.state(), EVICTED);
        assert_eq!(s.open(), 2);
        assert!(c.settle(NEGOTIATED));
        // Full of negotiated connections: refused.
        assert!(s.admit(Peer::Loopback).is_none());
        // The evicted connection's drop frees nothing (its slot moved).
        drop(a);
        assert_eq!(s.open(), 2);
        drop(b);
        assert_eq!(s.open(), 1);
        let d = s.admit(Peer::Loopback).unwrap();
        drop((c, d));
        assert_eq!(s.open(), 0);
        assert_eq!(s.pending_count.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_peer_on_every_slot_gives_way_to_another_peer() {
        let s = slots(4);
        let hostile = Peer::Uid(1000);
        let mta = Peer::Uid(101);
        let held: Vec<Slot> = (0..4).map(|_| s.admit(hostile).unwrap()).collect();
        for h in &held {
            assert!(h.settle(NEGOTIATED));
        }
        // The same peer gets nothing more.
        assert!(s.admit(hostile).is_none());
        // Another peer takes the hostile peer's slots, oldest first, until
        // both hold the same number.
        let a = s.admit(mta).unwrap();
        assert!(a.settle(NEGOTIATED));
        assert_eq!(held[0].state(), EVICTED);
        let b = s.admit(mta).unwrap();
        assert!(b.settle(NEGOTIATED));
        assert_eq!(held[1].state(), EVICTED);
        assert!(s.admit(mta).is_none(), "2 against 2: shares are even");
        assert!(s.admit(hostile).is_none());
        assert_eq!(s.open(), 4);
        // An over-share peer's not-negotiated connection goes first.
        drop(b);
        let fresh = s.admit(hostile).unwrap();
        assert_eq!(s.table().peers[&hostile].count, 3);
        let _c = s.admit(mta).unwrap();
        assert_eq!(fresh.state(), EVICTED);
        assert_eq!(held[2].state(), NEGOTIATED);
        drop(held);
        drop((a, fresh, _c));
        assert_eq!(s.open(), 0);
        assert!(s.table().peers.is_empty());
        assert_eq!(s.pending_count.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_negotiated_stream_closed_to_make_room_fails_its_next_read() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let s = slots(2);
        let (mut client, server) = tokio::io::duplex(64);
        let mut a = Admitted::new(server, s.admit(Peer::Uid(1000)).unwrap());
        let other = s.admit(Peer::Uid(1000)).unwrap();
        assert!(other.settle(NEGOTIATED));
        client.write_all(&[0, 0, 0, 1, b'O']).await.unwrap();
        assert_eq!(a.read(&mut [0u8; 8]).await.unwrap(), 5);
        let reader = tokio::spawn(async move { a.read(&mut [0u8; 8]).await.map(|_| ()) });
        tokio::task::yield_now().await;
        let _b = s.admit(Peer::Uid(101)).unwrap();
        let e = reader.await.unwrap().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionAborted);
        drop(client);
        assert_eq!(s.open(), 2);
        drop(other);
        assert_eq!(s.open(), 1);
    }

    #[tokio::test]
    async fn the_pending_queue_stays_bounded() {
        let s = slots(4);
        for _ in 0..10_000 {
            let a = s.admit(Peer::Loopback).unwrap();
            assert!(a.settle(NEGOTIATED));
        }
        assert!(s.table().pending.len() <= 32, "{}", s.table().pending.len());
        assert_eq!(s.open(), 0);
    }

    #[tokio::test]
    async fn an_unnegotiated_stream_fails_at_the_deadline() {
        use tokio::io::AsyncReadExt;
        let s = slots(4);
        let (client, server) = tokio::io::duplex(64);
        let mut a = Admitted::new(server, s.admit(Peer::Loopback).unwrap());
        let mut buf = [0u8; 8];
        let e = a.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        drop((a, client));
        assert_eq!(s.open(), 0);
    }

    #[tokio::test]
    async fn a_negotiated_stream_has_no_deadline_and_eviction_wakes_a_reader() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let s = slots(1);
        let (mut client, server) = tokio::io::duplex(64);
        let mut a = Admitted::new(server, s.admit(Peer::Loopback).unwrap());
        client.write_all(&[0, 0, 0, 1, b'O']).await.unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(a.read(&mut buf).await.unwrap(), 5);
        // Well past the 100 ms deadline.
        tokio::time::sleep(Duration::from_millis(300)).await;
        client.write_all(b"x").await.unwrap();
        assert_eq!(a.read(&mut buf).await.unwrap(), 1);
        drop(a);

        // A reader waiting on an unnegotiated connection is woken when a
        // newer connection takes its slot.
        let (_client, server) = tokio::io::duplex(64);
        let mut b = Admitted::new(server, s.admit(Peer::Loopback).unwrap());
        let reader = tokio::spawn(async move { b.read(&mut [0u8; 8]).await.map(|_| ()) });
        tokio::task::yield_now().await;
        let _c = s.admit(Peer::Loopback).unwrap();
        let e = reader.await.unwrap().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionAborted);
    }
}
