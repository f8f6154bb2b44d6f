//! Keys from the organisation's directory, end to end: a real Postfix
//! with the milter, a real OpenLDAP slapd (tests/env/ldap-up) beside the
//! DNSSEC test zone. Every encrypted copy is decrypted with `openssl cms`
//! or gpg and compared byte for byte with what was sent; a key that must
//! not be a recipient is shown not to decrypt.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod common;
#[path = "env/mod.rs"]
mod env;
#[path = "env/ldap.rs"]
mod ldap;
#[path = "env/milter.rs"]
mod milter;
#[path = "env/postfix.rs"]
mod postfix;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Mutex, Once};
use std::time::Duration;

use autoencrypt_milter::config::{DnsMode, LdapConfig};
use common::{
    CertSpec, KeyKind, Scratch, SmimeId, expected_inner_entity, expected_protected_entity,
    smime_decrypt,
};
use env::DnsEnv;
use ldap::{LdapEnv, cert_der_b64};
use milter::InProcessMilter;
use postfix::{PostfixEnv, header_and_body, strip_delivery_headers};

const WAIT: Duration = Duration::from_secs(30);

/// Mail to the directory's own domain needs a key from it; other mail
/// takes the default rule (every source, highest trust first); inbound
/// mail follows the shipped example for encryption at rest.
const POLICY: &str = r#"
[[rule]]
name = "directory users: the directory's key or nothing"
recipient = ["*@ldap.autoencrypt.test"]
methods = ["smime", "openpgp"]
mode = "required"
sources = ["ldap"]
min_trust = "operator"
"#;

fn message(to: &str) -> Vec<u8> {
    format!(
        "From: sender@example.net\r\nTo: {to}\r\nSubject: keys from the directory\r\nMessage-ID: <{}@example.net>\r\nDate: Wed, 02 Dec 2026 09:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nFür {to}: aus dem Verzeichnis.\r\n",
        to.replace(['@', '"'], ".")
    )
    .into_bytes()
}

/// The directory as the organisation runs it: the Active Directory
/// pattern (aliases in proxyAddresses), the operator's trust; entries
/// marked `description: mirror` are partners' certificates, served by a
/// second table at trust `tls`.
fn directories(l: &LdapEnv) -> Vec<LdapConfig> {
    let own = LdapConfig {
        url: l.ldap_url().to_owned(),
        domains: vec![
            l.domain().to_owned(),
            l.local_domain().to_owned(),
            "autoencrypt.test".to_owned(),
        ],
        base: l.people_base().to_owned(),
        bind_dn: l.bind_dn().to_owned(),
        bind_password_file: Some(l.password_file()),
        filter: "(&(|(mail={address})(proxyAddresses=smtp:{address}))(!(description=mirror)))"
            .to_owned(),
        address_attributes: vec!["mail".to_owned(), "proxyAddresses".to_owned()],
        // Each lookup asks the directory (the down case below).
        cache_ttl_secs: 0,
        negative_ttl_secs: 0,
        timeout_ms: 2_000,
        connect_timeout_ms: 1_000,
        ..LdapConfig::default()
    };
    let mirror = LdapConfig {
        filter: "(&(mail={address})(description=mirror))".to_owned(),
        address_attributes: vec!["mail".to_owned()],
        trust: "tls".parse().unwrap(),
        ..own.clone()
    };
    vec![own, mirror]
}

fn milter_for(dns: &DnsEnv, l: &LdapEnv, policy: &str, dirs: Vec<LdapConfig>) -> InProcessMilter {
    let local = l.local_domain().to_owned();
    InProcessMilter::trust_ad_on_thread(dns.nsd(), policy, move |config| {
        config.dns.mode = DnsMode::Validate;
        config.dns.trust_anchor = Some(dns.trust_anchor_dnskeys());
        config.wkd.enabled = false;
        config.local_domains = vec![local];
        config.ldap = dirs;
    })
}

/// The S/MIME body of a delivered copy, decrypted with `id`.
fn smime_open(scratch: &Scratch, delivered: &[u8], id: &SmimeId) -> Result<Vec<u8>, String> {
    let msg = strip_delivery_headers(delivered);
    let (header, _) = header_and_body(msg);
    let header = String::from_utf8_lossy(header).to_ascii_lowercase();
    assert!(
        header.contains("application/pkcs7-mime"),
        "not S/MIME:\n{}",
        String::from_utf8_lossy(delivered)
    );
    smime_decrypt(scratch, msg, "SMIME", id)
}

