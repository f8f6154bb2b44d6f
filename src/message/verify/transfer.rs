//! Streamed reading for the verifiers: bounded lines, and the transfer
//! decodings (base64, quoted-printable) as readers, so that a body is
//! never held whole. Malformed encodings are rejections, not I/O errors.

use std::borrow::Cow;
use std::io::{self, Read};

/// Longest line the verifiers accept (armor lines are at most 76
/// characters; a long line is not ciphertext).
pub(super) const MAX_LINE: usize = 16 * 1024;

/// Why verification stopped.
#[derive(Debug)]
pub(super) enum Fail {
    /// The input is not verified ciphertext, for this reason.
    Not(Cow<'static, str>),
    /// Reading the body failed.
    Io(io::Error),
}

/// Shorthand for a rejection.
pub(super) fn not<T>(reason: impl Into<Cow<'static, str>>) -> Result<T, Fail> {
    Err(Fail::Not(reason.into()))
}

/// A rejection carried through `io::Read` by the decoding readers.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Rejected(&'static str);

fn rejected(reason: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, Rejected(reason))
}

impl From<io::Error> for Fail {
    fn from(e: io::Error) -> Self {
        let reason = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<Rejected>())
            .map(|r| r.0);
        match reason {
            Some(r) => Fail::Not(r.into()),
            None => Fail::Io(e),
        }
    }
}

/// Splits a reader into lines of at most [`MAX_LINE`] bytes.
pub(super) struct LineReader<R> {
    inner: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
}

impl<R: Read> LineReader<R> {
    pub(super) fn new(inner: R) -> Self {
        LineReader {
            inner,
            buf: vec![0; 4 * MAX_LINE],
            start: 0,
            end: 0,
            eof: false,
        }
    }

    /// The next line without its line ending (LF or CRLF) and whether it
    /// had one; `None` at the end.
    pub(super) fn next_line(&mut self) -> Result<Option<(&[u8], bool)>, Fail> {
        let mut searched = self.start;
        loop {
            if let Some(i) = memchr::memchr(b'\n', &self.buf[searched..self.end]) {
                let nl = searched + i;
                let line_start = self.start;
                self.start = nl + 1;
                let content_end = if nl > line_start && self.buf[nl - 1] == b'\r' {
                    nl - 1
                } else {
                    nl
                };
                return Ok(Some((&self.buf[line_start..content_end], true)));
            }
            if self.end - self.start > MAX_LINE {
                return not("a line longer than 16 KiB");
            }
            if self.eof {
                if self.start == self.end {
                    return Ok(None);
                }
                let line_start = self.start;
                self.start = self.end;
                return Ok(Some((&self.buf[line_start..self.end], false)));
            }
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            searched = self.end;
            let n = self.inner.read(&mut self.buf[self.end..])?;
            if n == 0 {
                self.eof = true;
            }
            self.end += n;
        }
    }
}

const INVALID: u8 = 0xFF;
const SPACE: u8 = 0xFE;
const PAD: u8 = 0xFD;

const B64: [u8; 256] = {
    let mut t = [INVALID; 256];
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut i = 0;
    while i < 64 {
        t[alphabet[i] as usize] = i as u8;
        i += 1;
    }
    t[b' ' as usize] = SPACE;
    t[b'\t' as usize] = SPACE;
    t[b'\r' as usize] = SPACE;
    t[b'\n' as usize] = SPACE;
    t[b'=' as usize] = PAD;
    t
};

/// Strict incremental base64: the standard alphabet, white space
/// ignored, padding only at the very end.
#[derive(Debug, Default)]
pub(super) struct Base64 {
    quad: [u8; 4],
    have: usize,
    pad: usize,
}

