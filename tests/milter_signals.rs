//! Operations on the real binary with real signals: SIGHUP reloads the
//! policy (and keeps the old one when the new one is broken), SIGTERM stops
//! the milter cleanly.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use indymilter_test::{Status, TestConnection};

mod common;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args(["-s", sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A configuration file in `dir` with its own, empty policy directory.
/// `settings` are TOML lines: top-level keys first, then tables.
fn config_in(dir: &Path, settings: &str) -> (PathBuf, PathBuf) {
    let policies = dir.join("policies");
    std::fs::create_dir(&policies).unwrap();
    let config = dir.join("c.toml");
    let policy_dir = policies.display().to_string();
    std::fs::write(&config, format!("policy_dir = {policy_dir:?}\n{settings}")).unwrap();
    (config, policies)
}

fn start(config: &Path, port: u16) -> Running {
    start_with(config, port, &[])
}

/// The binary with `env` added to its environment, once it listens on `port`.
fn start_with(config: &Path, port: u16, env: &[(&str, &Path)]) -> Running {
    let child = Command::new(env!("CARGO_BIN_EXE_autoencrypt-milter"))
        .arg("--config")
        .arg(config)
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "milter did not start listening");
        std::thread::sleep(Duration::from_millis(50));
    }
    Running(child)
}

fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The RCPT status for `to` on a fresh connection.
async fn rcpt_status(port: u16, to: &str) -> Status {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut c = TestConnection::open(addr).await.unwrap();
    c.connect("client", addr).await.unwrap();
    c.mail(["<a@example.net>"]).await.unwrap();
    let s = c.rcpt([format!("<{to}>")]).await.unwrap();
    c.close().await.unwrap();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_keeps_the_old_policy_when_the_new_is_bad_and_sigterm_stops() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let dead = free_port();
    let metrics_port = free_port();
    // Lookups go to a port where nothing listens: they fail, and the
    // built-in rule answers 451. A rule with `methods = []` skips them.
    let (config, policies) = config_in(
        dir.path(),
        &format!(
            "socket = \"inet:127.0.0.1:{port}\"\nlog_level = \"info\"\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n[dns]\nmode = \"trust-ad\"\nresolvers = [\"127.0.0.1:{dead}\"]\ntimeout_ms = 300\n"
        ),
    );
    let mut m = start(&config, port);

    // The metrics endpoint of the running binary.
    let metrics = http_get(metrics_port, "/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(
        metrics.contains("# TYPE autoencrypt_messages_total counter"),
        "{metrics}"
    );
    assert!(http_get(metrics_port, "/healthz").starts_with("HTTP/1.1 200"));

    let before = rcpt_status(port, "abuse@example.org").await;
    assert!(
        matches!(&before, Status::Tempfail { message: Some(msg) } if msg.to_bytes().starts_with(b"451 4.7.1")),
        "{before:?}"
    );

    std::fs::write(
        policies.join("10-skip.toml"),
        "[[rule]]\nname = \"skip abuse\"\nrecipient = [\"abuse@*\"]\nmethods = []\n",
    )
    .unwrap();
    signal(&m.0, "HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if rcpt_status(port, "abuse@example.org").await == Status::Continue {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not load the new policy"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A broken policy file: the reload fails, the running policy stays.
    std::fs::write(
        policies.join("20-broken.toml"),
        "[[rule]]\nname = \"broken\"\nmode = \"sometimes\"\n",
    )
    .unwrap();
    signal(&m.0, "HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        rcpt_status(port, "abuse@example.org").await,
        Status::Continue
    );

    // SIGTERM: exits cleanly and stops listening.
    signal(&m.0, "TERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = m.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "SIGTERM did not stop the milter");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    let mut log = String::new();
    std::io::Read::read_to_string(m.0.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(log.contains("configuration reloaded"), "{log}");
    assert!(
        log.contains("reload failed, keeping the old configuration"),
        "{log}"
    );
    assert!(
        log.contains("20-broken.toml"),
        "the error names the file: {log}"
    );
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_replaces_a_stale_one_and_is_removed_on_exit() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let dir = tempfile::Builder::new()
        .prefix("aem")
        .tempdir_in("/tmp")
        .unwrap();
    let sock = dir.path().join("m.sock");
    // A socket file left behind by a crashed run.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(std::fs::metadata(&sock).unwrap().file_type().is_socket());
    let (config, _) = config_in(
        dir.path(),
        &format!(
            "socket = \"unix:{}\"\nsocket_mode = \"0640\"\nmetrics_listen = \"\"\n",
            sock.display()
        ),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_autoencrypt-milter"))
        .arg("--config")
        .arg(&config)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        assert!(
            Instant::now() < deadline,
            "milter did not listen on the unix socket"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "milter exited: stale socket not replaced?"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640, "socket_mode is applied");
    let c = indymilter_test::TestConnection::configure()
        .open_unix(&sock)
        .await
        .unwrap();
    c.close().await.unwrap();
    signal(&child, "TERM");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!sock.exists(), "socket removed on exit");
}

/// SIGTERM while a message is in progress: the message is finished (its
/// end-of-message is answered), then the milter exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_message_in_progress() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (config, policies) = config_in(
        dir.path(),
        &format!("socket = \"inet:127.0.0.1:{port}\"\nmetrics_listen = \"\"\n"),
    );
    // No lookups: every recipient is passed in the clear by rule.
    std::fs::write(
        policies.join("10.toml"),
        "[[rule]]\nname = \"all plain\"\nmethods = []\n",
    )
    .unwrap();
    let mut m = start(&config, port);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut c = TestConnection::open(addr).await.unwrap();
    c.connect("client", addr).await.unwrap();
    c.mail(["<a@example.net>"]).await.unwrap();
    assert_eq!(c.rcpt(["<b@example.org>"]).await.unwrap(), Status::Continue);
    c.header("Subject", "in flight").await.unwrap();

    signal(&m.0, "TERM");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        m.0.try_wait().unwrap().is_none(),
        "exited with a message in progress"
    );

    c.body(b"still here\r\n".to_vec()).await.unwrap();
    let (_, status) = c.eom().await.unwrap();
    assert_eq!(
        status,
        Status::Continue,
        "the message in progress was finished"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(s) = m.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "did not exit after the message finished"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit:?}");
}

