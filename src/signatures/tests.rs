//! Keys and signatures made here: S/MIME with OpenSSL as clients sign
//! (PKCS #7 detached, certificate embedded or not; opaque), OpenPGP with
//! Sequoia (a detached signature over a CRLF part, as Thunderbird
//! writes). The verdicts; the field is `results_tests.rs`'s.

use std::io::Write as _;
use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::hash::MessageDigest;
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::stack::Stack;
use openssl::x509::extension::{ExtendedKeyUsage, KeyUsage, SubjectAlternativeName};
use openssl::x509::{X509, X509Builder, X509NameBuilder};
use sequoia_openpgp as openpgp;
use sequoia_openpgp::cert::CertBuilder;
use sequoia_openpgp::policy::StandardPolicy;
use sequoia_openpgp::serialize::SerializeInto;
use sequoia_openpgp::serialize::stream::{Armorer, Message as PgpMessage, Signer};

use super::*;
use crate::address::Address;
use crate::backend::{KeyMaterial, Registry};
use crate::material::{Provenance, Security, SourceKind};
use crate::message::Message;

const ENTITY: &[u8] =
    b"Content-Type: text/plain; charset=utf-8\r\n\r\nHello Bob,\r\nthe figures are attached.\r\n";

fn addr(s: &str) -> Address {
    Address::parse(s).unwrap()
}

fn recipient(method: Method, data: Vec<u8>, who: &str) -> Recipient {
    let key = KeyMaterial {
        method,
        data,
        origin: "test".into(),
        provenance: Provenance::now(SourceKind::Test, Security::Local),
        bound_addresses: Vec::new(),
    };
    Registry::new()
        .get(method)
        .validate(&key, &addr(who), SystemTime::now())
        .unwrap()
}

struct SmimeId {
    cert: X509,
    key: PKey<Private>,
}

fn smime_id(email: &str) -> SmimeId {
    let mut serial = BigNum::new().unwrap();
    serial.rand(64, MsbOption::MAYBE_ZERO, false).unwrap();
    smime_id_serial(email, &serial)
}

fn smime_id_serial(email: &str, serial: &BigNum) -> SmimeId {
    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", email).unwrap();
    let name = name.build();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&serial.to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(365).unwrap())
        .unwrap();
    b.append_extension(
        KeyUsage::new()
            .digital_signature()
            .key_encipherment()
            .build()
            .unwrap(),
    )
    .unwrap();
    b.append_extension(ExtendedKeyUsage::new().email_protection().build().unwrap())
        .unwrap();
    let san = SubjectAlternativeName::new()
        .email(email)
        .build(&b.x509v3_context(None, None))
        .unwrap();
    b.append_extension(san).unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    SmimeId {
        cert: b.build(),
        key,
    }
}

fn smime_key(id: &SmimeId, who: &str) -> Recipient {
    recipient(Method::Smime, id.cert.to_pem().unwrap(), who)
}

fn b64_lines(der: &[u8]) -> String {
    let text = STANDARD.encode(der);
    let mut out = String::new();
    for chunk in text.as_bytes().chunks(76) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push_str("\r\n");
    }
    out
}

fn detached_sig(id: &SmimeId, data: &[u8], flags: Pkcs7Flags) -> Vec<u8> {
    let none = Stack::new().unwrap();
    Pkcs7::sign(
        &id.cert,
        &id.key,
        &none,
        data,
        Pkcs7Flags::DETACHED | Pkcs7Flags::BINARY | flags,
    )
    .unwrap()
    .to_der()
    .unwrap()
}

/// A whole message: header section and body, split as the milter sees it.
fn split(raw: &[u8]) -> (Vec<HeaderField>, Vec<u8>) {
    let m = Message::parse(raw);
    (m.headers, raw[m.body_offset..].to_vec())
}

fn multipart(protocol: &str, signed: &[u8], sig_part: &str) -> Vec<u8> {
    let mut m = format!(
        "From: alice@example.org\r\nTo: bob@example.net\r\nSubject: figures\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/signed; protocol=\"{protocol}\"; micalg=sha-256; boundary=\"b1\"\r\n\r\n\
         This is a signed message.\r\n--b1\r\n"
    )
    .into_bytes();
    m.extend_from_slice(signed);
    m.extend_from_slice(b"\r\n--b1\r\n");
    m.extend_from_slice(sig_part.as_bytes());
    m.extend_from_slice(b"\r\n--b1--\r\n");
    m
}

fn smime_detached(signed: &[u8], der: &[u8]) -> Vec<u8> {
    multipart(
        "application/pkcs7-signature",
        signed,
        &format!(
            "Content-Type: application/pkcs7-signature; name=smime.p7s\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n{}",
            b64_lines(der)
        ),
    )
}

