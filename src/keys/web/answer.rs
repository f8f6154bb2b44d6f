//! A web answer read as a [`Lookup`]: the OpenPGP certificates of a body
//! kept only when they carry a user ID for the address asked about, each
//! with its provenance (the source, the web PKI, when it arrived).

use std::time::SystemTime;

use super::Fetched;
use crate::address::Address;
use crate::backend::openpgp::certs_for_address;
use crate::keys::{FailReason, Lookup, Provenance, Security, SourceKind};
use crate::material::{KeyMaterial, Method, RejectReason};

/// `fetched` (which arrived at `at`) as `source`'s lookup of `addr`'s
/// OpenPGP keys, with one line saying what the body held. Keys for other
/// addresses are refused by name (a WKD file may carry several); a body
/// that holds no OpenPGP key at all is a failure, never "no key".
pub(crate) fn to_lookup(
    fetched: &Fetched,
    addr: &Address,
    source: SourceKind,
    at: SystemTime,
) -> (Lookup, Option<String>) {
    let (bytes, url) = match fetched {
        Fetched::Body { bytes, url } => (bytes, url),
        Fetched::NotFound(_) | Fetched::NoSuchHost(_) => return (Lookup::NotFound, None),
        Fetched::Bogus(why) => return (Lookup::Bogus(why.clone()), None),
        Fetched::Failed(why) => return (Lookup::Failed(why.clone()), None),
    };
    let (matching, others) = match certs_for_address(bytes, addr) {
        Ok(split) => split,
        Err(why) => {
            return (
                Lookup::Failed(FailReason::BadAnswer(format!("{url}: {why}"))),
                None,
            );
        }
    };
    let provenance = Provenance {
        source,
        security: Security::WebPki,
        fetched: at,
    };
    let note = format!(
        "{} key(s) for {addr}, {} for other addresses",
        matching.len(),
        others.len()
    );
    let keys = matching
        .into_iter()
        .map(|(data, fpr)| KeyMaterial {
            method: Method::OpenPgp,
            data,
            origin: format!("{source} {url} (key {fpr})"),
            provenance,
        })
        .collect();
    let unusable = others
        .into_iter()
        .map(|fpr| {
            KeyMaterial {
                method: Method::OpenPgp,
                data: Vec::new(),
                origin: format!("{source} {url} (key {fpr})"),
                provenance,
            }
            .reject(RejectReason::AddressMismatch(addr.to_string()))
        })
        .collect();
    (
        Lookup::Found {
            keys,
            unusable,
            security: Security::WebPki,
        },
        Some(note),
    )
}
