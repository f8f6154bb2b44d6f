//! Inbound signature verification (`autoencrypt_milter::signatures`)
//! over messages signed by independent tools: `openssl cms -sign`
//! (S/MIME detached and `-nodetach` opaque, RSA and EC, with and without
//! the certificate, two signers) and `gpg --detach-sign --armor` in a
//! temporary GNUPGHOME, wrapped by hand in RFC 3156 `multipart/signed`.
//! Keys reach the verifier as the milter's key service hands them over:
//! validated through the public backend registry.
//!
//! `openssl` and `gpg` must be installed: the tests fail, never skip,
//! without them.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod common;

use std::process::Command;
use std::time::SystemTime;

use autoencrypt_milter::Address;
use autoencrypt_milter::backend::{KeyMaterial, Method, Recipient, Registry};
use autoencrypt_milter::harvest::smime::SignedForm;
use autoencrypt_milter::keys::{Provenance, Security, SourceKind};
use autoencrypt_milter::message::Message;
use autoencrypt_milter::signatures::{Form, Verdict, signed_form, verify};
use common::*;

const ALICE: &str = "alice@example.org";

/// A signed part as a client writes it: its own header, CRLF, text with
/// a trailing space and a non-ASCII line (8bit would be re-encoded by
/// clients; quoted-printable is what they send).
const ENTITY: &str = "Content-Type: text/plain; charset=utf-8\r\n\
Content-Transfer-Encoding: quoted-printable\r\n\
\r\n\
Hello Bob,=20\r\n\
the figures: =C3=A4 12.5 %\r\n\
\r\n\
-- \r\n\
Alice\r\n";

fn key(method: Method, data: Vec<u8>, who: &str) -> Recipient {
    let material = KeyMaterial {
        method,
        data,
        origin: "test".into(),
        provenance: Provenance::now(SourceKind::Dane, Security::Secure),
        bound_addresses: Vec::new(),
    };
    Registry::new()
        .get(method)
        .validate(&material, &Address::parse(who).unwrap(), SystemTime::now())
        .unwrap_or_else(|e| panic!("key for {who}: {e}"))
}

fn smime_key(id: &SmimeId) -> Recipient {
    key(Method::Smime, id.cert.to_pem().unwrap(), ALICE)
}

/// The message as the milter gets it: the tool's MIME header and body
/// behind the transport header, every line ending CRLF (SMTP's).
fn deliver(tool_output: &[u8]) -> Vec<u8> {
    let mut m = format!("From: Alice <{ALICE}>\r\nTo: bob@example.net\r\nSubject: figures\r\n")
        .into_bytes();
    m.extend_from_slice(&to_crlf(tool_output));
    m
}

fn check(raw: &[u8], keys: &[Recipient]) -> (Form, Verdict) {
    let msg = Message::parse(raw);
    let body = &raw[msg.body_offset..];
    let form = signed_form(&msg.headers).expect("a signed form");
    (form, verify(&msg.headers, body, form, keys))
}

fn assert_pass(v: &Verdict, want: &Recipient) {
    assert_eq!(
        v,
        &Verdict::Pass {
            fingerprint: want.fingerprint.clone()
        }
    );
}

fn assert_policy(v: &Verdict) {
    assert!(matches!(v, Verdict::Policy(_)), "{v:?}");
}

fn assert_fail(v: &Verdict) {
    assert!(matches!(v, Verdict::Fail(_)), "{v:?}");
}

