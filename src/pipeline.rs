//! The end-of-message steps between "a message and its validated
//! recipients" and "an encrypted message", shared by the offline `encrypt`
//! command and the milter: classify, stream the inner entity, encrypt, and
//! compute the header edits. (Validating found keys belongs to the policy
//! engine: [`crate::policy::KeyOutcome::from_lookup`].)

use crate::backend::{BackendError, EncryptOptions, EncryptedEntity, EncryptionBackend, Recipient};
use crate::message::HeaderField;
use crate::message::classify::{Classification, EncryptedKind, classify};
use crate::message::rewrite::{HeaderEdit, inner_reader, outer_edits};

/// The result of the end-of-message step.
pub enum Prepared {
    /// Already encrypted: change nothing.
    AlreadyEncrypted(EncryptedKind),
    /// The header edits and the new body.
    Encrypted {
        /// Edits turning the original header into the outer header.
        edits: Vec<HeaderEdit>,
        /// The encrypted entity (its body is the new message body).
        entity: EncryptedEntity,
    },
}

/// Classifies the message and, unless it is already encrypted, encrypts
/// it to `to`. `body` is the original body as received.
pub fn prepare(
    headers: &[HeaderField],
    body: &[u8],
    backend: &dyn EncryptionBackend,
    to: &[Recipient],
    opts: &EncryptOptions,
) -> Result<Prepared, BackendError> {
    if let Classification::Encrypted(kind) = classify(headers, body) {
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
