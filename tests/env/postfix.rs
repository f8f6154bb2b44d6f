//! The Postfix test environment, for end-to-end tests.
//!
//! Include it with `#[path = "env/postfix.rs"] mod postfix;` and call
//! [`PostfixEnv::start`]: it runs `tests/env/postfix-up` in a fresh temporary
//! directory — a second Postfix instance of its own (config, queue, data
//! directory, log file) with smtpd on a free loopback port, the milter under
//! test as `smtpd_milters`/`non_smtpd_milters` with
//! `milter_default_action = tempfail`, and every address of every domain
//! delivered by virtual(8) into one Maildir — and stops it with
//! `tests/env/postfix-down` when dropped. Startup failures (postfix missing,
//! not root, a daemon not starting) panic with the script's output: tests
//! fail loudly, they never skip.
//!
//! Mail is sent with a small SMTP client ([`Session`], [`PostfixEnv::send`])
//! that reports every reply, so tests can assert per-recipient answers such
//! as `452 4.5.3`, `550 5.7.1` or `451 4.7.1`. Delivered mail is read back
//! per recipient ([`PostfixEnv::wait_for_mail`]): virtual(8) heads each copy
//! with `Delivered-To: <recipient>`.
//!
//! [`PostfixEnv::start_relay`] starts the other kind of instance: the front
//! hop of a two-hop set-up, which delivers nothing and relays every
//! recipient, one per SMTP transaction, to a given address (typically
//! another instance's [`PostfixEnv::smtp_addr`], whose smtpd runs the
//! milter).
//!
//! [`PostfixEnv::start_sasl`] gives the submission smtpd SASL
//! authentication (Cyrus sasldb, PLAIN and LOGIN) for given users;
//! [`PostfixEnv::send_authenticated`] submits after `AUTH PLAIN`, so the
//! milter sees `{auth_authen}` = the login.
//!
//! Only std and `tempfile`. See `tests/env/README.md`.

#![allow(dead_code)]
#![allow(
    clippy::panic,
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test helper: failures must panic loudly"
)]

use std::collections::BTreeMap;
use std::fmt;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use tempfile::TempDir;
#[allow(
    clippy::duplicate_mod,
    reason = "a test crate may include both environments; each carries its own copy of these helpers"
)]
#[path = "script.rs"]
mod script;
use script::{parse_env_sh, run_down, script};

/// How long the SMTP client waits for one reply (Postfix's own
/// `milter_content_timeout` in this environment is 300 s).
pub const SMTP_TIMEOUT: Duration = Duration::from_secs(330);

/// The hostname the instance calls itself (`myhostname`).
pub const MYHOSTNAME: &str = "mx.autoencrypt.test";

/// The hostname of an instance in relay mode ([`PostfixEnv::start_relay`]):
/// not [`MYHOSTNAME`], so that a delivered copy's `Received:` headers tell
/// the two hops apart (`by front.autoencrypt.test (Postfix) with ESMTP id
/// …` below the second instance's own).
pub const FRONT_MYHOSTNAME: &str = "front.autoencrypt.test";

/// The environment variable that puts `postfix-up` in relay mode.
const RELAY_TO_VAR: &str = "POSTFIX_ENV_RELAY_TO";

/// The environment variable that gives `postfix-up`'s submission smtpd SASL
/// users (`login:password login2:password2`).
const SASL_USERS_VAR: &str = "POSTFIX_ENV_SASL_USERS";

/// `inet:IP:PORT` for a milter on an IPv4 address, `none` for no milter.
fn milter_spec(milter: Option<SocketAddr>) -> String {
    match milter {
        None => "none".to_string(),
        Some(SocketAddr::V4(a)) => format!("inet:{}:{}", a.ip(), a.port()),
        Some(SocketAddr::V6(a)) => panic!(
            "PostfixEnv: milter {a}: the test instance speaks IPv4 only (inet_protocols = ipv4); use 127.0.0.1"
        ),
    }
}

/// A running second Postfix instance; stopped on drop.
#[derive(Debug)]
pub struct PostfixEnv {
    dir: TempDir,
    vars: BTreeMap<String, String>,
    stopped: bool,
}

impl PostfixEnv {
    /// Starts an instance whose smtpd (and non-smtpd) milter is `milter`
    /// (`inet:IP:PORT`), or none.
    ///
    /// Panics, with `postfix-up`'s output, when it cannot.
    pub fn start(milter: Option<SocketAddr>) -> PostfixEnv {
        PostfixEnv::start_with(&milter_spec(milter))
    }

    /// Starts an instance with a milter given as Postfix takes it
    /// (`inet:127.0.0.1:PORT`, `unix:/path/to/socket`) or `none`.
    pub fn start_with(milter_spec: &str) -> PostfixEnv {
        PostfixEnv::start_mode(milter_spec, None, &[])
    }

