//! Unit tests of the key service with in-memory sources: order, one
//! outcome per method, the validation cache, provenance, and failures that
//! never become "no key".

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use super::*;
use crate::keys::memory::MemorySource;
use crate::keys::{FailReason, KeyChoice, Provenance, Security, TrustLevel};
use crate::material::KeyMaterial;
use crate::material::{OnKeyChange, RejectReason};

fn cert_for(addr: &str) -> Vec<u8> {
    static KEY: OnceLock<openssl::pkey::PKey<openssl::pkey::Private>> = OnceLock::new();
    let pkey = KEY.get_or_init(|| {
        let rsa = openssl::rsa::Rsa::generate(2048).expect("RSA key");
        openssl::pkey::PKey::from_rsa(rsa).expect("PKey")
    });
    crate::fuzzing::session::certificate(pkey, addr).expect("certificate")
}

pub(super) fn found(addr: &str, origin: &str, source: SourceKind, security: Security) -> Lookup {
    Lookup::Found {
        keys: vec![KeyMaterial {
            bound_addresses: Vec::new(),
            method: Method::Smime,
            data: cert_for(addr),
            origin: origin.to_owned(),
            provenance: Provenance {
                source,
                security,
                trust: source.trust(),
                fetched: SystemTime::now() - Duration::from_secs(90),
            },
        }],
        unusable: Vec::new(),
        security,
    }
}

/// An SMIMEA-found key: DNSSEC vouched for it.
pub(super) fn dane(addr: &str, origin: &str) -> Lookup {
    found(addr, origin, SourceKind::Dane, Security::Secure)
}

/// A key-directory key: the operator's word.
fn operator(addr: &str, origin: &str) -> Lookup {
    found(addr, origin, SourceKind::Directory, Security::Local)
}

pub(super) fn service(sources: &[&Arc<MemorySource>]) -> KeyService {
    let sources = sources
        .iter()
        .map(|s| Arc::clone(s) as Arc<dyn KeySource>)
        .collect();
    KeyService::new(sources, Arc::new(Registry::new()), None)
}

pub(super) fn addr(s: &str) -> Address {
    Address::parse(s).expect("address")
}

pub(super) fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
        .block_on(f)
}

#[test]
fn first_source_with_an_answer_decides_and_later_ones_are_not_asked() {
    let first = Arc::new(MemorySource::new("first"));
    let second = Arc::new(MemorySource::new("second"));
    first.set(
        "a@example.org",
        Method::Smime,
        operator("a@example.org", "first's"),
    );
    second.set(
        "a@example.org",
        Method::Smime,
        dane("a@example.org", "second's"),
    );
    let keys = service(&[&first, &second]);
    let out = block_on(keys.resolve(&addr("a@example.org"), Method::Smime, &KeyChoice::any()));
    let KeyOutcome::Found {
        usable, security, ..
    } = out.outcome
    else {
        panic!("expected keys, got {:?}", out.outcome);
    };
    assert_eq!(security, Security::Local);
    assert_eq!(usable.len(), 1);
    assert_eq!(usable[0].origin, "first's");
    assert_eq!(second.calls(), 0, "a lower source must not be asked");

    // Proven absent at the first: the second answers.
    let b = addr("b@example.org");
    second.set(
        "b@example.org",
        Method::Smime,
        dane("b@example.org", "second's"),
    );
    let out = block_on(keys.resolve(&b, Method::Smime, &KeyChoice::any()));
    match out.outcome {
        KeyOutcome::Found { usable, .. } => assert_eq!(usable[0].origin, "second's"),
        other => panic!("expected the second source's key, got {other:?}"),
    }
    assert_eq!((first.calls(), second.calls()), (2, 1));
}

