//! `log_format = "json"` on the real binary: every line of a session
//! (an encrypted message, a refused recipient with a hostile address, an
//! encryption that fails) parses with `jq` as one object, carries the
//! queue id, and a failed encryption counts in
//! `autoencrypt_encryption_errors_total`. Also the house rule the JSON
//! format relies on: message-handling modules start every log line with
//! the queue id.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use indymilter_test::{MacroStage, Status, TestConnection};

mod common;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The milter, stderr to a file, killed on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(config: &Path, port: u16, log: &Path, env: &[(&str, &Path)]) -> Running {
    let child = Command::new(env!("CARGO_BIN_EXE_autoencrypt-milter"))
        .arg("--config")
        .arg(config)
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "milter did not start listening");
        std::thread::sleep(Duration::from_millis(50));
    }
    Running(child)
}

/// A key directory with bob@example.org's S/MIME certificate, and a
/// configuration serving on `port` with JSON logs.
fn setup(dir: &Path, port: u16, metrics: u16, extra: &str) -> PathBuf {
    let keys = dir.join("keys");
    std::fs::create_dir(&keys).unwrap();
    let id = common::SmimeId::generate(
        dir,
        "bob",
        &common::CertSpec::good("bob@example.org", common::KeyKind::Rsa),
    );
    id.install_pem(&keys, "bob@example.org");
    let policies = dir.join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(
        policies.join("10.toml"),
        "[[rule]]\nname = \"partners\"\nrecipient = [\"*@partner.example\"]\nmode = \"required\"\non_missing_key = \"reject\"\n",
    )
    .unwrap();
    let config = dir.join("c.toml");
    std::fs::write(
        &config,
        format!(
            "socket = \"inet:127.0.0.1:{port}\"\nmetrics_listen = \"127.0.0.1:{metrics}\"\n\
             log_format = \"json\"\npolicy_dir = {:?}\n[keys]\ndirectory = {:?}\n\
             [dns]\nresolvers = [\"127.0.0.1:9\"]\ntimeout_ms = 300\n{extra}",
            policies.display().to_string(),
            keys.display().to_string()
        ),
    )
    .unwrap();
    config
}

