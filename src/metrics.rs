//! Prometheus metrics and the HTTP endpoint that serves them.
//!
//! This module owns every metric the milter exposes (names, HELP text,
//! label sets, histogram buckets — the "metrics" contract of the design)
//! and the small HTTP server on `metrics_listen` that answers
//! `GET /metrics` and `GET /healthz`. The rest of the milter only calls the
//! methods of [`Metrics`]; it never touches `prometheus-client` directly.
//!
//! Labels are typed: every label value is an enum ([`Direction`],
//! [`Outcome`], [`Method`], [`Record`], [`LookupResult`]), so a misspelt
//! label value cannot compile and every label combination is created at
//! start-up (series exist at zero before the first event, which keeps
//! `rate()` and alerting on absent series honest).
//!
//! `/metrics` speaks OpenMetrics 1.0.0 to clients that ask for it in
//! `Accept` (Prometheus does) and the Prometheus text format 0.0.4 to
//! everyone else (curl, `promtool check metrics`), as the official client
//! libraries do.

use std::convert::Infallible;
use std::fmt::{self, Write as _};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ACCEPT, ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::{Method as HttpMethod, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use tokio::net::TcpListener;

use crate::keys::Lookup;
use crate::material::Method;
use crate::policy::Direction;

/// Messages handled, by direction and outcome (a counter).
pub const MESSAGES_TOTAL: &str = "autoencrypt_messages_total";
/// Messages encrypted, by method (a counter).
pub const ENCRYPTED_TOTAL: &str = "autoencrypt_encrypted_total";
/// Key lookups, by record type and result (a counter).
pub const KEY_LOOKUPS_TOTAL: &str = "autoencrypt_key_lookups_total";
/// Time a key lookup took, by record type (a histogram).
pub const KEY_LOOKUP_DURATION_SECONDS: &str = "autoencrypt_key_lookup_duration_seconds";
/// Time encrypting one message took, by method (a histogram).
pub const ENCRYPTION_DURATION_SECONDS: &str = "autoencrypt_encryption_duration_seconds";
/// Size of the message bodies seen (a histogram).
pub const MESSAGE_SIZE_BYTES: &str = "autoencrypt_message_size_bytes";
/// Milter connections currently open (a gauge).
pub const CONNECTIONS_ACTIVE: &str = "autoencrypt_connections_active";
/// Bytes of message bodies held in memory, all connections (a gauge).
pub const MEMORY_BODIES_BYTES: &str = "autoencrypt_memory_bodies_bytes";
/// Open milter connections that have not negotiated yet (a gauge).
pub const CONNECTIONS_UNNEGOTIATED: &str = "autoencrypt_connections_unnegotiated";
/// `limits.max_connections` (a gauge).
pub const CONNECTIONS_LIMIT: &str = "autoencrypt_connections_limit";
/// Milter connections closed by the milter before negotiating, by reason
/// (a counter).
pub const CONNECTIONS_DROPPED_TOTAL: &str = "autoencrypt_connections_dropped_total";

// Names as registered. prometheus-client appends `_total` to counter
// samples and the unit to names registered with one, so the exposed names
// are exactly the constants above (checked by a test).
const MESSAGES: &str = "autoencrypt_messages";
const ENCRYPTED: &str = "autoencrypt_encrypted";
const KEY_LOOKUPS: &str = "autoencrypt_key_lookups";
const KEY_LOOKUP_DURATION: &str = "autoencrypt_key_lookup_duration";
const ENCRYPTION_DURATION: &str = "autoencrypt_encryption_duration";
const MESSAGE_SIZE: &str = "autoencrypt_message_size";
const MEMORY_BODIES: &str = "autoencrypt_memory_bodies";
const CONNECTIONS_DROPPED: &str = "autoencrypt_connections_dropped";

/// Content type of the OpenMetrics text format.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of the Prometheus text format.
pub const PROMETHEUS_TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Key lookup buckets: 1 ms … 10 s.
const LOOKUP_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Encryption buckets: 100 µs … 30 s.
const ENCRYPTION_BUCKETS: [f64; 17] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// What became of a message (the `outcome` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Encrypted and accepted.
    Encrypted,
    /// Accepted unchanged (no key, opportunistic, dry run, nothing to do).
    Passed,
    /// Refused permanently (5xx).
    Rejected,
    /// Refused temporarily (4xx).
    Tempfailed,
    /// Accepted unchanged because it was already encrypted.
    AlreadyEncrypted,
}

