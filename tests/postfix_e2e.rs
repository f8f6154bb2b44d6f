//! End to end: a real Postfix (tests/env/postfix-up) with `smtpd_milters`
//! pointing at the milter, keys in the real DNSSEC environment, in both DNS
//! modes. Every delivered encrypted message is decrypted with openssl or gpg
//! and compared byte for byte with the inner entity of what was sent.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod common;
#[path = "env/mod.rs"]
mod env;
#[path = "env/milter.rs"]
mod milter;
#[path = "env/postfix.rs"]
mod postfix;

use std::net::SocketAddr;
use std::time::Duration;

use autoencrypt_milter::config::DnsMode;
use common::{Gpg, Scratch, SmimeId, expected_protected_entity, smime_decrypt};
use env::DnsEnv;
use milter::InProcessMilter;
use postfix::{PostfixEnv, header_and_body, lf, strip_delivery_headers};

const WAIT: Duration = Duration::from_secs(30);

const POLICY: &str = r#"
[[rule]]
name = "required for the strict desk"
recipient = ["strict@autoencrypt.test"]
mode = "required"
on_missing_key = "reject"
"#;

/// The milter on its own runtime thread, in `mode` against `resolver`.
fn milter(env: &DnsEnv, mode: DnsMode, resolver: SocketAddr) -> InProcessMilter {
    InProcessMilter::trust_ad_on_thread(resolver, POLICY, |config| {
        config.dns.mode = mode;
        config.dns.trust_anchor = Some(env.trust_anchor_dnskeys());
    })
}

/// The server for `mode`: in `validate` mode the milter asks nsd and
/// validates itself; in `trust-ad` mode it asks unbound.
fn resolver_for(env: &DnsEnv, mode: DnsMode) -> SocketAddr {
    match mode {
        DnsMode::Validate => env.nsd(),
        DnsMode::TrustAd => env.resolver(),
    }
}

fn message(to: &str, body: &str) -> Vec<u8> {
    format!(
        "From: sender@example.net\r\nTo: {to}\r\nSubject: through postfix\r\nMessage-ID: <{}@example.net>\r\nDate: Sun, 22 Nov 2026 07:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{body}",
        to.replace('@', ".")
    )
    .into_bytes()
}

enum Got {
    Smime(Vec<u8>),
    Pgp(Vec<u8>),
    Plain(Vec<u8>),
}

/// What a delivered message is, with the part that matters.
fn classify(delivered: &[u8]) -> Got {
    let msg = strip_delivery_headers(delivered);
    let (header, body) = header_and_body(msg);
    let header = String::from_utf8_lossy(header).to_ascii_lowercase();
    if header.contains("application/pkcs7-mime") {
        let b64: String = String::from_utf8_lossy(body)
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        Got::Smime(openssl::base64::decode_block(&b64).expect("base64 body"))
    } else if header.contains("multipart/encrypted") {
        let text = String::from_utf8_lossy(body);
        let start = text.find("-----BEGIN PGP MESSAGE-----").expect("armor");
        let end = text.find("-----END PGP MESSAGE-----").expect("armor end") + 25;
        Got::Pgp(text[start..end].as_bytes().to_vec())
    } else {
        Got::Plain(msg.to_vec())
    }
}

fn smime_id(env: &DnsEnv, user: &str) -> SmimeId {
    let u = env.user(user);
    SmimeId::from_files(u.cert.as_ref().unwrap(), u.key.as_ref().unwrap())
}

fn assert_smime(env: &DnsEnv, user: &str, delivered: &[u8], sent: &[u8]) {
    match classify(delivered) {
        Got::Smime(der) => {
            let plain = smime_decrypt(&Scratch::new(), &der, "DER", &smime_id(env, user)).unwrap();
            assert_eq!(
                plain,
                expected_protected_entity(sent),
                "{user}: decrypted entity differs"
            );
        }
        _ => panic!(
            "{user}: expected S/MIME, got:\n{}",
            String::from_utf8_lossy(delivered)
        ),
    }
}

