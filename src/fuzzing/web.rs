//! The web sources' parsers of what a server sends: a WKD or keyserver
//! body read as keys for one address, a redirect's `Location`, and
//! `Cache-Control`.

use std::time::SystemTime;

use crate::address::Address;
use crate::backend::openpgp::MAX_CERTS_PER_ANSWER;
use crate::keys::web::answer;
use crate::keys::web::url::HttpsUrl;
use crate::keys::{Lookup, Security, SourceKind, TrustLevel};
use crate::material::Method;

/// The first byte picks the parser; the rest is what the server sent.
pub fn web(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    match sel % 3 {
        0 => body(rest),
        1 => location(rest),
        _ => {
            let text = String::from_utf8_lossy(rest);
            if let Some(ttl) = crate::keys::web::cache_control_max_age(&text) {
                // Any value parses to a finite duration.
                let _ = ttl.as_secs();
            }
        }
    }
}

fn body(rest: &[u8]) {
    let Ok(addr) = Address::parse("alice@example.org") else {
        return;
    };
    // As the client does: read once when the body arrives, then as a lookup.
    let fetched = answer::read_body(rest, "https://openpgpkey.example.org/x".into(), &addr);
    match answer::to_lookup(&fetched, &addr, SourceKind::Wkd, SystemTime::now()).0 {
        Lookup::Found {
            keys,
            unusable,
            security,
        } => {
            assert_eq!(security, Security::WebPki);
            assert!(keys.len() + unusable.len() <= MAX_CERTS_PER_ANSWER);
            assert!(!keys.is_empty() || !unusable.is_empty(), "found nothing");
            for k in &keys {
                assert_eq!(k.method, Method::OpenPgp);
                assert_eq!(k.provenance.trust(), TrustLevel::Tls);
                // What is kept carries the address: read again, it still does.
                let again = crate::backend::openpgp::certs_for_address(&k.data, &addr);
                assert!(
                    again.is_ok_and(|(m, o)| m.len() == 1 && o.is_empty()),
                    "a kept key lost its user ID"
                );
            }
        }
        Lookup::Failed(_) => {}
        other => panic!("a body is keys or a failure, not {other:?}"),
    }
}

fn location(rest: &[u8]) {
    let Ok(base) = HttpsUrl::parse("https://h.example/.well-known/openpgpkey/hu/abc?l=x") else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    if let Ok(next) = base.join(&text) {
        assert!(
            next.text.to_ascii_lowercase().starts_with("https:"),
            "{}",
            next.text
        );
        assert!(!next.host.is_empty());
        assert!(next.target.starts_with('/'), "{}", next.target);
        assert_eq!(HttpsUrl::parse(&next.text).as_ref(), Ok(&next));
    }
}