#[test]
fn a_failure_or_bogus_answer_is_the_answer_never_no_key() {
    let answers = [
        Lookup::Failed(FailReason::Timeout),
        Lookup::Failed(FailReason::Network("refused".into())),
        Lookup::Bogus("RRSIG expired".into()),
    ];
    for answer in answers {
        let first = Arc::new(MemorySource::new("first"));
        let second = Arc::new(MemorySource::new("second"));
        first.set("a@example.org", Method::Smime, answer.clone());
        // Keys further down must not paper over the failure.
        second.set(
            "a@example.org",
            Method::Smime,
            dane("a@example.org", "second's"),
        );
        let keys = service(&[&first, &second]);
        let out = block_on(keys.resolve(&addr("a@example.org"), Method::Smime, &KeyChoice::any()));
        let same = match (&answer, &out.outcome) {
            (Lookup::Failed(a), KeyOutcome::Failed(b)) => a == b,
            (Lookup::Bogus(a), KeyOutcome::Bogus(b)) => a == b,
            _ => false,
        };
        assert!(same, "{answer:?} became {:?}", out.outcome);
        assert_eq!(second.calls(), 0);
    }
    // Nothing anywhere: proven absent.
    let only = Arc::new(MemorySource::new("only"));
    let out = block_on(service(&[&only]).resolve(
        &addr("x@example.org"),
        Method::Smime,
        &KeyChoice::any(),
    ));
    assert!(matches!(out.outcome, KeyOutcome::NotFound));
    // No source at all is "no key" too (not a failure): nothing configured.
    let none = KeyService::new(Vec::new(), Arc::new(Registry::new()), None);
    let out = block_on(none.resolve(&addr("x@example.org"), Method::Smime, &KeyChoice::any()));
    assert!(matches!(out.outcome, KeyOutcome::NotFound));
    assert!(none.plan(&KeyChoice::any()).is_empty());
}

#[test]
fn one_outcome_per_method_in_the_order_asked() {
    let src = Arc::new(MemorySource::new("m"));
    src.set(
        "a@example.org",
        Method::Smime,
        operator("a@example.org", "cert"),
    );
    src.set(
        "a@example.org",
        Method::OpenPgp,
        Lookup::Failed(FailReason::ServFail),
    );
    let keys = service(&[&src]);
    let a = addr("a@example.org");
    let both = block_on(keys.resolve_all(&a, &[Method::OpenPgp, Method::Smime], &KeyChoice::any()));
    assert_eq!(both.len(), 2);
    assert_eq!(both[0].method, Method::OpenPgp);
    assert!(matches!(
        both[0].outcome,
        KeyOutcome::Failed(FailReason::ServFail)
    ));
    assert_eq!(both[1].method, Method::Smime);
    assert!(matches!(both[1].outcome, KeyOutcome::Found { .. }));
    assert!(block_on(keys.resolve_all(&a, &[], &KeyChoice::any())).is_empty());
}

#[test]
fn validation_is_cached_and_refusals_are_outcomes() {
    let src = Arc::new(MemorySource::new("m"));
    // A certificate for someone else: found, but not usable for a@.
    src.set(
        "a@example.org",
        Method::Smime,
        operator("z@example.org", "wrong"),
    );
    src.set(
        "b@example.org",
        Method::Smime,
        operator("b@example.org", "right"),
    );
    let keys = service(&[&src]);
    let out = block_on(keys.resolve(&addr("a@example.org"), Method::Smime, &KeyChoice::any()));
    match out.outcome {
        KeyOutcome::Found {
            usable, rejected, ..
        } => {
            assert!(usable.is_empty());
            assert_eq!(rejected.len(), 1);
            assert_eq!(rejected[0].origin, "wrong");
        }
        other => panic!("expected a refused key, got {other:?}"),
    }
    for _ in 0..3 {
        let out = block_on(keys.resolve(&addr("b@example.org"), Method::Smime, &KeyChoice::any()));
        assert!(matches!(out.outcome, KeyOutcome::Found { ref usable, .. } if usable.len() == 1));
    }
    // One entry per (address, key): three resolutions of b@ validated once.
    assert_eq!(keys.validated.len(), 2);
    assert_eq!(src.calls(), 4, "lookups are not cached by the service");
}

#[test]
fn every_usable_key_carries_its_provenance() {
    let src = Arc::new(MemorySource::new("m"));
    let fetched_at = SystemTime::now() - Duration::from_secs(90);
    let mut answer = dane("a@example.org", "SMIMEA 3 0 0 at x");
    if let Lookup::Found { keys, .. } = &mut answer {
        keys[0].provenance.fetched = fetched_at;
    }
    src.set("a@example.org", Method::Smime, answer);
    let keys = service(&[&src]);
    let explained =
        block_on(keys.explain(&addr("a@example.org"), Method::Smime, &KeyChoice::any()));
    let KeyOutcome::Found { usable, .. } = explained.outcome.outcome else {
        panic!("expected keys");
    };
    let p = usable[0].provenance;
    assert_eq!(p.source, SourceKind::Dane);
    assert_eq!(p.security, Security::Secure);
    assert_eq!(p.fetched, fetched_at);
    assert!(
        p.to_string()
            .starts_with("source dane, vouched for by DNSSEC, fetched 9")
    );
    // The trace names the source asked and its answer; the material is kept.
    assert_eq!(explained.steps.len(), 1);
    assert_eq!(explained.steps[0].source, "memory source m");
    assert_eq!(explained.steps[0].answer, "found");
    assert_eq!(explained.found.len(), 1);
}