fn gpg_open(home: &Path, delivered: &[u8]) -> Result<Vec<u8>, String> {
    let (header, body) = header_and_body(strip_delivery_headers(delivered));
    assert!(
        String::from_utf8_lossy(header)
            .to_ascii_lowercase()
            .contains("multipart/encrypted"),
        "not PGP/MIME"
    );
    let text = String::from_utf8_lossy(body);
    let start = text.find("-----BEGIN PGP MESSAGE-----").expect("armor");
    let end = text.find("-----END PGP MESSAGE-----").expect("armor end") + 25;
    let mut child = Command::new("gpg")
        .arg("--homedir")
        .arg(home)
        .args(["--batch", "--quiet", "--decrypt"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("gpg (gnupg) is required");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text[start..end].as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// An entry for `address` holding `id`'s certificate.
fn entry_ldif(l: &LdapEnv, uid: &str, address: &str, id: &SmimeId, mirror: bool) -> String {
    format!(
        "dn: uid={uid},{}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\nsn: {uid}\nmail: {address}\n{}userCertificate;binary:: {}\n",
        l.people_base(),
        if mirror { "description: mirror\n" } else { "" },
        cert_der_b64(&id.cert_path)
    )
}

#[test]
fn directory_keys_through_postfix() {
    let dns = DnsEnv::start();
    let l = LdapEnv::start();
    let scratch = Scratch::new();
    let mut policy = POLICY.to_owned();
    policy.push_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/optional/ldap-at-rest.toml"),
        )
        .unwrap(),
    );

    // Beside DNSSEC: the operator's directory has another certificate for
    // smime@ (it wins); the partners' mirror has another for both@ (DNSSEC
    // wins over it).
    let make = |label: &str, addr: &str| {
        SmimeId::generate(&scratch.work, label, &CertSpec::good(addr, KeyKind::Rsa))
    };
    let own_smime = make("ldap-smime", "smime@autoencrypt.test");
    let mirror_both = make("mirror-both", "both@autoencrypt.test");
    l.add(&entry_ldif(
        &l,
        "dnsconflict",
        "smime@autoencrypt.test",
        &own_smime,
        false,
    ));
    l.add(&entry_ldif(
        &l,
        "mirrorboth",
        "both@autoencrypt.test",
        &mirror_both,
        true,
    ));

    let m = milter_for(&dns, &l, &policy, directories(&l));
    let pf = PostfixEnv::start(Some(m.addr));
    let send = |to: &str| {
        let raw = message(to);
        (pf.send("sender@example.net", &[to], &raw), raw)
    };
    let id = |user: &str, i: usize| {
        let u = l.user(user);
        SmimeId::from_files(&u.certs[i], &u.keys[i])
    };

    // One certificate; two (each decrypts alone); an expired one beside a
    // valid one (the expired one's key cannot); a PKCS#7 bag; an alias;
    // a local user's mail at rest.
    let cases: [(&str, Vec<SmimeId>, Vec<SmimeId>); 6] = [
        ("one@ldap.autoencrypt.test", vec![id("one", 0)], vec![]),
        (
            "two@ldap.autoencrypt.test",
            vec![id("two", 0), id("two", 1)],
            vec![],
        ),
        (
            "expired@ldap.autoencrypt.test",
            vec![id("expired", 1)],
            vec![id("expired", 0)],
        ),
        ("pkcs7@ldap.autoencrypt.test", vec![id("pkcs7", 0)], vec![]),
        (
            "alias@ldap.autoencrypt.test",
            vec![id("primary", 0)],
            vec![],
        ),
        ("local@local.autoencrypt.test", vec![id("local", 0)], vec![]),
    ];
    for (to, opens, cannot) in &cases {
        let (out, raw) = send(to);
        assert!(out.accepted(), "{to}: {out}");
        let got = pf.expect_mail(to, 1, WAIT);
        for who in opens {
            let plain = smime_open(&scratch, &got[0], who)
                .unwrap_or_else(|e| panic!("{to}: {}: {e}", who.cert_path.display()));
            // local.autoencrypt.test is a local domain: at rest, the
            // header is not protected by default.
            let want = if to.ends_with("@local.autoencrypt.test") {
                expected_inner_entity(&raw)
            } else {
                expected_protected_entity(&raw)
            };
            assert_eq!(plain, want, "{to}: decrypted entity differs");
        }
        for who in cannot {
            assert!(
                smime_open(&scratch, &got[0], who).is_err(),
                "{to}: expired key opens it"
            );
        }
    }

    // An OpenPGP key in pgpKey: PGP/MIME, read by gpg.
    let to = "pgp@ldap.autoencrypt.test";
    let (out, raw) = send(to);
    assert!(out.accepted(), "{to}: {out}");
    let got = pf.expect_mail(to, 1, WAIT);
    let plain = gpg_open(&l.gnupghome(), &got[0]).unwrap_or_else(|e| panic!("{to}: gpg: {e}"));
    assert_eq!(plain, expected_protected_entity(&raw));

    // The operator's directory beats DNSSEC; DNSSEC beats the mirror.
    let dns_smime = dns.user("smime");
    let dns_smime = SmimeId::from_files(
        dns_smime.cert.as_ref().unwrap(),
        dns_smime.key.as_ref().unwrap(),
    );
    let dns_both = dns.user("both");
    let dns_both = SmimeId::from_files(
        dns_both.cert.as_ref().unwrap(),
        dns_both.key.as_ref().unwrap(),
    );
    for (to, opens, cannot) in [
        ("smime@autoencrypt.test", &own_smime, &dns_smime),
        ("both@autoencrypt.test", &dns_both, &mirror_both),
    ] {
        let (out, raw) = send(to);
        assert!(out.accepted(), "{to}: {out}");
        let got = pf.expect_mail(to, 1, WAIT);
        let plain = smime_open(&scratch, &got[0], opens).unwrap_or_else(|e| panic!("{to}: {e}"));
        assert_eq!(plain, expected_protected_entity(&raw));
        assert!(
            smime_open(&scratch, &got[0], cannot).is_err(),
            "{to}: the lower key opens it"
        );
    }

    // No key in the entry, no entry, a filter injection: the required
    // rule refuses; nothing is delivered.
    for to in [
        "nokey@ldap.autoencrypt.test",
        "nobody@ldap.autoencrypt.test",
        "\"a*)(uid=*\"@ldap.autoencrypt.test",
    ] {
        let (out, _) = send(to);
        assert!(out.rcpt(to).is("550 5.7.1"), "{to}: {out}");
        assert_eq!(pf.maildir_count(to), 0, "{to}");
    }

    // The directory down: deferred (451 4.7.1), nothing delivered; back
    // up: after the source leaves a failed directory alone (10 s), mail
    // flows again without a reload (S/MIME first for both@).
    l.stop_plain();
    let to = "pgparmored@ldap.autoencrypt.test";
    let (out, _) = send(to);
    assert!(out.rcpt(to).is("451 4.7.1"), "{out}");
    assert_eq!(pf.maildir_count(to), 0);
    l.start_plain();
    std::thread::sleep(Duration::from_millis(10_500));
    // (That address's failure stays cached for 15 s: another one.)
    let to = "both@ldap.autoencrypt.test";
    let (out, raw) = send(to);
    assert!(out.accepted(), "{to}: {out}");
    let got = pf.expect_mail(to, 1, WAIT);
    let plain =
        smime_open(&scratch, &got[0], &id("both", 0)).unwrap_or_else(|e| panic!("{to}: {e}"));
    assert_eq!(plain, expected_protected_entity(&raw));
    assert!(
        pf.wait_queue_empty(Duration::from_secs(10)),
        "{}",
        pf.postqueue()
    );

    // The directory's lookups are counted under source "ldap" (one search
    // serves both methods: the second is a cache hit).
    let text = m.metrics.render();
    for needle in [
        "autoencrypt_key_lookups_total{source=\"ldap\",record=\"smimea\",result=\"found\"}",
        "autoencrypt_key_lookups_total{source=\"ldap\",record=\"openpgpkey\",result=\"cache_hit\"}",
        "autoencrypt_key_lookups_total{source=\"ldap\",record=\"smimea\",result=\"not_found\"}",
        "autoencrypt_key_lookups_total{source=\"ldap\",record=\"smimea\",result=\"failed\"}",
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with(needle))
            .unwrap_or_else(|| panic!("no {needle} in:\n{text}"));
        let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(value >= 1.0, "{line}");
    }
}