impl Base64 {
    /// Decodes `text`, appending whole groups to `out`.
    pub(super) fn push(&mut self, text: &[u8], out: &mut Vec<u8>) -> Result<(), &'static str> {
        for &c in text {
            match B64[usize::from(c)] {
                SPACE => {}
                INVALID => return Err("a character that is not base64"),
                PAD => {
                    self.pad += 1;
                    if self.have < 2 || self.have + self.pad > 4 {
                        return Err("misplaced base64 padding");
                    }
                }
                v => {
                    if self.pad > 0 {
                        return Err("base64 after the padding");
                    }
                    self.quad[self.have] = v;
                    self.have += 1;
                    if self.have == 4 {
                        let q = self.quad;
                        out.extend_from_slice(&[
                            (q[0] << 2) | (q[1] >> 4),
                            (q[1] << 4) | (q[2] >> 2),
                            (q[2] << 6) | q[3],
                        ]);
                        self.have = 0;
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether padding was seen (nothing but padding may follow).
    pub(super) fn padded(&self) -> bool {
        self.pad > 0
    }

    /// Ends the input: the last group must be complete (padded).
    pub(super) fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), &'static str> {
        match (self.have, self.pad) {
            (0, 0) => Ok(()),
            (h, p) if h + p == 4 => {
                let q = self.quad;
                out.push((q[0] << 2) | (q[1] >> 4));
                if h == 3 {
                    out.push((q[1] << 4) | (q[2] >> 2));
                }
                self.have = 0;
                self.pad = 0;
                Ok(())
            }
            _ => Err("incomplete base64"),
        }
    }
}

/// Decodes base64 from `inner` as it is read.
pub(super) struct Base64Reader<R> {
    inner: R,
    raw: Vec<u8>,
    state: Base64,
    out: Vec<u8>,
    pos: usize,
    done: bool,
}

impl<R: Read> Base64Reader<R> {
    pub(super) fn new(inner: R) -> Self {
        Base64Reader {
            inner,
            raw: vec![0; 64 * 1024],
            state: Base64::default(),
            out: Vec::new(),
            pos: 0,
            done: false,
        }
    }
}

impl<R: Read> Read for Base64Reader<R> {
    fn read(&mut self, dst: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.out.len() && !self.done {
            self.out.clear();
            self.pos = 0;
            let n = self.inner.read(&mut self.raw)?;
            if n == 0 {
                self.done = true;
                self.state.finish(&mut self.out).map_err(rejected)?;
            } else {
                self.state
                    .push(&self.raw[..n], &mut self.out)
                    .map_err(rejected)?;
            }
        }
        let n = dst.len().min(self.out.len() - self.pos);
        dst[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Decodes quoted-printable (RFC 2045 §6.7) from `inner` as it is read;
/// hard line breaks come out as LF.
pub(super) struct QpReader<R> {
    lines: LineReader<R>,
    out: Vec<u8>,
    pos: usize,
    done: bool,
}

impl<R: Read> QpReader<R> {
    pub(super) fn new(inner: R) -> Self {
        QpReader {
            lines: LineReader::new(inner),
            out: Vec::new(),
            pos: 0,
            done: false,
        }
    }
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'A'..=b'F' => Some(c - b'A' + 10),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Decodes one line; `Ok(true)` when it ended with a soft line break.
fn qp_line(line: &[u8], out: &mut Vec<u8>) -> Result<bool, &'static str> {
    // Trailing white space is padding added in transport (§6.7 rule 3).
    let line = line.trim_ascii_end();
    let (line, soft) = match line.strip_suffix(b"=") {
        Some(l) => (l, true),
        None => (line, false),
    };
    let mut i = 0;
    while i < line.len() {
        let c = line[i];
        if c == b'=' {
            let v = line
                .get(i + 1..i + 3)
                .and_then(|h| Some(hex(h[0])? << 4 | hex(h[1])?))
                .ok_or("invalid quoted-printable")?;
            out.push(v);
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    Ok(soft)
}

impl<R: Read> Read for QpReader<R> {
    fn read(&mut self, dst: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.out.len() && !self.done {
            self.out.clear();
            self.pos = 0;
            match self.lines.next_line() {
                Ok(Some((line, had_eol))) => {
                    let soft = qp_line(line, &mut self.out).map_err(rejected)?;
                    if had_eol && !soft {
                        self.out.push(b'\n');
                    }
                }
                Ok(None) => self.done = true,
                Err(Fail::Io(e)) => return Err(e),
                Err(Fail::Not(_)) => return Err(rejected("a line longer than 16 KiB")),
            }
        }
        let n = dst.len().min(self.out.len() - self.pos);
        dst[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// `body` decoded per its `Content-Transfer-Encoding` (lower-cased).
pub(super) fn decoded<'a>(cte: &str, body: &'a mut dyn Read) -> Result<Box<dyn Read + 'a>, Fail> {
    match cte {
        "" | "7bit" | "8bit" | "binary" => Ok(Box::new(body)),
        "base64" => Ok(Box::new(Base64Reader::new(body))),
        "quoted-printable" => Ok(Box::new(QpReader::new(body))),
        _ => not("an unknown Content-Transfer-Encoding"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(r: &mut dyn Read) -> Result<Vec<u8>, Fail> {
        let mut v = Vec::new();
        r.read_to_end(&mut v)?;
        Ok(v)
    }

    #[test]
    fn base64_strict() {
        let ok = read_all(&mut Base64Reader::new(&b"aGVs\r\nbG8=\r\n"[..])).unwrap();
        assert_eq!(ok, b"hello");
        for bad in [
            &b"aGVs*G8="[..],
            b"aGVsbG8",
            b"aG=Vs",
            b"aGVsbG8=x",
            b"a===",
        ] {
            assert!(
                matches!(read_all(&mut Base64Reader::new(bad)), Err(Fail::Not(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn quoted_printable() {
        let ok = read_all(&mut QpReader::new(&b"a=3Db  \r\nsoft=\r\nbreak\r\n"[..])).unwrap();
        assert_eq!(ok, b"a=b\nsoftbreak\n");
        assert!(matches!(
            read_all(&mut QpReader::new(&b"bad=G1\n"[..])),
            Err(Fail::Not(_))
        ));
    }

    #[test]
    fn lines_are_bounded() {
        let long = vec![b'a'; MAX_LINE + 10];
        let mut r = LineReader::new(&long[..]);
        assert!(matches!(r.next_line(), Err(Fail::Not(_))));
        let mut r = LineReader::new(&b"a\r\nb\nc"[..]);
        assert_eq!(r.next_line().unwrap(), Some((&b"a"[..], true)));
        assert_eq!(r.next_line().unwrap(), Some((&b"b"[..], true)));
        assert_eq!(r.next_line().unwrap(), Some((&b"c"[..], false)));
        assert_eq!(r.next_line().unwrap(), None);
    }
}
