//! Signing for authenticated senders through a real Postfix with SASL
//! (Cyrus sasldb on the submission smtpd; the milter reads Postfix's
//! `{auth_authen}`), keys from the signed test zone, every signature
//! checked by independent engines: `openssl cms -verify` and NSS
//! `cmsutil` (Thunderbird's S/MIME engine), `gpg --verify` and RNP
//! (Thunderbird's OpenPGP engine). Signed + encrypted mail decrypts, then
//! verifies. An unauthenticated submission, and a login the map does not
//! allow for the `From:` address, arrive unsigned; a rule that requires
//! signing refuses them (`550 5.7.1`). The delivered signed messages,
//! sent on to a local recipient, get `smime=pass` and `openpgp=pass`.

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
#[path = "signing/mod.rs"]
mod signing;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Gpg, Scratch, SmimeId, check_smime_output, smime_decrypt};
use env::DnsEnv;
use milter::InProcessMilter;
use postfix::{PostfixEnv, strip_delivery_headers};
use signing::{AUTHSERV, POLICY, header_of, key_dir, openssl_verify, signed_parts};
use tempfile::TempDir;

const WAIT: Duration = Duration::from_secs(30);

const USERS: &[(&str, &str)] = &[("smime", "s-pass"), ("pgp", "p-pass"), ("both", "b-pass")];

struct World {
    env: DnsEnv,
    m: InProcessMilter,
    pf: PostfixEnv,
    _keys: TempDir,
}

fn world() -> World {
    let env = DnsEnv::start();
    let keys = key_dir(&env);
    let map = keys.path().join("logins");
    std::fs::write(
        &map,
        "smime: smime@autoencrypt.test\npgp: pgp@autoencrypt.test\nboth: both@autoencrypt.test\n",
    )
    .unwrap();
    let dir = keys.path().to_owned();
    let m = InProcessMilter::trust_ad_on_thread(env.resolver(), POLICY, |c| {
        c.signing.key_dir = Some(dir.clone());
        c.signing.login_map = Some(dir.join("logins"));
        c.authserv_id = AUTHSERV.to_owned();
        c.harvest.enabled = false;
        c.local_domains = vec!["local.test".to_owned()];
    });
    let pf = PostfixEnv::start_sasl(Some(m.addr), USERS);
    World {
        env,
        m,
        pf,
        _keys: keys,
    }
}

fn message(from: &str, to: &str, id: &str) -> Vec<u8> {
    format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n\
         Message-ID: <{id}@autoencrypt.test>\r\nDate: Wed, 02 Dec 2026 09:00:00 +0100\r\n\
         MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"mix\"\r\n\r\n\
         --mix\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
         Die Zahlen, wie besprochen. \r\nFrom here on: details.\r\n\
         --mix\r\nContent-Type: application/octet-stream; name=\"n.bin\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\nAAECAwQFBgcICQ==\r\n--mix--\r\n"
    )
    .into_bytes()
}

fn delivered(w: &World, to: &str) -> Vec<u8> {
    let mail = w.pf.expect_mail(to, 1, WAIT);
    // The maildir copy has LF line ends; the message on the wire, CRLF.
    postfix::crlf(strip_delivery_headers(&mail[0]))
}

