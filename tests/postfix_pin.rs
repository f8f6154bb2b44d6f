//! Pinned fingerprints, end to end: a real Postfix with the milter and the
//! DNSSEC test zone. A rule that pins a fingerprint encrypts only to that
//! key; the key DNSSEC publishes for the address, when it is another one
//! (the key changed since it was pinned), is refused with the rule's
//! outcome and never used.

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

use std::time::Duration;

use autoencrypt_milter::Method;
use autoencrypt_milter::backend::key_fingerprint;
use autoencrypt_milter::config::DnsMode;
use common::{CertSpec, KeyKind, Scratch, SmimeId, expected_protected_entity, smime_decrypt};
use env::DnsEnv;
use milter::InProcessMilter;
use postfix::{PostfixEnv, strip_delivery_headers};

fn message(to: &str) -> Vec<u8> {
    format!(
        "From: sender@example.net\r\nTo: {to}\r\nSubject: pinned\r\nMessage-ID: <{}@example.net>\r\nDate: Wed, 02 Dec 2026 09:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nOnly for the pinned key.\r\n",
        to.replace('@', ".")
    )
    .into_bytes()
}

#[test]
fn a_pinned_address_is_encrypted_only_to_the_pinned_key() {
    let dns = DnsEnv::start();
    let scratch = Scratch::new();
    let published = |id: &str| {
        let u = dns.user(id);
        SmimeId::from_files(u.cert.as_ref().unwrap(), u.key.as_ref().unwrap())
    };
    let both = published("both");
    let pinned_both = key_fingerprint(Method::Smime, &both.cert.to_der().unwrap()).unwrap();
    // smime@'s key as it was pinned: not the one DNSSEC publishes now.
    let old = SmimeId::generate(
        &scratch.work,
        "old-smime",
        &CertSpec::good("smime@autoencrypt.test", KeyKind::Rsa),
    );
    let pinned_old = key_fingerprint(Method::Smime, &old.cert.to_der().unwrap()).unwrap();
    let policy = format!(
        r#"
[[rule]]
name = "partner pinned, key changed since"
recipient = ["smime@autoencrypt.test"]
methods = ["smime"]
mode = "required"
pin = ["{pinned_old}"]

[[rule]]
name = "partner pinned, opportunistic"
recipient = ["smimeec@autoencrypt.test"]
methods = ["smime"]
pin = ["{pinned_old}"]

[[rule]]
name = "partner pinned to the published key"
recipient = ["both@autoencrypt.test"]
methods = ["smime"]
mode = "required"
pin = ["{}"]
"#,
        pinned_both.to_lowercase()
    );
    let m = InProcessMilter::trust_ad_on_thread(dns.nsd(), &policy, |config| {
        config.dns.mode = DnsMode::Validate;
        config.dns.trust_anchor = Some(dns.trust_anchor_dnskeys());
        config.wkd.enabled = false;
    });
    let pf = PostfixEnv::start(Some(m.addr));

    // The published key is not the pinned one: refused (required), never
    // used; nothing is delivered.
    let to = "smime@autoencrypt.test";
    let out = pf.send("sender@example.net", &[to], &message(to));
    assert!(out.rcpt(to).is("550 5.7.1"), "{out}");
    assert_eq!(pf.maildir_count(to), 0);

    // Opportunistic: the rule's outcome for "no usable key" is to pass.
    let to = "smimeec@autoencrypt.test";
    let raw = message(to);
    let out = pf.send("sender@example.net", &[to], &raw);
    assert!(out.accepted(), "{out}");
    let got = pf.expect_mail(to, 1, Duration::from_secs(30));
    assert_eq!(
        postfix::lf(strip_delivery_headers(&got[0])),
        postfix::lf(&raw),
        "not encrypted to the unpinned key: passed as sent"
    );

    // Pinned to what DNSSEC publishes (written in lower case): encrypted.
    let to = "both@autoencrypt.test";
    let raw = message(to);
    let out = pf.send("sender@example.net", &[to], &raw);
    assert!(out.accepted(), "{out}");
    let got = pf.expect_mail(to, 1, Duration::from_secs(30));
    let plain = smime_decrypt(&scratch, strip_delivery_headers(&got[0]), "SMIME", &both)
        .unwrap_or_else(|e| panic!("{to}: {e}"));
    assert_eq!(plain, expected_protected_entity(&raw));
}
