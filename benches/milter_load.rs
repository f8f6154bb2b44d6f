#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "benchmark"
)]
//! Load generator speaking the milter protocol to the real release binary
//! (`autoencrypt-milter --config FILE`, a separate process, so that its CPU
//! time and peak RSS can be read from `/proc`). Results go into
//! BENCHMARKS.md, section "Milter throughput and latency (issue 5)".
//!
//! * Throughput and added latency: N concurrent milter connections (like N
//!   Postfix smtpd processes), each sending 10 KB messages back to back
//!   (MAIL, one RCPT, headers, the body in one chunk, EOM, as Postfix
//!   does), for S/MIME (RSA 2048), OpenPGP (cv25519) and a "plaintext"
//!   recipient whose rule has `methods = []` (the fixed cost of the
//!   protocol). Latency is measured from sending MAIL to the final EOM
//!   reply: what the milter adds to one SMTP transaction. Then a paced
//!   run at a fixed offered rate (default 2,000 messages/s) gives the
//!   latency below saturation, where a p99 target means something.
//! * Memory: a fresh milter, 100 concurrent connections each sending a
//!   25 MiB message (body in 65,535-byte chunks, as Postfix sends it),
//!   S/MIME; peak RSS (`VmHWM`) of the milter process.
//!
//! Keys come from a local key directory (`[keys] directory`), so no DNS
//! is involved; `dns` points at a port where nothing answers and is never
//! asked. The directory source reads and validates the key file at every
//! RCPT (it has no cache): that is measured as it is.
//!
//! * Harvesting (issue 12), only with `MILTER_LOAD_METHODS=signed`: a
//!   stream of inbound S/MIME-signed messages from 50 senders under a
//!   passing `Authentication-Results` field, to a local recipient whose
//!   rule passes them, so the milter's only work beyond the protocol is
//!   learning the signers' certificates into SQLite; the same stream with
//!   `[harvest] enabled = false` is the baseline, in alternating rounds
//!   (benches/support/harvest_load.rs). Results go into BENCHMARKS.md,
//!   section "Harvesting keys from signed inbound mail (issue 12)".
//!
//! `cargo bench --bench milter_load` runs everything but the harvesting
//! comparison (about two minutes). Without `--bench` (as under `cargo
//! test --all-targets`) it runs a smoke test: a few messages per method,
//! a small spooled message, and signed mail whose keys must be learned
//! (and not with harvesting off).
//!
//! Environment: `MILTER_LOAD_SECS` (per run, default 5),
//! `MILTER_LOAD_CONNS` (default `1,4,16,64`), `MILTER_LOAD_METHODS`
//! (default `plain,smime,openpgp`), `MILTER_LOAD_THROUGHPUT` (`0` skips
//! the throughput runs), `MILTER_LOAD_RATE` (paced run,
//! messages/s, default 2000; 0 skips it), `MILTER_LOAD_MEMORY` (`0` skips
//! the memory run), `MILTER_LOAD_MEM_CONNS` (100), `MILTER_LOAD_MEM_MIB`
//! (message size, 25), `MILTER_LOAD_SPOOL` (spool threshold bytes,
//! default 4 MiB), `MILTER_LOAD_BUDGET` (`limits.memory_budget_bytes`,
//! default the milter's), `MILTER_LOAD_KEEP=1` keeps the milter running at the end
//! of the throughput runs until Enter is pressed (for `perf record -p`).
//! For `signed`: `MILTER_LOAD_CONNS` defaults to `1,16`,
//! `MILTER_LOAD_ROUNDS` (rounds of each of harvest on and off, default 4),
//! `MILTER_LOAD_RATE` adds a paced run at 16 connections (default 2000),
//! `MILTER_LOAD_SENDERS` (distinct signers, default 50),
//! `MILTER_LOAD_HARVEST_QUEUE` (`harvest.queue`, default the milter's),
//! `MILTER_LOAD_HARVEST` (`both`, or only `on` / `off`, e.g. under `perf
//! record`, which follows the bench's children).
//!
//! CPU per message is the milter's CPU time over the whole run divided by
//! every message it handled in that time, the warm-up's included.

#[path = "support/harvest_load.rs"]
mod harvest_load;
#[path = "support/signed.rs"]
mod signed;
mod support;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sequoia_openpgp::serialize::SerializeInto;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

const DOMAIN: &str = "bench.test";
/// Postfix's body chunk size (`MILTER_CHUNK_SIZE`).
const CHUNK: usize = 65_535;

