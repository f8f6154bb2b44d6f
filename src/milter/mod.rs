//! The milter service: the engine a connection works with (configuration,
//! policy, key sources), reloading it on SIGHUP, listening on the
//! configured socket, and stopping gracefully.
//!
//! * `session.rs`: per-connection and per-message state and decisions;
//! * `callbacks.rs`: milter stages → session calls, verdicts → replies.
//!   SMTP reply texts come from [`crate::policy::reply`];
//! * `transport.rs`: the listeners and the connection's byte stream;
//! * `slots.rs`: the connection limit and the negotiation deadline;
//! * `peer.rs`: whose connection it is (slots are shared out by peer).

pub mod callbacks;
pub mod peer;
pub mod session;
pub mod slots;
pub mod transport;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::backend::Registry;
use crate::config::{Config, ConfigError, FileRequirement, Socket};
use crate::keys::KeyService;
use crate::keys::dns::DnsSetupError;
use crate::memory::MemoryBudget;
use crate::metrics::Metrics;
use crate::policy::{Policy, PolicyError};
use slots::{Limited, Slots};
pub use transport::{TcpMilterListener, UnixMilterListener};

/// How long in-flight messages may take to finish after SIGTERM.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(30);

/// Everything a connection needs, fixed for the connection's lifetime.
pub struct Engine {
    /// The effective configuration.
    pub config: Config,
    /// The rules.
    pub policy: Policy,
    /// Recipients' keys: the sources in order and recent validations (a
    /// reload starts afresh).
    pub keys: KeyService,
    /// The encryption backends.
    pub registry: Arc<Registry>,
    /// Metrics (shared by every engine of the process).
    pub metrics: Metrics,
}

/// How many encryptions run at once: one per CPU. More only time-slice
/// the same cores, lengthening every message's latency, and starve the
/// thread that answers the MTA.
pub fn encryption_slots() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Why the engine cannot be built (at start or on reload).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A policy file is invalid.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The DNS key source cannot be set up.
    #[error(transparent)]
    Dns(#[from] DnsSetupError),
}

impl Engine {
    /// Reads the configuration at `path`, the policy files and sets up the
    /// key sources.
    pub fn load(path: &Path, metrics: Metrics) -> Result<Engine, EngineError> {
        let loaded = Config::load(path, FileRequirement::for_path(path))?;
        Engine::from_config(loaded.config, metrics)
    }

    /// An engine for an already loaded configuration.
    pub fn from_config(config: Config, metrics: Metrics) -> Result<Engine, EngineError> {
        let (policy, note) = Policy::load(&config)?;
        if let Some(note) = note {
            tracing::warn!("{note}");
        }
        let registry = Arc::new(Registry::new());
        let keys = KeyService::from_config(&config, registry.clone(), Some(metrics.clone()))?;
        Ok(Engine {
            config,
            policy,
            keys,
            registry,
            metrics,
        })
    }
}

/// The engine in force, swapped on reload; connections keep the engine
/// they started with.
pub struct Shared {
    engine: RwLock<Arc<Engine>>,
    config_path: PathBuf,
    in_flight: Arc<AtomicUsize>,
    encryption_slots: Arc<tokio::sync::Semaphore>,
    memory_budget: MemoryBudget,
    connection_slots: Arc<Slots>,
    /// `limits.idle_timeout_secs` the listener started with (it cannot
    /// change while the listener runs).
    idle_timeout_secs: u64,
}

impl Shared {
    /// Wraps the first engine.
    pub fn new(engine: Engine, config_path: PathBuf) -> Self {
        let memory_budget = MemoryBudget::new(
            engine.config.limits.memory_budget_bytes,
            Some(engine.metrics.clone()),
        );
        let connection_slots = Slots::new(&engine.config.limits, engine.metrics.clone());
        Shared {
            idle_timeout_secs: engine.config.limits.idle_timeout_secs,
            engine: RwLock::new(Arc::new(engine)),
            config_path,
            in_flight: Arc::new(AtomicUsize::new(0)),
            encryption_slots: Arc::new(tokio::sync::Semaphore::new(encryption_slots())),
            memory_budget,
            connection_slots,
        }
    }

    /// The budget for bodies in memory, shared by every session of the
    /// process (`limits.memory_budget_bytes`; a reload changes its limit).
    pub fn memory_budget(&self) -> MemoryBudget {
        self.memory_budget.clone()
    }

    /// The connection slots of the process (`limits.max_connections`).
    pub fn connection_slots(&self) -> Arc<Slots> {
        self.connection_slots.clone()
    }

    /// Permits for encryptions running at once, shared by every session
    /// of the process (see [`encryption_slots`]).
    pub fn encryption_slots(&self) -> Arc<tokio::sync::Semaphore> {
        self.encryption_slots.clone()
    }

