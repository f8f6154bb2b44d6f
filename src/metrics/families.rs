//! The metric families: every name the milter exposes (as constants, with
//! its HELP text), the typed label values, the histogram buckets, and their
//! registration — the "metrics" contract of the design, in one place.
//!
//! [`Families::register`] creates every label combination at zero before
//! registering, so series exist before the first event (which keeps
//! `rate()` and alerting on absent series honest). Recording goes through
//! [`super::Metrics`]; nothing outside this module names a family.

use std::fmt::{self, Write as _};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::keys::Lookup;
use crate::material::{Method, SourceKind};
use crate::policy::Direction;

/// Messages handled, by direction and outcome (a counter).
pub const MESSAGES_TOTAL: &str = "autoencrypt_messages_total";
/// Messages encrypted, by method (a counter).
pub const ENCRYPTED_TOTAL: &str = "autoencrypt_encrypted_total";
/// Blind (Bcc) recipients of encrypted messages, by method and what the
/// ciphertext shows of them (a counter).
pub const BLIND_RECIPIENTS_TOTAL: &str = "autoencrypt_blind_recipients_total";
/// Key lookups, by source, record type and result (a counter).
pub const KEY_LOOKUPS_TOTAL: &str = "autoencrypt_key_lookups_total";
/// Time a key lookup took, by record type (a histogram).
pub const KEY_LOOKUP_DURATION_SECONDS: &str = "autoencrypt_key_lookup_duration_seconds";
/// Time encrypting one message took, by method (a histogram).
pub const ENCRYPTION_DURATION_SECONDS: &str = "autoencrypt_encryption_duration_seconds";
/// Messages whose encryption failed after a rule chose it, by method (a
/// counter). Each was refused with `451 4.3.0`, never passed.
pub const ENCRYPTION_ERRORS_TOTAL: &str = "autoencrypt_encryption_errors_total";
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
pub(super) const MESSAGES: &str = "autoencrypt_messages";
pub(super) const ENCRYPTED: &str = "autoencrypt_encrypted";
pub(super) const BLIND_RECIPIENTS: &str = "autoencrypt_blind_recipients";

/// What the ciphertext shows of a blind recipient (the `result` label of
/// [`BLIND_RECIPIENTS_TOTAL`]).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Blindness {
    /// OpenPGP: its key IDs are written as the anonymous (all-zero) ID.
    Hidden,
    /// S/MIME with other recipients: its RecipientInfo names its
    /// certificate to every other recipient.
    Exposed,
    /// The message's only recipient: there is no one to hide it from.
    Alone,
}

impl Blindness {
    /// Every value, in exposition order.
    pub const ALL: [Blindness; 3] = [Blindness::Hidden, Blindness::Exposed, Blindness::Alone];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Blindness::Hidden => "hidden",
            Blindness::Exposed => "exposed",
            Blindness::Alone => "alone",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct BlindLabels {
    pub(super) method: Method,
    pub(super) result: Blindness,
}
pub(super) const KEY_LOOKUPS: &str = "autoencrypt_key_lookups";
pub(super) const KEY_LOOKUP_DURATION: &str = "autoencrypt_key_lookup_duration";
pub(super) const ENCRYPTION_DURATION: &str = "autoencrypt_encryption_duration";
pub(super) const ENCRYPTION_ERRORS: &str = "autoencrypt_encryption_errors";
pub(super) const MESSAGE_SIZE: &str = "autoencrypt_message_size";
pub(super) const MEMORY_BODIES: &str = "autoencrypt_memory_bodies";
pub(super) const CONNECTIONS_DROPPED: &str = "autoencrypt_connections_dropped";

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
    SourceKind => SourceKind::as_str,
    Blindness => Blindness::as_str,
}

pub(super) fn direction_str(d: Direction) -> &'static str {
    match d {
        Direction::Inbound => "inbound",
        Direction::Outbound => "outbound",
    }
}