    /// Starts an instance like [`PostfixEnv::start`] whose submission smtpd
    /// ([`PostfixEnv::submission_addr`]) offers SASL authentication
    /// (`POSTFIX_ENV_SASL_USERS`, see tests/env/README.md) for `users`,
    /// `(login, password)` pairs: Cyrus SASL with the users in a sasldb,
    /// mechanisms PLAIN and LOGIN, no TLS required. A login `alice`
    /// authenticates as `alice` (Postfix logs `sasl_username=alice`, the
    /// milter gets `{auth_authen}` = `alice`). Unauthenticated clients on
    /// loopback may still submit (mynetworks), as without SASL; the port-25
    /// smtpd has no SASL.
    ///
    /// Logins are letters, digits, `.`, `_`, `-`; passwords hold no blanks.
    /// Panics, with `postfix-up`'s output, when it cannot start (e.g.
    /// `saslpasswd2` missing: `tests/env/install-deps`).
    pub fn start_sasl(milter: Option<SocketAddr>, users: &[(&str, &str)]) -> PostfixEnv {
        PostfixEnv::start_sasl_with(&milter_spec(milter), users)
    }

    /// [`PostfixEnv::start_sasl`] with a milter given as Postfix takes it
    /// (`inet:127.0.0.1:PORT`, `unix:/path/to/socket`) or `none`.
    pub fn start_sasl_with(milter_spec: &str, users: &[(&str, &str)]) -> PostfixEnv {
        assert!(
            !users.is_empty(),
            "PostfixEnv::start_sasl: no users (use PostfixEnv::start for an instance without SASL)"
        );
        for &(login, password) in users {
            assert!(
                !login.is_empty()
                    && !login.contains([':', '@'])
                    && !login.contains(char::is_whitespace),
                "PostfixEnv::start_sasl: login {login:?}: no ':', '@' or blanks"
            );
            assert!(
                !password.is_empty() && !password.contains(char::is_whitespace),
                "PostfixEnv::start_sasl: the password of {login:?} must be non-empty, without blanks"
            );
        }
        PostfixEnv::start_mode(milter_spec, None, users)
    }

    /// Starts an instance in relay mode (`POSTFIX_ENV_RELAY_TO`, see
    /// tests/env/README.md): the front hop of the two-hop set-up. It has no
    /// milter and delivers nothing itself; every recipient of every domain
    /// is relayed by the `onebyone` smtp(8) transport to `[IP]:PORT` of
    /// `to`, with `onebyone_destination_recipient_limit = 1`, so each SMTP
    /// transaction there carries exactly one recipient. No DNS, no TLS. It
    /// calls itself [`FRONT_MYHOSTNAME`].
    ///
    /// Sending to it works as with [`PostfixEnv::start`]; the mail arrives
    /// wherever `to` delivers it (its Maildir here stays empty). What `to`
    /// does not accept is deferred in this instance's queue (retried after
    /// 10–60 s) or bounced by it, as by any Postfix.
    ///
    /// Panics, with `postfix-up`'s output, when it cannot start; `to` must
    /// be IPv4 (the instance speaks IPv4 only).
    pub fn start_relay(to: SocketAddr) -> PostfixEnv {
        let SocketAddr::V4(to) = to else {
            panic!(
                "PostfixEnv::start_relay({to}): the test instance speaks IPv4 only (inet_protocols = ipv4); use 127.0.0.1"
            );
        };
        PostfixEnv::start_mode("none", Some(to), &[])
    }

