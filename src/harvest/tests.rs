use super::*;
use crate::message::Message;
use std::time::{Duration, UNIX_EPOCH};

const ID: &str = "mx.example.org";

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/harvest/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn message(name: &str) -> (Vec<HeaderField>, Vec<u8>) {
    let raw = fixture(name);
    let m = Message::parse(&raw);
    (m.headers, raw[m.body_offset..].to_vec())
}

/// The fixtures' Autocrypt headers are under no DKIM signature: taken as
/// the milter takes them with `harvest.autocrypt_unsigned` on (the
/// signature rule has its own test).
fn candidate(headers: &[HeaderField]) -> Candidate {
    match screen(headers, ID) {
        Screen::Candidate(c) => Candidate {
            autocrypt_signed: true,
            ..c
        },
        other => panic!("not a candidate: {other:?}"),
    }
}

#[test]
fn an_autocrypt_header_outside_the_dkim_signature_is_refused() {
    let (h, b) = message("autocrypt-gpg.eml");
    let c = match screen(&h, ID) {
        Screen::Candidate(c) => c,
        other => panic!("{other:?}"),
    };
    assert!(!c.autocrypt_signed);
    assert_eq!(
        examine(&c, &h, &b, &Registry::new(), SystemTime::now()),
        [Err(Refusal::UnsignedAutocrypt)]
    );
    // Under a signature of the From: domain that lists the field, it is
    // learned.
    let mut signed = vec![HeaderField::new(
        "DKIM-Signature",
        format!(
            " v=1; d={}; s=s; h=from:autocrypt; bh=x; b=y",
            c.from.domain()
        )
        .into_bytes(),
    )];
    signed.extend(h.iter().cloned());
    let c = match screen(&signed, ID) {
        Screen::Candidate(c) => c,
        other => panic!("{other:?}"),
    };
    assert!(c.autocrypt_signed);
    assert!(examine(&c, &signed, &b, &Registry::new(), SystemTime::now())[0].is_ok());
}

/// `examine` of a fixture that must be a candidate.
fn learned(name: &str) -> Vec<Result<LearnedKey, Refusal>> {
    let (h, b) = message(name);
    examine(&candidate(&h), &h, &b, &Registry::new(), SystemTime::now())
}

fn one(name: &str) -> Result<LearnedKey, Refusal> {
    let mut all = learned(name);
    assert_eq!(all.len(), 1, "{name}: {all:?}");
    all.remove(0)
}

fn der(pem: &str) -> Vec<u8> {
    openssl::x509::X509::from_pem(&fixture(pem))
        .unwrap()
        .to_der()
        .unwrap()
}

fn without(headers: &[HeaderField], name: &str) -> Vec<HeaderField> {
    headers.iter().filter(|h| !h.is(name)).cloned().collect()
}

#[test]
fn screen_finds_candidates_and_their_effective_date() {
    let (h, _) = message("smime-detached.eml");
    let c = candidate(&h);
    assert_eq!(c.from.to_string(), "alice@example.org");
    assert_eq!(c.by, AuthBy::Dkim);
    assert!(c.smime && !c.autocrypt);
    // Tue, 06 Jan 2026 10:00:00 +0100
    assert_eq!(c.effective, 1_767_690_000);
    let (h, _) = message("autocrypt-gpg.eml");
    let c = candidate(&h);
    assert!(!c.smime && c.autocrypt);
    assert_eq!(c.from.to_string(), "carol@example.org");
    // A Date: in the future is the time of receipt.
    let (h, _) = message("autocrypt-future-date.eml");
    let written = h.iter().find(|f| f.is("Date")).unwrap();
    assert_eq!(date::parse(&written.value), Ok(32_472_144_000));
    let now = UNIX_EPOCH + Duration::from_secs(1_900_000_000);
    let Screen::Candidate(c) = screen_at(&h, ID, now) else {
        panic!()
    };
    assert_eq!(c.effective, 1_900_000_000);
}

#[test]
fn screen_without_key_material_is_nothing() {
    let (h, _) = message("rfc8601-b5.eml");
    assert_eq!(screen(&h, "example.com"), Screen::Nothing);
    assert_eq!(screen(&[], ID), Screen::Nothing);
}