#[test]
fn each_source_asked_is_counted_and_cached_failures_stay_failures() {
    let metrics = crate::metrics::Metrics::new();
    let first = Arc::new(MemorySource::new("first"));
    let second = Arc::new(MemorySource::new("second"));
    second.set(
        "a@example.org",
        Method::Smime,
        dane("a@example.org", "second's"),
    );
    let keys = KeyService::new(
        vec![first.clone(), second.clone()],
        Arc::new(Registry::new()),
        Some(metrics.clone()),
    );
    let count = |result: &str| -> u64 {
        let series = format!(
            "autoencrypt_key_lookups_total{{source=\"test\",record=\"smimea\",result=\"{result}\"}} "
        );
        let text = metrics.render();
        text.lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .map_or(0, |v| v.trim().parse().unwrap_or(u64::MAX))
    };
    let timed = || -> u64 {
        let series =
            "autoencrypt_key_lookup_duration_seconds_count{source=\"test\",record=\"smimea\"} ";
        metrics
            .render()
            .lines()
            .find_map(|l| l.strip_prefix(series))
            .map_or(0, |v| v.trim().parse().unwrap_or(u64::MAX))
    };
    let a = addr("a@example.org");
    // Both sources asked: one not_found (first), one found (second).
    block_on(keys.resolve(&a, Method::Smime, &KeyChoice::any()));
    assert_eq!((count("not_found"), count("found"), timed()), (1, 1, 2));
    // From the cache: a hit, not timed.
    first.set_cached(true);
    second.set_cached(true);
    block_on(keys.resolve(&a, Method::Smime, &KeyChoice::any()));
    assert_eq!((count("cache_hit"), count("not_found"), timed()), (2, 1, 2));
    // A cached failure is still a failure.
    first.set(
        "a@example.org",
        Method::Smime,
        Lookup::Failed(FailReason::Timeout),
    );
    block_on(keys.resolve(&a, Method::Smime, &KeyChoice::any()));
    assert_eq!((count("failed"), count("cache_hit"), timed()), (1, 2, 2));
}

/// A source of each built kind, empty: the directory (operator) and DNS
/// (dnssec).
fn directory_and_dns() -> (Arc<MemorySource>, Arc<MemorySource>) {
    (
        Arc::new(MemorySource::of_kind("dir", SourceKind::Directory)),
        Arc::new(MemorySource::of_kind("dns", SourceKind::Dane)),
    )
}

fn choice(sources: Option<Vec<SourceKind>>, min_trust: TrustLevel) -> KeyChoice {
    KeyChoice {
        sources,
        min_trust,
        tolerate: Vec::new(),
        pins: Vec::new(),
        on_key_change: OnKeyChange::Accept,
    }
}

#[test]
fn a_rules_sources_select_and_higher_trust_is_asked_first() {
    let (dir, dns) = directory_and_dns();
    dir.set(
        "a@example.org",
        Method::Smime,
        operator("a@example.org", "dir's"),
    );
    dns.set(
        "a@example.org",
        Method::Smime,
        dane("a@example.org", "dns's"),
    );
    // Registered lowest first: the order of asking comes from trust.
    let keys = service(&[&dns, &dir]);
    let a = addr("a@example.org");
    let origin = |c: &KeyChoice| match block_on(keys.resolve(&a, Method::Smime, c)).outcome {
        KeyOutcome::Found { usable, .. } => usable[0].origin.clone(),
        other => panic!("{other:?}"),
    };
    // Every source: the operator's key wins over the DNSSEC one.
    assert_eq!(origin(&KeyChoice::any()), "dir's");
    assert_eq!(
        dns.calls(),
        0,
        "a lower source is not asked once a higher one answered"
    );
    // A rule that lists DNS first still asks the directory first.
    let both = choice(
        Some(vec![SourceKind::Dane, SourceKind::Directory]),
        TrustLevel::Learned,
    );
    assert_eq!(origin(&both), "dir's");
    // A rule with DNS only never asks the directory.
    let before = dir.calls();
    let only_dns = choice(Some(vec![SourceKind::Dane]), TrustLevel::Learned);
    assert_eq!(origin(&only_dns), "dns's");
    assert_eq!(dir.calls(), before);
    let names: Vec<String> = keys.plan(&only_dns).iter().map(|s| s.describe()).collect();
    assert_eq!(names, ["memory source dns"]);
}

