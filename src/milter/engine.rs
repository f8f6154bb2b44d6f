//! What a connection works with, and how it is swapped on reload.
//!
//! * [`Engine`]: the configuration, policy, key sources and backends of
//!   one load; a connection keeps the engine it started with;
//! * [`Process`]: what belongs to the process and outlives every engine
//!   (metrics, encryption slots, the in-flight counter, the memory budget,
//!   the connection slots, and the settings the listener started with);
//! * [`Shared`]: the process and the engine in force; [`Shared::reload`]
//!   builds a new engine from the configuration file and swaps it in.
//!
//! Some keys cannot change while the process runs (`socket`,
//! `socket_mode`, `metrics_listen`, `log_level`, `log_format`,
//! `limits.idle_timeout_secs`): a reload logs which of them changed and
//! keeps their running values, and applies everything else.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::slots::Slots;
use crate::backend::Registry;
use crate::config::{Config, ConfigError, FileRequirement};
use crate::harvest::Harvester;
use crate::keys::KeyService;
use crate::keys::SourceSetupError;
use crate::memory::MemoryBudget;
use crate::metrics::Metrics;
use crate::policy::{Policy, PolicyError};
use crate::signing::keys::{KeyDirError, SigningKeys};
use crate::signing::logins::{LoginMap, LoginMapError};

/// How long messages in progress may take to finish once shutdown starts
/// (the default of [`Shared::with_shutdown_deadline`]).
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(30);

/// Everything a connection needs, fixed for the connection's lifetime.
pub struct Engine {
    /// The effective configuration.
    pub config: Config,
    /// The rules.
    pub policy: Policy,
    /// Recipients' keys: the sources in order and recent validations (a
    /// reload starts afresh), and the backends keys are validated and
    /// messages encrypted with ([`KeyService::registry`]).
    pub keys: KeyService,
    /// Metrics (shared by every engine of the process).
    pub metrics: Metrics,
    /// Learning keys from inbound mail: `None` when `harvest.enabled` is
    /// off or no `authserv_id` is set.
    pub harvester: Option<Harvester>,
    /// Signing keys of local senders and who may use them: `None` when
    /// `signing.key_dir` is not set.
    pub signing: Option<SigningSetup>,
}

/// The signing keys and the login map of one load.
pub struct SigningSetup {
    /// The keys, by address.
    pub keys: SigningKeys,
    /// Which login may sign as which address.
    pub logins: LoginMap,
}

