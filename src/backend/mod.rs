//! Encryption methods: the [`EncryptionBackend`] trait, the method names
//! used in configuration and policy files, and the registry of backends.
//!
//! A backend owns two things: deciding whether a key may be used for an
//! address ([`EncryptionBackend::validate`]) and producing the encrypted
//! MIME entity ([`EncryptionBackend::encrypt`]). Adding a method means one
//! new file here and one line in [`Registry::new`].

mod cms_stream;
pub(crate) mod encoding;
pub(crate) mod openpgp;
pub(crate) mod pkix;
pub(crate) mod smime;

use std::fmt;
use std::io::{self, Write};

use std::time::SystemTime;

use crate::address::Address;
pub use crate::material::{
    KeyMaterial, KeyRejected, Method, RejectReason, SmimeCipher, UnknownCipher, UnknownMethod,
};
use crate::message::Eol;

/// Per-message choices that are not properties of a recipient.
#[derive(Clone, Copy, Debug)]
pub struct EncryptOptions {
    /// S/MIME content cipher.
    pub smime_cipher: SmimeCipher,
    /// Ciphertext beyond this many bytes goes to an anonymous temporary
    /// file instead of memory (`limits.spool_threshold_bytes`).
    pub spool_threshold: usize,
    /// Protect the header (RFC 9788, `protect_headers`): the pipeline's
    /// choice, not the backend's, which encrypts whatever entity it gets.
    pub protect_headers: bool,
    /// Mark blind recipients [`Recipient::hidden`]
    /// (`openpgp.hide_blind_recipients`; the pipeline's choice too).
    pub hide_blind: bool,
}

impl Default for EncryptOptions {
    fn default() -> Self {
        EncryptOptions {
            smime_cipher: SmimeCipher::default(),
            spool_threshold: crate::spool::DEFAULT_THRESHOLD,
            protect_headers: false,
            hide_blind: true,
        }
    }
}

/// A key that passed validation, ready to encrypt to.
#[derive(Clone)]
pub struct Recipient {
    /// The address the key was validated for.
    pub address: Address,
    /// Fingerprint (OpenPGP) or SHA-256 fingerprint of the certificate
    /// (S/MIME), upper-case hex: safe to log.
    pub fingerprint: String,
    /// Where exactly the key came from.
    pub origin: String,
    /// Which source found it, what vouched for it, when.
    pub provenance: crate::material::Provenance,
    /// A blind recipient of this message (named in no `To:` or `Cc:`):
    /// OpenPGP writes its key IDs as the anonymous ID, so the others
    /// cannot tell it received the message. Set per message by the
    /// pipeline; S/MIME has no such form.
    pub hidden: bool,
    pub(crate) key: RecipientKey,
}

impl Recipient {
    /// The method this recipient's key is for.
    pub fn method(&self) -> Method {
        match self.key {
            RecipientKey::Smime(_) => Method::Smime,
            RecipientKey::OpenPgp { .. } => Method::OpenPgp,
        }
    }
}

impl fmt::Debug for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recipient")
            .field("address", &self.address)
            .field("method", &self.method())
            .field("fingerprint", &self.fingerprint)
            .field("origin", &self.origin)
            .field("provenance", &self.provenance)
            .field("hidden", &self.hidden)
            .finish()
    }
}

/// What `lookup` shows about a key: safe to print, no key material.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyFacts {
    /// Same form as [`Recipient::fingerprint`].
    pub fingerprint: String,
    /// Algorithm and size (`RSA 2048`, `EC prime256v1`, `EdDSA/ECDH cv25519`).
    pub algorithm: String,
    /// Expiry, or `never`.
    pub expires: String,
}

/// The parsed key inside a [`Recipient`]; each backend reads its own variant.
#[derive(Clone)]
pub(crate) enum RecipientKey {
    Smime(openssl::x509::X509),
    OpenPgp {
        /// Shared: a remembered validation is cloned at every RCPT, and a
        /// deep copy of a certificate is dozens of allocations.
        cert: std::sync::Arc<sequoia_openpgp::Cert>,
        /// The encryption-capable subkeys chosen at validation time.
        subkeys: Vec<sequoia_openpgp::Fingerprint>,
    },
}

/// Encryption failed although the keys were valid: an internal error,
/// answered with a temporary failure, never with an unencrypted pass.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// No recipients, or a recipient of another method.
    #[error("{0}")]
    Recipients(String),
    /// The cryptographic library failed.
    #[error("{method} encryption failed: {detail}")]
    Crypto {
        /// Which backend.
        method: Method,
        /// The library's message.
        detail: String,
    },
    /// Writing the output failed.
    #[error("writing encrypted output: {0}")]
    Io(#[from] io::Error),
}

/// The body of an encrypted entity, written on demand so that the base64
/// or armored rendering is never held in memory beside the ciphertext.
pub trait EntityBody: Send + Sync {
    /// Writes the body with the given line ending.
    fn write_to(&self, eol: Eol, out: &mut dyn Write) -> io::Result<()>;
}