    fn start_mode(
        milter_spec: &str,
        relay_to: Option<SocketAddrV4>,
        sasl_users: &[(&str, &str)],
    ) -> PostfixEnv {
        let dir = tempfile::Builder::new()
            .prefix("postfixenv.")
            .tempdir()
            .unwrap_or_else(|e| panic!("PostfixEnv: cannot create a temporary directory: {e}"));
        let up = script("postfix-up");
        let mut cmd = Command::new(&up);
        cmd.arg(dir.path()).arg(milter_spec);
        // The mode is the caller's choice, never inherited from the shell
        // that runs the tests.
        match relay_to {
            Some(to) => cmd.env(RELAY_TO_VAR, to.to_string()),
            None => cmd.env_remove(RELAY_TO_VAR),
        };
        let sasl = sasl_users
            .iter()
            .map(|(login, password)| format!("{login}:{password}"))
            .collect::<Vec<_>>()
            .join(" ");
        if sasl.is_empty() {
            cmd.env_remove(SASL_USERS_VAR);
        } else {
            cmd.env(SASL_USERS_VAR, &sasl);
        }
        let mut mode_note = relay_to.map_or(String::new(), |to| format!(" ({RELAY_TO_VAR}={to})"));
        if !sasl.is_empty() {
            mode_note.push_str(&format!(" ({SASL_USERS_VAR}={sasl:?})"));
        }
        let out = cmd
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "PostfixEnv: cannot run {}: {e} (bash and the postfix package from tests/env/install-deps are required)",
                    up.display()
                )
            });
        if !out.status.success() {
            let _ = Command::new(script("postfix-down"))
                .arg(dir.path())
                .output();
            let maillog = std::fs::read_to_string(dir.path().join("maillog")).unwrap_or_default();
            panic!(
                "PostfixEnv: {} {} {milter_spec}{mode_note} failed ({}). It needs root and the postfix package (with SASL also sasl2-bin, libsasl2-modules, libsasl2-modules-db): run `tests/env/install-deps` as root.\n--- stderr ---\n{}\n--- stdout ---\n{}\n--- maillog ---\n{}",
                up.display(),
                dir.path().display(),
                out.status,
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout),
                maillog,
            );
        }
        let env_sh = dir.path().join("env.sh");
        let text = std::fs::read_to_string(&env_sh)
            .unwrap_or_else(|e| panic!("PostfixEnv: cannot read {}: {e}", env_sh.display()));
        let vars = parse_env_sh(&text);
        PostfixEnv {
            dir,
            vars,
            stopped: false,
        }
    }

    /// A raw value from `env.sh` (see tests/env/README.md); panics if absent.
    pub fn var(&self, key: &str) -> &str {
        self.vars
            .get(key)
            .unwrap_or_else(|| panic!("PostfixEnv: no {key} in env.sh"))
    }

    /// The environment's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// smtpd's address (127.0.0.1, a free port).
    pub fn smtp_addr(&self) -> SocketAddr {
        let v = self.var("SMTP_ADDR");
        v.parse()
            .unwrap_or_else(|e| panic!("PostfixEnv: SMTP_ADDR={v:?} is no socket address: {e}"))
    }

    /// Where an instance in relay mode relays every recipient to (None:
    /// the default mode, delivering to its Maildir).
    pub fn relay_to(&self) -> Option<SocketAddr> {
        self.vars.get("RELAY_TO").map(|v| {
            v.parse()
                .unwrap_or_else(|e| panic!("PostfixEnv: RELAY_TO={v:?} is no socket address: {e}"))
        })
    }

    /// The config directory (`postfix -c`, `postconf -c`, `postqueue -c`).
    pub fn config_dir(&self) -> PathBuf {
        PathBuf::from(self.var("CONFIG_DIR"))
    }

    /// The queue directory.
    pub fn queue_dir(&self) -> PathBuf {
        PathBuf::from(self.var("QUEUE_DIR"))
    }

    /// `virtual_mailbox_base`; all mail lands in the Maildir `all/` under it.
    pub fn mail_dir(&self) -> PathBuf {
        PathBuf::from(self.var("MAIL_DIR"))
    }

    /// The one Maildir every recipient's copy is delivered to.
    pub fn maildir(&self) -> PathBuf {
        self.mail_dir().join("all")
    }

    /// The master daemon's PID.
    pub fn master_pid(&self) -> u32 {
        let v = self.var("MASTER_PID");
        v.parse()
            .unwrap_or_else(|e| panic!("PostfixEnv: MASTER_PID={v:?}: {e}"))
    }

    /// The instance's log (`maillog_file`, written by postlogd).
    pub fn maillog(&self) -> String {
        std::fs::read_to_string(self.var("MAILLOG")).unwrap_or_default()
    }

    /// A `postconf -c DIR/etc -h NAME` value of the running configuration.
    pub fn postconf(&self, name: &str) -> String {
        let out = Command::new("postconf")
            .arg("-c")
            .arg(self.config_dir())
            .arg("-h")
            .arg(name)
            .output()
            .unwrap_or_else(|e| panic!("PostfixEnv: cannot run postconf: {e}"));
        assert!(
            out.status.success(),
            "postconf -h {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The second smtpd: the same as [`PostfixEnv::smtp_addr`] except that
    /// the milter macro `{daemon_name}` is `ORIGINATING` there (it is
    /// `mx.autoencrypt.test` on the first). Neither requires authentication;
    /// in an instance from [`PostfixEnv::start_sasl`] this one offers it.
    pub fn submission_addr(&self) -> SocketAddr {
        let v = self.var("SUBMISSION_ADDR");
        v.parse().unwrap_or_else(|e| {
            panic!("PostfixEnv: SUBMISSION_ADDR={v:?} is no socket address: {e}")
        })
    }

    /// An SMTP session with the `ORIGINATING` smtpd.
    pub fn submission_session(&self) -> Session {
        Session::connect(self.submission_addr())
    }

    /// [`PostfixEnv::send`] through the `ORIGINATING` smtpd.
    pub fn send_submission(&self, from: &str, to: &[&str], message: &[u8]) -> SmtpOutcome {
        let mut s = self.submission_session();
        let outcome = s.send(from, to, message);
        s.quit();
        outcome
    }

    /// [`PostfixEnv::send_submission`] after authenticating: EHLO, `AUTH
    /// PLAIN` with `login` and `password` ([`Session::auth_plain`]), then
    /// MAIL, RCPT, DATA as [`Session::send`], then QUIT. The AUTH reply is
    /// [`SmtpOutcome::auth`]; when it is not `235`, no MAIL FROM is sent and
    /// the outcome says so ([`SmtpOutcome::authenticated`] false,
    /// [`SmtpOutcome::last`] = the AUTH reply, nothing accepted). Needs
    /// [`PostfixEnv::start_sasl`] (else smtpd answers AUTH with 503).
    pub fn send_authenticated(
        &self,
        login: &str,
        password: &str,
        from: &str,
        to: &[&str],
        message: &[u8],
    ) -> SmtpOutcome {
        let mut s = self.submission_session();
        let outcome = s.send_authenticated(login, password, from, to, message);
        s.quit();
        outcome
    }

    /// The SASL logins of an instance from [`PostfixEnv::start_sasl`]
    /// (empty without SASL).
    pub fn sasl_logins(&self) -> Vec<&str> {
        self.vars
            .get("SASL_LOGINS")
            .map_or_else(Vec::new, |v| v.split_whitespace().collect())
    }

    /// The Cyrus SASL realm the users are stored under (`myhostname`; the
    /// authenticated name is the login without it), None without SASL.
    pub fn sasl_realm(&self) -> Option<&str> {
        self.vars.get("SASL_REALM").map(String::as_str)
    }

    /// Submits a message with Postfix's `sendmail -C DIR/etc` (pickup →
    /// cleanup: the `non_smtpd_milters` path). Returns sendmail's output;
    /// it exits 0 once the message is in the maildrop queue.
    pub fn sendmail(&self, from: &str, to: &[&str], message: &[u8]) -> std::process::Output {
        let mut child = Command::new("sendmail")
            .arg("-C")
            .arg(self.config_dir())
            .arg("-f")
            .arg(from)
            .arg("--")
            .args(to)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("PostfixEnv: cannot run Postfix's sendmail: {e}"));
        child
            .stdin
            .take()
            .unwrap()
            .write_all(message)
            .unwrap_or_else(|e| panic!("PostfixEnv: writing to sendmail: {e}"));
        child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("PostfixEnv: sendmail: {e}"))
    }

    /// Opens an SMTP session (banner read, EHLO sent). Panics if smtpd does
    /// not greet with 220 or refuses EHLO.
    pub fn session(&self) -> Session {
        Session::connect(self.smtp_addr())
    }

    /// Sends one message in its own session: EHLO, MAIL FROM, one RCPT TO per
    /// recipient, DATA (if any recipient was accepted), QUIT. `message` is
    /// the raw message; line endings may be LF or CRLF (sent as CRLF,
    /// dot-stuffed).
    pub fn send(&self, from: &str, to: &[&str], message: &[u8]) -> SmtpOutcome {
        let mut s = self.session();
        let outcome = s.send(from, to, message);
        s.quit();
        outcome
    }

    /// Every delivered copy so far, oldest first.
    pub fn all_mail(&self) -> Vec<Delivered> {
        let new = self.maildir().join("new");
        let Ok(rd) = std::fs::read_dir(&new) else {
            return Vec::new(); // nothing delivered yet: virtual(8) makes the Maildir
        };
        let mut files: Vec<(SystemTime, PathBuf)> = rd
            .filter_map(Result::ok)
            .map(|e| {
                let t = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                (t, e.path())
            })
            .collect();
        files.sort();
        files
            .into_iter()
            .filter_map(|(_, path)| {
                // A file in new/ is complete (Maildir: written in tmp/, then
                // renamed); it may vanish only if a test removes it.
                let raw = std::fs::read(&path).ok()?;
                let recipient = delivered_to(&raw).unwrap_or_default();
                Some(Delivered {
                    path,
                    recipient,
                    raw,
                })
            })
            .collect()
    }

    /// The delivered copies for `address` so far (raw bytes as in the
    /// Maildir: LF line endings, Postfix's delivery headers first).
    /// Addresses compare case-insensitively.
    pub fn mail_for(&self, address: &str) -> Vec<Vec<u8>> {
        self.all_mail()
            .into_iter()
            .filter(|d| d.recipient.eq_ignore_ascii_case(address))
            .map(|d| d.raw)
            .collect()
    }

    /// How many copies were delivered to `address` so far.
    pub fn maildir_count(&self, address: &str) -> usize {
        self.mail_for(address).len()
    }

    /// Waits until at least one copy for `address` is delivered, then
    /// returns all of them; returns an empty Vec if none arrived within
    /// `timeout` (use [`PostfixEnv::expect_mail`] to fail instead).
    pub fn wait_for_mail(&self, address: &str, timeout: Duration) -> Vec<Vec<u8>> {
        self.wait_for_mail_count(address, 1, timeout)
    }

    /// Waits until at least `n` copies for `address` are delivered (or
    /// `timeout` passes) and returns what there is.
    pub fn wait_for_mail_count(&self, address: &str, n: usize, timeout: Duration) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        loop {
            let mail = self.mail_for(address);
            if mail.len() >= n || Instant::now() >= deadline {
                return mail;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Like [`PostfixEnv::wait_for_mail_count`], but panics (with the
    /// maillog) unless exactly `n` copies arrived within `timeout`.
    pub fn expect_mail(&self, address: &str, n: usize, timeout: Duration) -> Vec<Vec<u8>> {
        let mail = self.wait_for_mail_count(address, n, timeout);
        if mail.len() != n {
            panic!(
                "PostfixEnv: expected {n} message(s) for {address} within {timeout:?}, found {}\n--- maillog ---\n{}",
                mail.len(),
                self.maillog()
            );
        }
        mail
    }

    /// Queue files of the instance (maildrop, incoming, active, deferred,
    /// hold, corrupt), read from the queue directory.
    pub fn queue_files(&self) -> Vec<PathBuf> {
        let q = self.queue_dir();
        let mut files = Vec::new();
        for sub in [
            "maildrop", "incoming", "active", "deferred", "hold", "corrupt",
        ] {
            collect_files(&q.join(sub), &mut files);
        }
        files
    }

    /// True when no message is queued (none in flight, none deferred).
    pub fn queue_is_empty(&self) -> bool {
        self.queue_files().is_empty()
    }

    /// Waits until the queue is empty (all mail delivered or bounced);
    /// false if it is not within `timeout`.
    pub fn wait_queue_empty(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.queue_is_empty() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `postqueue -p` output (needs the instance running).
    pub fn postqueue(&self) -> String {
        let out = Command::new("postqueue")
            .arg("-c")
            .arg(self.config_dir())
            .arg("-p")
            .output()
            .unwrap_or_else(|e| panic!("PostfixEnv: cannot run postqueue: {e}"));
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }

    /// Stops the instance now (also done on drop).
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        run_down("postfix-down", self.dir.path(), "PostfixEnv");
    }
}

impl Drop for PostfixEnv {
    fn drop(&mut self) {
        self.stop();
    }
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.filter_map(Result::ok) {
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            collect_files(&e.path(), out);
        } else if ft.is_file() {
            out.push(e.path());
        }
    }
}

/// One delivered copy.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// The file in the Maildir's `new/`.
    pub path: PathBuf,
    /// Its `Delivered-To:` (the recipient, as given in RCPT TO).
    pub recipient: String,
    /// The file's bytes (LF line endings).
    pub raw: Vec<u8>,
}

