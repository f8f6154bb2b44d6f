//! Could a message already be encrypted? A cheap, pure function of the
//! header fields and a bounded prefix of the body, run on the connection
//! thread. A candidate is only a candidate: it passes unchanged only once
//! [`crate::message::verify`] has checked the whole body (on the blocking
//! pool); everything else is encrypted.
//!
//! Candidates: `multipart/encrypted`, a single-part `text/*` body that
//! starts with `-----BEGIN PGP MESSAGE-----`, S/MIME
//! `application/(x-)pkcs7-mime` enveloped or authEnveloped data (by
//! `smime-type`, or by the CMS content type when `smime-type` is missing),
//! and a `.p7m` file as the whole message. Signed-only messages are not
//! candidates and get encrypted (the signature stays valid inside).

use base64::Engine as _;

use super::HeaderField;
use super::mime::ContentType;

/// How far into the body classification looks. Enough for the first part
/// of any real message; a message whose first text part starts later is
/// treated as not encrypted (it then gets encrypted, never lost).
pub const SCAN_LIMIT: usize = 256 * 1024;

/// What kind of encryption a message carries (or seems to).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncryptedKind {
    /// `multipart/encrypted; protocol="application/pgp-encrypted"`.
    PgpMime,
    /// An armored `PGP MESSAGE` as a whole `text/*` body.
    InlinePgp,
    /// `application/pkcs7-mime` enveloped-data or authEnveloped-data.
    Smime,
    /// A `.p7m` file as the whole message.
    P7mFile,
}

impl std::fmt::Display for EncryptedKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EncryptedKind::PgpMime => "PGP/MIME",
            EncryptedKind::InlinePgp => "inline PGP",
            EncryptedKind::Smime => "S/MIME",
            EncryptedKind::P7mFile => ".p7m file",
        })
    }
}

/// The classification of a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Classification {
    /// Looks encrypted: verify the whole body before leaving it alone.
    Candidate(EncryptedKind),
    /// Not encrypted; `signed` says whether it carries a signature.
    Plain {
        /// multipart/signed or pkcs7 signed-data.
        signed: bool,
    },
}

impl Classification {
    /// The kind, if the message looks encrypted.
    pub fn candidate(&self) -> Option<EncryptedKind> {
        match self {
            Classification::Candidate(k) => Some(*k),
            Classification::Plain { .. } => None,
        }
    }
}

const OID_ENVELOPED: &[u8] = &[
    0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x07, 0x03,
];
const OID_SIGNED: &[u8] = &[
    0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x07, 0x02,
];
const OID_AUTH_ENVELOPED: &[u8] = &[
    0x06, 0x0B, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x09, 0x10, 0x01, 0x17,
];

/// Classifies a message from its header fields and body (only the first
/// `SCAN_LIMIT` (256 KiB) bytes of the body are read).
pub fn classify(headers: &[HeaderField], body: &[u8]) -> Classification {
    let body = &body[..body.len().min(SCAN_LIMIT)];
    classify_entity(headers, body)
}

fn content_type(headers: &[HeaderField]) -> Option<ContentType> {
    headers
        .iter()
        .find(|h| h.is("Content-Type"))
        .and_then(|h| ContentType::parse(&h.unfolded()))
}

fn transfer_encoding(headers: &[HeaderField]) -> String {
    headers
        .iter()
        .find(|h| h.is("Content-Transfer-Encoding"))
        .map(|h| h.unfolded().to_ascii_lowercase())
        .unwrap_or_default()
}

