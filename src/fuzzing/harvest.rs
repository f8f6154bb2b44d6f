//! The harvest parsers (issue 12): `Authentication-Results` values,
//! `Autocrypt:` values, and a whole message through `screen` and
//! `examine` (From:, Date:, the S/MIME structure, PKCS #7, Sequoia).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::address::Address;
use crate::backend::{Method, Registry, identify};
use crate::harvest::auth_results::{self, AuthBy};
use crate::harvest::autocrypt::{self, MAX_HEADER_BYTES};
use crate::harvest::{LearnedFrom, Screen, examine, screen_at};
use crate::message::{HeaderField, Message};

/// The authserv-id the message target trusts (the fixtures' and seeds').
const AUTHSERV_ID: &str = "mx.example.org";

/// A fixed time of receipt, after the seeds' keys were made, so a run
/// replays the same way on any day.
fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

/// An `Authentication-Results` value.
pub fn harvest_auth_results(data: &[u8]) {
    let field = [HeaderField::new("Authentication-Results", data)];
    match auth_results::parse(data) {
        Err(_) => {
            // A field that does not parse authenticates nothing, under
            // any id it might seem to carry.
            let text = String::from_utf8_lossy(data);
            let id = text
                .trim_start()
                .split([';', ' ', '\t', '\r', '\n', '('])
                .next()
                .unwrap_or("");
            for domain in ["example.org", "fuzz.test"] {
                assert_eq!(auth_results::authenticated_by(&field, id, domain), None);
            }
        }
        Ok(ar) => {
            assert!(!ar.authserv_id.is_empty());
            assert_eq!(ar.none, ar.results.is_empty(), "none beside results");
            for r in &ar.results {
                for name in [&r.method, &r.result] {
                    assert!(!name.is_empty() && *name == name.to_ascii_lowercase());
                }
                for p in &r.props {
                    assert!(!p.ptype.is_empty() && !p.property.is_empty());
                }
            }
            // Trailing CFWS, however much it says, changes nothing.
            let mut more = data.to_vec();
            more.extend_from_slice(b" (; dkim=pass header.d=fuzz.test)\r\n ");
            assert_eq!(auth_results::parse(&more).as_ref(), Ok(&ar));
            // Each DKIM pass for a domain authenticates that domain under
            // the field's own id, and under no other.
            for r in &ar.results {
                let Some(d) = r.prop("header", "d") else {
                    continue;
                };
                let Ok(domain) = crate::address::domain::canonical_name(d.trim()) else {
                    continue;
                };
                let seen = auth_results::authenticated_by(&field, &ar.authserv_id, &domain);
                let passes = r.method == "dkim"
                    && r.result == "pass"
                    && r.method_version.is_none_or(|v| v == 1);
                if passes {
                    assert_eq!(seen, Some(AuthBy::Dkim), "{d}");
                }
                let other = format!("x{}", ar.authserv_id);
                if !auth_results::same_authserv_id(&other, &ar.authserv_id) {
                    assert_eq!(
                        auth_results::authenticated_by(&field, &other, &domain),
                        None
                    );
                }
            }
        }
    }
}

/// An `Autocrypt:` value.
pub fn harvest_autocrypt(data: &[u8]) {
    let name = "Autocrypt";
    let parsed = autocrypt::parse(name.len(), data);
    if name.len() + 1 + data.len() > MAX_HEADER_BYTES {
        assert!(matches!(
            parsed,
            Err(autocrypt::AutocryptError::Oversized(_))
        ));
        return;
    }
    let Ok(h) = parsed else { return };
    assert!(!h.keydata.is_empty() && h.keydata.len() < MAX_HEADER_BYTES);
    assert_eq!(h.addr, h.addr.trim());
    // The header is selected for its own address, and only for it.
    if let Ok(addr) = Address::parse(&h.addr) {
        let field = [HeaderField::new(name, data)];
        assert_eq!(autocrypt::select(&field, &addr).as_ref(), Ok(&h));
        let other = Address::parse("somebody-else@fuzz.test").ok();
        if let Some(other) = other.filter(|o| !o.matches_loosely(&addr)) {
            assert!(autocrypt::select(&field, &other).is_err());
        }
    }
}

/// A raw message through `screen` and, for a candidate, `examine`.
pub fn harvest_examine(data: &[u8]) {
    let msg = Message::parse(data);
    let body = &data[msg.body_offset..];
    let now = now();
    let Screen::Candidate(c) = screen_at(&msg.headers, AUTHSERV_ID, now) else {
        return;
    };
    assert!(c.smime || c.autocrypt);
    assert!(c.effective <= crate::backend::unix_seconds(now));
    let registry = Registry::new();
    let results = examine(&c, &msg.headers, body, &registry, now);
    assert_eq!(
        results.len(),
        usize::from(c.smime) + usize::from(c.autocrypt)
    );
    for key in results.iter().flatten() {
        assert_eq!(key.address, crate::store::store_key(&c.from));
        assert_eq!(key.effective, c.effective);
        let want = match key.how {
            LearnedFrom::SmimeSignature => Method::Smime,
            LearnedFrom::Autocrypt => Method::OpenPgp,
            LearnedFrom::Import => panic!("mail taught an imported key"),
        };
        assert_eq!(key.method, want);
        assert_eq!(
            key.prefer_encrypt.is_some(),
            key.how == LearnedFrom::Autocrypt
        );
        // The stored form is read back as the same key. (Not byte for
        // byte: `identify` is not idempotent on an OpenPGP certificate
        // holding a signature Sequoia cannot attribute, which it places
        // differently on a second pass — FUZZING.md, "Noticed while
        // fuzzing"; fuzz/regressions/harvest_examine/.)
        let id = identify(key.method, &key.key).unwrap_or_else(|| panic!("unreadable learned key"));
        assert_eq!(id.fingerprint, key.fingerprint);
        assert!(
            registry
                .get(key.method)
                .validate(
                    &crate::backend::KeyMaterial {
                        method: key.method,
                        data: key.key.clone(),
                        origin: "learned".into(),
                        provenance: crate::material::Provenance::now(
                            crate::material::SourceKind::Test,
                            crate::material::Security::Local
                        ),
                        bound_addresses: Vec::new(),
                    },
                    &c.from,
                    now
                )
                .is_ok(),
            "a learned key that does not validate for its address"
        );
    }
}
