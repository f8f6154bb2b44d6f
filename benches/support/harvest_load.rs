//! milter_load's harvesting comparison (issue 12): what learning keys
//! from signed inbound mail costs the milter. A stream of S/MIME-signed
//! messages from `senders` distinct signers (each its own RSA 2048
//! certificate), under `Authentication-Results: mx.bench.test;
//! dkim=pass header.d=<From domain>`, to `inbound@bench.test`, a local
//! recipient whose rule has `methods = []`: beyond the protocol the
//! milter's only work is harvesting (screening the header on the MTA
//! thread; verifying the signature, validating the signer's certificate
//! and writing it to SQLite on the worker). The first message of each
//! signer is `learned`, the rest `known`.
//!
//! Each run gets a fresh milter and a fresh SQLite store; harvest on and
//! off (`[harvest] enabled = false`, the same configuration otherwise)
//! alternate, the order reversed every other round. After the load the
//! run waits until the harvest queue is drained (every message counted in
//! `autoencrypt_harvest_messages_total`), and the milter's CPU time is
//! read after that: the work the queue still held is part of the cost.
//! The metrics say how many messages the full queue dropped
//! (`queue_full`), so the share actually examined is reported beside the
//! throughput.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::signed::{Signer, rfc5322_date, signed_message};
use crate::{DOMAIN, Extra, Kind, Milter, Msg, Pace, RunResult, Setup, free_port, ms, run};

/// The authserv-id of the bench's `Authentication-Results` fields.
pub const AUTHSERV_ID: &str = "mx.bench.test";
/// The signers' domain (not local: their mail is inbound).
const SIGNER_DOMAIN: &str = "signers.example";

/// The comparison's knobs (see the environment in milter_load.rs).
pub struct Options {
    pub conns: Vec<usize>,
    /// Rounds of each of harvest on and off.
    pub rounds: usize,
    /// A paced run at 16 connections at this many messages/s (0: none).
    pub rate: f64,
    pub warmup: Duration,
    pub measure: Duration,
    /// Distinct signers in the stream.
    pub senders: usize,
    /// `harvest.queue`; 0 keeps the milter's default.
    pub queue: usize,
    pub spool: u64,
    /// Which of harvest on and off to run (`both`, `on`, `off`).
    pub which: String,
}

/// The signers and one message from each.
struct SignedStream {
    signers: Vec<Signer>,
    stream: Arc<Vec<Msg>>,
    size: usize,
}

fn signed_stream(senders: usize) -> SignedStream {
    let signers: Vec<Signer> = (0..senders)
        .map(|i| Signer::new(&format!("sender{i}@{SIGNER_DOMAIN}"), i as u32))
        .collect();
    // A minute ago: the effective date is not clamped.
    let date = rfc5322_date(SystemTime::now() - Duration::from_secs(60));
    let to = Kind::Signed.recipient();
    let raw: Vec<Vec<u8>> = signers
        .iter()
        .map(|s| signed_message(s, &to, AUTHSERV_ID, &date, 10 * 1024))
        .collect();
    let size = raw[0].len();
    SignedStream {
        signers,
        stream: Arc::new(raw.iter().map(|r| Msg::from_raw(r)).collect()),
        size,
    }
}

/// A milter with a metrics endpoint, a fresh SQLite store and harvesting
/// on or off.
struct HarvestMilter {
    milter: Milter,
    metrics: SocketAddr,
}

/// A milter harvesting (or not) into a fresh store; `max_per_second`
/// `None` keeps the milter's default (`harvest.max_per_second`).
fn start(
    setup: &Setup,
    name: &str,
    harvest: bool,
    queue: usize,
    spool: u64,
    max_per_second: Option<u32>,
) -> HarvestMilter {
    let store = setup.store(name);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", store.display()));
    }
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let extra = Extra {
        top: format!(
            "metrics_listen = \"{metrics}\"\n\
             authserv_id = \"{AUTHSERV_ID}\"\n\
             local_domains = [\"{DOMAIN}\"]\n"
        ),
        tables: format!(
            // The bench's milter listens on loopback TCP, alone here.
            // Harvesting alone: verification (issue 15) would look every
            // signer up at end of message (its cost is measured apart,
            // BENCHMARKS.md), and the bench's DNS never answers.
            "[verify]\nenabled = false\n[harvest]\nenabled = {harvest}\nallow_inet_socket = true\n{}{}",
            if queue > 0 {
                format!("queue = {queue}\n")
            } else {
                String::new()
            },
            max_per_second.map_or_else(String::new, |r| format!("max_per_second = {r}\n"))
        ),
    };
    HarvestMilter {
        milter: Milter::start_with(setup, name, spool, &extra),
        metrics,
    }
}

// -------------------------------------------------------------- metrics

