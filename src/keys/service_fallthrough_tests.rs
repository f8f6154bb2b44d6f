//! The key service's chain beyond "first answer decides": which answers
//! pass the question on (an unsigned zone, keys for other addresses, a
//! failure the rule tolerates) and what stands when nobody decides.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::sync::Arc;

use super::tests_support::*;
use crate::keys::memory::MemorySource;
use crate::keys::{FailReason, KeyChoice, Lookup, Security, SourceKind, TrustLevel};
use crate::material::{KeyRejected, Method, OnKeyChange, RejectReason};
use crate::policy::KeyOutcome;

fn dane_wkd_keyserver() -> [Arc<MemorySource>; 3] {
    [
        Arc::new(MemorySource::of_kind("dns", SourceKind::Dane)),
        Arc::new(MemorySource::of_kind("wkd", SourceKind::Wkd)),
        Arc::new(MemorySource::of_kind("ks", SourceKind::Keyserver)),
    ]
}

fn web(addr: &str, origin: &str, kind: SourceKind) -> Lookup {
    found(addr, origin, kind, Security::WebPki)
}

fn opportunistic() -> KeyChoice {
    KeyChoice {
        sources: None,
        min_trust: TrustLevel::Learned,
        tolerate: SourceKind::tolerated_by_default(),
        pins: Vec::new(),
        on_key_change: OnKeyChange::Accept,
    }
}

fn origins(out: &KeyOutcome<crate::backend::Recipient>) -> Vec<String> {
    match out {
        KeyOutcome::Found { usable, .. } => usable.iter().map(|r| r.origin.clone()).collect(),
        other => panic!("no keys: {other:?}"),
    }
}

const A: &str = "a@example.org";

#[test]
fn an_unsigned_zone_passes_the_question_on_and_stands_if_nobody_has_keys() {
    let [dns, wkd, ks] = dane_wkd_keyserver();
    dns.set(A, Method::Smime, Lookup::Insecure);
    wkd.set(A, Method::Smime, web(A, "wkd's", SourceKind::Wkd));
    let keys = service(&[&dns, &wkd, &ks]);
    let out = block_on(keys.resolve(&addr(A), Method::Smime, &opportunistic()));
    assert_eq!(origins(&out.outcome), ["wkd's"]);
    assert_eq!(ks.calls(), 0, "the WKD key decided");
    // Nobody else has keys: the unsigned zone is the answer, not "no key
    // published".
    let [dns, wkd, ks] = dane_wkd_keyserver();
    dns.set(A, Method::Smime, Lookup::Insecure);
    let keys = service(&[&dns, &wkd, &ks]);
    let out = block_on(keys.resolve(&addr(A), Method::Smime, &opportunistic()));
    assert!(
        matches!(out.outcome, KeyOutcome::Insecure),
        "{:?}",
        out.outcome
    );
    assert_eq!((wkd.calls(), ks.calls()), (1, 1));
}

#[test]
fn a_higher_source_with_keys_is_never_overridden_by_a_web_key() {
    let [dns, wkd, ks] = dane_wkd_keyserver();
    dns.set(A, Method::Smime, dane(A, "dns's"));
    wkd.set(A, Method::Smime, web(A, "wkd's", SourceKind::Wkd));
    // Registered in the wrong order on purpose: trust orders the asking.
    let keys = service(&[&wkd, &ks, &dns]);
    let out = block_on(keys.resolve(&addr(A), Method::Smime, &opportunistic()));
    assert_eq!(origins(&out.outcome), ["dns's"]);
    assert_eq!((wkd.calls(), ks.calls()), (0, 0));
}

#[test]
fn keys_for_other_addresses_pass_the_question_on() {
    let [dns, wkd, ks] = dane_wkd_keyserver();
    let refused = KeyRejected {
        origin: "WKD file".into(),
        reason: RejectReason::AddressMismatch(A.into()),
    };
    let nothing_for_a = Lookup::Found {
        keys: Vec::new(),
        unusable: vec![refused],
        security: Security::WebPki,
    };
    wkd.set(A, Method::Smime, nothing_for_a.clone());
    ks.set(
        A,
        Method::Smime,
        web(A, "keyserver's", SourceKind::Keyserver),
    );
    let keys = service(&[&dns, &wkd, &ks]);
    let out = block_on(keys.resolve(&addr(A), Method::Smime, &opportunistic()));
    assert_eq!(origins(&out.outcome), ["keyserver's"]);
    // Alone, the refusal stands (explain and the log say why).
    let [dns, wkd, ks] = dane_wkd_keyserver();
    wkd.set(A, Method::Smime, nothing_for_a);
    let keys = service(&[&dns, &wkd, &ks]);
    let out = block_on(keys.resolve(&addr(A), Method::Smime, &opportunistic()));
    let KeyOutcome::Found {
        usable, rejected, ..
    } = &out.outcome
    else {
        panic!("{:?}", out.outcome);
    };
    assert!(usable.is_empty());
    assert!(matches!(
        rejected[0].reason,
        RejectReason::AddressMismatch(_)
    ));
}

