//! Key discovery against a real DNSSEC environment (tests/env: nsd serving
//! offline-signed zones, unbound validating), in both `dns.mode`s: every
//! zone case, a resolver that is not listening, SERVFAIL, the cache, the
//! `lookup` command, and keys found in DNS used to encrypt and decrypted by
//! openssl and gpg.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

#[path = "env/mod.rs"]
mod env;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use autoencrypt_milter::Address;
use autoencrypt_milter::backend::{EncryptOptions, Method, Recipient, Registry, RejectReason};
use autoencrypt_milter::config::DnsMode;
use autoencrypt_milter::keys::dns::{DnsSettings, DnsSource};
use autoencrypt_milter::keys::{FailReason, KeySource, Lookup, Security};
use autoencrypt_milter::message::Message;
use autoencrypt_milter::message::{apply_edits, inner_entity, write_header};
use autoencrypt_milter::pipeline::{Prepared, prepare};
use autoencrypt_milter::policy::KeyOutcome;
use env::DnsEnv;

const TIMEOUT: Duration = Duration::from_millis(2000);

/// A source for `mode`. `validate` asks nsd directly, so that the
/// in-process validator — not unbound — judges every signature; `trust-ad`
/// asks unbound and believes its AD bit.
fn source(env: &DnsEnv, mode: DnsMode, tweak: impl FnOnce(&mut DnsSettings)) -> DnsSource {
    let mut s = DnsSettings {
        mode,
        resolvers: vec![match mode {
            DnsMode::Validate => env.nsd(),
            DnsMode::TrustAd => env.resolver(),
        }],
        trust_anchor: Some(env.trust_anchor_dnskeys()),
        timeout: TIMEOUT,
        allow_insecure: false,
        lowercase_fallback: true,
    };
    tweak(&mut s);
    DnsSource::new(s).expect("DNS source")
}

fn addr(s: &str) -> Address {
    Address::parse(s).unwrap()
}

async fn outcome(src: &DnsSource, who: &str, method: Method) -> KeyOutcome<Recipient> {
    let a = addr(who);
    let lookup = src.lookup(&a, method).await;
    let registry = Registry::new();
    KeyOutcome::from_lookup(lookup, |k| {
        registry.get(method).validate(k, &a, SystemTime::now())
    })
}

fn usable(o: &KeyOutcome<Recipient>) -> usize {
    match o {
        KeyOutcome::Found {
            usable, security, ..
        } => {
            assert_eq!(*security, Security::Secure, "{o:?}");
            usable.len()
        }
        other => panic!("expected keys, got {other:?}"),
    }
}

fn rejected(o: &KeyOutcome<Recipient>) -> Vec<RejectReason> {
    match o {
        KeyOutcome::Found {
            usable, rejected, ..
        } => {
            assert!(usable.is_empty(), "{o:?}");
            rejected.iter().map(|r| r.reason.clone()).collect()
        }
        other => panic!("expected refused keys, got {other:?}"),
    }
}

fn is_not_found(o: &KeyOutcome<Recipient>) -> bool {
    matches!(o, KeyOutcome::NotFound)
}

/// In `validate` mode hickory sees the broken signature itself (Bogus); in
/// `trust-ad` mode unbound answers SERVFAIL. Either way: never "no key".
fn is_bogus_for(mode: DnsMode, o: &KeyOutcome<Recipient>) -> bool {
    match mode {
        DnsMode::Validate => matches!(o, KeyOutcome::Bogus(_)),
        DnsMode::TrustAd => matches!(o, KeyOutcome::Failed(FailReason::ServFail)),
    }
}