impl Outcome {
    /// Every outcome.
    pub const ALL: [Outcome; 5] = [
        Outcome::Encrypted,
        Outcome::Passed,
        Outcome::Rejected,
        Outcome::Tempfailed,
        Outcome::AlreadyEncrypted,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Encrypted => "encrypted",
            Outcome::Passed => "passed",
            Outcome::Rejected => "rejected",
            Outcome::Tempfailed => "tempfailed",
            Outcome::AlreadyEncrypted => "already_encrypted",
        }
    }
}

/// Why the milter closed a connection: to make room, or for want of a
/// first command (the `reason` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConnectionDrop {
    /// Every slot was held by a negotiated connection: closed at once.
    Limit,
    /// Closed to make room for a newer connection at the limit.
    Evicted,
    /// Closed (negotiated or not) because its peer held the most slots
    /// and another peer's connection needed one (see `milter/slots.rs`).
    OverShare,
    /// No command within `limits.negotiation_timeout_ms`.
    NegotiationTimeout,
}

impl ConnectionDrop {
    /// Every reason.
    pub const ALL: [ConnectionDrop; 4] = [
        ConnectionDrop::Limit,
        ConnectionDrop::Evicted,
        ConnectionDrop::OverShare,
        ConnectionDrop::NegotiationTimeout,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionDrop::Limit => "limit",
            ConnectionDrop::Evicted => "evicted",
            ConnectionDrop::OverShare => "over_share",
            ConnectionDrop::NegotiationTimeout => "negotiation_timeout",
        }
    }
}

/// The kind of key asked for (the `record` label): the DNS record type
/// that carries it. A key found in the local key directory counts under
/// the record type of its method, since the milter asks "the S/MIME key"
/// or "the OpenPGP key", whichever source answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Record {
    /// SMIMEA (RFC 8162): S/MIME certificates.
    Smimea,
    /// OPENPGPKEY (RFC 7929): OpenPGP keys.
    Openpgpkey,
}

impl Record {
    /// Every record type.
    pub const ALL: [Record; 2] = [Record::Smimea, Record::Openpgpkey];

    /// The record type that carries `method`'s keys.
    pub fn for_method(method: Method) -> Record {
        match method {
            Method::Smime => Record::Smimea,
            Method::OpenPgp => Record::Openpgpkey,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Record::Smimea => "smimea",
            Record::Openpgpkey => "openpgpkey",
        }
    }
}

/// The result of a key lookup (the `result` label): [`Lookup::kind`], plus
/// `cache_hit` for answers served from the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LookupResult {
    /// Keys were found.
    Found,
    /// Proven absent.
    NotFound,
    /// Unsigned zone.
    Insecure,
    /// DNSSEC validation failed.
    Bogus,
    /// The lookup could not be completed.
    Failed,
    /// Answered from the cache.
    CacheHit,
}

impl LookupResult {
    /// Every result.
    pub const ALL: [LookupResult; 6] = [
        LookupResult::Found,
        LookupResult::NotFound,
        LookupResult::Insecure,
        LookupResult::Bogus,
        LookupResult::Failed,
        LookupResult::CacheHit,
    ];

    /// The label value (equal to [`Lookup::kind`] for lookup outcomes).
    pub fn as_str(self) -> &'static str {
        match self {
            LookupResult::Found => "found",
            LookupResult::NotFound => "not_found",
            LookupResult::Insecure => "insecure",
            LookupResult::Bogus => "bogus",
            LookupResult::Failed => "failed",
            LookupResult::CacheHit => "cache_hit",
        }
    }
}

impl From<&Lookup> for LookupResult {
    fn from(lookup: &Lookup) -> Self {
        match lookup {
            Lookup::Found { .. } => LookupResult::Found,
            Lookup::NotFound => LookupResult::NotFound,
            Lookup::Insecure => LookupResult::Insecure,
            Lookup::Bogus(_) => LookupResult::Bogus,
            Lookup::Failed(_) => LookupResult::Failed,
        }
    }
}

macro_rules! label_value {
    ($($ty:ty => $str:expr),* $(,)?) => {$(
        impl EncodeLabelValue for $ty {
            fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), fmt::Error> {
                encoder.write_str($str(*self))
            }
        }
    )*};
}

label_value! {
    Outcome => Outcome::as_str,
    Record => Record::as_str,
    LookupResult => LookupResult::as_str,
    Method => Method::as_str,
    Direction => direction_str,
    ConnectionDrop => ConnectionDrop::as_str,
}

fn direction_str(d: Direction) -> &'static str {
    match d {
        Direction::Inbound => "inbound",
        Direction::Outbound => "outbound",
    }
}

