//! OpenPGP (stub, being written).
use super::*;
/// OpenPGP backend.
pub struct OpenPgpBackend;
impl OpenPgpBackend {
    /// New.
    pub fn new() -> Self { OpenPgpBackend }
}
impl Default for OpenPgpBackend { fn default() -> Self { Self::new() } }
impl EncryptionBackend for OpenPgpBackend {
    fn method(&self) -> Method { Method::OpenPgp }
    fn validate(&self, key: &KeyMaterial, _addr: &Address, _now: SystemTime) -> Result<Recipient, KeyRejected> {
        Err(KeyRejected { origin: key.origin.clone(), reason: RejectReason::Unreadable("stub".into()) })
    }
    fn encrypt(&self, _inner: &[u8], _to: &[Recipient], _opts: &EncryptOptions) -> Result<EncryptedEntity, BackendError> {
        Err(BackendError::Recipients("stub".into()))
    }
}