#[test]
fn screen_without_authentication_for_the_from_domain() {
    let (h, _) = message("smime-detached.eml");
    let alice = Some(Address::parse("alice@example.org").unwrap());
    // Another authserv-id, none configured, no field at all.
    for (headers, id) in [
        (h.clone(), "other.example.org"),
        (h.clone(), ""),
        (without(&h, "Authentication-Results"), ID),
    ] {
        assert_eq!(
            screen(&headers, id),
            Screen::Unauthenticated {
                from: alice.clone()
            }
        );
    }
    // A pass for another domain (a forged From:).
    let mut forged = without(&h, "Authentication-Results");
    forged.push(HeaderField::new(
        "Authentication-Results",
        " mx.example.org; dkim=pass header.d=evil.test; dmarc=pass header.from=evil.test",
    ));
    assert_eq!(screen(&forged, ID), Screen::Unauthenticated { from: alice });
    // No single From: mailbox.
    let mut two = h.clone();
    two.push(HeaderField::new("From", " bob@example.org"));
    assert_eq!(screen(&two, ID), Screen::Unauthenticated { from: None });
    let mut none = without(&h, "From");
    assert_eq!(screen(&none, ID), Screen::Unauthenticated { from: None });
    none.push(HeaderField::new("From", " a@example.org, b@example.org"));
    assert_eq!(screen(&none, ID), Screen::Unauthenticated { from: None });
}

#[test]
fn autocrypt_from_auto_replies_and_reports_is_not_key_material() {
    let (h, _) = message("autocrypt-gpg.eml");
    let mut replied = h.clone();
    replied.push(HeaderField::new(
        "Auto-Submitted",
        " Auto-Replied (vacation)",
    ));
    assert_eq!(screen(&replied, ID), Screen::Nothing);
    let mut report = without(&h, "Content-Type");
    report.push(HeaderField::new(
        "Content-Type",
        " multipart/report; report-type=disposition-notification; boundary=x",
    ));
    assert_eq!(screen(&report, ID), Screen::Nothing);
    // auto-generated (a list, a notification) is not a reply.
    let mut generated = h.clone();
    generated.push(HeaderField::new("Auto-Submitted", " auto-generated"));
    assert!(matches!(screen(&generated, ID), Screen::Candidate(_)));
}

