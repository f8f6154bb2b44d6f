//! The message model: header fields exactly as received plus the body as
//! bytes. Nothing here assumes UTF-8 or a line-ending convention: mail is
//! bytes, and a milter must hand back everything it did not mean to change.

pub(crate) mod blind;
pub(crate) mod classify;
pub(crate) mod mime;
pub(crate) mod protect;
pub(crate) mod rewrite;
pub(crate) mod verify;

pub use classify::{Classification, EncryptedKind, classify};
pub use mime::ContentType;
pub use rewrite::{HeaderEdit, apply_edits, inner_entity, write_header};
pub use verify::{Verification, verify};

/// A line ending convention.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Eol {
    /// `\r\n`: SMTP, the milter protocol and canonical MIME.
    #[default]
    Crlf,
    /// `\n`: Unix mailbox files.
    Lf,
}

impl Eol {
    /// The bytes of this line ending.
    pub fn as_bytes(self) -> &'static [u8] {
        match self {
            Eol::Crlf => b"\r\n",
            Eol::Lf => b"\n",
        }
    }
}

/// One header field as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderField {
    /// The field name as written (compare with [`HeaderField::is`]).
    pub name: String,
    /// Everything after the colon up to the final line ending: the leading
    /// space, and folded continuation lines with their own line endings.
    pub value: Vec<u8>,
}

impl HeaderField {
    /// A field from name and raw value.
    pub fn new(name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        HeaderField {
            name: name.into(),
            value: value.into(),
        }
    }

    /// Case-insensitive name comparison.
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }

    /// Whether this is a MIME content field (`Content-*`), which belongs to
    /// the entity rather than to the message.
    pub fn is_content_field(&self) -> bool {
        self.name.len() > 8 && self.name.as_bytes()[..8].eq_ignore_ascii_case(b"content-")
    }

    /// The value unfolded (line breaks removed) and trimmed, lossily
    /// decoded: for parsing structured fields, never for re-emitting.
    /// One pass and one copy of the trimmed bytes (it runs on the thread
    /// that answers the MTA, over fields of any length).
    pub fn unfolded(&self) -> String {
        let mut bytes = Vec::with_capacity(self.value.len());
        bytes.extend(
            self.value
                .iter()
                .copied()
                .filter(|&b| b != b'\r' && b != b'\n'),
        );
        match String::from_utf8(bytes) {
            Ok(mut s) => {
                let end = s.trim_end().len();
                s.truncate(end);
                let start = s.len() - s.trim_start().len();
                s.drain(..start);
                s
            }
            Err(e) => String::from_utf8_lossy(e.as_bytes()).trim().to_owned(),
        }
    }
}

/// A whole message held in memory: the offline `encrypt` command's model.
/// (The milter collects the same header fields from the MTA and keeps the
/// body in its own buffer.)
#[derive(Clone, Debug)]
pub struct Message {
    /// Header fields in order.
    pub headers: Vec<HeaderField>,
    /// Offset of the body in the raw bytes the message was parsed from.
    pub body_offset: usize,
    /// Line ending of the header section, used for anything added to it.
    pub eol: Eol,
}