/// The harvest counters of one milter.
#[derive(Default, Debug, Clone)]
struct Counts {
    /// `autoencrypt_harvest_messages_total` by `result`.
    by_result: BTreeMap<String, u64>,
    /// `autoencrypt_keys_learned_total{method="smime"}`.
    learned_smime: u64,
}

/// Results that mean the message was not examined.
const NOT_EXAMINED: [&str; 6] = [
    "queue_full",
    "not_authenticated",
    "too_large",
    "store_failed",
    "recent",
    "rate_limited",
];

impl Counts {
    fn get(&self, result: &str) -> u64 {
        self.by_result.get(result).copied().unwrap_or(0)
    }

    fn total(&self) -> u64 {
        self.by_result.values().sum()
    }

    /// Messages the worker verified (whatever it made of them).
    fn examined(&self) -> u64 {
        self.total() - NOT_EXAMINED.iter().map(|r| self.get(r)).sum::<u64>()
    }

    /// Results other than learned, known and queue_full, as `name=n`.
    fn others(&self) -> String {
        let v: Vec<String> = self
            .by_result
            .iter()
            .filter(|(k, n)| {
                **n > 0 && !["learned", "known", "queue_full", "recent"].contains(&k.as_str())
            })
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        if v.is_empty() {
            "-".into()
        } else {
            v.join(" ")
        }
    }
}

