//! S/MIME (stub, being written).
use super::*;
/// S/MIME backend.
pub struct SmimeBackend;
impl SmimeBackend {
    /// New.
    pub fn new() -> Self { SmimeBackend }
}
impl Default for SmimeBackend { fn default() -> Self { Self::new() } }
impl EncryptionBackend for SmimeBackend {
    fn method(&self) -> Method { Method::Smime }
    fn validate(&self, key: &KeyMaterial, _addr: &Address, _now: SystemTime) -> Result<Recipient, KeyRejected> {
        Err(KeyRejected { origin: key.origin.clone(), reason: RejectReason::Unreadable("stub".into()) })
    }
    fn encrypt(&self, _inner: &[u8], _to: &[Recipient], _opts: &EncryptOptions) -> Result<EncryptedEntity, BackendError> {
        Err(BackendError::Recipients("stub".into()))
    }
}
