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
                // A backslash as the last byte steps past the end.
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

    /// An RFC 2045 token (ASCII by definition).
    fn token(&mut self) -> Option<&'a str> {
        self.skip_cfws();
        let start = self.pos;
        while self.pos < self.s.len() && is_token_char(self.s[self.pos]) {
            self.pos += 1;
        }
        let t = std::str::from_utf8(&self.s[start..self.pos]).ok()?;
        (!t.is_empty()).then_some(t)
    }

    /// Position of the next `;` from `self.pos`, or the end.
    fn next_semicolon(&self) -> usize {
        match memchr::memchr(b';', &self.s[self.pos..]) {
            Some(i) => self.pos + i,
            None => self.s.len(),
        }
    }

    /// A token or a quoted string, as written: nothing is copied until
    /// the parameter is known to be kept.
    fn value(&mut self) -> Option<RawValue<'a>> {
        self.skip_cfws();
        if self.pos < self.s.len() && self.s[self.pos] == b'"' {
            self.pos += 1;
            let start = self.pos;
            while self.pos < self.s.len() {
                match self.s[self.pos] {
                    b'"' => {
                        self.pos += 1;
                        return Some(RawValue::Quoted(&self.s[start..self.pos - 1]));
                    }
                    b'\\' => self.pos += 2,
                    _ => self.pos += 1,
                }
            }
            // Unterminated: the rest of the field.
            self.pos = self.s.len();
            Some(RawValue::Quoted(&self.s[start..]))
        } else {
            // Be lenient: accept anything up to the next ';' as a value.
            let start = self.pos;
            self.pos = self.next_semicolon();
            let v = self.s[start..self.pos].trim_ascii();
            (!v.is_empty()).then_some(RawValue::Plain(v))
        }
    }

    /// `; name=value` pairs until the end. Malformed parameters are
    /// skipped; RFC 2231 `name*0`, `name*1`... are joined (see
    /// [`Params`]). One pass over the value.
    fn params(&mut self) -> Vec<(String, String)> {
        let mut params = Params::default();
        loop {
            // Find the next ';'.
            self.skip_cfws();
            if self.pos >= self.s.len() {
                break;
            }
            if self.s[self.pos] != b';' {
                // Junk: skip to the next ';'.
                self.pos = self.next_semicolon();
                continue;
            }
            self.pos += 1;
            let Some(name) = self.token() else { continue };
            if !self.eat(b'=') {
                continue;
            }
            if let Some(v) = self.value() {
                params.add(name, v);
            }
        }
        params.finish()
    }
}

/// A parameter value as written.
#[derive(Clone, Copy)]
enum RawValue<'a> {
    /// A token (or lenient junk up to the next `;`), trimmed.
    Plain(&'a [u8]),
    /// The inside of a quoted string, quoted-pairs still escaped.
    Quoted(&'a [u8]),
}

impl RawValue<'_> {
    fn bytes(self) -> Vec<u8> {
        match self {
            RawValue::Plain(b) => b.to_vec(),
            RawValue::Quoted(b) => {
                let mut out = Vec::with_capacity(b.len());
                let mut i = 0;
                while i < b.len() {
                    if b[i] == b'\\' && i + 1 < b.len() {
                        i += 1;
                    }
                    out.push(b[i]);
                    i += 1;
                }
                out
            }
        }
    }
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?=".contains(&b)
}

/// At most this many distinct parameters are kept per field; later ones
/// are read past (to find the end of the field) and dropped. Real fields
/// carry a handful. Dropping never makes a message look encrypted: a
/// `boundary` or `.p7m` name that is not seen makes it plain (and it is
/// then encrypted).
pub const MAX_PARAMS: usize = 64;

/// At most this many RFC 2231 sections are kept per parameter (a long file
/// name needs a few); later sections of the same parameter are dropped.
pub const MAX_SECTIONS: usize = 64;