// ---------------------------------------------------------------------------
// What the milter logs, for the refused bind.

static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOG.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(|| LogWriter)
            .init();
    });
}

#[test]
fn a_wrong_bind_password_defers_and_is_logged_without_the_password() {
    capture_logs();
    let dns = DnsEnv::start();
    let l = LdapEnv::start();
    let dirs = vec![LdapConfig {
        bind_password_file: Some(l.wrong_password_file()),
        ..directories(&l).remove(0)
    }];
    let m = milter_for(&dns, &l, POLICY, dirs);
    let pf = PostfixEnv::start(Some(m.addr));
    let to = "one@ldap.autoencrypt.test";
    let out = pf.send("sender@example.net", &[to], &message(to));
    assert!(out.rcpt(to).is("451 4.7.1"), "{out}");
    assert_eq!(pf.maildir_count(to), 0);
    let log = String::from_utf8_lossy(&LOG.lock().unwrap()).into_owned();
    let line = log
        .lines()
        .find(|l| l.contains("invalidCredentials (49)"))
        .unwrap_or_else(|| panic!("the refused bind is not logged:\n{log}"));
    assert!(line.contains(&format!("NOQUEUE: rcpt {to}")), "{line}");
    let wrong = std::fs::read_to_string(l.wrong_password_file()).unwrap();
    assert!(!log.contains(wrong.trim()), "the password is in the log");
    assert!(!log.contains(&l.password()), "the password is in the log");
}
