//! The accepting side ([`Limited`]): an indymilter listener that admits
//! each accepted connection through [`Slots`] (or closes it at once), and
//! rides out accept errors that concern one connection or a passing
//! shortage of file descriptors.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::time::Sleep;

use super::Slots;
use super::stream::Admitted;
use crate::milter::peer::HasPeer;

/// At most this many connections are refused in one accept poll before
/// the accept loop yields to the other tasks on the thread.
const REFUSALS_PER_POLL: usize = 64;

/// A listener whose connections are admitted through [`Slots`] (see the
/// `slots` module documentation). Accept errors that concern one connection or a
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
pub(super) fn transient(e: &io::Error) -> Option<Duration> {
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
