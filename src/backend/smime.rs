//! S/MIME (RFC 8551) with OpenSSL's CMS: EnvelopedData with AES-CBC, or
//! AuthEnvelopedData with AES-256-GCM (RFC 5083/5084); RSA recipients by
//! key transport, EC recipients by key agreement.

use std::io::{self, Write};
use std::time::SystemTime;

use openssl::asn1::Asn1Time;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::Id;
use openssl::stack::Stack;
use openssl::symm::Cipher;
use openssl::x509::{X509, X509ExtendedKeyUsage, X509KeyUsage};

use super::{
    BackendError, EncryptOptions, EncryptedEntity, EncryptionBackend, EntityBody, KeyFacts,
    KeyMaterial, KeyRejected, Method, Recipient, RecipientKey, RejectReason, SmimeCipher,
    cms_stream, unix_seconds,
};
use crate::address::Address;
use crate::message::Eol;
use crate::spool::Spool;

/// The S/MIME backend. Stateless: the cipher is a per-message option.
#[derive(Debug, Default)]
pub struct SmimeBackend;

impl SmimeBackend {
    /// A new backend.
    pub fn new() -> Self {
        SmimeBackend
    }
}

/// Parses a certificate given as PEM or DER.
pub fn parse_certificate(data: &[u8]) -> Result<X509, RejectReason> {
    let trimmed = data.trim_ascii_start();
    let parsed = if trimmed.starts_with(b"-----BEGIN") {
        X509::from_pem(trimmed)
    } else {
        X509::from_der(data)
    };
    parsed.map_err(|e| RejectReason::Unreadable(first_error(&e)))
}

/// Upper-case hex SHA-256 fingerprint of a certificate.
pub fn fingerprint(cert: &X509) -> String {
    match cert.digest(MessageDigest::sha256()) {
        Ok(d) => d.iter().map(|b| format!("{b:02X}")).collect(),
        Err(_) => String::from("(no fingerprint)"),
    }
}

fn first_error(e: &openssl::error::ErrorStack) -> String {
    e.errors()
        .first()
        .map(|e| e.reason().unwrap_or("malformed").to_owned())
        .unwrap_or_else(|| "malformed".to_owned())
}

/// Fingerprint, algorithm and expiry of a certificate (PEM or DER).
pub fn describe(data: &[u8]) -> Option<KeyFacts> {
    let cert = parse_certificate(data).ok()?;
    let pkey = cert.public_key().ok()?;
    let algorithm = match pkey.id() {
        Id::RSA => format!("RSA {}", pkey.bits()),
        Id::EC => {
            let curve = pkey
                .ec_key()
                .ok()
                .and_then(|k| k.group().curve_name())
                .and_then(|n| n.short_name().ok())
                .unwrap_or("unknown curve");
            format!("EC {curve}")
        }
        other => format!("{other:?}"),
    };
    Some(KeyFacts {
        fingerprint: fingerprint(&cert),
        algorithm,
        expires: cert.not_after().to_string(),
    })
}

/// The addresses a certificate is issued for: subjectAltName rfc822Name
/// entries and subject emailAddress attributes.
pub fn certificate_addresses(cert: &X509) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if let Some(names) = cert.subject_alt_names() {
        out.extend(names.iter().filter_map(|n| n.email().map(str::to_owned)));
    }
    for entry in cert.subject_name().entries_by_nid(Nid::PKCS9_EMAILADDRESS) {
        if let Ok(s) = entry.data().to_string() {
            out.push(s);
        }
    }
    out
}

/// Checks a certificate for encrypting to `addr` at `now`.
pub fn check_certificate(cert: &X509, addr: &Address, now: SystemTime) -> Result<(), RejectReason> {
    let now_asn1 = Asn1Time::from_unix(unix_seconds(now))
        .map_err(|e| RejectReason::Unreadable(first_error(&e)))?;
    if cert.not_after() < now_asn1 {
        return Err(RejectReason::Expired(format!(
            "notAfter {}",
            cert.not_after()
        )));
    }
    if cert.not_before() > now_asn1 {
        return Err(RejectReason::NotYetValid(format!(
            "notBefore {}",
            cert.not_before()
        )));
    }
    let pkey = cert
        .public_key()
        .map_err(|e| RejectReason::Unreadable(first_error(&e)))?;
    let needed = match pkey.id() {
        Id::RSA => (X509KeyUsage::KEY_ENCIPHERMENT, "keyEncipherment"),
        Id::EC => (X509KeyUsage::KEY_AGREEMENT, "keyAgreement"),
        other => return Err(RejectReason::Algorithm(format!("{other:?}"))),
    };
    if let Some(usage) = cert.key_usage()
        && !usage.contains(needed.0)
    {
        return Err(RejectReason::KeyUsage(needed.1));
    }
    if let Some(eku) = cert.extended_key_usage()
        && !eku.intersects(X509ExtendedKeyUsage::SMIME | X509ExtendedKeyUsage::ANYEKU)
    {
        return Err(RejectReason::ExtendedKeyUsage);
    }
    let names = certificate_addresses(cert);
    let matches = names
        .iter()
        .filter_map(|n| Address::parse(n).ok())
        .any(|a| a.matches_loosely(addr));
    if !matches {
        return Err(RejectReason::AddressMismatch(addr.to_string()));
    }
    Ok(())
}

