//! A hostile sender's signed messages: a signer who is not the `From:`
//! with a certificate for it in the bag, a certificate naming the `From:`
//! beside other addresses, a signature over other content, a `protocol`
//! that is not the second part's type, a signature carrying content of its
//! own, nesting, odd line ends.

use super::certs::{INNER, Id, identity, multipart_signed, padded_identity, sign, signed_message};
use super::*;

fn head(from: &str) -> String {
    format!(
        "{AR_PASS}From: <{from}>\nTo: <bob@example.net>\nSubject: signed\n\
         Date: Tue, 06 Jan 2026 10:00:00 +0100\n"
    )
}

/// Identities made once (RSA key generation is slow).
fn ids() -> &'static (Id, Id, Id) {
    static IDS: OnceLock<(Id, Id, Id)> = OnceLock::new();
    IDS.get_or_init(|| {
        (
            identity(&["alice@example.org"]),
            identity(&["evil@evil.test"]),
            identity(&["evil@evil.test", "alice@example.org"]),
        )
    })
}

fn one(raw: &str) -> Result<LearnedKey, Refusal> {
    let mut all = teaches(raw).expect("a candidate");
    assert_eq!(all.len(), 1, "{all:?}");
    all.remove(0)
}

fn refused(raw: &str) -> &'static str {
    match one(raw) {
        Ok(k) => panic!("learned {} for {}", k.fingerprint, k.address),
        Err(r) => r.as_str(),
    }
}

#[test]
fn the_signers_own_certificate_is_learned() {
    let (alice, _, _) = ids();
    let k = one(&signed_message("alice@example.org", alice, &[])).unwrap();
    assert_eq!(k.address, "alice@example.org");
    assert_eq!(k.key, alice.der());
}

#[test]
fn a_certificate_for_the_from_address_in_the_bag_is_not_the_signers() {
    let (alice, evil, _) = ids();
    // Mallory signs; Alice's certificate rides along in the bag.
    let raw = signed_message("alice@example.org", evil, &[&alice.cert]);
    assert_eq!(refused(&raw), "signer_mismatch");
    // Alice's certificate first in the bag changes nothing.
    let mut certs = openssl::stack::Stack::new().unwrap();
    certs.push(alice.cert.clone()).unwrap();
    let p7 = openssl::pkcs7::Pkcs7::sign(
        &evil.cert,
        &evil.key,
        &certs,
        INNER.as_bytes(),
        openssl::pkcs7::Pkcs7Flags::DETACHED | openssl::pkcs7::Pkcs7Flags::BINARY,
    )
    .unwrap();
    let raw = multipart_signed(
        &head("alice@example.org"),
        "application/pkcs7-signature",
        INNER,
        "application/pkcs7-signature",
        &p7.to_der().unwrap(),
    );
    assert_eq!(refused(&raw), "signer_mismatch");
}

#[test]
fn a_signer_certificate_with_the_from_address_beside_others_is_learned_for_the_from_only() {
    let (_, _, both) = ids();
    let k = one(&signed_message("alice@example.org", both, &[])).unwrap();
    assert_eq!(k.address, "alice@example.org");
    assert_eq!(k.key, both.der());
    // The same signature under the other name of the certificate: learned
    // for that one — never for Alice from Mallory's domain.
    let raw = signed_message("evil@evil.test", both, &[]);
    assert!(teaches(&raw).is_none(), "evil.test is not authenticated");
}

#[test]
fn a_signature_over_other_content_does_not_verify() {
    let (alice, _, _) = ids();
    let other = "Content-Type: text/plain\r\n\r\nSomething else.\r\n";
    let raw = multipart_signed(
        &head("alice@example.org"),
        "application/pkcs7-signature",
        INNER,
        "application/pkcs7-signature",
        &sign(alice, &[], other.as_bytes()),
    );
    assert_eq!(refused(&raw), "bad_signature");
    // One byte of the signed part changed.
    let raw = signed_message("alice@example.org", alice, &[]).replacen("Hello Bob", "Hello Bop", 1);
    assert_eq!(refused(&raw), "bad_signature");
    // The signed part's headers are signed too.
    let good = signed_message("alice@example.org", alice, &[]);
    let raw = good.replacen(
        "charset=us-ascii\r\n\r\nHello",
        "charset=us-ascii\r\nContent-Disposition: inline\r\n\r\nHello",
        1,
    );
    assert_ne!(raw, good);
    assert_eq!(refused(&raw), "bad_signature");
}