// ---------------------------------------------------------------- set-up

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Plain,
    Smime,
    OpenPgp,
    /// Signed inbound mail to a recipient whose rule passes it.
    Signed,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Plain => "plain",
            Kind::Smime => "smime",
            Kind::OpenPgp => "openpgp",
            Kind::Signed => "signed",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Kind::Plain => "plaintext (methods = [])",
            Kind::Smime => "S/MIME (RSA 2048, AES-256-CBC)",
            Kind::OpenPgp => "OpenPGP (cv25519)",
            Kind::Signed => "signed inbound (S/MIME, methods = [])",
        }
    }

    fn recipient(self) -> String {
        match self {
            Kind::Signed => format!("inbound@{DOMAIN}"),
            _ => format!("{}@{DOMAIN}", self.name()),
        }
    }

    fn parse(s: &str) -> Kind {
        match s.trim() {
            "plain" => Kind::Plain,
            "smime" => Kind::Smime,
            "openpgp" | "pgp" => Kind::OpenPgp,
            "signed" => Kind::Signed,
            other => panic!("unknown method {other:?} (plain, smime, openpgp, signed)"),
        }
    }
}

fn smime_cert_pem(addr: &str) -> Vec<u8> {
    support::smime_cert(addr).to_pem().unwrap()
}

fn openpgp_cert_armored(addr: &str) -> Vec<u8> {
    support::openpgp_cert(addr).armored().to_vec().unwrap()
}

const POLICY: &str = r#"
[[rule]]
name = "bench: plaintext"
recipient = ["plain@bench.test"]
methods = []

[[rule]]
name = "bench: S/MIME"
recipient = ["smime@bench.test"]
methods = ["smime"]

[[rule]]
name = "bench: OpenPGP"
recipient = ["openpgp@bench.test"]
methods = ["openpgp"]

# Inbound only where a configuration lists bench.test in local_domains
# (the harvesting runs).
[[rule]]
name = "bench: inbound"
recipient = ["inbound@bench.test"]
methods = []
"#;