fn assert_pgp(env: &DnsEnv, user: &str, delivered: &[u8], sent: &[u8]) {
    match classify(delivered) {
        Got::Pgp(armored) => {
            let gpg = Gpg::new();
            gpg.import(&std::fs::read(env.user(user).pgp_secret.as_ref().unwrap()).unwrap());
            assert_eq!(
                gpg.decrypt(&armored).unwrap(),
                expected_protected_entity(sent),
                "{user}: decrypted entity differs"
            );
        }
        _ => panic!(
            "{user}: expected PGP/MIME, got:\n{}",
            String::from_utf8_lossy(delivered)
        ),
    }
}

fn assert_plain(delivered: &[u8], sent: &[u8]) {
    match classify(delivered) {
        Got::Plain(m) => assert_eq!(m, lf(sent).as_slice(), "delivered in the clear, unchanged"),
        _ => panic!("expected plaintext"),
    }
}

/// Sends to `rcpts`, retrying recipients deferred with 452 4.5.3 in new
/// transactions as an SMTP client does; returns the replies per recipient
/// of the first transaction.
fn send_with_retries(
    pf: &PostfixEnv,
    rcpts: &[&str],
    raw_for: impl Fn(&[&str]) -> Vec<u8>,
) -> postfix::SmtpOutcome {
    let mut pending: Vec<String> = rcpts.iter().map(|s| (*s).to_owned()).collect();
    let mut first = None;
    for _ in 0..rcpts.len() {
        if pending.is_empty() {
            break;
        }
        let to: Vec<&str> = pending.iter().map(String::as_str).collect();
        let out = pf.send("sender@example.net", &to, &raw_for(&to));
        let deferred: Vec<String> = out
            .rcpts
            .iter()
            .filter(|(_, r)| r.is("452 4.5.3"))
            .map(|(a, _)| a.clone())
            .collect();
        if !out.accepted_rcpts().is_empty() {
            assert!(out.accepted(), "DATA refused: {out}");
        }
        first.get_or_insert(out);
        pending = deferred;
    }
    assert!(pending.is_empty(), "still deferred: {pending:?}");
    first.unwrap()
}