/// NSS `cmsutil` checks the detached signature of `msg` over its first
/// part, with `anchor` as a trusted peer certificate.
fn cmsutil_verifies(msg: &[u8], anchor: &Path) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sql:{}", dir.path().display());
    let ok = |c: &mut Command, what: &str| {
        let o = c
            .output()
            .unwrap_or_else(|e| panic!("{what} (libnss3-tools): {e}"));
        assert!(
            o.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    ok(
        Command::new("certutil").args(["-N", "--empty-password", "-d", &db]),
        "certutil -N",
    );
    ok(
        Command::new("certutil")
            .args(["-A", "-d", &db, "-n", "signer", "-t", "P,P,P", "-i"])
            .arg(anchor),
        "certutil -A",
    );
    let (part, sig) = signed_parts(msg);
    let (_, b64) = signing::header_and_body(&sig);
    let b64: String = String::from_utf8_lossy(b64)
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let der = dir.path().join("sig.der");
    let content = dir.path().join("content");
    std::fs::write(&der, openssl::base64::decode_block(&b64).unwrap()).unwrap();
    std::fs::write(&content, &part).unwrap();
    let o = Command::new("cmsutil")
        .args(["-D", "-d", &db, "-n", "-h", "2", "-i"])
        .arg(&der)
        .arg("-c")
        .arg(&content)
        .output()
        .expect("cmsutil (libnss3-tools; scripts/install-deps)");
    String::from_utf8_lossy(&o.stdout).contains("signer0.status=GoodSignature;")
}

/// RNP checks the detached signature of `msg` over its first part with
/// `public` imported.
fn rnp_verifies(msg: &[u8], public: &Path) -> bool {
    let home = tempfile::tempdir().unwrap();
    let st = Command::new("rnpkeys")
        .arg("--homedir")
        .arg(home.path())
        .arg("--import")
        .arg(public)
        .output()
        .expect("rnpkeys (package rnp; scripts/install-deps)");
    assert!(st.status.success(), "rnpkeys --import");
    let (part, sig) = signed_parts(msg);
    let (_, armored) = signing::header_and_body(&sig);
    let sig_path = home.path().join("signature.asc");
    let content = home.path().join("content");
    std::fs::write(&sig_path, armored).unwrap();
    std::fs::write(&content, &part).unwrap();
    let o = Command::new("rnp")
        .arg("--homedir")
        .arg(home.path())
        .arg("--verify")
        .arg(&sig_path)
        .arg("--source")
        .arg(&content)
        .output()
        .expect("rnp");
    o.status.success() && String::from_utf8_lossy(&o.stderr).contains("Good signature")
}

/// An authenticated S/MIME user's mail arrives signed: openssl and NSS
/// verify it against the user's certificate; a changed byte fails both.
/// OpenPGP: gpg and RNP verify, a changed byte fails both.
#[test]
fn an_authenticated_users_mail_arrives_signed_and_verifies_in_every_engine() {
    let w = world();
    let input = message("smime@autoencrypt.test", "rcpt@example.net", "s1");
    let sent = w.pf.send_authenticated(
        "smime",
        "s-pass",
        "smime@autoencrypt.test",
        &["rcpt@example.net"],
        &input,
    );
    assert!(sent.authenticated() && sent.accepted(), "{sent:?}");
    let out = delivered(&w, "rcpt@example.net");
    let smime_out = out.clone();
    let cert = w.env.user("smime").cert.clone().unwrap();
    let content = openssl_verify(&Scratch::new(), &out, &cert).expect("openssl verifies");
    let (part, _) = signed_parts(&out);
    assert_eq!(content, part);
    assert!(cmsutil_verifies(&out, &cert), "NSS verifies");
    let text = String::from_utf8_lossy(&out).into_owned();
    let tampered = text.replacen("wie besprochen", "wie versprochen", 1);
    assert_ne!(
        tampered, text,
        "the text part stays readable (quoted-printable)"
    );
    assert!(openssl_verify(&Scratch::new(), tampered.as_bytes(), &cert).is_err());
    assert!(!cmsutil_verifies(tampered.as_bytes(), &cert));
    assert!(w.pf.maillog().contains("sasl_username=smime"));

    let input = message("pgp@autoencrypt.test", "rcpt2@example.net", "p1");
    let sent = w.pf.send_authenticated(
        "pgp",
        "p-pass",
        "pgp@autoencrypt.test",
        &["rcpt2@example.net"],
        &input,
    );
    assert!(sent.accepted(), "{sent:?}");
    let out = delivered(&w, "rcpt2@example.net");
    assert!(header_of(&out).contains("application/pgp-signature"));
    let public = w.env.user("pgp").pgp_public.clone().unwrap();
    let gpg = Gpg::new();
    gpg.import(&std::fs::read(&public).unwrap());
    let (part, sig) = signed_parts(&out);
    let (_, armored) = signing::header_and_body(&sig);
    gpg.verify_detached(armored, &part).expect("gpg verifies");
    assert!(rnp_verifies(&out, &public), "RNP verifies");
    let text = String::from_utf8_lossy(&out).into_owned();
    let tampered = text.replacen("wie besprochen", "wie versprochen", 1);
    assert!(!rnp_verifies(tampered.as_bytes(), &public));
    let (part, _) = signed_parts(tampered.as_bytes());
    assert!(gpg.verify_detached(armored, &part).is_err());

    // Both signed messages, sent on to a local recipient on port 25 (the
    // way mail from another server arrives): verified against the zone.
    for (signed, method) in [(&smime_out, "smime"), (&out, "openpgp")] {
        let to = format!("user-{method}@local.test");
        let sent = w.pf.send("someone@elsewhere.test", &[&to], signed);
        assert!(sent.accepted(), "{sent:?}");
        let arrived = delivered(&w, &to);
        let h = header_of(&arrived);
        let ar = h
            .lines()
            .find(|l| l.starts_with("Authentication-Results:"))
            .unwrap_or_else(|| panic!("no Authentication-Results:\n{h}"));
        assert!(
            ar.starts_with(&format!(
                "Authentication-Results: {AUTHSERV}; {method}=pass"
            )),
            "{h}"
        );
    }
}

/// Signed + encrypted (both@ to smime@, S/MIME both ways): the delivered
/// copy decrypts with openssl and the payload verifies with openssl and
/// NSS.
#[test]
fn signed_and_encrypted_mail_decrypts_then_verifies() {
    let w = world();
    let input = message("both@autoencrypt.test", "smime@autoencrypt.test", "b1");
    let sent = w.pf.send_authenticated(
        "both",
        "b-pass",
        "both@autoencrypt.test",
        &["smime@autoencrypt.test"],
        &input,
    );
    assert!(sent.accepted(), "{sent:?}");
    let out = delivered(&w, "smime@autoencrypt.test");
    let der = check_smime_output(&input, &out, false);
    let u = w.env.user("smime");
    let id = SmimeId::from_files(u.cert.as_ref().unwrap(), u.key.as_ref().unwrap());
    let payload = smime_decrypt(&Scratch::new(), &der, "DER", &id).unwrap();
    let cert = w.env.user("both").cert.clone().unwrap();
    openssl_verify(&Scratch::new(), &payload, &cert).expect("the payload verifies");
    assert!(cmsutil_verifies(&payload, &cert));
    let (part, _) = signed_parts(&payload);
    assert!(header_of(&part).contains("hp=\"cipher\""));
}

/// No AUTH, or a login that may not use the From: address: delivered
/// unsigned. Under `sign_required` (strict@example.net): refused with 550
/// 5.7.1 at the end of DATA, nothing delivered.
#[test]
fn unauthenticated_or_unallowed_mail_is_unsigned_or_refused() {
    let w = world();
    let input = message("smime@autoencrypt.test", "plain1@example.net", "u1");
    let sent =
        w.pf.send_submission("smime@autoencrypt.test", &["plain1@example.net"], &input);
    assert!(sent.accepted(), "{sent:?}");
    let out = delivered(&w, "plain1@example.net");
    assert!(header_of(&out).contains("multipart/mixed"), "unsigned");

    let input = message("smime@autoencrypt.test", "plain2@example.net", "u2");
    let sent = w.pf.send_authenticated(
        "pgp",
        "p-pass",
        "smime@autoencrypt.test",
        &["plain2@example.net"],
        &input,
    );
    assert!(sent.accepted(), "{sent:?}");
    let out = delivered(&w, "plain2@example.net");
    assert!(header_of(&out).contains("multipart/mixed"), "unsigned");
    let m = w.m.metrics.render();
    assert!(
        m.contains("autoencrypt_unsigned_total{reason=\"not_authenticated\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("autoencrypt_unsigned_total{reason=\"login_not_allowed\"} 1"),
        "{m}"
    );

    let input = message("smime@autoencrypt.test", "strict@example.net", "u3");
    let sent = w.pf.send_authenticated(
        "pgp",
        "p-pass",
        "smime@autoencrypt.test",
        &["strict@example.net"],
        &input,
    );
    let last = sent.last();
    assert!(
        last.is("550")
            && last
                .text()
                .contains("5.7.1 Message must be signed by the server"),
        "{sent:?}"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(w.pf.maildir_count("strict@example.net"), 0);
}