/// Key directory, policy directory; written once per run of the bench.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        let policies = dir.path().join("policies");
        std::fs::create_dir(&keys).unwrap();
        std::fs::create_dir(&policies).unwrap();
        let smime = Kind::Smime.recipient();
        let pgp = Kind::OpenPgp.recipient();
        std::fs::write(keys.join(format!("{smime}.pem")), smime_cert_pem(&smime)).unwrap();
        std::fs::write(keys.join(format!("{pgp}.asc")), openpgp_cert_armored(&pgp)).unwrap();
        std::fs::write(policies.join("10-bench.toml"), POLICY).unwrap();
        Setup { dir }
    }

    /// The SQLite key store of the milter `name`: its own, never the one
    /// `STATE_DIRECTORY` (target/state under cargo) would give, which
    /// would keep the key history of an earlier run's keys (a key change
    /// each time) and the keys earlier runs learned.
    fn store(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.sqlite"))
    }

    /// Writes a configuration for a milter on `port` and returns its path:
    /// `top` holds `metrics_listen` and any other top-level keys, `tables`
    /// goes at the end.
    fn config(&self, name: &str, port: u16, spool_threshold: u64, extra: &Extra) -> PathBuf {
        let d = self.dir.path();
        let path = d.join(format!("{name}.toml"));
        let text = format!(
            "socket = \"inet:127.0.0.1:{port}\"\n\
             {top}\
             log_level = \"info\"\n\
             policy_dir = {policies:?}\n\
             [dns]\n\
             mode = \"trust-ad\"\n\
             resolvers = [\"127.0.0.1:9\"]\n\
             [keys]\n\
             directory = {keys:?}\n\
             [limits]\n\
             spool_threshold_bytes = {spool_threshold}\n{budget}\
             [store]\n\
             url = \"sqlite://{store}\"\n{tables}",
            store = self.store(name).display(),
            top = extra.top,
            tables = extra.tables,
            policies = d.join("policies").display().to_string(),
            keys = d.join("keys").display().to_string(),
            budget = match std::env::var("MILTER_LOAD_BUDGET") {
                Ok(b) if !b.is_empty() => format!("memory_budget_bytes = {b}\n"),
                _ => String::new(),
            },
        );
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// What a configuration adds to the common one.
struct Extra {
    /// Top-level keys; must set `metrics_listen`.
    top: String,
    /// Tables after `[limits]`.
    tables: String,
}

impl Extra {
    /// No metrics endpoint, nothing else.
    fn none() -> Extra {
        Extra {
            top: "metrics_listen = \"\"\n".into(),
            tables: String::new(),
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The milter binary, running; killed when dropped.
struct Milter {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    config: PathBuf,
}

impl Milter {
    fn start(setup: &Setup, name: &str, spool_threshold: u64) -> Milter {
        Milter::start_with(setup, name, spool_threshold, &Extra::none())
    }

    fn start_with(setup: &Setup, name: &str, spool_threshold: u64, extra: &Extra) -> Milter {
        let port = free_port();
        let config = setup.config(name, port, spool_threshold, extra);
        let log = setup.dir.path().join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_autoencrypt-milter"))
            .arg("--config")
            .arg(&config)
            .env_remove("RUST_LOG")
            // As under systemd. With RUST_BACKTRACE=1 every error Sequoia
            // creates while parsing a certificate captures a backtrace
            // (about 9 % of the milter's CPU with OpenPGP).
            .env_remove("RUST_BACKTRACE")
            .env_remove("RUST_LIB_BACKTRACE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "milter did not start listening; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Milter {
            child,
            addr,
            log,
            config,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// User + system CPU time of the process so far.
    fn cpu(&self) -> Duration {
        proc_cpu(&format!("/proc/{}/stat", self.pid()))
    }

    /// A field of `/proc/PID/status` in KiB (`VmHWM`, `VmRSS`).
    fn status_kib(&self, field: &str) -> u64 {
        status_kib(self.pid(), field)
    }
}

impl Drop for Milter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| {
            let rest = l.strip_prefix(field)?.strip_prefix(':')?;
            rest.trim().trim_end_matches("kB").trim().parse().ok()
        })
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Machine-wide CPU time from `/proc/stat`: (user + nice + system,
/// steal, all), so that a run disturbed by other processes shows.
fn machine_cpu() -> (Duration, Duration, Duration) {
    let s = std::fs::read_to_string("/proc/stat").unwrap();
    let f: Vec<u64> = s
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap())
        .collect();
    let t = |ticks: u64| Duration::from_millis(ticks * 10);
    (t(f[0] + f[1] + f[2]), t(f[7]), t(f.iter().sum()))
}

/// utime + stime from a `/proc/.../stat` file (USER_HZ = 100 on Linux).
fn proc_cpu(path: &str) -> Duration {
    let s = std::fs::read_to_string(path).unwrap();
    let after = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `after` starts at field 3.
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

// ------------------------------------------------------------- messages

/// A message as the MTA passes it to the milter: header fields (value with
/// its leading space) and the body with CRLF line endings.
struct Msg {
    headers: Vec<(String, String)>,
    body: Bytes,
}

impl Msg {
    /// A text part and a base64 attachment, `size` bytes in all (header
    /// included), like the encryption benchmark's message.
    fn new(to: &str, size: usize) -> Msg {
        let headers: Vec<(String, String)> = [
            ("Received", " from client.example (client.example [192.0.2.1])\n\tby mx.bench.test (Postfix) with ESMTPS id 4XYZ; Sun, 22 Nov 2026 10:00:00 +0000 (UTC)".to_owned()),
            ("From", " Sender <sender@example.net>".to_owned()),
            ("To", format!(" <{to}>")),
            ("Subject", " milter load test".to_owned()),
            ("Date", " Sun, 22 Nov 2026 10:00:00 +0000".to_owned()),
            ("Message-ID", " <bench.1@example.net>".to_owned()),
            ("MIME-Version", " 1.0".to_owned()),
            ("Content-Type", " multipart/mixed; boundary=\"b\"".to_owned()),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_owned(), v))
        .collect();
        let header_len: usize = headers.iter().map(|(n, v)| n.len() + v.len() + 3).sum();
        let mut body = String::from(
            "--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello,\r\n\r\nthe attachment follows.\r\n\r\n\
             --b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n",
        );
        let line = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAx\r\n";
        let end = "--b--\r\n";
        while header_len + 2 + body.len() + line.len() + end.len() <= size {
            body.push_str(line);
        }
        body.push_str(end);
        Msg {
            headers,
            body: Bytes::from(body.into_bytes()),
        }
    }

    /// A whole message (CRLF) as the MTA passes it on: header values with
    /// LF folds (Postfix strips the CR), the body as it is.
    fn from_raw(raw: &[u8]) -> Msg {
        let m = autoencrypt_milter::message::Message::parse(raw);
        let headers = m
            .headers
            .iter()
            .map(|h| {
                let v = String::from_utf8(h.value.clone()).unwrap();
                (h.name.clone(), v.replace("\r\n", "\n"))
            })
            .collect();
        Msg {
            headers,
            body: Bytes::copy_from_slice(&raw[m.body_offset..]),
        }
    }

    /// The usual 10 KiB message to `kind`'s recipient, the only one of its
    /// stream.
    fn stream(kind: Kind) -> Arc<Vec<Msg>> {
        Arc::new(vec![Msg::new(&kind.recipient(), 10 * 1024)])
    }

    fn size(&self) -> usize {
        self.headers
            .iter()
            .map(|(n, v)| n.len() + v.len() + 3)
            .sum::<usize>()
            + 2
            + self.body.len()
    }
}

// -------------------------------------------------------------- client

/// What the milter did with one message.
#[derive(Default, Debug)]
struct EomResult {
    header_edits: usize,
    replaced_body: usize,
}

/// One MTA-side milter connection. Every command (with the macros that go
/// before it) is one `write`, as Postfix's buffered stream sends it.
struct Client {
    rd: BufReader<OwnedReadHalf>,
    wr: OwnedWriteHalf,
    out: Vec<u8>,
    buf: Vec<u8>,
    /// Protocol options the milter asked for (`NOREPLY_*` honoured).
    opts: u32,
}

const NR_MAIL: u32 = 0x4000;
const NR_RCPT: u32 = 0x8000;
const NR_HEADER: u32 = 0x80;
const NR_BODY: u32 = 0x80000;
const NR_CONNECT: u32 = 0x1000;
const NO_HEADER: u32 = 0x20;
const NO_DATA: u32 = 0x200;
const NR_DATA: u32 = 0x10000;
const NO_BODY: u32 = 0x10;
const LEADING_SPACE: u32 = 0x10_0000;

impl Client {
    async fn open(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        let (rd, wr) = s.into_split();
        let mut c = Client {
            rd: BufReader::with_capacity(128 * 1024, rd),
            wr,
            out: Vec::with_capacity(16 * 1024),
            buf: Vec::with_capacity(CHUNK + 16),
            opts: 0,
        };
        // Negotiate: protocol 6, all actions, all protocol options offered.
        let mut p = Vec::new();
        p.extend_from_slice(&6u32.to_be_bytes());
        p.extend_from_slice(&0x1ffu32.to_be_bytes());
        p.extend_from_slice(&0x1f_ffffu32.to_be_bytes());
        c.push(b'O', &p);
        c.flush().await;
        let (kind, _) = c.read().await;
        assert_eq!(kind, b'O', "negotiation reply");
        let b = &c.buf;
        let opts = u32::from_be_bytes([b[8], b[9], b[10], b[11]]);
        assert!(
            opts & LEADING_SPACE != 0,
            "milter should ask for leading space"
        );
        assert!(
            opts & (NO_HEADER | NO_BODY) == 0,
            "milter wants headers and body"
        );
        c.opts = opts;
        // Connect, with the connect-stage macros.
        c.macros(
            b'C',
            &[("{daemon_name}", "smtpd"), ("{client_addr}", "192.0.2.1")],
        );
        let mut p = b"client.example\0".to_vec();
        p.push(b'4');
        p.extend_from_slice(&4567u16.to_be_bytes());
        p.extend_from_slice(b"192.0.2.1\0");
        c.command(b'C', &p, NR_CONNECT).await;
        c
    }

    fn push(&mut self, kind: u8, payload: &[u8]) {
        let len = u32::try_from(payload.len() + 1).unwrap();
        self.out.extend_from_slice(&len.to_be_bytes());
        self.out.push(kind);
        self.out.extend_from_slice(payload);
    }

    fn macros(&mut self, stage: u8, pairs: &[(&str, &str)]) {
        let mut p = vec![stage];
        for (k, v) in pairs {
            p.extend_from_slice(k.as_bytes());
            p.push(0);
            p.extend_from_slice(v.as_bytes());
            p.push(0);
        }
        self.push(b'D', &p);
    }

    async fn flush(&mut self) {
        self.wr.write_all(&self.out).await.unwrap();
        self.out.clear();
    }

    /// Reads one reply into `self.buf`.
    async fn read(&mut self) -> (u8, usize) {
        let len = self.rd.read_u32().await.unwrap() as usize;
        let kind = self.rd.read_u8().await.unwrap();
        let n = len - 1;
        self.buf.resize(n, 0);
        self.rd.read_exact(&mut self.buf[..n]).await.unwrap();
        (kind, n)
    }

    /// Sends a command (after whatever is pushed already) and expects
    /// "continue", unless the milter asked for no reply: then, as Postfix
    /// does, the command stays in the buffer until the next one that
    /// waits for a reply.
    async fn command(&mut self, kind: u8, payload: &[u8], noreply: u32) {
        self.push(kind, payload);
        if self.opts & noreply != 0 {
            // Postfix's buffer fills up, too, and is written out.
            if self.out.len() >= 65_536 {
                self.flush().await;
            }
        } else {
            self.flush().await;
            let (k, _) = self.read().await;
            assert_eq!(
                k,
                b'c',
                "reply {:?} to {:?}: {}",
                k as char,
                kind as char,
                String::from_utf8_lossy(&self.buf)
            );
        }
    }

    /// One transaction; returns the milter's end-of-message actions.
    async fn message(&mut self, qid: &str, msg: &Msg, to: &str) -> EomResult {
        self.macros(b'M', &[("i", qid)]);
        self.command(b'M', b"<sender@example.net>\0", NR_MAIL).await;
        self.macros(b'R', &[("i", qid)]);
        let rcpt = format!("<{to}>\0");
        self.command(b'R', rcpt.as_bytes(), NR_RCPT).await;
        // DATA, as Postfix sends it, unless the milter negotiated it away.
        if self.opts & NO_DATA == 0 {
            self.macros(b'T', &[("i", qid)]);
            self.command(b'T', b"", NR_DATA).await;
        }
        for (name, value) in &msg.headers {
            let mut p = Vec::with_capacity(name.len() + value.len() + 2);
            p.extend_from_slice(name.as_bytes());
            p.push(0);
            p.extend_from_slice(value.as_bytes());
            p.push(0);
            self.command(b'L', &p, NR_HEADER).await;
        }
        // No EOH: the milter negotiates NO_EOH (asserted by the tests).
        let mut rest = msg.body.clone();
        while !rest.is_empty() {
            let piece = rest.split_to(rest.len().min(CHUNK));
            self.command(b'B', &piece, NR_BODY).await;
        }
        self.macros(b'E', &[("i", qid)]);
        self.push(b'E', b"");
        self.flush().await;
        let mut r = EomResult::default();
        loop {
            let (kind, n) = self.read().await;
            match kind {
                b'c' | b'a' => return r,
                b'b' => r.replaced_body += n,
                b'h' | b'm' | b'i' => r.header_edits += 1,
                b'p' => {}
                other => panic!(
                    "{qid}: end-of-message reply {:?}: {}",
                    other as char,
                    String::from_utf8_lossy(&self.buf)
                ),
            }
        }
    }

    async fn quit(mut self) {
        self.push(b'Q', b"");
        self.flush().await;
    }
}

fn check(kind: Kind, r: &EomResult, msg: &Msg) {
    match kind {
        Kind::Plain | Kind::Signed => assert!(
            r.header_edits == 0 && r.replaced_body == 0,
            "plaintext message changed: {r:?}"
        ),
        Kind::Smime | Kind::OpenPgp => assert!(
            r.header_edits > 0 && r.replaced_body > msg.body.len(),
            "{kind:?} message not encrypted: {r:?}"
        ),
    }
}

// ----------------------------------------------------------- throughput

static QID: AtomicU64 = AtomicU64::new(1);

fn next_qid() -> String {
    format!("B{:X}", QID.fetch_add(1, Ordering::Relaxed))
}

/// When a connection starts its messages.
#[derive(Clone, Copy)]
enum Pace {
    /// Back to back.
    Closed,
    /// Each connection one message per `interval`, the connections
    /// spread evenly over it.
    Every { interval: Duration },
}

struct RunResult {
    kind: Kind,
    conns: usize,
    pace: Option<f64>,
    messages: usize,
    /// Every message of the run, the warm-up's included: what the CPU
    /// times are divided by.
    sent: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
    milter_cpu: Duration,
    client_cpu: Duration,
    /// User + system time of everything else on the machine, and steal,
    /// as a share of all CPU time during the run.
    other_share: f64,
    steal_share: f64,
}

impl RunResult {
    fn rate(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64()
    }

    /// `d` per message handled in the CPU window, in µs.
    fn per_message_us(&self, d: Duration) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            d.as_secs_f64() * 1e6 / self.sent as f64
        }
    }

    fn pct(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * self.latencies.len() as f64).ceil() as usize;
        self.latencies[rank.clamp(1, self.latencies.len()) - 1]
    }
}

/// Runs `conns` connections for `warmup` + `measure` (or `count` messages
/// per connection when given), sending the messages of `stream` in turn,
/// and collects the messages started after the warm-up.
#[allow(clippy::too_many_arguments, reason = "a bench's knobs")]
async fn run(
    milter: &Milter,
    kind: Kind,
    stream: &Arc<Vec<Msg>>,
    conns: usize,
    pace: Pace,
    warmup: Duration,
    measure: Duration,
    count: Option<usize>,
) -> RunResult {
    let addr = milter.addr;
    let to = kind.recipient();
    let next = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for _ in 0..conns {
        clients.push(Client::open(addr).await);
    }
    let start = Instant::now() + Duration::from_millis(20);
    let t0 = start + warmup;
    let stop = t0 + measure;
    let cpu_before = (milter.cpu(), proc_cpu("/proc/self/stat"), machine_cpu());
    let mut tasks = Vec::new();
    for (i, mut c) in clients.into_iter().enumerate() {
        let stream = stream.clone();
        let next = next.clone();
        let to = to.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut last_end = start;
            let mut k = 0usize;
            let mut sent = 0usize;
            loop {
                let due = match pace {
                    Pace::Closed => start,
                    Pace::Every { interval } => {
                        start + interval.mul_f64(k as f64 + i as f64 / conns as f64)
                    }
                };
                match count {
                    Some(n) if k >= n => break,
                    None if due >= stop => break,
                    _ => {}
                }
                tokio::time::sleep_until(due.into()).await;
                let began = Instant::now();
                if count.is_none() && began >= stop {
                    break;
                }
                let n = next.fetch_add(1, Ordering::Relaxed) as usize;
                let msg = &stream[n % stream.len()];
                let r = c.message(&next_qid(), msg, &to).await;
                let ended = Instant::now();
                sent += 1;
                if k == 0 {
                    check(kind, &r, msg);
                }
                if count.is_some() || began >= t0 {
                    lat.push(ended - began);
                    last_end = last_end.max(ended);
                }
                k += 1;
            }
            c.quit().await;
            (lat, last_end, sent)
        }));
    }
    let mut latencies = Vec::new();
    let mut last = t0;
    let mut sent = 0;
    for t in tasks {
        let (l, e, n) = t.await.unwrap();
        latencies.extend(l);
        last = last.max(e);
        sent += n;
    }
    let cpu_after = (milter.cpu(), proc_cpu("/proc/self/stat"), machine_cpu());
    let milter_cpu = cpu_after.0.saturating_sub(cpu_before.0);
    let client_cpu = cpu_after.1.saturating_sub(cpu_before.1);
    let busy = cpu_after.2.0.saturating_sub(cpu_before.2.0);
    let steal = cpu_after.2.1.saturating_sub(cpu_before.2.1);
    let all = cpu_after
        .2
        .2
        .saturating_sub(cpu_before.2.2)
        .max(Duration::from_millis(10));
    let other = busy.saturating_sub(milter_cpu + client_cpu);
    latencies.sort_unstable();
    let from = if count.is_some() { start } else { t0 };
    RunResult {
        kind,
        conns,
        pace: match pace {
            Pace::Closed => None,
            Pace::Every { interval } => Some(conns as f64 / interval.as_secs_f64()),
        },
        messages: latencies.len(),
        sent,
        elapsed: last.saturating_duration_since(from),
        latencies,
        milter_cpu,
        client_cpu,
        other_share: other.as_secs_f64() / all.as_secs_f64(),
        steal_share: steal.as_secs_f64() / all.as_secs_f64(),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn table(results: &[RunResult]) -> String {
    let mut s = String::from(
        "| method | conns | offered msg/s | messages | msg/s | p50 ms | p99 ms | max ms | milter CPU µs/msg | client CPU µs/msg | other CPU | steal |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in results {
        let per = |d: Duration| r.per_message_us(d);
        writeln!(
            s,
            "| {} | {} | {} | {} | {:.0} | {} | {} | {} | {:.0} | {:.0} | {:.0} % | {:.0} % |",
            r.kind.name(),
            r.conns,
            r.pace
                .map(|p| format!("{p:.0}"))
                .unwrap_or_else(|| "closed loop".into()),
            r.messages,
            r.rate(),
            ms(r.pct(50.0)),
            ms(r.pct(99.0)),
            ms(r.latencies.last().copied().unwrap_or_default()),
            per(r.milter_cpu),
            per(r.client_cpu),
            r.other_share * 100.0,
            r.steal_share * 100.0,
        )
        .unwrap();
    }
    s
}

// --------------------------------------------------------------- memory

struct MemResult {
    conns: usize,
    size: usize,
    threshold: u64,
    idle_kib: u64,
    hwm_kib: u64,
    elapsed: Duration,
    replaced: usize,
}

/// `conns` connections at once, each one message of `size` bytes, on a
/// fresh milter; peak RSS of the milter.
async fn memory(setup: &Setup, conns: usize, size: usize, threshold: u64) -> MemResult {
    let milter = Milter::start(setup, "memory", threshold);
    let idle_kib = milter.status_kib("VmRSS");
    let kind = Kind::Smime;
    let to = kind.recipient();
    let msg = Arc::new(Msg::new(&to, size));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let msg = msg.clone();
        let to = to.clone();
        let addr = milter.addr;
        tasks.push(tokio::spawn(async move {
            let mut c = Client::open(addr).await;
            let r = c.message(&next_qid(), &msg, &to).await;
            check(kind, &r, &msg);
            c.quit().await;
            r.replaced_body
        }));
    }
    let mut replaced = 0;
    for t in tasks {
        replaced += t.await.unwrap();
    }
    let elapsed = started.elapsed();
    let hwm_kib = milter.status_kib("VmHWM");
    check_log(&milter, conns);
    MemResult {
        conns,
        size: msg.size(),
        threshold,
        idle_kib,
        hwm_kib,
        elapsed,
        replaced,
    }
}

fn check_log(milter: &Milter, at_least: usize) {
    let log = std::fs::read_to_string(&milter.log).unwrap_or_default();
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ERROR") || l.contains("WARN"))
        .take(5)
        .collect();
    assert!(errors.is_empty(), "milter logged problems: {errors:#?}");
    let encrypted = log.matches(": encrypted with ").count();
    assert!(
        encrypted >= at_least,
        "{encrypted} messages logged as encrypted, expected {at_least}"
    );
}

// ----------------------------------------------------------------- main

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not valid")),
        _ => default,
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    // The load generator gets one thread, so that at least one of the two
    // cores is left for the milter.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async_main(bench));
}

