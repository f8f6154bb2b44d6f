#![allow(clippy::unwrap_used, reason = "tests")]

use super::*;
use openssl::asn1::Asn1Time;
use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::x509::X509NameBuilder;

fn self_signed() -> SmimeSigner {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_nid(Nid::COMMONNAME, "signer").unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(1).unwrap())
        .unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    let cert = b.build();
    SmimeSigner {
        // The signer's own certificate in the chain is not added twice.
        chain: vec![cert.clone()],
        cert,
        key,
    }
}

#[test]
fn detached_signature_verifies_over_the_exact_octets() {
    let entity = b"Content-Type: text/plain\r\n\r\nhello\r\n";
    let der = signature(entity, &self_signed()).unwrap();
    let verify = |content: &[u8]| {
        let mut cms = CmsContentInfo::from_der(&der).unwrap();
        cms.verify(
            None,
            None,
            Some(content),
            None,
            CMSOptions::NOVERIFY | CMSOptions::BINARY,
        )
    };
    verify(entity).unwrap();
    assert!(verify(b"Content-Type: text/plain\r\n\r\nhellO\r\n").is_err());
    // SHA-256 (2.16.840.1.101.3.4.2.1) is the digest algorithm.
    let sha256 = [
        0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
    ];
    assert!(der.windows(sha256.len()).any(|w| w == sha256));
}

#[test]
fn the_frame_carries_the_base64_signature() {
    let entity = b"Content-Type: text/plain\r\n\r\nhello\r\n";
    let signed = sign(entity, &self_signed()).unwrap();
    let value = &signed.fields[0].1;
    assert!(value.starts_with(
        "multipart/signed; protocol=\"application/pkcs7-signature\";\r\n micalg=sha-256; boundary=\"=_ae_"
    ));
    let body = String::from_utf8(signed.body).unwrap();
    assert!(body.starts_with("This is an S/MIME signed message\r\n--=_ae_"));
    assert!(body.contains("\r\nContent-Disposition: attachment; filename=\"smime.p7s\"\r\n\r\nMI"));
    assert!(body.lines().all(|l| l.len() <= 77));
    let widths: Vec<usize> = value.split("\r\n").map(str::len).collect();
    assert!(widths[0] + "Content-Type: ".len() <= 78 && widths.iter().all(|&w| w <= 78));
}