impl Message {
    /// Splits `raw` into header fields and body. The header section ends
    /// at the first empty line; a line that is neither a field nor a
    /// continuation also ends it and starts the body (as Postfix does).
    pub fn parse(raw: &[u8]) -> Message {
        let mut headers: Vec<HeaderField> = Vec::new();
        let mut pos = 0;
        let mut eol = None;
        while pos < raw.len() {
            let (line_end, next) = match memchr(b'\n', &raw[pos..]) {
                Some(i) => (pos + i, pos + i + 1),
                None => (raw.len(), raw.len()),
            };
            let has_cr = line_end > pos && raw[line_end - 1] == b'\r';
            let content_end = if has_cr { line_end - 1 } else { line_end };
            if eol.is_none() && next > line_end {
                eol = Some(if has_cr { Eol::Crlf } else { Eol::Lf });
            }
            let line = &raw[pos..content_end];
            if line.is_empty() {
                // The empty line separating headers from body.
                return Message {
                    headers,
                    body_offset: next,
                    eol: eol.unwrap_or_default(),
                };
            }
            if line[0] == b' ' || line[0] == b'\t' {
                match headers.last_mut() {
                    Some(h) => {
                        // Keep the fold exactly: previous line ending + this line.
                        h.value.extend_from_slice(&raw[h_end(pos, raw)..pos]);
                        h.value.extend_from_slice(line);
                        pos = next;
                        continue;
                    }
                    None => break,
                }
            }
            match field_name(line) {
                Some(colon) => {
                    let name = String::from_utf8_lossy(&line[..colon])
                        .trim_end()
                        .to_owned();
                    headers.push(HeaderField {
                        name,
                        value: line[colon + 1..].to_vec(),
                    });
                }
                None => break,
            }
            pos = next;
        }
        Message {
            headers,
            body_offset: pos,
            eol: eol.unwrap_or_default(),
        }
    }

    /// The first field named `name`.
    pub fn header(&self, name: &str) -> Option<&HeaderField> {
        self.headers.iter().find(|h| h.is(name))
    }
}

/// Start of the line ending that precedes `pos` (`pos` begins a line).
fn h_end(pos: usize, raw: &[u8]) -> usize {
    if pos >= 2 && raw[pos - 2] == b'\r' && raw[pos - 1] == b'\n' {
        pos - 2
    } else {
        pos.saturating_sub(1)
    }
}

/// Index of the colon if `line` starts with a valid field name
/// (printable ASCII except colon, RFC 5322 §2.2; trailing blanks before
/// the colon tolerated as in RFC 822 "obs" syntax).
fn field_name(line: &[u8]) -> Option<usize> {
    let colon = memchr(b':', line)?;
    let name = &line[..colon];
    let trimmed = name.trim_ascii_end();
    if trimmed.is_empty() || !trimmed.iter().all(|&b| (33..=126).contains(&b)) {
        return None;
    }
    Some(colon)
}

pub(crate) fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    ::memchr::memchr(needle, hay)
}

/// Copies `data` converting every line ending to CRLF: bare LF becomes
/// CRLF, existing CRLF stays, and a bare CR stays as it is (it is not a
/// line ending). MIME canonical form, RFC 2049 §4.
pub fn to_crlf(data: &[u8]) -> Vec<u8> {
    let lf = ::memchr::memchr_iter(b'\n', data).count();
    let mut out = Vec::with_capacity(data.len() + lf);
    append_crlf(&mut out, data, false);
    out
}

/// Appends `data` to `out` with canonical CRLF line endings. `after_cr`
/// says whether the byte before `data` (in an earlier call) was a CR, so
/// that a CRLF split across two chunks is not doubled.
pub fn append_crlf(out: &mut Vec<u8>, data: &[u8], after_cr: bool) {
    // memchr finds the line feeds; the bytes between are copied whole.
    let mut start = 0;
    for i in ::memchr::memchr_iter(b'\n', data) {
        let prev_cr = if i == 0 {
            after_cr
        } else {
            data[i - 1] == b'\r'
        };
        if !prev_cr {
            out.extend_from_slice(&data[start..i]);
            out.extend_from_slice(b"\r\n");
            start = i + 1;
        }
    }
    out.extend_from_slice(&data[start..]);
}

/// A reader that canonicalises line endings to CRLF on the fly (see
/// [`append_crlf`]), for bodies too large to copy.
#[derive(Debug)]
pub struct CrlfReader<R> {
    inner: R,
    buf: Vec<u8>,
    out: Vec<u8>,
    pos: usize,
    after_cr: bool,
}

impl<R: std::io::Read> CrlfReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        CrlfReader {
            inner,
            // Small enough that a 10 KiB message does not pay for zeroing
            // and page-faulting big buffers; `out` grows as needed.
            buf: vec![0; 16 * 1024],
            out: Vec::new(),
            pos: 0,
            after_cr: false,
        }
    }
}

