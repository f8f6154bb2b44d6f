//! The author of a message: the one mailbox of its one `From:` field
//! (RFC 5322 §3.6.2 `mailbox-list`, §3.4 `mailbox`, with the obsolete
//! forms of §4.4: a route in the angle address, CFWS around the dots,
//! empty list members). Harvesting needs exactly one author: a message
//! without a `From:`, with two, or with several mailboxes in it
//! (Autocrypt Level 1 §2.3 ignores those) teaches nothing. Group syntax
//! (allowed in `From:` by RFC 6854) names no single mailbox either.

use super::lex::{Cursor, Unterminated, is_fws};
use crate::address::Address;
use crate::message::HeaderField;

/// Why a message has no single author.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FromError {
    /// No `From:` field.
    #[error("no From: field")]
    Missing,
    /// More than one `From:` field.
    #[error("{0} From: fields")]
    Several(usize),
    /// A `From:` without a mailbox, or with several.
    #[error("From: holds {0} mailboxes, not one")]
    Mailboxes(usize),
    /// Group syntax (`name: a@b;`).
    #[error("From: is a group")]
    Group,
    /// Not the mailbox grammar.
    #[error("From: is not a mailbox list: {0}")]
    Syntax(&'static str),
    /// A mailbox whose address the milter cannot use.
    #[error("From: address {0}")]
    Address(String),
}

impl From<Unterminated> for FromError {
    fn from(_: Unterminated) -> Self {
        FromError::Syntax("unterminated comment or quoted string")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// A run of atext (UTF-8 bytes included, RFC 6532).
    Atom(Vec<u8>),
    /// A quoted string's content.
    Quoted(Vec<u8>),
    /// A domain literal, brackets included.
    Literal(Vec<u8>),
    /// `<`, `>`, `@`, `,`, `:`, `;`, `.`.
    Special(u8),
}

fn is_atext(b: u8) -> bool {
    b >= 0x80 || b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b)
}

fn tokens(value: &[u8]) -> Result<Vec<Token>, FromError> {
    let mut c = Cursor::new(value);
    let mut out = Vec::new();
    loop {
        c.cfws()?;
        let Some(b) = c.peek() else { return Ok(out) };
        match b {
            b'"' => out.push(Token::Quoted(c.quoted()?)),
            b'[' => {
                let lit = c.take_while(|b| b != b']');
                if !c.eat(b']') {
                    return Err(FromError::Syntax("unterminated domain literal"));
                }
                let mut v: Vec<u8> = lit.iter().copied().filter(|&b| !is_fws(b)).collect();
                v.push(b']');
                out.push(Token::Literal(v));
            }
            b'<' | b'>' | b'@' | b',' | b':' | b';' | b'.' => {
                c.bump();
                out.push(Token::Special(b));
            }
            b if is_atext(b) => out.push(Token::Atom(c.take_while(is_atext).to_vec())),
            _ => return Err(FromError::Syntax("a character no mailbox has")),
        }
    }
}

/// `local-part "@" domain` from its tokens, as text `Address::parse` reads.
fn addr_spec(toks: &[Token]) -> Result<Address, FromError> {
    let at = toks
        .iter()
        .rposition(|t| *t == Token::Special(b'@'))
        .ok_or(FromError::Syntax("a mailbox without '@'"))?;
    let (local, domain) = (&toks[..at], &toks[at + 1..]);
    let mut text = Vec::new();
    // local-part: word *("." word), words atoms or quoted strings.
    for (i, t) in local.iter().enumerate() {
        match (i % 2, t) {
            (0, Token::Atom(a)) => text.extend_from_slice(a),
            (0, Token::Quoted(q)) => {
                text.push(b'"');
                for &b in q {
                    if b == b'"' || b == b'\\' {
                        text.push(b'\\');
                    }
                    text.push(b);
                }
                text.push(b'"');
            }
            (1, Token::Special(b'.')) => text.push(b'.'),
            _ => return Err(FromError::Syntax("a local part that is not words and dots")),
        }
    }
    if local.len() % 2 == 0 {
        return Err(FromError::Syntax("an empty local part or a trailing dot"));
    }
    text.push(b'@');
    match domain {
        [Token::Literal(l)] => text.extend_from_slice(l),
        _ => {
            for (i, t) in domain.iter().enumerate() {
                match (i % 2, t) {
                    (0, Token::Atom(a)) => text.extend_from_slice(a),
                    (1, Token::Special(b'.')) => text.push(b'.'),
                    _ => return Err(FromError::Syntax("a domain that is not atoms and dots")),
                }
            }
            if domain.len() % 2 == 0 {
                return Err(FromError::Syntax("an empty domain or a trailing dot"));
            }
        }
    }
    let text =
        String::from_utf8(text).map_err(|_| FromError::Syntax("an address that is not UTF-8"))?;
    Address::parse(&text).map_err(|e| FromError::Address(e.reason))
}