fn every_case(mode: DnsMode) {
    let env = DnsEnv::start();
    let m = milter(&env, mode, resolver_for(&env, mode));
    let pf = PostfixEnv::start(Some(m.addr));

    // SMIMEA → S/MIME; OPENPGPKEY only → PGP/MIME; both → the rule's first.
    for (user, kind) in [("smime", "smime"), ("pgp", "pgp"), ("both", "smime")] {
        let to = format!("{user}@autoencrypt.test");
        let sent = message(&to, "Grüße aus dem Test\r\n");
        let out = pf.send("sender@example.net", &[&to], &sent);
        assert!(out.accepted(), "{mode:?} {to}: {out}");
        let mail = pf.expect_mail(&to, 1, WAIT);
        match kind {
            "smime" => assert_smime(&env, user, &mail[0], &sent),
            _ => assert_pgp(&env, user, &mail[0], &sent),
        }
    }

    // No key, opportunistic: delivered as sent. Unsigned zone: the same.
    for to in ["none@autoencrypt.test", "y-nokey@unsigned.autoencrypt.test"] {
        let sent = message(to, "plain\r\n");
        assert!(pf.send("sender@example.net", &[to], &sent).accepted());
        assert_plain(&pf.expect_mail(to, 1, WAIT)[0], &sent);
    }
    // The unsigned zone's published keys are not used either.
    let y = "y@unsigned.autoencrypt.test";
    let sent = message(y, "insecure zone\r\n");
    assert!(pf.send("sender@example.net", &[y], &sent).accepted());
    assert_plain(&pf.expect_mail(y, 1, WAIT)[0], &sent);

    // Required and no key: 550. Bogus and expired signatures: 451.
    let out = pf.send(
        "sender@example.net",
        &["strict@autoencrypt.test"],
        &message("strict@autoencrypt.test", "x\r\n"),
    );
    assert!(out.rcpt("strict@autoencrypt.test").is("550 5.7.1"), "{out}");
    for to in ["bogus@autoencrypt.test", "x@expiredsig.autoencrypt.test"] {
        let out = pf.send("sender@example.net", &[to], &message(to, "x\r\n"));
        assert!(out.rcpt(to).is("451 4.7.1"), "{mode:?} {to}: {out}");
        assert_eq!(pf.maildir_count(to), 0);
    }

    // Already encrypted (verified gpg-made PGP/MIME): untouched.
    let fixture = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/ciphertext/genuine-pgp-mime.eml"
    ))
    .unwrap();
    let enc = common::to_crlf(
        String::from_utf8(fixture)
            .unwrap()
            .replacen("Subject: fixture", "Subject: pre-encrypted", 1)
            .as_bytes(),
    );
    let to = "smime@autoencrypt.test";
    let before = pf.maildir_count(to);
    assert!(pf.send("sender@example.net", &[to], &enc).accepted());
    let mail = pf.expect_mail(to, before + 1, WAIT);
    let newest = mail
        .iter()
        .find(|m| String::from_utf8_lossy(m).contains("pre-encrypted"))
        .expect("pre-encrypted message delivered");
    assert_eq!(strip_delivery_headers(newest), lf(&enc).as_slice());

    // Mixed recipients: S/MIME, OpenPGP and plaintext in one submission. The
    // 452 split makes the client send each group separately; every
    // recipient gets exactly one copy, decryptable with its own key.
    let rcpts = [
        "smimeec@autoencrypt.test",
        "pgprsa@autoencrypt.test",
        "none@autoencrypt.test",
    ];
    let none_before = pf.maildir_count("none@autoencrypt.test");
    let body = "mixed recipients\r\n";
    let out = send_with_retries(&pf, &rcpts, |_| message("undisclosed-recipients:;", body));
    assert!(out.rcpt("pgprsa@autoencrypt.test").is("452 4.5.3"), "{out}");
    let sent = message("undisclosed-recipients:;", body);
    let ec = pf.expect_mail("smimeec@autoencrypt.test", 1, WAIT);
    assert_eq!(ec.len(), 1);
    assert_smime(&env, "smimeec", &ec[0], &sent);
    let rsa = pf.expect_mail("pgprsa@autoencrypt.test", 1, WAIT);
    assert_eq!(rsa.len(), 1);
    assert_pgp(&env, "pgprsa", &rsa[0], &sent);
    let plain = pf.expect_mail("none@autoencrypt.test", none_before + 1, WAIT);
    assert_eq!(
        plain.len(),
        none_before + 1,
        "exactly one more copy for none@"
    );
    assert!(pf.wait_queue_empty(WAIT), "{}", pf.postqueue());
}

#[test]
fn every_case_through_postfix_validate_mode() {
    every_case(DnsMode::Validate);
}

#[test]
fn every_case_through_postfix_trust_ad_mode() {
    every_case(DnsMode::TrustAd);
}

/// Resolver down: 451 and nothing delivered, nothing queued.
#[test]
fn resolver_down_defers() {
    let env = DnsEnv::start();
    let m = milter(&env, DnsMode::TrustAd, env.unused_addr());
    let pf = PostfixEnv::start(Some(m.addr));
    let to = "smime@autoencrypt.test";
    let out = pf.send("sender@example.net", &[to], &message(to, "x\r\n"));
    assert!(out.rcpt(to).is("451 4.7.1"), "{out}");
    assert!(pf.queue_is_empty());
    assert_eq!(pf.maildir_count(to), 0);
}

/// A 50 MB message is encrypted and decrypts intact.
#[test]
fn fifty_megabytes_through_postfix() {
    let env = DnsEnv::start();
    let m = milter(&env, DnsMode::TrustAd, env.resolver());
    let pf = PostfixEnv::start(Some(m.addr));
    let to = "smime@autoencrypt.test";
    let line = "The quick brown fox jumps over the lazy dog; 0123456789 ABCDEFGHIJKLMNOP\r\n";
    let sent = message(to, &line.repeat(50 * 1024 * 1024 / line.len()));
    assert!(sent.len() > 50 * 1024 * 1024 - 100);
    let out = pf.send("sender@example.net", &[to], &sent);
    assert!(out.accepted(), "{out}");
    let mail = pf.expect_mail(to, 1, Duration::from_secs(120));
    assert_smime(&env, "smime", &mail[0], &sent);
}
