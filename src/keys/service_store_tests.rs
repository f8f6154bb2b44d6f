//! The key service with a key store: pins set in the store join the
//! rule's, an unreadable store's pins fail the lookup, and key history
//! under `on_key_change` (accept uses a new key; review keeps the
//! approved one until `approve`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::sync::Arc;
use std::time::Duration;

use super::tests_support::{addr, service};
use crate::keys::memory::MemorySource;
use crate::keys::{FailReason, KeyChoice, Lookup, Provenance, Security, SourceKind};
use crate::material::{KeyMaterial, Method, OnKeyChange, RejectReason};
use crate::policy::KeyOutcome;
use crate::store::{Pin, Store, StoreSettings};

const A: &str = "alice@example.org";

/// A DNSSEC answer with a certificate of its own (a fresh RSA key).
fn dane(addr: &str, origin: &str) -> Lookup {
    let pkey = openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
    Lookup::Found {
        keys: vec![KeyMaterial {
            bound_addresses: Vec::new(),
            method: Method::Smime,
            data: crate::fuzzing::session::certificate(&pkey, addr).unwrap(),
            origin: origin.to_owned(),
            provenance: Provenance::now(SourceKind::Dane, Security::Secure),
        }],
        unusable: Vec::new(),
        security: Security::Secure,
    }
}

/// A runtime with I/O (PostgreSQL) and timers.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn store(dir: &tempfile::TempDir) -> Store {
    Store::open(&StoreSettings {
        url: format!("sqlite://{}", dir.path().join("keys.sqlite").display()),
        password_file: None,
        ca_file: None,
        connect_timeout: Duration::from_secs(2),
        timeout: Duration::from_secs(2),
    })
    .unwrap()
}

fn fingerprint(lookup: &Lookup) -> String {
    let Lookup::Found { keys, .. } = lookup else {
        panic!("not found")
    };
    crate::backend::key_fingerprint(Method::Smime, &keys[0].data).unwrap()
}

fn used(out: &crate::policy::MethodOutcome<crate::backend::Recipient>) -> Vec<String> {
    match &out.outcome {
        KeyOutcome::Found { usable, .. } => usable.iter().map(|r| r.fingerprint.clone()).collect(),
        other => panic!("{other:?}"),
    }
}

fn choice(on_key_change: OnKeyChange) -> KeyChoice {
    KeyChoice {
        on_key_change,
        ..KeyChoice::any()
    }
}

#[test]
fn a_pin_in_the_store_refuses_every_other_key() {
    let dir = tempfile::tempdir().unwrap();
    let st = store(&dir);
    let dns = Arc::new(MemorySource::of_kind("dns", SourceKind::Dane));
    let published = dane(A, "SMIMEA");
    let other = dane(A, "SMIMEA (another key)");
    dns.set(A, Method::Smime, published.clone());
    let keys = service(&[&dns]).with_store(st.clone(), Duration::from_millis(1));
    block_on(async {
        st.pin(&Pin {
            address: A.to_owned(),
            fingerprint: fingerprint(&other),
            created: 0,
            note: String::new(),
        })
        .await
        .unwrap();
        let out = keys
            .resolve(&addr(A), Method::Smime, &KeyChoice::any())
            .await;
        match out.outcome {
            KeyOutcome::Found {
                usable, rejected, ..
            } => {
                assert!(usable.is_empty());
                assert!(
                    matches!(rejected[0].reason, RejectReason::NotPinned(_)),
                    "{rejected:?}"
                );
            }
            other => panic!("{other:?}"),
        }
        // The pinned key, when the source has it, is used; the pin is
        // for the address in any case of its local part.
        dns.set("Alice@example.org", Method::Smime, other.clone());
        let out = keys
            .resolve(&addr("Alice@example.org"), Method::Smime, &KeyChoice::any())
            .await;
        assert_eq!(used(&out), [fingerprint(&other)]);
    });
}

