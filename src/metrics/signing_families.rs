//! The metric families of signing and verifying: messages signed, messages
//! a rule asked to sign that were not (and why), inbound signatures
//! verified (and the result written), and forged results removed.
//! Registered with the others by [`super::families::Families::register`].

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::material::Method;

use super::families::MethodLabels;

/// Messages signed, by method (a counter).
pub const SIGNED_TOTAL: &str = "autoencrypt_signed_total";
/// Messages a rule asked to sign that were not signed, by reason (a
/// counter).
pub const UNSIGNED_TOTAL: &str = "autoencrypt_unsigned_total";
/// Signed inbound messages verified, by method and result (a counter).
pub const VERIFIED_TOTAL: &str = "autoencrypt_verified_total";
/// `Authentication-Results` fields under our authserv-id with a result
/// of ours, removed from inbound mail (a counter).
pub const FORGED_RESULTS_REMOVED_TOTAL: &str = "autoencrypt_forged_results_removed_total";

pub(super) const SIGNED: &str = "autoencrypt_signed";
pub(super) const UNSIGNED: &str = "autoencrypt_unsigned";
pub(super) const VERIFIED: &str = "autoencrypt_verified";
pub(super) const FORGED_RESULTS_REMOVED: &str = "autoencrypt_forged_results_removed";

/// The `result` label of [`VERIFIED_TOTAL`]: the RFC 7281 results the
/// milter writes, and `too_large` (not verified: beyond
/// `verify.max_message_bytes`, no field written).
pub const VERIFY_RESULTS: &[&str] = &[
    "pass",
    "fail",
    "policy",
    "permerror",
    "temperror",
    "too_large",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ReasonLabels {
    pub(super) reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct VerifyLabels {
    pub(super) method: Method,
    pub(super) result: &'static str,
}

/// Signing's and verifying's families.
pub(super) struct SigningFamilies {
    pub(super) signed: Family<MethodLabels, Counter>,
    pub(super) unsigned: Family<ReasonLabels, Counter>,
    pub(super) verified: Family<VerifyLabels, Counter>,
    pub(super) forged: Counter,
}

impl SigningFamilies {
    /// Creates them, every series at zero, and registers them.
    pub(super) fn register(registry: &mut Registry) -> SigningFamilies {
        let signed = Family::<MethodLabels, Counter>::default();
        let verified = Family::<VerifyLabels, Counter>::default();
        for method in Method::ALL {
            let _ = signed.get_or_create(&MethodLabels { method });
            for &result in VERIFY_RESULTS {
                let _ = verified.get_or_create(&VerifyLabels { method, result });
            }
        }
        let unsigned = Family::<ReasonLabels, Counter>::default();
        for reason in crate::policy::Unsigned::ALL {
            let _ = unsigned.get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            });
        }
        let forged = Counter::default();
        registry.register(
            SIGNED,
            "Messages signed for an authenticated sender, by method (smime, openpgp)",
            signed.clone(),
        );
        registry.register(
            UNSIGNED,
            "Messages a rule asked to sign that were not signed, by reason (not_authenticated, \
             no_author, login_not_allowed, no_key, key_expired, too_large, already_protected, \
             unsafe_content, not_configured)",
            unsigned.clone(),
        );
        registry.register(
            VERIFIED,
            "Signed inbound messages verified against the key found for the From: address, by \
             method and the result written into Authentication-Results (pass, fail, policy, \
             permerror, temperror; too_large: not verified)",
            verified.clone(),
        );
        registry.register(
            FORGED_RESULTS_REMOVED,
            "Authentication-Results fields under our authserv-id reporting a signature result \
             (smime, or the OpenPGP method) removed from inbound mail before ours was added",
            forged.clone(),
        );
        SigningFamilies {
            signed,
            unsigned,
            verified,
            forged,
        }
    }
}
