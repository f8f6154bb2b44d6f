//! Reading an address as written: the RFC 5321 §4.1.2 path (angle
//! brackets, a source route reduced to its final address), the local part
//! (dot-atom or quoted string, needless quotes dropped, specials refused)
//! and RFC 5322 comments as Postfix strips them from a MAIL FROM. The
//! domain is handed to [`super::domain`] for its canonical form.

use super::{Address, AddressError, Domain, domain};

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

    /// The local part without surrounding quotes and quoted-pair escapes.
    pub(super) fn unquote(local: &str) -> String {
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
}
