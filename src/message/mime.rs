//! Structured MIME header values: `Content-Type` and
//! `Content-Disposition` with their parameters (RFC 2045 §5.1, RFC 2231
//! continuations, RFC 822 comments).

/// A parsed `Content-Type` (or `Content-Disposition`: its "type" is the
/// disposition and its subtype is empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContentType {
    /// Lower-cased type (`text`, `multipart`, ...).
    pub kind: String,
    /// Lower-cased subtype.
    pub subtype: String,
    /// Parameters in order, names lower-cased, values unquoted.
    pub params: Vec<(String, String)>,
}

impl ContentType {
    /// RFC 2045 §5.2: the default for an entity without `Content-Type`.
    pub fn default_text() -> Self {
        ContentType {
            kind: "text".into(),
            subtype: "plain".into(),
            params: vec![("charset".into(), "us-ascii".into())],
        }
    }

    /// Parses a `Content-Type` value. `None` when there is no `type/subtype`.
    pub fn parse(value: &str) -> Option<Self> {
        let mut tokens = Tokens::new(value);
        let kind = tokens.token()?.to_ascii_lowercase();
        if !tokens.eat(b'/') {
            return None;
        }
        let subtype = tokens.token()?.to_ascii_lowercase();
        Some(ContentType {
            kind,
            subtype,
            params: tokens.params(),
        })
    }

    /// Parses a `Content-Disposition` value (`attachment; filename=...`).
    pub fn parse_disposition(value: &str) -> Option<Self> {
        let mut tokens = Tokens::new(value);
        let kind = tokens.token()?.to_ascii_lowercase();
        Some(ContentType {
            kind,
            subtype: String::new(),
            params: tokens.params(),
        })
    }

    /// Whether this is `kind/subtype` (both lower-case).
    pub fn is(&self, kind: &str, subtype: &str) -> bool {
        self.kind == kind && self.subtype == subtype
    }

    /// The value of parameter `name` (lower-case).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A tiny tokenizer for RFC 2045 structured values.
struct Tokens<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> Tokens<'a> {
    fn new(s: &'a str) -> Self {
        Tokens {
            s: s.as_bytes(),
            pos: 0,
        }
    }

