#![allow(missing_docs, reason = "criterion macros generate undocumented items")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "benchmark set-up: a failure should stop the run"
)]
//! What a WKD lookup costs on the thread that answers the MTA, against
//! the real test environment (nsd with the signed zone, nginx with the
//! test CA, tests/env): a cold lookup (a fresh key service per iteration:
//! A/AAAA through nsd with in-process DNSSEC validation, TCP, TLS, GET,
//! the key parsed and validated) and a warm one (the cached answer and the
//! validation cache). Needs root and nginx, like the tests. Results go
//! into BENCHMARKS.md.

#[path = "../tests/env/mod.rs"]
mod env;
#[path = "../tests/env/web.rs"]
mod web;

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};

use autoencrypt_milter::config::{Config, DnsMode};
use autoencrypt_milter::keys::{KeyChoice, KeyService, SourceKind};
use autoencrypt_milter::policy::KeyOutcome;
use autoencrypt_milter::{Address, Method, Registry};

fn service(dns: &env::DnsEnv, web: &web::WebEnv) -> KeyService {
    let mut config = Config::default();
    config.dns.mode = DnsMode::Validate;
    config.dns.resolvers = vec![dns.nsd()];
    config.dns.trust_anchor = Some(dns.trust_anchor_dnskeys());
    config.wkd.ca_file = Some(web.ca_file());
    config.wkd.allow_private_addresses = true;
    KeyService::from_config_only(&config, &[SourceKind::Wkd], Arc::new(Registry::new()), None)
        .unwrap()
}

fn bench(c: &mut Criterion) {
    let dns = env::DnsEnv::start();
    let web = web::WebEnv::start(&dns);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let alice = Address::parse(&web.user("alice").address).unwrap();
    let any = KeyChoice::any();
    let found = |keys: &KeyService| {
        let out = rt.block_on(keys.resolve(&alice, Method::OpenPgp, &any));
        assert!(
            matches!(&out.outcome, KeyOutcome::Found { usable, .. } if usable.len() == 1),
            "{:?}",
            out.outcome
        );
    };
    let mut g = c.benchmark_group("wkd");
    g.sample_size(20);
    g.bench_function("cold lookup (DNS, TLS, GET, parse, validate)", |b| {
        // The service (resolver set-up, trust stores) is built outside the
        // timing: it happens at start and on reload, not per lookup.
        b.iter_batched(
            || service(&dns, &web),
            |keys| found(black_box(&keys)),
            BatchSize::PerIteration,
        );
    });
    let warm = service(&dns, &web);
    found(&warm);
    g.bench_function("warm lookup (cached answer)", |b| {
        b.iter(|| found(black_box(&warm)));
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