impl SigningSetup {
    /// Reads `signing.key_dir` and `signing.login_map`; `None` when no key
    /// directory is set.
    pub fn load(
        config: &crate::config::SigningConfig,
    ) -> Result<Option<SigningSetup>, EngineError> {
        let Some(dir) = &config.key_dir else {
            return Ok(None);
        };
        let keys = SigningKeys::load(dir)?;
        let logins = match &config.login_map {
            Some(p) => LoginMap::load(p)?,
            None => LoginMap::identity(),
        };
        tracing::info!(
            "signing: {} key(s) in {}{}",
            keys.len(),
            dir.display(),
            match &config.login_map {
                Some(p) => format!(", logins from {}", p.display()),
                None => ", each login signs as its own address only".to_owned(),
            }
        );
        Ok(Some(SigningSetup { keys, logins }))
    }
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
    /// A key source (DNS, the web sources' HTTP client) cannot be set up.
    #[error(transparent)]
    Sources(#[from] SourceSetupError),
    /// The signing key directory cannot be loaded.
    #[error("signing.key_dir: {0}")]
    SigningKeys(#[from] KeyDirError),
    /// The login map cannot be read.
    #[error("signing.login_map: {0}")]
    LoginMap(#[from] LoginMapError),
}

impl Engine {
    /// Reads the configuration at `path`, the policy files and sets up the
    /// key sources.
    pub fn load(path: &Path, metrics: Metrics) -> Result<Engine, EngineError> {
        Engine::from_config(read_config(path)?, metrics)
    }

    /// An engine for an already loaded configuration.
    pub fn from_config(config: Config, metrics: Metrics) -> Result<Engine, EngineError> {
        let (policy, note) = Policy::load(&config)?;
        if let Some(note) = note {
            tracing::warn!("{note}");
        }
        let keys =
            KeyService::from_config(&config, Arc::new(Registry::new()), Some(metrics.clone()))?;
        let harvester = match (&config.harvest, keys.store()) {
            (h, Some(store)) if h.enabled && !config.authserv_id.is_empty() => {
                Some(Harvester::new(
                    h,
                    store.clone(),
                    Arc::clone(keys.registry()),
                    metrics.clone(),
                    keys.learned_source().cloned(),
                ))
            }
            (h, _) => {
                if h.enabled {
                    tracing::info!(
                        "harvest.enabled is on but authserv_id is not set: no key is learned \
                         from mail (set authserv_id to the authserv-id of your MTA's \
                         Authentication-Results fields)"
                    );
                }
                None
            }
        };
        let signing = SigningSetup::load(&config.signing)?;
        Ok(Engine {
            config,
            policy,
            keys,
            metrics,
            harvester,
            signing,
        })
    }
}

fn read_config(path: &Path) -> Result<Config, ConfigError> {
    Ok(Config::load(path, FileRequirement::for_path(path))?.config)
}

/// What belongs to the process rather than to one engine: built once from
/// the first engine, and kept across reloads so that what sessions hold
/// (permits, reservations, slots) stays counted in one place.
pub struct Process {
    metrics: Metrics,
    in_flight: Arc<AtomicUsize>,
    encryption_slots: Arc<tokio::sync::Semaphore>,
    memory_budget: MemoryBudget,
    connection_slots: Arc<Slots>,
    /// `limits.idle_timeout_secs` the listener started with (it cannot
    /// change while the listener runs).
    idle_timeout_secs: u64,
    shutdown_deadline: Duration,
}

impl Process {
    fn new(first: &Engine) -> Process {
        let limits = &first.config.limits;
        Process {
            metrics: first.metrics.clone(),
            in_flight: Arc::new(AtomicUsize::new(0)),
            encryption_slots: Arc::new(tokio::sync::Semaphore::new(encryption_slots())),
            memory_budget: MemoryBudget::new(
                limits.memory_budget_bytes,
                Some(first.metrics.clone()),
            ),
            connection_slots: Slots::new(limits, first.metrics.clone()),
            idle_timeout_secs: limits.idle_timeout_secs,
            shutdown_deadline: SHUTDOWN_DEADLINE,
        }
    }

    /// The process's metrics; every engine records into them.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// `limits.idle_timeout_secs` the listener runs with.
    pub fn idle_timeout_secs(&self) -> u64 {
        self.idle_timeout_secs
    }

    /// How long a shutdown waits for messages in progress.
    pub fn shutdown_deadline(&self) -> Duration {
        self.shutdown_deadline
    }
}

/// The process and the engine in force, swapped on reload; connections
/// keep the engine they started with.
pub struct Shared {
    process: Process,
    engine: RwLock<Arc<Engine>>,
    config_path: PathBuf,
}

/// A key a reload read a new value for but cannot apply to the running
/// process (a key that needs a restart); the running value is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unapplied {
    /// The key, as written in the file (`limits.idle_timeout_secs`).
    pub key: &'static str,
    /// The value in force, which stays.
    pub running: String,
    /// The value the file now has.
    pub read: String,
}

/// The keys a reload cannot apply: the listener and the metrics endpoint
/// are bound, the log filter installed and indymilter configured once, at
/// start. (The list `keep_restart_keys` handles; a test holds the two
/// together.)
#[cfg(test)]
const RESTART_KEYS: [&str; 6] = [
    "socket",
    "socket_mode",
    "metrics_listen",
    "log_level",
    "log_format",
    "limits.idle_timeout_secs",
];

impl Shared {
    /// Wraps the first engine; `config_path` is what a reload reads.
    pub fn new(engine: Engine, config_path: PathBuf) -> Self {
        Shared {
            process: Process::new(&engine),
            engine: RwLock::new(Arc::new(engine)),
            config_path,
        }
    }

    /// The same, with shutdown waiting at most `deadline` for messages in
    /// progress instead of [`SHUTDOWN_DEADLINE`] (tests shorten it).
    #[must_use]
    pub fn with_shutdown_deadline(mut self, deadline: Duration) -> Self {
        self.process.shutdown_deadline = deadline;
        self
    }

    /// What belongs to the process.
    pub fn process(&self) -> &Process {
        &self.process
    }

    /// The budget for bodies in memory, shared by every session of the
    /// process (`limits.memory_budget_bytes`; a reload changes its limit).
    pub fn memory_budget(&self) -> MemoryBudget {
        self.process.memory_budget.clone()
    }

    /// The connection slots of the process (`limits.max_connections`).
    pub fn connection_slots(&self) -> Arc<Slots> {
        self.process.connection_slots.clone()
    }

    /// Permits for encryptions running at once, shared by every session
    /// of the process (one per CPU).
    pub fn encryption_slots(&self) -> Arc<tokio::sync::Semaphore> {
        self.process.encryption_slots.clone()
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
        self.process.in_flight.clone()
    }

    /// Re-reads configuration and policy and swaps the new engine in. A
    /// bad new configuration is an error and the old engine stays. Keys
    /// that need a restart and changed are logged (warn), keep their
    /// running values, and are returned.
    pub fn reload(&self) -> Result<Vec<Unapplied>, EngineError> {
        let mut config = read_config(&self.config_path)?;
        let unapplied = keep_restart_keys(&self.engine().config, &mut config);
        let new = Engine::from_config(config, self.process.metrics.clone())?;
        new.keys.take_over_pins(&self.engine().keys);
        for u in &unapplied {
            tracing::warn!(
                "{} changed to {}; it takes effect at the next restart ({} until then)",
                u.key,
                u.read,
                u.running
            );
        }
        let limits = &new.config.limits;
        self.process
            .memory_budget
            .set_limit(limits.memory_budget_bytes);
        self.process.connection_slots.reconfigure(limits);
        let mut slot = match self.engine.write() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        *slot = Arc::new(new);
        Ok(unapplied)
    }
}

/// Puts the running values of the keys that need a restart into `new`,
/// and says which of them `new` had changed.
fn keep_restart_keys(running: &Config, new: &mut Config) -> Vec<Unapplied> {
    let mut unapplied = Vec::new();
    let mut keep = |key: &'static str, running: String, read: String| {
        if running != read {
            unapplied.push(Unapplied { key, running, read });
        }
    };
    let quoted = |s: &str| format!("{s:?}");
    keep(
        "socket",
        quoted(&running.socket.to_string()),
        quoted(&new.socket.to_string()),
    );
    new.socket = running.socket.clone();
    keep(
        "socket_mode",
        quoted(&running.socket_mode),
        quoted(&new.socket_mode),
    );
    new.socket_mode = running.socket_mode.clone();
    let listen =
        |a: Option<std::net::SocketAddr>| quoted(&a.map(|a| a.to_string()).unwrap_or_default());
    keep(
        "metrics_listen",
        listen(running.metrics_listen),
        listen(new.metrics_listen),
    );
    new.metrics_listen = running.metrics_listen;
    keep(
        "log_level",
        quoted(running.log_level.as_str()),
        quoted(new.log_level.as_str()),
    );
    new.log_level = running.log_level;
    keep(
        "log_format",
        quoted(running.log_format.as_str()),
        quoted(new.log_format.as_str()),
    );
    new.log_format = running.log_format;
    keep(
        "limits.idle_timeout_secs",
        running.limits.idle_timeout_secs.to_string(),
        new.limits.idle_timeout_secs.to_string(),
    );
    new.limits.idle_timeout_secs = running.limits.idle_timeout_secs;
    unapplied
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;
    use crate::config::{LogFormat, LogLevel, Socket};

    #[test]
    fn restart_keys_keep_their_running_values_and_the_rest_applies() {
        let running = Config::default();
        let mut new = Config {
            socket: Socket::Unix("/run/m.sock".into()),
            socket_mode: "0600".to_owned(),
            metrics_listen: None,
            log_level: LogLevel::Debug,
            log_format: LogFormat::Json,
            dry_run: !running.dry_run,
            ..Config::default()
        };
        new.limits.idle_timeout_secs = 10;
        new.limits.max_connections = 7;
        let unapplied = keep_restart_keys(&running, &mut new);
        let keys: Vec<&str> = unapplied.iter().map(|u| u.key).collect();
        assert_eq!(keys, RESTART_KEYS);
        assert_eq!(unapplied[0].read, "\"unix:/run/m.sock\"");
        assert_eq!(unapplied[2].read, "\"\"");
        assert_eq!(unapplied[4].read, "\"json\"");
        assert_eq!(unapplied[5].running, "300");
        assert_eq!(unapplied[5].read, "10");
        let mut expected = running.clone();
        expected.dry_run = !running.dry_run;
        expected.limits.max_connections = 7;
        assert_eq!(new, expected);
    }

    #[test]
    fn nothing_is_reported_when_no_restart_key_changed() {
        let running = Config::default();
        let mut new = Config {
            dry_run: true,
            ..Config::default()
        };
        assert!(keep_restart_keys(&running, &mut new).is_empty());
        assert!(new.dry_run);
    }
}
