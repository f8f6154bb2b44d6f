//! Header protection (RFC 9788) and Bcc privacy through a real Postfix
//! (issue 14). Keys come from the signed test zone. Every payload is
//! decrypted by independent implementations — `openssl cms` and NSS
//! `cmsutil` for S/MIME, `gpg`, RNP and `sq` for OpenPGP — compared byte
//! for byte with what was sent, and parsed by Python's `email` package.
//!
//! * Outbound (the default): the delivered copy's outer `Subject` is
//!   `[...]`, `Keywords` is gone; the payload root has `hp="cipher"`, the
//!   original Subject, From, To, Cc, Date and Message-ID byte for byte,
//!   `HP-Outer` fields matching the delivered outer header, and no `Bcc`.
//! * `protect_headers = false`: the outer header as before.
//! * A blind OpenPGP recipient: its PKESK has the anonymous key ID, it
//!   still decrypts with gpg, RNP and sq, and the named recipient's copy
//!   names nothing of it; counted `hidden`.
//! * A blind S/MIME recipient beside another: counted `exposed` and
//!   logged (the two-hop set-up that avoids it: tests/postfix_two_hop.rs).

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

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{
    Gpg, Scratch, SmimeId, expected_inner_entity, expected_protected_entity, smime_decrypt,
    split_message,
};
use env::DnsEnv;
use milter::InProcessMilter;
use postfix::{PostfixEnv, header_and_body, strip_delivery_headers};

const WAIT: Duration = Duration::from_secs(30);

const POLICY: &str = r#"
[[rule]]
name = "plain headers for the old client"
recipient = ["smimeec@autoencrypt.test"]
protect_headers = false
"#;

fn message(to: &str, cc: &str, id: &str) -> Vec<u8> {
    format!(
        "From: \"Sender, S.\" <sender@example.net>\r\nTo: {to}\r\nCc: {cc}\r\n\
         Bcc: hidden@example.org\r\n\
         Subject: =?utf-8?q?Quartalszahlen_f=C3=BCr?=\r\n =?utf-8?q?_den_Vorstand?=\r\n\
         Keywords: board, secret\r\n\
         Message-ID: <{id}@example.net>\r\nDate: Tue, 01 Dec 2026 07:00:00 +0100\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\r\nDie Zahlen im Anhang.\r\n"
    )
    .into_bytes()
}

fn milter_and_postfix(env: &DnsEnv) -> (InProcessMilter, PostfixEnv) {
    let m = InProcessMilter::trust_ad_on_thread(env.resolver(), POLICY, |_| {});
    let pf = PostfixEnv::start(Some(m.addr));
    (m, pf)
}

/// The delivered copy's outer header fields (raw) and its body.
fn outer(delivered: &[u8]) -> (Vec<common::Field>, Vec<u8>) {
    let msg = strip_delivery_headers(delivered);
    let (fields, _) = split_message(msg);
    let (_, body) = header_and_body(msg);
    (fields, body.to_vec())
}

fn field<'a>(fields: &'a [common::Field], name: &str) -> Vec<&'a common::Field> {
    fields.iter().filter(|f| f.name == name).collect()
}

fn smime_der(body: &[u8]) -> Vec<u8> {
    let b64: String = String::from_utf8_lossy(body)
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    openssl::base64::decode_block(&b64).expect("base64 body")
}

fn armor(body: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(body);
    let start = text.find("-----BEGIN PGP MESSAGE-----").expect("armor");
    let end = text.find("-----END PGP MESSAGE-----").expect("armor end") + 25;
    text[start..end].as_bytes().to_vec()
}

