//! Fuzz target bodies, shared by the `cargo fuzz` targets in `fuzz/` and
//! the stable replay test `tests/fuzz_regressions.rs`, so a crash input
//! found by the fuzzer is replayed through exactly the same code.
//!
//! Each function takes arbitrary bytes, drives one parser that sees
//! attacker-controlled input, and panics only when an invariant breaks.
//! Not part of the public API.

#![allow(
    clippy::panic,
    reason = "a fuzz target reports a broken invariant by panicking"
)]

mod harvest;
mod ldap;
mod protect;
mod rdata;
pub(crate) mod safe;
pub(crate) mod session;
mod signatures;
mod verify;
mod web;

pub use harvest::{harvest_auth_results, harvest_autocrypt, harvest_examine};
pub use ldap::ldap;
pub use protect::protect_header;
pub use rdata::rdata;
pub use safe::transport_safe;
pub use session::{session, session_outcomes};
pub use signatures::signature_verify;
pub use verify::verify;
pub use web::web;

use crate::address::Address;
use crate::backend::Method;
use crate::keys::owner::{lowercase_owner_name, owner_name, owner_name_for};
use crate::message::Message;
use crate::message::mime::ContentType;

/// A target body: arbitrary bytes in, a panic when an invariant breaks.
pub type Target = fn(&[u8]);

/// The targets by name, for the replay test (`fuzz/corpus/<name>/`,
/// `fuzz/regressions/<name>/`).
pub const TARGETS: &[(&str, Target)] = &[
    ("mime_params", mime_params),
    ("header", header),
    ("address", address),
    ("rdata", rdata),
    ("session", session),
    ("verify", verify),
    ("web", web),
    ("ldap", ldap),
    ("harvest_auth_results", harvest_auth_results),
    ("harvest_autocrypt", harvest_autocrypt),
    ("harvest_examine", harvest_examine),
    ("protect_header", protect_header),
    ("transport_safe", transport_safe),
    ("signature_verify", signature_verify),
];

/// `Content-Type` and `Content-Disposition` values (RFC 2045 tokens,
/// comments, quoted strings, RFC 2231 continuations and charsets).
pub fn mime_params(data: &[u8]) {
    let value = String::from_utf8_lossy(data);
    for ct in [
        ContentType::parse(&value),
        ContentType::parse_disposition(&value),
    ]
    .into_iter()
    .flatten()
    {
        // Names are lower-cased and unique; lookups find the first.
        for (i, (name, v)) in ct.params.iter().enumerate() {
            assert_eq!(*name, name.to_ascii_lowercase());
            assert!(ct.params[..i].iter().all(|(n, _)| n != name), "dup {name}");
            assert_eq!(ct.param(name), Some(v.as_str()));
        }
        assert_eq!(ct.kind, ct.kind.to_ascii_lowercase());
    }
}

/// A raw message: header section parsing, unfolding and the structured
/// fields read from it. The parse must account for every byte: the
/// fields re-serialised plus the body are the input again.
pub fn header(data: &[u8]) {
    let msg = Message::parse(data);
    assert!(msg.body_offset <= data.len());
    for h in &msg.headers {
        let unfolded = h.unfolded();
        assert!(!unfolded.contains(['\r', '\n']));
        let _ = h.is_content_field();
        if h.is("Content-Type") {
            let _ = ContentType::parse(&unfolded);
        }
        if h.is("Content-Disposition") {
            let _ = ContentType::parse_disposition(&unfolded);
        }
    }
    let _ = msg.header("Content-Type");
    let _ = crate::message::classify::classify(&msg.headers, &data[msg.body_offset..]);
    // A fold is kept exactly, and only a fold: every line break inside a
    // value is followed by white space, so re-emitting it cannot inject
    // a field.
    for h in &msg.headers {
        for (i, &b) in h.value.iter().enumerate() {
            if b == b'\n' {
                assert!(matches!(h.value.get(i + 1), Some(b' ' | b'\t')), "bare LF");
            }
        }
        assert!(!h.name.contains(['\r', '\n', ':']));
    }
}

/// An address as it comes from MAIL FROM / RCPT TO or a header field, and
/// the DNS owner names derived from it.
pub fn address(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    if let Ok(a) = Address::parse(&s) {
        // Parsing what we print gives the same address back.
        let again = Address::parse(&a.to_string());
        assert_eq!(again.as_ref(), Ok(&a), "{a} did not round-trip");
        assert_eq!(a.domain(), a.domain().to_lowercase());
        assert!(a.matches_loosely(&a.lowercased()));
        let _ = a.local_unquoted();
        for m in [Method::Smime, Method::OpenPgp] {
            if let Ok(n) = owner_name(&a, m) {
                assert!(n.is_fqdn());
            }
            let _ = lowercase_owner_name(&a, m);
        }
    }
    // Owner names straight from a local part and domain split anywhere.
    if let Some(split) = s.find('\u{0}') {
        let (local, domain) = (&s[..split], &s[split + 1..]);
        for m in [Method::Smime, Method::OpenPgp] {
            let _ = owner_name_for(local, domain, m);
        }
    }
}