/// The value of the first `Delivered-To:` header among the delivery headers.
fn delivered_to(raw: &[u8]) -> Option<String> {
    for line in raw.split(|&b| b == b'\n') {
        if line.is_empty() || line == b"\r" {
            break;
        }
        if let Some(v) = strip_prefix_ci(line, b"Delivered-To:") {
            return Some(String::from_utf8_lossy(v).trim().to_string());
        }
    }
    None
}

fn strip_prefix_ci<'a>(line: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    (line.len() >= prefix.len() && line[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &line[prefix.len()..])
}

/// Splits a delivered copy into the headers Postfix prepended (virtual(8)'s
/// `Return-Path`, `X-Original-To`, `Delivered-To`, and the instance's own
/// `Received: … by mx.autoencrypt.test (Postfix…) …`) and the message as the
/// client sent it (with whatever the milter changed), LF line endings.
/// (Mail submitted with [`PostfixEnv::sendmail`] also gets `Message-Id`,
/// `Date` and `From` added when missing; SMTP mail gets nothing added.)
pub fn split_delivery(raw: &[u8]) -> (&[u8], &[u8]) {
    let mut pos = 0;
    let mut seen_received = false;
    while pos < raw.len() {
        let (field, next) = header_field(raw, pos);
        let is_delivery = strip_prefix_ci(field, b"Return-Path:").is_some()
            || strip_prefix_ci(field, b"X-Original-To:").is_some()
            || strip_prefix_ci(field, b"Delivered-To:").is_some();
        let is_ours = !seen_received
            && strip_prefix_ci(field, b"Received:").is_some()
            && contains(field, format!("by {MYHOSTNAME} (Postfix").as_bytes());
        if is_delivery {
            pos = next;
        } else if is_ours {
            seen_received = true;
            pos = next;
        } else {
            break;
        }
    }
    raw.split_at(pos)
}