/// `openssl cms -sign` with any number of signers and extra options.
fn cms_sign(s: &Scratch, signers: &[&SmimeId], extra: &[&str]) -> Vec<u8> {
    let input = s.file("entity");
    let output = s.file("signed");
    std::fs::write(&input, ENTITY).unwrap();
    let mut cmd = Command::new("openssl");
    cmd.args(["cms", "-sign", "-md", "sha256"]).args(extra);
    for id in signers {
        cmd.arg("-signer")
            .arg(&id.cert_path)
            .arg("-inkey")
            .arg(&id.key_path);
    }
    cmd.arg("-in").arg(&input).arg("-out").arg(&output);
    let out = cmd.output().expect("run openssl cms -sign");
    assert!(
        out.status.success(),
        "openssl cms -sign: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(&output).unwrap()
}

/// The signed bytes with one byte of the text changed (the `H` of
/// "Hello"), the rest untouched.
fn tamper(raw: &[u8]) -> Vec<u8> {
    let at = find(raw, b"Hello").expect("the signed text");
    let mut out = raw.to_vec();
    out[at] = b'J';
    out
}

#[test]
fn openssl_detached_and_opaque_pass_with_the_from_key() {
    let s = Scratch::new();
    for kind in [KeyKind::Rsa, KeyKind::Ec] {
        let alice = SmimeId::generate(&s.work, "alice", &CertSpec::good(ALICE, kind));
        let k = smime_key(&alice);
        let detached = deliver(&smime_sign_tool(&s, ENTITY.as_bytes(), &alice, true));
        let (form, v) = check(&detached, std::slice::from_ref(&k));
        assert_eq!(form, Form::Smime(SignedForm::Detached));
        assert_pass(&v, &k);
        let opaque = deliver(&smime_sign_tool(&s, ENTITY.as_bytes(), &alice, false));
        let (form, v) = check(&opaque, std::slice::from_ref(&k));
        assert_eq!(form, Form::Smime(SignedForm::Opaque));
        assert_pass(&v, &k);
    }
}

#[test]
fn openssl_changed_bytes_fail() {
    let s = Scratch::new();
    let alice = SmimeId::generate(&s.work, "alice", &CertSpec::good(ALICE, KeyKind::Rsa));
    let k = smime_key(&alice);
    let detached = deliver(&smime_sign_tool(&s, ENTITY.as_bytes(), &alice, true));
    assert_fail(&check(&tamper(&detached), &[k]).1);
}

#[test]
fn openssl_without_the_certificate_needs_the_key() {
    let s = Scratch::new();
    let alice = SmimeId::generate(&s.work, "alice", &CertSpec::good(ALICE, KeyKind::Rsa));
    let k = smime_key(&alice);
    let raw = deliver(&cms_sign(&s, &[&alice], &["-nocerts"]));
    assert_pass(&check(&raw, std::slice::from_ref(&k)).1, &k);
    assert_eq!(
        check(&raw, &[]).1,
        Verdict::Policy("no key found for the From: address".into())
    );
}

#[test]
fn openssl_by_another_key_is_policy() {
    let s = Scratch::new();
    let alice = SmimeId::generate(&s.work, "alice", &CertSpec::good(ALICE, KeyKind::Rsa));
    // Mallory's certificate names Alice's address too: only the key
    // service's word makes a key Alice's.
    let mallory = SmimeId::generate(&s.work, "mallory", &CertSpec::good(ALICE, KeyKind::Rsa));
    let raw = deliver(&smime_sign_tool(&s, ENTITY.as_bytes(), &mallory, true));
    let (_, v) = check(&raw, &[smime_key(&alice)]);
    assert_policy(&v);
    let Verdict::Policy(why) = v else { return };
    assert!(
        why.contains("not a key found for the From: address"),
        "{why}"
    );
    assert_policy(&check(&raw, &[]).1);
}

#[test]
fn openssl_two_signers_pass_when_one_is_the_from_key() {
    let s = Scratch::new();
    let alice = SmimeId::generate(&s.work, "alice", &CertSpec::good(ALICE, KeyKind::Rsa));
    let gateway = SmimeId::generate(
        &s.work,
        "gateway",
        &CertSpec::good("gateway@example.org", KeyKind::Ec),
    );
    let k = smime_key(&alice);
    let raw = deliver(&cms_sign(&s, &[&gateway, &alice], &[]));
    assert_pass(&check(&raw, std::slice::from_ref(&k)).1, &k);
    assert_fail(&check(&tamper(&raw), std::slice::from_ref(&k)).1);
    let only_gateway = deliver(&cms_sign(&s, &[&gateway], &[]));
    assert_policy(&check(&only_gateway, &[k]).1);
}

/// A certificate made by `openssl req`, which writes a subject key
/// identifier (the certificates of `common` have none).
fn openssl_req_id(s: &Scratch) -> SmimeId {
    let cert = s.file("req.cert.pem");
    let key = s.file("req.key.pem");
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
        ])
        .args(["-subj", "/CN=Alice", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args(["-addext", &format!("subjectAltName=email:{ALICE}")])
        .args(["-addext", "keyUsage=digitalSignature,keyEncipherment"])
        .args(["-addext", "extendedKeyUsage=emailProtection"])
        .output()
        .expect("run openssl req");
    assert!(
        out.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    SmimeId::from_files(&cert, &key)
}

#[test]
fn openssl_signer_named_by_key_identifier_is_not_processed() {
    // OpenSSL's PKCS #7 reader, the one this verifier uses, does not read
    // a SignerInfo that names its signer by subject key identifier (CMS
    // version 3, `-keyid`): a permanent error, never a pass.
    let s = Scratch::new();
    let alice = openssl_req_id(&s);
    let k = smime_key(&alice);
    // The same certificate, named by issuer and serial number, passes.
    let raw = deliver(&cms_sign(&s, &[&alice], &[]));
    assert_pass(&check(&raw, std::slice::from_ref(&k)).1, &k);
    let raw = deliver(&cms_sign(&s, &[&alice], &["-keyid"]));
    let v = check(&raw, &[smime_key(&alice)]).1;
    assert!(matches!(v, Verdict::PermError(_)), "{v:?}");
}

/// An RFC 3156 §5 message around `ENTITY` and an armored signature, as
/// Thunderbird lays it out.
fn pgp_mime(signed: &[u8], armor: &[u8]) -> Vec<u8> {
    let mut m = format!(
        "From: Alice <{ALICE}>\r\nTo: bob@example.net\r\nSubject: figures\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/signed; micalg=pgp-sha256;\r\n protocol=\"application/pgp-signature\";\r\n \
         boundary=\"------------sig0123456789\"\r\n\r\n\
         This is an OpenPGP/MIME signed message (RFC 4880 and 3156)\r\n\
         --------------sig0123456789\r\n"
    )
    .into_bytes();
    m.extend_from_slice(signed);
    m.extend_from_slice(
        b"\r\n--------------sig0123456789\r\n\
          Content-Type: application/pgp-signature; name=\"OpenPGP_signature.asc\"\r\n\
          Content-Description: OpenPGP digital signature\r\n\
          Content-Disposition: attachment; filename=\"OpenPGP_signature.asc\"\r\n\r\n",
    );
    m.extend_from_slice(&to_crlf(armor));
    m.extend_from_slice(b"\r\n--------------sig0123456789--\r\n");
    m
}

fn textmode_sign(gpg: &Gpg, data: &[u8], fpr: &str) -> Vec<u8> {
    let input = gpg.home().join("text-in");
    let output = gpg.home().join("text-out");
    std::fs::write(&input, data).unwrap();
    let out = gpg
        .cmd()
        .args(["--armor", "--textmode", "--local-user", fpr, "--output"])
        .arg(&output)
        .arg("--detach-sign")
        .arg(&input)
        .output()
        .expect("run gpg --detach-sign --textmode");
    assert!(
        out.status.success(),
        "gpg --textmode: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(&output).unwrap()
}

#[test]
fn gpg_detached_signatures_pass_with_the_from_key() {
    let gpg = Gpg::new();
    for kind in [PgpKind::Cv25519, PgpKind::Rsa3072] {
        let fpr = gpg.generate(ALICE, kind, "0", None);
        let k = key(Method::OpenPgp, gpg.export(&fpr, true), ALICE);
        assert_eq!(k.fingerprint, fpr);
        for armor in [
            gpg.detach_sign(ENTITY.as_bytes(), &fpr),
            textmode_sign(&gpg, ENTITY.as_bytes(), &fpr),
        ] {
            let raw = pgp_mime(ENTITY.as_bytes(), &armor);
            let (form, v) = check(&raw, std::slice::from_ref(&k));
            assert_eq!(form, Form::PgpMime);
            assert_pass(&v, &k);
            assert_fail(&check(&tamper(&raw), std::slice::from_ref(&k)).1);
        }
    }
}

#[test]
fn gpg_signature_by_another_key_is_policy() {
    let gpg = Gpg::new();
    let alice = gpg.generate(ALICE, PgpKind::Cv25519, "0", None);
    let mallory = gpg.generate(ALICE, PgpKind::Cv25519, "0", None);
    let k = key(Method::OpenPgp, gpg.export(&alice, true), ALICE);
    let raw = pgp_mime(
        ENTITY.as_bytes(),
        &gpg.detach_sign(ENTITY.as_bytes(), &mallory),
    );
    let (_, v) = check(&raw, &[k]);
    assert_policy(&v);
    assert_eq!(
        check(&raw, &[]).1,
        Verdict::Policy("no key found for the From: address".into())
    );
}
