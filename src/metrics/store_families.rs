//! The metric families of the key store and of learning keys from mail:
//! key changes (and those awaiting review), keys learned, what harvesting
//! made of each message it looked at, and whether it is paused. Registered
//! with the others by [`super::families::Families::register`].

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::material::{Method, SourceKind};

use super::families::MethodLabels;

/// Keys a source returned that it had not returned before for the same
/// address and method, by source (a counter).
pub const KEY_CHANGES_TOTAL: &str = "autoencrypt_key_changes_total";
/// Key changes awaiting review (`keys changes`; a gauge).
pub const KEY_CHANGES_PENDING: &str = "autoencrypt_key_changes_pending";
/// Keys learned from mail, new or replacing an older one, by method (a
/// counter).
pub const KEYS_LEARNED_TOTAL: &str = "autoencrypt_keys_learned_total";
/// Inbound messages harvesting looked at, by result (a counter).
pub const HARVEST_MESSAGES_TOTAL: &str = "autoencrypt_harvest_messages_total";
/// 1 while harvesting is paused because the key store fails (a gauge).
pub const HARVEST_PAUSED: &str = "autoencrypt_harvest_paused";

pub(super) const KEY_CHANGES: &str = "autoencrypt_key_changes";
pub(super) const KEYS_LEARNED: &str = "autoencrypt_keys_learned";
pub(super) const HARVEST_MESSAGES: &str = "autoencrypt_harvest_messages";

/// What harvesting made of a message (the `result` label), each value as
/// exposed, besides the examiner's reasons for refusing key material
/// ([`crate::harvest::Refusal::LABELS`]).
pub const HARVEST_RESULTS: &[&str] = &[
    "learned",
    "known",
    "older",
    "not_authenticated",
    "recent",
    "rate_limited",
    "too_large",
    "queue_full",
    "store_failed",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct SourceLabels {
    pub(super) source: SourceKind,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ResultLabels {
    pub(super) result: &'static str,
}

/// The store's and harvesting's families.
pub(super) struct StoreFamilies {
    pub(super) key_changes: Family<SourceLabels, Counter>,
    pub(super) pending: Gauge,
    pub(super) learned: Family<MethodLabels, Counter>,
    pub(super) harvest: Family<ResultLabels, Counter>,
    pub(super) paused: Gauge,
}

impl StoreFamilies {
    /// Creates them, every series at zero, and registers them.
    pub(super) fn register(registry: &mut Registry, sources: &[SourceKind]) -> StoreFamilies {
        let key_changes = Family::<SourceLabels, Counter>::default();
        for &source in sources {
            let _ = key_changes.get_or_create(&SourceLabels { source });
        }
        let learned = Family::<MethodLabels, Counter>::default();
        for method in Method::ALL {
            let _ = learned.get_or_create(&MethodLabels { method });
        }
        let harvest = Family::<ResultLabels, Counter>::default();
        for &result in HARVEST_RESULTS
            .iter()
            .chain(crate::harvest::Refusal::LABELS.iter())
        {
            let _ = harvest.get_or_create(&ResultLabels { result });
        }
        let pending = Gauge::default();
        let paused = Gauge::default();
        registry.register(
            KEY_CHANGES,
            "Keys a source returned that it had not returned before for the same address and \
             method, by source (counted once per fleet sharing a key store)",
            key_changes.clone(),
        );
        registry.register(
            KEY_CHANGES_PENDING,
            "Key changes awaiting an operator's review (autoencrypt-milter keys changes; \
             on_key_change = \"review\")",
            pending.clone(),
        );
        registry.register(
            KEYS_LEARNED,
            "Keys learned from authenticated inbound mail, new or replacing an older one, by \
             method",
            learned.clone(),
        );
        registry.register(
            HARVEST_MESSAGES,
            "Inbound messages with key material that harvesting looked at, by result (learned, \
             known, older, not_authenticated, recent (the sender's key confirmed within \
             harvest.recheck_secs), rate_limited, too_large, queue_full, store_failed, or why the \
             key material was refused)",
            harvest.clone(),
        );
        registry.register(
            HARVEST_PAUSED,
            "1 while harvesting is paused because the key store fails",
            paused.clone(),
        );
        StoreFamilies {
            key_changes,
            pending,
            learned,
            harvest,
            paused,
        }
    }
}