/// The parameters of one field as they are read, joined at the end.
///
/// RFC 2231 semantics: a parameter is known by its name without section
/// and `*`. The first appearance decides: a plain `name=` (or `name*=`)
/// wins over anything later of that name, and a `name*N` starts a
/// sectioned value to which only further `name*N` contribute. Duplicate
/// sections: the first wins. Sections are joined in the order of their
/// numbers, whatever the order they came in. Work is linear in the
/// field: names are found through a hash map, and at most
/// [`MAX_PARAMS`] × [`MAX_SECTIONS`] sections are held.
#[derive(Default)]
struct Params {
    index: std::collections::HashMap<String, usize>,
    params: Vec<(String, Param)>,
    /// The lower-cased name of the parameter being added (reused, so a
    /// dropped parameter costs no allocation).
    name: String,
}

enum Param {
    Whole(String),
    /// (section number, decoded bytes), at most [`MAX_SECTIONS`].
    Sections(Vec<(u32, Vec<u8>)>),
}

impl Params {
    fn add(&mut self, name: &str, value: RawValue<'_>) {
        let mut lower = std::mem::take(&mut self.name);
        lower.clear();
        lower.push_str(name);
        lower.make_ascii_lowercase();
        self.add_lower(&lower, value);
        self.name = lower;
    }

    fn add_lower(&mut self, name: &str, value: RawValue<'_>) {
        let (base, extended) = match name.strip_suffix('*') {
            Some(b) => (b, true),
            None => (name, false),
        };
        let (base, section) = match base.rsplit_once('*') {
            Some((b, n)) if !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()) => {
                match n.parse::<u32>() {
                    Ok(n) => (b, Some(n)),
                    // A section number no sender writes: junk.
                    Err(_) => return,
                }
            }
            _ => (base, None),
        };
        let decode = |first: bool| {
            if extended {
                decode_2231(&value.bytes(), first)
            } else {
                value.bytes()
            }
        };
        match (self.index.get(base), section) {
            (Some(&i), Some(n)) => {
                if let Param::Sections(sections) = &mut self.params[i].1
                    && sections.len() < MAX_SECTIONS
                    && !sections.iter().any(|(m, _)| *m == n)
                {
                    sections.push((n, decode(n == 0)));
                }
            }
            // Duplicate parameter: the first one wins.
            (Some(_), None) => {}
            (None, _) if self.params.len() >= MAX_PARAMS => {}
            (None, section) => {
                let param = match section {
                    Some(n) => Param::Sections(vec![(n, decode(n == 0))]),
                    None => Param::Whole(String::from_utf8_lossy(&decode(true)).into_owned()),
                };
                self.index.insert(base.to_owned(), self.params.len());
                self.params.push((base.to_owned(), param));
            }
        }
    }

    fn finish(self) -> Vec<(String, String)> {
        self.params
            .into_iter()
            .map(|(name, param)| {
                let value = match param {
                    Param::Whole(v) => v,
                    Param::Sections(mut sections) => {
                        sections.sort_unstable_by_key(|(n, _)| *n);
                        // Bytes first: a character may be split across
                        // sections.
                        let bytes: Vec<u8> = sections.into_iter().flat_map(|(_, b)| b).collect();
                        String::from_utf8_lossy(&bytes).into_owned()
                    }
                };
                (name, value)
            })
            .collect()
    }
}