const DIRECTIONS: [Direction; 2] = [Direction::Inbound, Direction::Outbound];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MessageLabels {
    direction: Direction,
    outcome: Outcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: Method,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LookupLabels {
    record: Record,
    result: LookupResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    reason: ConnectionDrop,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RecordLabels {
    record: Record,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn lookup_histogram() -> Histogram {
    Histogram::new(LOOKUP_BUCKETS)
}

fn encryption_histogram() -> Histogram {
    Histogram::new(ENCRYPTION_BUCKETS)
}

struct Inner {
    registry: Registry,
    messages: Family<MessageLabels, Counter>,
    encrypted: Family<MethodLabels, Counter>,
    lookups: Family<LookupLabels, Counter>,
    lookup_duration: HistogramFamily<RecordLabels>,
    encryption_duration: HistogramFamily<MethodLabels>,
    message_size: Histogram,
    connections: Gauge,
    memory_bodies: Gauge,
    unnegotiated: Gauge,
    limit: Gauge,
    dropped: Family<DropLabels, Counter>,
}

/// The milter's metrics. Cheap to clone: clones share the same values.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh set of metrics, every label combination present at zero.
    pub fn new() -> Self {
        let messages = Family::<MessageLabels, Counter>::default();
        let encrypted = Family::<MethodLabels, Counter>::default();
        let lookups = Family::<LookupLabels, Counter>::default();
        let lookup_duration: HistogramFamily<RecordLabels> =
            Family::new_with_constructor(lookup_histogram);
        let encryption_duration: HistogramFamily<MethodLabels> =
            Family::new_with_constructor(encryption_histogram);
        // 1 KiB, 4 KiB, … 64 MiB.
        let message_size = Histogram::new(exponential_buckets(1024.0, 4.0, 9));
        let connections = Gauge::default();
        let memory_bodies = Gauge::default();
        let unnegotiated = Gauge::default();
        let limit = Gauge::default();
        let dropped = Family::<DropLabels, Counter>::default();
        for reason in ConnectionDrop::ALL {
            let _ = dropped.get_or_create(&DropLabels { reason });
        }

        for direction in DIRECTIONS {
            for outcome in Outcome::ALL {
                let _ = messages.get_or_create(&MessageLabels { direction, outcome });
            }
        }
        for method in Method::ALL {
            let _ = encrypted.get_or_create(&MethodLabels { method });
            let _ = encryption_duration.get_or_create(&MethodLabels { method });
        }
        for record in Record::ALL {
            let _ = lookup_duration.get_or_create(&RecordLabels { record });
            for result in LookupResult::ALL {
                let _ = lookups.get_or_create(&LookupLabels { record, result });
            }
        }

        let mut registry = Registry::default();
        registry.register(
            MESSAGES,
            "Messages handled, by recipient direction (inbound: local_domains, \
             outbound: elsewhere) and outcome",
            messages.clone(),
        );
        registry.register(
            ENCRYPTED,
            "Messages encrypted, by method (smime, openpgp)",
            encrypted.clone(),
        );
        registry.register(
            KEY_LOOKUPS,
            "Recipient key lookups, by record type (smimea, openpgpkey) and result \
             (found, not_found, insecure, bogus, failed, cache_hit)",
            lookups.clone(),
        );
        registry.register_with_unit(
            KEY_LOOKUP_DURATION,
            "Time a recipient key lookup took, by record type (cache hits excluded)",
            Unit::Seconds,
            lookup_duration.clone(),
        );
        registry.register_with_unit(
            ENCRYPTION_DURATION,
            "Time encrypting one message took, by method",
            Unit::Seconds,
            encryption_duration.clone(),
        );
        registry.register_with_unit(
            MESSAGE_SIZE,
            "Size of the message bodies received",
            Unit::Bytes,
            message_size.clone(),
        );
        registry.register(
            CONNECTIONS_ACTIVE,
            "Milter connections currently open",
            connections.clone(),
        );
        registry.register_with_unit(
            MEMORY_BODIES,
            "Message bodies (received and encrypted) held in memory by all connections; \
             bounded by limits.memory_budget_bytes, the rest is spooled to disk",
            Unit::Bytes,
            memory_bodies.clone(),
        );
        registry.register(
            CONNECTIONS_UNNEGOTIATED,
            "Open milter connections that have not sent their first command yet",
            unnegotiated.clone(),
        );
        registry.register(
            CONNECTIONS_LIMIT,
            "Milter connections allowed at once (limits.max_connections)",
            limit.clone(),
        );
        registry.register(
            CONNECTIONS_DROPPED,
            "Milter connections closed before negotiating, by reason (limit: every slot \
             held by a negotiated connection; evicted: to make room for a newer one; \
             negotiation_timeout: no command in time)",
            dropped.clone(),
        );

        Metrics {
            inner: Arc::new(Inner {
                registry,
                messages,
                encrypted,
                lookups,
                lookup_duration,
                encryption_duration,
                message_size,
                connections,
                memory_bodies,
                unnegotiated,
                limit,
                dropped,
            }),
        }
    }

    /// Counts one message with this outcome for recipients in `direction`.
    pub fn message(&self, direction: Direction, outcome: Outcome) {
        self.inner
            .messages
            .get_or_create(&MessageLabels { direction, outcome })
            .inc();
    }

    /// Counts one message encrypted with `method`.
    pub fn encrypted(&self, method: Method) {
        self.inner
            .encrypted
            .get_or_create(&MethodLabels { method })
            .inc();
    }

    /// Counts one completed lookup of `method`'s keys and records how long
    /// it took.
    pub fn lookup(&self, method: Method, lookup: &Lookup, duration: Duration) {
        self.lookup_result(method, LookupResult::from(lookup), Some(duration));
    }

    /// Counts one key source's answer: a cache hit, or a lookup with its
    /// result and duration.
    pub fn source_lookup(
        &self,
        source: crate::material::SourceKind,
        method: Method,
        lookup: &Lookup,
        cached: bool,
        duration: Duration,
    ) {
        let _ = source;
        if cached {
            self.cache_hit(method);
        } else {
            self.lookup(method, lookup, duration);
        }
    }

    /// Counts one lookup of `method`'s keys answered from the cache (its
    /// duration is not recorded: the histogram is about lookups that did
    /// work).
    pub fn cache_hit(&self, method: Method) {
        self.lookup_result(method, LookupResult::CacheHit, None);
    }

    /// Counts one lookup of `method`'s keys with `result`, and records
    /// `duration` when given.
    pub fn lookup_result(&self, method: Method, result: LookupResult, duration: Option<Duration>) {
        let record = Record::for_method(method);
        self.inner
            .lookups
            .get_or_create(&LookupLabels { record, result })
            .inc();
        if let Some(d) = duration {
            self.inner
                .lookup_duration
                .get_or_create(&RecordLabels { record })
                .observe(d.as_secs_f64());
        }
    }

    /// Records how long encrypting one message with `method` took.
    pub fn encryption(&self, method: Method, duration: Duration) {
        self.inner
            .encryption_duration
            .get_or_create(&MethodLabels { method })
            .observe(duration.as_secs_f64());
    }

    /// Records the size of one message body.
    pub fn message_size(&self, bytes: u64) {
        // f64 is exact up to 2^53 bytes, far beyond any message.
        #[allow(clippy::cast_precision_loss)]
        self.inner.message_size.observe(bytes as f64);
    }

    /// Counts a milter connection as open until the returned guard drops.
    #[must_use = "the connection counts as open only while the guard lives"]
    pub fn connection_opened(&self) -> ConnectionGuard {
        self.inner.connections.inc();
        ConnectionGuard {
            gauge: self.inner.connections.clone(),
        }
    }

    /// Milter connections currently open.
    pub fn connections_active(&self) -> i64 {
        self.inner.connections.get()
    }

    /// Adds `delta` (negative: releases) to the bytes of bodies held in
    /// memory (kept by [`crate::memory::MemoryBudget`]).
    pub fn memory_bodies_add(&self, delta: i64) {
        self.inner.memory_bodies.inc_by(delta);
    }

    /// Bytes of bodies held in memory, as exposed.
    pub fn memory_bodies_bytes(&self) -> i64 {
        self.inner.memory_bodies.get()
    }

    /// Sets the connection gauges from the listener's slot accounting:
    /// `open` connections, `unnegotiated` of them, `limit` allowed.
    pub fn connection_slots(&self, open: usize, unnegotiated: usize, limit: usize) {
        let g = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.inner.connections.set(g(open));
        self.inner.unnegotiated.set(g(unnegotiated));
        self.inner.limit.set(g(limit));
    }

    /// Counts a connection the slots closed (see [`ConnectionDrop`]).
    pub fn connection_dropped(&self, reason: ConnectionDrop) {
        self.inner
            .dropped
            .get_or_create(&DropLabels { reason })
            .inc();
    }

    /// The connection slots as `/healthz` reports them; `None` before a
    /// listener set a limit.
    pub fn saturation(&self) -> Option<Saturation> {
        let limit = self.inner.limit.get();
        (limit > 0).then(|| Saturation {
            open: self.inner.connections.get(),
            unnegotiated: self.inner.unnegotiated.get(),
            limit,
        })
    }

    /// Every metric in the OpenMetrics 1.0.0 text format (ends in `# EOF`).
    pub fn render(&self) -> String {
        self.render_as(Format::OpenMetrics)
    }

    /// Every metric in `format`.
    pub fn render_as(&self, format: Format) -> String {
        let mut out = String::new();
        if let Err(e) = self.encode(format, &mut out) {
            // Writing to a String cannot fail; an error here is a bug in
            // an encoder. Serve what there is rather than nothing.
            tracing::error!("encoding metrics: {e}");
        }
        out
    }

    /// Writes every metric in `format` to `out`.
    pub fn encode(&self, format: Format, out: &mut String) -> Result<(), MetricsError> {
        match format {
            Format::OpenMetrics => {
                prometheus_client::encoding::text::encode(out, &self.inner.registry)
                    .map_err(|_| MetricsError::Encode)
            }
            Format::PrometheusText => {
                let mut om = String::new();
                prometheus_client::encoding::text::encode(&mut om, &self.inner.registry)
                    .map_err(|_| MetricsError::Encode)?;
                openmetrics_to_prometheus_text(&om, out);
                Ok(())
            }
        }
    }
}

/// Rewrites prometheus-client's OpenMetrics output as Prometheus text
/// format 0.0.4: counter families are named with their `_total` suffix in
/// HELP and TYPE (OpenMetrics names the family without it), and the
/// `# UNIT` and `# EOF` lines, which 0.0.4 does not know, are dropped.
/// Samples are identical in both formats.
fn openmetrics_to_prometheus_text(om: &str, out: &mut String) {
    let counters: Vec<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    for line in om.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?)));
        if let Some((prefix, rest)) = meta {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            if counters.contains(&name) {
                let _ = writeln!(out, "{prefix}{name}_total {tail}");
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
}

/// An exposition format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0.0 text ([`OPENMETRICS_CONTENT_TYPE`]).
    OpenMetrics,
    /// Prometheus text 0.0.4 ([`PROMETHEUS_TEXT_CONTENT_TYPE`]).
    PrometheusText,
}

