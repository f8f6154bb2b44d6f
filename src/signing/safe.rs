//! The transport-safe form of a MIME entity, for signing (RFC 8551
//! §3.1.3, RFC 3156 §3 and §5, RFC 1847 §5.1).
//!
//! This module owns one question: will every octet of the entity arrive
//! as it was signed, whatever relays do on the way — an 8BITMIME
//! downgrade to quoted-printable, stripping of trailing white space,
//! `>From ` escaping, splitting of long lines, repair of line endings? A
//! signature covers octets, so each of these breaks it.
//! [`transport_safe`] gives the entity in a form none of them touches:
//!
//! * Every body line is 7-bit, at most 998 octets, ends in CRLF, and has
//!   no NUL, no bare CR or LF, no trailing space or tab, no leading
//!   `From `.
//! * A leaf with an identity encoding (7bit, 8bit, binary or none) whose
//!   body breaks a rule is re-encoded: `text/*` without NUL or bare line
//!   breaks as quoted-printable, anything else as base64, and its
//!   `Content-Transfer-Encoding` set (in place, or added at the end of
//!   its header). A label of 8bit or binary on content that is already
//!   safe becomes `7bit`: a downgrading MTA goes by the label.
//! * A base64 or quoted-printable body that breaks a rule is mislabelled
//!   and refused: we do not guess what its sender meant. (Only a leading
//!   `From ` in quoted-printable is repaired, as `=46rom `, which decodes
//!   to the same octets.) So is an unknown encoding that breaks one.
//! * A multipart is split on its boundary (RFC 2046 §5.1.1; the CRLF
//!   before a delimiter line belongs to the delimiter), each part is
//!   treated on its own, and the whole is put back byte for byte with the
//!   same boundary, preamble and epilogue; only transport padding after a
//!   delimiter is dropped. Preamble and epilogue must be safe already.
//!   No boundary parameter, or no close delimiter: refused.
//! * `message/rfc822` and `message/global` parts are entered: the body of
//!   the enclosed message is treated as an entity (its header is kept).
//! * Nothing inside `multipart/signed` or `multipart/encrypted` is
//!   changed — that would break the signature it carries: refused.
//!
//! Header fields are kept byte for byte and must end in CRLF. 8-bit
//! octets in them (RFC 6532) and their line lengths are the MTA's
//! business (SMTPUTF8), and cannot be repaired here without changing what
//! the sender wrote; a composite part whose part headers hold 8-bit
//! octets keeps its 8bit label.
//!
//! Bounded: at most [`MAX_DEPTH`] levels of nesting; each level reads its
//! octets once, so the work is linear in the size times the depth.

mod lines;
mod split;

use std::borrow::Cow;

use crate::backend::encoding::write_base64_lines;
use crate::message::mime::ContentType;
use crate::message::{Eol, Message};

pub(crate) use lines::{decode_qp, scan};
pub(crate) use split::Split;

/// The deepest nesting of multiparts and enclosed messages accepted.
pub const MAX_DEPTH: usize = 32;

/// The longest line, without its CRLF (RFC 5321 §4.5.3.1.6).
pub const MAX_LINE: usize = 998;

/// Why an entity could not be made safe.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unsafe(pub String);

/// The entity in transport-safe form (unchanged and borrowed when it
/// already is).
pub fn transport_safe(entity: &[u8]) -> Result<Cow<'_, [u8]>, Unsafe> {
    Walk::default().entity(entity, false)
}

/// A `Content-Transfer-Encoding`, as far as the rules care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cte {
    /// No field.
    Absent,
    /// `7bit`.
    SevenBit,
    /// `8bit` or `binary`.
    EightBit,
    /// `base64`.
    Base64,
    /// `quoted-printable`.
    Qp,
    /// Anything else (an unknown token, or no token).
    Other,
}

impl Cte {
    fn of(value: &str) -> Cte {
        // Parsed as a token, so a comment after it does not matter.
        match ContentType::parse_disposition(value).map(|c| c.kind) {
            Some(t) if t == "7bit" => Cte::SevenBit,
            Some(t) if t == "8bit" || t == "binary" => Cte::EightBit,
            Some(t) if t == "base64" => Cte::Base64,
            Some(t) if t == "quoted-printable" => Cte::Qp,
            _ => Cte::Other,
        }
    }

    fn identity(self) -> bool {
        matches!(self, Cte::Absent | Cte::SevenBit | Cte::EightBit)
    }
}

/// The header section of an entity, checked, and what the rules read
/// from it.
pub(crate) struct Head<'a> {
    /// The header section with its empty line.
    pub raw: &'a [u8],
    /// Everything after it.
    pub body: &'a [u8],
    /// The parsed `Content-Type`, `None` when absent or unreadable (the
    /// RFC 2045 §5.2 default applies then).
    pub content_type: Option<ContentType>,
    /// The transfer encoding.
    pub cte: Cte,
    /// Where the `Content-Transfer-Encoding` field is in `raw`: from its
    /// name to the end of its value (its line end excluded).
    cte_field: Option<(usize, usize)>,
}

