//! The RFC 5322 lexical layer the harvest parsers share (§3.2): folding
//! white space, nested comments with quoted-pairs, quoted strings. It
//! works on a field's raw value, folds included (a CR or LF is white
//! space here), so nothing is unfolded or copied before it is needed.
//! Also the lenient base64 reader for Autocrypt `keydata` and CMS parts.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// A comment or quoted string without its closing character.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Unterminated;

/// A position in a field value.
pub(super) struct Cursor<'a> {
    s: &'a [u8],
    pos: usize,
}

/// RFC 5322 WSP, plus the CR and LF of a fold kept in the raw value.
pub(super) fn is_fws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

impl<'a> Cursor<'a> {
    pub(super) fn new(s: &'a [u8]) -> Self {
        Cursor { s, pos: 0 }
    }

    /// Offset of the next byte.
    pub(super) fn pos(&self) -> usize {
        self.pos
    }

    /// What is not read yet.
    pub(super) fn rest(&self) -> &'a [u8] {
        &self.s[self.pos.min(self.s.len())..]
    }

    pub(super) fn at_end(&self) -> bool {
        self.pos >= self.s.len()
    }

    pub(super) fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    pub(super) fn bump(&mut self) {
        self.pos = (self.pos + 1).min(self.s.len());
    }

    /// Takes `c` if it is the next byte (no white space skipped).
    pub(super) fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// The longest run of bytes from here that satisfy `pred`.
    pub(super) fn take_while(&mut self, pred: impl Fn(u8) -> bool) -> &'a [u8] {
        let start = self.pos;
        while self.peek().is_some_and(&pred) {
            self.pos += 1;
        }
        &self.s[start..self.pos]
    }

    /// Skips CFWS: white space (folds included) and comments, which nest
    /// and may hold quoted-pairs. Linear, no recursion: the depth is a
    /// counter.
    pub(super) fn cfws(&mut self) -> Result<(), Unterminated> {
        loop {
            self.take_while(is_fws);
            if self.peek() != Some(b'(') {
                return Ok(());
            }
            let mut depth = 0usize;
            loop {
                match self.peek() {
                    None => return Err(Unterminated),
                    Some(b'\\') => {
                        self.bump();
                        self.bump();
                        continue;
                    }
                    Some(b'(') => depth += 1,
                    Some(b')') => {
                        depth -= 1;
                        if depth == 0 {
                            self.bump();
                            break;
                        }
                    }
                    Some(_) => {}
                }
                self.bump();
            }
        }
    }

    /// A quoted string starting here (at `"`): its content with the
    /// quoted-pairs resolved and folds removed (RFC 5322 §3.2.4: the CRLF
    /// of a fold is invisible, the white space after it is not).
    pub(super) fn quoted(&mut self) -> Result<Vec<u8>, Unterminated> {
        let mut out = Vec::new();
        if !self.eat(b'"') {
            return Err(Unterminated);
        }
        loop {
            match self.peek() {
                None => return Err(Unterminated),
                Some(b'"') => {
                    self.bump();
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.bump();
                    match self.peek() {
                        None => return Err(Unterminated),
                        Some(c) => out.push(c),
                    }
                }
                Some(b'\r' | b'\n') => {}
                Some(c) => out.push(c),
            }
            self.bump();
        }
    }
}

/// Decodes base64 written with white space anywhere (folded header
/// values, 76-column MIME lines), padding optional; `None` for any other
/// byte or a bad length.
pub(super) fn decode_base64(text: &[u8]) -> Option<Vec<u8>> {
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    let compact: Vec<u8> = text
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    LENIENT.decode(compact).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_nest_and_quoted_pairs_hide_parentheses() {
        let mut c = Cursor::new(b" (a (b) \\) c)\r\n (d) x");
        c.cfws().unwrap();
        assert_eq!(c.peek(), Some(b'x'));
        let mut c = Cursor::new(b"(never closed (x)");
        assert_eq!(c.cfws(), Err(Unterminated));
        // A backslash as the very last byte steps to the end, not past it.
        let mut c = Cursor::new(b"(\\");
        assert_eq!(c.cfws(), Err(Unterminated));
        assert!(c.at_end());
    }

    #[test]
    fn quoted_strings_unescape_and_unfold() {
        let mut c = Cursor::new(b"\"a \\\"b\\\\\r\n c\"rest");
        assert_eq!(c.quoted().unwrap(), b"a \"b\\ c");
        assert_eq!(c.peek(), Some(b'r'));
        assert_eq!(Cursor::new(b"\"open").quoted(), Err(Unterminated));
        assert_eq!(Cursor::new(b"\"x\\").quoted(), Err(Unterminated));
    }

    #[test]
    fn base64_with_folds_and_without_padding() {
        assert_eq!(decode_base64(b"aGVs\r\n bG8=").unwrap(), b"hello");
        assert_eq!(decode_base64(b"aGVsbG8").unwrap(), b"hello");
        assert!(decode_base64(b"aGVs*bG8=").is_none());
        assert!(decode_base64(b"a").is_none());
        assert_eq!(decode_base64(b"").unwrap(), b"");
    }
}