impl Format {
    /// The `Content-Type` of a response in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
            Format::PrometheusText => PROMETHEUS_TEXT_CONTENT_TYPE,
        }
    }

    /// The format to answer a request with this `Accept` header in:
    /// OpenMetrics when it is named and preferred at least as much as
    /// plain text, else Prometheus text.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let (mut om, mut text) = (0.0_f64, 0.0_f64);
        for range in accept.unwrap_or("").split(',') {
            let mut params = range.split(';');
            let media = params.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = params
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f64>().ok())
                .unwrap_or(1.0);
            match media.as_str() {
                "application/openmetrics-text" => om = om.max(q),
                "text/plain" | "text/*" | "*/*" => text = text.max(q),
                _ => {}
            }
        }
        if om > 0.0 && om >= text {
            Format::OpenMetrics
        } else {
            Format::PrometheusText
        }
    }
}

/// The state of the connection slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Saturation {
    /// Connections open.
    pub open: i64,
    /// Of which not negotiated (their slots go to new connections).
    pub unnegotiated: i64,
    /// `limits.max_connections`.
    pub limit: i64,
}

impl Saturation {
    /// Whether a new MTA connection would be closed at once: every slot is
    /// held by a negotiated connection.
    pub fn is_saturated(&self) -> bool {
        self.open >= self.limit && self.unnegotiated == 0
    }
}