/// One mailbox (`name-addr` or `addr-spec`) from its tokens.
fn mailbox(toks: &[Token]) -> Result<Address, FromError> {
    let Some(open) = toks.iter().position(|t| *t == Token::Special(b'<')) else {
        return addr_spec(toks);
    };
    // display-name: phrase (words, and dots in obs-phrase).
    if !toks[..open]
        .iter()
        .all(|t| matches!(t, Token::Atom(_) | Token::Quoted(_) | Token::Special(b'.')))
    {
        return Err(FromError::Syntax("a display name that is not a phrase"));
    }
    if toks.last() != Some(&Token::Special(b'>')) || toks.len() < open + 2 {
        return Err(FromError::Syntax("an angle address without '>' at the end"));
    }
    let mut inner = &toks[open + 1..toks.len() - 1];
    // obs-route: "@a,@b:" before the addr-spec, ignored (§4.4).
    if inner.first() == Some(&Token::Special(b'@')) {
        let colon = inner
            .iter()
            .position(|t| *t == Token::Special(b':'))
            .ok_or(FromError::Syntax("a route without ':'"))?;
        inner = &inner[colon + 1..];
    }
    if inner
        .iter()
        .any(|t| matches!(t, Token::Special(b'<' | b'>' | b':' | b',' | b';')))
    {
        return Err(FromError::Syntax("an angle address with specials inside"));
    }
    addr_spec(inner)
}

/// The mailboxes of one `From:` value.
pub fn mailboxes(value: &[u8]) -> Result<Vec<Address>, FromError> {
    let toks = tokens(value)?;
    members(&toks, false)?
        .into_iter()
        .filter(|m| !m.is_empty())
        .map(mailbox)
        .collect()
}

