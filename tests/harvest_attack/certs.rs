//! S/MIME identities made in-process (self-signed: harvesting does not
//! chain a signer to any CA) and detached PKCS #7 signatures with them,
//! as `openssl smime -sign -binary` makes them.

use openssl::asn1::{Asn1Integer, Asn1Object, Asn1OctetString, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::stack::Stack;
use openssl::x509::extension::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
};
use openssl::x509::{X509, X509Extension, X509NameBuilder};

use super::folded_b64;

/// A certificate and its private key.
pub struct Id {
    pub cert: X509,
    pub key: PKey<Private>,
}

impl Id {
    /// DER of the certificate.
    pub fn der(&self) -> Vec<u8> {
        self.cert.to_der().unwrap()
    }
}

/// A self-signed RSA certificate as a real S/MIME one looks
/// (keyEncipherment, emailProtection) whose subjectAltName lists `emails`
/// (the first also in the subject).
pub fn identity(emails: &[&str]) -> Id {
    padded_identity(emails, 0)
}

/// [`identity`] with a non-critical private extension of `padding` bytes
/// (a certificate as large as the sender likes).
pub fn padded_identity(emails: &[&str], padding: usize) -> Id {
    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_nid(Nid::COMMONNAME, "Test").unwrap();
    name.append_entry_by_nid(Nid::PKCS9_EMAILADDRESS, emails[0])
        .unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    let mut serial = BigNum::new().unwrap();
    serial.rand(64, MsbOption::MAYBE_ZERO, false).unwrap();
    b.set_serial_number(&Asn1Integer::from_bn(&serial).unwrap())
        .unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(3650).unwrap())
        .unwrap();
    b.append_extension(BasicConstraints::new().critical().build().unwrap())
        .unwrap();
    b.append_extension(
        KeyUsage::new()
            .critical()
            .digital_signature()
            .key_encipherment()
            .build()
            .unwrap(),
    )
    .unwrap();
    b.append_extension(ExtendedKeyUsage::new().email_protection().build().unwrap())
        .unwrap();
    let mut san = SubjectAlternativeName::new();
    for e in emails {
        san.email(e);
    }
    let san = san.build(&b.x509v3_context(None, None)).unwrap();
    b.append_extension(san).unwrap();
    if padding > 0 {
        let oid = Asn1Object::from_str("1.3.6.1.4.1.99999.1").unwrap();
        let value = Asn1OctetString::new_from_bytes(&vec![b'x'; padding]).unwrap();
        b.append_extension(X509Extension::new_from_der(&oid, false, &value).unwrap())
            .unwrap();
    }
    b.sign(&key, MessageDigest::sha256()).unwrap();
    Id {
        cert: b.build(),
        key,
    }
}

/// A detached signature (DER) by `signer` over `content`, its bag holding
/// `extra` certificates besides the signer's.
pub fn sign(signer: &Id, extra: &[&X509], content: &[u8]) -> Vec<u8> {
    let mut certs = Stack::new().unwrap();
    for c in extra {
        certs.push((*c).clone()).unwrap();
    }
    Pkcs7::sign(
        &signer.cert,
        &signer.key,
        &certs,
        content,
        Pkcs7Flags::DETACHED | Pkcs7Flags::BINARY,
    )
    .unwrap()
    .to_der()
    .unwrap()
}

/// The signed entity the tests sign (CRLF line ends, as it is on the
/// wire).
pub const INNER: &str =
    "Content-Type: text/plain; charset=us-ascii\r\n\r\nHello Bob,\r\n\r\nthis is signed.\r\n";

/// A `multipart/signed` message: `head` (header fields, each with its
/// line end, From: included), then the two parts. `protocol` is the
/// top-level parameter, `part_type` the second part's Content-Type.
pub fn multipart_signed(
    head: &str,
    protocol: &str,
    inner: &str,
    part_type: &str,
    sig: &[u8],
) -> String {
    format!(
        "{head}MIME-Version: 1.0\nContent-Type: multipart/signed; protocol=\"{protocol}\"; \
         micalg=sha-256;\n boundary=\"----B0UNDARY\"\n\nThis is an S/MIME signed message.\n\
         \n------B0UNDARY\n{inner}\n------B0UNDARY\nContent-Type: {part_type}; \
         name=smime.p7s\nContent-Transfer-Encoding: base64\nContent-Disposition: attachment; \
         filename=smime.p7s\n\n {}\n\n------B0UNDARY--\n",
        folded_b64(sig)
    )
}

/// The usual signed message from `from` signed by `signer` (bag: `extra`).
pub fn signed_message(from: &str, signer: &Id, extra: &[&X509]) -> String {
    let head = format!(
        "{}From: <{from}>\nTo: <bob@example.net>\nSubject: signed\n\
         Date: Tue, 06 Jan 2026 10:00:00 +0100\n",
        super::AR_PASS
    );
    multipart_signed(
        &head,
        "application/pkcs7-signature",
        INNER,
        "application/pkcs7-signature",
        &sign(signer, extra, INNER.as_bytes()),
    )
}
