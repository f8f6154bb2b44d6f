//! Attacks on the `ldap` key source (issue 13), each with one defined
//! outcome — found with the right keys, not found, or a failure with a
//! reason — never merely "no panic":
//!
//! * `answers`: a hostile directory (scripted in-process server):
//!   references and referrals, answers under wrong message ids, late
//!   answers, odd attribute descriptions, PEM and DER, PKCS#7 bags, huge
//!   DNs, many values.
//! * `network`: a broken network or server (closing before the bind
//!   answer or on the first search, a reset mid-entry, a busy bind, a
//!   TLS certificate for another host), and many lookups at once against
//!   a slow or a down directory.
//! * `senders`: hostile recipient spellings (filter metacharacters,
//!   quoting, Unicode, length, domain spellings and `domains` patterns).
//! * `directory`: a real slapd (tests/env/ldap.rs): the same key twice,
//!   two directories at different trust, entries claiming another user's
//!   address, IDN spellings.
//!
//! Nine of these found bugs when they were written (the same key in two
//! encodings, an unbounded PKCS#7 bag, the DN in every origin, a busy
//! bind held like a wrong password, one connection attempt per slot, a
//! U-label address never found); each passes since its fix.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

#[path = "env/ldap.rs"]
mod ldap;

#[path = "ldap_attack/answers.rs"]
mod answers;
#[path = "ldap_attack/certs.rs"]
mod certs;
#[path = "ldap_attack/directory.rs"]
mod directory;
#[path = "ldap_attack/network.rs"]
mod network;
#[path = "ldap_attack/senders.rs"]
mod senders;
#[path = "ldap_attack/server.rs"]
mod server;

use std::sync::Arc;
use std::time::Duration;

use autoencrypt_milter::backend::{Recipient, RejectReason};
use autoencrypt_milter::config::{Config, LdapConfig};
use autoencrypt_milter::keys::{KeyChoice, KeyService, SourceKind};
use autoencrypt_milter::policy::KeyOutcome;
use autoencrypt_milter::{Address, Method, Registry};

/// The per-operation timeout of directories served in-process.
const TIMEOUT_MS: u64 = 800;

/// The test's bound for anything that must end within the timeouts.
fn bound() -> Duration {
    Duration::from_millis(TIMEOUT_MS * 3)
}

/// A directory on 127.0.0.1:`port` for `example.org`, anonymous, nothing
/// cached (each lookup searches).
fn dir(port: u16) -> LdapConfig {
    LdapConfig {
        url: format!("ldap://127.0.0.1:{port}"),
        domains: vec!["example.org".to_owned()],
        base: "dc=test".to_owned(),
        timeout_ms: TIMEOUT_MS,
        connect_timeout_ms: 500,
        cache_ttl_secs: 0,
        negative_ttl_secs: 0,
        ..LdapConfig::default()
    }
}

/// `c` with a simple bind (the password file lives as long as the
/// returned directory).
fn with_bind(c: LdapConfig) -> (LdapConfig, tempfile::TempDir) {
    let d = tempfile::tempdir().unwrap();
    let pw = d.path().join("pw");
    std::fs::write(&pw, "secret-password\n").unwrap();
    (
        LdapConfig {
            bind_dn: "cn=milter,dc=test".to_owned(),
            bind_password_file: Some(pw),
            ..c
        },
        d,
    )
}

/// A configuration with `dirs` as its only key sources besides DNS
/// (which no lookup here asks).
fn config(dirs: Vec<LdapConfig>) -> Config {
    let mut c = Config::default();
    c.wkd.enabled = false;
    c.dns.resolvers = vec!["127.0.0.1:9".parse().unwrap()];
    c.ldap = dirs;
    c
}

fn service(dirs: Vec<LdapConfig>) -> KeyService {
    KeyService::from_config(&config(dirs), Arc::new(Registry::new()), None).unwrap()
}

fn only_ldap() -> KeyChoice {
    KeyChoice {
        sources: Some(vec![SourceKind::Ldap]),
        ..KeyChoice::any()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn resolve_with(
    rt: &tokio::runtime::Runtime,
    keys: &KeyService,
    addr: &str,
    method: Method,
    choice: &KeyChoice,
) -> KeyOutcome<Recipient> {
    let a = Address::parse(addr).unwrap();
    rt.block_on(keys.resolve(&a, method, choice)).outcome
}

fn resolve(rt: &tokio::runtime::Runtime, keys: &KeyService, addr: &str) -> KeyOutcome<Recipient> {
    resolve_with(rt, keys, addr, Method::Smime, &only_ldap())
}

/// The usable keys' fingerprints, sorted (duplicates kept); panics on an
/// outcome without keys.
fn usable(o: &KeyOutcome<Recipient>) -> Vec<String> {
    match o {
        KeyOutcome::Found { usable, .. } => {
            let mut f: Vec<String> = usable.iter().map(|r| r.fingerprint.clone()).collect();
            f.sort();
            f
        }
        other => panic!("no keys: {other:?}"),
    }
}

fn rejected(o: &KeyOutcome<Recipient>) -> Vec<RejectReason> {
    match o {
        KeyOutcome::Found { rejected, .. } => rejected.iter().map(|r| r.reason.clone()).collect(),
        other => panic!("no keys: {other:?}"),
    }
}

fn failed(o: &KeyOutcome<Recipient>) -> String {
    match o {
        KeyOutcome::Failed(why) => why.to_string(),
        other => panic!("expected a failure, got {other:?}"),
    }
}

fn not_found(o: &KeyOutcome<Recipient>) {
    assert!(
        matches!(o, KeyOutcome::NotFound),
        "expected no entry: {o:?}"
    );
}
