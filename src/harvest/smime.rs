//! S/MIME signed messages (RFC 8551 §3.5): which top-level forms are
//! signed, the signed bytes and the signature found in the body, the
//! signature verified with OpenSSL, and the signer's certificate.
//!
//! * `multipart/signed; protocol="application/pkcs7-signature"` (and the
//!   S/MIME v2 `application/x-pkcs7-signature`): exactly two body parts
//!   (RFC 1847 §2.1); the first, headers included, is the signed entity,
//!   the CRLF before each delimiter belonging to the delimiter (RFC 2046
//!   §5.1.1); the second a base64 (or binary) detached SignedData.
//! * `application/pkcs7-mime; smime-type=signed-data` (or `x-pkcs7-mime`):
//!   the body, base64 or binary, is the SignedData with its content.
//!
//! Only the top-level entity is looked at: a signed part nested in a
//! `multipart/mixed` (or a signed message forwarded as an attachment) is
//! out of scope, as it should be — the `From:` and DKIM result are about
//! the outer message only.
//!
//! The signature must verify over exactly the signed bytes; the signer's
//! certificate is not chained to any CA (a learned key is trusted as
//! learned, not as issued), so `PKCS7_NOVERIFY`. Exactly one signer; its
//! certificate, and none of the others the signature carries, is the
//! result. OpenSSL's PKCS #7 reader is used (the crate exposes the
//! signers for it, not for CMS), which reads signers named by issuer and
//! serial number — what S/MIME clients write — and refuses SignedData
//! whose signer is named by subject key identifier (`openssl cms -keyid`)
//! as unreadable.

use openssl::pkcs7::{Pkcs7, Pkcs7Flags};
use openssl::stack::Stack;
use openssl::x509::X509;
use openssl::x509::store::X509StoreBuilder;

use super::lex::decode_base64;
use crate::message::mime::ContentType;
use crate::message::{HeaderField, Message};

/// How a message is signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignedForm {
    /// `multipart/signed` with a detached PKCS #7 signature.
    Detached,
    /// `application/pkcs7-mime; smime-type=signed-data`.
    Opaque,
}

/// Why no signer certificate came out of a signed message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmimeError {
    /// The MIME structure or the DER is not a signed message.
    #[error("malformed S/MIME signed message: {0}")]
    Malformed(String),
    /// The signature does not verify over the content.
    #[error("S/MIME signature does not verify: {0}")]
    BadSignature(String),
    /// Not exactly one signer.
    #[error("S/MIME signature with {0} signers (exactly one is learned from)")]
    Signers(usize),
}

fn malformed(what: impl Into<String>) -> SmimeError {
    SmimeError::Malformed(what.into())
}

fn openssl_reason(e: &openssl::error::ErrorStack) -> String {
    e.errors()
        .first()
        .and_then(|e| e.reason())
        .unwrap_or("failed")
        .to_owned()
}

/// The top-level `Content-Type`, when there is exactly one that parses.
fn content_type(headers: &[HeaderField]) -> Option<ContentType> {
    let mut cts = headers.iter().filter(|h| h.is("Content-Type"));
    let ct = ContentType::parse(&cts.next()?.unfolded())?;
    cts.next().is_none().then_some(ct)
}

/// Whether (and how) the message as a whole is S/MIME signed: headers
/// only, cheap.
pub fn signed_form(headers: &[HeaderField]) -> Option<SignedForm> {
    let ct = content_type(headers)?;
    if ct.is("multipart", "signed") {
        let protocol = ct.param("protocol")?.to_ascii_lowercase();
        matches!(
            protocol.as_str(),
            "application/pkcs7-signature" | "application/x-pkcs7-signature"
        )
        .then_some(SignedForm::Detached)
    } else if ct.kind == "application"
        && matches!(ct.subtype.as_str(), "pkcs7-mime" | "x-pkcs7-mime")
    {
        ct.param("smime-type")
            .is_some_and(|t| t.eq_ignore_ascii_case("signed-data"))
            .then_some(SignedForm::Opaque)
    } else {
        None
    }
}

/// The transfer encoding of an entity, lower case; `""` when absent.
fn transfer_encoding(headers: &[HeaderField]) -> Result<String, SmimeError> {
    let mut ctes = headers.iter().filter(|h| h.is("Content-Transfer-Encoding"));
    let cte = ctes
        .next()
        .map(|h| h.unfolded().to_ascii_lowercase())
        .unwrap_or_default();
    if ctes.next().is_some() {
        return Err(malformed("two Content-Transfer-Encoding fields"));
    }
    Ok(cte)
}

/// The DER of a body in its transfer encoding (also read for the armored
/// signature of PGP/MIME by `signatures`).
pub(crate) fn der_body(headers: &[HeaderField], body: &[u8]) -> Result<Vec<u8>, SmimeError> {
    match transfer_encoding(headers)?.as_str() {
        "base64" => decode_base64(body).ok_or_else(|| malformed("a signature that is not base64")),
        "" | "binary" | "7bit" | "8bit" => Ok(body.to_vec()),
        other => Err(malformed(format!(
            "a signature in transfer encoding {other:?}"
        ))),
    }
}

/// The lines of `body` with their start offsets, line ends excluded.
fn lines(body: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= body.len() {
            return None;
        }
        let end = memchr::memchr(b'\n', &body[start..]).map_or(body.len(), |i| start + i);
        let line_start = start;
        start = end + 1;
        let line = &body[line_start..end];
        Some((line_start, line.strip_suffix(b"\r").unwrap_or(line)))
    })
}

