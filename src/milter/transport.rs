//! The byte stream of a milter connection: the listeners for TCP
//! (`TCP_NODELAY`) and unix sockets, and [`Coalesce`], which sends the
//! end-of-message actions together with the final reply.
//!
//! indymilter writes and flushes every reply and action on its own. At the
//! end of an encrypted message that is one `send` per header edit, one per
//! 64 KiB of new body and one for the final reply, and the MTA wakes up
//! for each. The MTA acts on none of them before the final reply, so
//! [`Coalesce`] holds modification actions back (up to [`HOLD_LIMIT`]
//! bytes) and sends them with the next reply that is not one.
//!
//! On the way in, [`Coalesce`] follows the frames too and fails the read of
//! a macro definition larger than [`MAX_MACRO_PACKET`]: indymilter keeps
//! every stage's last definition for the life of the connection, and a
//! packet (up to 1 MiB) of tiny entries costs some 40 times its size.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Once this many bytes are held they are sent at the next write or
/// flush; at most one more write (tokio's `BufWriter` passes writes of its
/// capacity, 8 KiB, and more straight through) is added first.
pub const HOLD_LIMIT: usize = 64 * 1024;

/// The largest macro definition (`SMFIC_MACRO`, `D`) taken. The MTA sends
/// only the macros asked for at negotiation (a few short values); 1 MiB of
/// `k\0\0` entries for each of the seven stages took ~42 MB per connection.
pub const MAX_MACRO_PACKET: u32 = 16 * 1024;

/// Follows the frames read, to refuse an oversized macro definition
/// before indymilter parses it.
#[derive(Debug, Default)]
struct Inbound {
    header: [u8; 5],
    have: usize,
    payload_left: u64,
}

impl Inbound {
    fn feed(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            if self.payload_left > 0 {
                let n =
                    usize::try_from(self.payload_left).map_or(data.len(), |l| l.min(data.len()));
                self.payload_left -= n as u64;
                data = &data[n..];
                continue;
            }
            let n = (5 - self.have).min(data.len());
            self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have == 5 {
                self.have = 0;
                let [a, b, c, d, kind] = self.header;
                // The length counts the kind byte.
                let len = u32::from_be_bytes([a, b, c, d]).saturating_sub(1);
                if kind == b'D' && len > MAX_MACRO_PACKET {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("macro definition of {len} bytes (more than {MAX_MACRO_PACKET})"),
                    ));
                }
                self.payload_left = u64::from(len);
            }
        }
        Ok(())
    }
}

/// Milter replies that modify the message (RFC-less "milter protocol 6":
/// `SMFIR_ADDRCPT`, `DELRCPT`, `ADDRCPT_PAR`, `REPLBODY`, `CHGFROM`,
/// `ADDHEADER`, `INSHEADER`, `CHGHEADER`). The MTA collects them until the
/// final reply; every other reply (including progress) is sent at once.
fn is_modification(kind: u8) -> bool {
    matches!(kind, b'+' | b'-' | b'2' | b'b' | b'e' | b'h' | b'i' | b'm')
}

/// Follows the frames (4-byte length, 1-byte kind, payload) written.
#[derive(Debug, Default)]
struct Frames {
    /// Header bytes of the frame being read, and how many are in.
    header: [u8; 5],
    have: usize,
    /// Payload bytes of the current frame still to come.
    payload_left: usize,
    /// Kind of the last frame that is complete, if the stream is between
    /// frames.
    last_complete: Option<u8>,
}

impl Frames {
    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.payload_left > 0 {
                let n = self.payload_left.min(data.len());
                self.payload_left -= n;
                data = &data[n..];
                if self.payload_left == 0 {
                    self.last_complete = Some(self.header[4]);
                }
                continue;
            }
            self.last_complete = None;
            let n = (5 - self.have).min(data.len());
            self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have == 5 {
                self.have = 0;
                let [a, b, c, d, kind] = self.header;
                let len = u32::from_be_bytes([a, b, c, d]);
                // The length counts the kind byte.
                self.payload_left = usize::try_from(len.saturating_sub(1)).unwrap_or(usize::MAX);
                if self.payload_left == 0 {
                    self.last_complete = Some(kind);
                }
            }
        }
    }

    /// Whether what was written so far ends with a whole modification
    /// action, so nothing the MTA waits for is held back.
    fn ends_with_modification(&self) -> bool {
        self.last_complete.is_some_and(is_modification)
    }
}

/// Holds modification actions back until the reply that ends them; see
/// the module documentation. Reads pass straight through.
#[derive(Debug)]
pub struct Coalesce<S> {
    inner: S,
    pending: Vec<u8>,
    sent: usize,
    frames: Frames,
    inbound: Inbound,
}

impl<S> Coalesce<S> {
    /// Wraps a connected stream.
    pub fn new(inner: S) -> Self {
        Coalesce {
            inner,
            pending: Vec::new(),
            sent: 0,
            frames: Frames::default(),
            inbound: Inbound::default(),
        }
    }
}

impl<S: super::peer::HasPeer> super::peer::HasPeer for Coalesce<S> {
    fn peer(&self) -> super::peer::Peer {
        self.inner.peer()
    }
}

