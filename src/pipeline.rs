//! The end-of-message steps between "a message and its validated
//! recipients" and "an encrypted message", shared by the offline `encrypt`
//! command and the milter: classify, verify a candidate ciphertext over the
//! whole body, stream the inner entity, encrypt, and compute the header
//! edits. (Validating found keys belongs to the policy engine:
//! [`crate::policy::KeyOutcome::from_lookup`].)

use std::io;

use crate::backend::{BackendError, EncryptOptions, EncryptedEntity, EncryptionBackend, Recipient};
use crate::message::HeaderField;
use crate::message::classify::{Classification, EncryptedKind, classify};
use crate::message::rewrite::{HeaderEdit, inner_reader, outer_edits};
use crate::message::verify::{Verification, verify};

/// The result of the end-of-message step.
pub enum Prepared {
    /// Verified ciphertext: change nothing.
    AlreadyEncrypted(EncryptedKind),
    /// The header edits and the new body.
    Encrypted {
        /// Edits turning the original header into the outer header.
        edits: Vec<HeaderEdit>,
        /// The encrypted entity (its body is the new message body).
        entity: EncryptedEntity,
    },
}

/// What the full check of a message found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Not a candidate: plaintext (the body was not read).
    Plain,
    /// The whole content is verified ciphertext: pass it unchanged.
    Verified(EncryptedKind),
    /// Looked like `looked` but is not (only) ciphertext: encrypt it.
    NotCiphertext {
        /// What the cheap classification took it for.
        looked: EncryptedKind,
        /// Why verification refused it.
        reason: String,
    },
}

impl Check {
    /// The log line (after the queue id) for a refused candidate.
    pub fn note(&self) -> Option<String> {
        match self {
            Check::NotCiphertext { looked, reason } => Some(format!(
                "looks encrypted ({looked}) but is not ({reason}); encrypting"
            )),
            _ => None,
        }
    }
}

/// The one "classify candidate → verify fully" step: a message passes as
/// already encrypted only if [`classify`] made it a candidate *and*
/// [`verify`] checked its whole body. Reads `body` (the body as received)
/// only for a candidate; CPU- and I/O-bound, so the milter runs it on the
/// blocking pool. A read error is an error, never a verdict.
pub fn check_ciphertext(
    headers: &[HeaderField],
    classification: &Classification,
    body: &mut dyn io::Read,
) -> io::Result<Check> {
    let Some(looked) = classification.candidate() else {
        return Ok(Check::Plain);
    };
    match verify(headers, body) {
        Verification::Verified(kind) => Ok(Check::Verified(kind)),
        Verification::NotCiphertext(reason) => Ok(Check::NotCiphertext { looked, reason }),
        Verification::ReadError(e) => Err(io::Error::other(format!(
            "reading the body to verify it: {e}"
        ))),
    }
}

/// Classifies and verifies the message and, unless it is verified
/// ciphertext, encrypts it to `to`. `body` is the original body as
/// received.
pub fn prepare(
    headers: &[HeaderField],
    body: &[u8],
    backend: &dyn EncryptionBackend,
    to: &[Recipient],
    opts: &EncryptOptions,
) -> Result<Prepared, BackendError> {
    let class = classify(headers, body);
    if let Check::Verified(kind) = check_ciphertext(headers, &class, &mut &body[..])? {
        return Ok(Prepared::AlreadyEncrypted(kind));
    }
    encrypt_entity(headers, &mut inner_reader(headers, body), backend, to, opts)
}

/// Encrypts the inner entity `inner` yields (see
/// [`crate::message::rewrite::inner_reader`]) and computes the edits; for
/// callers whose body is not one slice in memory.
pub fn encrypt_entity(
    headers: &[HeaderField],
    inner: &mut dyn std::io::Read,
    backend: &dyn EncryptionBackend,
    to: &[Recipient],
    opts: &EncryptOptions,
) -> Result<Prepared, BackendError> {
    let entity = backend.encrypt(inner, to, opts)?;
    let edits = outer_edits(headers, &entity.fields);
    Ok(Prepared::Encrypted { edits, entity })
}
