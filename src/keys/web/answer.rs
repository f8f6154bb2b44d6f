//! A web answer read for one address: the OpenPGP certificates of a body
//! split into those with a user ID for the address and those without
//! ([`read_body`], once, when the body arrives — the cache then holds
//! only what the address needs), and that split as a [`Lookup`] with
//! each key's provenance ([`to_lookup`], at every lookup).

use std::time::SystemTime;

use bytes::Bytes;

use super::Fetched;
use crate::address::Address;
use crate::backend::openpgp::certs_for_address;
use crate::keys::{FailReason, Lookup, Provenance, Security, SourceKind};
use crate::material::{KeyMaterial, Method, RejectReason};

/// `bytes`, which `url` answered, read for `addr`: [`Fetched::Keys`], or a
/// failure when the body is not OpenPGP certificates (an HTML page, more
/// than `MAX_CERTS_PER_ANSWER`) — never "no key".
pub(crate) fn read_body(bytes: &[u8], url: String, addr: &Address) -> Fetched {
    match certs_for_address(bytes, addr) {
        Ok((matching, others)) => Fetched::Keys {
            matching: matching
                .into_iter()
                .map(|(data, fpr)| (Bytes::from(data), fpr))
                .collect(),
            others,
            url,
        },
        Err(why) => Fetched::Failed(FailReason::BadAnswer(format!("{url}: {why}"))),
    }
}

/// One line for `policy explain` and `lookup`: what was fetched, what
/// came back and, for keys, how many were for the address.
pub(crate) fn trace_line(
    url: &super::url::HttpsUrl,
    fetched: &Fetched,
    note: Option<String>,
) -> String {
    match note {
        Some(n) => format!("GET {}  {}: {n}", url.text, fetched.describe()),
        None => format!("GET {}  {}", url.text, fetched.describe()),
    }
}

/// `fetched` (which arrived at `at`) as `source`'s lookup of `addr`'s
/// OpenPGP keys, with one line saying what the answer held. Keys for
/// other addresses are refused by name (a WKD file may carry several).
pub(crate) fn to_lookup(
    fetched: &Fetched,
    addr: &Address,
    source: SourceKind,
    at: SystemTime,
) -> (Lookup, Option<String>) {
    let (matching, others, url) = match fetched {
        Fetched::Keys {
            matching,
            others,
            url,
        } => (matching, others, url),
        Fetched::Body { bytes, url } => {
            return to_lookup(&read_body(bytes, url.clone(), addr), addr, source, at);
        }
        Fetched::NotFound(_) | Fetched::NoSuchHost(_) => return (Lookup::NotFound, None),
        Fetched::Bogus(why) => return (Lookup::Bogus(why.clone()), None),
        Fetched::Failed(why) => return (Lookup::Failed(why.clone()), None),
    };
    let provenance = Provenance {
        source,
        security: Security::WebPki,
        trust: source.trust(),
        fetched: at,
    };
    let note = format!(
        "{} key(s) for {addr}, {} for other addresses",
        matching.len(),
        others.len()
    );
    let keys = matching
        .iter()
        .map(|(data, fpr)| KeyMaterial {
            bound_addresses: Vec::new(),
            method: Method::OpenPgp,
            data: data.to_vec(),
            origin: format!("{source} {url} (key {fpr})"),
            provenance,
        })
        .collect();
    let unusable = others
        .iter()
        .map(|fpr| {
            KeyMaterial {
                bound_addresses: Vec::new(),
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
