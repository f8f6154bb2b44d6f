//! Full verification that a message which looks encrypted is encrypted:
//! its *whole* content must be ciphertext whose structure was checked over
//! the whole body as it streams (issue 9). Anything else is encrypted
//! (again): ciphertext encrypted twice is harmless, plaintext let through
//! is not.
//!
//! * PGP/MIME: `multipart/encrypted; protocol="application/pgp-encrypted"`
//!   with exactly the version part and one `application/octet-stream` part
//!   holding one armored `PGP MESSAGE`, with at most 1 KiB of preamble and
//!   of epilogue text.
//! * inline PGP: a single-part `text/*` body that is white space, one
//!   armored `PGP MESSAGE`, white space (after its transfer decoding).
//! * S/MIME: `application/(x-)pkcs7-mime` (smime-type enveloped-data,
//!   authEnveloped-data or none) or a `.p7m` file as the whole message,
//!   whose decoded body is exactly one ContentInfo with EnvelopedData or
//!   AuthEnvelopedData.
//!
//! Linear in the size, memory bounded; the caller runs it on the blocking
//! pool (it reads the whole body).

mod armor;
mod cms;
mod cms_schema;
mod pgp;
mod pgp_mime;
mod transfer;

use std::io::Read;

use super::HeaderField;
use super::classify::{EncryptedKind, is_p7m_file};
use super::mime::ContentType;
use transfer::{Fail, LineReader, decoded, not};

/// The outcome of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// The whole content is ciphertext of this kind.
    Verified(EncryptedKind),
    /// Not (only) ciphertext; the reason is for the log.
    NotCiphertext(String),
    /// Reading the body failed (not a verdict on the message).
    ReadError(String),
}

/// Verifies that the message with `headers` and body `body` (as received,
/// any line endings) is entirely ciphertext. Reads `body` to the point of
/// the verdict, never holding it whole.
pub fn verify(headers: &[HeaderField], body: &mut dyn Read) -> Verification {
    match check(headers, body) {
        Ok(kind) => Verification::Verified(kind),
        Err(Fail::Not(reason)) => Verification::NotCiphertext(reason.into_owned()),
        Err(Fail::Io(e)) => Verification::ReadError(e.to_string()),
    }
}

fn content_type(headers: &[HeaderField]) -> Result<ContentType, Fail> {
    let mut fields = headers.iter().filter(|h| h.is("Content-Type"));
    let ct = match fields.next() {
        None => ContentType::default_text(),
        Some(f) => match ContentType::parse(&f.unfolded()) {
            Some(ct) => ct,
            None => return not("an unparseable Content-Type"),
        },
    };
    if fields.next().is_some() {
        return not("two Content-Type fields");
    }
    Ok(ct)
}

fn transfer_encoding(headers: &[HeaderField]) -> Result<String, Fail> {
    let mut fields = headers.iter().filter(|h| h.is("Content-Transfer-Encoding"));
    let cte = fields
        .next()
        .map(|h| h.unfolded().to_ascii_lowercase())
        .unwrap_or_default();
    if fields.next().is_some() {
        return not("two Content-Transfer-Encoding fields");
    }
    Ok(cte)
}

fn check(headers: &[HeaderField], body: &mut dyn Read) -> Result<EncryptedKind, Fail> {
    let ct = content_type(headers)?;
    let cte = transfer_encoding(headers)?;
    match (ct.kind.as_str(), ct.subtype.as_str()) {
        ("multipart", "encrypted") => {
            let protocol = ct.param("protocol").unwrap_or("").to_ascii_lowercase();
            if protocol != "application/pgp-encrypted" {
                return not("multipart/encrypted without protocol application/pgp-encrypted");
            }
            pgp_mime::check(&ct, &cte, body)?;
            Ok(EncryptedKind::PgpMime)
        }
        ("multipart", _) => not("a multipart that is not multipart/encrypted"),
        ("application", "pkcs7-mime" | "x-pkcs7-mime") => {
            let smime_type = ct.param("smime-type").map(str::to_ascii_lowercase);
            match smime_type.as_deref() {
                None | Some("enveloped-data" | "authenveloped-data") => {}
                Some(_) => return not("an smime-type that is not encrypted"),
            }
            cms_body(&cte, body)?;
            Ok(EncryptedKind::Smime)
        }
        _ if is_p7m_file(&ct, headers) => {
            cms_body(&cte, body)?;
            Ok(EncryptedKind::P7mFile)
        }
        ("text", _) => {
            let mut text = LineReader::new(decoded(&cte, body)?);
            let mut armor = armor::Armor::new();
            while let Some((line, _)) = text.next_line()? {
                armor.line(line)?;
            }
            armor.finish()?;
            Ok(EncryptedKind::InlinePgp)
        }
        _ => not("not an encrypted content type"),
    }
}

fn cms_body(cte: &str, body: &mut dyn Read) -> Result<cms::CmsKind, Fail> {
    let mut data = decoded(cte, body)?;
    let mut ber = cms::Ber::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = data.read(&mut buf)?;
        if n == 0 {
            return ber.finish();
        }
        ber.push(&buf[..n])?;
    }
}

#[cfg(test)]
mod tests;