/// Decodes an RFC 2231 extended value: `charset'language'` before the
/// first section's text, `%XX` escapes everywhere.
fn decode_2231(value: &[u8], first: bool) -> Vec<u8> {
    let b = if first {
        // charset'language'text
        let mut parts = value.splitn(3, |&c| c == b'\'');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(_), Some(_), Some(text)) => text,
            _ => value,
        }
    } else {
        value
    };
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
    out
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

    #[test]
    fn a_comment_ending_in_a_backslash_does_not_panic() {
        // Used to step past the end and panic on the value's slice.
        let ct = ContentType::parse("text/plain; a=(\\").unwrap();
        assert_eq!(ct.param("a"), None);
        assert!(ContentType::parse_disposition("inline; (\\").is_some());
    }

    #[test]
    fn continuations_join_in_section_order_and_first_wins() {
        let d = ContentType::parse_disposition(
            "attachment; filename*2=\"p7m\"; filename*0=\"notes\"; filename*1=\".\"; \
             filename*1=\"X\"; filename=\"late.txt\"; filename*99999999999=junk",
        )
        .unwrap();
        assert_eq!(d.param("filename"), Some("notes.p7m"));
        // A plain value first: later sections of the name are ignored.
        let d =
            ContentType::parse_disposition("inline; name=a.txt; name*0=b; name*1=.p7m").unwrap();
        assert_eq!(d.param("name"), Some("a.txt"));
        assert_eq!(d.params.len(), 1);
        // Duplicates of a plain parameter: the first wins.
        let ct = ContentType::parse("multipart/mixed; boundary=one; boundary=two").unwrap();
        assert_eq!(ct.param("boundary"), Some("one"));
        // Percent-encoded sections: a character split across two sections
        // is joined as bytes; later extended sections carry no charset.
        let d = ContentType::parse_disposition(
            "attachment; filename*0*=utf-8'de'b%C3; filename*1*=%BCcher; filename*2=%41",
        )
        .unwrap();
        assert_eq!(d.param("filename"), Some("bücher%41"));
    }

    #[test]
    fn many_parameters_parse_in_one_pass_and_are_bounded() {
        // The issue's 889 KB header: 100,000 distinct parameters.
        let mut v = String::from("text/plain");
        for i in 0..100_000 {
            v.push_str(&format!(";p{i}=v"));
        }
        v.push_str(";name=\"x.p7m\"");
        let ct = ContentType::parse(&v).unwrap();
        assert_eq!(ct.params.len(), MAX_PARAMS);
        assert_eq!(ct.params[0], ("p0".to_owned(), "v".to_owned()));
        assert_eq!(ct.params[MAX_PARAMS - 1].0, format!("p{}", MAX_PARAMS - 1));
        // Beyond the bound, nothing is seen (the message is then plain).
        assert_eq!(ct.param("name"), None);

        // 11,800 sections of one name (the issue's dispositions): the
        // first MAX_SECTIONS in number order, duplicates ignored.
        let mut d = String::from("attachment");
        for i in (0..11_800).rev() {
            d.push_str(&format!("; filename*{i}=\"{}\"", i % 10));
            d.push_str(&format!("; filename*{i}=\"X\""));
        }
        let d = ContentType::parse_disposition(&d).unwrap();
        // The sections came highest first, so the kept ones are the first
        // MAX_SECTIONS read: 11799 down to 11799 - 63, in number order.
        let expected: String = (11_800 - MAX_SECTIONS..11_800)
            .map(|i| char::from(b'0' + u8::try_from(i % 10).unwrap()))
            .collect();
        assert_eq!(d.param("filename"), Some(expected.as_str()));
        assert_eq!(d.params.len(), 1);
    }

    #[test]
    fn a_sectioned_parameter_without_section_zero_keeps_what_it_has() {
        let ct =
            ContentType::parse("application/octet-stream; name*1=\"b\"; name*3=\"d\"").unwrap();
        assert_eq!(ct.param("name"), Some("bd"));
    }

    #[test]
    fn quoted_strings_at_the_edges() {
        let ct = ContentType::parse("text/plain; a=\"x\\\"y; b=z").unwrap();
        // Unterminated: the rest of the field is the value.
        assert_eq!(ct.param("a"), Some("x\"y; b=z"));
        let ct = ContentType::parse("text/plain; a=\"x\\").unwrap();
        assert_eq!(ct.param("a"), Some("x\\"));
        let ct = ContentType::parse("text/plain; A=\"\"; B= v w ;c=").unwrap();
        assert_eq!(ct.param("a"), Some(""));
        assert_eq!(ct.param("b"), Some("v w"));
        assert_eq!(ct.param("c"), None);
    }
}