/// Every zone case, in one mode.
async fn every_case(mode: DnsMode) {
    let env = DnsEnv::start();
    let src = source(&env, mode, |_| {});
    let z = env.zone().trim_end_matches('.').to_owned();
    let at = |local: &str| format!("{local}@{z}");

    // both@: each record type, secure, usable.
    assert_eq!(usable(&outcome(&src, &at("both"), Method::Smime).await), 1);
    assert_eq!(
        usable(&outcome(&src, &at("both"), Method::OpenPgp).await),
        1
    );
    // Only one of the two.
    assert_eq!(usable(&outcome(&src, &at("smime"), Method::Smime).await), 1);
    assert!(is_not_found(
        &outcome(&src, &at("smime"), Method::OpenPgp).await
    ));
    assert_eq!(
        usable(&outcome(&src, &at("smimeec"), Method::Smime).await),
        1
    );
    assert_eq!(usable(&outcome(&src, &at("pgp"), Method::OpenPgp).await), 1);
    assert!(is_not_found(
        &outcome(&src, &at("pgp"), Method::Smime).await
    ));
    // RSA OpenPGP key: the answer is truncated over UDP and needs TCP.
    assert_eq!(
        usable(&outcome(&src, &at("pgprsa"), Method::OpenPgp).await),
        1
    );
    // None: authenticated denial.
    assert!(is_not_found(
        &outcome(&src, &at("none"), Method::Smime).await
    ));
    assert!(is_not_found(
        &outcome(&src, &at("none"), Method::OpenPgp).await
    ));
    // Hash-only SMIMEA: present, but no certificate to encrypt to.
    let r = rejected(&outcome(&src, &at("hashonly"), Method::Smime).await);
    assert!(
        matches!(r.as_slice(), [RejectReason::UnusableRecord(_)]),
        "{r:?}"
    );
    // Expired certificate: DNS is fine, the key is refused.
    let r = rejected(&outcome(&src, &at("expired"), Method::Smime).await);
    assert!(matches!(r.as_slice(), [RejectReason::Expired(_)]), "{r:?}");
    // Changed after signing: bogus, never "no key".
    for m in Method::ALL {
        let o = outcome(&src, &at("bogus"), m).await;
        assert!(is_bogus_for(mode, &o), "{mode:?} bogus@ {m}: {o:?}");
    }
    // Expired signatures in a signed child zone.
    let o = outcome(&src, &format!("x@expiredsig.{z}"), Method::Smime).await;
    assert!(is_bogus_for(mode, &o), "{mode:?} expiredsig: {o:?}");
    // Unsigned child zone: insecure, keys not used.
    for m in Method::ALL {
        let o = outcome(&src, &format!("y@unsigned.{z}"), m).await;
        assert!(
            matches!(o, KeyOutcome::Insecure),
            "{mode:?} unsigned {m}: {o:?}"
        );
    }
    // Only fits over TCP.
    assert_eq!(usable(&outcome(&src, &at("tcp"), Method::Smime).await), 1);
    // RFC 7929 §3: Upper@ has records only under hash("upper").
    assert_eq!(usable(&outcome(&src, &at("Upper"), Method::Smime).await), 1);
    assert_eq!(
        usable(&outcome(&src, &at("Upper"), Method::OpenPgp).await),
        1
    );
    let strict = source(&env, mode, |s| s.lowercase_fallback = false);
    assert!(is_not_found(
        &outcome(&strict, &at("Upper"), Method::Smime).await
    ));
    // allow_insecure: the unsigned zone's keys are used, marked insecure.
    let lax = source(&env, mode, |s| s.allow_insecure = true);
    match outcome(&lax, &format!("y@unsigned.{z}"), Method::Smime).await {
        KeyOutcome::Found {
            security, usable, ..
        } => {
            assert_eq!(security, Security::Insecure);
            assert_eq!(usable.len(), 1);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_case_validate_mode() {
    every_case(DnsMode::Validate).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_case_trust_ad_mode() {
    every_case(DnsMode::TrustAd).await;
}

/// SERVFAIL from the validating resolver (the lame zone's only server
/// refuses), in both modes: a failure, never "no key".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servfail_is_a_failure() {
    let env = DnsEnv::start();
    let z = env.zone().trim_end_matches('.').to_owned();
    for mode in [DnsMode::Validate, DnsMode::TrustAd] {
        // Both modes through unbound here: SERVFAIL is the resolver's word.
        let src = source(&env, mode, |s| s.resolvers = vec![env.resolver()]);
        let o = outcome(&src, &format!("z@lame.{z}"), Method::Smime).await;
        assert!(
            matches!(o, KeyOutcome::Failed(FailReason::ServFail)),
            "{mode:?}: {o:?}"
        );
    }
}

/// Nothing listening: Failed within about `timeout_ms`, in both modes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolver_not_listening_fails_within_the_timeout() {
    let env = DnsEnv::start();
    let dead: SocketAddr = env.unused_addr();
    for mode in [DnsMode::Validate, DnsMode::TrustAd] {
        let src = source(&env, mode, |s| {
            s.resolvers = vec![dead];
            s.timeout = Duration::from_millis(500);
        });
        let started = Instant::now();
        let o = outcome(&src, "both@autoencrypt.test", Method::Smime).await;
        let took = started.elapsed();
        assert!(matches!(o, KeyOutcome::Failed(_)), "{mode:?}: {o:?}");
        // The bound is the timeout plus scheduling slack, not a benchmark.
        assert!(
            took < Duration::from_millis(500 + 1500),
            "{mode:?} took {took:?}"
        );
    }
}

/// The second lookup is answered from the cache: no query reaches the
/// resolver (unbound's own counter agrees), and concurrent lookups of one
/// name share a single query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_and_shared_in_flight_queries() {
    let env = DnsEnv::start();
    let src = Arc::new(source(&env, DnsMode::TrustAd, |_| {}));
    let both = addr("both@autoencrypt.test");
    assert!(matches!(
        src.lookup(&both, Method::Smime).await,
        Lookup::Found { .. }
    ));
    assert_eq!(src.queries_sent(), 1);
    let unbound_before = env.unbound_queries();
    assert!(matches!(
        src.lookup(&both, Method::Smime).await,
        Lookup::Found { .. }
    ));
    assert_eq!(
        src.queries_sent(),
        1,
        "second lookup must come from the cache"
    );
    assert_eq!(env.unbound_queries(), unbound_before, "unbound saw a query");

    // Negative answers are cached too.
    let none = addr("none@autoencrypt.test");
    assert!(matches!(
        src.lookup(&none, Method::OpenPgp).await,
        Lookup::NotFound
    ));
    let after_first = src.queries_sent();
    assert!(matches!(
        src.lookup(&none, Method::OpenPgp).await,
        Lookup::NotFound
    ));
    assert_eq!(src.queries_sent(), after_first);

    // Ten concurrent lookups of a name not yet asked: one query.
    let before = src.queries_sent();
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let src = src.clone();
            tokio::spawn(async move {
                let pgp = addr("pgp@autoencrypt.test");
                src.lookup(&pgp, Method::OpenPgp).await
            })
        })
        .collect();
    for t in tasks {
        assert!(matches!(t.await.unwrap(), Lookup::Found { .. }));
    }
    assert_eq!(src.queries_sent(), before + 1);
}

