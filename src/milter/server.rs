//! The milter's sockets and its life: binding the configured socket,
//! serving connections, reloading on request, and the graceful stop.
//!
//! [`serve`] takes its inputs as values — a bound [`Listening`], the
//! [`Shared`] state, a channel of reload requests and a shutdown future —
//! so that tests reload and stop it in-process; the binary turns SIGHUP
//! into reload requests and SIGTERM/SIGINT into the shutdown
//! (`cli::signals`).
//!
//! Shutdown: the listening socket is closed at once (the MTA's next
//! connection is refused and it applies `milter_default_action`); messages
//! in progress are finished for at most the shutdown deadline
//! ([`super::SHUTDOWN_DEADLINE`], 30 s); then every connection is told to
//! close, and a unix socket file is removed — also when the deadline won.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use super::engine::Shared;
use super::slots::{self, Limited};
use super::transport::{TcpMilterListener, UnixMilterListener};
use super::{callbacks, peer};
use crate::config::Socket;
use crate::metrics::Metrics;

/// After the deadline, how long connections get to notice they are
/// closed: one busy in a callback (an encryption, a lookup) notices only
/// when the callback returns, and the process must not wait for it
/// without bound.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The milter socket cannot be opened, or the milter failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Binding the socket failed.
    #[error("cannot listen on {socket}: {source}")]
    Bind {
        /// The socket as configured.
        socket: String,
        /// Why.
        source: std::io::Error,
    },
    /// The milter stopped with an error.
    #[error("milter failed: {0}")]
    Run(std::io::Error),
}

/// indymilter settings. Its connection limit is off: it would stop
/// accepting (see `slots.rs`, which limits instead).
fn milter_config(idle_timeout_secs: u64) -> indymilter::Config {
    indymilter::Config {
        max_connections: slots::UNLIMITED,
        actions: callbacks::required_actions(),
        connection_timeout: Duration::from_secs(idle_timeout_secs),
    }
}

/// Runs the milter on `listener` until `shutdown` completes, then closes
/// every connection; connections are admitted through the process's
/// connection slots. No drain and no reloads: see [`serve`] for those.
pub async fn run_on<L>(
    listener: L,
    shared: Arc<Shared>,
    shutdown: impl Future,
) -> Result<(), ServeError>
where
    L: indymilter::Listener,
    L::Io: peer::HasPeer,
{
    let config = milter_config(shared.process().idle_timeout_secs());
    let listener = Limited::new(listener, shared.connection_slots());
    indymilter::run(listener, callbacks::build(shared), config, shutdown)
        .await
        .map_err(ServeError::Run)
}

/// A bound milter socket, ready for [`serve`].
pub enum Listening {
    /// TCP (`inet:`, `inet6:`).
    Tcp(tokio::net::TcpListener),
    /// A unix socket; `path` is removed when [`serve`] returns.
    Unix {
        /// The listener.
        listener: tokio::net::UnixListener,
        /// Its file.
        path: PathBuf,
    },
}

impl Listening {
    /// Binds `socket`; a unix socket gets the permission bits `mode` (the
    /// MTA, another user, must be able to connect), and a socket file left
    /// by a previous run is replaced.
    pub async fn bind(socket: &Socket, mode: u32) -> Result<Listening, ServeError> {
        let bind_err = |source| ServeError::Bind {
            socket: socket.to_string(),
            source,
        };
        let listening = match socket {
            Socket::Inet { host, port } => Listening::Tcp(
                tokio::net::TcpListener::bind((host.as_str(), *port))
                    .await
                    .map_err(bind_err)?,
            ),
            Socket::Inet6 { addr, port } => Listening::Tcp(
                tokio::net::TcpListener::bind((*addr, *port))
                    .await
                    .map_err(bind_err)?,
            ),
            Socket::Unix(path) => {
                // A socket left by a previous run would make bind fail.
                if is_socket_file(path) {
                    let _ = std::fs::remove_file(path);
                }
                let listener = tokio::net::UnixListener::bind(path).map_err(bind_err)?;
                {
                    use std::os::unix::fs::PermissionsExt;
                    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
                }
                Listening::Unix {
                    listener,
                    path: path.clone(),
                }
            }
        };
        tracing::info!("listening on {socket}");
        Ok(listening)
    }
}