/// Keeps one milter connection counted in `autoencrypt_connections_active`;
/// dropping it uncounts the connection.
#[derive(Debug)]
pub struct ConnectionGuard {
    gauge: Gauge,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// Errors of the metrics endpoint.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// `metrics_listen` could not be bound.
    #[error("cannot listen for /metrics on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A metric could not be encoded (a bug).
    #[error("encoding the metrics failed")]
    Encode,
}

/// Binds the endpoint's listener on `addr` (the `metrics_listen` setting).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, MetricsError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })
}

/// How long a client may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Endpoint connections open at once; more are closed as soon as they are
/// accepted. Without a bound, idle connections (each held up to
/// the 10 s header timeout) used up the process's file descriptors, and the
/// milter socket could accept no MTA connection: mail before monitoring.
pub const MAX_HTTP_CONNECTIONS: usize = 64;

/// Serves `/metrics` and `/healthz` on `listener` until `shutdown`
/// completes; then stops accepting (requests in progress finish on their
/// own tasks). At most [`MAX_HTTP_CONNECTIONS`] are served at once.
///
/// `GET /metrics` answers the metrics (see [`Format::negotiate`]);
/// `GET /healthz` answers `200 ok` while `health()` is true and
/// `503 unhealthy` otherwise; once a listener set a connection limit the
/// body adds `open/limit` connections, and it answers `503 saturated` while
/// every slot is held by a negotiated connection (new MTA connections are
/// then closed at once and mail gets `milter_default_action`). `HEAD`
/// works on both; other methods get 405, other paths 404.
pub async fn serve<H, S>(listener: TcpListener, metrics: Metrics, health: H, shutdown: S)
where
    H: Fn() -> bool + Send + Sync + 'static,
    S: Future<Output = ()>,
{
    let health = Arc::new(health);
    let open = Arc::new(tokio::sync::Semaphore::new(MAX_HTTP_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait, retry.
                    tracing::warn!("/metrics endpoint: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let metrics = metrics.clone();
        let health = Arc::clone(&health);
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req| {
                let response = respond(&req, &metrics, &*health);
                async move { Ok::<_, Infallible>(response) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!("/metrics endpoint: connection: {e}");
            }
        });
    }
}

fn respond(
    req: &Request<Incoming>,
    metrics: &Metrics,
    health: &(dyn Fn() -> bool + Send + Sync),
) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if path != "/metrics" && path != "/healthz" {
        return plain(StatusCode::NOT_FOUND, "not found\n");
    }
    if req.method() != HttpMethod::GET && req.method() != HttpMethod::HEAD {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    if path == "/healthz" {
        if !health() {
            return plain(StatusCode::SERVICE_UNAVAILABLE, "unhealthy\n");
        }
        return match metrics.saturation() {
            None => plain(StatusCode::OK, "ok\n"),
            Some(s) => {
                let counts = format!(
                    "{}/{} milter connections, {} not negotiated\n",
                    s.open, s.limit, s.unnegotiated
                );
                if s.is_saturated() {
                    plain_owned(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("saturated: {counts}"),
                    )
                } else {
                    plain_owned(StatusCode::OK, format!("ok: {counts}"))
                }
            }
        };
    }
    let accept = req.headers().get(ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::negotiate(accept);
    let mut body = String::new();
    if let Err(e) = metrics.encode(format, &mut body) {
        tracing::error!("/metrics: {e}");
        return plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding the metrics failed\n",
        );
    }
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    r
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    plain_bytes(status, Bytes::from_static(body.as_bytes()))
}

fn plain_owned(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    plain_bytes(status, Bytes::from(body))
}

fn plain_bytes(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::FailReason;

    fn sample(text: &str, name_and_labels: &str) -> Option<String> {
        text.lines()
            .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
            .map(str::to_owned)
    }

    #[test]
    fn exposed_names_are_the_registered_names_plus_suffix() {
        assert_eq!(format!("{MESSAGES}_total"), MESSAGES_TOTAL);
        assert_eq!(format!("{ENCRYPTED}_total"), ENCRYPTED_TOTAL);
        assert_eq!(format!("{KEY_LOOKUPS}_total"), KEY_LOOKUPS_TOTAL);
        assert_eq!(
            format!("{KEY_LOOKUP_DURATION}_seconds"),
            KEY_LOOKUP_DURATION_SECONDS
        );
        assert_eq!(
            format!("{ENCRYPTION_DURATION}_seconds"),
            ENCRYPTION_DURATION_SECONDS
        );
        assert_eq!(format!("{MESSAGE_SIZE}_bytes"), MESSAGE_SIZE_BYTES);
        assert_eq!(format!("{MEMORY_BODIES}_bytes"), MEMORY_BODIES_BYTES);
        assert_eq!(
            format!("{CONNECTIONS_DROPPED}_total"),
            CONNECTIONS_DROPPED_TOTAL
        );
    }

    #[test]
    fn every_metric_has_help_and_type_in_openmetrics() {
        let text = Metrics::new().render();
        for (family, kind) in [
            (MESSAGES, "counter"),
            (ENCRYPTED, "counter"),
            (KEY_LOOKUPS, "counter"),
            (KEY_LOOKUP_DURATION_SECONDS, "histogram"),
            (ENCRYPTION_DURATION_SECONDS, "histogram"),
            (MESSAGE_SIZE_BYTES, "histogram"),
            (CONNECTIONS_ACTIVE, "gauge"),
            (MEMORY_BODIES_BYTES, "gauge"),
            (CONNECTIONS_UNNEGOTIATED, "gauge"),
            (CONNECTIONS_LIMIT, "gauge"),
            (CONNECTIONS_DROPPED, "counter"),
        ] {
            assert!(
                text.lines()
                    .any(|l| l.starts_with(&format!("# HELP {family} ")) && l.len() > 30),
                "no HELP for {family}:\n{text}"
            );
            assert!(
                text.lines().any(|l| l == format!("# TYPE {family} {kind}")),
                "no TYPE for {family}:\n{text}"
            );
        }
        assert!(text.contains("# UNIT autoencrypt_key_lookup_duration_seconds seconds\n"));
        assert!(text.contains("# UNIT autoencrypt_message_size_bytes bytes\n"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn every_metric_has_help_and_type_in_prometheus_text() {
        let m = Metrics::new();
        let text = m.render_as(Format::PrometheusText);
        for (name, kind) in [
            (MESSAGES_TOTAL, "counter"),
            (ENCRYPTED_TOTAL, "counter"),
            (KEY_LOOKUPS_TOTAL, "counter"),
            (KEY_LOOKUP_DURATION_SECONDS, "histogram"),
            (ENCRYPTION_DURATION_SECONDS, "histogram"),
            (MESSAGE_SIZE_BYTES, "histogram"),
            (CONNECTIONS_ACTIVE, "gauge"),
            (MEMORY_BODIES_BYTES, "gauge"),
            (CONNECTIONS_UNNEGOTIATED, "gauge"),
            (CONNECTIONS_LIMIT, "gauge"),
            (CONNECTIONS_DROPPED_TOTAL, "counter"),
        ] {
            assert!(text.contains(&format!("# HELP {name} ")), "{name}:\n{text}");
            assert!(
                text.contains(&format!("# TYPE {name} {kind}\n")),
                "{name}:\n{text}"
            );
        }
        assert!(!text.contains("# EOF"));
        assert!(!text.contains("# UNIT"));
        // Samples are the same lines in both formats.
        let om = m.render();
        let samples = |t: &str| -> Vec<String> {
            let mut v: Vec<String> = t
                .lines()
                .filter(|l| !l.starts_with('#'))
                .map(str::to_owned)
                .collect();
            v.sort();
            v
        };
        assert_eq!(samples(&text), samples(&om));
    }

    #[test]
    fn all_label_combinations_exist_at_zero() {
        let text = Metrics::new().render();
        for d in ["inbound", "outbound"] {
            for o in [
                "encrypted",
                "passed",
                "rejected",
                "tempfailed",
                "already_encrypted",
            ] {
                let s = format!("{MESSAGES_TOTAL}{{direction=\"{d}\",outcome=\"{o}\"}}");
                assert_eq!(sample(&text, &s).as_deref(), Some("0"), "{s}:\n{text}");
            }
        }
        for m in ["smime", "openpgp"] {
            let s = format!("{ENCRYPTED_TOTAL}{{method=\"{m}\"}}");
            assert_eq!(sample(&text, &s).as_deref(), Some("0"), "{s}");
            let s = format!("{ENCRYPTION_DURATION_SECONDS}_count{{method=\"{m}\"}}");
            assert_eq!(sample(&text, &s).as_deref(), Some("0"), "{s}");
        }
        for r in ["smimea", "openpgpkey"] {
            for res in [
                "found",
                "not_found",
                "insecure",
                "bogus",
                "failed",
                "cache_hit",
            ] {
                let s = format!("{KEY_LOOKUPS_TOTAL}{{record=\"{r}\",result=\"{res}\"}}");
                assert_eq!(sample(&text, &s).as_deref(), Some("0"), "{s}");
            }
            let s = format!("{KEY_LOOKUP_DURATION_SECONDS}_count{{record=\"{r}\"}}");
            assert_eq!(sample(&text, &s).as_deref(), Some("0"), "{s}");
        }
        assert_eq!(sample(&text, CONNECTIONS_ACTIVE).as_deref(), Some("0"));
        assert_eq!(sample(&text, MEMORY_BODIES_BYTES).as_deref(), Some("0"));
        for r in ["limit", "evicted", "negotiation_timeout"] {
            let s = format!("{CONNECTIONS_DROPPED_TOTAL}{{reason=\"{r}\"}}");
            assert_eq!(sample(&text, &s).as_deref(), Some("0"), "{s}");
        }
        assert_eq!(
            sample(&text, &format!("{MESSAGE_SIZE_BYTES}_count")).as_deref(),
            Some("0")
        );
    }

    #[test]
    fn events_are_counted_under_their_labels() {
        let m = Metrics::new();
        m.message(Direction::Outbound, Outcome::AlreadyEncrypted);
        m.message(Direction::Inbound, Outcome::Tempfailed);
        m.message(Direction::Inbound, Outcome::Tempfailed);
        m.encrypted(Method::OpenPgp);
        m.lookup(Method::Smime, &Lookup::NotFound, Duration::from_millis(3));
        m.lookup(
            Method::OpenPgp,
            &Lookup::Failed(FailReason::Timeout),
            Duration::from_secs(3),
        );
        m.lookup(
            Method::OpenPgp,
            &Lookup::Bogus("x".into()),
            Duration::from_millis(20),
        );
        m.cache_hit(Method::OpenPgp);
        m.encryption(Method::Smime, Duration::from_micros(700));
        m.message_size(10_000);
        m.message_size(50 * 1024 * 1024);
        let t = m.clone().render();
        let get = |s: &str| sample(&t, s).unwrap_or_else(|| format!("missing {s}"));

        assert_eq!(
            get("autoencrypt_messages_total{direction=\"outbound\",outcome=\"already_encrypted\"}"),
            "1"
        );
        assert_eq!(
            get("autoencrypt_messages_total{direction=\"inbound\",outcome=\"tempfailed\"}"),
            "2"
        );
        assert_eq!(get("autoencrypt_encrypted_total{method=\"openpgp\"}"), "1");
        assert_eq!(get("autoencrypt_encrypted_total{method=\"smime\"}"), "0");
        assert_eq!(
            get("autoencrypt_key_lookups_total{record=\"smimea\",result=\"not_found\"}"),
            "1"
        );
        assert_eq!(
            get("autoencrypt_key_lookups_total{record=\"openpgpkey\",result=\"failed\"}"),
            "1"
        );
        assert_eq!(
            get("autoencrypt_key_lookups_total{record=\"openpgpkey\",result=\"bogus\"}"),
            "1"
        );
        assert_eq!(
            get("autoencrypt_key_lookups_total{record=\"openpgpkey\",result=\"cache_hit\"}"),
            "1"
        );
        // The cache hit is counted but not timed.
        assert_eq!(
            get("autoencrypt_key_lookup_duration_seconds_count{record=\"openpgpkey\"}"),
            "2"
        );
        assert_eq!(
            get("autoencrypt_key_lookup_duration_seconds_bucket{le=\"0.005\",record=\"smimea\"}"),
            "1"
        );
        assert_eq!(
            get("autoencrypt_key_lookup_duration_seconds_bucket{le=\"0.0025\",record=\"smimea\"}"),
            "0"
        );
        assert_eq!(
            get("autoencrypt_encryption_duration_seconds_bucket{le=\"0.001\",method=\"smime\"}"),
            "1"
        );
        assert_eq!(get("autoencrypt_message_size_bytes_count"), "2");
        assert_eq!(
            get("autoencrypt_message_size_bytes_bucket{le=\"16384.0\"}"),
            "1"
        );
        assert_eq!(
            get("autoencrypt_message_size_bytes_bucket{le=\"67108864.0\"}"),
            "2"
        );
    }

    #[test]
    fn lookup_results_match_lookup_kind() {
        for l in [
            Lookup::Found {
                keys: Vec::new(),
                unusable: Vec::new(),
                security: crate::keys::Security::Secure,
            },
            Lookup::NotFound,
            Lookup::Insecure,
            Lookup::Bogus(String::new()),
            Lookup::Failed(FailReason::ServFail),
        ] {
            assert_eq!(LookupResult::from(&l).as_str(), l.kind());
        }
    }

    #[test]
    fn label_values_match_the_project_names() {
        let text = Metrics::new().render();
        for m in Method::ALL {
            assert!(text.contains(&format!("{{method=\"{m}\"}}")), "{m}");
        }
        for d in DIRECTIONS {
            assert_eq!(direction_str(d), d.to_string());
        }
    }

    #[test]
    fn connection_guard_counts_while_alive() {
        let m = Metrics::new();
        let a = m.connection_opened();
        let b = m.clone().connection_opened();
        assert_eq!(m.connections_active(), 2);
        assert_eq!(
            sample(&m.render(), CONNECTIONS_ACTIVE).as_deref(),
            Some("2")
        );
        drop(a);
        assert_eq!(m.connections_active(), 1);
        drop(b);
        assert_eq!(m.connections_active(), 0);
        assert_eq!(
            sample(&m.render(), CONNECTIONS_ACTIVE).as_deref(),
            Some("0")
        );
    }

    #[test]
    fn negotiation_prefers_openmetrics_only_when_asked() {
        // Prometheus 2.42's scrape Accept header.
        let prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                    version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prom)), Format::OpenMetrics);
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text; version=1.0.0")),
            Format::OpenMetrics
        );
        assert_eq!(Format::negotiate(None), Format::PrometheusText);
        assert_eq!(Format::negotiate(Some("*/*")), Format::PrometheusText);
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;q=0.2, text/plain")),
            Format::PrometheusText
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;q=0")),
            Format::PrometheusText
        );
    }
}
