//! E-mail addresses as the milter and the key sources see them.
//!
//! One canonical form per address: the local part is kept as written
//! (RFC 7929 §3 hashes it as written) except that needless quotes go
//! (`"alice"` is `alice`, RFC 5321 §4.1.2); the domain is in the
//! canonical form of [`domain`] (IDNA A-labels, lower case, no trailing
//! dot), whichever spelling the client used. The U-label form is only for
//! display ([`Address::unicode`]).
//!
//! What Postfix accepts, this parses too (RFC 5321 §4.1.2): a source route
//! (`<@a,@b:alice@example.test>`) is reduced to its final address; a
//! domain-less recipient (`<postmaster>`, `<alice>`) is [`Domain::None`],
//! local to the MTA; `[192.0.2.1]` and `[IPv6:…]` are
//! [`Domain::Literal`], where no key source can look anything up.

pub mod domain;

use std::fmt;
use std::str::FromStr;

pub use domain::DomainError;

/// What kind of domain an address has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Domain {
    /// A DNS name in canonical form.
    Name,
    /// An address literal (`[192.0.2.1]`, `[IPv6:2001:db8::1]`).
    Literal,
    /// No domain: a local recipient as Postfix accepts it (`postmaster`).
    None,
    /// A MAIL FROM that could not be parsed ([`Address::unparseable`]):
    /// matches no sender glob.
    Unparseable,
}

/// A recipient or sender address, `local@domain`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address {
    local: String,
    domain: String,
    kind: Domain,
}

/// Why a string is not an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an e-mail address: {input:?}: {reason}")]
pub struct AddressError {
    /// The text that was given.
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Longest address text looked at (RFC 5321 §4.5.3.1.3 allows 256 in a
/// path; SMTPUTF8 and source routes get some slack).
const MAX_INPUT: usize = 2048;

/// Splits `"quoted"rest` / `unquoted@rest` into the local part and what
/// follows it (`None`: no '@', `Some(domain)`).
pub(crate) fn split_local(s: &str) -> Result<(&str, Option<&str>), &'static str> {
    if let Some(inner) = s.strip_prefix('"') {
        // Find the closing quote, honouring quoted-pair escapes.
        let mut escaped = false;
        for (i, c) in inner.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => {
                    let end = 1 + i + 1;
                    let (local, rest) = s.split_at(end);
                    return match rest.strip_prefix('@') {
                        Some(d) => Ok((local, Some(d))),
                        None if rest.is_empty() => Ok((local, None)),
                        None => Err("text after the quoted local part"),
                    };
                }
                _ => {}
            }
        }
        return Err("unbalanced quotes in local part");
    }
    Ok(match s.split_once('@') {
        Some((l, d)) => (l, Some(d)),
        None => (s, None),
    })
}

/// The case-insensitive form of a local part (or of a glob character):
/// each character lower-cased, upper-cased, lower-cased again, one at a
/// time. That is full case folding for nearly all text (`ß`, `ẞ` → `ss`,
/// `ς` → `σ`, ligatures split) as Postfix compares UTF-8 local parts, and — unlike
/// `str::to_lowercase`, which writes a word-final `Σ` as `ς` — the same
/// whether a string is folded whole or character by character.
pub fn fold_case(s: &str) -> String {
    s.chars()
        .flat_map(char::to_lowercase)
        .flat_map(char::to_uppercase)
        .flat_map(char::to_lowercase)
        .collect()
}

/// RFC 5322 dot-atom (with RFC 6531 UTF-8): atext runs joined by single
/// dots.
fn is_dot_atom(s: &str) -> bool {
    let atext = |c: char| {
        c.is_ascii_alphanumeric()
            || "!#$%&'*+-/=?^_`{|}~".contains(c)
            || (!c.is_ascii() && !c.is_control() && !c.is_whitespace())
    };
    !s.is_empty()
        && s.split('.')
            .all(|run| !run.is_empty() && run.chars().all(atext))
}