/// The encrypted MIME entity that replaces the message's content.
pub struct EncryptedEntity {
    /// Method that produced it.
    pub method: Method,
    /// The content header fields of the new outer message, in order
    /// (`Content-Type` first). Values may contain `"\n "` folds.
    pub fields: Vec<(&'static str, String)>,
    /// The body.
    pub body: Box<dyn EntityBody>,
}

/// One encryption method.
pub trait EncryptionBackend: Send + Sync {
    /// Which method this is.
    fn method(&self) -> Method;

    /// Checks that `key` may be used to encrypt to `addr` at time `now`.
    fn validate(
        &self,
        key: &KeyMaterial,
        addr: &Address,
        now: SystemTime,
    ) -> Result<Recipient, KeyRejected>;

    /// Encrypts what `inner` yields — a complete MIME entity with CRLF
    /// line endings — to every recipient in `to`. The entity is streamed
    /// and the ciphertext spooled (see [`EncryptOptions::spool_threshold`]),
    /// so memory use does not grow with the message.
    fn encrypt(
        &self,
        inner: &mut dyn io::Read,
        to: &[Recipient],
        opts: &EncryptOptions,
    ) -> Result<EncryptedEntity, BackendError>;
}

/// The backends, by method: one field per [`Method`], so that a method
/// without a backend does not compile (and [`Registry::get`] cannot fail).
pub struct Registry {
    smime: smime::SmimeBackend,
    openpgp: openpgp::OpenPgpBackend,
}

impl Registry {
    /// Every built-in backend.
    pub fn new() -> Self {
        Registry {
            smime: smime::SmimeBackend::new(),
            openpgp: openpgp::OpenPgpBackend::new(),
        }
    }

    /// The backend for `method`.
    pub fn get(&self, method: Method) -> &dyn EncryptionBackend {
        match method {
            Method::Smime => &self.smime,
            Method::OpenPgp => &self.openpgp,
        }
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

/// What a key is, read once: its one encoding (a certificate as DER, an
/// OpenPGP certificate in its binary public form — so that the same key
/// stored PEM and DER, or armored and binary, is known as one), its
/// fingerprint as [`Recipient::fingerprint`] gives it, and the addresses
/// written in it (subjectAltName and emailAddress; every user ID's
/// address), unchecked. For telling keys apart and choosing which address
/// a key is for before validating it; whether it may be used is
/// `validate`'s.
#[derive(Clone, Debug)]
pub struct KeyIdentity {
    /// The key in its one encoding.
    pub canonical: Vec<u8>,
    /// Upper-case hex fingerprint.
    pub fingerprint: String,
    /// The addresses the key names.
    pub addresses: Vec<Address>,
}

/// [`KeyIdentity`] of `data`, or `None` for bytes that are no key of
/// `method` (validation then says why).
pub fn identify(method: Method, data: &[u8]) -> Option<KeyIdentity> {
    let (canonical, fingerprint, written) = match method {
        Method::Smime => {
            let c = smime::parse_certificate(data).ok()?;
            (
                c.to_der().ok()?,
                smime::fingerprint(&c),
                smime::certificate_addresses(&c),
            )
        }
        Method::OpenPgp => {
            use sequoia_openpgp::parse::Parse;
            use sequoia_openpgp::serialize::SerializeInto;
            let c = sequoia_openpgp::Cert::from_bytes(data).ok()?;
            let written = c
                .userids()
                .filter_map(|u| u.userid().email().ok().flatten().map(str::to_owned))
                .collect();
            (c.to_vec().ok()?, c.fingerprint().to_hex(), written)
        }
    };
    Some(KeyIdentity {
        canonical,
        fingerprint,
        addresses: written
            .iter()
            .filter_map(|a| Address::parse(a).ok())
            .collect(),
    })
}

/// A key's fingerprint as [`Recipient::fingerprint`] gives it, or `None`
/// for bytes that are no key of `method`.
pub fn key_fingerprint(method: Method, data: &[u8]) -> Option<String> {
    identify(method, data).map(|i| i.fingerprint)
}

/// Lower-level helper shared by backends: the current time as Unix seconds.
pub(crate) fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_has_a_backend_and_a_name() {
        let r = Registry::new();
        for m in Method::ALL {
            assert_eq!(r.get(m).method(), m);
            assert_eq!(m.as_str().parse::<Method>().unwrap(), m);
        }
        assert!("pgp".parse::<Method>().is_err());
    }

    #[test]
    fn cipher_names_round_trip() {
        for c in [
            SmimeCipher::Aes128Cbc,
            SmimeCipher::Aes256Cbc,
            SmimeCipher::Aes256Gcm,
        ] {
            assert_eq!(c.as_str().parse::<SmimeCipher>().unwrap(), c);
        }
        assert_eq!(SmimeCipher::default(), SmimeCipher::Aes256Cbc);
        assert!("des3".parse::<SmimeCipher>().is_err());
    }
}