impl EncryptionBackend for SmimeBackend {
    fn method(&self) -> Method {
        Method::Smime
    }

    fn validate(
        &self,
        key: &KeyMaterial,
        addr: &Address,
        now: SystemTime,
    ) -> Result<Recipient, KeyRejected> {
        key.expect_method(Method::Smime)?;
        let reject = |reason| key.reject(reason);
        let cert = parse_certificate(&key.data).map_err(reject)?;
        check_certificate(&cert, addr, now).map_err(reject)?;
        Ok(Recipient {
            address: addr.clone(),
            fingerprint: fingerprint(&cert),
            origin: key.origin.clone(),
            provenance: key.provenance,
            hidden: false,
            key: RecipientKey::Smime(cert),
        })
    }

    fn encrypt(
        &self,
        inner: &mut dyn io::Read,
        to: &[Recipient],
        opts: &EncryptOptions,
    ) -> Result<EncryptedEntity, BackendError> {
        let crypto = |e: openssl::error::ErrorStack| BackendError::Crypto {
            method: Method::Smime,
            detail: e.to_string(),
        };
        if to.is_empty() {
            return Err(BackendError::Recipients("no recipients".into()));
        }
        let mut certs = Stack::new().map_err(crypto)?;
        for r in to {
            match &r.key {
                RecipientKey::Smime(cert) => certs.push(cert.clone()).map_err(crypto)?,
                _ => {
                    return Err(BackendError::Recipients(format!(
                        "{} has a {} key, not an S/MIME certificate",
                        r.address,
                        r.method()
                    )));
                }
            }
        }
        let (cipher, smime_type) = match opts.smime_cipher {
            SmimeCipher::Aes128Cbc => (Cipher::aes_128_cbc(), "enveloped-data"),
            SmimeCipher::Aes256Cbc => (Cipher::aes_256_cbc(), "enveloped-data"),
            // OpenSSL 3 builds AuthEnvelopedData for an AEAD cipher.
            SmimeCipher::Aes256Gcm => (Cipher::aes_256_gcm(), "authEnveloped-data"),
        };
        // Binary content: the entity is already canonical and OpenSSL must
        // not touch its line endings. Streamed, so a 50 MB message is never
        // held in memory as plaintext, ciphertext and DER at once.
        let mut der = Spool::new(opts.spool_threshold);
        cms_stream::encrypt(&certs, cipher, inner, &mut der).map_err(|e| match e {
            cms_stream::StreamError::Io(io) => BackendError::Io(io),
            other => BackendError::Crypto {
                method: Method::Smime,
                detail: other.to_string(),
            },
        })?;
        Ok(EncryptedEntity {
            method: Method::Smime,
            fields: vec![
                (
                    "Content-Type",
                    format!(
                        "application/pkcs7-mime; smime-type={smime_type};\n name=\"smime.p7m\""
                    ),
                ),
                ("Content-Transfer-Encoding", "base64".to_owned()),
                (
                    "Content-Disposition",
                    "attachment; filename=\"smime.p7m\"".to_owned(),
                ),
            ],
            body: Box::new(Base64Body(der)),
        })
    }
}

/// The CMS object rendered as base64 in 76-character lines while writing.
struct Base64Body(Spool);

impl EntityBody for Base64Body {
    fn write_to(&self, eol: Eol, out: &mut dyn Write) -> io::Result<()> {
        crate::backend::encoding::copy_base64_lines(&mut self.0.reader(), 76, eol, out, |_| {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_unreadable() {
        assert!(matches!(
            parse_certificate(b"not a cert"),
            Err(RejectReason::Unreadable(_))
        ));
        assert!(matches!(
            parse_certificate(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
            Err(RejectReason::Unreadable(_))
        ));
    }
}