fn run(raw: &[u8], keys: &[Recipient]) -> Verdict {
    let (h, b) = split(raw);
    let form = signed_form(&h).expect("a signed form");
    verify(&h, &b, form, keys)
}

fn pass(v: &Verdict, want: &Recipient) {
    assert_eq!(
        v,
        &Verdict::Pass {
            fingerprint: want.fingerprint.clone()
        }
    );
}

fn assert_policy(v: &Verdict, words: &str) {
    match v {
        Verdict::Policy(why) => assert!(why.contains(words), "{why}"),
        other => panic!("expected policy ({words}), got {other:?}"),
    }
}

fn assert_perm(v: &Verdict) {
    assert!(matches!(v, Verdict::PermError(_)), "{v:?}");
}

#[test]
fn smime_detached_passes_with_and_without_the_certificate() {
    let alice = smime_id("alice@example.org");
    let key = smime_key(&alice, "alice@example.org");
    for flags in [Pkcs7Flags::empty(), Pkcs7Flags::NOCERTS] {
        let raw = smime_detached(ENTITY, &detached_sig(&alice, ENTITY, flags));
        let v = run(&raw, std::slice::from_ref(&key));
        pass(&v, &key);
    }
}

#[test]
fn smime_one_changed_byte_fails() {
    let alice = smime_id("alice@example.org");
    let key = smime_key(&alice, "alice@example.org");
    let der = detached_sig(&alice, ENTITY, Pkcs7Flags::empty());
    let mut changed = ENTITY.to_vec();
    let at = changed.len() - 5;
    changed[at] ^= 0x20;
    let v = run(&smime_detached(&changed, &der), &[key]);
    assert!(matches!(v, Verdict::Fail(_)), "{v:?}");
}

#[test]
fn smime_signed_by_another_key_is_policy() {
    let alice = smime_id("alice@example.org");
    let mallory = smime_id("alice@example.org");
    let key = smime_key(&alice, "alice@example.org");
    let raw = smime_detached(ENTITY, &detached_sig(&mallory, ENTITY, Pkcs7Flags::empty()));
    let v = run(&raw, &[key]);
    assert_policy(&v, "not a key found for the From: address");
    let Verdict::Policy(why) = v else { return };
    assert!(why.contains(&crate::backend::smime::fingerprint(&mallory.cert)));
    // Not embedded and not a key: nothing to check it with.
    let raw = smime_detached(ENTITY, &detached_sig(&mallory, ENTITY, Pkcs7Flags::NOCERTS));
    assert_policy(
        &run(&raw, &[smime_key(&alice, "alice@example.org")]),
        "From: address",
    );
}

#[test]
fn smime_look_alike_certificate_fails() {
    // Mallory's certificate has Alice's issuer name and serial number:
    // the signer info names both, and the key service's certificate is
    // the one that is found for them.
    let alice = smime_id("alice@example.org");
    let serial = alice.cert.serial_number().to_bn().unwrap();
    let mallory = smime_id_serial("alice@example.org", &serial);
    let key = smime_key(&alice, "alice@example.org");
    let raw = smime_detached(ENTITY, &detached_sig(&mallory, ENTITY, Pkcs7Flags::empty()));
    let v = run(&raw, &[key]);
    assert!(matches!(v, Verdict::Fail(_)), "{v:?}");
}

#[test]
fn smime_without_keys_is_policy() {
    let alice = smime_id("alice@example.org");
    for flags in [Pkcs7Flags::empty(), Pkcs7Flags::NOCERTS] {
        let raw = smime_detached(ENTITY, &detached_sig(&alice, ENTITY, flags));
        assert_eq!(
            run(&raw, &[]),
            Verdict::Policy("no key found for the From: address".into())
        );
    }
}

#[test]
fn smime_opaque_passes_and_keys_of_another_method_are_ignored() {
    let alice = smime_id("alice@example.org");
    let key = smime_key(&alice, "alice@example.org");
    let none = Stack::new().unwrap();
    let der = Pkcs7::sign(&alice.cert, &alice.key, &none, ENTITY, Pkcs7Flags::BINARY)
        .unwrap()
        .to_der()
        .unwrap();
    let raw = format!(
        "From: alice@example.org\r\nMIME-Version: 1.0\r\n\
         Content-Type: application/pkcs7-mime; smime-type=signed-data; name=smime.p7m\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{}",
        b64_lines(&der)
    );
    let pgp = pgp_id("alice@example.org");
    let v = run(
        raw.as_bytes(),
        &[pgp_key(&pgp, "alice@example.org"), key.clone()],
    );
    pass(&v, &key);
    assert_eq!(
        signed_form(&split(raw.as_bytes()).0),
        Some(Form::Smime(SignedForm::Opaque))
    );
}

