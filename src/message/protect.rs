//! Header protection (RFC 9788) for a message the milter encrypts: the
//! header section of the Cryptographic Payload and the edits that apply
//! the Header Confidentiality Policy `hcp_baseline` (§3.2.1) to the outer
//! header. Pure: the header as received in, bytes and edits out.
//!
//! * Inside, every field the composer wrote is copied byte for byte, in
//!   order (RFC 9788 §5.2.1 step 3), except `Bcc` (§11.2.1: it must not
//!   reach the recipients it was hidden from) and the fields added in
//!   transit (`Received`, DKIM and ARC signatures, `Authentication-Results`,
//!   … §7), which are not the composer's. A `HP-Outer` field a sender put
//!   on the outside is not copied either: inside, it would be a claim about
//!   the outer header that this milter did not make.
//! * The payload root's `Content-Type` gets `hp="cipher"` (§2.1.1), and
//!   `protected-headers="v1"`, the older convention Thunderbird, K-9 Mail
//!   and NeoMutt read the Subject by (the RFC neither asks for nor forbids
//!   it; RFC 9788 readers go by `hp`). A message without `Content-Type`
//!   gets the MIME default, `text/plain; charset=us-ascii`, spelled out.
//! * Outside, `Subject` becomes `[...]` and `Comments` and `Keywords` are
//!   removed; every other field stays. One `HP-Outer: Name: value` inside
//!   records each copied field as the outside shows it, none for a removed
//!   one (§2.2).
//!
//! No Legacy Display Element is written (§5.2.2 makes it optional; the
//! reasoning is in docs/ARCHITECTURE.md).

use super::mime::ContentType;
use super::rewrite::HeaderEdit;
use super::{HeaderField, append_crlf};

/// What `hcp_baseline` shows outside instead of the Subject (§3.2.1).
pub const PLACEHOLDER: &str = "[...]";

/// Fields the composer did not write (added in transit or by this
/// milter's MTA), or must not be shown to every recipient: not copied
/// inside, and so not recorded in `HP-Outer` either.
const NOT_COPIED: [&str; 13] = [
    "Bcc",
    "HP-Outer",
    "Received",
    "Return-Path",
    "Delivered-To",
    "X-Original-To",
    "Received-SPF",
    "Authentication-Results",
    "DKIM-Signature",
    "ARC-Seal",
    "ARC-Message-Signature",
    "ARC-Authentication-Results",
    "X-Original-Recipient",
];

/// Fields `hcp_baseline` removes from the outer header.
const REMOVED: [&str; 2] = ["Comments", "Keywords"];

/// The protected header of one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Protection {
    /// The payload root's header section, CRLF line endings, with the
    /// empty line that ends it.
    pub inner_header: Vec<u8>,
    /// The edits that obscure the outer header (before the content edits).
    pub edits: Vec<HeaderEdit>,
}

