//! The `multipart/signed` frame both signature formats share (RFC 1847
//! §2.1): a fresh boundary that the signed entity cannot contain, the
//! entity as the first part exactly as it was signed, the signature part
//! second.

use super::{SignError, SignedEntity};
use crate::material::Method;

/// How many random boundaries to try before giving up (one almost
/// surely suffices: 128 random bits).
const BOUNDARY_TRIES: usize = 8;

/// A boundary not found in `entity`: `=_ae_` and 32 hex digits. `=_`
/// never occurs in quoted-printable or base64 text, and the whole entity
/// is searched anyway.
fn boundary(entity: &[u8], method: Method) -> Result<String, SignError> {
    for _ in 0..BOUNDARY_TRIES {
        let mut random = [0u8; 16];
        openssl::rand::rand_bytes(&mut random).map_err(|e| SignError::Crypto {
            method,
            detail: format!("no random boundary: {e}"),
        })?;
        let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let candidate = format!("=_ae_{hex}");
        if memchr::memmem::find(entity, candidate.as_bytes()).is_none() {
            return Ok(candidate);
        }
    }
    Err(SignError::Crypto {
        method,
        detail: "every random boundary tried occurs in the entity".into(),
    })
}

/// The longest header line we write (RFC 5322 §2.1.1 "SHOULD").
const LINE: usize = 78;

/// `value; p1; p2` as a `Content-Type` value, folded with `"\r\n "`
/// before a parameter that would make its line (counted from
/// `Content-Type: `) longer than 78 characters.
fn fold(value: &str, params: &[&str]) -> String {
    let mut out = String::from(value);
    let mut line = "Content-Type: ".len() + value.len();
    for (i, p) in params.iter().enumerate() {
        let semi = usize::from(i + 1 < params.len());
        out.push(';');
        line += 1;
        if line + 1 + p.len() + semi > LINE {
            out.push_str("\r\n");
            line = 0;
        }
        out.push(' ');
        out.push_str(p);
        line += 1 + p.len();
    }
    out
}

/// What a format puts around its signature.
pub(super) struct Format<'a> {
    /// Which method signs.
    pub method: Method,
    /// The `Content-Type` parameters before `boundary`, in order.
    pub params: &'a [&'a str],
    /// The preamble line, for readers that do not know MIME.
    pub preamble: &'a str,
    /// The signature part's header fields (CRLF-ended lines).
    pub signature_fields: &'a str,
}

/// `multipart/signed` around the safe `entity` and `signature` (text,
/// CRLF lines; a final CRLF is dropped, since the CRLF before the close
/// delimiter belongs to the delimiter).
pub(super) fn signed(
    entity: &[u8],
    format: &Format<'_>,
    signature: &[u8],
) -> Result<SignedEntity, SignError> {
    let boundary = boundary(entity, format.method)?;
    let boundary_param = format!("boundary=\"{boundary}\"");
    let mut params: Vec<&str> = format.params.to_vec();
    params.push(&boundary_param);
    let content_type = fold("multipart/signed", &params);
    let signature = signature.strip_suffix(b"\r\n").unwrap_or(signature);
    let mut body = Vec::with_capacity(entity.len() + signature.len() + 512);
    body.extend_from_slice(format.preamble.as_bytes());
    body.extend_from_slice(b"\r\n--");
    body.extend_from_slice(boundary.as_bytes());
    body.extend_from_slice(b"\r\n");
    // Exactly the signed octets; the CRLF after them is the delimiter's.
    body.extend_from_slice(entity);
    body.extend_from_slice(b"\r\n--");
    body.extend_from_slice(boundary.as_bytes());
    body.extend_from_slice(b"\r\n");
    body.extend_from_slice(format.signature_fields.as_bytes());
    body.extend_from_slice(b"\r\n");
    body.extend_from_slice(signature);
    body.extend_from_slice(b"\r\n--");
    body.extend_from_slice(boundary.as_bytes());
    body.extend_from_slice(b"--\r\n");
    Ok(SignedEntity {
        fields: vec![("Content-Type", content_type)],
        body,
    })
}
