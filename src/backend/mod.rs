//! Encryption methods: the [`EncryptionBackend`] trait, the method names
//! used in configuration and policy files, and the registry of backends.
//!
//! A backend owns two things: deciding whether a key may be used for an
//! address ([`EncryptionBackend::validate`]) and producing the encrypted
//! MIME entity ([`EncryptionBackend::encrypt`]). Adding a method means one
//! new file here and one line in [`Registry::new`].

pub mod cms_stream;
pub mod openpgp;
pub mod smime;

use std::fmt;
use std::io::{self, Write};

use std::str::FromStr;
use std::time::SystemTime;

use crate::address::Address;
use crate::message::Eol;

/// An encryption method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Method {
    /// S/MIME: CMS `application/pkcs7-mime` (RFC 8551).
    Smime,
    /// OpenPGP: PGP/MIME (RFC 3156).
    OpenPgp,
}

impl Method {
    /// Every method, in the default preference order.
    pub const ALL: [Method; 2] = [Method::Smime, Method::OpenPgp];

    /// The name used in configuration, policy files and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Smime => "smime",
            Method::OpenPgp => "openpgp",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A method name that is not one of [`Method::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown encryption method {0:?} (expected \"smime\" or \"openpgp\")")]
pub struct UnknownMethod(pub String);

impl FromStr for Method {
    type Err = UnknownMethod;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "smime" => Ok(Method::Smime),
            "openpgp" => Ok(Method::OpenPgp),
            other => Err(UnknownMethod(other.to_owned())),
        }
    }
}

/// The symmetric cipher of an S/MIME message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SmimeCipher {
    /// EnvelopedData, AES-128-CBC.
    Aes128Cbc,
    /// EnvelopedData, AES-256-CBC: what every S/MIME client reads.
    #[default]
    Aes256Cbc,
    /// AuthEnvelopedData (RFC 5083/5084), AES-256-GCM.
    Aes256Gcm,
}

impl SmimeCipher {
    /// The name used in configuration (`smime.cipher`).
    pub fn as_str(self) -> &'static str {
        match self {
            SmimeCipher::Aes128Cbc => "aes-128-cbc",
            SmimeCipher::Aes256Cbc => "aes-256-cbc",
            SmimeCipher::Aes256Gcm => "aes-256-gcm",
        }
    }
}

impl fmt::Display for SmimeCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A cipher name that is not supported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown S/MIME cipher {0:?} (expected aes-128-cbc, aes-256-cbc or aes-256-gcm)")]
pub struct UnknownCipher(pub String);

impl FromStr for SmimeCipher {
    type Err = UnknownCipher;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "aes-128-cbc" => Ok(SmimeCipher::Aes128Cbc),
            "aes-256-cbc" => Ok(SmimeCipher::Aes256Cbc),
            "aes-256-gcm" => Ok(SmimeCipher::Aes256Gcm),
            other => Err(UnknownCipher(other.to_owned())),
        }
    }
}

/// Per-message choices that are not properties of a recipient.
#[derive(Clone, Copy, Debug)]
pub struct EncryptOptions {
    /// S/MIME content cipher.
    pub smime_cipher: SmimeCipher,
    /// Ciphertext beyond this many bytes goes to an anonymous temporary
    /// file instead of memory (`limits.spool_threshold_bytes`).
    pub spool_threshold: usize,
}

impl Default for EncryptOptions {
    fn default() -> Self {
        EncryptOptions {
            smime_cipher: SmimeCipher::default(),
            spool_threshold: crate::spool::DEFAULT_THRESHOLD,
        }
    }
}

/// Key bytes as a key source found them, not yet checked.
#[derive(Clone, Debug)]
pub struct KeyMaterial {
    /// Which backend reads these bytes.
    pub method: Method,
    /// S/MIME: an X.509 certificate, DER or PEM. OpenPGP: a transferable
    /// public key, binary or ASCII-armored.
    pub data: Vec<u8>,
    /// Where it came from, for logs and reasons ("file /x/a.pem",
    /// "SMIMEA `owner-name`").
    pub origin: String,
}

impl KeyMaterial {
    /// A refusal of this key.
    pub fn reject(&self, reason: RejectReason) -> KeyRejected {
        KeyRejected {
            origin: self.origin.clone(),
            reason,
        }
    }

    /// Refuses material meant for another backend.
    pub(crate) fn expect_method(&self, method: Method) -> Result<(), KeyRejected> {
        if self.method == method {
            Ok(())
        } else {
            Err(self.reject(RejectReason::WrongMethod(self.method)))
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
    /// Where the key came from.
    pub origin: String,
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

/// Why a key may not be used. The reason is shown to administrators
/// (logs, `lookup`, `encrypt`), never to the SMTP client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {reason}")]
pub struct KeyRejected {
    /// Where the key came from.
    pub origin: String,
    /// What is wrong with it.
    pub reason: RejectReason,
}

/// What is wrong with a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RejectReason {
    /// The bytes are not a certificate or key of the method's kind.
    #[error("unreadable key: {0}")]
    Unreadable(String),
    /// Key material for another method was handed to this backend.
    #[error("key is for {0}, not for this method")]
    WrongMethod(Method),
    /// Past its notAfter or expiration time.
    #[error("expired ({0})")]
    Expired(String),
    /// Before its notBefore time.
    #[error("not yet valid (from {0})")]
    NotYetValid(String),
    /// S/MIME: keyUsage lacks keyEncipherment (RSA) or keyAgreement (EC).
    #[error("key usage does not allow encryption (needs {0})")]
    KeyUsage(&'static str),
    /// S/MIME: extendedKeyUsage present without emailProtection.
    #[error("extended key usage lacks emailProtection")]
    ExtendedKeyUsage,
    /// S/MIME: a public key algorithm that cannot receive CMS mail.
    #[error("unsupported public key algorithm {0}")]
    Algorithm(String),
    /// The certificate or key does not name the address.
    #[error("not issued for {0}")]
    AddressMismatch(String),
    /// OpenPGP: the certificate is revoked.
    #[error("revoked")]
    Revoked,
    /// OpenPGP: no live, unrevoked, policy-conformant encryption subkey.
    #[error("no usable encryption-capable (sub)key")]
    NoEncryptionKey,
    /// OpenPGP: the standard policy rejects the certificate.
    #[error("rejected by policy: {0}")]
    Policy(String),
    /// A DNS record that cannot give an encryption key by itself (SMIMEA
    /// with only a hash, or a CA usage).
    #[error("record present, no usable certificate: {0}")]
    UnusableRecord(String),
    /// SMIMEA usage 1 (PKIX-EE): the certificate does not verify against
    /// the system trust store.
    #[error("PKIX-EE certificate does not chain to a trusted CA: {0}")]
    Untrusted(String),
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

/// The backends, by method.
pub struct Registry {
    backends: Vec<Box<dyn EncryptionBackend>>,
}

impl Registry {
    /// Every built-in backend.
    pub fn new() -> Self {
        Registry {
            backends: vec![
                Box::new(smime::SmimeBackend::new()),
                Box::new(openpgp::OpenPgpBackend::new()),
            ],
        }
    }

    /// The backend for `method`.
    pub fn get(&self, method: Method) -> &dyn EncryptionBackend {
        // Every Method has a backend: Registry::new lists them all, and a
        // unit test checks it.
        let found = self.backends.iter().find(|b| b.method() == method);
        match found {
            Some(b) => b.as_ref(),
            None => unreachable_backend(method),
        }
    }
}

#[cold]
#[allow(
    clippy::panic,
    reason = "Registry::new registers every Method; a test proves it"
)]
fn unreachable_backend(method: Method) -> ! {
    panic!("no backend registered for {method}")
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
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