/// An internal error at end of message (here: the spool's temporary
/// directory is unusable, so the ciphertext cannot be stored) answers
/// 451 4.3.0 — the message is deferred, never passed unencrypted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_error_at_end_of_message_is_451_4_3_0() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    let id = common::SmimeId::generate(
        dir.path(),
        "bob",
        &common::CertSpec::good("bob@example.org", common::KeyKind::Rsa),
    );
    id.install_pem(&keys, "bob@example.org");
    let port = free_port();
    let (config, _) = config_in(
        dir.path(),
        &format!(
            "socket = \"inet:127.0.0.1:{port}\"\nmetrics_listen = \"\"\n[keys]\ndirectory = {:?}\n[dns]\nresolvers = [\"127.0.0.1:9\"]\ntimeout_ms = 300\n[limits]\nspool_threshold_bytes = 16\n",
            keys.display().to_string()
        ),
    );
    let no_tmp = dir.path().join("no-such-directory");
    let _m = start_with(&config, port, &[("TMPDIR", &no_tmp)]);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut c = TestConnection::open(addr).await.unwrap();
    c.connect("client", addr).await.unwrap();
    c.mail(["<a@example.net>"]).await.unwrap();
    assert_eq!(
        c.rcpt(["<bob@example.org>"]).await.unwrap(),
        Status::Continue
    );
    c.data().await.unwrap();
    c.header("Subject", "x").await.unwrap();
    // No body: nothing is spooled until the ciphertext, which cannot be.
    let (actions, status) = c.eom().await.unwrap();
    assert!(actions.actions.is_empty(), "{actions:?}");
    assert_451_4_3_0(status);

    // A body that cannot be spooled (past the threshold, the temporary
    // file cannot be made): the body stage has no reply, so the refusal
    // comes at the end of the message — and nothing is changed.
    c.mail(["<a@example.net>"]).await.unwrap();
    assert_eq!(
        c.rcpt(["<bob@example.org>"]).await.unwrap(),
        Status::Continue
    );
    c.data().await.unwrap();
    c.header("Subject", "y").await.unwrap();
    assert_eq!(
        c.body(b"a body longer than sixteen bytes\r\n".to_vec())
            .await
            .unwrap(),
        Status::Noreply
    );
    c.body(b"more\r\n".to_vec()).await.unwrap();
    let (actions, status) = c.eom().await.unwrap();
    assert!(actions.actions.is_empty(), "{actions:?}");
    assert_451_4_3_0(status);
}