/// `GET /metrics` (HTTP/1.0: the body ends with the connection).
fn scrape(addr: SocketAddr) -> String {
    let mut last = String::new();
    for _ in 0..50 {
        match std::net::TcpStream::connect(addr) {
            Ok(mut s) => {
                s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                    .unwrap();
                let mut text = String::new();
                s.read_to_string(&mut text).unwrap();
                let (head, body) = text.split_once("\r\n\r\n").unwrap();
                assert!(head.starts_with("HTTP/1."), "metrics answer: {head}");
                assert!(head.contains(" 200 "), "metrics answer: {head}");
                return body.to_owned();
            }
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("metrics endpoint {addr}: {last}");
}

fn counts(text: &str) -> Counts {
    let mut c = Counts::default();
    for line in text.lines() {
        let value = |rest: &str| -> u64 {
            let v = rest.rsplit(' ').next().unwrap();
            v.parse::<f64>()
                .unwrap_or_else(|_| panic!("metric line {line:?}")) as u64
        };
        if let Some(rest) = line.strip_prefix("autoencrypt_harvest_messages_total{result=\"") {
            let (name, _) = rest.split_once('"').unwrap();
            c.by_result.insert(name.to_owned(), value(rest));
        } else if line.starts_with("autoencrypt_keys_learned_total{method=\"smime\"}") {
            c.learned_smime = value(line);
        }
    }
    assert!(
        c.by_result.contains_key("learned"),
        "no autoencrypt_harvest_messages_total in the metrics:\n{text}"
    );
    c
}

/// Waits until every one of `sent` messages is counted (the queue is
/// drained); returns the counts and how long that took.
async fn drain(addr: SocketAddr, sent: usize) -> (Counts, Duration) {
    let began = Instant::now();
    loop {
        let c = counts(&scrape(addr));
        if c.total() >= sent as u64 {
            return (c, began.elapsed());
        }
        assert!(
            began.elapsed() < Duration::from_secs(120),
            "harvest queue not drained after 120 s: {} of {sent} counted: {c:?}",
            c.total()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ----------------------------------------------------------------- runs

/// One run of the comparison.
struct Round {
    harvest: bool,
    run: RunResult,
    /// The milter's CPU time from before the connections opened until the
    /// queue was drained.
    cpu: Duration,
    drain: Duration,
    counts: Counts,
}

impl Round {
    fn cpu_us(&self) -> f64 {
        self.run.per_message_us(self.cpu)
    }

    /// Share of the messages the worker examined.
    fn examined_share(&self) -> f64 {
        self.counts.examined() as f64 / self.run.sent.max(1) as f64
    }
}

async fn one(
    setup: &Setup,
    s: &SignedStream,
    opts: &Options,
    harvest: bool,
    conns: usize,
    pace: Pace,
    name: &str,
) -> Round {
    let m = start(setup, name, harvest, opts.queue, opts.spool, None);
    let cpu0 = m.milter.cpu();
    let r = run(
        &m.milter,
        Kind::Signed,
        &s.stream,
        conns,
        pace,
        opts.warmup,
        opts.measure,
        None,
    )
    .await;
    let (counts, drain) = if harvest {
        drain(m.metrics, r.sent).await
    } else {
        (counts(&scrape(m.metrics)), Duration::ZERO)
    };
    let cpu = m.milter.cpu().saturating_sub(cpu0);
    if !harvest {
        assert_eq!(counts.total(), 0, "harvest off, yet: {counts:?}");
    }
    check_quiet(&m.milter);
    Round {
        harvest,
        run: r,
        cpu,
        drain,
        counts,
    }
}

/// No warning or error in the milter's log.
fn check_quiet(milter: &Milter) {
    let log = std::fs::read_to_string(&milter.log).unwrap_or_default();
    let bad: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ERROR") || l.contains("WARN"))
        .take(5)
        .collect();
    assert!(bad.is_empty(), "milter logged problems: {bad:#?}");
}

fn on_off(h: bool) -> &'static str {
    if h { "on" } else { "off" }
}

fn offered(r: &RunResult) -> String {
    r.pace
        .map(|p| format!("{p:.0}"))
        .unwrap_or_else(|| "closed loop".into())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn spread(v: &[f64]) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{:.0} ({lo:.0}–{hi:.0})", median(v.to_vec()))
}

/// The harvest A/B comparison.
pub async fn compare(setup: &Setup, opts: &Options) {
    let s = signed_stream(opts.senders);
    println!(
        "\nharvest: {} signers, signed messages of {} bytes to {}, {} round(s) of each of {}, \
         connections {:?}{}",
        s.signers.len(),
        s.size,
        Kind::Signed.recipient(),
        opts.rounds,
        opts.which,
        opts.conns,
        if opts.rate > 0.0 {
            format!(" and 16 paced at {} msg/s", opts.rate)
        } else {
            String::new()
        }
    );
    let mut paces: Vec<(usize, Pace)> = opts.conns.iter().map(|&n| (n, Pace::Closed)).collect();
    if opts.rate > 0.0 {
        let interval = Duration::from_secs_f64(16.0 / opts.rate);
        paces.push((16, Pace::Every { interval }));
    }
    let which: Vec<bool> = match opts.which.as_str() {
        "both" => vec![true, false],
        "on" => vec![true],
        "off" => vec![false],
        other => panic!("MILTER_LOAD_HARVEST={other:?} (both, on, off)"),
    };
    let mut rounds: Vec<(usize, Round)> = Vec::new();
    for round in 0..opts.rounds {
        for (i, &(n, pace)) in paces.iter().enumerate() {
            let mut order = which.clone();
            if round % 2 == 1 {
                order.reverse();
            }
            for harvest in order {
                let name = format!("harvest-{round}-{i}-{}", on_off(harvest));
                let r = one(setup, &s, opts, harvest, n, pace, &name).await;
                eprintln!(
                    "round {round} N={n} {} harvest {}: {:.0} msg/s, {:.0} µs CPU/msg, \
                     learned {} known {} queue_full {}, examined {:.0} %, drain {} ms, other CPU {:.0} %",
                    offered(&r.run),
                    on_off(harvest),
                    r.run.rate(),
                    r.cpu_us(),
                    r.counts.get("learned"),
                    r.counts.get("known"),
                    r.counts.get("queue_full"),
                    r.examined_share() * 100.0,
                    ms(r.drain),
                    r.run.other_share * 100.0
                );
                rounds.push((round, r));
            }
        }
    }
    println!("\n{}", rounds_table(&rounds));
    println!("{}", summary(&rounds, &paces));
}

fn rounds_table(rounds: &[(usize, Round)]) -> String {
    use std::fmt::Write as _;
    let mut s = String::from(
        "| round | conns | offered msg/s | harvest | messages | msg/s | p50 ms | p99 ms | milter CPU µs/msg | drain ms | all sent | learned | known | queue_full | other results | examined | other CPU | steal |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for (round, r) in rounds {
        writeln!(
            s,
            "| {round} | {} | {} | {} | {} | {:.0} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {:.0} % | {:.0} % | {:.0} % |",
            r.run.conns,
            offered(&r.run),
            on_off(r.harvest),
            r.run.messages,
            r.run.rate(),
            ms(r.run.pct(50.0)),
            ms(r.run.pct(99.0)),
            r.cpu_us(),
            ms(r.drain),
            r.run.sent,
            r.counts.get("learned"),
            r.counts.get("known"),
            r.counts.get("queue_full"),
            r.counts.others(),
            r.examined_share() * 100.0,
            r.run.other_share * 100.0,
            r.run.steal_share * 100.0,
        )
        .unwrap();
    }
    s
}

/// Medians per configuration and the on / off ratios.
fn summary(rounds: &[(usize, Round)], paces: &[(usize, Pace)]) -> String {
    use std::fmt::Write as _;
    let mut s = String::from(
        "| conns | offered msg/s | msg/s harvest off | msg/s harvest on | on ÷ off | CPU µs/msg off → on | CPU on ÷ off | examined (on) | p99 ms off → on | CPU µs per examined message |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for &(n, pace) in paces {
        let paced = matches!(pace, Pace::Every { .. });
        let of = |h: bool| -> Vec<&Round> {
            rounds
                .iter()
                .map(|(_, r)| r)
                .filter(|r| r.harvest == h && r.run.conns == n && r.run.pace.is_some() == paced)
                .collect()
        };
        let (on, off) = (of(true), of(false));
        if on.is_empty() || off.is_empty() {
            continue;
        }
        let rate = |v: &[&Round]| v.iter().map(|r| r.run.rate()).collect::<Vec<_>>();
        let cpu = |v: &[&Round]| median(v.iter().map(|r| r.cpu_us()).collect());
        let p99 = |v: &[&Round]| {
            median(
                v.iter()
                    .map(|r| r.run.pct(99.0).as_secs_f64() * 1e3)
                    .collect(),
            )
        };
        let examined = median(on.iter().map(|r| r.examined_share()).collect());
        let (r_on, r_off) = (rate(&on), rate(&off));
        let (c_on, c_off) = (cpu(&on), cpu(&off));
        writeln!(
            s,
            "| {n} | {} | {} | {} | {:.2} | {c_off:.0} → {c_on:.0} | {:.2} | {:.0} % | {:.2} → {:.2} | {:.0} |",
            offered(&on[0].run),
            spread(&r_off),
            spread(&r_on),
            median(r_on.clone()) / median(r_off.clone()),
            c_on / c_off,
            examined * 100.0,
            p99(&off),
            p99(&on),
            (c_on - c_off) / examined.max(1e-9),
        )
        .unwrap();
    }
    s
}

// ---------------------------------------------------------------- smoke

/// `keys list` of the milter's store: (address, method, fingerprint) per
/// learned key, and the exit code.
fn keys_list(milter: &Milter) -> (Vec<(String, String, String)>, i32) {
    let out = Command::new(env!("CARGO_BIN_EXE_autoencrypt-milter"))
        .arg("--config")
        .arg(&milter.config)
        .args(["keys", "list"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let keys = text
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f[0].to_owned(), f[1].to_owned(), f[2].to_owned())
        })
        .collect();
    (keys, out.status.code().unwrap_or(-1))
}

/// Under `cargo test`: signed mail from 50 signers, 60 messages, teaches
/// exactly the 50 signers' certificates (store and metrics agree); with
/// harvesting off it teaches nothing.
pub async fn smoke(setup: &Setup) {
    use autoencrypt_milter::backend::{Method, identify};
    let s = signed_stream(50);
    // Every message examined but repeats of a sender just confirmed.
    let m = start(setup, "smoke-harvest-on", true, 0, 64 * 1024, Some(100_000));
    let closed = Pace::Closed;
    let r = run(
        &m.milter,
        Kind::Signed,
        &s.stream,
        2,
        closed,
        Duration::ZERO,
        Duration::ZERO,
        Some(30),
    )
    .await;
    assert_eq!(r.sent, 60);
    let (c, _) = drain(m.metrics, 60).await;
    // The ten repeats are `recent` when their sender was confirmed before
    // they were offered, else examined again and `known`.
    assert_eq!(
        (
            c.get("learned"),
            c.get("known") + c.get("recent"),
            c.total(),
            c.learned_smime
        ),
        (50, 10, 60, 50),
        "harvest counts: {c:?}"
    );
    let (mut listed, code) = keys_list(&m.milter);
    assert_eq!(code, 0, "keys list failed");
    listed.sort();
    let mut expected: Vec<(String, String, String)> = s
        .signers
        .iter()
        .map(|sg| {
            let der = sg.cert.to_der().unwrap();
            let id = identify(Method::Smime, &der).unwrap();
            (sg.addr.clone(), "smime".to_owned(), id.fingerprint)
        })
        .collect();
    expected.sort();
    assert_eq!(listed, expected, "learned keys in the store");
    check_quiet(&m.milter);
    drop(m);

    let m = start(setup, "smoke-harvest-off", false, 0, 64 * 1024, None);
    let r = run(
        &m.milter,
        Kind::Signed,
        &s.stream,
        2,
        closed,
        Duration::ZERO,
        Duration::ZERO,
        Some(30),
    )
    .await;
    assert_eq!(r.sent, 60);
    let c = counts(&scrape(m.metrics));
    assert_eq!((c.total(), c.learned_smime), (0, 0), "harvest off: {c:?}");
    let (listed, code) = keys_list(&m.milter);
    assert_eq!(
        (listed.len(), code),
        (0, 1),
        "harvest off: keys list {listed:?}"
    );
    check_quiet(&m.milter);
    println!(
        "harvest smoke: 50 keys learned and listed from 60 signed messages; none with harvesting off"
    );
}
