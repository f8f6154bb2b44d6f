//! Verifying the signature of inbound mail against the key the key
//! service finds for its `From:` address, and the
//! `Authentication-Results` field that records the result (RFC 8601,
//! RFC 7281). (To be written: see the module's brief.)
//! (Stub until the verification lands: every signature is a permerror.)

pub mod results;

use crate::backend::{Method, Recipient};
use crate::message::HeaderField;

/// How a message is signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// S/MIME.
    Smime(crate::harvest::smime::SignedForm),
    /// PGP/MIME.
    PgpMime,
}

impl Form {
    /// The method.
    pub fn method(&self) -> Method {
        match self {
            Form::Smime(_) => Method::Smime,
            Form::PgpMime => Method::OpenPgp,
        }
    }
}

/// Whether the top-level entity is signed.
pub fn signed_form(headers: &[HeaderField]) -> Option<Form> {
    crate::harvest::smime::signed_form(headers).map(Form::Smime)
}

/// The verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Pass.
    Pass {
        /// Signer.
        fingerprint: String,
    },
    /// Fail.
    Fail(String),
    /// Policy.
    Policy(String),
    /// Permerror.
    PermError(String),
}

/// Verifies.
pub fn verify(_h: &[HeaderField], _b: &[u8], _f: Form, _k: &[Recipient]) -> Verdict {
    Verdict::PermError("stub".into())
}