impl<S: AsyncWrite + Unpin> Coalesce<S> {
    /// Writes out everything held.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.pending.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.sent = 0;
        if self.pending.capacity() > 2 * HOLD_LIMIT {
            // A long-lived connection keeps no large buffer idle.
            self.pending = Vec::new();
        } else {
            self.pending.clear();
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Coalesce<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let this = &mut *self;
        Poll::Ready(this.inbound.feed(&buf.filled()[before..]))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesce<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // Bounded: a flush follows every message indymilter writes.
        if self.pending.len() >= HOLD_LIMIT {
            ready!(self.poll_send(cx))?;
        }
        self.pending.extend_from_slice(buf);
        self.frames.feed(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.frames.ends_with_modification() && self.pending.len() < HOLD_LIMIT {
            return Poll::Ready(Ok(()));
        }
        ready!(self.poll_send(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_send(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A TCP listener for milter connections: `TCP_NODELAY` on each (replies
/// must not wait for the MTA's delayed ACK), wrapped in `Coalesce` (end-of-message actions in one write).
pub struct TcpMilterListener(pub tokio::net::TcpListener);

impl indymilter::Listener for TcpMilterListener {
    type Io = Coalesce<tokio::net::TcpStream>;

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Self::Io>> {
        self.0.poll_accept(cx).map_ok(|(stream, _)| {
            let _ = stream.set_nodelay(true);
            Coalesce::new(stream)
        })
    }
}

/// A unix-socket listener for milter connections, wrapped in `Coalesce`.
pub struct UnixMilterListener(pub tokio::net::UnixListener);

impl indymilter::Listener for UnixMilterListener {
    type Io = Coalesce<tokio::net::UnixStream>;

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Self::Io>> {
        self.0
            .poll_accept(cx)
            .map_ok(|(stream, _)| Coalesce::new(stream))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;
    use tokio::io::AsyncWriteExt;

    /// Records every write that reaches the "socket".
    #[derive(Default)]
    struct Recorder {
        writes: Vec<Vec<u8>>,
        flushes: usize,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.writes.push(buf.to_vec());
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            self.flushes += 1;
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = u32::try_from(payload.len() + 1)
            .unwrap()
            .to_be_bytes()
            .to_vec();
        v.push(kind);
        v.extend_from_slice(payload);
        v
    }

    /// Writes each frame and flushes after it, as indymilter does.
    async fn send_each(c: &mut Coalesce<Recorder>, frames: &[Vec<u8>]) {
        for f in frames {
            c.write_all(f).await.unwrap();
            c.flush().await.unwrap();
        }
    }

    #[tokio::test]
    async fn actions_go_out_with_the_final_reply() {
        let mut c = Coalesce::new(Recorder::default());
        let frames = [
            frame(b'm', b"\0\0\0\x01Content-Type\0 application/pkcs7-mime\0"),
            frame(b'h', b"Content-Disposition\0 attachment\0"),
            frame(b'b', &[b'x'; 1000]),
            frame(b'c', b""),
        ];
        send_each(&mut c, &frames[..3]).await;
        assert!(c.inner.writes.is_empty(), "held until the final reply");
        send_each(&mut c, &frames[3..]).await;
        assert_eq!(c.inner.writes, vec![frames.concat()]);
        assert_eq!(c.inner.flushes, 1);
    }

    #[tokio::test]
    async fn other_replies_are_sent_at_once() {
        for kind in [b'c', b'a', b'r', b't', b'y', b'p', b'O', b'q'] {
            let mut c = Coalesce::new(Recorder::default());
            let f = frame(kind, b"payload\0");
            send_each(&mut c, std::slice::from_ref(&f)).await;
            assert_eq!(c.inner.writes, vec![f], "kind {}", kind as char);
        }
    }

    #[tokio::test]
    async fn frames_split_across_writes_are_followed() {
        let mut c = Coalesce::new(Recorder::default());
        let body = frame(b'b', b"0123456789");
        // The header in two pieces, the payload in a third.
        for piece in [&body[..2], &body[2..7], &body[7..]] {
            c.write_all(piece).await.unwrap();
            c.flush().await.unwrap();
        }
        // A partial frame is never mistaken for a whole one: mid-frame the
        // kind is unknown, so the flush sends (nothing is held wrongly).
        assert_eq!(c.inner.writes.concat(), body[..7].to_vec());
        assert!(c.frames.ends_with_modification());
        send_each(&mut c, &[frame(b'c', b"")]).await;
        assert_eq!(c.inner.writes.concat(), [body, frame(b'c', b"")].concat());
    }

    #[tokio::test]
    async fn at_most_hold_limit_is_held() {
        let mut c = Coalesce::new(Recorder::default());
        let chunk = frame(b'b', &vec![b'x'; 65_535]);
        send_each(&mut c, std::slice::from_ref(&chunk)).await;
        assert_eq!(c.inner.writes.concat(), chunk, "a full chunk goes out");
        send_each(&mut c, &[frame(b'h', b"X\0 y\0")]).await;
        assert_eq!(c.inner.writes.concat(), chunk, "a small action is held");
    }

    #[test]
    fn macro_definitions_beyond_the_limit_are_refused_across_reads() {
        let big = MAX_MACRO_PACKET + 2;
        let ok = frame(b'D', &vec![0; MAX_MACRO_PACKET as usize]);
        let mut stream = [frame(b'O', &[0; 12]), ok, frame(b'B', &vec![b'D'; 100_000])].concat();
        // A body chunk full of 'D' bytes is payload, not a frame.
        let mut i = Inbound::default();
        for piece in stream.chunks(7) {
            i.feed(piece).unwrap();
        }
        stream.extend_from_slice(&big.to_be_bytes());
        stream.push(b'D');
        let mut i = Inbound::default();
        let (head, tail) = stream.split_at(stream.len() - 3);
        i.feed(head).unwrap();
        let e = i.feed(tail).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn shutdown_sends_what_is_held() {
        let mut c = Coalesce::new(Recorder::default());
        let f = frame(b'h', b"X\0 y\0");
        send_each(&mut c, std::slice::from_ref(&f)).await;
        assert!(c.inner.writes.is_empty());
        c.shutdown().await.unwrap();
        assert_eq!(c.inner.writes, vec![f]);
    }
}
