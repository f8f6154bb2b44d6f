#![allow(missing_docs, reason = "criterion macros generate undocumented items")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "benchmark set-up: a failure should stop the run"
)]
//! What an LDAP lookup costs on the RCPT path, against a real slapd
//! (tests/env/ldap-up): a cold lookup (a fresh key service per
//! iteration: TCP connect, simple bind, search, entry read, certificate
//! parsed and validated), a search on the pooled connection (nothing
//! cached: the cost every lookup pays with `cache_ttl_secs = 0`), and a
//! warm one (the cached answer and the validation cache). Needs root and
//! slapd, like the tests. Results go into BENCHMARKS.md.

#[path = "../tests/env/ldap.rs"]
mod ldap;

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};

use autoencrypt_milter::config::{Config, LdapConfig};
use autoencrypt_milter::keys::{KeyChoice, KeyService, SourceKind};
use autoencrypt_milter::policy::KeyOutcome;
use autoencrypt_milter::{Address, Method, Registry};

fn service(l: &ldap::LdapEnv, cache_ttl_secs: u64) -> KeyService {
    let mut config = Config::default();
    config.wkd.enabled = false;
    config.ldap = vec![LdapConfig {
        url: l.ldap_url().to_owned(),
        domains: vec![l.domain().to_owned()],
        base: l.people_base().to_owned(),
        bind_dn: l.bind_dn().to_owned(),
        bind_password_file: Some(l.password_file()),
        cache_ttl_secs,
        ..LdapConfig::default()
    }];
    KeyService::from_config_only(
        &config,
        &[SourceKind::Ldap],
        Arc::new(Registry::new()),
        None,
    )
    .unwrap()
}

fn bench(c: &mut Criterion) {
    let l = ldap::LdapEnv::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let one = Address::parse(&l.user("one").address).unwrap();
    let any = KeyChoice::any();
    let found = |keys: &KeyService| {
        let out = rt.block_on(keys.resolve(&one, Method::Smime, &any));
        assert!(
            matches!(&out.outcome, KeyOutcome::Found { usable, .. } if usable.len() == 1),
            "{:?}",
            out.outcome
        );
    };
    let mut g = c.benchmark_group("ldap");
    g.sample_size(20);
    g.bench_function(
        "cold lookup (connect, bind, search, parse, validate)",
        |b| {
            // The service is built outside the timing: at start and on reload.
            b.iter_batched(
                || service(&l, 300),
                |keys| found(black_box(&keys)),
                BatchSize::PerIteration,
            );
        },
    );
    let pooled = service(&l, 0);
    found(&pooled);
    g.bench_function("search on the pooled connection (nothing cached)", |b| {
        b.iter(|| found(black_box(&pooled)));
    });
    let warm = service(&l, 300);
    found(&warm);
    g.bench_function("warm lookup (cached answer)", |b| {
        b.iter(|| found(black_box(&warm)));
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