fn assert_451_4_3_0(status: Status) {
    match status {
        Status::Tempfail { message: Some(m) } => {
            assert!(m.to_bytes().starts_with(b"451 4.3.0"), "{m:?}")
        }
        other => panic!("expected 451 4.3.0, got {other:?}"),
    }
}

/// `serve` warns at start about every `trust-ad` resolver off loopback,
/// as `check-config` does: their AD bit crosses the network unprotected.
#[test]
fn serve_warns_about_trust_ad_resolvers_off_loopback() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (config, _) = config_in(
        dir.path(),
        &format!(
            "socket = \"inet:127.0.0.1:{port}\"\nmetrics_listen = \"\"\n[dns]\nmode = \"trust-ad\"\nresolvers = [\"127.0.0.1:53\", \"192.0.2.7:53\"]\n"
        ),
    );
    let mut m = start(&config, port);
    let stderr = m.0.stderr.take().unwrap();
    signal(&m.0, "TERM");
    let status = m.0.wait().unwrap();
    assert!(status.success(), "{status}");
    let lines: Vec<String> = std::io::BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .filter(|l| l.contains("not on loopback"))
        .collect();
    assert_eq!(lines.len(), 1, "one warning, for 192.0.2.7 only: {lines:?}");
    assert!(
        lines[0].contains("WARN") && lines[0].contains("192.0.2.7:53"),
        "{lines:?}"
    );
}

/// A local user who floods the milter with SIGHUP: reloads coalesce (at
/// most one waits while one runs), mail is answered throughout, the last
/// policy is the one in force, and SIGTERM still stops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sighup_flood_coalesces_and_mail_is_still_answered() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let dead = free_port();
    let (config, policies) = config_in(
        dir.path(),
        &format!(
            "socket = \"inet:127.0.0.1:{port}\"\nlog_level = \"info\"\nmetrics_listen = \"\"\n[dns]\nmode = \"trust-ad\"\nresolvers = [\"127.0.0.1:{dead}\"]\ntimeout_ms = 300\n"
        ),
    );
    std::fs::write(
        policies.join("10-skip.toml"),
        "[[rule]]\nname = \"skip abuse\"\nrecipient = [\"abuse@*\"]\nmethods = []\n",
    )
    .unwrap();
    let log = dir.path().join("milter.log");
    let child = Command::new(env!("CARGO_BIN_EXE_autoencrypt-milter"))
        .arg("--config")
        .arg(&config)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut m = Running(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "milter did not start listening");
        std::thread::sleep(Duration::from_millis(50));
    }
    const SIGNALS: usize = 500;
    let pid = m.0.id().to_string();
    let flood = std::process::Command::new("sh")
        .args([
            "-c",
            &format!("i=0; while [ $i -lt {SIGNALS} ]; do kill -HUP {pid}; i=$((i+1)); done"),
        ])
        .spawn()
        .unwrap();
    // Answered during the flood.
    for _ in 0..5 {
        assert_eq!(
            rcpt_status(port, "abuse@example.org").await,
            Status::Continue
        );
    }
    let status = tokio::task::spawn_blocking(move || {
        let mut flood = flood;
        flood.wait().unwrap()
    })
    .await
    .unwrap();
    assert!(status.success());
    // The flood is over; a last change is picked up by the reload that
    // follows it.
    std::fs::remove_file(policies.join("10-skip.toml")).unwrap();
    signal(&m.0, "HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while rcpt_status(port, "abuse@example.org").await == Status::Continue {
        assert!(Instant::now() < deadline, "the last SIGHUP was lost");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    signal(&m.0, "TERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    while m.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "SIGTERM did not stop the milter");
        std::thread::sleep(Duration::from_millis(50));
    }
    let text = std::fs::read_to_string(&log).unwrap();
    let reloads = text.matches("configuration reloaded").count();
    assert!(
        (1..SIGNALS).contains(&reloads),
        "{reloads} reloads for {SIGNALS} signals"
    );
}
