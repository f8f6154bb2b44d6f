//! Prometheus metrics and the HTTP endpoint that serves them.
//!
//! This module owns every metric the milter exposes and the small HTTP
//! server on `metrics_listen` that answers `GET /metrics` and
//! `GET /healthz`. The rest of the milter only calls the methods of
//! [`Metrics`]; it never touches `prometheus-client` directly.
//!
//! * `families.rs`: names, HELP text, label values, histogram buckets and
//!   registration (the "metrics" contract of the design);
//! * `format.rs`: OpenMetrics 1.0.0 and Prometheus text 0.0.4, and which
//!   one a client gets;
//! * `http.rs`: the `/metrics` + `/healthz` endpoint ([`bind`], [`serve`]);
//! * here: the [`Metrics`] handle and its recording methods.
//!
//! Labels are typed: every label value is an enum ([`Direction`],
//! [`Outcome`], [`Method`], [`Record`], [`LookupResult`]), so a misspelt
//! label value cannot compile and every label combination is created at
//! start-up (series exist at zero before the first event, which keeps
//! `rate()` and alerting on absent series honest).

mod families;
mod format;
mod http;
mod signing_families;
mod store_families;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::keys::Lookup;
use crate::material::{Method, SourceKind};
use crate::policy::Direction;

pub use families::{
    BLIND_RECIPIENTS_TOTAL, Blindness, CONNECTIONS_ACTIVE, CONNECTIONS_DROPPED_TOTAL,
    CONNECTIONS_LIMIT, CONNECTIONS_UNNEGOTIATED, ConnectionDrop, ENCRYPTED_TOTAL,
    ENCRYPTION_DURATION_SECONDS, ENCRYPTION_ERRORS_TOTAL, KEY_LOOKUP_DURATION_SECONDS,
    KEY_LOOKUPS_TOTAL, LookupResult, MEMORY_BODIES_BYTES, MESSAGE_SIZE_BYTES, MESSAGES_TOTAL,
    Outcome, Record,
};
pub use format::{Format, OPENMETRICS_CONTENT_TYPE, PROMETHEUS_TEXT_CONTENT_TYPE};
pub use http::{MAX_HTTP_CONNECTIONS, bind, serve};
pub use signing_families::{
    FORGED_RESULTS_REMOVED_TOTAL, SIGNED_TOTAL, UNSIGNED_TOTAL, VERIFIED_TOTAL, VERIFY_RESULTS,
};
pub use store_families::{
    HARVEST_MESSAGES_TOTAL, HARVEST_PAUSED, HARVEST_RESULTS, KEY_CHANGES_PENDING,
    KEY_CHANGES_TOTAL, KEYS_LEARNED_TOTAL,
};

use families::{
    BlindLabels, DropLabels, Families, LookupLabels, MessageLabels, MethodLabels,
    SourceRecordLabels,
};
use format::openmetrics_to_prometheus_text;

