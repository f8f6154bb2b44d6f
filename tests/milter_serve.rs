//! The milter's life in-process, through the library's `serve` (the
//! binary with real signals: milter_signals.rs): a reload request applies
//! a new policy and keeps the keys that need a restart, a bad new policy
//! is refused, and shutdown drains, closes the listener, removes a unix
//! socket file — also when the shutdown deadline (shortened here) wins
//! over a transaction that never ends.
//!
//! Lookups go to a port where nothing listens: they fail and the built-in
//! rule answers 451; a rule with `methods = []` skips them.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use autoencrypt_milter::config::{LogLevel, Socket};
use autoencrypt_milter::metrics::Metrics;
use autoencrypt_milter::milter::{Engine, Listening, ServeError, Shared, serve};
use indymilter_test::{Status, TestConnection};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Everything the tests of this binary log (one global subscriber; each
/// test looks for lines only it causes).
static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOG.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(|| LogWriter)
            .init();
    });
}

fn logs() -> String {
    String::from_utf8_lossy(&LOG.lock().unwrap()).into_owned()
}

/// Waits (at most 5 s) until the log contains `text`.
async fn wait_for_log(text: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !logs().contains(text) {
        assert!(Instant::now() < deadline, "not logged: {text}\n{}", logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A configuration file `c.toml` in `dir` with the policy directory
/// `dir/policies`; `top` are top-level TOML lines.
fn write_config(dir: &Path, top: &str) -> PathBuf {
    write_config_with(dir, top, "127.0.0.1:9", 300)
}

/// As [`write_config`], asking `resolver` with `timeout_ms`.
fn write_config_with(dir: &Path, top: &str, resolver: &str, timeout_ms: u64) -> PathBuf {
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    let path = dir.join("c.toml");
    std::fs::write(
        &path,
        format!(
            "policy_dir = {:?}\n{top}\n[dns]\nmode = \"trust-ad\"\nresolvers = [{resolver:?}]\ntimeout_ms = {timeout_ms}\n",
            policies.display().to_string()
        ),
    )
    .unwrap();
    path
}

const SKIP_ALL: &str = "[[rule]]\nname = \"all plain\"\nmethods = []\n";

/// `serve` running on its own task.
struct Served {
    shared: Arc<Shared>,
    reload: mpsc::Sender<()>,
    stop: Option<oneshot::Sender<()>>,
    done: JoinHandle<Result<(), ServeError>>,
}

impl Served {
    async fn start(config: &Path, listening: Listening, deadline: Option<Duration>) -> Served {
        capture_logs();
        let engine = Engine::load(config, Metrics::new()).unwrap();
        let mut shared = Shared::new(engine, config.to_path_buf());
        if let Some(d) = deadline {
            shared = shared.with_shutdown_deadline(d);
        }
        let shared = Arc::new(shared);
        let (reload, requests) = mpsc::channel(1);
        let (stop, stopped) = oneshot::channel::<()>();
        let done = tokio::spawn(serve(listening, shared.clone(), requests, async move {
            let _ = stopped.await;
        }));
        Served {
            shared,
            reload,
            stop: Some(stop),
            done,
        }
    }

    fn shutdown(&mut self) {
        let _ = self.stop.take().unwrap().send(());
    }

    /// What `serve` returned, waiting at most `within`.
    async fn finished(self, within: Duration) -> Result<(), ServeError> {
        tokio::time::timeout(within, self.done)
            .await
            .expect("serve returned in time")
            .unwrap()
    }
}

/// Where the milter listens, for the client.
#[derive(Clone)]
enum At {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

const CLIENT: ([u8; 4], u16) = ([192, 0, 2, 1], 25);

async fn open(at: &At) -> std::io::Result<TestConnection> {
    let c = match at {
        At::Tcp(a) => TestConnection::configure().open_tcp(a).await,
        At::Unix(p) => TestConnection::configure().open_unix(p).await,
    };
    c.map_err(|e| std::io::Error::other(format!("{e:?}")))
}

/// A connection in a transaction with one accepted recipient `to`.
async fn in_transaction(at: &At, to: &str) -> TestConnection {
    let mut c = open(at).await.unwrap();
    c.connect("client", SocketAddr::from(CLIENT)).await.unwrap();
    c.mail(["<a@example.net>"]).await.unwrap();
    assert_eq!(c.rcpt([format!("<{to}>")]).await.unwrap(), Status::Continue);
    c
}

/// The RCPT status for `to` on a fresh connection.
async fn rcpt_status(at: &At, to: &str) -> Status {
    let mut c = open(at).await.unwrap();
    c.connect("client", SocketAddr::from(CLIENT)).await.unwrap();
    c.mail(["<a@example.net>"]).await.unwrap();
    let s = c.rcpt([format!("<{to}>")]).await.unwrap();
    c.close().await.unwrap();
    s
}

fn is_451_4_7_1(s: &Status) -> bool {
    matches!(s, Status::Tempfail { message: Some(m) } if m.to_bytes().starts_with(b"451 4.7.1"))
}

fn unix_dir() -> tempfile::TempDir {
    // Short: a unix socket path has at most 107 bytes.
    tempfile::Builder::new()
        .prefix("aem")
        .tempdir_in("/tmp")
        .unwrap()
}

/// A unix socket `m.sock` in `dir`, bound with `mode`, and the top of a
/// configuration that names it (no metrics endpoint).
async fn unix_listening(dir: &Path, mode: u32) -> (PathBuf, String, Listening) {
    let sock = dir.join("m.sock");
    let top = format!(
        "socket = \"unix:{}\"\nmetrics_listen = \"\"",
        sock.display()
    );
    let listening = Listening::bind(&Socket::Unix(sock.clone()), mode)
        .await
        .unwrap();
    (sock, top, listening)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_applies_the_new_policy_and_keeps_the_keys_that_need_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "socket = \"inet:127.0.0.1:10040\"\nmetrics_listen = \"\"\nlog_level = \"info\"",
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = At::Tcp(l.local_addr().unwrap());
    let mut m = Served::start(&config, Listening::Tcp(l), None).await;
    let before = rcpt_status(&at, "abuse@example.org").await;
    assert!(is_451_4_7_1(&before), "{before:?}");

    // A new policy, and new values for keys that cannot change live.
    std::fs::write(
        dir.path().join("policies/10-skip.toml"),
        "[[rule]]\nname = \"skip abuse\"\nrecipient = [\"abuse@*\"]\nmethods = []\n",
    )
    .unwrap();
    write_config(
        dir.path(),
        "socket = \"inet:127.0.0.1:10041\"\nsocket_mode = \"0600\"\nmetrics_listen = \"127.0.0.1:9\"\nlog_level = \"debug\"\ndry_run = true\n[limits]\nidle_timeout_secs = 17",
    );
    m.reload.send(()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while rcpt_status(&at, "abuse@example.org").await != Status::Continue {
        assert!(Instant::now() < deadline, "the reload did not apply");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_for_log("configuration reloaded").await;
    for line in [
        "socket changed to \"inet:127.0.0.1:10041\"; it takes effect at the next restart (\"inet:127.0.0.1:10040\" until then)",
        "socket_mode changed to \"0600\"; it takes effect at the next restart (\"0660\" until then)",
        "metrics_listen changed to \"127.0.0.1:9\"; it takes effect at the next restart (\"\" until then)",
        "log_level changed to \"debug\"; it takes effect at the next restart (\"info\" until then)",
        "limits.idle_timeout_secs changed to 17; it takes effect at the next restart (300 until then)",
    ] {
        let log = logs();
        let found: Vec<&str> = log.lines().filter(|l| l.contains(line)).collect();
        assert_eq!(found.len(), 1, "{line}: {found:?}");
        assert!(found[0].contains("WARN"), "{found:?}");
    }
    let running = m.shared.engine();
    assert_eq!(
        running.config.socket,
        Socket::Inet {
            host: "127.0.0.1".to_owned(),
            port: 10040
        }
    );
    assert_eq!(running.config.socket_mode, "0660");
    assert_eq!(running.config.metrics_listen, None);
    assert_eq!(running.config.log_level, LogLevel::Info);
    assert_eq!(running.config.limits.idle_timeout_secs, 300);
    assert!(running.config.dry_run, "the other keys apply");
    drop(running);

    // A broken policy file: the reload fails, the running policy stays.
    std::fs::write(
        dir.path().join("policies/20-broken.toml"),
        "[[rule]]\nname = \"broken\"\nmode = \"sometimes\"\n",
    )
    .unwrap();
    m.reload.send(()).await.unwrap();
    wait_for_log("reload failed, keeping the old configuration").await;
    assert!(logs().contains("20-broken.toml"), "{}", logs());
    assert_eq!(
        rcpt_status(&at, "abuse@example.org").await,
        Status::Continue
    );

    m.shutdown();
    let At::Tcp(addr) = at else { unreachable!() };
    m.finished(Duration::from_secs(5)).await.unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

/// Shutdown with a message in progress on a unix socket: the listener
/// closes at once, the message is finished, then `serve` returns and the
/// socket file is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_the_message_in_progress_and_removes_the_unix_socket() {
    use std::os::unix::fs::PermissionsExt;
    let dir = unix_dir();
    let (sock, top, listening) = unix_listening(dir.path(), 0o640).await;
    let config = write_config(dir.path(), &top);
    std::fs::write(dir.path().join("policies/10.toml"), SKIP_ALL).unwrap();
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
    let at = At::Unix(sock.clone());
    let mut m = Served::start(&config, listening, None).await;
    let mut c = in_transaction(&at, "b@example.org").await;
    c.header("Subject", "in flight").await.unwrap();

    m.shutdown();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!m.done.is_finished(), "returned with a message in progress");
    assert!(open(&at).await.is_err(), "no new connection while draining");

    c.body(b"still here\r\n".to_vec()).await.unwrap();
    let (_, status) = c.eom().await.unwrap();
    assert_eq!(status, Status::Continue, "the message was finished");
    let shared = m.shared.clone();
    m.finished(Duration::from_secs(5)).await.unwrap();
    assert_eq!(shared.in_flight().load(Ordering::Relaxed), 0);
    assert!(!sock.exists(), "socket file removed");
}

/// A transaction that never ends: at the (shortened) deadline its
/// connection is closed, `serve` returns, and the unix socket file is
/// removed all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_shutdown_deadline_a_stuck_transaction_is_closed_and_the_socket_removed() {
    let dir = unix_dir();
    let (sock, top, listening) = unix_listening(dir.path(), 0o660).await;
    let config = write_config(dir.path(), &top);
    std::fs::write(dir.path().join("policies/10.toml"), SKIP_ALL).unwrap();
    let at = At::Unix(sock.clone());
    let deadline = Duration::from_millis(800);
    let mut m = Served::start(&config, listening, Some(deadline)).await;
    let mut stuck = in_transaction(&at, "stuck@example.org").await;
    let shared = m.shared.clone();
    assert_eq!(shared.in_flight().load(Ordering::Relaxed), 1);

    let started = Instant::now();
    m.shutdown();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!m.done.is_finished(), "returned before the deadline");
    assert!(sock.exists(), "socket file kept while draining");
    m.finished(Duration::from_secs(5)).await.unwrap();
    assert!(started.elapsed() >= deadline, "{:?}", started.elapsed());
    assert!(!sock.exists(), "socket file removed after the deadline");
    wait_for_log("shutdown deadline passed; closing connections with messages in progress").await;
    // The connection was closed, and the session ended cleanly.
    let closed = tokio::time::timeout(Duration::from_secs(2), stuck.eom()).await;
    assert!(
        matches!(closed, Ok(Err(_))),
        "the stuck connection is closed"
    );
    assert_eq!(shared.in_flight().load(Ordering::Relaxed), 0);
}

/// A connection busy in a callback at the deadline (its key lookup goes to
/// a resolver that never answers) cannot be closed until the callback
/// returns: `serve` waits for it a few seconds more, then returns without
/// it — and the unix socket file is removed all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_stuck_in_a_callback_does_not_keep_the_socket_file() {
    let blackhole = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let resolver = blackhole.local_addr().unwrap().to_string();
    let dir = unix_dir();
    let (sock, top, listening) = unix_listening(dir.path(), 0o660).await;
    let config = write_config_with(dir.path(), &top, &resolver, 60_000);
    let at = At::Unix(sock.clone());
    let deadline = Duration::from_millis(300);
    let mut m = Served::start(&config, listening, Some(deadline)).await;
    let shared = m.shared.clone();
    let client = tokio::spawn({
        let at = at.clone();
        async move { rcpt_status(&at, "slow@example.org").await }
    });
    let until = Instant::now() + Duration::from_secs(5);
    while shared.in_flight().load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < until, "the transaction did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // RCPT follows MAIL at once: the callback is waiting for DNS now.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = Instant::now();
    m.shutdown();
    m.finished(Duration::from_secs(15)).await.unwrap();
    assert!(
        started.elapsed() >= deadline + Duration::from_secs(4),
        "waited for the busy connection: {:?}",
        started.elapsed()
    );
    assert!(!sock.exists(), "socket file removed");
    wait_for_log("connections did not close in time; stopping without them").await;
    client.abort();
    drop(blackhole);
}
