//! The stream of an admitted connection ([`Admitted`]): it holds the
//! connection's slot until dropped, follows the bytes read until the
//! first command (OPTNEG) is in, and fails reads once the connection was
//! closed to make room or the negotiation deadline
//! (`limits.negotiation_timeout_ms`) passed first.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use super::{EVICTED, NEGOTIATED, Slot, TIMED_OUT};
use crate::metrics::ConnectionDrop;

/// Follows the packets read until the option negotiation (`O`) is in.
/// Framing as indymilter reads it: a 4-byte length, the kind byte (read
/// even when the length is 0), then length − 1 bytes. Other packets (a
/// macro definition, a zero-length packet) do not negotiate.
#[derive(Debug, Default)]
pub(super) struct FirstPacket {
    header: [u8; 5],
    have: usize,
    left: u64,
}

impl FirstPacket {
    /// Takes bytes read; `true` once a whole OPTNEG packet is in.
    pub(super) fn feed(&mut self, mut data: &[u8]) -> bool {
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
    pub(super) fn new(inner: S, slot: Slot) -> Self {
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