#[test]
fn a_tolerated_failure_is_noted_and_the_next_source_decides() {
    let [dns, wkd, ks] = dane_wkd_keyserver();
    wkd.set(A, Method::Smime, Lookup::Failed(FailReason::Timeout));
    ks.set(
        A,
        Method::Smime,
        web(A, "keyserver's", SourceKind::Keyserver),
    );
    let keys = service(&[&dns, &wkd, &ks]);
    let out = block_on(keys.resolve(&addr(A), Method::Smime, &opportunistic()));
    assert_eq!(origins(&out.outcome), ["keyserver's"]);
    assert_eq!(out.skipped, ["wkd failed: timed out"]);
    // Nobody has keys: "no key", with the failure noted — never a
    // failure outcome, which would defer the mail.
    let [dns, wkd, ks] = dane_wkd_keyserver();
    wkd.set(A, Method::Smime, Lookup::Failed(FailReason::Timeout));
    ks.set(A, Method::Smime, Lookup::Bogus("bad".into()));
    let keys = service(&[&dns, &wkd, &ks]);
    let out = block_on(keys.resolve(&addr(A), Method::Smime, &opportunistic()));
    assert!(
        matches!(out.outcome, KeyOutcome::NotFound),
        "{:?}",
        out.outcome
    );
    assert_eq!(
        out.skipped,
        ["wkd failed: timed out", "keyserver answer bogus: bad"]
    );
}

#[test]
fn a_failure_the_rule_does_not_tolerate_is_the_answer() {
    let [dns, wkd, ks] = dane_wkd_keyserver();
    dns.set(A, Method::Smime, Lookup::Failed(FailReason::ServFail));
    wkd.set(A, Method::Smime, web(A, "wkd's", SourceKind::Wkd));
    let keys = service(&[&dns, &wkd, &ks]);
    // The default tolerates web sources only: a DNS failure decides.
    let out = block_on(keys.resolve(&addr(A), Method::Smime, &opportunistic()));
    assert!(matches!(
        out.outcome,
        KeyOutcome::Failed(FailReason::ServFail)
    ));
    assert_eq!(wkd.calls(), 0);
    // A required rule's choice tolerates nothing: a WKD failure defers.
    let [dns, wkd, ks] = dane_wkd_keyserver();
    wkd.set(A, Method::Smime, Lookup::Failed(FailReason::Timeout));
    ks.set(
        A,
        Method::Smime,
        web(A, "keyserver's", SourceKind::Keyserver),
    );
    let keys = service(&[&dns, &wkd, &ks]);
    let required = KeyChoice {
        sources: None,
        min_trust: TrustLevel::Tls,
        tolerate: Vec::new(),
        pins: Vec::new(),
        on_key_change: OnKeyChange::Accept,
    };
    let out = block_on(keys.resolve(&addr(A), Method::Smime, &required));
    assert!(matches!(
        out.outcome,
        KeyOutcome::Failed(FailReason::Timeout)
    ));
    assert!(out.skipped.is_empty());
    assert_eq!(ks.calls(), 0);
}