/// Splits a list's tokens at the commas outside angle brackets (a route
/// has commas). With `groups`, a group's display name (up to its colon)
/// is dropped and its `;` ends a member; without, either is an error.
fn members(toks: &[Token], groups: bool) -> Result<Vec<&[Token]>, FromError> {
    let mut members: Vec<&[Token]> = Vec::new();
    let (mut start, mut depth) = (0, 0usize);
    for (i, t) in toks.iter().enumerate() {
        match t {
            Token::Special(b'<') => depth += 1,
            Token::Special(b'>') => depth = depth.saturating_sub(1),
            Token::Special(b':' | b';') if depth == 0 && !groups => return Err(FromError::Group),
            Token::Special(b':') if depth == 0 => start = i + 1,
            Token::Special(b',' | b';') if depth == 0 => {
                members.push(&toks[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    members.push(&toks[start..]);
    Ok(members)
}

/// The addresses of one `address-list` value (`To:`, `Cc:`; RFC 5322
/// §3.4, groups included, `undisclosed-recipients:;` among them), read
/// leniently: a member that is not a mailbox is left out and the rest
/// still count, and a value the tokenizer cannot read (an unterminated
/// quoted string or comment) yields nothing. Used to tell who is named in
/// the header, so leaving a name out only ever makes a recipient count as
/// blind (its key ID hidden), never the other way round.
pub fn address_list(value: &[u8]) -> Vec<Address> {
    let Ok(toks) = tokens(value) else {
        return Vec::new();
    };
    members(&toks, true)
        .unwrap_or_default()
        .into_iter()
        .filter(|m| !m.is_empty())
        .filter_map(|m| mailbox(m).ok())
        .collect()
}

/// The author: the single mailbox of the single `From:` field.
pub fn author(headers: &[HeaderField]) -> Result<Address, FromError> {
    let mut fields = headers.iter().filter(|h| h.is("From"));
    let first = fields.next().ok_or(FromError::Missing)?;
    let more = fields.count();
    if more > 0 {
        return Err(FromError::Several(more + 1));
    }
    let mut boxes = mailboxes(&first.value)?;
    match boxes.len() {
        1 => Ok(boxes.remove(0)),
        n => Err(FromError::Mailboxes(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(v: &str) -> Result<String, FromError> {
        author(&[HeaderField::new("From", v)]).map(|a| a.to_string())
    }

    #[test]
    fn the_forms_of_a_mailbox() {
        for (v, want) in [
            (" alice@example.org", "alice@example.org"),
            (" <alice@example.org>", "alice@example.org"),
            (" Alice Example <alice@Example.ORG>", "alice@example.org"),
            (
                " \"Example, Alice\" <alice@example.org>",
                "alice@example.org",
            ),
            (
                " =?utf-8?q?Al=C3=AFce?= <alice@example.org>",
                "alice@example.org",
            ),
            (" alice@example.org (Alice Example)", "alice@example.org"),
            (" Alice\r\n\t<alice@example.org>", "alice@example.org"),
            (" \"alice\"@example.org", "alice@example.org"),
            (
                " \"alice smith\"@example.org",
                "\"alice smith\"@example.org",
            ),
            (" alice . smith @ example . org", "alice.smith@example.org"),
            (
                " <@relay.example,@other.example:alice@example.org>",
                "alice@example.org",
            ),
            (" , alice@example.org ,", "alice@example.org"),
            (" Jörg <jörg@bücher.example>", "jörg@xn--bcher-kva.example"),
            (" Mr. A. Smith <a@example.org>", "a@example.org"),
            (" a@[192.0.2.1]", "a@[192.0.2.1]"),
        ] {
            assert_eq!(one(v).as_deref(), Ok(want), "{v}");
        }
    }

    #[test]
    fn no_single_author() {
        assert_eq!(author(&[]), Err(FromError::Missing));
        let two = [
            HeaderField::new("From", " a@example.org"),
            HeaderField::new("from", " a@example.org"),
        ];
        assert_eq!(author(&two), Err(FromError::Several(2)));
        assert_eq!(
            one(" a@example.org, b@example.org"),
            Err(FromError::Mailboxes(2))
        );
        assert_eq!(one(" "), Err(FromError::Mailboxes(0)));
        assert_eq!(one(" friends: a@example.org;"), Err(FromError::Group));
        assert_eq!(one(" undisclosed-recipients:;"), Err(FromError::Group));
    }

    #[test]
    fn address_lists_with_groups_and_bad_members() {
        let list = |v: &str| -> Vec<String> {
            address_list(v.as_bytes())
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        assert_eq!(
            list(" a@example.org, \"B, b\" <b@example.org>,\r\n\tc@example.org"),
            ["a@example.org", "b@example.org", "c@example.org"]
        );
        assert_eq!(
            list(" friends: a@example.org, b@example.org;, c@example.org"),
            ["a@example.org", "b@example.org", "c@example.org"]
        );
        assert!(list(" undisclosed-recipients:;").is_empty());
        assert_eq!(
            list(" garbage, a@example.org, <broken, b@example.org"),
            ["a@example.org"]
        );
        assert!(list(" \"unterminated a@example.org").is_empty());
        assert_eq!(
            list(" <@relay.example,@other.example:a@example.org>, b@example.org"),
            ["a@example.org", "b@example.org"]
        );
    }

    #[test]
    fn garbage_is_refused() {
        for v in [
            " alice",
            " alice@",
            " @example.org",
            " alice@example..org",
            " alice.@example.org",
            " <alice@example.org",
            " alice@example.org>",
            " <alice@example.org> trailing",
            " <<alice@example.org>>",
            " a<b>@example.org",
            " (unterminated alice@example.org",
            " \"unterminated@example.org",
            " alice@[192.0.2.1",
            " alice\\@example.org",
            " <@relay.example alice@example.org>",
            " a@b@example.org",
        ] {
            assert!(one(v).is_err(), "{v:?} accepted: {:?}", one(v));
        }
    }
}
