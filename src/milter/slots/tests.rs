//! Tests of the slot accounting, the admitted stream and the listener's
//! error handling.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::io;

use super::listener::transient;
use super::stream::FirstPacket;
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