/// The message as the client sent it (see [`split_delivery`]).
pub fn strip_delivery_headers(raw: &[u8]) -> &[u8] {
    split_delivery(raw).1
}

/// One header field starting at `pos` (with its continuation lines):
/// (field bytes, index after it).
fn header_field(raw: &[u8], pos: usize) -> (&[u8], usize) {
    let mut end = pos;
    loop {
        let nl = raw[end..].iter().position(|&b| b == b'\n');
        end = match nl {
            Some(i) => end + i + 1,
            None => raw.len(),
        };
        if end >= raw.len() || !(raw[end] == b' ' || raw[end] == b'\t') {
            return (&raw[pos..end], end);
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Splits a message at the first empty line: (header incl. its final line
/// end, body after the empty line). Without an empty line, all is header.
pub fn header_and_body(msg: &[u8]) -> (&[u8], &[u8]) {
    let mut pos = 0;
    while pos < msg.len() {
        let end = msg[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(msg.len(), |i| pos + i + 1);
        let line = &msg[pos..end];
        if line == b"\n" || line == b"\r\n" {
            return (&msg[..pos], &msg[end..]);
        }
        pos = end;
    }
    (msg, &[])
}

/// CRLF → LF (Postfix stores and delivers LF line endings).
pub fn lf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// LF → CRLF (lines already ending in CRLF are left alone).
pub fn crlf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 32);
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\n' && (i == 0 || bytes[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}

/// One SMTP reply (all lines of a multi-line reply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// 220, 250, 354, 451, 452, 550, …
    pub code: u16,
    /// The text after the code on each line (enhanced status code included).
    pub lines: Vec<String>,
}

impl Reply {
    /// The text of all lines joined with `\n` (enhanced code included).
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }

    /// The enhanced status code (`4.7.1`), if the reply has one.
    pub fn enhanced(&self) -> Option<&str> {
        let first = self.lines.first()?.split_whitespace().next()?;
        let mut parts = first.split('.');
        let ok = parts.next().is_some_and(|c| matches!(c, "2" | "4" | "5"))
            && parts.next().is_some_and(|p| p.parse::<u16>().is_ok())
            && parts.next().is_some_and(|p| p.parse::<u16>().is_ok())
            && parts.next().is_none();
        ok.then_some(first)
    }

    /// `"452 4.5.3"`, or `"250"` without an enhanced code.
    pub fn status(&self) -> String {
        match self.enhanced() {
            Some(e) => format!("{} {e}", self.code),
            None => self.code.to_string(),
        }
    }

    /// True if the reply starts with `prefix`, e.g. `"451 4.7.1"` or `"250"`.
    pub fn is(&self, prefix: &str) -> bool {
        self.to_string().starts_with(prefix)
    }

    /// 2xx.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 4xx.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// 5xx.
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }
}

impl fmt::Display for Reply {
    /// `"451 4.7.1 Service unavailable - try again later"` (the first line;
    /// further lines follow after `\n`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, l) in self.lines.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{} {l}", self.code)?;
        }
        Ok(())
    }
}

