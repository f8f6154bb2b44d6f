//! The transport-safe form of a MIME entity, for signing (RFC 8551 §3.1.3,
//! RFC 3156 §3, RFC 1847): every leaf 7-bit with lines of at most 998
//! octets, no trailing white space, no line starting `From `.
//! (To be written: see the module's brief.)

use std::borrow::Cow;

/// Why an entity could not be made safe.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unsafe(pub String);

/// The entity in transport-safe form (unchanged and borrowed when it
/// already is).
pub fn transport_safe(entity: &[u8]) -> Result<Cow<'_, [u8]>, Unsafe> {
    let _ = entity;
    Err(Unsafe("not written yet".into()))
}