impl<'a> Head<'a> {
    /// Splits and checks the header section of `entity`.
    pub(crate) fn parse(entity: &'a [u8]) -> Result<Self, &'static str> {
        let msg = Message::parse(entity);
        let (raw, body) = entity.split_at(msg.body_offset.min(entity.len()));
        for (i, &b) in raw.iter().enumerate() {
            match b {
                0 => return Err("a NUL in a header section"),
                b'\r' if raw.get(i + 1) != Some(&b'\n') => {
                    return Err("a bare CR in a header section");
                }
                b'\n' if i == 0 || raw[i - 1] != b'\r' => {
                    return Err("a bare LF in a header section");
                }
                _ => {}
            }
        }
        if !body.is_empty() && raw != b"\r\n" && !raw.ends_with(b"\r\n\r\n") {
            return Err("a header section not ended by an empty line");
        }
        let mut head = Head {
            raw,
            body,
            content_type: None,
            cte: Cte::Absent,
            cte_field: None,
        };
        let mut types = 0;
        // The fields are contiguous from the start: each is its name, the
        // colon, the value as kept by the parser, and a line end.
        let mut at = 0;
        for h in &msg.headers {
            let colon = raw
                .get(at..)
                .and_then(|r| memchr::memchr(b':', r))
                .ok_or("a header field without a colon")?;
            let end = at + colon + 1 + h.value.len();
            let eol = match raw.get(end..) {
                Some([b'\r', b'\n', ..]) => 2,
                Some(_) => 0,
                None => return Err("a header section that does not add up"),
            };
            if h.is("Content-Type") {
                types += 1;
                head.content_type = ContentType::parse(&h.unfolded());
            } else if h.is("Content-Transfer-Encoding") {
                if head.cte_field.is_some() {
                    return Err("two Content-Transfer-Encoding fields");
                }
                head.cte = Cte::of(&h.unfolded());
                head.cte_field = Some((at, end));
            }
            at = end + eol;
        }
        if types > 1 {
            return Err("two Content-Type fields");
        }
        Ok(head)
    }

    /// The header section with `Content-Transfer-Encoding: value`, which
    /// replaces the field where it is or ends the section.
    fn with_cte(&self, value: &str, out: &mut Vec<u8>) {
        let field = format!("Content-Transfer-Encoding: {value}");
        match self.cte_field {
            Some((start, end)) => {
                out.extend_from_slice(&self.raw[..start]);
                out.extend_from_slice(field.as_bytes());
                out.extend_from_slice(&self.raw[end..]);
            }
            None => {
                // Before the empty line (a body to re-encode has one).
                let fields = self.raw.strip_suffix(b"\r\n").unwrap_or(self.raw);
                out.extend_from_slice(fields);
                if !fields.is_empty() && !fields.ends_with(b"\r\n") {
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(field.as_bytes());
                out.extend_from_slice(b"\r\n\r\n");
            }
        }
    }
}

/// The default `Content-Type` of a part (RFC 2046 §5.1.5 for digests).
pub(crate) fn default_type(in_digest: bool) -> ContentType {
    if in_digest {
        ContentType {
            kind: "message".into(),
            subtype: "rfc822".into(),
            params: Vec::new(),
        }
    } else {
        ContentType::default_text()
    }
}

/// Whether a `message/*` body is an enclosed message to enter.
pub(crate) fn encloses(ct: &ContentType) -> bool {
    ct.is("message", "rfc822") || ct.is("message", "global")
}

/// One step into an entity, for messages.
#[derive(Clone, Copy)]
enum Step {
    Part(usize),
    Enclosed,
}

/// The walk over an entity: where it is, for messages and the depth.
#[derive(Default)]
struct Walk {
    path: Vec<Step>,
}

/// A leaf or composite body after the rules: the new transfer encoding
/// label, if it changes, and the body.
type Outcome<'a> = (Option<&'static str>, Cow<'a, [u8]>);

impl Walk {
    fn fail(&self, what: &str) -> Unsafe {
        if self.path.is_empty() {
            return Unsafe(what.to_owned());
        }
        let at: Vec<String> = self
            .path
            .iter()
            .map(|s| match s {
                Step::Part(n) => n.to_string(),
                Step::Enclosed => "message".to_owned(),
            })
            .collect();
        Unsafe(format!("part {}: {what}", at.join(".")))
    }

    fn entity<'a>(&mut self, entity: &'a [u8], in_digest: bool) -> Result<Cow<'a, [u8]>, Unsafe> {
        if self.path.len() > MAX_DEPTH {
            return Err(self.fail("nested more than 32 levels deep"));
        }
        let head = Head::parse(entity).map_err(|w| self.fail(w))?;
        let ct = head
            .content_type
            .clone()
            .unwrap_or_else(|| default_type(in_digest));
        let (cte, body) = if ct.kind == "multipart" {
            if !head.cte.identity() {
                return Err(self.fail("a multipart in a transfer encoding"));
            }
            let body = self.multipart(&ct, head.body)?;
            (relabel(head.cte, &body), body)
        } else if encloses(&ct) && head.cte.identity() {
            self.path.push(Step::Enclosed);
            let body = self.entity(head.body, false);
            self.path.pop();
            let body = body?;
            (relabel(head.cte, &body), body)
        } else {
            self.leaf(&ct, head.cte, head.body)?
        };
        match (cte, body) {
            (None, Cow::Borrowed(_)) => Ok(Cow::Borrowed(entity)),
            (cte, body) => {
                let mut out = Vec::with_capacity(head.raw.len() + body.len() + 40);
                match cte {
                    Some(value) => head.with_cte(value, &mut out),
                    None => out.extend_from_slice(head.raw),
                }
                out.extend_from_slice(&body);
                Ok(Cow::Owned(out))
            }
        }
    }

