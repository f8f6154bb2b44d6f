//! A fleet of milter processes for the end-to-end key store tests: each
//! host is the built binary with its own configuration, socket, metrics
//! endpoint and log, all on one key store (the test's PostgreSQL). Also
//! what those tests send: S/MIME messages signed with `openssl cms -sign`
//! under a passing `Authentication-Results` field, and the `keys` command
//! of the same binary.
//!
//! Include it with `mod fleet;` beside `mod common;`, `#[path =
//! "env/pg.rs"] mod pg;` and `#[path = "env/postfix.rs"] mod postfix;`.

#![allow(dead_code)]
#![allow(
    clippy::panic,
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test helper: failures must panic loudly"
)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tempfile::TempDir;

use crate::common::{Scratch, SmimeId};
use crate::postfix::PostfixEnv;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_autoencrypt-milter");

/// The `authserv_id` every host trusts: the test Postfix's own name, as
/// the receiving MTA's verifier would write it.
pub const AUTHSERV_ID: &str = "mx.autoencrypt.test";

/// The domain whose mail is inbound (harvested).
pub const LOCAL_DOMAIN: &str = "local.example";

/// `store.refresh_secs` of every host.
pub const REFRESH: Duration = Duration::from_secs(1);

/// A free loopback TCP port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What a host is started with.
pub struct HostSpec<'a> {
    /// For its directory's name and the messages.
    pub name: &'a str,
    /// `store.url`.
    pub store_url: String,
    /// The PostgreSQL password, copied into the host's own
    /// `password_file` (so a test can rotate it for one host).
    pub password_file: &'a Path,
    /// A validating resolver on loopback (trust-ad mode).
    pub resolver: SocketAddr,
    /// The policy file's text.
    pub policy: &'a str,
}

/// One milter process; killed (by its PID) when dropped.
pub struct Host {
    /// Its name.
    pub name: String,
    /// The milter socket, `127.0.0.1:PORT`.
    pub addr: SocketAddr,
    /// The metrics endpoint's port.
    pub metrics_port: u16,
    /// Its configuration file (for `keys …` against the same store).
    pub config: PathBuf,
    /// Its own copy of the store password.
    pub password_file: PathBuf,
    log: PathBuf,
    child: Child,
    _dir: TempDir,
}

