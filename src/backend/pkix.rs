//! SMIMEA usage 1 (PKIX-EE, RFC 8162 §2 with RFC 6698 §2.1.1): a
//! certificate published in DNS is used only when it also chains to a CA
//! of the system trust store. This module owns that store and the check.
//!
//! The store is loaded once, when [`PkixTrust::system`] is called (the DNS
//! key source calls it when it is built: at start and on reload, off the
//! connection threads), and then shared by every lookup. Loading it reads
//! the whole CA bundle, which is far too slow to do per record on the
//! path of a message.

use openssl::stack::Stack;
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::{X509, X509StoreContext};

/// The system trust store (OpenSSL's default locations, so
/// `SSL_CERT_FILE` and `SSL_CERT_DIR` apply), loaded once.
pub struct PkixTrust {
    /// The store, or why it could not be built. A store that cannot be
    /// built rejects every usage-1 certificate with that reason, as when
    /// it was loaded per record; it does not stop the DNS source, whose
    /// usage-3 records need no store.
    store: Result<X509Store, String>,
}

impl PkixTrust {
    /// Loads the system trust store now.
    pub fn system() -> Self {
        #[cfg(test)]
        built::count();
        let store = (|| {
            let mut builder = X509StoreBuilder::new()?;
            builder.set_default_paths()?;
            Ok::<_, openssl::error::ErrorStack>(builder.build())
        })()
        .map_err(|e| e.to_string());
        PkixTrust { store }
    }

    /// Whether the DER certificate `der` verifies against the store; the
    /// error is OpenSSL's reason (the text of a usage-1 rejection).
    pub fn verify(&self, der: &[u8]) -> Result<(), String> {
        let cert = X509::from_der(der).map_err(|e| e.to_string())?;
        let store = self.store.as_ref().map_err(Clone::clone)?;
        // The record carries the end-entity certificate only: the chain
        // must be found in the store.
        let chain = Stack::new().map_err(|e| e.to_string())?;
        let mut ctx = X509StoreContext::new().map_err(|e| e.to_string())?;
        let failure = ctx
            .init(store, &cert, &chain, |c| {
                let ok = c.verify_cert()?;
                Ok(if ok {
                    None
                } else {
                    Some(c.error().to_string())
                })
            })
            .map_err(|e| e.to_string())?;
        match failure {
            None => Ok(()),
            Some(why) => Err(why),
        }
    }
}

/// How many stores this thread has built (tests assert that lookups
/// build none).
#[cfg(test)]
pub(crate) mod built {
    use std::cell::Cell;

    thread_local! {
        static STORES: Cell<usize> = const { Cell::new(0) };
    }

    pub(super) fn count() {
        STORES.with(|s| s.set(s.get() + 1));
    }

    /// Stores built on this thread so far.
    pub(crate) fn stores() -> usize {
        STORES.with(Cell::get)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_a_certificate_is_rejected_with_openssl_reason() {
        let trust = PkixTrust::system();
        let why = trust.verify(b"not DER").unwrap_err();
        assert!(!why.is_empty());
    }
}