#[test]
fn sources_below_min_trust_are_not_asked_and_keys_below_it_are_refused() {
    let (dir, dns) = directory_and_dns();
    dns.set(
        "a@example.org",
        Method::Smime,
        dane("a@example.org", "dns's"),
    );
    let keys = service(&[&dir, &dns]);
    let a = addr("a@example.org");
    // min_trust operator: DNS cannot reach it, so it is not asked; the
    // directory has nothing: no key (not a failure).
    let strict = choice(None, TrustLevel::Operator);
    let out = block_on(keys.resolve(&a, Method::Smime, &strict));
    assert!(
        matches!(out.outcome, KeyOutcome::NotFound),
        "{:?}",
        out.outcome
    );
    assert_eq!(dns.calls(), 0);
    assert_eq!(keys.plan(&strict).len(), 1);
    // A source that hands out a key vouched for less than itself: the
    // key is refused by its own provenance, not by the source's rank.
    dir.set(
        "a@example.org",
        Method::Smime,
        dane("a@example.org", "relayed"),
    );
    let out = block_on(keys.resolve(&a, Method::Smime, &strict));
    match out.outcome {
        KeyOutcome::Found {
            usable, rejected, ..
        } => {
            assert!(usable.is_empty());
            assert_eq!(
                rejected[0].reason,
                RejectReason::BelowMinTrust {
                    trust: TrustLevel::Dnssec,
                    min: TrustLevel::Operator
                }
            );
        }
        other => panic!("{other:?}"),
    }
    // dnssec and above: the same key is used.
    let out = block_on(keys.resolve(&a, Method::Smime, &choice(None, TrustLevel::Dnssec)));
    assert!(matches!(out.outcome, KeyOutcome::Found { ref usable, .. } if usable.len() == 1));
}

#[test]
fn a_source_that_never_answers_is_a_timeout_not_no_key() {
    let (dir, dns) = directory_and_dns();
    dns.set(
        "a@example.org",
        Method::Smime,
        dane("a@example.org", "dns's"),
    );
    dir.go_silent();
    let keys = service(&[&dir, &dns]).with_deadline(Duration::from_millis(50));
    let out = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
        .block_on(keys.resolve(&addr("a@example.org"), Method::Smime, &KeyChoice::any()));
    assert!(
        matches!(out.outcome, KeyOutcome::Failed(FailReason::Timeout)),
        "{:?}",
        out.outcome
    );
    assert_eq!(
        dns.calls(),
        0,
        "a timeout is the answer, not a pass to the next source"
    );
}

/// Under `dns.allow_insecure` a key from an unsigned zone is a DANE key
/// like any other for `min_trust` (the operator accepted such zones): a
/// required rule's default takes it, as it did before trust levels; its
/// provenance still says nobody vouched for it.
#[test]
fn keys_from_an_unsigned_zone_meet_the_required_default() {
    let dns = Arc::new(MemorySource::of_kind("dns", SourceKind::Dane));
    dns.set(
        "a@example.org",
        Method::Smime,
        found(
            "a@example.org",
            "unsigned",
            SourceKind::Dane,
            Security::Insecure,
        ),
    );
    let keys = service(&[&dns]);
    let required = KeyChoice {
        sources: None,
        min_trust: TrustLevel::Dnssec,
        tolerate: Vec::new(),
        pins: Vec::new(),
        on_key_change: OnKeyChange::Accept,
    };
    let out = block_on(keys.resolve(&addr("a@example.org"), Method::Smime, &required));
    let KeyOutcome::Found {
        usable, security, ..
    } = out.outcome
    else {
        panic!("{:?}", out.outcome);
    };
    assert_eq!(security, Security::Insecure);
    assert_eq!(usable[0].provenance.security, Security::Insecure);
    assert!(
        usable[0]
            .provenance
            .to_string()
            .contains("vouched for by nobody")
    );
}
