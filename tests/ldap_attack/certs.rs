//! S/MIME certificates made in the test: self-signed EC P-256, valid from
//! yesterday for a year, with the address in subjectAltName (the key
//! service checks validity, key use and the address, not the issuer: the
//! directory vouches). Fast enough to make dozens per case. And PKCS#7
//! certs-only bags as `userSMIMECertificate` holds them.

use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::x509::extension::SubjectAlternativeName;
use openssl::x509::{X509, X509NameBuilder};

use super::server::tlv;

/// One certificate.
#[derive(Clone, Debug)]
pub struct Cert {
    pub der: Vec<u8>,
    pub pem: Vec<u8>,
    /// Upper-case hex SHA-256 of the DER (as the key service writes it).
    pub sha256: String,
}

/// A certificate for `email` (several when called again: new key, new
/// serial).
pub fn cert(email: &str) -> Cert {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", email).unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    let mut serial = BigNum::new().unwrap();
    serial
        .rand(64, openssl::bn::MsbOption::MAYBE_ZERO, false)
        .unwrap();
    b.set_serial_number(&serial.to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    b.set_not_before(&Asn1Time::from_unix(now - 86_400).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::from_unix(now + 365 * 86_400).unwrap())
        .unwrap();
    let san = SubjectAlternativeName::new()
        .email(email)
        .build(&b.x509v3_context(None, None))
        .unwrap();
    b.append_extension(san).unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    let x = b.build();
    let der = x.to_der().unwrap();
    Cert {
        pem: x.to_pem().unwrap(),
        sha256: x
            .digest(MessageDigest::sha256())
            .unwrap()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect(),
        der,
    }
}

/// A DER PKCS#7 SignedData with `certs` and nothing else (what
/// `openssl crl2pkcs7 -nocrl` makes).
pub fn bag(certs: &[&[u8]]) -> Vec<u8> {
    // 1.2.840.113549.1.7.2 signedData, 1.2.840.113549.1.7.1 data
    const SIGNED: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02];
    const DATA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01];
    let mut sd = tlv(0x02, &[1]);
    sd.extend(tlv(0x31, b""));
    sd.extend(tlv(0x30, &tlv(0x06, DATA)));
    sd.extend(tlv(0xa0, &certs.concat()));
    sd.extend(tlv(0x31, b""));
    let mut ci = tlv(0x06, SIGNED);
    ci.extend(tlv(0xa0, &tlv(0x30, &sd)));
    tlv(0x30, &ci)
}

/// The fingerprints of `certs`, sorted.
pub fn sorted(certs: &[&Cert]) -> Vec<String> {
    let mut v: Vec<String> = certs.iter().map(|c| c.sha256.clone()).collect();
    v.sort();
    v
}
