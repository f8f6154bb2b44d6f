//! The steps between "a message and its recipients" and "an encrypted
//! message", shared by the offline `encrypt` command and the milter:
//! validate the keys a source found, classify, build the inner entity,
//! encrypt, and compute the header edits.

use std::time::SystemTime;

use crate::address::Address;
use crate::backend::{
    BackendError, EncryptOptions, EncryptedEntity, EncryptionBackend, KeyRejected, Recipient,
};
use crate::keys::Lookup;
use crate::message::HeaderField;
use crate::message::classify::{Classification, EncryptedKind, classify};
use crate::message::rewrite::{HeaderEdit, inner_reader, outer_edits};

/// What one method's lookup yields for one address once its keys have
/// been through the backend's validation.
#[derive(Debug)]
pub enum KeyStatus {
    /// At least one key may be used.
    Usable(Vec<Recipient>),
    /// No key: proven absent, or every key found was refused.
    NoKey {
        /// Refusals, one per key found (empty when nothing was found).
        rejected: Vec<KeyRejected>,
    },
    /// The zone is unsigned; its keys are not trusted.
    Insecure,
    /// The lookup did not complete or did not validate: never "no key".
    Error(String),
}

/// Validates every key of `lookup` for `addr` with `backend`.
pub fn key_status(
    backend: &dyn EncryptionBackend,
    lookup: &Lookup,
    addr: &Address,
    now: SystemTime,
) -> KeyStatus {
    match lookup {
        Lookup::Found { keys, .. } => {
            let mut usable = Vec::new();
            let mut rejected = Vec::new();
            for key in keys {
                match backend.validate(key, addr, now) {
                    Ok(r) => usable.push(r),
                    Err(e) => rejected.push(e),
                }
            }
            if usable.is_empty() {
                KeyStatus::NoKey { rejected }
            } else {
                KeyStatus::Usable(usable)
            }
        }
        Lookup::NotFound => KeyStatus::NoKey { rejected: Vec::new() },
        Lookup::Insecure => KeyStatus::Insecure,
        Lookup::Bogus(why) => KeyStatus::Error(format!("DNSSEC bogus: {why}")),
        Lookup::Failed(why) => KeyStatus::Error(format!("lookup failed: {why}")),
    }
}

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