fn run(cmd: &mut Command, input: &[u8], what: &str) -> Vec<u8> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("{what}: cannot run (is it installed? scripts/install-deps): {e}")
        });
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// NSS `cmsutil` (Thunderbird's S/MIME engine) decrypts `der` with `user`'s
/// key, imported into a fresh NSS database.
fn cmsutil_decrypt(env: &DnsEnv, user: &str, der: &[u8]) -> Vec<u8> {
    let u = env.user(user);
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sql:{}", dir.path().display());
    let p12 = dir.path().join("id.p12");
    let st = Command::new("openssl")
        .args(["pkcs12", "-export", "-passout", "pass:p12", "-inkey"])
        .arg(u.key.as_ref().unwrap())
        .arg("-in")
        .arg(u.cert.as_ref().unwrap())
        .arg("-out")
        .arg(&p12)
        .status()
        .expect("openssl");
    assert!(st.success(), "openssl pkcs12 -export");
    let st = Command::new("certutil")
        .args(["-N", "--empty-password", "-d", &db])
        .status()
        .expect("certutil (libnss3-tools; scripts/install-deps)");
    assert!(st.success(), "certutil -N");
    let st = Command::new("pk12util")
        .args(["-i"])
        .arg(&p12)
        .args(["-d", &db, "-W", "p12", "-K", ""])
        .stdout(Stdio::null())
        .status()
        .expect("pk12util (libnss3-tools)");
    assert!(st.success(), "pk12util -i");
    let input = dir.path().join("in.der");
    std::fs::write(&input, der).unwrap();
    run(
        Command::new("cmsutil")
            .args(["-D", "-d", &db, "-p", "", "-i"])
            .arg(&input),
        b"",
        "cmsutil -D",
    )
}

/// Whether this RNP tries its secret keys on an anonymous recipient: RNP
/// does so only from 0.17, behind `--allow-hidden` (rnpgp/rnp#1940);
/// Debian 12's 0.16.3 cannot.
fn rnp_allows_hidden() -> bool {
    let out = Command::new("rnp")
        .arg("--help")
        .output()
        .expect("rnp (package rnp; scripts/install-deps)");
    let text = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    text.contains("--allow-hidden")
}

