//! The web sources' cache, sharing and bound, seen from the server: the
//! key service against a real nginx (tests/env/web-up), with nginx's
//! access log counting the requests that reached it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

#[path = "env/mod.rs"]
mod env;
#[path = "env/web.rs"]
mod web;

use std::sync::Arc;

use autoencrypt_milter::config::{Config, DnsMode};
use autoencrypt_milter::keys::{FailReason, KeyChoice, KeyService, SourceKind};
use autoencrypt_milter::policy::KeyOutcome;
use autoencrypt_milter::{Address, Method, Registry};
use env::DnsEnv;
use web::WebEnv;

fn service(dns: &DnsEnv, web: &WebEnv, tweak: impl FnOnce(&mut Config)) -> KeyService {
    let mut config = Config::default();
    config.dns.mode = DnsMode::Validate;
    config.dns.resolvers = vec![dns.nsd()];
    config.dns.trust_anchor = Some(dns.trust_anchor_dnskeys());
    config.wkd.ca_file = Some(web.ca_file());
    config.wkd.timeout_ms = 2_000;
    config.wkd.connect_timeout_ms = 1_000;
    config.wkd.allow_private_addresses = true;
    tweak(&mut config);
    KeyService::from_config_only(&config, &[SourceKind::Wkd], Arc::new(Registry::new()), None)
        .unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Requests nginx logged for `user`'s URL path.
fn requests(web: &WebEnv, user: &str) -> usize {
    let url = &web.user(user).url;
    let path = &url[url.find("/.well-known").unwrap()..];
    web.access_log()
        .lines()
        .filter(|l| l.contains(path))
        .count()
}

fn addr(web: &WebEnv, user: &str) -> Address {
    Address::parse(&web.user(user).address).unwrap()
}

#[test]
fn one_fetch_serves_concurrent_and_later_lookups_of_each_answer() {
    let dns = DnsEnv::start();
    let web = WebEnv::start(&dns);
    let keys = service(&dns, &web, |_| {});
    let rt = runtime();
    let any = KeyChoice::any();
    // Sixteen lookups at once: one request reaches the server.
    let alice = addr(&web, "alice");
    let outcomes = rt.block_on(async {
        let lookups = (0..16).map(|_| keys.resolve(&alice, Method::OpenPgp, &any));
        futures_join_all(lookups).await
    });
    for o in &outcomes {
        assert!(
            matches!(&o.outcome, KeyOutcome::Found { usable, .. } if usable.len() == 1),
            "{:?}",
            o.outcome
        );
    }
    assert_eq!(requests(&web, "alice"), 1, "{}", web.access_log());
    // Later: from the cache (max-age=600), still one request.
    rt.block_on(keys.resolve(&alice, Method::OpenPgp, &any));
    assert_eq!(requests(&web, "alice"), 1);
    // A denial and a failure are cached too (briefly): asked once each.
    for user in ["missing", "error"] {
        let a = addr(&web, user);
        let first = rt.block_on(keys.resolve(&a, Method::OpenPgp, &any));
        let second = rt.block_on(keys.resolve(&a, Method::OpenPgp, &any));
        assert_eq!(
            format!("{:?}", first.outcome),
            format!("{:?}", second.outcome),
            "{user}"
        );
        assert_eq!(requests(&web, user), 1, "{user}: {}", web.access_log());
    }
    let error = rt.block_on(keys.resolve(&addr(&web, "error"), Method::OpenPgp, &any));
    assert!(
        matches!(&error.outcome, KeyOutcome::Failed(FailReason::BadAnswer(why)) if why.contains("HTTP 500")),
        "a cached failure stays a failure: {:?}",
        error.outcome
    );
}

/// Line numbers in nginx's access log of the first request for each of
/// `a` and `b`'s URLs (nginx logs a request when it ends).
fn log_order(web: &WebEnv, a: &str, b: &str) -> (usize, usize) {
    let log = web.access_log();
    let at = |user: &str| {
        let url = &web.user(user).url;
        let path = &url[url.find("/.well-known").unwrap()..];
        log.lines()
            .position(|l| l.contains(path))
            .unwrap_or_else(|| panic!("{user} never reached nginx:\n{log}"))
    };
    (at(a), at(b))
}

#[test]
fn fetches_beyond_max_in_flight_wait_for_a_slot() {
    let dns = DnsEnv::start();
    let web = WebEnv::start(&dns);
    let rt = runtime();
    let any = KeyChoice::any();
    // bob@ is on another host (direct method): slow@'s host being down
    // does not concern it.
    let (slow, alice) = (addr(&web, "slow"), addr(&web, "bob"));
    let run = |keys: &KeyService| {
        rt.block_on(async {
            let slow_first = keys.resolve(&slow, Method::OpenPgp, &any);
            let alice_after = async {
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                keys.resolve(&alice, Method::OpenPgp, &any).await
            };
            tokio::join!(slow_first, alice_after)
        })
    };
    // One slot: slow@ holds it until its timeout (a failure, never "no
    // key"); bob@ waits, then is fetched within its own time — so nginx
    // sees alice's request only after slow's ended.
    let keys = service(&dns, &web, |c| {
        c.wkd.max_in_flight = 1;
        c.wkd.timeout_ms = 1_500;
    });
    let (s, a) = run(&keys);
    assert!(
        matches!(s.outcome, KeyOutcome::Failed(FailReason::Timeout)),
        "{:?}",
        s.outcome
    );
    assert!(
        matches!(a.outcome, KeyOutcome::Found { .. }),
        "{:?}",
        a.outcome
    );
    let (slow_at, alice_at) = log_order(&web, "slow", "bob");
    assert!(
        slow_at < alice_at,
        "bob@ did not wait:\n{}",
        web.access_log()
    );
    // The control: with two slots bob@ does not wait for slow@. (A new
    // service: the first one's cache holds both answers.)
    std::thread::sleep(std::time::Duration::from_millis(100));
    let before = web.access_log().lines().count();
    let keys = service(&dns, &web, |c| {
        c.wkd.max_in_flight = 2;
        c.wkd.timeout_ms = 1_500;
    });
    let (_, a) = run(&keys);
    assert!(
        matches!(a.outcome, KeyOutcome::Found { .. }),
        "{:?}",
        a.outcome
    );
    std::thread::sleep(std::time::Duration::from_millis(100));
    let log = web.access_log();
    let newer: Vec<&str> = log.lines().skip(before).collect();
    let alice_path = &web.user("bob").url[web.user("bob").url.find("/.well-known").unwrap()..];
    assert!(
        newer.first().is_some_and(|l| l.contains(alice_path)),
        "with two slots bob@ is answered first:\n{log}"
    );
}

#[test]
fn a_host_that_timed_out_is_not_asked_again_for_a_while() {
    let dns = DnsEnv::start();
    let web = WebEnv::start(&dns);
    let keys = service(&dns, &web, |c| c.wkd.timeout_ms = 1_500);
    let rt = runtime();
    let any = KeyChoice::any();
    let slow = rt.block_on(keys.resolve(&addr(&web, "slow"), Method::OpenPgp, &any));
    assert!(
        matches!(slow.outcome, KeyOutcome::Failed(FailReason::Timeout)),
        "{:?}",
        slow.outcome
    );
    // Another address on the same host: failed at once, not asked.
    let alice = rt.block_on(keys.resolve(&addr(&web, "alice"), Method::OpenPgp, &any));
    assert!(
        matches!(&alice.outcome, KeyOutcome::Failed(FailReason::Network(why))
            if why.contains("openpgpkey.wkd.autoencrypt.test:443 failed 1 s ago (no answer within wkd.timeout_ms)")
                || why.contains("openpgpkey.wkd.autoencrypt.test:443 failed 0 s ago (no answer within wkd.timeout_ms)")),
        "{:?}",
        alice.outcome
    );
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(requests(&web, "alice"), 0, "{}", web.access_log());
    // A host whose TLS handshake never completes, likewise.
    let hang = rt.block_on(keys.resolve(&addr(&web, "hang"), Method::OpenPgp, &any));
    assert!(
        matches!(hang.outcome, KeyOutcome::Failed(_)),
        "{:?}",
        hang.outcome
    );
    let again = Address::parse("other@hang.autoencrypt.test").unwrap();
    let again = rt.block_on(keys.resolve(&again, Method::OpenPgp, &any));
    assert!(
        matches!(&again.outcome, KeyOutcome::Failed(FailReason::Network(why)) if why.contains("not asked again")),
        "{:?}",
        again.outcome
    );
}

/// Awaits all of `futs` concurrently, in order (no futures crate here).
async fn futures_join_all<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futs {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<F::Output>> = (0..set.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(Option::unwrap).collect()
}