impl Host {
    /// Writes the configuration and starts the binary; returns once the
    /// milter socket and the metrics endpoint accept connections.
    pub fn start(spec: &HostSpec<'_>) -> Host {
        let dir = tempfile::Builder::new()
            .prefix(&format!("aem-{}.", spec.name))
            .tempdir_in("/tmp")
            .unwrap();
        let policies = dir.path().join("policies");
        std::fs::create_dir(&policies).unwrap();
        std::fs::write(policies.join("10-fleet.toml"), spec.policy).unwrap();
        let password_file = dir.path().join("store.password");
        std::fs::copy(spec.password_file, &password_file).unwrap_or_else(|e| {
            panic!("copying {}: {e}", spec.password_file.display());
        });
        let port = free_port();
        let metrics_port = free_port();
        let config = dir.path().join("milter.toml");
        std::fs::write(
            &config,
            format!(
                r#"socket = "inet:127.0.0.1:{port}"
metrics_listen = "127.0.0.1:{metrics_port}"
log_level = "info"
policy_dir = {policies:?}
local_domains = [{LOCAL_DOMAIN:?}]
authserv_id = {AUTHSERV_ID:?}

[dns]
mode = "trust-ad"
resolvers = ["{resolver}"]
timeout_ms = 2000

[wkd]
enabled = false

[harvest]
# The test's milters listen on loopback TCP; no other user runs here.
allow_inet_socket = true
recheck_secs = 0

[store]
url = {url:?}
password_file = {password_file:?}
refresh_secs = {refresh}
connect_timeout_ms = 1000
timeout_ms = 2000
"#,
                resolver = spec.resolver,
                url = spec.store_url,
                refresh = REFRESH.as_secs(),
            ),
        )
        .unwrap();
        let log = dir.path().join("milter.log");
        let stderr = std::fs::File::create(&log).unwrap();
        let child = Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
        let mut host = Host {
            name: spec.name.to_owned(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            metrics_port,
            config,
            password_file,
            log,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        for p in [port, metrics_port] {
            while TcpStream::connect(("127.0.0.1", p)).is_err() {
                if let Some(status) = host.child.try_wait().unwrap() {
                    panic!(
                        "host {}: the milter exited ({status}) before listening:\n{}",
                        host.name,
                        host.log()
                    );
                }
                assert!(
                    Instant::now() < deadline,
                    "host {}: not listening on {p} within 15 s:\n{}",
                    host.name,
                    host.log()
                );
                std::thread::sleep(Duration::from_millis(25));
            }
        }
        host
    }

    /// What the milter logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log holds `needle` at least `n` times.
    pub fn wait_log(&self, needle: &str, n: usize, timeout: Duration) {
        wait_until(
            timeout,
            &format!("host {}: {n}× {needle:?} in the log", self.name),
            || (self.log().matches(needle).count() >= n).then_some(()),
        )
        .unwrap_or_else(|why| panic!("{why}\n{}", self.log()));
    }

    /// Sends SIGHUP (reload) to the process.
    pub fn hup(&self) {
        let ok = Command::new("kill")
            .args(["-s", "HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success(), "kill -HUP {}", self.child.id());
    }

    /// SIGHUP, then waits for the reload to be logged.
    pub fn reload(&self) {
        let before = self.log().matches("configuration reloaded").count();
        self.hup();
        self.wait_log(
            "configuration reloaded",
            before + 1,
            Duration::from_secs(10),
        );
    }

    /// The metrics endpoint's text.
    pub fn metrics(&self) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.metrics_port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        out
    }

    /// The value of one series (`name` or `name{label="v"}` exactly as
    /// exposed); 0 when it is not exposed (a counter never counted).
    pub fn metric(&self, series: &str) -> f64 {
        metric_value(&self.metrics(), series)
    }

    /// Waits until `series` is at least `at_least`.
    pub fn wait_metric(&self, series: &str, at_least: f64, timeout: Duration) {
        wait_until(
            timeout,
            &format!("host {}: {series} >= {at_least}", self.name),
            || (self.metric(series) >= at_least).then_some(()),
        )
        .unwrap_or_else(|why| {
            panic!(
                "{why}\n--- metrics ---\n{}\n--- log ---\n{}",
                self.metrics(),
                self.log()
            )
        });
    }

    /// `autoencrypt-milter --config <this host's> keys ARGS…`.
    pub fn keys(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--config")
            .arg(&self.config)
            .arg("keys")
            .args(args)
            .env_remove("RUST_LOG")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {BIN} keys: {e}"))
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of `series` in a Prometheus text exposition; 0 when absent.
pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series)
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .unwrap_or(0.0)
}

/// Polls `f` every 50 ms until it gives a value, or says what did not
/// happen within `timeout`.
pub fn wait_until<T>(
    timeout: Duration,
    what: &str,
    mut f: impl FnMut() -> Option<T>,
) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(format!("not within {timeout:?}: {what}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `postqueue -f` on the instance: the deferred queue is retried and
/// pickup reads the maildrop again.
pub fn flush(pf: &PostfixEnv) {
    let out = Command::new("postqueue")
        .arg("-c")
        .arg(pf.config_dir())
        .arg("-f")
        .output()
        .unwrap_or_else(|e| panic!("cannot run postqueue: {e}"));
    assert!(
        out.status.success(),
        "postqueue -f failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The current time as an RFC 5322 `Date:` value (UTC).
pub fn date_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let days = i64::try_from(secs / 86_400).unwrap();
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday =
        ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][usize::try_from(days % 7).unwrap()];
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{weekday}, {day:02} {} {year} {:02}:{:02}:{:02} +0000",
        months[usize::try_from(month - 1).unwrap()],
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

/// A message from `id`'s address to `to`, S/MIME signed by `id` with
/// `openssl cms -sign` (detached, CRLF), under an `Authentication-Results`
/// field of [`AUTHSERV_ID`] saying DKIM and DMARC passed for the sender's
/// domain: what the receiving MTA hands the milter for a message that may
/// teach the signer's certificate.
pub fn signed_message(scratch: &Scratch, id: &SmimeId, from: &str, to: &str, tag: &str) -> Vec<u8> {
    let domain = from.rsplit_once('@').unwrap().1;
    let inner = scratch.file(&format!("signed-in-{tag}"));
    let out = scratch.file(&format!("signed-out-{tag}"));
    std::fs::write(
        &inner,
        format!("Content-Type: text/plain; charset=us-ascii\r\n\r\nHello from {from},\r\nthis message is signed ({tag}).\r\n"),
    )
    .unwrap();
    let run = Command::new("openssl")
        .args([
            "cms", "-sign", "-binary", "-crlfeol", "-md", "sha256", "-in",
        ])
        .arg(&inner)
        .arg("-signer")
        .arg(&id.cert_path)
        .arg("-inkey")
        .arg(&id.key_path)
        .arg("-out")
        .arg(&out)
        .output()
        .unwrap_or_else(|e| panic!("openssl (the openssl package) is required: {e}"));
    assert!(
        run.status.success(),
        "openssl cms -sign: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let mut msg = format!(
        "Authentication-Results: {AUTHSERV_ID};\r\n dkim=pass header.d={domain} header.s=sel;\r\n dmarc=pass header.from={domain}\r\nFrom: <{from}>\r\nTo: <{to}>\r\nSubject: signed ({tag})\r\nDate: {}\r\nMessage-ID: <{tag}.{}@{domain}>\r\n",
        date_now(),
        std::process::id()
    )
    .into_bytes();
    msg.extend_from_slice(&std::fs::read(&out).unwrap());
    msg
}

/// A plain text message to `to` (what a local user sends out).
pub fn plain_message(to: &str, tag: &str) -> Vec<u8> {
    format!(
        "From: user@{LOCAL_DOMAIN}\r\nTo: {to}\r\nSubject: {tag}\r\nMessage-ID: <{tag}.{}@{LOCAL_DOMAIN}>\r\nDate: {}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nFür {to} ({tag}): nur für den richtigen Schlüssel.\r\n",
        std::process::id(),
        date_now()
    )
    .into_bytes()
}