/// Removes a unix socket's file when dropped: when [`serve`] returns,
/// however it ends.
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs the milter on `listener` with the process and first engine in
/// `shared` until `shutdown` completes, then stops gracefully (see the
/// module documentation) and returns.
///
/// Each message on `reload` re-reads the configuration file `shared` was
/// made with and swaps in the new engine; a bad new configuration is
/// logged and the old one kept ([`Shared::reload`]). Reloads end with the
/// milter.
pub async fn serve(
    listener: Listening,
    shared: Arc<Shared>,
    reload: mpsc::Receiver<()>,
    shutdown: impl Future,
) -> Result<(), ServeError> {
    // Held in this frame, not in the milter's future: that one is dropped
    // when the deadline wins, and the file must go then too.
    let _socket_file = match &listener {
        Listening::Unix { path, .. } => Some(SocketFile(path.clone())),
        Listening::Tcp(_) => None,
    };
    let reloads = tokio::spawn(reload_on(shared.clone(), reload));
    let (stop_tx, stop_rx) = watch::channel(false);
    let deadline = shared.process().shutdown_deadline();
    let announce = async move {
        shutdown.await;
        tracing::info!(
            "shutting down: finishing messages in progress (at most {} s), then closing",
            deadline.as_secs_f64()
        );
        let _ = stop_tx.send(true);
        std::future::pending::<()>().await;
    };
    // indymilter closes every session as soon as its shutdown completes:
    // let it complete once the messages in progress are finished, or at the
    // deadline.
    let in_flight = shared.in_flight();
    let drained = {
        let mut stop = stop_rx.clone();
        async move {
            let _ = stop.wait_for(|s| *s).await;
            let finished = async {
                while in_flight.load(Ordering::Relaxed) > 0 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            };
            if tokio::time::timeout(deadline, finished).await.is_err() {
                tracing::warn!(
                    "shutdown deadline passed; closing connections with messages in progress"
                );
            }
        }
    };
    let backstop = {
        let mut stop = stop_rx.clone();
        async move {
            let _ = stop.wait_for(|s| *s).await;
            tokio::time::sleep(deadline + CLOSE_GRACE).await;
            tracing::warn!("connections did not close in time; stopping without them");
        }
    };
    let milter = async {
        match listener {
            Listening::Tcp(l) => {
                let l = Draining::new(TcpMilterListener(l), stop_rx.clone());
                run_on(l, shared, drained).await
            }
            Listening::Unix { listener, .. } => {
                let l = Draining::new(UnixMilterListener(listener), stop_rx.clone());
                run_on(l, shared, drained).await
            }
        }
    };
    let result = tokio::select! {
        r = milter => r,
        () = backstop => Ok(()),
        () = announce => Ok(()),
    };
    reloads.abort();
    result
}

/// Serves reload requests one at a time until the channel closes.
async fn reload_on(shared: Arc<Shared>, mut requests: mpsc::Receiver<()>) {
    while requests.recv().await.is_some() {
        // Reading files and building the key sources must not hold up the
        // thread that answers every connection.
        let s = shared.clone();
        match tokio::task::spawn_blocking(move || s.reload()).await {
            Ok(Ok(_)) => tracing::info!("configuration reloaded"),
            Ok(Err(e)) => tracing::error!("reload failed, keeping the old configuration: {e}"),
            Err(e) => tracing::error!("reload failed, keeping the old configuration: {e}"),
        }
    }
}

/// A listener that closes when shutdown starts, so that no new connection
/// (and no new message) lengthens the drain.
struct Draining<L> {
    inner: Option<L>,
    stopped: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl<L> Draining<L> {
    fn new(inner: L, mut stop: watch::Receiver<bool>) -> Self {
        Draining {
            inner: Some(inner),
            stopped: Box::pin(async move {
                let _ = stop.wait_for(|s| *s).await;
            }),
        }
    }
}

impl<L: indymilter::Listener> indymilter::Listener for Draining<L> {
    type Io = L::Io;

    fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<L::Io>> {
        // `stopped` is polled only while the listener is open: once ready
        // the listener is dropped, and it is never polled again.
        if self.inner.is_some() && self.stopped.as_mut().poll(cx).is_ready() {
            self.inner = None;
        }
        match &mut self.inner {
            Some(l) => l.poll_accept(cx),
            // Nothing is accepted again; the milter ends by its shutdown.
            None => Poll::Pending,
        }
    }
}

/// Binds `metrics_listen` and serves `/metrics` and `/healthz` on its own
/// task until `stop` completes.
pub async fn start_metrics(
    addr: SocketAddr,
    metrics: Metrics,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let listener = crate::metrics::bind(addr)
        .await
        .map_err(|e| ServeError::Bind {
            socket: format!("metrics_listen {addr}"),
            source: std::io::Error::other(e.to_string()),
        })?;
    tracing::info!("metrics on http://{addr}/metrics");
    tokio::spawn(crate::metrics::serve(listener, metrics, || true, stop));
    Ok(())
}

/// Whether `path` is a unix socket file (and not, say, a file named by
/// mistake, which is left alone).
fn is_socket_file(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}