#[test]
fn pins_that_cannot_be_read_fail_the_lookup() {
    // Nothing listens on port 1: the store is down from the start.
    let st = Store::open(&StoreSettings {
        url: "postgres://aem@127.0.0.1:1/keys?sslmode=disable".to_owned(),
        password_file: None,
        ca_file: None,
        connect_timeout: Duration::from_millis(500),
        timeout: Duration::from_millis(500),
    })
    .unwrap();
    let dns = Arc::new(MemorySource::of_kind("dns", SourceKind::Dane));
    dns.set(A, Method::Smime, dane(A, "SMIMEA"));
    let keys = service(&[&dns]).with_store(st, Duration::from_secs(30));
    let out = block_on(keys.resolve(&addr(A), Method::Smime, &KeyChoice::any()));
    match out.outcome {
        KeyOutcome::Failed(FailReason::Network(why)) => {
            assert!(why.contains("pins in the key store are unknown"), "{why}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_changed_key_is_used_under_accept_and_held_under_review_until_approved() {
    let dir = tempfile::tempdir().unwrap();
    let st = store(&dir);
    let dns = Arc::new(MemorySource::of_kind("dns", SourceKind::Dane));
    let first = dane(A, "SMIMEA (first)");
    let second = dane(A, "SMIMEA (second)");
    let third = dane(A, "SMIMEA (third)");
    let keys = service(&[&dns]).with_store(st.clone(), Duration::from_millis(1));
    let review = choice(OnKeyChange::Review);
    block_on(async {
        // First sight: taken as it is.
        dns.set(A, Method::Smime, first.clone());
        let out = keys.resolve(&addr(A), Method::Smime, &review).await;
        assert_eq!(used(&out), [fingerprint(&first)]);
        // A new key under review: the approved one goes on being used.
        dns.set(A, Method::Smime, second.clone());
        let out = keys.resolve(&addr(A), Method::Smime, &review).await;
        assert_eq!(used(&out), [fingerprint(&first)]);
        assert!(
            out.notes.iter().any(|n| n.contains("held for review")),
            "{:?}",
            out.notes
        );
        let pending = st.changes(true).await.unwrap();
        assert_eq!(pending.len(), 1, "{pending:?}");
        assert_eq!(pending[0].new, fingerprint(&second));
        // Approved: the new key is used.
        assert_eq!(st.approve(A, &fingerprint(&second), 1).await.unwrap(), 1);
        tokio::time::sleep(Duration::from_millis(5)).await;
        let out = keys.resolve(&addr(A), Method::Smime, &review).await;
        assert_eq!(used(&out), [fingerprint(&second)]);
        // Under accept, a new key is used at once, and recorded approved.
        dns.set(A, Method::Smime, third.clone());
        let out = keys
            .resolve(&addr(A), Method::Smime, &choice(OnKeyChange::Accept))
            .await;
        assert_eq!(used(&out), [fingerprint(&third)]);
        assert!(st.changes(true).await.unwrap().is_empty());
        tokio::time::sleep(Duration::from_millis(5)).await;
        let out = keys.resolve(&addr(A), Method::Smime, &review).await;
        assert_eq!(used(&out), [fingerprint(&third)]);
    });
}

#[test]
fn a_pinned_key_needs_no_review() {
    let dir = tempfile::tempdir().unwrap();
    let st = store(&dir);
    let dns = Arc::new(MemorySource::of_kind("dns", SourceKind::Dane));
    let first = dane(A, "SMIMEA (first)");
    let second = dane(A, "SMIMEA (second)");
    let keys = service(&[&dns]).with_store(st.clone(), Duration::from_millis(1));
    block_on(async {
        dns.set(A, Method::Smime, first.clone());
        let review = choice(OnKeyChange::Review);
        let _ = keys.resolve(&addr(A), Method::Smime, &review).await;
        dns.set(A, Method::Smime, second.clone());
        let pinned = KeyChoice {
            pins: vec![fingerprint(&second)],
            ..review
        };
        let out = keys.resolve(&addr(A), Method::Smime, &pinned).await;
        assert_eq!(used(&out), [fingerprint(&second)]);
    });
}

#[test]
fn a_store_that_never_answers_is_held_to_the_lookup_deadline() {
    block_on(async {
        // Accepts, then says nothing: the store's own timeouts are longer
        // than the lookup's deadline.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let st = Store::open(&StoreSettings {
            url: format!("postgres://aem@127.0.0.1:{port}/keys?sslmode=disable"),
            password_file: None,
            ca_file: None,
            connect_timeout: Duration::from_secs(20),
            timeout: Duration::from_secs(20),
        })
        .unwrap();
        let dns = Arc::new(MemorySource::of_kind("dns", SourceKind::Dane));
        dns.set(A, Method::Smime, dane(A, "SMIMEA"));
        let keys = service(&[&dns])
            .with_store(st, Duration::from_secs(30))
            .with_deadline(Duration::from_millis(300));
        let started = std::time::Instant::now();
        let out = keys
            .resolve(&addr(A), Method::Smime, &KeyChoice::any())
            .await;
        assert!(
            matches!(out.outcome, KeyOutcome::Failed(FailReason::Timeout)),
            "{:?}",
            out.outcome
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        hold.abort();
    });
}