fn classify_entity(headers: &[HeaderField], body: &[u8]) -> Classification {
    let ct = content_type(headers).unwrap_or_else(ContentType::default_text);
    let plain = Classification::Plain { signed: false };
    match (ct.kind.as_str(), ct.subtype.as_str()) {
        // Any protocol: verification names the reason a wrong one fails.
        ("multipart", "encrypted") => Classification::Candidate(EncryptedKind::PgpMime),
        ("multipart", "signed") => Classification::Plain { signed: true },
        ("application", "pkcs7-mime" | "x-pkcs7-mime") => {
            match ct
                .param("smime-type")
                .map(str::to_ascii_lowercase)
                .as_deref()
            {
                Some("enveloped-data" | "authenveloped-data") => {
                    Classification::Candidate(EncryptedKind::Smime)
                }
                Some("signed-data") => Classification::Plain { signed: true },
                Some("certs-only" | "compressed-data") => plain,
                _ => match cms_content_type(body, &transfer_encoding(headers)) {
                    Some(CmsKind::Signed) => Classification::Plain { signed: true },
                    // Unreadable pkcs7-mime is a candidate too: verification
                    // decides (and logs why it is not ciphertext).
                    Some(CmsKind::Enveloped) | None => {
                        Classification::Candidate(EncryptedKind::Smime)
                    }
                },
            }
        }
        // Inline PGP inside a multipart is not the whole message: a
        // forwarded PGP block with plaintext attachments gets encrypted.
        ("multipart", _) => plain,
        _ if is_p7m_file(&ct, headers) => Classification::Candidate(EncryptedKind::P7mFile),
        ("text", _) => {
            if starts_with_pgp_message(body, &transfer_encoding(headers)) {
                Classification::Candidate(EncryptedKind::InlinePgp)
            } else {
                plain
            }
        }
        _ => plain,
    }
}

/// Whether the entity is named as a `.p7m` file.
pub(crate) fn is_p7m_file(ct: &ContentType, headers: &[HeaderField]) -> bool {
    let ends_p7m = |s: &str| s.to_ascii_lowercase().ends_with(".p7m");
    if ct.param("name").is_some_and(ends_p7m) {
        return true;
    }
    headers
        .iter()
        .filter(|h| h.is("Content-Disposition"))
        .filter_map(|h| ContentType::parse_disposition(&h.unfolded()))
        .any(|d| d.param("filename").is_some_and(ends_p7m))
}

enum CmsKind {
    Enveloped,
    Signed,
}

/// The CMS content type of a pkcs7-mime body, from its first bytes.
fn cms_content_type(body: &[u8], cte: &str) -> Option<CmsKind> {
    let der = if cte == "base64" {
        decode_base64_prefix(body, 64)
    } else {
        body[..body.len().min(64)].to_vec()
    };
    // ContentInfo ::= SEQUENCE { contentType OID, ... }
    let rest = der.strip_prefix(&[0x30])?;
    let len_len = match rest.first()? {
        l if *l < 0x80 => 1,
        0x80 => 1,
        l => 1 + usize::from(l & 0x7F),
    };
    let oid = rest.get(len_len..)?;
    if oid.starts_with(OID_ENVELOPED) || oid.starts_with(OID_AUTH_ENVELOPED) {
        Some(CmsKind::Enveloped)
    } else if oid.starts_with(OID_SIGNED) {
        Some(CmsKind::Signed)
    } else {
        None
    }
}

/// Decodes base64 from the start of `body` until `want` bytes are out,
/// skipping line breaks.
fn decode_base64_prefix(body: &[u8], want: usize) -> Vec<u8> {
    let chars: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
        .take(want / 3 * 4 + 4)
        .collect();
    let usable = chars.len() / 4 * 4;
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(&chars[..usable])
        .unwrap_or_default()
}