/// What RNP makes of a message to an anonymous recipient: the payload
/// where it can try its keys, else its refusal (asserted to be the known
/// "no decrypting key" one, so a different failure still fails the test).
fn rnp_decrypt_hidden(secret: &Path, armored: &[u8]) -> Option<Vec<u8>> {
    if rnp_allows_hidden() {
        return Some(rnp_decrypt_with(secret, armored, &["--allow-hidden"]));
    }
    let home = tempfile::tempdir().unwrap();
    import_rnp(home.path(), secret);
    let out = Command::new("rnp")
        .arg("--homedir")
        .arg(home.path())
        .args(["--decrypt", "--output", "-", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(armored)?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(
        !out.status.success(),
        "RNP without --allow-hidden decrypted"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("failed to obtain decrypting key"), "{err}");
    None
}

fn import_rnp(home: &Path, secret: &Path) {
    let st = Command::new("rnpkeys")
        .arg("--homedir")
        .arg(home)
        .arg("--import")
        .arg(secret)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("rnpkeys (package rnp; scripts/install-deps)");
    assert!(st.success(), "rnpkeys --import");
}

/// RNP (Thunderbird's OpenPGP engine) decrypts `armored` with the secret
/// key file `secret`.
fn rnp_decrypt(secret: &Path, armored: &[u8]) -> Vec<u8> {
    rnp_decrypt_with(secret, armored, &[])
}

fn rnp_decrypt_with(secret: &Path, armored: &[u8], extra: &[&str]) -> Vec<u8> {
    let home = tempfile::tempdir().unwrap();
    import_rnp(home.path(), secret);
    run(
        Command::new("rnp")
            .arg("--homedir")
            .arg(home.path())
            .args(extra)
            .args(["--decrypt", "--output", "-", "-"]),
        armored,
        "rnp --decrypt",
    )
}

/// Sequoia's `sq` decrypts `armored` with the secret key file `secret`.
fn sq_decrypt(secret: &Path, armored: &[u8]) -> Vec<u8> {
    run(
        Command::new("sq")
            .arg("decrypt")
            .arg("--recipient-key")
            .arg(secret),
        armored,
        "sq decrypt",
    )
}

/// What Python's `email` package (an independent MIME parser) reads from
/// a payload: the root's `hp` parameter and every header field as
/// `[name, raw value]`.
fn python_view(payload: &[u8]) -> (Option<String>, Vec<(String, String)>) {
    // One record per line: the hp parameter, then each field as
    // name US value (values may hold line breaks: records end with RS).
    let script = r#"
import email, email.policy, sys
m = email.message_from_bytes(sys.stdin.buffer.read(), policy=email.policy.compat32)
out = [str(m.get_param("hp") or "")] + [k + "\x1f" + v for k, v in m.items()]
sys.stdout.write("\x1e".join(out))
"#;
    let out = run(
        Command::new("python3").args(["-c", script]),
        payload,
        "python3 email",
    );
    let text = String::from_utf8(out).unwrap();
    let mut records = text.split('\x1e');
    let hp = records.next().filter(|s| !s.is_empty()).map(str::to_owned);
    let fields = records
        .map(|r| {
            let (n, v) = r.split_once('\x1f').unwrap();
            (n.to_owned(), v.to_owned())
        })
        .collect();
    (hp, fields)
}

fn unfold(s: &str) -> String {
    s.replace("\r\n", "").replace('\n', "").trim().to_owned()
}

/// The checks every protected payload passes, against the message `sent`
/// and the `delivered` outer header.
fn assert_protected(payload: &[u8], sent: &[u8], delivered: &[common::Field]) {
    common::assert_bytes_eq(payload, &expected_protected_entity(sent), "payload");
    let (hp, fields) = python_view(payload);
    assert_eq!(hp.as_deref(), Some("cipher"), "hp parameter of the root");
    let (sent_fields, _) = split_message(sent);
    let (payload_fields, _) = split_message(payload);
    for name in ["subject", "from", "to", "cc", "date", "message-id"] {
        let want: Vec<&Vec<u8>> = field(&sent_fields, name).iter().map(|f| &f.raw).collect();
        let got: Vec<&Vec<u8>> = field(&payload_fields, name)
            .iter()
            .map(|f| &f.raw)
            .collect();
        assert_eq!(got, want, "{name} inside, byte for byte");
    }
    assert!(
        !fields.iter().any(|(n, _)| n.eq_ignore_ascii_case("bcc")),
        "Bcc inside"
    );
    let records: Vec<(String, String)> = fields
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("hp-outer"))
        .map(|(_, v)| {
            let (n, v) = v.split_once(':').unwrap();
            (n.trim().to_ascii_lowercase(), unfold(v))
        })
        .collect();
    // Each record is what the delivered outer header shows ...
    for (name, value) in &records {
        let outside: Vec<String> = field(delivered, name).iter().map(|f| f.value()).collect();
        assert!(
            outside.contains(value),
            "HP-Outer {name}: {value:?} but outside {outside:?}"
        );
    }
    // ... and each composer field left outside has one.
    for name in ["subject", "from", "to", "cc", "date", "message-id"] {
        assert!(
            records.iter().any(|(n, _)| n == name),
            "no HP-Outer for {name}"
        );
    }
    assert!(!records.iter().any(|(n, _)| n == "keywords"));
}

#[test]
fn outbound_smime_and_openpgp_payloads_carry_the_protected_header() {
    let env = DnsEnv::start();
    let (_m, pf) = milter_and_postfix(&env);
    // S/MIME.
    let sent = message(
        "smime@autoencrypt.test",
        "smime@autoencrypt.test",
        "hp-smime",
    );
    pf.send("sender@example.net", &["smime@autoencrypt.test"], &sent)
        .accepted()
        .then_some(())
        .expect("accepted");
    let got = pf.expect_mail("smime@autoencrypt.test", 1, WAIT);
    let (fields, body) = outer(&got[0]);
    assert_eq!(field(&fields, "subject")[0].value(), "[...]");
    assert!(field(&fields, "keywords").is_empty(), "Keywords outside");
    assert!(field(&fields, "bcc").is_empty(), "Bcc outside");
    let der = smime_der(&body);
    let u = env.user("smime");
    let id = SmimeId::from_files(u.cert.as_ref().unwrap(), u.key.as_ref().unwrap());
    let plain = smime_decrypt(&Scratch::new(), &der, "DER", &id).unwrap();
    assert_protected(&plain, &sent, &fields);
    assert_eq!(cmsutil_decrypt(&env, "smime", &der), plain, "NSS cmsutil");

    // OpenPGP.
    let sent = message("Pgp <pgp@autoencrypt.test>", "nobody@example.org", "hp-pgp");
    pf.send("sender@example.net", &["pgp@autoencrypt.test"], &sent)
        .accepted()
        .then_some(())
        .expect("accepted");
    let got = pf.expect_mail("pgp@autoencrypt.test", 1, WAIT);
    let (fields, body) = outer(&got[0]);
    assert_eq!(field(&fields, "subject")[0].value(), "[...]");
    let armored = armor(&body);
    let secret = env.user("pgp").pgp_secret.clone().unwrap();
    let gpg = Gpg::new();
    gpg.import(&std::fs::read(&secret).unwrap());
    let plain = gpg.decrypt(&armored).unwrap();
    assert_protected(&plain, &sent, &fields);
    assert_eq!(rnp_decrypt(&secret, &armored), plain, "RNP");
}

#[test]
fn protect_headers_false_leaves_the_outer_header_as_it_was() {
    let env = DnsEnv::start();
    let (_m, pf) = milter_and_postfix(&env);
    let sent = message("smimeec@autoencrypt.test", "x@example.org", "hp-off");
    pf.send("sender@example.net", &["smimeec@autoencrypt.test"], &sent)
        .accepted()
        .then_some(())
        .expect("accepted");
    let got = pf.expect_mail("smimeec@autoencrypt.test", 1, WAIT);
    let (fields, body) = outer(&got[0]);
    let (sent_fields, _) = split_message(&sent);
    assert_eq!(
        field(&fields, "subject")[0].value(),
        field(&sent_fields, "subject")[0].value()
    );
    assert_eq!(field(&fields, "keywords").len(), 1);
    let u = env.user("smimeec");
    let id = SmimeId::from_files(u.cert.as_ref().unwrap(), u.key.as_ref().unwrap());
    let plain = smime_decrypt(&Scratch::new(), &smime_der(&body), "DER", &id).unwrap();
    assert_eq!(plain, expected_inner_entity(&sent));
}

/// The key IDs `gpg --list-packets` prints for the PKESKs of `armored`
/// (in a home without secret keys, so nothing is decrypted).
fn pkesk_key_ids(armored: &[u8]) -> Vec<String> {
    let gpg = Gpg::new();
    let out = gpg
        .cmd()
        .args(["--list-packets"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(armored)?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with(":pubkey enc packet:"))
        .map(|l| l.rsplit("keyid ").next().unwrap().trim().to_owned())
        .collect()
}

/// Every key ID (primary and subkeys) of the key in `secret`.
fn key_ids(secret: &Path) -> Vec<String> {
    let gpg = Gpg::new();
    gpg.import(&std::fs::read(secret).unwrap());
    let out = gpg
        .cmd()
        .args(["--with-colons", "--list-secret-keys"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("sec:") || l.starts_with("ssb:"))
        .map(|l| l.split(':').nth(4).unwrap().to_owned())
        .collect()
}

fn metric(m: &InProcessMilter, line: &str) -> bool {
    m.metrics.render().lines().any(|l| l == line)
}

#[test]
fn a_blind_openpgp_recipient_gets_the_anonymous_key_id_and_still_decrypts() {
    let env = DnsEnv::start();
    let (m, pf) = milter_and_postfix(&env);
    let sent = message("pgp@autoencrypt.test", "", "bcc-pgp");
    pf.send(
        "sender@example.net",
        &["pgp@autoencrypt.test", "pgprsa@autoencrypt.test"],
        &sent,
    )
    .accepted()
    .then_some(())
    .expect("accepted");
    let named = pf.expect_mail("pgp@autoencrypt.test", 1, WAIT);
    let blind = pf.expect_mail("pgprsa@autoencrypt.test", 1, WAIT);
    let named_armor = armor(&outer(&named[0]).1);
    let blind_armor = armor(&outer(&blind[0]).1);
    let pgp_ids = key_ids(env.user("pgp").pgp_secret.as_ref().unwrap());
    let rsa_ids = key_ids(env.user("pgprsa").pgp_secret.as_ref().unwrap());
    for armored in [&named_armor, &blind_armor] {
        let ids = pkesk_key_ids(armored);
        assert_eq!(ids.len(), 2, "one PKESK per recipient: {ids:?}");
        assert!(ids.iter().any(|i| pgp_ids.contains(i)), "{ids:?}");
        assert!(ids.contains(&"0000000000000000".to_owned()), "{ids:?}");
        for id in &rsa_ids {
            assert!(
                !ids.contains(id),
                "the blind recipient's key ID {id} is named"
            );
            let text = String::from_utf8_lossy(armored);
            assert!(!text.contains(id.as_str()));
        }
    }
    // The named recipient's copy names nothing of the blind one outside.
    let (fields, _) = outer(&named[0]);
    for f in &fields {
        if f.name != "delivered-to" {
            assert!(
                !String::from_utf8_lossy(&f.raw).contains("pgprsa"),
                "{}",
                f.show()
            );
        }
    }
    // The blind recipient decrypts with gpg, RNP and sq.
    let secret = env.user("pgprsa").pgp_secret.clone().unwrap();
    let gpg = Gpg::new();
    gpg.import(&std::fs::read(&secret).unwrap());
    let plain = gpg.decrypt(&blind_armor).unwrap();
    assert_eq!(plain, expected_protected_entity(&sent));
    assert_eq!(sq_decrypt(&secret, &blind_armor), plain, "sq");
    // RNP: from 0.17 with --allow-hidden; Debian 12's cannot (a documented
    // limit of the receiving side: openpgp.hide_blind_recipients).
    if let Some(rnp) = rnp_decrypt_hidden(&secret, &blind_armor) {
        assert_eq!(rnp, plain, "RNP --allow-hidden");
    } else {
        eprintln!("note: this RNP cannot decrypt for an anonymous recipient (needs 0.17+)");
    }
    assert!(metric(
        &m,
        "autoencrypt_blind_recipients_total{method=\"openpgp\",result=\"hidden\"} 1"
    ));
}

#[test]
fn a_blind_smime_recipient_beside_another_is_counted_exposed() {
    let env = DnsEnv::start();
    let (m, pf) = milter_and_postfix(&env);
    let sent = message("smime@autoencrypt.test", "", "bcc-smime");
    pf.send(
        "sender@example.net",
        &["smime@autoencrypt.test", "both@autoencrypt.test"],
        &sent,
    )
    .accepted()
    .then_some(())
    .expect("accepted");
    let got = pf.expect_mail("both@autoencrypt.test", 1, WAIT);
    let u = env.user("both");
    let id = SmimeId::from_files(u.cert.as_ref().unwrap(), u.key.as_ref().unwrap());
    let plain = smime_decrypt(&Scratch::new(), &smime_der(&outer(&got[0]).1), "DER", &id).unwrap();
    assert_eq!(plain, expected_protected_entity(&sent));
    assert!(metric(
        &m,
        "autoencrypt_blind_recipients_total{method=\"smime\",result=\"exposed\"} 1"
    ));
    // Alone: a message whose only recipient is blind exposes nobody.
    let sent = message("someone@example.org", "", "bcc-alone");
    pf.send("sender@example.net", &["smime@autoencrypt.test"], &sent)
        .accepted()
        .then_some(())
        .expect("accepted");
    pf.expect_mail("smime@autoencrypt.test", 2, WAIT);
    assert!(metric(
        &m,
        "autoencrypt_blind_recipients_total{method=\"smime\",result=\"alone\"} 1"
    ));
}

#[test]
fn hide_blind_recipients_false_names_every_key() {
    let env = DnsEnv::start();
    let m = InProcessMilter::trust_ad_on_thread(env.resolver(), POLICY, |c| {
        c.openpgp.hide_blind_recipients = false;
    });
    let pf = PostfixEnv::start(Some(m.addr));
    let sent = message("pgp@autoencrypt.test", "", "bcc-named");
    let out = pf.send(
        "sender@example.net",
        &["pgp@autoencrypt.test", "pgprsa@autoencrypt.test"],
        &sent,
    );
    assert!(out.accepted(), "{out}");
    let got = pf.expect_mail("pgprsa@autoencrypt.test", 1, WAIT);
    let ids = pkesk_key_ids(&armor(&outer(&got[0]).1));
    let rsa_ids = key_ids(env.user("pgprsa").pgp_secret.as_ref().unwrap());
    assert!(!ids.contains(&"0000000000000000".to_owned()), "{ids:?}");
    assert!(ids.iter().any(|i| rsa_ids.contains(i)), "{ids:?}");
    // RNP without hidden-recipient support reads it.
    let secret = env.user("pgprsa").pgp_secret.clone().unwrap();
    let gpg = Gpg::new();
    gpg.import(&std::fs::read(&secret).unwrap());
    let plain = gpg.decrypt(&armor(&outer(&got[0]).1)).unwrap();
    assert_eq!(rnp_decrypt(&secret, &armor(&outer(&got[0]).1)), plain);
    assert!(metric(
        &m,
        "autoencrypt_blind_recipients_total{method=\"openpgp\",result=\"exposed\"} 1"
    ));
}