struct Inner {
    registry: Registry,
    families: Families,
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
        let mut registry = Registry::default();
        let families = Families::register(&mut registry);
        Metrics {
            inner: Arc::new(Inner { registry, families }),
        }
    }

    /// Counts one message with this outcome for recipients in `direction`.
    pub fn message(&self, direction: Direction, outcome: Outcome) {
        self.inner
            .families
            .messages
            .get_or_create(&MessageLabels { direction, outcome })
            .inc();
    }

    /// Counts one message encrypted with `method`.
    pub fn encrypted(&self, method: Method) {
        self.inner
            .families
            .encrypted
            .get_or_create(&MethodLabels { method })
            .inc();
    }

    /// Counts one key source's answer: a lookup with its result and
    /// duration, or, when the source's cache answered, a cache hit (not
    /// timed). A cached failure or bogus answer is still counted as what
    /// it is: every RCPT it defers is a failed lookup to whoever alerts on
    /// them.
    pub fn source_lookup(
        &self,
        source: SourceKind,
        method: Method,
        lookup: &Lookup,
        cached: bool,
        duration: Duration,
    ) {
        let result = LookupResult::from(lookup);
        match (cached, result) {
            (false, _) => self.lookup_result(source, method, result, Some(duration)),
            (true, LookupResult::Failed | LookupResult::Bogus) => {
                self.lookup_result(source, method, result, None);
            }
            (true, _) => self.cache_hit(source, method),
        }
    }

    /// Counts one completed lookup of `method`'s keys by `source` and
    /// records how long it took.
    pub fn lookup(&self, source: SourceKind, method: Method, lookup: &Lookup, duration: Duration) {
        self.lookup_result(source, method, LookupResult::from(lookup), Some(duration));
    }

    /// Counts one lookup of `method`'s keys answered from `source`'s cache
    /// (its duration is not recorded: the histogram is about lookups that
    /// did work).
    pub fn cache_hit(&self, source: SourceKind, method: Method) {
        self.lookup_result(source, method, LookupResult::CacheHit, None);
    }

    /// Counts one lookup of `method`'s keys by `source` with `result`, and
    /// records `duration` when given.
    pub fn lookup_result(
        &self,
        source: SourceKind,
        method: Method,
        result: LookupResult,
        duration: Option<Duration>,
    ) {
        let record = Record::for_method(method);
        self.inner
            .families
            .lookups
            .get_or_create(&LookupLabels {
                source,
                record,
                result,
            })
            .inc();
        if let Some(d) = duration {
            self.inner
                .families
                .lookup_duration
                .get_or_create(&SourceRecordLabels { source, record })
                .observe(d.as_secs_f64());
        }
    }

    /// Records how long encrypting one message with `method` took.
    pub fn encryption(&self, method: Method, duration: Duration) {
        self.inner
            .families
            .encryption_duration
            .get_or_create(&MethodLabels { method })
            .observe(duration.as_secs_f64());
    }

    /// Counts a message whose encryption with `method` failed.
    pub fn encryption_error(&self, method: Method) {
        self.inner
            .families
            .encryption_errors
            .get_or_create(&MethodLabels { method })
            .inc();
    }

    /// Records the size of one message body.
    pub fn message_size(&self, bytes: u64) {
        // f64 is exact up to 2^53 bytes, far beyond any message.
        #[allow(clippy::cast_precision_loss)]
        self.inner.families.message_size.observe(bytes as f64);
    }

    /// Counts a milter connection as open until the returned guard drops.
    #[must_use = "the connection counts as open only while the guard lives"]
    pub fn connection_opened(&self) -> ConnectionGuard {
        self.inner.families.connections.inc();
        ConnectionGuard {
            gauge: self.inner.families.connections.clone(),
        }
    }

    /// Milter connections currently open.
    pub fn connections_active(&self) -> i64 {
        self.inner.families.connections.get()
    }

    /// Adds `delta` (negative: releases) to the bytes of bodies held in
    /// memory (kept by [`crate::memory::MemoryBudget`]).
    pub fn memory_bodies_add(&self, delta: i64) {
        self.inner.families.memory_bodies.inc_by(delta);
    }

    /// Bytes of bodies held in memory, as exposed.
    pub fn memory_bodies_bytes(&self) -> i64 {
        self.inner.families.memory_bodies.get()
    }

    /// Sets the connection gauges from the listener's slot accounting:
    /// `open` connections, `unnegotiated` of them, `limit` allowed.
    pub fn connection_slots(&self, open: usize, unnegotiated: usize, limit: usize) {
        let g = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.inner.families.connections.set(g(open));
        self.inner.families.unnegotiated.set(g(unnegotiated));
        self.inner.families.limit.set(g(limit));
    }

    /// Counts `n` blind recipients of a message encrypted with `method`.
    pub fn blind_recipients(&self, method: Method, result: Blindness, n: usize) {
        self.inner
            .families
            .blind
            .get_or_create(&BlindLabels { method, result })
            .inc_by(u64::try_from(n).unwrap_or(u64::MAX));
    }

    /// Counts a message signed with `method`.
    pub fn signed(&self, method: Method) {
        self.inner
            .families
            .signing
            .signed
            .get_or_create(&MethodLabels { method })
            .inc();
    }

    /// Counts a message a rule asked to sign that was not signed.
    pub fn unsigned(&self, reason: crate::policy::Unsigned) {
        self.inner
            .families
            .signing
            .unsigned
            .get_or_create(&signing_families::ReasonLabels {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// Counts a verified inbound signature (`result`: one of
    /// [`VERIFY_RESULTS`]).
    pub fn verified(&self, method: Method, result: &'static str) {
        self.inner
            .families
            .signing
            .verified
            .get_or_create(&signing_families::VerifyLabels { method, result })
            .inc();
    }

    /// Counts `n` forged `Authentication-Results` fields removed.
    pub fn forged_results_removed(&self, n: usize) {
        self.inner
            .families
            .signing
            .forged
            .inc_by(u64::try_from(n).unwrap_or(u64::MAX));
    }

    /// Counts a key change `source` returned (once per fleet).
    pub fn key_change(&self, source: SourceKind) {
        self.inner
            .families
            .store
            .key_changes
            .get_or_create(&store_families::SourceLabels { source })
            .inc();
    }

    /// Sets the number of key changes awaiting review.
    pub fn key_changes_pending(&self, n: usize) {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        self.inner.families.store.pending.set(n);
    }

    /// Counts a key learned for `method`.
    pub fn key_learned(&self, method: Method) {
        self.inner
            .families
            .store
            .learned
            .get_or_create(&MethodLabels { method })
            .inc();
    }

    /// Counts a message harvesting looked at, with what it made of it
    /// (one of [`store_families::HARVEST_RESULTS`]).
    pub fn harvested(&self, result: &'static str) {
        self.inner
            .families
            .store
            .harvest
            .get_or_create(&store_families::ResultLabels { result })
            .inc();
    }

    /// Marks harvesting paused (the key store fails) or running.
    pub fn harvest_paused(&self, paused: bool) {
        self.inner.families.store.paused.set(i64::from(paused));
    }

    /// Counts a connection the slots closed (see [`ConnectionDrop`]).
    pub fn connection_dropped(&self, reason: ConnectionDrop) {
        self.inner
            .families
            .dropped
            .get_or_create(&DropLabels { reason })
            .inc();
    }

    /// The connection slots as `/healthz` reports them; `None` before a
    /// listener set a limit.
    pub fn saturation(&self) -> Option<Saturation> {
        let limit = self.inner.families.limit.get();
        (limit > 0).then(|| Saturation {
            open: self.inner.families.connections.get(),
            unnegotiated: self.inner.families.unnegotiated.get(),
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
