//! Verifying the signature of inbound mail against the key the key
//! service finds for its `From:` address, and the
//! `Authentication-Results` field that records the result (RFC 8601,
//! RFC 7281).
//!
//! This module owns the pure core: which top-level forms are signed
//! ([`signed_form`], headers only), the verdict over a message and a set
//! of keys ([`verify`]), and the field written for it ([`results`]). It
//! looks nothing up and edits nothing: the milter finds the keys, bounds
//! the body, removes the fields [`results::ours`] names and adds the one
//! [`results::field_value`] writes.
//!
//! Trust: a signature passes only when its signer is one of the keys the
//! key service validated for the `From:` address. A certificate the
//! message carries proves nothing by itself (anyone can make one naming
//! any address), and no CA chain is asked for: a key is trusted because
//! its source vouched for it (DNSSEC, the operator's directory, a pin),
//! not because a CA issued it.
//!
//! * S/MIME (RFC 8551 §3.5): detached `multipart/signed` or opaque
//!   `signed-data`, verified with OpenSSL's PKCS #7 reader
//!   ([`crate::harvest::smime`] splits the parts). The signer's
//!   certificate may be embedded or left out; the keys are offered to
//!   OpenSSL first, so a signer named by a key's issuer and serial number
//!   is always checked against that key, never against a look-alike
//!   certificate in the message.
//! * PGP/MIME (RFC 3156 §5): `multipart/signed;
//!   protocol="application/pgp-signature"`, two parts, the second an
//!   armored detached signature, verified with Sequoia's standard policy
//!   over the first part's bytes.
//!
//! Several signatures (S/MIME signer infos, OpenPGP signature packets):
//! every signature that can be checked must verify — one that does not
//! makes the verdict [`Verdict::Fail`], whoever made it — and at least
//! one must be by a key of the `From:` address. A signature by another
//! key beside a passing one changes nothing (a gateway may sign beside
//! the author). At most [`MAX_SIGNATURES`]: more is [`Verdict::PermError`].
//!
//! Work is bounded: the caller bounds the body; the split is one linear
//! pass, the PGP signature part is at most [`MAX_PGP_SIGNATURE_BYTES`],
//! and the number of signatures is counted before any is verified.

mod pgp;
pub mod results;
mod smime;

use crate::backend::{Method, Recipient};
use crate::harvest::smime::SignedForm;
use crate::message::HeaderField;
use crate::message::mime::ContentType;

/// Signatures checked in one message, at most: S/MIME clients write one
/// signer, OpenPGP ones one signature; a few more leave room for a
/// gateway's, thousands would be work for nothing.
pub const MAX_SIGNATURES: usize = 8;

/// Bytes of the PGP/MIME signature part, at most: one armored signature
/// is under 2 KiB even with RSA-4096, so this holds [`MAX_SIGNATURES`]
/// of them with room to spare.
pub const MAX_PGP_SIGNATURE_BYTES: usize = 64 * 1024;

/// How the top-level entity is signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// S/MIME, detached or opaque.
    Smime(SignedForm),
    /// PGP/MIME `multipart/signed` (RFC 3156 §5).
    PgpMime,
}

impl Form {
    /// The method whose keys verify this form.
    pub fn method(&self) -> Method {
        match self {
            Form::Smime(_) => Method::Smime,
            Form::PgpMime => Method::OpenPgp,
        }
    }
}

/// The top-level `Content-Type`, when there is exactly one that parses.
fn content_type(headers: &[HeaderField]) -> Option<ContentType> {
    let mut cts = headers.iter().filter(|h| h.is("Content-Type"));
    let ct = ContentType::parse(&cts.next()?.unfolded())?;
    cts.next().is_none().then_some(ct)
}

/// Whether `ct` is PGP/MIME signed: `multipart/signed` whose `protocol`
/// is `application/pgp-signature` (compared case-insensitively, as MIME
/// types are).
fn is_pgp_signed(ct: &ContentType) -> bool {
    ct.is("multipart", "signed")
        && ct
            .param("protocol")
            .is_some_and(|p| p.eq_ignore_ascii_case("application/pgp-signature"))
}

/// Whether the top-level entity is signed, and how: headers only, cheap.
pub fn signed_form(headers: &[HeaderField]) -> Option<Form> {
    if let Some(f) = crate::harvest::smime::signed_form(headers) {
        return Some(Form::Smime(f));
    }
    content_type(headers)
        .is_some_and(|ct| is_pgp_signed(&ct))
        .then_some(Form::PgpMime)
}

/// The outcome of verifying one signed message against the keys of its
/// `From:` address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Valid over the content, and the signer is one of `keys`.
    Pass {
        /// The signer's fingerprint, as [`Recipient::fingerprint`] gives it.
        fingerprint: String,
    },
    /// The signature does not verify over the content (the bytes changed, or a wrong key id claims it).
    Fail(String),
    /// Valid signature, but not by any of `keys` (no key was found for the From: address, or another key signed).
    Policy(String),
    /// Not processable: malformed structure, unsupported algorithm, several/zero signatures where one is needed...
    PermError(String),
}

impl Verdict {
    /// The name in logs and metric labels (`verified_total{result}`),
    /// the result keyword of the `Authentication-Results` field.
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Pass { .. } => "pass",
            Verdict::Fail(_) => "fail",
            Verdict::Policy(_) => "policy",
            Verdict::PermError(_) => "permerror",
        }
    }
}

/// The verdict when no signature is by a key of the `From:` address:
/// `signer` names the key that did sign, if known.
fn not_from_keys(keys_found: bool, signer: Option<&str>) -> Verdict {
    Verdict::Policy(match (keys_found, signer) {
        (false, _) => "no key found for the From: address".to_owned(),
        (true, Some(fp)) => format!("signed by {fp}, not a key found for the From: address"),
        (true, None) => "not signed by a key found for the From: address".to_owned(),
    })
}

/// Verifies the signed message (headers as received, body as received with CRLF line endings)
/// against `keys` — the keys the key service found for the From: address, for `form.method()`.
/// Keys of another method are ignored.
pub fn verify(headers: &[HeaderField], body: &[u8], form: Form, keys: &[Recipient]) -> Verdict {
    match form {
        Form::Smime(f) => smime::verify(headers, body, f, keys),
        Form::PgpMime => pgp::verify(headers, body, keys),
    }
}

#[cfg(test)]
mod tests;