#[test]
fn a_signature_carrying_content_of_its_own_teaches_nothing() {
    let (alice, _, _) = ids();
    // Not detached: the SignedData holds "other" content; the part before
    // it says something else.
    let certs = openssl::stack::Stack::new().unwrap();
    let p7 = openssl::pkcs7::Pkcs7::sign(
        &alice.cert,
        &alice.key,
        &certs,
        INNER.as_bytes(),
        openssl::pkcs7::Pkcs7Flags::BINARY,
    )
    .unwrap();
    let raw = multipart_signed(
        &head("alice@example.org"),
        "application/pkcs7-signature",
        "Content-Type: text/plain\r\n\r\nPay Mallory.\r\n",
        "application/pkcs7-signature",
        &p7.to_der().unwrap(),
    );
    assert!(one(&raw).is_err(), "learned from a dual-content signature");
}

#[test]
fn protocol_and_part_type_must_both_say_pkcs7_signature() {
    let (alice, _, _) = ids();
    let sig = sign(alice, &[], INNER.as_bytes());
    // The part is not a PKCS #7 signature.
    for part in [
        "application/pgp-signature",
        "application/octet-stream",
        "text/plain",
    ] {
        let raw = multipart_signed(
            &head("alice@example.org"),
            "application/pkcs7-signature",
            INNER,
            part,
            &sig,
        );
        assert_eq!(refused(&raw), "malformed", "{part}");
    }
    // The top level says PGP/MIME (or nothing): not S/MIME at all.
    for protocol in ["application/pgp-signature", "application/octet-stream"] {
        let raw = multipart_signed(
            &head("alice@example.org"),
            protocol,
            INNER,
            "application/pkcs7-signature",
            &sig,
        );
        assert_eq!(screen(&parse(&raw).0), Screen::Nothing, "{protocol}");
    }
    // The v2 names are the same thing, in either place.
    let raw = multipart_signed(
        &head("alice@example.org"),
        "application/x-pkcs7-signature",
        INNER,
        "application/pkcs7-signature",
        &sig,
    );
    assert!(one(&raw).is_ok());
}

#[test]
fn a_signed_part_nested_in_another_is_not_examined() {
    let (alice, _, _) = ids();
    let signed = signed_message("alice@example.org", alice, &[]);
    let (_, body) = parse(&signed);
    let body = String::from_utf8(body).unwrap();
    let ct = "multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256;\n \
              boundary=\"----B0UNDARY\"";
    let raw = format!(
        "{}MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"outer\"\n\n--outer\n\
         Content-Type: {ct}\n\n{body}\n--outer--\n",
        head("alice@example.org")
    );
    assert_eq!(screen(&parse(&raw).0), Screen::Nothing);
}

#[test]
fn extra_parts_and_missing_delimiters_are_malformed() {
    let (alice, _, _) = ids();
    let good = signed_message("alice@example.org", alice, &[]);
    let three = good.replacen(
        "\n------B0UNDARY--",
        "\n------B0UNDARY\nContent-Type: text/plain\n\nextra\n------B0UNDARY--",
        1,
    );
    assert_eq!(refused(&three), "malformed");
    let open = good.replacen("\n------B0UNDARY--\n", "\n", 1);
    assert_eq!(refused(&open), "malformed");
    // After the close delimiter: the epilogue, ignored.
    let epilogue = format!("{good}------B0UNDARY\nContent-Type: text/plain\n\nlater\n");
    assert!(one(&epilogue).is_ok());
}

#[test]
fn a_body_with_bare_line_feeds_does_not_verify() {
    let (alice, _, _) = ids();
    let raw = signed_message("alice@example.org", alice, &[]);
    let (h, b) = parse(&raw);
    let lf: Vec<u8> = String::from_utf8(b)
        .unwrap()
        .replace("\r\n", "\n")
        .into_bytes();
    let c = candidate(&h);
    let got = examine(&c, &h, &lf, registry(), SystemTime::now());
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].as_ref().map_err(Refusal::as_str).err(),
        Some("bad_signature")
    );
}

#[test]
fn a_signer_certificate_of_megabytes_is_not_stored() {
    // Mallory's own domain, honestly authenticated; the certificate
    // carries a 1 MiB extension.
    let mallory = padded_identity(&["m1@evil.test"], 1 << 20);
    let raw = signed_message("m1@evil.test", &mallory, &[])
        .replace("header.d=example.org", "header.d=evil.test");
    let keys = learned(&raw);
    assert!(
        keys.iter().all(|k| k.key.len() <= 64 * 1024),
        "learned a certificate of {} bytes",
        keys.iter().map(|k| k.key.len()).max().unwrap_or(0)
    );
}