/// The base64 of `bytes` (RFC 4648, padded), for `AUTH PLAIN`.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Every reply of one mail transaction.
#[derive(Debug, Clone)]
pub struct SmtpOutcome {
    /// The reply to `AUTH` (`235 2.7.0 Authentication successful`, `535
    /// 5.7.8 …`); None when the transaction did not authenticate
    /// ([`Session::send`]). When it is not 235, nothing else was sent:
    /// `mail` is a placeholder with code 0.
    pub auth: Option<Reply>,
    /// The reply to `MAIL FROM`.
    pub mail: Reply,
    /// Per recipient, in order: the address and the reply to its `RCPT TO`
    /// (empty when MAIL FROM was refused).
    pub rcpts: Vec<(String, Reply)>,
    /// The reply to `DATA` itself (354, or a refusal); None when no
    /// recipient was accepted (then the transaction was reset with RSET).
    pub data_start: Option<Reply>,
    /// The reply after the message's final dot (`250 2.0.0 Ok: queued as
    /// …`, or the milter's verdict); None when DATA was not reached or was
    /// refused.
    pub data: Option<Reply>,
}

impl SmtpOutcome {
    /// The reply to `RCPT TO:<address>` (case-insensitive); panics if the
    /// address was not among the recipients or not tried.
    pub fn rcpt(&self, address: &str) -> &Reply {
        self.rcpts
            .iter()
            .find(|(a, _)| a.eq_ignore_ascii_case(address))
            .map(|(_, r)| r)
            .unwrap_or_else(|| panic!("no RCPT reply for {address} in {self}"))
    }