#[test]
fn smime_malformed_is_permerror() {
    let alice = smime_id("alice@example.org");
    let key = smime_key(&alice, "alice@example.org");
    let keys = [key];
    let der = detached_sig(&alice, ENTITY, Pkcs7Flags::empty());
    let good = smime_detached(ENTITY, &der);
    // One part only.
    let one = b"Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; boundary=b1\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nx\r\n--b1--\r\n";
    assert_perm(&run(one, &keys));
    // Garbage base64.
    let text = String::from_utf8(smime_detached(ENTITY, b""))
        .unwrap()
        .replace(
            "Content-Transfer-Encoding: base64\r\n\r\n",
            "Content-Transfer-Encoding: base64\r\n\r\n*** not base64 ***",
        );
    assert_perm(&run(text.as_bytes(), &keys));
    // Valid base64 that is no SignedData.
    let junk = smime_detached(ENTITY, b"junk that is not DER");
    assert_perm(&run(&junk, &keys));
    // No boundary.
    let text = String::from_utf8(good.clone())
        .unwrap()
        .replace("; boundary=\"b1\"", "");
    assert_perm(&run(text.as_bytes(), &keys));
    // The form the caller names must be the message's.
    let (h, b) = split(&good);
    assert_perm(&verify(&h, &b, Form::Smime(SignedForm::Opaque), &keys));
    assert_perm(&verify(&h, &b, Form::PgpMime, &keys));
}

fn pgp_id(email: &str) -> (openpgp::Cert, Vec<u8>) {
    let (cert, _) = CertBuilder::general_purpose(Some(format!("Alice <{email}>")))
        .generate()
        .unwrap();
    let public = cert
        .clone()
        .strip_secret_key_material()
        .armored()
        .to_vec()
        .unwrap();
    (cert, public)
}

fn pgp_key(id: &(openpgp::Cert, Vec<u8>), who: &str) -> Recipient {
    recipient(Method::OpenPgp, id.1.clone(), who)
}

/// An armored detached signature over `data`, as `gpg --detach-sign
/// --armor` and Thunderbird write it.
fn pgp_sign(cert: &openpgp::Cert, data: &[u8]) -> String {
    let policy = StandardPolicy::new();
    let keypair = cert
        .keys()
        .with_policy(&policy, None)
        .secret()
        .for_signing()
        .next()
        .unwrap()
        .key()
        .clone()
        .into_keypair()
        .unwrap();
    let mut sink = Vec::new();
    let message = PgpMessage::new(&mut sink);
    let message = Armorer::new(message)
        .kind(openpgp::armor::Kind::Signature)
        .build()
        .unwrap();
    let mut signer = Signer::new(message, keypair)
        .unwrap()
        .detached()
        .build()
        .unwrap();
    signer.write_all(data).unwrap();
    signer.finalize().unwrap();
    String::from_utf8(sink).unwrap()
}

fn pgp_mime(signed: &[u8], armor: &str) -> Vec<u8> {
    multipart(
        "application/pgp-signature",
        signed,
        &format!(
            "Content-Type: application/pgp-signature; name=\"OpenPGP_signature.asc\"\r\n\
             Content-Description: OpenPGP digital signature\r\n\
             Content-Disposition: attachment; filename=\"OpenPGP_signature.asc\"\r\n\r\n{}",
            armor.replace("\r\n", "\n").replace('\n', "\r\n")
        ),
    )
}

#[test]
fn the_signed_forms_are_told_from_the_headers() {
    let form = |ct: &str| signed_form(&[HeaderField::new("Content-Type", ct)]);
    assert_eq!(
        form(" Multipart/Signed; PROTOCOL=\"Application/PGP-Signature\"; boundary=x"),
        Some(Form::PgpMime)
    );
    assert_eq!(
        form(" multipart/signed; protocol=\"application/pkcs7-signature\"; boundary=x"),
        Some(Form::Smime(SignedForm::Detached))
    );
    for ct in [
        " multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=x",
        " multipart/signed; boundary=x",
        " text/plain",
    ] {
        assert_eq!(form(ct), None, "{ct}");
    }
    assert_eq!(Form::PgpMime.method(), Method::OpenPgp);
    assert_eq!(Form::Smime(SignedForm::Opaque).method(), Method::Smime);
}

#[path = "tests_pgp.rs"]
mod pgp_mime;
