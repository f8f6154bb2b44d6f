//! Signing the mail of authenticated senders: the signing keys
//! ([`keys`]), who may sign as whom ([`logins`]), the transport-safe form
//! of the entity ([`safe`]), and the two signature formats
//! (`smime`: RFC 8551 `multipart/signed`; `openpgp`: RFC 3156).
//!
//! [`sign`] is pure and CPU-bound: the milter calls it on the blocking
//! pool, before encryption when the message is encrypted too (the
//! signature then travels inside the encryption).

mod frame;
pub mod keys;
pub mod logins;
pub(crate) mod openpgp;
pub mod safe;
pub(crate) mod smime;

use std::sync::Arc;

use crate::material::Method;

/// An S/MIME signing key: the certificate, the chain sent along with it,
/// and the private key. Never logged (no `Debug`).
pub struct SmimeSigner {
    /// The signer's certificate.
    pub cert: openssl::x509::X509,
    /// The rest of the chain, in the file's order (may be empty).
    pub chain: Vec<openssl::x509::X509>,
    /// The private key matching `cert`.
    pub key: openssl::pkey::PKey<openssl::pkey::Private>,
}

/// An OpenPGP signing key: a certificate with the secret key material of
/// (at least) one signing-capable key. Never logged (no `Debug`).
pub struct OpenPgpSigner {
    /// The certificate with its secret key material.
    pub cert: sequoia_openpgp::Cert,
}

/// One sender's signing key for one method.
#[derive(Clone)]
pub enum Signer {
    /// S/MIME.
    Smime(Arc<SmimeSigner>),
    /// OpenPGP.
    OpenPgp(Arc<OpenPgpSigner>),
}

impl Signer {
    /// Whether the key can make a signature that verifies at `now`: the
    /// certificate within its validity (S/MIME), a signing key alive and
    /// not revoked (OpenPGP). Checked at every message, since a key
    /// loaded at start expires while the milter runs.
    pub fn valid_at(&self, now: std::time::SystemTime) -> bool {
        match self {
            Signer::Smime(s) => {
                let secs = now
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let Ok(t) =
                    openssl::asn1::Asn1Time::from_unix(i64::try_from(secs).unwrap_or(i64::MAX))
                else {
                    return false;
                };
                s.cert.not_before() <= t && s.cert.not_after() >= t
            }
            Signer::OpenPgp(p) => {
                let policy = sequoia_openpgp::policy::StandardPolicy::new();
                p.cert
                    .keys()
                    .with_policy(&policy, now)
                    .supported()
                    .alive()
                    .revoked(false)
                    .for_signing()
                    .secret()
                    .next()
                    .is_some()
            }
        }
    }

    /// The method the key signs with.
    pub fn method(&self) -> Method {
        match self {
            Signer::Smime(_) => Method::Smime,
            Signer::OpenPgp(_) => Method::OpenPgp,
        }
    }
}

/// A signed MIME entity: the `multipart/signed` content fields
/// (`Content-Type` first; values may fold with `"\r\n "`) and its body
/// with CRLF line endings.
pub struct SignedEntity {
    /// The content header fields of the signed entity.
    pub fields: Vec<(&'static str, String)>,
    /// The body: the signed part, the signature part, the delimiters.
    pub body: Vec<u8>,
}

impl SignedEntity {
    /// The entity as one MIME entity: its header section, the empty line,
    /// the body (what encryption takes as its inner entity).
    pub fn to_entity(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 256);
        for (name, value) in &self.fields {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

/// Why a message was not signed although a key was there.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The entity cannot be put in a form relays leave alone (see
    /// [`safe`]); signing it would give a signature that breaks in transit.
    #[error("cannot be made safe for transport: {0}")]
    Unsafe(String),
    /// The cryptographic library failed.
    #[error("{method} signing failed: {detail}")]
    Crypto {
        /// Which method.
        method: Method,
        /// The library's message.
        detail: String,
    },
}

/// Signs `entity` (a complete MIME entity: header section, empty line,
/// body; CRLF line endings) with `signer`: first made safe for transport
/// ([`safe::transport_safe`]), then wrapped in `multipart/signed` with a
/// detached signature over exactly the safe entity's bytes.
pub fn sign(entity: &[u8], signer: &Signer) -> Result<SignedEntity, SignError> {
    let safe = safe::transport_safe(entity).map_err(|e| SignError::Unsafe(e.to_string()))?;
    match signer {
        Signer::Smime(s) => smime::sign(&safe, s),
        Signer::OpenPgp(p) => openpgp::sign(&safe, p),
    }
}