fn decrypt_smime(smime: &[u8], cert: &std::path::Path, key: &std::path::Path) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.eml");
    std::fs::write(&p, smime).unwrap();
    let out = Command::new("openssl")
        .args(["cms", "-decrypt", "-inform", "SMIME", "-binary", "-in"])
        .arg(&p)
        .arg("-recip")
        .arg(cert)
        .arg("-inkey")
        .arg(key)
        .output()
        .expect("openssl must be installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn decrypt_pgp(message: &[u8], gnupghome: &std::path::Path) -> Vec<u8> {
    let text = String::from_utf8_lossy(message);
    let start = text.find("-----BEGIN PGP MESSAGE-----").expect("armor");
    let end = text.find("-----END PGP MESSAGE-----").expect("armor end") + 25;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("m.asc");
    let output = dir.path().join("m.out");
    std::fs::write(&input, &text[start..end]).unwrap();
    let out = Command::new("gpg")
        .env("GNUPGHOME", gnupghome)
        .args([
            "--batch",
            "--yes",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
            "--decrypt",
            "--output",
        ])
        .arg(&output)
        .arg(&input)
        .output()
        .expect("gpg must be installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(&output).unwrap()
}

/// Keys found in DNS encrypt a message that openssl and gpg decrypt back
/// to the inner entity, byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_from_dns_encrypt_and_decrypt() {
    let env = DnsEnv::start();
    let raw = b"From: a@example.net\r\nTo: both@autoencrypt.test\r\nSubject: dns\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nGr\xc3\xbc\xc3\x9fe aus dem DNS\r\n";
    let msg = Message::parse(raw);
    let body = &raw[msg.body_offset..];
    let expected = inner_entity(&msg.headers, body);
    let registry = Registry::new();
    for mode in [DnsMode::Validate, DnsMode::TrustAd] {
        let src = source(&env, mode, |_| {});
        for (who, method) in [
            ("both", Method::Smime),
            ("smimeec", Method::Smime),
            ("pgp", Method::OpenPgp),
            ("both", Method::OpenPgp),
        ] {
            let user = env.user(who);
            let KeyOutcome::Found { usable, .. } = outcome(&src, &user.address, method).await
            else {
                panic!("{who} {method}: no key");
            };
            let Prepared::Encrypted { edits, entity } = prepare(
                &msg.headers,
                body,
                registry.get(method),
                &usable,
                &EncryptOptions::default(),
            )
            .unwrap() else {
                panic!("plain message classified as encrypted");
            };
            let mut headers = msg.headers.clone();
            apply_edits(&mut headers, &edits, msg.eol);
            let mut out = Vec::new();
            write_header(&headers, msg.eol, &mut out).unwrap();
            entity.body.write_to(msg.eol, &mut out).unwrap();
            let decrypted = match method {
                Method::Smime => decrypt_smime(
                    &out,
                    user.cert.as_ref().unwrap(),
                    user.key.as_ref().unwrap(),
                ),
                Method::OpenPgp => decrypt_pgp(&out, user.gnupghome.as_ref().unwrap()),
            };
            assert_eq!(decrypted, expected, "{mode:?} {who} {method}");
        }
    }
}