impl<R: std::io::Read> std::io::Read for CrlfReader<R> {
    fn read(&mut self, dst: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.out.len() {
            let n = self.inner.read(&mut self.buf)?;
            if n == 0 {
                return Ok(0);
            }
            self.out.clear();
            self.pos = 0;
            append_crlf(&mut self.out, &self.buf[..n], self.after_cr);
            self.after_cr = self.buf[n - 1] == b'\r';
        }
        let n = dst.len().min(self.out.len() - self.pos);
        dst[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_reader_matches_to_crlf_across_chunk_boundaries() {
        use std::io::Read;
        // A CRLF split across reads, bare LFs and a bare CR.
        struct Chunks(Vec<&'static [u8]>);
        impl std::io::Read for Chunks {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                if self.0.is_empty() {
                    return Ok(0);
                }
                let c = self.0.remove(0);
                buf[..c.len()].copy_from_slice(c);
                Ok(c.len())
            }
        }
        let parts: Vec<&'static [u8]> = vec![b"a\r", b"\nb\n", b"\n", b"c\rd", b"\r", b"x\n"];
        let whole: Vec<u8> = parts.concat();
        let mut out = Vec::new();
        CrlfReader::new(Chunks(parts))
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, to_crlf(&whole));
    }

    #[test]
    fn parses_folded_headers_and_keeps_bytes() {
        let raw = b"Subject: a\r\n  b\r\nX-Y:z\r\n\r\nbody\r\n";
        let m = Message::parse(raw);
        assert_eq!(m.eol, Eol::Crlf);
        assert_eq!(m.headers.len(), 2);
        assert_eq!(m.headers[0].name, "Subject");
        assert_eq!(m.headers[0].value, b" a\r\n  b");
        assert_eq!(m.headers[0].unfolded(), "a  b");
        assert_eq!(m.headers[1].value, b"z");
        assert_eq!(&raw[m.body_offset..], b"body\r\n");
    }

    #[test]
    fn lf_message_and_no_body() {
        let m = Message::parse(b"A: 1\nB: 2\n");
        assert_eq!(m.eol, Eol::Lf);
        assert_eq!(m.headers.len(), 2);
        assert_eq!(m.body_offset, 10);
    }

    #[test]
    fn non_header_line_starts_body() {
        let raw = b"A: 1\nthis is not a header\nmore\n";
        let m = Message::parse(raw);
        assert_eq!(m.headers.len(), 1);
        assert_eq!(&raw[m.body_offset..], b"this is not a header\nmore\n");
    }

    #[test]
    fn crlf_canonicalisation() {
        assert_eq!(to_crlf(b"a\nb\r\nc\rd\n"), b"a\r\nb\r\nc\rd\r\n");
        let mut out = Vec::new();
        append_crlf(&mut out, b"x\r", false);
        append_crlf(&mut out, b"\ny\n", true);
        assert_eq!(out, b"x\r\ny\r\n");
    }

    #[test]
    fn unfolding_removes_line_breaks_and_trims() {
        let h = HeaderField::new("X", &b" \t a\r\n\tb\nc\r \r\n "[..]);
        assert_eq!(h.unfolded(), "a\tbc");
        let h = HeaderField::new("X", &b" \xff\r\n x "[..]);
        assert_eq!(h.unfolded(), "\u{fffd} x");
        // A field of a million folds unfolds to its text.
        let h = HeaderField::new("X", b"\r\n v".repeat(1_000_000));
        assert_eq!(h.unfolded().len(), 2_000_000 - 1);
    }

    #[test]
    fn content_fields() {
        assert!(HeaderField::new("CONTENT-TYPE", "x").is_content_field());
        assert!(!HeaderField::new("Content-", "x").is_content_field());
        assert!(!HeaderField::new("Subject", "x").is_content_field());
    }
}
