//! OpenPGP `multipart/signed` (RFC 3156 §5). (To be written.)

use super::{OpenPgpSigner, SignError, SignedEntity};
use crate::material::Method;

/// Signs the transport-safe `entity`.
pub(crate) fn sign(entity: &[u8], key: &OpenPgpSigner) -> Result<SignedEntity, SignError> {
    let _ = (entity, key);
    Err(SignError::Crypto {
        method: Method::OpenPgp,
        detail: "not written yet".into(),
    })
}