async fn async_main(bench: bool) {
    let setup = Setup::new();
    if !bench {
        println!(
            "milter_load: smoke run (arguments {:?}; `cargo bench` passes --bench for the full run)",
            std::env::args().skip(1).collect::<Vec<_>>()
        );
        smoke(&setup).await;
        return;
    }
    let secs: f64 = env_or("MILTER_LOAD_SECS", 5.0);
    let conns_of = |default: &str| -> Vec<usize> {
        env_or("MILTER_LOAD_CONNS", default.to_owned())
            .split(',')
            .map(|s| s.trim().parse().unwrap())
            .collect()
    };
    let conns = conns_of("1,4,16,64");
    let all: Vec<Kind> = env_or("MILTER_LOAD_METHODS", "plain,smime,openpgp".to_owned())
        .split(',')
        .map(Kind::parse)
        .collect();
    let signed = all.contains(&Kind::Signed);
    let kinds: Vec<Kind> = all.into_iter().filter(|&k| k != Kind::Signed).collect();
    let rate: f64 = env_or("MILTER_LOAD_RATE", 2000.0);
    let spool: u64 = env_or("MILTER_LOAD_SPOOL", 4 * 1024 * 1024);
    let measure = Duration::from_secs_f64(secs);
    let warmup = Duration::from_millis(500);

    println!(
        "milter_load: {} (separate process), 10 KiB messages ({} bytes), {secs} s per run after 0.5 s warm-up",
        env!("CARGO_BIN_EXE_autoencrypt-milter"),
        Msg::new("x@bench.test", 10 * 1024).size()
    );
    if env_or("MILTER_LOAD_THROUGHPUT", 1u32) != 0 && !kinds.is_empty() {
        let milter = Milter::start(&setup, "throughput", spool);
        println!("milter pid {}", milter.pid());
        let mut results = Vec::new();
        for &kind in &kinds {
            let stream = Msg::stream(kind);
            for &n in &conns {
                let r = run(
                    &milter,
                    kind,
                    &stream,
                    n,
                    Pace::Closed,
                    warmup,
                    measure,
                    None,
                )
                .await;
                eprintln!(
                    "{} N={n}: {:.0} msg/s p50 {} ms p99 {} ms",
                    kind.label(),
                    r.rate(),
                    ms(r.pct(50.0)),
                    ms(r.pct(99.0))
                );
                results.push(r);
            }
            if rate > 0.0 {
                let n = 16;
                let interval = Duration::from_secs_f64(n as f64 / rate);
                let r = run(
                    &milter,
                    kind,
                    &stream,
                    n,
                    Pace::Every { interval },
                    warmup,
                    measure,
                    None,
                )
                .await;
                eprintln!(
                    "{} paced {rate} msg/s: {:.0} msg/s p50 {} ms p99 {} ms",
                    kind.label(),
                    r.rate(),
                    ms(r.pct(50.0)),
                    ms(r.pct(99.0))
                );
                results.push(r);
            }
        }
        println!("\n{}", table(&results));
        println!(
            "milter peak RSS over the throughput runs: {:.1} MiB",
            mib(milter.status_kib("VmHWM"))
        );
        if std::env::var("MILTER_LOAD_KEEP").is_ok_and(|v| v == "1") {
            println!(
                "milter pid {} on {}; press Enter to stop",
                milter.pid(),
                milter.addr
            );
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
        }
    }

    if signed {
        let opts = harvest_load::Options {
            conns: conns_of("1,16"),
            rounds: env_or("MILTER_LOAD_ROUNDS", 4),
            rate,
            warmup,
            measure,
            senders: env_or("MILTER_LOAD_SENDERS", 50),
            queue: env_or("MILTER_LOAD_HARVEST_QUEUE", 0),
            spool,
            which: env_or("MILTER_LOAD_HARVEST", "both".to_owned()),
        };
        harvest_load::compare(&setup, &opts).await;
    }

    if env_or("MILTER_LOAD_MEMORY", 1u32) != 0 {
        let conns: usize = env_or("MILTER_LOAD_MEM_CONNS", 100);
        let size: usize = env_or::<usize>("MILTER_LOAD_MEM_MIB", 25) * 1024 * 1024;
        let m = memory(&setup, conns, size, spool).await;
        print_memory(&m);
    }
}

