//! A short-lived memory of key validations, so that the same certificate
//! or OpenPGP key is not parsed and checked again at every RCPT (it was
//! the largest single cost per message, BENCHMARKS.md).
//!
//! Entries are keyed by method, recipient address and a SHA-256 of the key
//! bytes — a changed key is a new entry — and live at most
//! [`VALIDATION_TTL`], so expiry and revocation are re-checked at least
//! that often.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};

use crate::address::Address;
use crate::backend::{EncryptionBackend, Recipient};
use crate::material::{KeyMaterial, KeyRejected, Method};

/// How long a validation result is reused.
pub const VALIDATION_TTL: Duration = Duration::from_secs(60);
/// Most results kept.
pub const CAPACITY: usize = 10_000;

type Key = (Method, String, [u8; 32]);
type Entry = (Result<Recipient, KeyRejected>, Instant);

/// Remembered validation results.
#[derive(Default)]
pub struct ValidationCache {
    entries: Mutex<HashMap<Key, Entry>>,
}

impl ValidationCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// `backend.validate(key, addr, now)`, or its remembered result.
    pub fn validate(
        &self,
        backend: &dyn EncryptionBackend,
        key: &KeyMaterial,
        addr: &Address,
        now: SystemTime,
    ) -> Result<Recipient, KeyRejected> {
        let digest: [u8; 32] = Sha256::digest(&key.data).into();
        let id = (key.method, addr.to_string().to_lowercase(), digest);
        let fresh = Instant::now();
        if let Some((result, expires)) = self.lock().get(&id)
            && *expires > fresh
        {
            // The origin is where the key was found this time.
            return match result {
                Ok(r) => Ok(Recipient {
                    origin: key.origin.clone(),
                    provenance: key.provenance,
                    address: addr.clone(),
                    ..r.clone()
                }),
                Err(e) => Err(key.reject(e.reason.clone())),
            };
        }
        let result = backend.validate(key, addr, now);
        let mut entries = self.lock();
        if entries.len() >= CAPACITY {
            entries.retain(|_, (_, expires)| *expires > fresh);
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries.insert(id, (result.clone(), fresh + VALIDATION_TTL));
        result
    }

    /// Results held (for tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        match self.entries.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Registry, RejectReason};

    #[test]
    fn remembers_refusals_and_tells_keys_apart() {
        let cache = ValidationCache::new();
        let registry = Registry::new();
        let backend = registry.get(Method::Smime);
        let addr = Address::parse("a@example.org").unwrap();
        let junk = |data: &[u8], origin: &str| KeyMaterial {
            bound_addresses: Vec::new(),
            method: Method::Smime,
            data: data.to_vec(),
            origin: origin.into(),
            provenance: crate::material::Provenance::now(
                crate::material::SourceKind::Test,
                crate::material::Security::Local,
            ),
        };
        let first = cache.validate(backend, &junk(b"junk", "one"), &addr, SystemTime::now());
        assert!(matches!(
            first,
            Err(KeyRejected {
                reason: RejectReason::Unreadable(_),
                ..
            })
        ));
        // Same bytes from elsewhere: the remembered refusal, with the new origin.
        let again = cache
            .validate(backend, &junk(b"junk", "two"), &addr, SystemTime::now())
            .unwrap_err();
        assert_eq!(again.origin, "two");
        assert_eq!(cache.lock().len(), 1);
        // Other bytes: validated on their own.
        let _ = cache.validate(backend, &junk(b"other", "three"), &addr, SystemTime::now());
        assert_eq!(cache.lock().len(), 2);
    }
}
