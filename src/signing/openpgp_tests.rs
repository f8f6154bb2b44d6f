#![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]

use super::*;
use openpgp::cert::CertBuilder;
use openpgp::parse::Parse;
use openpgp::{Cert, Packet as P, PacketPile};

const ENTITY: &[u8] = b"Content-Type: text/plain\r\nX-Blank: trailing \r\n\r\nhello\r\n";

fn signer(cert: Cert) -> OpenPgpSigner {
    OpenPgpSigner { cert }
}

fn fresh() -> Cert {
    CertBuilder::general_purpose(["Alice <alice@example.org>"])
        .generate()
        .unwrap()
        .0
}

#[test]
fn signs_with_the_signing_subkey_sha256_text() {
    let cert = fresh();
    let armored = signature(ENTITY, &signer(cert.clone())).unwrap();
    let pile = PacketPile::from_bytes(&armored).unwrap();
    let Some(P::Signature(sig)) = pile.descendants().next() else {
        panic!("no signature");
    };
    assert_eq!(sig.typ(), SignatureType::Text);
    assert_eq!(sig.hash_algo(), HashAlgorithm::SHA256);
    let policy = StandardPolicy::new();
    let key = cert
        .keys()
        .with_policy(&policy, None)
        .for_signing()
        .next()
        .unwrap();
    sig.verify_message(key.key(), ENTITY).unwrap();
    assert!(sig.verify_message(key.key(), b"other").is_err());
    // A non-canonical entity gets the exact binary form.
    let armored = signature(b"bare\nLF", &signer(cert)).unwrap();
    let pile = PacketPile::from_bytes(&armored).unwrap();
    let Some(P::Signature(sig)) = pile.descendants().next() else {
        panic!("no signature");
    };
    assert_eq!(sig.typ(), SignatureType::Binary);
}

#[test]
fn the_frame_holds_the_entity_exactly() {
    let signed = sign(ENTITY, &signer(fresh())).unwrap();
    let (name, value) = &signed.fields[0];
    assert_eq!(*name, "Content-Type");
    let boundary = value
        .split("boundary=\"")
        .nth(1)
        .unwrap()
        .trim_end_matches('"');
    assert!(value.starts_with(
        "multipart/signed; micalg=pgp-sha256;\r\n protocol=\"application/pgp-signature\";\r\n boundary=\"=_ae_"
    ));
    let head = format!("--{boundary}\r\n");
    let body = String::from_utf8(signed.body.clone()).unwrap();
    let start = body.find(&head).unwrap() + head.len();
    let end = start
        + body[start..]
            .find(&format!("\r\n--{boundary}\r\n"))
            .unwrap();
    assert_eq!(&body.as_bytes()[start..end], ENTITY);
    assert!(body.ends_with(&format!(
        "-----END PGP SIGNATURE-----\r\n--{boundary}--\r\n"
    )));
    assert!(!body.replace("\r\n", "").contains('\n'), "CRLF only");
}

#[test]
fn a_protected_or_missing_secret_is_refused_clearly() {
    let (cert, _) = CertBuilder::general_purpose(["Bob <bob@example.org>"])
        .set_password(Some("secret".into()))
        .generate()
        .unwrap();
    let err = sign(ENTITY, &signer(cert.clone()))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("passphrase-protected"), "{err}");
    assert!(!err.contains("secret\""), "{err}");
    let err = sign(ENTITY, &signer(cert.strip_secret_key_material()))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("no secret for signing key"), "{err}");
    let (cert, _) = CertBuilder::new()
        .add_transport_encryption_subkey()
        .generate()
        .unwrap();
    let err = sign(ENTITY, &signer(cert)).err().unwrap().to_string();
    assert!(err.contains("no signing-capable key"), "{err}");
}