#[test]
fn the_sources_asked_one_after_another_share_one_deadline() {
    let [dns, wkd, ks] = dane_wkd_keyserver();
    // WKD never answers (tolerated); the keyserver would answer after
    // 30 ms, but the 50 ms for the whole lookup are spent by then.
    wkd.go_silent();
    ks.set(
        A,
        Method::Smime,
        web(A, "keyserver's", SourceKind::Keyserver),
    );
    ks.set_delay(std::time::Duration::from_millis(30));
    let keys = service(&[&dns, &wkd, &ks]).with_deadline(std::time::Duration::from_millis(50));
    let out = block_on(keys.resolve(&addr(A), Method::Smime, &opportunistic()));
    assert_eq!(ks.calls(), 1, "asked, with no time left");
    // Both timed out, both tolerated: noted, no key.
    assert!(
        matches!(out.outcome, KeyOutcome::NotFound),
        "{:?}",
        out.outcome
    );
    assert_eq!(
        out.skipped,
        ["wkd failed: timed out", "keyserver failed: timed out"]
    );
    // Each with the deadline to itself, the keyserver would have had time.
    let [dns, wkd, ks] = dane_wkd_keyserver();
    ks.set(
        A,
        Method::Smime,
        web(A, "keyserver's", SourceKind::Keyserver),
    );
    ks.set_delay(std::time::Duration::from_millis(30));
    let keys = service(&[&dns, &wkd, &ks]).with_deadline(std::time::Duration::from_millis(50));
    let out = block_on(keys.resolve(&addr(A), Method::Smime, &opportunistic()));
    assert_eq!(origins(&out.outcome), ["keyserver's"]);
}

#[test]
fn keys_from_an_unsigned_zone_give_way_to_keys_a_transport_vouches_for() {
    // dns.allow_insecure: DNS returns the unsigned zone's key.
    let insecure = found(A, "unsigned zone's", SourceKind::Dane, Security::Insecure);
    let [dns, wkd, ks] = dane_wkd_keyserver();
    dns.set(A, Method::Smime, insecure.clone());
    wkd.set(A, Method::Smime, web(A, "wkd's", SourceKind::Wkd));
    let keys = service(&[&dns, &wkd, &ks]);
    let out = block_on(keys.resolve(&addr(A), Method::Smime, &opportunistic()));
    assert_eq!(origins(&out.outcome), ["wkd's"]);
    // Nobody else has keys: the unsigned zone's stand (as before).
    let [dns, wkd, ks] = dane_wkd_keyserver();
    dns.set(A, Method::Smime, insecure);
    let keys = service(&[&dns, &wkd, &ks]);
    let out = block_on(keys.resolve(&addr(A), Method::Smime, &opportunistic()));
    assert_eq!(origins(&out.outcome), ["unsigned zone's"]);
}

fn fingerprint_of(l: &Lookup) -> String {
    match l {
        Lookup::Found { keys, .. } => {
            crate::backend::key_fingerprint(Method::Smime, &keys[0].data).unwrap()
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_pinned_key_beats_every_source_and_any_other_key_is_refused() {
    let [dns, wkd, ks] = dane_wkd_keyserver();
    let d = dane(A, "dns's");
    // The web source's certificate: the same address, another key.
    let mut w = web(A, "wkd's", SourceKind::Wkd);
    if let Lookup::Found { keys, .. } = &mut w {
        let rsa = openssl::rsa::Rsa::generate(2048).unwrap();
        let other = openssl::pkey::PKey::from_rsa(rsa).unwrap();
        keys[0].data = crate::fuzzing::session::certificate(&other, A).unwrap();
    }
    let pinned = fingerprint_of(&w);
    assert_ne!(pinned, fingerprint_of(&d));
    dns.set(A, Method::Smime, d.clone());
    wkd.set(A, Method::Smime, w);
    let keys = service(&[&dns, &wkd, &ks]);
    let pin = KeyChoice {
        pins: vec![pinned.clone()],
        on_key_change: OnKeyChange::Accept,
        ..opportunistic()
    };
    // DNSSEC's key is not the pinned one: the web key, lower, is used.
    let out = block_on(keys.resolve(&addr(A), Method::Smime, &pin));
    assert_eq!(origins(&out.outcome), ["wkd's"]);
    match &out.outcome {
        KeyOutcome::Found { usable, .. } => assert_eq!(usable[0].fingerprint, pinned),
        other => panic!("{other:?}"),
    }
    // Nobody has it: the first key found is refused, never used.
    let [dns, wkd, ks] = dane_wkd_keyserver();
    dns.set(A, Method::Smime, d.clone());
    let keys = service(&[&dns, &wkd, &ks]);
    let out = block_on(keys.resolve(&addr(A), Method::Smime, &pin));
    match &out.outcome {
        KeyOutcome::Found {
            usable, rejected, ..
        } => {
            assert!(usable.is_empty());
            assert_eq!(
                rejected[0].reason,
                RejectReason::NotPinned(fingerprint_of(&d))
            );
        }
        other => panic!("{other:?}"),
    }
    // Without a pin the same lookup takes DNSSEC's key.
    let out = block_on(keys.resolve(&addr(A), Method::Smime, &opportunistic()));
    assert_eq!(origins(&out.outcome), ["dns's"]);
}
