//! S/MIME `multipart/signed` (RFC 8551 §3.5.3). (To be written.)

use super::{SignError, SignedEntity, SmimeSigner};
use crate::material::Method;

/// Signs the transport-safe `entity`.
pub(crate) fn sign(entity: &[u8], key: &SmimeSigner) -> Result<SignedEntity, SignError> {
    let _ = (entity, key);
    Err(SignError::Crypto {
        method: Method::Smime,
        detail: "not written yet".into(),
    })
}
