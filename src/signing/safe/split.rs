//! Splitting a multipart body on its boundary (RFC 2046 §5.1.1) and
//! putting it back together: delimiter lines exactly as the RFC defines
//! them (the CRLF before one belongs to it; transport padding may follow),
//! so that re-assembly changes nothing but the parts that were replaced.

use std::borrow::Cow;

/// A delimiter line of a multipart body.
struct Delim {
    /// Where the CRLF before it starts (`at` when there is none).
    pre: usize,
    /// Where its `--` is.
    at: usize,
    /// Where the next line starts.
    next: usize,
    /// The close delimiter.
    close: bool,
    /// Ended by CRLF (only the close delimiter may end the body instead).
    eol: bool,
}

/// A multipart body split on its boundary (RFC 2046 §5.1.1).
pub(crate) struct Split<'a> {
    body: &'a [u8],
    /// Never empty: the last is the close delimiter.
    delims: Vec<Delim>,
    /// Whether a delimiter carried transport padding.
    pub(super) padded: bool,
}

impl<'a> Split<'a> {
    /// Splits `body` on `boundary`.
    pub(crate) fn new(body: &'a [u8], boundary: &[u8]) -> Result<Self, &'static str> {
        let mut delims: Vec<Delim> = Vec::new();
        let mut padded = false;
        let mut pos = 0;
        while pos < body.len() {
            let lf = memchr::memchr(b'\n', &body[pos..]).map(|i| pos + i);
            let line = &body[pos..lf.unwrap_or(body.len())];
            let crlf = lf.is_some() && line.ends_with(b"\r");
            let content = if crlf { &line[..line.len() - 1] } else { line };
            let rest = content
                .strip_prefix(b"--")
                .and_then(|l| l.strip_prefix(boundary));
            if let Some(rest) = rest {
                let close = rest.starts_with(b"--");
                let tail = if close { &rest[2..] } else { rest };
                if tail.iter().all(|&b| b == b' ' || b == b'\t') {
                    if lf.is_some() && !crlf {
                        return Err("a delimiter line ended by a bare LF");
                    }
                    let pre = match pos {
                        0 => 0,
                        _ if pos >= 2 && body[pos - 2] == b'\r' => pos - 2,
                        _ => return Err("a delimiter line after a bare LF"),
                    };
                    if delims.last().is_some_and(|d| pre < d.next) {
                        return Err("a delimiter line right after another");
                    }
                    padded |= !tail.is_empty();
                    delims.push(Delim {
                        pre,
                        at: pos,
                        next: lf.map_or(body.len(), |i| i + 1),
                        close,
                        eol: lf.is_some(),
                    });
                    if close {
                        return Ok(Split {
                            body,
                            delims,
                            padded,
                        });
                    }
                }
            }
            match lf {
                Some(i) => pos = i + 1,
                None => break,
            }
        }
        Err("a multipart without its close delimiter")
    }

    /// The preamble, without the CRLF of the first delimiter.
    pub(crate) fn preamble(&self) -> &'a [u8] {
        &self.body[..self.delims.first().map_or(0, |d| d.pre)]
    }

    /// The epilogue, after the close delimiter's line.
    pub(crate) fn epilogue(&self) -> &'a [u8] {
        &self.body[self.delims.last().map_or(self.body.len(), |d| d.next)..]
    }

    /// The body parts, each without the CRLF of the delimiter after it.
    pub(crate) fn parts(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.delims
            .windows(2)
            .map(|w| &self.body[w[0].next..w[1].pre])
    }

    /// The body again with `parts` in place of the parts.
    pub(super) fn assemble(&self, boundary: &[u8], parts: &[Cow<'_, [u8]>]) -> Vec<u8> {
        let size: usize = parts.iter().map(|p| p.len()).sum();
        let mut out = Vec::with_capacity(self.body.len() + size);
        out.extend_from_slice(self.preamble());
        let mut parts = parts.iter();
        for d in &self.delims {
            if d.at > d.pre {
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"--");
            out.extend_from_slice(boundary);
            if d.close {
                out.extend_from_slice(b"--");
            }
            if d.eol {
                out.extend_from_slice(b"\r\n");
            }
            if d.close {
                out.extend_from_slice(self.epilogue());
            } else if let Some(p) = parts.next() {
                out.extend_from_slice(p);
            }
        }
        out
    }
}