fn lookup_cli(env: &DnsEnv, mode: &str, addrs: &[&str]) -> (i32, String) {
    lookup_cli_with(env, mode, addrs, None)
}

/// `lookup` with `SSL_CERT_FILE` (OpenSSL's default trust store) set.
fn lookup_cli_with(
    env: &DnsEnv,
    mode: &str,
    addrs: &[&str],
    trust_store: Option<&std::path::Path>,
) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    let server = if mode == "validate" {
        env.nsd()
    } else {
        env.resolver()
    };
    std::fs::write(
        &cfg,
        format!(
            // DNS is what these tests look at: the web sources (whose
            // hosts in the test zone are on loopback) are off.
            "policy_dir = {:?}\n[dns]\nmode = {mode:?}\nresolvers = [\"{server}\"]\ntrust_anchor = {:?}\ntimeout_ms = 2000\n[wkd]\nenabled = false\n",
            dir.path().display().to_string(),
            env.trust_anchor_dnskeys().display().to_string()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_autoencrypt-milter"));
    cmd.arg("--config").arg(&cfg).arg("lookup").args(addrs);
    if let Some(store) = trust_store {
        cmd.env("SSL_CERT_FILE", store);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// `lookup` prints owner names, status and key facts; exit 0 found,
/// 1 not found, 2 could not complete.
#[test]
fn lookup_command_reports_and_exits_by_outcome() {
    let env = DnsEnv::start();
    for mode in ["validate", "trust-ad"] {
        let both = env.user("both");
        let (code, out) = lookup_cli(&env, mode, &[&both.address]);
        assert_eq!(code, 0, "{mode}: {out}");
        assert!(
            out.contains(both.smimea_owner.trim_end_matches('.')),
            "{out}"
        );
        assert!(
            out.contains(both.openpgpkey_owner.trim_end_matches('.')),
            "{out}"
        );
        assert!(out.contains("DNSSEC secure"), "{out}");
        assert!(out.contains("usable: SMIMEA 3 0 0"), "{out}");
        assert!(out.contains("RSA 2048"), "{out}");
        assert!(out.contains("usable: OPENPGPKEY"), "{out}");

        let (code, out) = lookup_cli(&env, mode, &["none@autoencrypt.test"]);
        assert_eq!(code, 1, "{mode}: {out}");
        assert!(out.contains("authenticated denial"), "{out}");

        let (code, out) = lookup_cli(&env, mode, &["expired@autoencrypt.test"]);
        assert_eq!(code, 1, "{mode}: {out}");
        assert!(
            out.contains("not usable") && out.contains("expired"),
            "{out}"
        );

        let (code, out) = lookup_cli(&env, mode, &["hashonly@autoencrypt.test"]);
        assert_eq!(code, 1, "{mode}: {out}");
        assert!(
            out.contains("record present, no usable certificate"),
            "{out}"
        );

        // One address that cannot be looked up makes the whole run 2.
        let (code, out) = lookup_cli(&env, mode, &[&both.address, "bogus@autoencrypt.test"]);
        assert_eq!(code, 2, "{mode}: {out}");
    }
}

/// SMIMEA usage 1 (PKIX-EE): the certificate is used only when it also
/// verifies against the system trust store (here OpenSSL's default store,
/// pointed at the test CA with `SSL_CERT_FILE`).
#[test]
fn pkix_ee_needs_a_trusted_chain() {
    let env = DnsEnv::start();
    let ca = env.dir().join("users/pkix/ca.pem");
    let empty = env.dir().join("empty-store.pem");
    std::fs::write(&empty, "").unwrap();
    for mode in ["validate", "trust-ad"] {
        let (code, out) = lookup_cli_with(&env, mode, &["pkix@autoencrypt.test"], Some(&ca));
        assert_eq!(code, 0, "{mode}: {out}");
        assert!(out.contains("usable: SMIMEA 1 0 0"), "{out}");
        // The same record without the CA in the store: refused.
        let (code, out) = lookup_cli_with(&env, mode, &["pkix@autoencrypt.test"], Some(&empty));
        assert_eq!(code, 1, "{mode}: {out}");
        assert!(
            out.contains("PKIX-EE certificate does not chain to a trusted CA"),
            "{out}"
        );
        // Self-signed under usage 1: never trusted.
        let (code, out) = lookup_cli_with(&env, mode, &["pkixself@autoencrypt.test"], Some(&ca));
        assert_eq!(code, 1, "{mode}: {out}");
        assert!(
            out.contains("PKIX-EE certificate does not chain to a trusted CA"),
            "{out}"
        );
    }
}

/// `record` prints what the test zone publishes: the same owner name and
/// the same certificate.
#[test]
fn record_command_matches_the_zone() {
    let env = DnsEnv::start();
    let both = env.user("both");
    let out = Command::new(env!("CARGO_BIN_EXE_autoencrypt-milter"))
        .arg("record")
        .arg("--smimea")
        .arg(both.cert.as_ref().unwrap())
        .arg(&both.address)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let der = std::fs::read(both.cert_der.as_ref().unwrap()).unwrap();
    let hex: String = der.iter().map(|b| format!("{b:02X}")).collect();
    assert!(
        text.contains(&format!("{} IN SMIMEA 3 0 0 {hex}", both.smimea_owner)),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "{} IN TYPE53 \\# {} 030000{hex}",
            both.smimea_owner,
            der.len() + 3
        )),
        "{text}"
    );
    let dig = Command::new("dig")
        .arg(format!("@{}", env.nsd().ip()))
        .args(["-p", &env.nsd().port().to_string(), "+short", "+tcp"])
        .arg(&both.smimea_owner)
        .arg("SMIMEA")
        .output()
        .expect("dig must be installed");
    let served: String = String::from_utf8_lossy(&dig.stdout)
        .split_whitespace()
        .skip(3)
        .collect::<String>()
        .to_uppercase();
    assert_eq!(served, hex, "the zone serves what `record` prints");

    let pgp = env.user("pgp");
    let out = Command::new(env!("CARGO_BIN_EXE_autoencrypt-milter"))
        .arg("record")
        .arg("--openpgpkey")
        .arg(pgp.pgp_public.as_ref().unwrap())
        .arg(&pgp.address)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("{} IN OPENPGPKEY ", pgp.openpgpkey_owner)),
        "{text}"
    );
    assert!(
        text.contains(&format!("{} IN TYPE61 \\# ", pgp.openpgpkey_owner)),
        "{text}"
    );
}