    fn multipart<'a>(&mut self, ct: &ContentType, body: &'a [u8]) -> Result<Cow<'a, [u8]>, Unsafe> {
        let boundary = match ct.param("boundary") {
            Some(b) if !b.is_empty() => b.as_bytes(),
            _ => return Err(self.fail("a multipart without a boundary parameter")),
        };
        // Delimiter lines must obey the line rules themselves.
        if boundary.len() > MAX_LINE - 4
            || boundary.ends_with(b" ")
            || !boundary.iter().all(|&b| (b' '..=b'~').contains(&b))
        {
            return Err(self.fail("a boundary that is not a safe line"));
        }
        let split = Split::new(body, boundary).map_err(|w| self.fail(w))?;
        for (what, text) in [
            ("the preamble", split.preamble()),
            ("the epilogue", split.epilogue()),
        ] {
            let flaws = scan(text);
            if !flaws.clean() {
                return Err(self.fail(&format!("{what} has {}", flaws.describe())));
            }
        }
        let digest = ct.is("multipart", "digest");
        let sealed = ct.is("multipart", "signed") || ct.is("multipart", "encrypted");
        let mut changed = split.padded;
        let mut parts = Vec::new();
        for (i, part) in split.parts().enumerate() {
            self.path.push(Step::Part(i + 1));
            let done = self.entity(part, digest);
            let sealed_change = sealed && matches!(done, Ok(Cow::Owned(_)));
            let failure = sealed_change.then(|| {
                self.fail(&format!(
                    "needs a change inside multipart/{}, which would break it",
                    ct.subtype
                ))
            });
            self.path.pop();
            if let Some(f) = failure {
                return Err(f);
            }
            let done = done?;
            changed |= matches!(done, Cow::Owned(_));
            parts.push(done);
        }
        if !changed {
            return Ok(Cow::Borrowed(body));
        }
        Ok(Cow::Owned(split.assemble(boundary, &parts)))
    }

    fn leaf<'a>(&self, ct: &ContentType, cte: Cte, body: &'a [u8]) -> Result<Outcome<'a>, Unsafe> {
        let flaws = scan(body);
        if !cte.identity() {
            if flaws.clean() {
                return Ok((None, Cow::Borrowed(body)));
            }
            if cte == Cte::Qp && flaws.only_from() {
                let escaped = lines::escape_from(body);
                if scan(&escaped).clean() {
                    return Ok((None, Cow::Owned(escaped)));
                }
            }
            let label = match cte {
                Cte::Base64 => "base64",
                Cte::Qp => "quoted-printable",
                _ => "unknown transfer encoding",
            };
            return Err(self.fail(&format!(
                "a {label} body with {}: mislabelled",
                flaws.describe()
            )));
        }
        if flaws.clean() {
            return Ok((
                (cte == Cte::EightBit).then_some("7bit"),
                Cow::Borrowed(body),
            ));
        }
        if ct.kind == "text" && !flaws.nul && !flaws.bare {
            return Ok((Some("quoted-printable"), Cow::Owned(lines::encode_qp(body))));
        }
        // RFC 2046 §5.2: these take identity encodings only.
        if ct.kind == "message"
            && matches!(ct.subtype.as_str(), "rfc822" | "partial" | "external-body")
        {
            return Err(self.fail(&format!(
                "message/{} with {}, which may not be re-encoded",
                ct.subtype,
                flaws.describe()
            )));
        }
        let mut out = Vec::with_capacity(body.len() / 3 * 4 + body.len() / 38 + 8);
        write_base64_lines(body, lines::ENCODED_LINE, Eol::Crlf, &mut out)
            .map_err(|e| self.fail(&format!("base64: {e}")))?;
        Ok((Some("base64"), Cow::Owned(out)))
    }
}

/// A composite's label: 8bit or binary becomes `7bit` once the body is
/// all 7-bit (header octets included).
fn relabel(cte: Cte, body: &[u8]) -> Option<&'static str> {
    (cte == Cte::EightBit && body.is_ascii()).then_some("7bit")
}

#[cfg(test)]
#[path = "safe_tests.rs"]
mod tests;