/// Why a message's header cannot be protected (it is then encrypted as
/// before, with its header as it came, and the reason logged).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unprotectable {
    /// The content is a signature over a payload this milter cannot
    /// change: the protected copy would sit outside the signed payload,
    /// where RFC 9788 readers do not look, and the Subject would be lost
    /// to them.
    #[error("the message is signed ({0}): its payload cannot carry the protected header")]
    Signed(&'static str),
    /// `Content-Type` already has a parameter this milter would add
    /// (a parameter given twice is invalid MIME).
    #[error("its Content-Type already has a {0} parameter")]
    AlreadyMarked(&'static str),
    /// More than one `Content-Type` field: which one a reader takes is
    /// anyone's guess.
    #[error("it has several Content-Type fields")]
    SeveralContentTypes,
    /// A `Content-Type` without `type/subtype`: a parameter added to it
    /// would mark nothing a reader understands.
    #[error("its Content-Type is not a MIME type")]
    Malformed,
}

/// The protected header of the message with header `headers`, or why it
/// cannot have one.
pub fn protect(headers: &[HeaderField]) -> Result<Protection, Unprotectable> {
    let mut types = headers.iter().filter(|h| h.is("Content-Type"));
    let content_type = types.next();
    if types.next().is_some() {
        return Err(Unprotectable::SeveralContentTypes);
    }
    if let Some(field) = content_type {
        let ct = ContentType::parse(&field.unfolded()).ok_or(Unprotectable::Malformed)?;
        check_root(&ct)?;
    }
    let copied = headers
        .iter()
        .filter(|h| !NOT_COPIED.iter().any(|n| h.is(n)));
    let mut inner = Vec::new();
    let mut outer_record = Vec::new();
    for h in copied {
        if h.is("Content-Type") {
            inner.extend_from_slice(h.name.as_bytes());
            inner.push(b':');
            append_crlf(&mut inner, trim_end_params(&h.value), false);
            inner.extend_from_slice(b";\r\n hp=\"cipher\";\r\n protected-headers=\"v1\"\r\n");
            continue;
        }
        inner.extend_from_slice(h.name.as_bytes());
        inner.push(b':');
        append_crlf(&mut inner, &h.value, false);
        inner.extend_from_slice(b"\r\n");
        if h.is_content_field() || h.is("MIME-Version") || REMOVED.iter().any(|n| h.is(n)) {
            // Structural (its own outside), or removed: no record.
            continue;
        }
        outer_record.extend_from_slice(b"HP-Outer: ");
        outer_record.extend_from_slice(h.name.as_bytes());
        outer_record.extend_from_slice(b": ");
        if h.is("Subject") {
            outer_record.extend_from_slice(PLACEHOLDER.as_bytes());
        } else {
            append_crlf(&mut outer_record, trim_start(&h.value), false);
        }
        outer_record.extend_from_slice(b"\r\n");
    }
    if content_type.is_none() {
        inner.extend_from_slice(
            b"Content-Type: text/plain; charset=us-ascii;\r\n hp=\"cipher\"; protected-headers=\"v1\"\r\n",
        );
    }
    inner.extend_from_slice(&outer_record);
    inner.extend_from_slice(b"\r\n");
    Ok(Protection {
        inner_header: inner,
        edits: outer_edits(headers),
    })
}

/// The root must be a payload this milter can mark: not a signature, not
/// marked already.
fn check_root(ct: &ContentType) -> Result<(), Unprotectable> {
    if ct.is("multipart", "signed") {
        return Err(Unprotectable::Signed("multipart/signed"));
    }
    let pkcs7 = ct.is("application", "pkcs7-mime") || ct.is("application", "x-pkcs7-mime");
    let smime_type = ct.param("smime-type").map(str::to_ascii_lowercase);
    if pkcs7 && smime_type.as_deref() != Some("enveloped-data") {
        // signed-data, or no smime-type: an opaque signature (a message
        // that merely looks encrypted is verified and encrypted first;
        // it gets here only as a candidate that failed, see pipeline).
        return Err(Unprotectable::Signed("application/pkcs7-mime"));
    }
    match ["hp", "protected-headers", "hp-legacy-display"]
        .into_iter()
        .find(|name| ct.param(name).is_some())
    {
        Some(name) => Err(Unprotectable::AlreadyMarked(name)),
        None => Ok(()),
    }
}

/// `hcp_baseline` on the outer header: every `Subject` becomes the
/// placeholder, every `Comments` and `Keywords` goes.
fn outer_edits(headers: &[HeaderField]) -> Vec<HeaderEdit> {
    let mut edits = Vec::new();
    let subjects = headers.iter().filter(|h| h.is("Subject")).count();
    for index in 1..=subjects {
        edits.push(HeaderEdit::Change {
            name: "Subject".into(),
            index,
            value: PLACEHOLDER.into(),
        });
    }
    for name in REMOVED {
        let n = headers.iter().filter(|h| h.is(name)).count();
        // From the last down, so the indexes stay valid.
        for index in (1..=n).rev() {
            edits.push(HeaderEdit::Delete {
                name: name.into(),
                index,
            });
        }
    }
    edits
}

/// A raw value without its leading white space (folds included).
fn trim_start(value: &[u8]) -> &[u8] {
    let start = value
        .iter()
        .position(|b| !b" \t\r\n".contains(b))
        .unwrap_or(value.len());
    &value[start..]
}

/// A raw `Content-Type` value without trailing white space and `;`, so
/// that appending `; hp="cipher"` gives no empty parameter.
fn trim_end_params(value: &[u8]) -> &[u8] {
    let end = value
        .iter()
        .rposition(|b| !b" \t\r\n;".contains(b))
        .map_or(0, |i| i + 1);
    &value[..end]
}

#[cfg(test)]
#[path = "protect_tests.rs"]
mod tests;