pub(super) const DIRECTIONS: [Direction; 2] = [Direction::Inbound, Direction::Outbound];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct MessageLabels {
    pub(super) direction: Direction,
    pub(super) outcome: Outcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct MethodLabels {
    pub(super) method: Method,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct LookupLabels {
    pub(super) source: SourceKind,
    pub(super) record: Record,
    pub(super) result: LookupResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct DropLabels {
    pub(super) reason: ConnectionDrop,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct SourceRecordLabels {
    pub(super) source: SourceKind,
    pub(super) record: Record,
}

/// The sources a running milter has (their series exist from the start).
const SOURCES: [SourceKind; 6] = SourceKind::CHOOSABLE;

pub(super) type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn lookup_histogram() -> Histogram {
    Histogram::new(LOOKUP_BUCKETS)
}

fn encryption_histogram() -> Histogram {
    Histogram::new(ENCRYPTION_BUCKETS)
}

/// Every metric family, as registered. Clones of a family share its
/// values with the registry, so recording here is what `/metrics` shows.
pub(super) struct Families {
    pub(super) messages: Family<MessageLabels, Counter>,
    pub(super) encrypted: Family<MethodLabels, Counter>,
    pub(super) blind: Family<BlindLabels, Counter>,
    pub(super) lookups: Family<LookupLabels, Counter>,
    pub(super) lookup_duration: HistogramFamily<SourceRecordLabels>,
    pub(super) encryption_duration: HistogramFamily<MethodLabels>,
    pub(super) encryption_errors: Family<MethodLabels, Counter>,
    pub(super) message_size: Histogram,
    pub(super) connections: Gauge,
    pub(super) memory_bodies: Gauge,
    pub(super) unnegotiated: Gauge,
    pub(super) limit: Gauge,
    pub(super) dropped: Family<DropLabels, Counter>,
    pub(super) store: super::store_families::StoreFamilies,
    pub(super) signing: super::signing_families::SigningFamilies,
}

impl Families {
    /// Creates every family with every label combination at zero and
    /// registers it in `registry` with its HELP text (in exposition order).
    pub(super) fn register(registry: &mut Registry) -> Families {
        let messages = Family::<MessageLabels, Counter>::default();
        let encrypted = Family::<MethodLabels, Counter>::default();
        let encryption_errors = Family::<MethodLabels, Counter>::default();
        let lookups = Family::<LookupLabels, Counter>::default();
        let lookup_duration: HistogramFamily<SourceRecordLabels> =
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
            let _ = encryption_errors.get_or_create(&MethodLabels { method });
        }
        for record in Record::ALL {
            for source in SOURCES {
                let _ = lookup_duration.get_or_create(&SourceRecordLabels { source, record });
                for result in LookupResult::ALL {
                    let _ = lookups.get_or_create(&LookupLabels {
                        source,
                        record,
                        result,
                    });
                }
            }
        }

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
        let blind = Family::<BlindLabels, Counter>::default();
        for method in Method::ALL {
            for result in Blindness::ALL {
                let _ = blind.get_or_create(&BlindLabels { method, result });
            }
        }
        registry.register(
            BLIND_RECIPIENTS,
            "Blind (Bcc) recipients of encrypted messages: envelope recipients no To: or Cc: \
             names, by method and result (hidden: OpenPGP anonymous key IDs; exposed: S/MIME, \
             the other recipients can read its RecipientInfo; alone: the message's only \
             recipient)",
            blind.clone(),
        );
        registry.register(
            KEY_LOOKUPS,
            "Recipient key lookups, by key source (directory, dane, wkd, keyserver), record type \
             (smimea, openpgpkey) and result (found, not_found, insecure, bogus, failed; \
             cache_hit for a found, not_found or insecure answer from the source's cache, \
             while a cached failure counts as bogus or failed)",
            lookups.clone(),
        );
        registry.register_with_unit(
            KEY_LOOKUP_DURATION,
            "Time a recipient key lookup took, by key source and record type (answers \
             from a source's cache excluded)",
            Unit::Seconds,
            lookup_duration.clone(),
        );
        registry.register_with_unit(
            ENCRYPTION_DURATION,
            "Time encrypting one message took, by method",
            Unit::Seconds,
            encryption_duration.clone(),
        );
        registry.register(
            ENCRYPTION_ERRORS,
            "Messages a rule chose to encrypt whose encryption failed (an internal error: \
             refused with 451 4.3.0, never passed unencrypted), by method",
            encryption_errors.clone(),
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

        let store = super::store_families::StoreFamilies::register(registry, &SOURCES);
        let signing = super::signing_families::SigningFamilies::register(registry);
        Families {
            store,
            signing,
            messages,
            encrypted,
            blind,
            lookups,
            lookup_duration,
            encryption_duration,
            encryption_errors,
            message_size,
            connections,
            memory_bodies,
            unnegotiated,
            limit,
            dropped,
        }
    }
}
