//! Builds the encrypted message as a milter can: the inner entity that
//! gets encrypted, and a list of header edits plus a new body for the
//! outer message. Everything not named here is left exactly as received.
//!
//! * Inner entity: the original `Content-*` fields (raw bytes, folding
//!   kept) and the original body, all with canonical CRLF line endings.
//! * Outer message: `Content-Type` is replaced in place,
//!   `Content-Transfer-Encoding` replaced or removed, and every other
//!   `Content-*` field (`Content-Disposition`, `Content-ID`,
//!   `Content-Location`, `Content-Language`, any extension) moves inside:
//!   only what MIME needs to reach the ciphertext stays outside, so a
//!   secret in, say, `Content-Location` is not readable. `MIME-Version: 1.0`
//!   is added when missing. Every other field stays byte for byte.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io::{self, Write};

use super::{Eol, HeaderField, append_crlf};

/// One header change, with milter semantics: `index` is 1-based among the
/// fields of that name *at the time the edit is applied*, so edits are
/// applied in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderEdit {
    /// Replace the value of the `index`th field called `name`.
    Change {
        /// Field name.
        name: String,
        /// 1-based occurrence.
        index: usize,
        /// New value, without the leading space; folds as `"\n "`.
        value: String,
    },
    /// Remove the `index`th field called `name`.
    Delete {
        /// Field name.
        name: String,
        /// 1-based occurrence.
        index: usize,
    },
    /// Append a field at the end of the header section.
    Add {
        /// Field name.
        name: String,
        /// Value, without the leading space; folds as `"\n "`.
        value: String,
    },
    /// Insert a field at the top of the header section (where trace and
    /// `Authentication-Results` fields go, RFC 8601 §5).
    Prepend {
        /// Field name.
        name: String,
        /// Value, without the leading space; folds as `"\n "`.
        value: String,
    },
}

/// The header section of the inner entity: every `Content-*` field as
/// received, with CRLF line endings, followed by the empty line.
pub fn inner_header(headers: &[HeaderField]) -> Vec<u8> {
    let mut out = Vec::new();
    for h in headers.iter().filter(|h| h.is_content_field()) {
        out.extend_from_slice(h.name.as_bytes());
        out.push(b':');
        append_crlf(&mut out, &h.value, false);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The whole inner entity (header section and canonical body).
pub fn inner_entity(headers: &[HeaderField], body: &[u8]) -> Vec<u8> {
    let mut out = inner_header(headers);
    let lf = ::memchr::memchr_iter(b'\n', body).count();
    out.reserve_exact(body.len() + lf);
    append_crlf(&mut out, body, false);
    out
}

/// The edits that turn the original header into the outer header of the
/// encrypted message. `fields` are the content fields of the encrypted
/// entity (`Content-Type` first). Every `Content-*` field of the original
/// leaves the outer header (it is inside the encryption); a field the
/// encrypted entity supplies replaces the first occurrence in place.
/// Linear in the number of fields: a hostile header with thousands of
/// distinct `Content-*` names costs one pass.
pub fn outer_edits(headers: &[HeaderField], fields: &[(&str, String)]) -> Vec<HeaderEdit> {
    // Names in order of first appearance (original spelling), with their
    // counts keyed case-insensitively, as the MTA matches names.
    let mut names: Vec<&str> = Vec::new();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for h in headers.iter().filter(|h| h.is_content_field()) {
        let n = counts.entry(h.name.to_ascii_lowercase()).or_insert(0);
        if *n == 0 {
            names.push(&h.name);
        }
        *n += 1;
    }
    for (name, _) in fields {
        if let Entry::Vacant(slot) = counts.entry(name.to_ascii_lowercase()) {
            // Not in the original content fields (or not a content field
            // at all): count its occurrences so a stale one is replaced.
            slot.insert(headers.iter().filter(|h| h.is(name)).count());
            names.push(name);
        }
    }
    let mut edits = Vec::new();
    let mut to_add: Vec<(&str, &String)> = Vec::new();
    for name in names {
        let count = counts.get(&name.to_ascii_lowercase()).copied().unwrap_or(0);
        let new = fields.iter().find(|(n, _)| n.eq_ignore_ascii_case(name));
        // Delete from the last occurrence down, so indexes stay valid.
        let keep_first = new.is_some() && count > 0;
        let lowest = if keep_first { 2 } else { 1 };
        for index in (lowest..=count).rev() {
            edits.push(HeaderEdit::Delete {
                name: name.to_owned(),
                index,
            });
        }
        match new {
            Some((_, value)) if count > 0 => edits.push(HeaderEdit::Change {
                name: name.to_owned(),
                index: 1,
                value: value.clone(),
            }),
            Some((n, value)) => to_add.push((n, value)),
            None => {}
        }
    }
    // Added fields follow the entity's order (Content-Type first).
    to_add.sort_by_key(|(n, _)| {
        fields
            .iter()
            .position(|(f, _)| f.eq_ignore_ascii_case(n))
            .unwrap_or(usize::MAX)
    });
    if !headers.iter().any(|h| h.is("MIME-Version")) {
        edits.push(HeaderEdit::Add {
            name: "MIME-Version".into(),
            value: "1.0".into(),
        });
    }
    for (name, value) in to_add {
        edits.push(HeaderEdit::Add {
            name: name.to_owned(),
            value: value.clone(),
        });
    }
    edits
}

/// Applies `edits` in order, as the MTA would. New values get a leading
/// space and `eol` folds.
pub fn apply_edits(headers: &mut Vec<HeaderField>, edits: &[HeaderEdit], eol: Eol) {
    for edit in edits {
        match edit {
            HeaderEdit::Change { name, index, value } => {
                if let Some(h) = nth_mut(headers, name, *index) {
                    h.value = render_value(value, eol);
                }
            }
            HeaderEdit::Delete { name, index } => {
                let pos = headers
                    .iter()
                    .enumerate()
                    .filter(|(_, h)| h.is(name))
                    .nth(index.saturating_sub(1))
                    .map(|(i, _)| i);
                if let Some(i) = pos {
                    headers.remove(i);
                }
            }
            HeaderEdit::Add { name, value } => {
                headers.push(HeaderField::new(name.clone(), render_value(value, eol)));
            }
            HeaderEdit::Prepend { name, value } => {
                headers.insert(0, HeaderField::new(name.clone(), render_value(value, eol)));
            }
        }
    }
}

fn nth_mut<'a>(
    headers: &'a mut [HeaderField],
    name: &str,
    index: usize,
) -> Option<&'a mut HeaderField> {
    headers
        .iter_mut()
        .filter(|h| h.is(name))
        .nth(index.saturating_sub(1))
}

