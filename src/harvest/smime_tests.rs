use super::*;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/harvest/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn message(raw: &[u8]) -> (Vec<HeaderField>, Vec<u8>) {
    let m = Message::parse(raw);
    (m.headers, raw[m.body_offset..].to_vec())
}

fn signer_of(name: &str) -> Result<Vec<u8>, SmimeError> {
    let (h, b) = message(&fixture(name));
    signer(&h, &b)
}

fn der(pem: &str) -> Vec<u8> {
    X509::from_pem(&fixture(pem)).unwrap().to_der().unwrap()
}

#[test]
fn every_signed_form_gives_the_signer_and_not_the_ca() {
    for name in [
        "smime-detached.eml",
        "smime-opaque.eml",
        "smime-x-pkcs7.eml",
    ] {
        let cert = signer_of(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(cert, der("alice.pem"), "{name}");
        assert_ne!(cert, der("ca.pem"), "{name}");
    }
    assert_eq!(
        signer_of("smime-other-address.eml").unwrap(),
        der("bob.pem")
    );
    assert_eq!(signer_of("smime-expired.eml").unwrap(), der("expired.pem"));
    assert_eq!(
        signer_of("smime-sign-only-cert.eml").unwrap(),
        der("signonly.pem")
    );
}

#[test]
fn the_forms_are_told_from_the_headers() {
    let form = |ct: &str| signed_form(&[HeaderField::new("Content-Type", ct)]);
    assert_eq!(
        form(" multipart/signed; protocol=\"application/pkcs7-signature\"; boundary=x"),
        Some(SignedForm::Detached)
    );
    assert_eq!(
        form(" Multipart/Signed; PROTOCOL=\"Application/X-PKCS7-Signature\"; boundary=x"),
        Some(SignedForm::Detached)
    );
    assert_eq!(
        form(" application/x-pkcs7-mime; smime-type=Signed-Data"),
        Some(SignedForm::Opaque)
    );
    for ct in [
        " multipart/signed; protocol=\"application/pgp-signature\"; boundary=x",
        " multipart/signed; boundary=x",
        " application/pkcs7-mime; smime-type=enveloped-data",
        " application/pkcs7-mime",
        " application/pkcs7-signature",
        " text/plain",
    ] {
        assert_eq!(form(ct), None, "{ct}");
    }
    assert_eq!(signed_form(&[]), None);
    let two = [
        HeaderField::new(
            "Content-Type",
            " application/pkcs7-mime; smime-type=signed-data",
        ),
        HeaderField::new("Content-Type", " text/plain"),
    ];
    assert_eq!(signed_form(&two), None);
}

#[test]
fn an_altered_body_does_not_verify() {
    assert!(matches!(
        signer_of("smime-altered.eml"),
        Err(SmimeError::BadSignature(_))
    ));
    // One byte of the signed part's header changed.
    let raw = fixture("smime-detached.eml");
    let forged =
        String::from_utf8(raw)
            .unwrap()
            .replacen("charset=us-ascii", "charset=US-ascii", 1);
    let (h, b) = message(forged.as_bytes());
    assert!(matches!(signer(&h, &b), Err(SmimeError::BadSignature(_))));
}

#[test]
fn exactly_one_signer() {
    assert_eq!(
        signer_of("smime-two-signers.eml"),
        Err(SmimeError::Signers(2))
    );
}

#[test]
fn a_signer_named_by_key_id_is_not_read() {
    // The PKCS #7 reader knows issuer-and-serial signers only (module doc).
    assert!(matches!(
        signer_of("smime-keyid.eml"),
        Err(SmimeError::Malformed(_))
    ));
}

#[test]
fn transport_padding_after_delimiters_is_allowed() {
    let raw = String::from_utf8(fixture("smime-detached.eml")).unwrap();
    let (h, _) = message(raw.as_bytes());
    let boundary = super::content_type(&h)
        .unwrap()
        .param("boundary")
        .unwrap()
        .to_owned();
    let padded = raw
        .replace(
            &format!("--{boundary}\r\n"),
            &format!("--{boundary} \t\r\n"),
        )
        .replace(&format!("--{boundary}--"), &format!("--{boundary}--  "));
    assert_ne!(padded, raw);
    let (h, b) = message(padded.as_bytes());
    assert_eq!(signer(&h, &b).unwrap(), der("alice.pem"));
}

/// The detached fixture's parts, to build variants from.
fn detached_parts() -> (String, String, String) {
    let raw = String::from_utf8(fixture("smime-detached.eml")).unwrap();
    let (h, b) = message(raw.as_bytes());
    let boundary = super::content_type(&h)
        .unwrap()
        .param("boundary")
        .unwrap()
        .to_owned();
    let (signed, signature) = two_parts(&b, boundary.as_bytes()).unwrap();
    (
        boundary,
        String::from_utf8(signed.to_vec()).unwrap(),
        String::from_utf8(signature.to_vec()).unwrap(),
    )
}

fn detached(boundary: &str, body: &str) -> Result<Vec<u8>, SmimeError> {
    let h = [HeaderField::new(
        "Content-Type",
        format!(
            " multipart/signed; protocol=\"application/pkcs7-signature\"; boundary=\"{boundary}\""
        ),
    )];
    signer(&h, body.as_bytes())
}

#[test]
fn the_multipart_structure_must_be_exactly_two_parts() {
    let (bd, signed, sig) = detached_parts();
    let good =
        format!("preamble\r\n--{bd}\r\n{signed}\r\n--{bd}\r\n{sig}\r\n--{bd}--\r\nepilogue\r\n");
    assert_eq!(detached(&bd, &good).unwrap(), der("alice.pem"));
    let three = format!("--{bd}\r\n{signed}\r\n--{bd}\r\n{sig}\r\n--{bd}\r\nmore\r\n--{bd}--\r\n");
    assert!(matches!(
        detached(&bd, &three),
        Err(SmimeError::Malformed(_))
    ));
    let one = format!("--{bd}\r\n{signed}\r\n--{bd}--\r\n");
    assert!(matches!(detached(&bd, &one), Err(SmimeError::Malformed(_))));
    let unclosed = format!("--{bd}\r\n{signed}\r\n--{bd}\r\n{sig}\r\n");
    assert!(matches!(
        detached(&bd, &unclosed),
        Err(SmimeError::Malformed(_))
    ));
    // The parts swapped: the first is not a signature.
    let swapped = format!("--{bd}\r\n{sig}\r\n--{bd}\r\n{signed}\r\n--{bd}--\r\n");
    assert!(matches!(
        detached(&bd, &swapped),
        Err(SmimeError::Malformed(_))
    ));
    // A boundary that only starts a line's text does not delimit.
    let lookalike = format!("--{bd}\r\n{signed}\r\n--{bd}x\r\n--{bd}\r\n{sig}\r\n--{bd}--\r\n");
    assert!(matches!(
        detached(&bd, &lookalike),
        Err(SmimeError::BadSignature(_))
    ));
    assert!(matches!(detached("", &good), Err(SmimeError::Malformed(_))));
    assert!(matches!(detached(&bd, ""), Err(SmimeError::Malformed(_))));
    let garbage_sig = format!(
        "--{bd}\r\n{signed}\r\n--{bd}\r\nContent-Type: application/pkcs7-signature\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!!\r\n--{bd}--\r\n"
    );
    assert!(matches!(
        detached(&bd, &garbage_sig),
        Err(SmimeError::Malformed(_))
    ));
    let not_der = format!(
        "--{bd}\r\n{signed}\r\n--{bd}\r\nContent-Type: application/pkcs7-signature\r\nContent-Transfer-Encoding: base64\r\n\r\naGVsbG8=\r\n--{bd}--\r\n"
    );
    assert!(matches!(
        detached(&bd, &not_der),
        Err(SmimeError::Malformed(_))
    ));
    let quoted_printable = format!(
        "--{bd}\r\n{signed}\r\n--{bd}\r\nContent-Type: application/pkcs7-signature\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nx\r\n--{bd}--\r\n"
    );
    assert!(matches!(
        detached(&bd, &quoted_printable),
        Err(SmimeError::Malformed(_))
    ));
}

#[test]
fn content_must_come_from_exactly_one_place() {
    let (_, _, sig) = detached_parts();
    let p = Message::parse(sig.as_bytes());
    let detached_der = decode_base64(&sig.as_bytes()[p.body_offset..]).unwrap();
    // A detached signature presented as opaque signed-data: no content.
    assert!(matches!(
        verify(&detached_der, None),
        Err(SmimeError::BadSignature(_))
    ));
    // Opaque signed-data presented as a detached signature: content twice.
    let (h, b) = message(&fixture("smime-opaque.eml"));
    let opaque_der = der_body(&h, &b).unwrap();
    assert_eq!(verify(&opaque_der, None).unwrap(), der("alice.pem"));
    assert!(matches!(
        verify(&opaque_der, Some(b"other content")),
        Err(SmimeError::BadSignature(_))
    ));
    // Not SignedData at all.
    assert!(matches!(
        verify(b"\x30\x03\x02\x01\x00", None),
        Err(SmimeError::Malformed(_))
    ));
    assert!(matches!(verify(b"", None), Err(SmimeError::Malformed(_))));
}

#[test]
fn a_message_that_is_not_signed_has_no_signer() {
    assert!(matches!(
        signer(&[HeaderField::new("Content-Type", " text/plain")], b"hi"),
        Err(SmimeError::Malformed(_))
    ));
}
