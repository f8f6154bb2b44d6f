//! Issue 9.1 through Postfix: to a recipient whose rule is `required`,
//! every ciphertext look-alike of tests/fixtures/ciphertext/ is delivered
//! encrypted — the delivered copy decrypts with the recipient's key to the
//! inner entity of what was sent, and no `SECRET` marker is readable in
//! the Maildir file — while genuine ciphertext is delivered unchanged.

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

use std::path::Path;
use std::time::Duration;

use autoencrypt_milter::config::Config;
use common::{Gpg, Scratch, SmimeId, expected_payload, find, smime_decrypt, to_crlf};
use env::DnsEnv;
use milter::InProcessMilter;
use postfix::{PostfixEnv, header_and_body, lf, strip_delivery_headers};

const WAIT: Duration = Duration::from_secs(30);

const POLICY: &str = r#"
[[rule]]
name = "required for the keyed desks"
recipient = ["smime@autoencrypt.test", "pgp@autoencrypt.test"]
mode = "required"
on_missing_key = "reject"
"#;

fn milter(env: &DnsEnv) -> InProcessMilter {
    milter_with(env, |_| {})
}

fn milter_with(env: &DnsEnv, tweak: impl FnOnce(&mut Config)) -> InProcessMilter {
    InProcessMilter::trust_ad_on_thread(env.resolver(), POLICY, |config| {
        config.dns.trust_anchor = Some(env.trust_anchor_dnskeys());
        tweak(config);
    })
}

fn fixtures(prefix: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ciphertext");
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .filter(|(n, _)| n.starts_with(prefix))
        .collect();
    v.sort();
    assert!(v.len() >= 6, "too few {prefix} fixtures");
    v
}

/// The fixture as sent to `to`: CRLF, a Message-ID unique per recipient.
fn as_sent(name: &str, raw: &[u8], to: &str) -> Vec<u8> {
    let id = name.trim_end_matches(".eml");
    let text = String::from_utf8(raw.to_vec()).unwrap().replacen(
        &format!("Message-ID: <{id}@example.net>"),
        &format!("Message-ID: <{id}.{}@example.net>", to.replace('@', ".")),
        1,
    );
    to_crlf(text.as_bytes())
}

/// The delivered copy of the message with `marker` in its Message-ID.
fn delivered(pf: &PostfixEnv, to: &str, n: usize, marker: &str) -> Vec<u8> {
    let mail = pf.expect_mail(to, n, WAIT);
    mail.into_iter()
        .find(|m| find(m, marker.as_bytes()).is_some())
        .unwrap_or_else(|| panic!("{marker} not delivered to {to}"))
}

fn decrypt(env: &DnsEnv, user: &str, delivered: &[u8]) -> Vec<u8> {
    let msg = strip_delivery_headers(delivered);
    let (header, body) = header_and_body(msg);
    let header = String::from_utf8_lossy(header).to_ascii_lowercase();
    if user == "smime" {
        assert!(header.contains("application/pkcs7-mime"), "{header}");
        let b64: String = String::from_utf8_lossy(body)
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let der = openssl::base64::decode_block(&b64).expect("base64 body");
        let u = env.user(user);
        let id = SmimeId::from_files(u.cert.as_ref().unwrap(), u.key.as_ref().unwrap());
        smime_decrypt(&Scratch::new(), &der, "DER", &id).unwrap()
    } else {
        assert!(header.contains("multipart/encrypted"), "{header}");
        let text = String::from_utf8_lossy(body);
        let start = text.find("-----BEGIN PGP MESSAGE-----").expect("armor");
        let end = text.find("-----END PGP MESSAGE-----").expect("armor end") + 25;
        let gpg = Gpg::new();
        gpg.import(&std::fs::read(env.user(user).pgp_secret.as_ref().unwrap()).unwrap());
        gpg.decrypt(text[start..end].as_bytes()).unwrap()
    }
}

/// Sends fixture `name` to `to` through Postfix; what was sent and the
/// `n`th message `to` got.
fn send_fixture(pf: &PostfixEnv, to: &str, name: &str, raw: &[u8], n: usize) -> (Vec<u8>, Vec<u8>) {
    let sent = as_sent(name, raw, to);
    let out = pf.send("sender@example.net", &[to], &sent);
    assert!(out.accepted(), "{name} to {to}: {out}");
    let marker = format!("{}.{}", name.trim_end_matches(".eml"), to.replace('@', "."));
    let got = delivered(pf, to, n, &marker);
    (sent, got)
}

#[test]
fn look_alikes_are_delivered_encrypted_and_genuine_ciphertext_unchanged() {
    let env = DnsEnv::start();
    let m = milter(&env);
    let pf = PostfixEnv::start(Some(m.addr));

    for user in ["smime", "pgp"] {
        let to = format!("{user}@autoencrypt.test");
        let mut count = 0;
        for (name, raw) in fixtures("hostile-") {
            count += 1;
            let (sent, got) = send_fixture(&pf, &to, &name, &raw, count);
            assert!(
                find(&got, b"SECRET").is_none(),
                "{name} to {to}: secret text readable in the Maildir file:\n{}",
                String::from_utf8_lossy(&got)
            );
            assert_eq!(
                decrypt(&env, user, &got),
                expected_payload(&sent),
                "{name} to {to}: decrypted entity differs"
            );
        }
        for (name, raw) in fixtures("genuine-") {
            count += 1;
            let (sent, got) = send_fixture(&pf, &to, &name, &raw, count);
            assert_eq!(
                strip_delivery_headers(&got),
                lf(&sent).as_slice(),
                "{name} to {to}: genuine ciphertext must be delivered unchanged"
            );
        }
    }
    assert!(pf.wait_queue_empty(WAIT), "{}", pf.postqueue());
}

/// Above `limits.max_message_bytes` the body is not kept, so nothing can
/// be encrypted or verified: to a `required` recipient every message is
/// refused (552), genuine ciphertext included, and nothing is delivered
/// readable.
#[test]
fn over_the_size_limit_nothing_reaches_a_required_recipient() {
    let env = DnsEnv::start();
    let m = milter_with(&env, |c| c.limits.max_message_bytes = 10);
    let pf = PostfixEnv::start(Some(m.addr));
    let to = "smime@autoencrypt.test";
    for (name, raw) in fixtures("genuine-").into_iter().chain(fixtures("hostile-")) {
        let sent = as_sent(&name, &raw, to);
        let out = pf.send("sender@example.net", &[to], &sent);
        assert!(out.last().is("552 5.3.4"), "{name}: {out}");
    }
    assert_eq!(pf.maildir_count(to), 0, "nothing delivered");
}