/// Each line of `log` through `jq -c` with `filter`; panics (with the line)
/// when jq cannot parse one.
fn jq_lines(log: &Path, filter: &str) -> Vec<String> {
    let text = std::fs::read_to_string(log).unwrap();
    assert!(!text.is_empty(), "no log lines");
    let mut out = Vec::new();
    for line in text.lines() {
        let mut jq = Command::new("jq")
            .args(["-c", filter])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("jq is needed (Debian package jq)");
        jq.stdin.take().unwrap().write_all(line.as_bytes()).unwrap();
        let o = jq.wait_with_output().unwrap();
        assert!(
            o.status.success(),
            "jq could not parse the log line {line:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        // One JSON document per line: at most one result (none where
        // `select` drops the line).
        let printed = String::from_utf8(o.stdout).unwrap();
        assert!(printed.lines().count() <= 1, "{line:?} gave {printed:?}");
        out.push(printed.trim_end().to_owned());
    }
    out
}

fn wait_for(log: &Path, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(log).unwrap().contains(needle) {
        assert!(Instant::now() < deadline, "no {needle:?} in the log");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_parse_with_jq_and_carry_the_queue_id() {
    let dir = tempfile::tempdir().unwrap();
    let (port, metrics) = (free_port(), free_port());
    let config = setup(dir.path(), port, metrics, "");
    let log = dir.path().join("stderr.log");
    let _m = start(&config, port, &log, &[]);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut c = TestConnection::open(addr).await.unwrap();
    c.connect("client", addr).await.unwrap();

    // An encrypted message.
    c.macros(MacroStage::Mail, [("i", "4XQJ1b2Kz")])
        .await
        .unwrap();
    c.mail(["<alice@example.net>"]).await.unwrap();
    assert_eq!(
        c.rcpt(["<bob@example.org>"]).await.unwrap(),
        Status::Continue
    );
    c.data().await.unwrap();
    c.header("Subject", "json").await.unwrap();
    c.body(b"hello\r\n".to_vec()).await.unwrap();
    c.macros(MacroStage::Eom, [("i", "4XQJ1b2Kz")])
        .await
        .unwrap();
    let (_, status) = c.eom().await.unwrap();
    assert_eq!(status, Status::Continue);

    // A hostile recipient: quotes, a backslash and a forged JSON object in
    // the local part, deferred by the required rule: its DNS lookup fails
    // (nothing answers on port 9).
    c.macros(MacroStage::Mail, [("i", "5HOSTILE")])
        .await
        .unwrap();
    c.mail(["<alice@example.net>"]).await.unwrap();
    let hostile = r#"<"x\"}{\"level\":\"error\"\\"@partner.example>"#;
    let s = c.rcpt([hostile]).await.unwrap();
    assert!(matches!(s, Status::Tempfail { .. }), "{s:?}");
    c.close().await.unwrap();
    wait_for(&log, "5HOSTILE");

    let all = jq_lines(&log, r#"[.time, .level, .target, .message] | length"#);
    assert!(all.iter().all(|n| n == "4"), "{all:?}");
    // Every line has an RFC 3339 UTC time and a known level.
    let ok = jq_lines(
        &log,
        r#"(.time | test("^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z$")) and (.level | IN("error","warn","info","debug","trace"))"#,
    );
    assert!(ok.iter().all(|b| b == "true"), "{ok:?}");
    // The message's lines carry its queue id outside the message text.
    let ours = jq_lines(&log, r#"select(.queue_id == "4XQJ1b2Kz") | .message"#);
    let ours: Vec<&String> = ours.iter().filter(|l| !l.is_empty()).collect();
    assert!(
        ours.iter()
            .any(|m| m.contains("encrypted with smime to 1 key(s)")),
        "{ours:?}"
    );
    assert!(
        ours.iter().all(|m| !m.starts_with("\"4XQJ1b2Kz")),
        "{ours:?}"
    );
    // The hostile address stays inside the message string of its line.
    let hostile_lines = jq_lines(
        &log,
        r#"select(.queue_id == "5HOSTILE") | .message | contains("}{") and contains("level") and contains("@partner.example")"#,
    );
    assert!(
        hostile_lines.iter().any(|m| m == "true"),
        "{hostile_lines:?}"
    );
    let levels = jq_lines(&log, r#"select(.queue_id == "5HOSTILE") | .level"#);
    assert!(
        levels.iter().all(|l| l.is_empty() || l != "\"error\""),
        "{levels:?}"
    );
    // Lines not about a message (start-up) have no queue id.
    let listening = jq_lines(
        &log,
        r#"select(.message | startswith("listening on")) | has("queue_id")"#,
    );
    assert!(listening.contains(&"false".to_owned()), "{listening:?}");
}

/// An encryption that fails (the spool directory is unusable) is refused
/// with 451 4.3.0, logged as an error with the queue id, and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_encryption_is_logged_with_its_queue_id_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (port, metrics) = (free_port(), free_port());
    let config = setup(
        dir.path(),
        port,
        metrics,
        "[limits]\nspool_threshold_bytes = 16\n",
    );
    let log = dir.path().join("stderr.log");
    let no_tmp = dir.path().join("no-such-directory");
    let _m = start(&config, port, &log, &[("TMPDIR", &no_tmp)]);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut c = TestConnection::open(addr).await.unwrap();
    c.connect("client", addr).await.unwrap();
    c.macros(MacroStage::Mail, [("i", "7FAIL")]).await.unwrap();
    c.mail(["<alice@example.net>"]).await.unwrap();
    assert_eq!(
        c.rcpt(["<bob@example.org>"]).await.unwrap(),
        Status::Continue
    );
    c.data().await.unwrap();
    c.header("Subject", "x").await.unwrap();
    let (_, status) = c.eom().await.unwrap();
    match status {
        Status::Tempfail { .. } => {}
        other => panic!("expected a 451 4.3.0 tempfail, got {other:?}"),
    }
    c.close().await.unwrap();
    wait_for(&log, "encryption failed");

    let errors = jq_lines(
        &log,
        r#"select(.level == "error" and .queue_id == "7FAIL") | .message"#,
    );
    assert!(
        errors.iter().any(|m| m.contains("encryption failed")),
        "{errors:?}"
    );
    let text = http_get(metrics, "/metrics");
    let count = |m: &str| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(&format!(
                    "autoencrypt_encryption_errors_total{{method=\"{m}\"}} "
                ))
            })
            .map(str::to_owned)
    };
    assert_eq!(count("smime").as_deref(), Some("1"), "{text}");
    assert_eq!(count("openpgp").as_deref(), Some("0"), "{text}");
}

fn http_get(port: u16, path: &str) -> String {
    use std::io::Read;
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

/// The JSON format lifts the queue id from the start of the message text
/// in these modules (`src/cli/logging.rs`, `MESSAGE_TARGETS`), so every
/// log macro there must start its format string with the queue id.
#[test]
fn message_modules_start_every_log_line_with_the_queue_id() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = vec![
        root.join("milter/session.rs"),
        root.join("milter/callbacks.rs"),
    ];
    for dir in ["milter/session", "harvest"] {
        for e in std::fs::read_dir(root.join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "rs") {
                files.push(p);
            }
        }
    }
    let mut checked = 0;
    for file in &files {
        let src = std::fs::read_to_string(file).unwrap();
        for level in ["error", "warn", "info", "debug", "trace"] {
            let call = format!("tracing::{level}!(");
            for (at, _) in src.match_indices(&call) {
                let rest = &src[at + call.len()..];
                let Some(open) = rest.find('"') else {
                    panic!("{}: no format string after {call}", file.display())
                };
                // Only the first argument: a structured field before it
                // would be `name = value,`.
                assert!(
                    !rest[..open].contains('='),
                    "{}: a field before the message",
                    file.display()
                );
                let fmt = &rest[open + 1..];
                assert!(
                    fmt.starts_with("{qid}: ")
                        || fmt.starts_with("{task_qid}: ")
                        || fmt.starts_with("{}: "),
                    "{}: a log line that does not start with the queue id: {:?}",
                    file.display(),
                    &fmt[..fmt.len().min(60)]
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 40, "only {checked} log calls found");
}