    /// The engine for a new connection.
    pub fn engine(&self) -> Arc<Engine> {
        match self.engine.read() {
            Ok(e) => e.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The counter of transactions in progress (MAIL seen, not yet ended),
    /// shared by every session.
    pub fn in_flight(&self) -> Arc<AtomicUsize> {
        self.in_flight.clone()
    }

    /// Re-reads configuration and policy. A bad new configuration is
    /// logged and the old one kept.
    pub fn reload(&self) -> Result<(), EngineError> {
        let new = Engine::load(&self.config_path, self.engine().metrics.clone())?;
        self.memory_budget
            .set_limit(new.config.limits.memory_budget_bytes);
        let limits = &new.config.limits;
        self.connection_slots.reconfigure(limits);
        if limits.idle_timeout_secs != self.idle_timeout_secs {
            tracing::warn!(
                "limits.idle_timeout_secs changed to {}; it takes effect at the next restart \
                 ({} until then)",
                limits.idle_timeout_secs,
                self.idle_timeout_secs
            );
        }
        let mut slot = match self.engine.write() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        *slot = Arc::new(new);
        Ok(())
    }
}

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
pub fn milter_config(idle_timeout_secs: u64) -> indymilter::Config {
    indymilter::Config {
        max_connections: slots::UNLIMITED,
        actions: callbacks::required_actions(),
        connection_timeout: Duration::from_secs(idle_timeout_secs),
    }
}

/// Runs the milter on `listener` until `shutdown` completes; connections
/// are admitted through the process's connection slots.
pub async fn run_on<L>(
    listener: L,
    shared: Arc<Shared>,
    shutdown: impl std::future::Future,
) -> Result<(), ServeError>
where
    L: indymilter::Listener,
    L::Io: peer::HasPeer,
{
    let config = milter_config(shared.idle_timeout_secs);
    let listener = Limited::new(listener, shared.connection_slots());
    indymilter::run(listener, callbacks::build(shared), config, shutdown)
        .await
        .map_err(ServeError::Run)
}

/// Binds the configured socket and runs until SIGTERM or SIGINT; SIGHUP
/// reloads configuration and policy.
pub async fn serve(shared: Arc<Shared>) -> Result<(), ServeError> {
    let engine = shared.engine();
    let socket = engine.config.socket.clone();
    let socket_mode = engine.config.socket_mode_bits();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(signals(shared.clone(), stop_tx));
    if let Some(addr) = engine.config.metrics_listen {
        let listener = crate::metrics::bind(addr)
            .await
            .map_err(|e| ServeError::Bind {
                socket: format!("metrics_listen {addr}"),
                source: std::io::Error::other(e.to_string()),
            })?;
        tracing::info!("metrics on http://{addr}/metrics");
        let mut rx = stop_rx.clone();
        tokio::spawn(crate::metrics::serve(
            listener,
            engine.metrics.clone(),
            || true,
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            },
        ));
    }
    drop(engine);
    // On SIGTERM, messages already in progress are finished before the
    // sessions are told to end (indymilter ends them at once otherwise).
    let mut rx = stop_rx.clone();
    let in_flight = shared.in_flight();
    let shutdown = async move {
        let _ = rx.wait_for(|stop| *stop).await;
        while in_flight.load(Ordering::Relaxed) > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let mut rx = stop_rx;
    let deadline = async move {
        let _ = rx.wait_for(|stop| *stop).await;
        tokio::time::sleep(SHUTDOWN_DEADLINE).await;
        tracing::warn!("shutdown deadline passed; closing connections with messages in progress");
    };
    tokio::select! {
        r = listen(&socket, socket_mode, shared, shutdown) => r,
        () = deadline => Ok(()),
    }
}

async fn listen(
    socket: &Socket,
    socket_mode: u32,
    shared: Arc<Shared>,
    shutdown: impl std::future::Future,
) -> Result<(), ServeError> {
    let bind_err = |source| ServeError::Bind {
        socket: socket.to_string(),
        source,
    };
    match socket {
        Socket::Inet { host, port } => {
            let l = tokio::net::TcpListener::bind((host.as_str(), *port))
                .await
                .map_err(bind_err)?;
            tracing::info!("listening on {socket}");
            run_on(TcpMilterListener(l), shared, shutdown).await
        }
        Socket::Inet6 { addr, port } => {
            let l = tokio::net::TcpListener::bind((*addr, *port))
                .await
                .map_err(bind_err)?;
            tracing::info!("listening on {socket}");
            run_on(TcpMilterListener(l), shared, shutdown).await
        }
        Socket::Unix(path) => {
            // A socket left by a previous run would make bind fail.
            if std::fs::symlink_metadata(path).is_ok_and(|m| {
                use std::os::unix::fs::FileTypeExt;
                m.file_type().is_socket()
            }) {
                let _ = std::fs::remove_file(path);
            }
            let l = tokio::net::UnixListener::bind(path).map_err(bind_err)?;
            {
                use std::os::unix::fs::PermissionsExt;
                // The MTA (another user) must be able to connect.
                let _ =
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(socket_mode));
            }
            tracing::info!("listening on {socket}");
            let r = run_on(UnixMilterListener(l), shared, shutdown).await;
            let _ = std::fs::remove_file(path);
            r
        }
    }
}

async fn signals(shared: Arc<Shared>, stop: tokio::sync::watch::Sender<bool>) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut hup), Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            // Reading files and building the key sources must not hold up
            // the thread that answers every connection.
            _ = hup.recv() => {
                let s = shared.clone();
                match tokio::task::spawn_blocking(move || s.reload()).await {
                    Ok(Ok(())) => tracing::info!("configuration reloaded"),
                    Ok(Err(e)) => {
                        tracing::error!("reload failed, keeping the old configuration: {e}")
                    }
                    Err(e) => tracing::error!("reload failed, keeping the old configuration: {e}"),
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!("shutting down: finishing messages in progress (at most 30 s), then closing");
    let _ = stop.send(true);
}
