//! Keys from a Web Key Directory and a keyserver, end to end: a real
//! Postfix with the milter, host names in the DNSSEC test zone, a real
//! nginx with a test CA (tests/env/web-up). Every encrypted copy is
//! decrypted with gpg and compared byte for byte with what was sent.

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
#[path = "env/web.rs"]
mod web;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use autoencrypt_milter::config::DnsMode;
use common::{Gpg, expected_protected_entity};
use env::DnsEnv;
use milter::InProcessMilter;
use postfix::{PostfixEnv, header_and_body, strip_delivery_headers};
use web::WebEnv;

const WAIT: Duration = Duration::from_secs(30);

const POLICY: &str = r#"
[[rule]]
name = "partner: DNSSEC or better"
recipient = ["bob@direct.autoencrypt.test"]
methods = ["openpgp"]
mode = "required"

[[rule]]
name = "partner: web keys will do"
recipient = ["moved@wkd.autoencrypt.test", "error@wkd.autoencrypt.test"]
methods = ["openpgp"]
mode = "required"
min_trust = "tls"
"#;

fn message(to: &str) -> Vec<u8> {
    format!(
        "From: sender@example.net\r\nTo: {to}\r\nSubject: keys from the web\r\nMessage-ID: <{}@example.net>\r\nDate: Tue, 01 Dec 2026 09:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nFür {to}: nur für dich.\r\n",
        to.replace('@', ".")
    )
    .into_bytes()
}

/// The armored PGP message of a delivered PGP/MIME copy; panics on
/// anything else.
fn pgp_part(delivered: &[u8]) -> Vec<u8> {
    let (header, body) = header_and_body(strip_delivery_headers(delivered));
    let header = String::from_utf8_lossy(header).to_ascii_lowercase();
    assert!(
        header.contains("multipart/encrypted"),
        "not PGP/MIME:\n{}",
        String::from_utf8_lossy(delivered)
    );
    let text = String::from_utf8_lossy(body);
    let start = text.find("-----BEGIN PGP MESSAGE-----").expect("armor");
    let end = text.find("-----END PGP MESSAGE-----").expect("armor end") + 25;
    text[start..end].as_bytes().to_vec()
}

/// gpg with `home`'s secret keys decrypts `armored`, or says why not.
fn gpg_decrypt(home: &Path, armored: &[u8]) -> Result<Vec<u8>, String> {
    use std::io::Write;
    let mut child = Command::new("gpg")
        .arg("--homedir")
        .arg(home)
        .args(["--batch", "--quiet", "--decrypt"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("gpg (gnupg) is required");
    child.stdin.take().unwrap().write_all(armored).unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn web_keys_through_postfix() {
    let dns = DnsEnv::start();
    let web = WebEnv::start(&dns);
    let m = InProcessMilter::trust_ad_on_thread(dns.nsd(), POLICY, |config| {
        config.dns.mode = DnsMode::Validate;
        config.dns.trust_anchor = Some(dns.trust_anchor_dnskeys());
        config.wkd.ca_file = Some(web.ca_file());
        config.wkd.timeout_ms = 2_500;
        config.wkd.connect_timeout_ms = 1_000;
        // The test servers are on loopback.
        config.wkd.allow_private_addresses = true;
        config.keyserver.urls = vec![web.keyserver_url()];
    });
    let pf = PostfixEnv::start(Some(m.addr));
    let send = |to: &str| {
        let raw = message(to);
        let out = pf.send("sender@example.net", &[to], &raw);
        (out, raw)
    };

    // Found by WKD (advanced; after an https redirect; for an unsigned
    // zone's user) and on the keyserver: each decrypts to exactly what was
    // sent.
    for (to, id) in [
        ("alice@wkd.autoencrypt.test", "alice"),
        ("moved@wkd.autoencrypt.test", "moved"),
        ("ks@nowkd.autoencrypt.test", "ks"),
        ("y@unsigned.autoencrypt.test", "y"),
    ] {
        let (out, raw) = send(to);
        assert!(out.accepted(), "{to}: {out}");
        let got = pf.expect_mail(to, 1, WAIT);
        let plain = gpg_decrypt(&web.gnupghome(), &pgp_part(&got[0]))
            .unwrap_or_else(|e| panic!("{to} ({id}): gpg: {e}"));
        assert_eq!(
            plain,
            expected_protected_entity(&raw),
            "{to}: decrypted entity differs"
        );
    }

    // DNSSEC beside WKD: the DNSSEC key is used; the WKD key's owner
    // cannot read it.
    let to = "pgp@autoencrypt.test";
    let (out, raw) = send(to);
    assert!(out.accepted(), "{out}");
    let got = pf.expect_mail(to, 1, WAIT);
    let armored = pgp_part(&got[0]);
    assert!(
        gpg_decrypt(&web.gnupghome(), &armored).is_err(),
        "the WKD key (a different one) must not be a recipient"
    );
    let gpg = Gpg::new();
    gpg.import(&std::fs::read(dns.user("pgp").pgp_secret.as_ref().unwrap()).unwrap());
    assert_eq!(
        gpg.decrypt(&armored).unwrap(),
        expected_protected_entity(&raw)
    );

    // A web server that never answers: the opportunistic default lets the
    // mail through unencrypted (logged), it does not defer it.
    let to = "slow@wkd.autoencrypt.test";
    let (out, raw) = send(to);
    assert!(out.accepted(), "{out}");
    let got = pf.expect_mail(to, 1, WAIT);
    let delivered = strip_delivery_headers(&got[0]);
    assert_eq!(
        postfix::lf(delivered),
        postfix::lf(&raw),
        "delivered in the clear, unchanged"
    );

    // Required at dnssec (the default) with only a WKD key: rejected.
    let (out, _) = send("bob@direct.autoencrypt.test");
    assert!(
        out.rcpt("bob@direct.autoencrypt.test").is("550 5.7.1"),
        "{out}"
    );
    // Required at tls with the WKD server failing: deferred, never passed.
    let (out, _) = send("error@wkd.autoencrypt.test");
    assert!(
        out.rcpt("error@wkd.autoencrypt.test").is("451 4.7.1"),
        "{out}"
    );

    // Each source's lookups are counted under its own label.
    let text = m.metrics.render();
    for needle in [
        "autoencrypt_key_lookups_total{source=\"wkd\",record=\"openpgpkey\",result=\"found\"}",
        "autoencrypt_key_lookups_total{source=\"wkd\",record=\"openpgpkey\",result=\"failed\"}",
        "autoencrypt_key_lookups_total{source=\"keyserver\",record=\"openpgpkey\",result=\"found\"}",
        "autoencrypt_key_lookup_duration_seconds_count{source=\"wkd\",record=\"openpgpkey\"}",
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with(needle))
            .unwrap_or_else(|| panic!("no {needle} in:\n{text}"));
        let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(value >= 1.0, "{line}");
    }
    // WKD and keyservers are never asked for S/MIME: no such lookup counted.
    let smime: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("autoencrypt_key_lookups_total{"))
        .filter(|l| l.contains("record=\"smimea\"") && !l.contains("source=\"dane\""))
        .filter(|l| l.contains("source=\"wkd\"") || l.contains("source=\"keyserver\""))
        .collect();
    assert!(
        !smime.is_empty(),
        "the series exist from the start:\n{text}"
    );
    assert!(smime.iter().all(|l| l.ends_with(" 0")), "{smime:#?}");
}