    /// The recipients whose RCPT was answered 2xx.
    pub fn accepted_rcpts(&self) -> Vec<&str> {
        self.rcpts
            .iter()
            .filter(|(_, r)| r.is_positive())
            .map(|(a, _)| a.as_str())
            .collect()
    }

    /// True when the message was accepted (the final reply is 2xx).
    pub fn accepted(&self) -> bool {
        self.data.as_ref().is_some_and(Reply::is_positive)
    }

    /// True when AUTH was sent and answered 235.
    pub fn authenticated(&self) -> bool {
        self.auth.as_ref().is_some_and(|a| a.code == 235)
    }

    /// The reply that decided the transaction: a refused AUTH, or the final
    /// DATA reply, or the DATA refusal, or the last RCPT reply, or the MAIL
    /// reply.
    pub fn last(&self) -> &Reply {
        if let Some(auth) = self.auth.as_ref().filter(|a| a.code != 235) {
            return auth;
        }
        self.data
            .as_ref()
            .or(self.data_start.as_ref())
            .or(self.rcpts.last().map(|(_, r)| r))
            .unwrap_or(&self.mail)
    }

    /// Postfix's queue id from `250 2.0.0 Ok: queued as ID`, if accepted.
    pub fn queue_id(&self) -> Option<String> {
        let d = self.data.as_ref()?;
        d.text()
            .split("queued as ")
            .nth(1)
            .map(|s| s.split_whitespace().next().unwrap_or("").to_string())
    }
}

impl fmt::Display for SmtpOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(a) = &self.auth {
            write!(f, "AUTH: {a}; ")?;
        }
        write!(f, "MAIL: {}", self.mail)?;
        for (a, r) in &self.rcpts {
            write!(f, "; RCPT {a}: {r}")?;
        }
        if let Some(d) = &self.data_start {
            write!(f, "; DATA: {d}")?;
        }
        if let Some(d) = &self.data {
            write!(f, "; end of data: {d}")?;
        }
        Ok(())
    }
}

/// An SMTP client session with smtpd: several transactions may follow each
/// other on one connection.
#[derive(Debug)]
pub struct Session {
    reader: BufReader<TcpStream>,
    writer: BufWriter<TcpStream>,
    /// The 220 greeting.
    pub banner: Reply,
    /// The reply to EHLO (the extensions, one per line).
    pub ehlo: Reply,
}

impl Session {
    /// Connects, reads the banner and says `EHLO client.autoencrypt.test`;
    /// panics unless both are answered positively.
    pub fn connect(addr: SocketAddr) -> Session {
        Session::connect_as(addr, "client.autoencrypt.test")
    }