/// A new field value as raw bytes: leading space, folds with `eol`.
fn render_value(value: &str, eol: Eol) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 4);
    out.push(b' ');
    for (i, line) in value.split('\n').enumerate() {
        if i > 0 {
            out.extend_from_slice(eol.as_bytes());
        }
        out.extend_from_slice(line.as_bytes());
    }
    out
}

/// Writes a header section and the empty line that ends it. Raw values
/// are written as they are (their folds keep their own line endings).
pub fn write_header(headers: &[HeaderField], eol: Eol, out: &mut dyn Write) -> io::Result<()> {
    for h in headers {
        out.write_all(h.name.as_bytes())?;
        out.write_all(b":")?;
        out.write_all(&h.value)?;
        out.write_all(eol.as_bytes())?;
    }
    out.write_all(eol.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;

    fn fields(ct: &str) -> Vec<(&'static str, String)> {
        vec![
            ("Content-Type", ct.to_owned()),
            ("Content-Transfer-Encoding", "base64".to_owned()),
            (
                "Content-Disposition",
                "attachment; filename=\"smime.p7m\"".to_owned(),
            ),
        ]
    }

    #[test]
    fn inner_entity_keeps_content_fields_and_canonicalises() {
        let raw = b"From: a@b\nContent-Type: text/plain;\n charset=utf-8\nSubject: x\nContent-ID: <1@b>\n\nline1\nline2\r\n";
        let m = Message::parse(raw);
        let inner = inner_entity(&m.headers, &raw[m.body_offset..]);
        assert_eq!(
            inner,
            b"Content-Type: text/plain;\r\n charset=utf-8\r\nContent-ID: <1@b>\r\n\r\nline1\r\nline2\r\n".to_vec()
        );
    }

    #[test]
    fn inner_entity_without_content_fields() {
        let m = Message::parse(b"Subject: x\n\nhi\n");
        assert_eq!(inner_header(&m.headers), b"\r\n");
    }

    #[test]
    fn outer_edits_replace_in_place_and_move_fields() {
        let raw = b"Received: x\nContent-Type: text/plain\nContent-Type: text/html\nContent-Description: d\nSubject: s\n\n";
        let m = Message::parse(raw);
        let edits = outer_edits(&m.headers, &fields("application/pkcs7-mime"));
        let mut h = m.headers.clone();
        apply_edits(&mut h, &edits, Eol::Lf);
        let names: Vec<&str> = h.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "Received",
                "Content-Type",
                "Subject",
                "MIME-Version",
                "Content-Transfer-Encoding",
                "Content-Disposition"
            ]
        );
        assert_eq!(h[1].value, b" application/pkcs7-mime");
        assert_eq!(h[0], m.headers[0]);
        assert_eq!(h[2], m.headers[4]);
    }

    #[test]
    fn every_content_field_leaves_the_outer_header() {
        let raw = b"Content-Location: secret\nSubject: s\ncontent-language: x\nCONTENT-LOCATION: two\nContent-X-Any: y\n\n";
        let m = Message::parse(raw);
        let edits = outer_edits(&m.headers, &fields("application/pkcs7-mime"));
        let mut h = m.headers.clone();
        apply_edits(&mut h, &edits, Eol::Lf);
        let names: Vec<&str> = h.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "Subject",
                "MIME-Version",
                "Content-Type",
                "Content-Transfer-Encoding",
                "Content-Disposition"
            ]
        );
    }

    #[test]
    fn edits_fold_with_the_messages_line_ending() {
        let m = Message::parse(b"Content-Type: text/plain\r\nMIME-Version: 1.0\r\n\r\n");
        let edits = outer_edits(
            &m.headers,
            &[("Content-Type", "multipart/encrypted;\n boundary=x".into())],
        );
        let mut h = m.headers.clone();
        apply_edits(&mut h, &edits, Eol::Crlf);
        let mut out = Vec::new();
        write_header(&h, Eol::Crlf, &mut out).unwrap();
        assert_eq!(
            out,
            b"Content-Type: multipart/encrypted;\r\n boundary=x\r\nMIME-Version: 1.0\r\n\r\n"
        );
    }
}