fn print_memory(m: &MemResult) {
    let total_mib = (m.conns * m.size) as f64 / 1024.0 / 1024.0;
    println!(
        "\nmemory: {} concurrent S/MIME messages of {} bytes ({:.0} MiB in all), spool threshold {} bytes\n\
         | milter RSS idle | peak RSS (VmHWM) | peak / (conns × message) | peak / (conns × threshold) | wall time | replaced body bytes |\n\
         |---|---|---|---|---|---|\n\
         | {:.1} MiB | {:.1} MiB | {:.1} % | {:.2} | {:.1} s | {} |",
        m.conns,
        m.size,
        total_mib,
        m.threshold,
        mib(m.idle_kib),
        mib(m.hwm_kib),
        mib(m.hwm_kib) / total_mib * 100.0,
        mib(m.hwm_kib) / (m.conns as f64 * m.threshold as f64 / 1024.0 / 1024.0),
        m.elapsed.as_secs_f64(),
        m.replaced,
    );
}

/// Under `cargo test`: proves the load generator and the milter work
/// together, in seconds.
async fn smoke(setup: &Setup) {
    let milter = Milter::start(setup, "smoke", 64 * 1024);
    let mut results = Vec::new();
    for kind in [Kind::Plain, Kind::Smime, Kind::OpenPgp] {
        let stream = Msg::stream(kind);
        for n in [1, 2] {
            let r = run(
                &milter,
                kind,
                &stream,
                n,
                Pace::Closed,
                Duration::ZERO,
                Duration::ZERO,
                Some(3),
            )
            .await;
            assert_eq!(r.messages, 3 * n);
            results.push(r);
        }
    }
    check_log(&milter, 2 * 3 * 3);
    drop(milter);
    println!("{}", table(&results));
    // Spooled on both sides: larger than the threshold.
    let m = memory(setup, 2, 300 * 1024, 64 * 1024).await;
    assert_eq!(m.conns, 2);
    print_memory(&m);
    harvest_load::smoke(setup).await;
}