    /// Skips white space and (nested) comments.
    fn skip_cfws(&mut self) {
        loop {
            while self.pos < self.s.len() && self.s[self.pos].is_ascii_whitespace() {
                self.pos += 1;
            }
            if self.pos < self.s.len() && self.s[self.pos] == b'(' {
                let mut depth = 0usize;
                while self.pos < self.s.len() {
                    match self.s[self.pos] {
                        b'\\' => self.pos += 1,
                        b'(' => depth += 1,
                        b')' => {
                            depth -= 1;
                            if depth == 0 {
                                self.pos += 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                    self.pos += 1;
                }
                // A `\` as the last byte stepped past the end.
                self.pos = self.pos.min(self.s.len());
            } else {
                return;
            }
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        self.skip_cfws();
        if self.pos < self.s.len() && self.s[self.pos] == c {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// An RFC 2045 token.
    fn token(&mut self) -> Option<String> {
        self.skip_cfws();
        let start = self.pos;
        while self.pos < self.s.len() && is_token_char(self.s[self.pos]) {
            self.pos += 1;
        }
        (self.pos > start).then(|| String::from_utf8_lossy(&self.s[start..self.pos]).into_owned())
    }

    /// A token or a quoted string.
    fn value(&mut self) -> Option<String> {
        self.skip_cfws();
        if self.pos < self.s.len() && self.s[self.pos] == b'"' {
            self.pos += 1;
            let mut out = Vec::new();
            while self.pos < self.s.len() {
                match self.s[self.pos] {
                    b'"' => {
                        self.pos += 1;
                        break;
                    }
                    b'\\' if self.pos + 1 < self.s.len() => {
                        out.push(self.s[self.pos + 1]);
                        self.pos += 2;
                        continue;
                    }
                    b => out.push(b),
                }
                self.pos += 1;
            }
            Some(String::from_utf8_lossy(&out).into_owned())
        } else {
            // Be lenient: accept anything up to the next ';' as a value.
            let start = self.pos;
            while self.pos < self.s.len() && self.s[self.pos] != b';' {
                self.pos += 1;
            }
            let v = String::from_utf8_lossy(&self.s[start..self.pos])
                .trim()
                .to_owned();
            (!v.is_empty()).then_some(v)
        }
    }

    /// `; name=value` pairs until the end. Malformed parameters are
    /// skipped; RFC 2231 `name*0`, `name*1`... are joined.
    fn params(&mut self) -> Vec<(String, String)> {
        let mut raw: Vec<(String, String)> = Vec::new();
        loop {
            // Find the next ';'.
            self.skip_cfws();
            if self.pos >= self.s.len() {
                break;
            }
            if self.s[self.pos] != b';' {
                // Junk: skip to the next ';'.
                while self.pos < self.s.len() && self.s[self.pos] != b';' {
                    self.pos += 1;
                }
                continue;
            }
            self.pos += 1;
            let Some(name) = self.token() else { continue };
            if !self.eat(b'=') {
                continue;
            }
            if let Some(v) = self.value() {
                raw.push((name.to_ascii_lowercase(), v));
            }
        }
        join_continuations(raw)
    }
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?=".contains(&b)
}

/// Joins RFC 2231 continuations (`name*0=`, `name*1=`, ...) and decodes
/// the `charset''percent-encoded` form well enough for boundaries and
/// file names.
fn join_continuations(raw: Vec<(String, String)>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (name, value) in raw {
        let (base, extended) = match name.strip_suffix('*') {
            Some(b) => (b.to_owned(), true),
            None => (name.clone(), false),
        };
        let (base, section) = match base.rsplit_once('*') {
            Some((b, n)) if n.chars().all(|c| c.is_ascii_digit()) => {
                (b.to_owned(), n.parse::<u32>().ok())
            }
            _ => (base, None),
        };
        let value = if extended {
            decode_2231(&value, section.unwrap_or(0) == 0)
        } else {
            value
        };
        match (section, out.iter_mut().find(|(n, _)| *n == base)) {
            (Some(n), Some((_, v))) if n > 0 => v.push_str(&value),
            (_, Some(_)) => {} // duplicate parameter: the first one wins
            (_, None) => out.push((base, value)),
        }
    }
    out
}

fn decode_2231(value: &str, first: bool) -> String {
    let encoded = if first {
        // charset'language'text
        match value.splitn(3, '\'').collect::<Vec<_>>().as_slice() {
            [_, _, text] => *text,
            _ => value,
        }
    } else {
        value
    };
    let b = encoded.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_type_and_params() {
        let ct = ContentType::parse(
            "Multipart/Encrypted (comment); protocol=\"application/pgp-encrypted\";\r\n boundary=abc",
        )
        .unwrap();
        assert!(ct.is("multipart", "encrypted"));
        assert_eq!(ct.param("protocol"), Some("application/pgp-encrypted"));
        assert_eq!(ct.param("boundary"), Some("abc"));
    }

    #[test]
    fn quoted_pairs_and_junk() {
        let ct =
            ContentType::parse(r#"text/plain; junk; name="a \"b\".txt"; charset=utf-8"#).unwrap();
        assert_eq!(ct.param("name"), Some(r#"a "b".txt"#));
        assert_eq!(ct.param("charset"), Some("utf-8"));
        assert!(ContentType::parse("text").is_none());
        assert!(ContentType::parse("").is_none());
    }

    #[test]
    fn rfc2231_continuations() {
        let ct = ContentType::parse("application/octet-stream; name*0=\"sm\"; name*1=\"ime.p7m\"")
            .unwrap();
        assert_eq!(ct.param("name"), Some("smime.p7m"));
        let d = ContentType::parse_disposition("attachment; filename*=utf-8''x%20y.p7m").unwrap();
        assert_eq!(d.kind, "attachment");
        assert_eq!(d.param("filename"), Some("x y.p7m"));
    }
}