    /// Like [`Session::connect`] with a chosen EHLO name.
    pub fn connect_as(addr: SocketAddr, helo: &str) -> Session {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("SMTP: cannot connect to {addr}: {e}"));
        stream.set_read_timeout(Some(SMTP_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(SMTP_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        let writer = BufWriter::with_capacity(256 * 1024, stream);
        let mut s = Session {
            reader,
            writer,
            banner: Reply {
                code: 0,
                lines: Vec::new(),
            },
            ehlo: Reply {
                code: 0,
                lines: Vec::new(),
            },
        };
        s.banner = s.read_reply();
        assert_eq!(s.banner.code, 220, "SMTP banner from {addr}: {}", s.banner);
        s.ehlo = s.command(&format!("EHLO {helo}"));
        assert_eq!(s.ehlo.code, 250, "SMTP EHLO to {addr}: {}", s.ehlo);
        s
    }

    /// Sends one command line (CRLF added) and reads the reply.
    pub fn command(&mut self, line: &str) -> Reply {
        self.writer
            .write_all(line.as_bytes())
            .and_then(|()| self.writer.write_all(b"\r\n"))
            .and_then(|()| self.writer.flush())
            .unwrap_or_else(|e| panic!("SMTP: cannot send {line:?}: {e}"));
        self.read_reply()
    }

    /// Reads one (possibly multi-line) reply.
    pub fn read_reply(&mut self) -> Reply {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = self
                .reader
                .read_line(&mut line)
                .unwrap_or_else(|e| panic!("SMTP: reading a reply: {e} (so far: {lines:?})"));
            assert!(
                n > 0,
                "SMTP: connection closed by server (so far: {lines:?})"
            );
            let line = line.trim_end_matches(['\r', '\n']);
            assert!(
                line.len() >= 3 && line.is_char_boundary(3),
                "SMTP: malformed reply line {line:?}"
            );
            let code: u16 = line[..3]
                .parse()
                .unwrap_or_else(|_| panic!("SMTP: malformed reply line {line:?}"));
            let more = line.as_bytes().get(3) == Some(&b'-');
            lines.push((code, line.get(4..).unwrap_or("").to_string()));
            if !more {
                break;
            }
        }
        Reply {
            code: lines[0].0,
            lines: lines.into_iter().map(|(_, l)| l).collect(),
        }
    }

    /// One transaction: MAIL FROM, RCPT TO per recipient, then DATA with the
    /// message if at least one recipient was accepted, else RSET. The
    /// session is ready for the next transaction afterwards (unless the
    /// server closed it, which panics on the next command).
    pub fn send(&mut self, from: &str, to: &[&str], message: &[u8]) -> SmtpOutcome {
        self.send_with_params(from, "", to, message)
    }

    /// [`Session::send`] with extra MAIL FROM parameters (e.g. `SMTPUTF8`).
    pub fn send_with_params(
        &mut self,
        from: &str,
        params: &str,
        to: &[&str],
        message: &[u8],
    ) -> SmtpOutcome {
        let size = message.len() + message.len() / 16;
        let mail = self.command(&format!("MAIL FROM:<{from}> SIZE={size}{params}"));
        let mut outcome = SmtpOutcome {
            auth: None,
            mail,
            rcpts: Vec::new(),
            data_start: None,
            data: None,
        };
        if !outcome.mail.is_positive() {
            return outcome;
        }
        for &r in to {
            let reply = self.command(&format!("RCPT TO:<{r}>"));
            outcome.rcpts.push((r.to_string(), reply));
        }
        if outcome.accepted_rcpts().is_empty() {
            self.command("RSET");
            return outcome;
        }
        let start = self.command("DATA");
        let go = start.code == 354;
        outcome.data_start = Some(start);
        if !go {
            return outcome;
        }
        self.write_data(message)
            .unwrap_or_else(|e| panic!("SMTP: sending the message ({} bytes): {e}", message.len()));
        outcome.data = Some(self.read_reply());
        outcome
    }

    /// Sends `AUTH PLAIN` with the initial response (base64 of
    /// `\0login\0password`: no authorization identity) and returns the
    /// reply: `235 2.7.0 Authentication successful`, `535 5.7.8 Error:
    /// authentication failed: …`, `503 5.5.1 Error: authentication not
    /// enabled` on an smtpd without SASL.
    pub fn auth_plain(&mut self, login: &str, password: &str) -> Reply {
        let token = base64(format!("\0{login}\0{password}").as_bytes());
        self.command(&format!("AUTH PLAIN {token}"))
    }

    /// [`Session::auth_plain`], then, if it was answered 235,
    /// [`Session::send`]. When AUTH is refused, no MAIL FROM is sent: the
    /// outcome holds the AUTH reply and a placeholder `mail` (code 0).
    pub fn send_authenticated(
        &mut self,
        login: &str,
        password: &str,
        from: &str,
        to: &[&str],
        message: &[u8],
    ) -> SmtpOutcome {
        let auth = self.auth_plain(login, password);
        if auth.code != 235 {
            return SmtpOutcome {
                auth: Some(auth),
                mail: Reply {
                    code: 0,
                    lines: vec!["(MAIL FROM not sent: AUTH was refused)".to_string()],
                },
                rcpts: Vec::new(),
                data_start: None,
                data: None,
            };
        }
        let mut outcome = self.send(from, to, message);
        outcome.auth = Some(auth);
        outcome
    }

    /// Writes the message dot-stuffed with CRLF line endings, then the final
    /// dot.
    fn write_data(&mut self, message: &[u8]) -> std::io::Result<()> {
        let w = &mut self.writer;
        let mut rest = message;
        while !rest.is_empty() {
            let (line, next) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &rest[rest.len()..]),
            };
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.first() == Some(&b'.') {
                w.write_all(b".")?;
            }
            w.write_all(line)?;
            w.write_all(b"\r\n")?;
            rest = next;
        }
        w.write_all(b".\r\n")?;
        w.flush()
    }

    /// Sends RSET.
    pub fn rset(&mut self) -> Reply {
        self.command("RSET")
    }

    /// Sends QUIT and closes (a server that already closed is fine).
    pub fn quit(mut self) {
        let _ = self
            .writer
            .write_all(b"QUIT\r\n")
            .and_then(|()| self.writer.flush());
        let mut sink = Vec::new();
        let _ = self.reader.read_to_end(&mut sink);
    }
}