/// `s` without RFC 5322 comments and white space outside quoted strings,
/// as Postfix reads a MAIL FROM argument (`<alice(x) @example.org>` is
/// `alice@example.org` to it). `None` for an unbalanced comment.
pub fn strip_comments(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let (mut quoted, mut escaped, mut depth) = (false, false, 0usize);
    for c in s.chars() {
        if escaped {
            escaped = false;
            if depth == 0 {
                out.push(c);
            }
            continue;
        }
        match c {
            '\\' if quoted || depth > 0 => {
                escaped = true;
                if depth == 0 {
                    out.push(c);
                }
            }
            '"' if depth == 0 => {
                quoted = !quoted;
                out.push(c);
            }
            '(' if !quoted => depth += 1,
            ')' if !quoted => depth = depth.checked_sub(1)?,
            _ if depth > 0 => {}
            c if !quoted && c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    (depth == 0).then_some(out)
}

impl Address {
    /// Parses `local@domain`, `<local@domain>`, `"quoted local"@domain`,
    /// a source route `<@a,@b:local@domain>` (reduced to `local@domain`),
    /// a domain-less `local` and address literals. The domain is made
    /// canonical; one that cannot be is an error.
    pub fn parse(input: &str) -> Result<Self, AddressError> {
        let err = |reason: String| AddressError {
            input: input.chars().take(256).collect(),
            reason,
        };
        if input.len() > MAX_INPUT {
            return Err(err(format!("longer than {MAX_INPUT} bytes")));
        }
        let s = input.trim();
        let s = s
            .strip_prefix('<')
            .and_then(|s| s.strip_suffix('>'))
            .unwrap_or(s);
        // RFC 5321 §4.1.2 A-d-l: "@one,@two:" before the mailbox; §C says
        // to ignore it.
        let s = match s.strip_prefix('@') {
            Some(route) => {
                let (adl, rest) = route
                    .split_once(':')
                    .ok_or_else(|| err("source route without ':'".to_owned()))?;
                if adl
                    .split(',')
                    .enumerate()
                    .any(|(i, d)| d.is_empty() || (i > 0 && !d.starts_with('@')))
                {
                    return Err(err("malformed source route".to_owned()));
                }
                rest
            }
            None => s,
        };
        let (local, domain) = split_local(s).map_err(|r| err(r.to_owned()))?;
        if local.is_empty() {
            return Err(err("empty local part".to_owned()));
        }
        if local == "\"\"" || (!local.starts_with('"') && local.contains('"')) {
            return Err(err("misplaced quotes in local part".to_owned()));
        }
        if local.chars().any(|c| c.is_control()) {
            return Err(err("control character in local part".to_owned()));
        }
        // RFC 5321 atext: the specials need quotes. Refusing them keeps
        // the printed form re-parseable to the same address.
        if !local.starts_with('"')
            && local
                .chars()
                .any(|c| c.is_whitespace() || "()<>[]\\,;:@\"".contains(c))
        {
            return Err(err(
                "special character in unquoted local part (quote it)".to_owned()
            ));
        }
        // RFC 5321 §4.1.2: a quoted string that could be a dot-atom is
        // the same local part unquoted (`"alice"` = `alice`); keep that
        // one form, as Postfix does, so key files and logs agree.
        let unquoted;
        let local = match local.strip_prefix('"').and_then(|l| l.strip_suffix('"')) {
            Some(_) => {
                unquoted = Address::unquote(local);
                if is_dot_atom(&unquoted) {
                    unquoted.as_str()
                } else {
                    local
                }
            }
            None => local,
        };
        let (domain, kind) = match domain {
            None => (String::new(), Domain::None),
            Some(d) if d.starts_with('[') => (
                domain::canonical_literal(d).map_err(|e| err(e.to_string()))?,
                Domain::Literal,
            ),
            Some(d) => (
                domain::canonical_name(d).map_err(|e| err(e.to_string()))?,
                Domain::Name,
            ),
        };
        Ok(Address {
            local: local.to_owned(),
            domain,
            kind,
        })
    }

    /// A MAIL FROM that [`Address::parse`] refuses. It is not the null
    /// sender: it matches no sender glob (neither `<>` nor `*@*`), so only
    /// rules without a `sender` condition apply to it.
    pub fn unparseable(raw: &str) -> Address {
        Address {
            local: raw.chars().take(256).collect(),
            domain: String::new(),
            kind: Domain::Unparseable,
        }
    }

    /// A domain-less address with `domain` (any spelling) added; `None`
    /// when the address has a domain or `domain` has no canonical form.
    pub fn qualified(&self, domain: &str) -> Option<Address> {
        if self.kind != Domain::None {
            return None;
        }
        Some(Address {
            local: self.local.clone(),
            domain: domain::canonical_name(domain).ok()?,
            kind: Domain::Name,
        })
    }

    /// The kind of domain.
    pub fn kind(&self) -> Domain {
        self.kind
    }

    /// Whether the domain is a DNS name (key sources can look it up).
    pub fn has_dns_domain(&self) -> bool {
        self.kind == Domain::Name
    }

    /// The local part, exactly as written (quotes included when quoted).
    pub fn local(&self) -> &str {
        &self.local
    }

    /// The local part without surrounding quotes and quoted-pair escapes:
    /// what RFC 7929 §3 hashes for `"john.doe"@example.com`-style addresses.
    pub fn local_unquoted(&self) -> String {
        Address::unquote(&self.local)
    }

    fn unquote(local: &str) -> String {
        match local.strip_prefix('"').and_then(|l| l.strip_suffix('"')) {
            Some(inner) => {
                let mut out = String::with_capacity(inner.len());
                let mut chars = inner.chars();
                while let Some(c) = chars.next() {
                    if c == '\\' {
                        if let Some(n) = chars.next() {
                            out.push(n);
                        }
                    } else {
                        out.push(c);
                    }
                }
                out
            }
            None => local.to_owned(),
        }
    }

    /// Whether the local part holds a routing operator the MTA may act on:
    /// `site!user` (Postfix `swap_bangpath`), `user%site` (with a local
    /// domain, `allow_percent_hack`), a quoted `"user@site"`
    /// (`resolve_dequoted_address`). Mail to such a recipient goes to
    /// `site`, which the policy never saw; so it is refused at RCPT.
    pub fn routes_in_local_part(&self) -> bool {
        self.kind != Domain::Unparseable
            && self
                .local_unquoted()
                .chars()
                .any(|c| matches!(c, '!' | '%' | '@'))
    }

    /// Where the MTA may route this address instead, for its routing
    /// operators (see [`Address::routes_in_local_part`]): the quoted
    /// `"user@site"` and `user%site` (rightmost operator) and `site!user`
    /// (leftmost) each read as `user@site`, repeatedly (at most 4 steps).
    /// Readings that do not parse are left out.
    pub fn routed_readings(&self) -> Vec<Address> {
        let mut out: Vec<Address> = Vec::new();
        let mut todo = vec![self.clone()];
        for _ in 0..4 {
            let mut next = Vec::new();
            for a in todo.iter().filter(|a| a.routes_in_local_part()) {
                let l = a.local_unquoted();
                let mut forms = Vec::new();
                if let Some((user, site)) = l.rsplit_once('@') {
                    forms.push((user.to_owned(), site.to_owned()));
                }
                if let Some((user, site)) = l.rsplit_once('%') {
                    forms.push((user.to_owned(), site.to_owned()));
                }
                if let Some((site, user)) = l.split_once('!') {
                    forms.push((user.to_owned(), site.to_owned()));
                }
                for (user, site) in forms {
                    let quoted = format!("\"{}\"", user.replace('\\', "\\\\").replace('"', "\\\""));
                    if let Ok(r) = Address::parse(&format!("{quoted}@{site}"))
                        && !out.contains(&r)
                        && r != *self
                    {
                        out.push(r.clone());
                        next.push(r);
                    }
                }
            }
            if next.is_empty() {
                break;
            }
            todo = next;
        }
        out
    }

    /// The domain in canonical form: A-labels, lower case, no trailing
    /// dot; `[…]` for a literal; empty when there is none.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The address with U-labels, for display; `None` when it is spelled
    /// the same as [`Address`]'s canonical form.
    pub fn unicode(&self) -> Option<String> {
        if self.kind != Domain::Name || !self.domain.contains("xn--") {
            return None;
        }
        let u = domain::unicode_form(&self.domain);
        (u != self.domain).then(|| format!("{}@{u}", self.local))
    }

    /// Both spellings for logs: `x@xn--bcher-kva.test (x@bücher.test)`.
    pub fn both_forms(&self) -> String {
        match self.unicode() {
            Some(u) => format!("{self} ({u})"),
            None => self.to_string(),
        }
    }

    /// The same address with the local part lower-cased (RFC 7929 §3
    /// fallback, and case-insensitive key file names).
    pub fn lowercased(&self) -> Address {
        Address {
            local: self.local.to_lowercase(),
            domain: self.domain.clone(),
            kind: self.kind,
        }
    }

    /// Whether `other` is this address, comparing the local part
    /// case-insensitively as nearly every mail system does in practice
    /// (used to match a key's user ID or certificate to the recipient).
    pub fn matches_loosely(&self, other: &Address) -> bool {
        self.kind == other.kind
            && self.kind != Domain::Unparseable
            && self.domain == other.domain
            && fold_case(&self.local_unquoted()) == fold_case(&other.local_unquoted())
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            Domain::None => f.write_str(&self.local),
            Domain::Unparseable => write!(f, "{:?}", self.local),
            Domain::Name | Domain::Literal => write!(f, "{}@{}", self.local, self.domain),
        }
    }
}

impl FromStr for Address {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Address::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_angle_and_quoted() {
        let a = Address::parse("Hugh@Example.COM").unwrap();
        assert_eq!(a.local(), "Hugh");
        assert_eq!(a.domain(), "example.com");
        assert_eq!(a.to_string(), "Hugh@example.com");
        let b = Address::parse("<bob+tag@example.org>").unwrap();
        assert_eq!(b.local(), "bob+tag");
        let q = Address::parse(r#""john \"x\" @doe"@example.org"#).unwrap();
        assert_eq!(q.local(), r#""john \"x\" @doe""#);
        assert_eq!(q.local_unquoted(), r#"john "x" @doe"#);
        assert_eq!(q.domain(), "example.org");
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "<>",
            "@example.org",
            "@a:",
            "@a,b:x@y.test",
            "a@",
            "a@.",
            "a@b@c",
            "\"a@b",
            "\"a\"x@b",
            "a\"b@c",
            "a b@exa mple.org",
            "<x>@example.org",
            "a,b@example.org",
            "a;b",
            "a[1]@example.org",
            "a@xn--zz.test",
            "a@[192.0.2.300]",
            "a@[tag:x]",
        ] {
            assert!(Address::parse(bad).is_err(), "{bad:?} accepted");
        }
        let long = format!("a@{}.test", "b".repeat(64));
        assert!(Address::parse(&long).is_err());
        assert!(Address::parse(&"a".repeat(5000)).is_err());
    }

    #[test]
    fn one_canonical_form_per_domain() {
        let canon = Address::parse("x@xn--bcher-kva.test").unwrap();
        for s in [
            "x@bücher.test",
            "<x@BÜCHER.test>",
            "x@XN--BCHER-KVA.test",
            "x@xn--bcher-kva.test.",
            "x@bücher\u{3002}test",
            "x@\u{ff42}\u{fc}cher\u{ff0e}test",
            "<@relay.example:x@bücher.test>",
        ] {
            let a = Address::parse(s).unwrap();
            assert_eq!(a, canon, "{s:?}");
            assert_eq!(a.to_string(), "x@xn--bcher-kva.test");
        }
        assert_eq!(canon.unicode().as_deref(), Some("x@bücher.test"));
        assert_eq!(canon.both_forms(), "x@xn--bcher-kva.test (x@bücher.test)");
        assert_eq!(Address::parse("x@example.org").unwrap().unicode(), None);
    }

    #[test]
    fn domain_less_route_and_literals() {
        for (s, local) in [
            ("postmaster", "postmaster"),
            ("<Postmaster>", "Postmaster"),
            ("<alice>", "alice"),
            ("\"a@b\"", "\"a@b\""),
        ] {
            let a = Address::parse(s).unwrap();
            assert_eq!(a.kind(), Domain::None, "{s}");
            assert_eq!(a.local(), local);
            assert_eq!(a.domain(), "");
            assert_eq!(a.to_string(), local);
        }
        let r = Address::parse("<@a,@b:alice@Example.TEST>").unwrap();
        assert_eq!(r.to_string(), "alice@example.test");
        assert!(r.has_dns_domain());
        let v4 = Address::parse("alice@[192.0.2.1]").unwrap();
        assert_eq!(v4.kind(), Domain::Literal);
        assert_eq!(v4.to_string(), "alice@[192.0.2.1]");
        let v6 = Address::parse("<alice@[ipv6:2001:DB8::0:1]>").unwrap();
        assert_eq!(v6.domain(), "[IPv6:2001:db8::1]");
        assert!(!v6.has_dns_domain());
        let u = Address::unparseable("<\"bad>");
        assert_eq!(u.kind(), Domain::Unparseable);
        assert!(!u.matches_loosely(&u));
    }

    #[test]
    fn comments_and_white_space_stripped_as_postfix_does() {
        for (s, want) in [
            ("<sender(c)@example.net>", "<sender@example.net>"),
            ("sender @ example.net", "sender@example.net"),
            ("a((nested) x)@b", "a@b"),
            (
                "\"john (not a comment) doe\"@x",
                "\"john (not a comment) doe\"@x",
            ),
            ("a(\\))@b", "a@b"),
        ] {
            assert_eq!(strip_comments(s).as_deref(), Some(want), "{s}");
        }
        assert_eq!(strip_comments("a(b@c"), None);
        assert_eq!(strip_comments("a)b@c"), None);
    }

    #[test]
    fn needless_quotes_are_dropped() {
        let plain = Address::parse("john.doe@example.org").unwrap();
        for s in ["\"john.doe\"@example.org", "\"j\\ohn.doe\"@Example.org"] {
            let a = Address::parse(s).unwrap();
            assert_eq!(a, plain, "{s}");
            assert_eq!(a.to_string(), "john.doe@example.org");
        }
        for s in [
            "\"john doe\"@x.test",
            "\"a..b\"@x.test",
            "\".a\"@x.test",
            "\"a@b\"@x.test",
        ] {
            assert!(Address::parse(s).unwrap().local().starts_with('"'), "{s}");
        }
    }

    #[test]
    fn routing_operators_in_the_local_part() {
        for s in [
            "site.test!user",
            "user%site.test@local.test",
            "\"user@site.test\"",
            "\"user@site.test\"@local.test",
            "\"user\\@site.test\"@local.test",
            "<@relay.test:a!b@local.test>",
        ] {
            assert!(Address::parse(s).unwrap().routes_in_local_part(), "{s}");
        }
        for s in [
            "user@site.test",
            "postmaster",
            "\"john doe\"@x.test",
            "a+b@x.test",
        ] {
            assert!(!Address::parse(s).unwrap().routes_in_local_part(), "{s}");
        }
    }

    #[test]
    fn routed_readings_follow_the_mta() {
        let r = |s: &str| -> Vec<String> {
            Address::parse(s)
                .unwrap()
                .routed_readings()
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        assert_eq!(r("site.test!bob"), ["bob@site.test"]);
        assert_eq!(r("bob%site.test@local.test"), ["bob@site.test"]);
        assert_eq!(r("\"bob@site.test\"@local.test"), ["bob@site.test"]);
        let mut chain = r("a.test!b%c.test");
        chain.sort();
        assert_eq!(
            chain,
            ["a.test!b@c.test", "b%c.test@a.test", "b@a.test", "b@c.test"]
        );
        assert!(r("bob@site.test").is_empty());
        assert!(r("bob%@x.test").is_empty(), "empty site: no reading");
        // Bounded however long the chain.
        let long = format!("{}u", "s.test!".repeat(200));
        assert!(Address::parse(&long).unwrap().routed_readings().len() < 64);
    }

    #[test]
    fn loose_match_ignores_local_case_only() {
        let a = Address::parse("Alice@example.org").unwrap();
        assert!(a.matches_loosely(&Address::parse("alice@EXAMPLE.org").unwrap()));
        assert!(!a.matches_loosely(&Address::parse("alice@example.net").unwrap()));
    }
}
