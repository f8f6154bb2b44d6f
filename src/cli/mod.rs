//! The command line (contract in docs/ARCHITECTURE.md and
//! man/autoencrypt-milter.8). Exit status: 0 success, 1 usage or input
//! error with a one-line reason on stderr, 2 a lookup that could not be
//! completed.

mod dns_cmds;
mod encrypt;
mod keys;
mod logging;
mod policy_cmds;
mod wkd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use crate::config::DEFAULT_CONFIG;

/// autoencrypt-milter: encrypt mail to keys published in DNSSEC-signed DNS.
#[derive(Debug, Parser)]
#[command(name = "autoencrypt-milter", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file (absent is fine: built-in defaults apply).
    #[arg(long, global = true, value_name = "FILE", default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,

    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the milter (the default).
    Serve,
    /// Encrypt one message from standard input to standard output.
    Encrypt(encrypt::EncryptArgs),
    /// Validate the configuration and policy files, print the effective
    /// configuration and the ordered rules.
    CheckConfig,
    /// Inspect the policy engine.
    #[command(subcommand)]
    Policy(policy_cmds::PolicyCommand),
    /// Look up addresses' published keys, each source on its own: SMIMEA
    /// and OPENPGPKEY records (owner names, DNSSEC status), the Web Key
    /// Directory and keyservers (URLs, answers); keys and whether they are
    /// usable. Exit 0 a usable key somewhere, 1 none, 2 none and a lookup
    /// could not be completed.
    Lookup(dns_cmds::LookupArgs),
    /// Print the zone-file record that publishes a certificate or key.
    Record(dns_cmds::RecordArgs),
    /// Publish the local users' OpenPGP keys as a Web Key Directory.
    #[command(subcommand)]
    Wkd(wkd::WkdCommand),
    /// The key store: learned keys, pins, key changes. Exit 0 done, 1
    /// nothing found or nothing to do, 2 the store failed.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
}

/// Parses the command line and runs it.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve);
    // `serve` logs at the configured level once the configuration is read.
    if !matches!(command, Command::Serve) {
        logging::init("warn", crate::config::LogFormat::Text);
    }
    match command {
        Command::Serve => serve(&cli.config),
        Command::Encrypt(args) => encrypt::run(&args),
        Command::CheckConfig => policy_cmds::check_config(&cli.config),
        Command::Policy(cmd) => policy_cmds::run(&cli.config, &cmd),
        Command::Lookup(args) => dns_cmds::lookup(&cli.config, &args),
        Command::Record(args) => dns_cmds::record(&args),
        Command::Wkd(cmd) => wkd::run(&cli.config, &cmd),
        Command::Keys(cmd) => keys::run(&cli.config, &cmd),
    }
}

/// `serve`: load everything, then run the milter until SIGTERM/SIGINT.
fn serve(config: &std::path::Path) -> ExitCode {
    let loaded =
        match crate::config::Config::load(config, crate::config::FileRequirement::for_path(config))
        {
            Ok(l) => l,
            Err(e) => {
                logging::init("warn", crate::config::LogFormat::Text);
                return fail(1, e);
            }
        };
    logging::init(loaded.config.log_level.as_str(), loaded.config.log_format);
    for server in policy_cmds::exposed_trust_ad_resolvers(&loaded.config.dns) {
        tracing::warn!(
            "dns.mode = \"trust-ad\" with resolver {server}, which is not on loopback: its AD \
             bit crosses the network unprotected, so anyone on the path can forge it and \
             choose the key"
        );
    }
    let engine =
        match crate::milter::Engine::from_config(loaded.config, crate::metrics::Metrics::new()) {
            Ok(e) => e,
            Err(e) => return fail(1, e),
        };
    // One thread serves every milter connection; encryption runs on the
    // blocking pool, one message per CPU at a time (`Shared::encryption_slots`).
    // A work-stealing scheduler cost more than the protocol itself: ~19
    // futex calls a message waking and parking its workers (BENCHMARKS.md).
    // The pool is no larger than the slots and its threads stay: threads
    // coming and going (each with its own malloc arena) made OpenPGP 40 %
    // slower after a run of S/MIME, with page faults and TLB shootdowns.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(crate::milter::encryption_slots())
        .thread_keep_alive(std::time::Duration::from_secs(3600))
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(1, format!("starting the runtime: {e}")),
    };
    let shared = std::sync::Arc::new(crate::milter::Shared::new(engine, config.to_path_buf()));
    match runtime.block_on(run_milter(shared)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(1, e),
    }
}

/// Binds the metrics endpoint and the milter socket of the first
/// configuration, then serves until SIGTERM or SIGINT; SIGHUP reloads.
async fn run_milter(shared: std::sync::Arc<crate::milter::Shared>) -> Result<(), String> {
    let (reload, stop) = signals().map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let engine = shared.engine();
    if let Some(addr) = engine.config.metrics_listen {
        let mut stop = stop.clone();
        crate::milter::start_metrics(addr, shared.process().metrics().clone(), async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
        .map_err(|e| e.to_string())?;
    }
    let listening =
        crate::milter::Listening::bind(&engine.config.socket, engine.config.socket_mode_bits())
            .await
            .map_err(|e| e.to_string())?;
    drop(engine);
    let mut stop = stop;
    crate::milter::serve(listening, shared, reload, async move {
        let _ = stop.wait_for(|s| *s).await;
    })
    .await
    .map_err(|e| e.to_string())
}

/// Signals as inputs: each SIGHUP is a reload request; SIGTERM or SIGINT
/// sets the stop flag (the milter drains, the metrics endpoint closes).
fn signals() -> std::io::Result<(
    tokio::sync::mpsc::Receiver<()>,
    tokio::sync::watch::Receiver<bool>,
)> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    // One request waiting is enough: a reload reads the files as they are
    // when it runs, so SIGHUPs that arrive meanwhile are folded into it.
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    let _ = reload_tx.try_send(());
                }
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }
        let _ = stop_tx.send(true);
    });
    Ok((reload_rx, stop_rx))
}

/// Prints `autoencrypt-milter: <reason>` on stderr and returns `code`.
pub(crate) fn fail(code: u8, reason: impl std::fmt::Display) -> ExitCode {
    eprintln!("autoencrypt-milter: {reason}");
    ExitCode::from(code)
}