/// The two parts of a `multipart/signed` body: (signed entity, signature
/// entity), each without the CRLF that belongs to the next delimiter.
/// Shared with `signatures`, which splits PGP/MIME the same way.
pub(crate) fn two_parts<'a>(
    body: &'a [u8],
    boundary: &[u8],
) -> Result<(&'a [u8], &'a [u8]), SmimeError> {
    // (offset of the line, offset after its line end, close?)
    let mut delimiters: Vec<(usize, usize, bool)> = Vec::new();
    for (at, line) in lines(body) {
        let Some(rest) = line
            .strip_prefix(b"--")
            .and_then(|l| l.strip_prefix(boundary))
        else {
            continue;
        };
        // Transport padding (linear white space) may follow a delimiter.
        let close = rest.starts_with(b"--");
        let tail = if close { &rest[2..] } else { rest };
        if !tail.iter().all(|&b| b == b' ' || b == b'\t') {
            continue;
        }
        let next = memchr::memchr(b'\n', &body[at..]).map_or(body.len(), |i| at + i + 1);
        delimiters.push((at, next, close));
        if close {
            break;
        }
    }
    match delimiters.as_slice() {
        [
            (_, first, false),
            (second_at, second, false),
            (close_at, _, true),
        ] => {
            let part = |from: usize, to: usize| {
                // The line end before a delimiter is the delimiter's.
                let end = if to >= 2 && body[to - 2] == b'\r' && body[to - 1] == b'\n' {
                    to - 2
                } else {
                    to.saturating_sub(1)
                };
                &body[from..end.max(from)]
            };
            Ok((part(*first, *second_at), part(*second, *close_at)))
        }
        [.., (_, _, true)] => Err(malformed(format!(
            "multipart/signed with {} parts, not two",
            delimiters.len() - 1
        ))),
        _ => Err(malformed("multipart/signed without its close delimiter")),
    }
}

/// The signer's certificate (DER) of a verified signature over the
/// message with `headers` and `body` (as received, CRLF).
pub fn signer(headers: &[HeaderField], body: &[u8]) -> Result<Vec<u8>, SmimeError> {
    let (der, content) = signed_data(headers, body)?;
    verify(&der, content)
}

/// The SignedData (DER) of an S/MIME signed message and, when detached,
/// the signed bytes it is over; nothing verified yet.
pub(crate) fn signed_data<'a>(
    headers: &[HeaderField],
    body: &'a [u8],
) -> Result<(Vec<u8>, Option<&'a [u8]>), SmimeError> {
    Ok(match signed_form(headers) {
        None => return Err(malformed("not an S/MIME signed message")),
        Some(SignedForm::Opaque) => (der_body(headers, body)?, None),
        Some(SignedForm::Detached) => {
            let ct = content_type(headers).ok_or_else(|| malformed("no Content-Type"))?;
            let boundary = match ct.param("boundary") {
                Some(b) if !b.is_empty() => b.as_bytes().to_vec(),
                _ => return Err(malformed("multipart/signed without a boundary")),
            };
            let (signed, signature) = two_parts(body, &boundary)?;
            let part = Message::parse(signature);
            let is_signature = content_type(&part.headers).is_some_and(|ct| {
                ct.kind == "application"
                    && matches!(ct.subtype.as_str(), "pkcs7-signature" | "x-pkcs7-signature")
            });
            if !is_signature {
                return Err(malformed(
                    "the second part is not application/pkcs7-signature",
                ));
            }
            let sig_body = signature.get(part.body_offset..).unwrap_or_default();
            (der_body(&part.headers, sig_body)?, Some(signed))
        }
    })
}

/// Verifies SignedData `der` (over `content` when detached) and returns
/// its one signer's certificate.
pub fn verify(der: &[u8], content: Option<&[u8]>) -> Result<Vec<u8>, SmimeError> {
    let p7 = Pkcs7::from_der(der)
        .map_err(|e| malformed(format!("SignedData: {}", openssl_reason(&e))))?;
    if p7.signed().is_none() {
        return Err(malformed("a PKCS #7 object that is not SignedData"));
    }
    let none: Stack<X509> = Stack::new().map_err(|e| malformed(openssl_reason(&e)))?;
    let signers = p7
        .signers(&none, Pkcs7Flags::empty())
        .map_err(|e| malformed(format!("signer certificate: {}", openssl_reason(&e))))?;
    if signers.len() != 1 {
        return Err(SmimeError::Signers(signers.len()));
    }
    // Chain verification is off (PKCS7_NOVERIFY); the store is never read.
    let store = X509StoreBuilder::new()
        .map_err(|e| malformed(openssl_reason(&e)))?
        .build();
    // NO_DUAL_CONTENT: a detached signature must not carry content of its
    // own (which a reader might show instead of what was verified); an
    // opaque one without content fails as "no content".
    p7.verify(
        &none,
        &store,
        content,
        None,
        Pkcs7Flags::NOVERIFY | Pkcs7Flags::NO_DUAL_CONTENT,
    )
    .map_err(|e| SmimeError::BadSignature(openssl_reason(&e)))?;
    let cert = signers
        .get(0)
        .ok_or(SmimeError::Signers(0))?
        .to_der()
        .map_err(|e| malformed(openssl_reason(&e)))?;
    Ok(cert)
}

#[cfg(test)]
#[path = "smime_tests.rs"]
mod tests;