#[test]
fn signed_messages_teach_the_signers_certificate() {
    for name in [
        "smime-detached.eml",
        "smime-opaque.eml",
        "smime-x-pkcs7.eml",
    ] {
        let k = one(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        let alice = der("alice.pem");
        assert_eq!(k.key, alice, "{name}");
        assert_eq!(
            k.fingerprint,
            identify(Method::Smime, &alice).unwrap().fingerprint
        );
        assert_eq!(k.address, "alice@example.org");
        assert_eq!(
            (k.method, k.how),
            (Method::Smime, LearnedFrom::SmimeSignature)
        );
        assert_eq!(k.prefer_encrypt, None);
        assert_eq!(k.effective, 1_767_690_000);
        assert_eq!(k.first_seen, k.last_seen);
    }
}

#[test]
fn signed_messages_that_teach_nothing() {
    assert!(matches!(
        one("smime-altered.eml"),
        Err(Refusal::BadSignature(_))
    ));
    assert_eq!(
        one("smime-other-address.eml"),
        Err(Refusal::SignerMismatch("alice@example.org".into()))
    );
    assert!(matches!(
        one("smime-sign-only-cert.eml"),
        Err(Refusal::InvalidKey {
            method: Method::Smime,
            reason: RejectReason::KeyUsage(_)
        })
    ));
    assert!(matches!(
        one("smime-expired.eml"),
        Err(Refusal::InvalidKey {
            method: Method::Smime,
            reason: RejectReason::Expired(_)
        })
    ));
    assert_eq!(
        one("smime-two-signers.eml"),
        Err(Refusal::SeveralSigners(2))
    );
    assert!(matches!(
        one("smime-keyid.eml"),
        Err(Refusal::Malformed {
            method: Method::Smime,
            ..
        })
    ));
}

#[test]
fn autocrypt_headers_teach_their_key() {
    let k = one("autocrypt-gpg.eml").unwrap();
    let carol = identify(Method::OpenPgp, &fixture("carol-gpg.pgp")).unwrap();
    assert_eq!((k.key, k.fingerprint), (carol.canonical, carol.fingerprint));
    assert_eq!((k.method, k.how), (Method::OpenPgp, LearnedFrom::Autocrypt));
    assert_eq!(k.prefer_encrypt, Some(PreferEncrypt::Mutual));
    assert_eq!(k.address, "carol@example.org");
    let k = one("autocrypt-sq.eml").unwrap();
    let dave = identify(Method::OpenPgp, &fixture("dave-sq.pgp")).unwrap();
    assert_eq!(k.fingerprint, dave.fingerprint);
    assert_eq!(k.prefer_encrypt, Some(PreferEncrypt::NoPreference));
    // Beside a header hidden by a critical attribute.
    let k = one("autocrypt-critical-and-valid.eml").unwrap();
    assert_eq!(
        k.fingerprint,
        identify(Method::OpenPgp, &fixture("carol-gpg.pgp"))
            .unwrap()
            .fingerprint
    );
}

#[test]
fn autocrypt_headers_that_teach_nothing() {
    assert_eq!(
        one("autocrypt-two-headers.eml"),
        Err(Refusal::SeveralHeaders(2))
    );
    assert_eq!(
        one("autocrypt-addr-mismatch.eml"),
        Err(Refusal::AddrMismatch("mallory@example.org".into()))
    );
    assert_eq!(
        one("autocrypt-critical.eml"),
        Err(Refusal::CriticalAttribute("future-attr".into()))
    );
    // dave's key under carol's addr: no user ID for carol.
    assert!(matches!(
        one("autocrypt-key-other-uid.eml"),
        Err(Refusal::InvalidKey {
            method: Method::OpenPgp,
            reason: RejectReason::AddressMismatch(_)
        })
    ));
    // keydata that is no key.
    let (h, b) = message("autocrypt-gpg.eml");
    let mut h = without(&h, "Autocrypt");
    h.push(HeaderField::new(
        "Autocrypt",
        " addr=carol@example.org; keydata=aGVsbG8=",
    ));
    let r = examine(&candidate(&h), &h, &b, &Registry::new(), SystemTime::now());
    assert!(matches!(
        r.as_slice(),
        [Err(Refusal::InvalidKey {
            method: Method::OpenPgp,
            reason: RejectReason::Unreadable(_)
        })]
    ));
    let mut h = without(&h, "Autocrypt");
    h.push(HeaderField::new("Autocrypt", " addr=carol@example.org"));
    let r = examine(&candidate(&h), &h, &b, &Registry::new(), SystemTime::now());
    assert!(matches!(
        r.as_slice(),
        [Err(Refusal::Malformed {
            method: Method::OpenPgp,
            ..
        })]
    ));
}

#[test]
fn a_message_with_both_teaches_both() {
    let (mut h, b) = message("smime-detached.eml");
    let (ac, _) = message("autocrypt-gpg.eml");
    // carol's key under alice's From: is refused; the signature is learned.
    h.extend(ac.into_iter().filter(|f| f.is("Autocrypt")));
    let c = candidate(&h);
    assert!(c.smime && c.autocrypt);
    let r = examine(&c, &h, &b, &Registry::new(), SystemTime::now());
    assert_eq!(r.len(), 2);
    assert!(r[0].as_ref().is_ok_and(|k| k.method == Method::Smime));
    assert_eq!(r[1], Err(Refusal::AddrMismatch("carol@example.org".into())));
}

#[test]
fn refusal_labels_and_methods() {
    let all = [
        Refusal::BadSignature(String::new()),
        Refusal::SeveralSigners(2),
        Refusal::SignerMismatch(String::new()),
        Refusal::InvalidKey {
            method: Method::OpenPgp,
            reason: RejectReason::Revoked,
        },
        Refusal::SeveralHeaders(2),
        Refusal::AddrMismatch(String::new()),
        Refusal::CriticalAttribute(String::new()),
        Refusal::Oversized(1),
        Refusal::UnsignedAutocrypt,
        Refusal::KeyTooLarge(1),
        Refusal::Malformed {
            method: Method::Smime,
            detail: String::new(),
        },
    ];
    let labels: Vec<&str> = all.iter().map(Refusal::as_str).collect();
    assert_eq!(labels, Refusal::LABELS);
    let methods: Vec<Method> = all.iter().map(Refusal::method).collect();
    use Method::{OpenPgp as P, Smime as S};
    assert_eq!(methods, [S, S, S, P, P, P, P, P, P, S, S]);
}