fn starts_with_pgp_message(body: &[u8], cte: &str) -> bool {
    const ARMOR: &[u8] = b"-----BEGIN PGP MESSAGE-----";
    let text = if cte == "base64" {
        decode_base64_prefix(body, 1024)
    } else {
        body[..body.len().min(64 * 1024)].to_vec()
    };
    let trimmed = text.trim_ascii_start();
    trimmed.starts_with(ARMOR)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;

    fn classify_raw(raw: &[u8]) -> Classification {
        let m = Message::parse(raw);
        classify(&m.headers, &raw[m.body_offset..])
    }

    #[test]
    fn pgp_mime_and_other_multipart_encrypted() {
        let c = classify_raw(b"Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=x\n\n--x\n");
        assert_eq!(c, Classification::Candidate(EncryptedKind::PgpMime));
        let c = classify_raw(
            b"Content-Type: multipart/encrypted; protocol=\"application/x-other\"; boundary=x\n\n",
        );
        assert!(c.candidate().is_some());
    }

    #[test]
    fn inline_pgp_top_level_only() {
        assert_eq!(
            classify_raw(b"Subject: x\n\n\n  -----BEGIN PGP MESSAGE-----\nabc\n"),
            Classification::Candidate(EncryptedKind::InlinePgp)
        );
        // Inside a multipart it is not the whole message: not a candidate.
        let nested = b"Content-Type: multipart/mixed; boundary=\"a\"\n\npreamble\n--a\nContent-Type: multipart/alternative; boundary=b\n\n--b\nContent-Type: text/plain\n\n-----BEGIN PGP MESSAGE-----\n--b--\n--a--\n";
        assert_eq!(
            classify_raw(nested),
            Classification::Plain { signed: false }
        );
        // Armor further down the text is a quotation, not an encrypted message.
        assert_eq!(
            classify_raw(b"Subject: x\n\nSee:\n-----BEGIN PGP MESSAGE-----\n"),
            Classification::Plain { signed: false }
        );
        // Base64-encoded text part.
        assert!(classify_raw(b"Content-Type: text/plain\nContent-Transfer-Encoding: base64\n\nLS0tLS1CRUdJTiBQR1AgTUVTU0FHRS0tLS0tCg==\n").candidate().is_some());
    }

    #[test]
    fn smime_by_type_parameter_and_by_oid() {
        assert!(
            classify_raw(
                b"Content-Type: application/pkcs7-mime; smime-type=enveloped-data\n\nMIIB\n"
            )
            .candidate()
            .is_some()
        );
        assert!(
            classify_raw(
                b"Content-Type: application/x-pkcs7-mime; smime-type=authEnveloped-data\n\n"
            )
            .candidate()
            .is_some()
        );
        // No smime-type: 30 80 06 09 2a864886f70d010703 = EnvelopedData.
        let env = base64::engine::general_purpose::STANDARD.encode([
            0x30, 0x80, 0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x07, 0x03, 0xA0,
        ]);
        let raw = format!(
            "Content-Type: application/pkcs7-mime\nContent-Transfer-Encoding: base64\n\n{env}\n"
        );
        assert!(classify_raw(raw.as_bytes()).candidate().is_some());
        let sig = base64::engine::general_purpose::STANDARD.encode([
            0x30, 0x82, 0x01, 0x00, 0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x07,
            0x02, 0xA0,
        ]);
        let raw = format!(
            "Content-Type: application/pkcs7-mime; name=smime.p7m\nContent-Transfer-Encoding: base64\n\n{sig}\n"
        );
        assert_eq!(
            classify_raw(raw.as_bytes()),
            Classification::Plain { signed: true }
        );
    }

    #[test]
    fn p7m_file_and_signed() {
        assert_eq!(
            classify_raw(b"Content-Type: application/octet-stream; name=\"SMIME.P7M\"\n\n"),
            Classification::Candidate(EncryptedKind::P7mFile)
        );
        assert!(classify_raw(b"Content-Type: application/octet-stream\nContent-Disposition: attachment; filename=x.p7m\n\n").candidate().is_some());
        assert_eq!(
            classify_raw(b"Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; boundary=s\n\n"),
            Classification::Plain { signed: true }
        );
        assert_eq!(
            classify_raw(b"Content-Type: application/pkcs7-mime; smime-type=signed-data\n\n"),
            Classification::Plain { signed: true }
        );
    }

    #[test]
    fn plain_mail_is_plain() {
        assert_eq!(
            classify_raw(b"Subject: hi\n\nhello\n"),
            Classification::Plain { signed: false }
        );
        assert_eq!(
            classify_raw(b"Content-Type: multipart/mixed; boundary=q\n\n--q\nContent-Type: text/plain\n\nhi\n--q\nContent-Type: application/pkcs7-mime; smime-type=enveloped-data\n\nx\n--q--\n"),
            Classification::Plain { signed: false }
        );
        // Broken multipart (no boundary) is plain, not a crash.
        assert_eq!(
            classify_raw(b"Content-Type: multipart/mixed\n\n--q\n"),
            Classification::Plain { signed: false }
        );
    }
}
