//! Address globs of the rule language: `*@example.org`, `*@*.example.org`,
//! `ceo@*.example.net`, exact addresses, `"quoted local"@example.org`, and
//! `<>` for the null sender.
//!
//! `*` matches any run of characters (also none, also dots). Matching is
//! case-insensitive in the domain and — because in practice every mail
//! system treats `Postmaster` and `postmaster` alike, and a policy must not
//! be dodged by capitalisation — in the local part too, by one case fold
//! on both sides ([`fold_case`]: `STRAẞE` = `strasse`, `ΑΣ` = `ασ`). Local parts are
//! compared unquoted: `"john.doe"@example.org` and `john.doe@example.org`
//! are the same mailbox. In a quoted pattern `*` is a literal character.
//!
//! Domains are compared in their one canonical form
//! ([`crate::address::domain`]): a glob written with U-labels
//! (`*@bücher.test`) is turned into A-labels when loaded and matches every
//! spelling of the domain. A glob without `@` (`postmaster`) matches only
//! domain-less recipients (`RCPT TO:<postmaster>`); so does a glob whose
//! domain is only `*` (`postmaster@*`, `*@*`), as `*` also matches nothing.

use std::fmt;

use crate::address::domain::{canonical_label, map_dots};
use crate::address::{Address, Domain, fold_case, split_local};

/// The canonical pattern of a glob's domain: labels without `*` in their
/// A-label form, labels with `*` ASCII and lower-cased.
fn domain_pattern(d: &str) -> Result<Pattern, &'static str> {
    let mapped = map_dots(d);
    let name = mapped.strip_suffix('.').unwrap_or(&mapped);
    if name.is_empty() {
        return Err("empty domain (use * for any)");
    }
    let mut canon = Vec::new();
    for label in name.split('.') {
        if label.contains('*') {
            if !label.is_ascii() {
                return Err("a '*' inside a non-ASCII label has no canonical (A-label) form");
            }
            if !label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '*' | '-' | '_'))
            {
                return Err("invalid character in domain");
            }
            canon.push(label.to_ascii_lowercase());
        } else {
            canon.push(canonical_label(label).map_err(
                |_| "domain has no canonical form (invalid IDNA label, empty or over 63 octets)",
            )?);
        }
    }
    let mut p = Pattern(Vec::new());
    for c in canon.join(".").chars() {
        p.push(if c == '*' { Tok::Star } else { Tok::Ch(c) });
    }
    Ok(p)
}

/// One token of a compiled pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Star,
    Ch(char),
}

/// A compiled glob over one part of an address (case-folded, see
/// [`fold_case`]).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Pattern(Vec<Tok>);

impl Pattern {
    fn push(&mut self, t: Tok) {
        // Consecutive stars mean the same as one; collapsing keeps the
        // matcher linear-ish and the subsumption test exact.
        if t == Tok::Star && self.0.last() == Some(&Tok::Star) {
            return;
        }
        self.0.push(t);
    }

    fn is_star(&self) -> bool {
        self.0 == [Tok::Star]
    }

    /// Whether `s` (already case-folded) matches.
    fn matches(&self, s: &str) -> bool {
        let p = &self.0;
        let s: Vec<char> = s.chars().collect();
        // Classic greedy matcher with one backtrack point per star.
        let (mut pi, mut si) = (0, 0);
        let mut backtrack: Option<(usize, usize)> = None;
        while si < s.len() {
            match p.get(pi) {
                Some(Tok::Ch(c)) if *c == s[si] => {
                    pi += 1;
                    si += 1;
                }
                Some(Tok::Star) => {
                    backtrack = Some((pi, si));
                    pi += 1;
                }
                _ => match backtrack {
                    Some((bp, bs)) => {
                        pi = bp + 1;
                        si = bs + 1;
                        backtrack = Some((bp, bs + 1));
                    }
                    None => return false,
                },
            }
        }
        p[pi..].iter().all(|t| *t == Tok::Star)
    }

    /// Whether every string matched by `other` is matched by `self`
    /// (sufficient and, for star-only globs, exact).
    fn covers(&self, other: &Pattern) -> bool {
        let (a, b) = (&self.0, &other.0);
        // reach[i][j]: a[..i] covers b[..j].
        let mut reach = vec![vec![false; b.len() + 1]; a.len() + 1];
        reach[0][0] = true;
        for i in 0..=a.len() {
            for j in 0..=b.len() {
                if i == 0 && j == 0 {
                    continue;
                }
                let r = match a.get(i.wrapping_sub(1)) {
                    None => false,
                    // A star of `self` absorbs any tokens of `other`,
                    // stars included.
                    Some(Tok::Star) => reach[i - 1][j] || (j > 0 && reach[i][j - 1]),
                    Some(Tok::Ch(c)) => j > 0 && b[j - 1] == Tok::Ch(*c) && reach[i - 1][j - 1],
                };
                reach[i][j] = r;
            }
        }
        reach[a.len()][b.len()]
    }
}

/// A glob on a whole address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressGlob {
    text: String,
    local: Pattern,
    domain: Pattern,
}

/// Why a glob is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid address pattern {pattern:?}: {reason}")]
pub struct GlobError {
    /// The pattern as written.
    pub pattern: String,
    /// What is wrong.
    pub reason: &'static str,
}

impl AddressGlob {
    /// Parses `LOCAL@DOMAIN` where either part may contain `*`, or a
    /// domain-less `LOCAL` (matches domain-less recipients such as
    /// `<postmaster>`). The domain is made canonical like an address's
    /// (A-labels, lower case, no trailing dot); a label with a `*` must be
    /// ASCII, because a wildcard inside a U-label has no A-label form.
    pub fn parse(text: &str) -> Result<Self, GlobError> {
        let err = |reason| GlobError {
            pattern: text.to_owned(),
            reason,
        };
        let t = text.trim();
        let (l, d) = split_local(t).map_err(err)?;
        if l.is_empty() {
            return Err(err("empty local part (use * for any)"));
        }
        let domain = match d {
            // A bare "example.org" is far more likely a domain written
            // without "*@" than a dotted domain-less local part (which
            // can still be written quoted).
            None if !l.starts_with('"') && l.contains('.') => {
                return Err(err("no '@' (write *@example.org for a whole domain)"));
            }
            None => Pattern(Vec::new()),
            Some(d) => domain_pattern(d).map_err(err)?,
        };
        let mut local = Pattern(Vec::new());
        if let Some(inner) = l.strip_prefix('"') {
            let inner = inner
                .strip_suffix('"')
                .ok_or_else(|| err("unbalanced quotes in local part"))?;
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                let c = if c == '\\' {
                    chars
                        .next()
                        .ok_or_else(|| err("dangling backslash in quoted local part"))?
                } else {
                    c
                };
                for lc in fold_case(c.encode_utf8(&mut [0; 4])).chars() {
                    local.push(Tok::Ch(lc));
                }
            }
            if local.0.is_empty() {
                return Err(err("empty quoted local part"));
            }
        } else {
            for c in l.chars() {
                match c {
                    '*' => local.push(Tok::Star),
                    c if c.is_whitespace()
                        || c.is_control()
                        || matches!(c, '"' | '<' | '>' | '@' | '\\') =>
                    {
                        return Err(err("invalid character in local part (quote it)"));
                    }
                    c => {
                        for lc in fold_case(c.encode_utf8(&mut [0; 4])).chars() {
                            local.push(Tok::Ch(lc));
                        }
                    }
                }
            }
        }
        Ok(AddressGlob {
            text: t.to_owned(),
            local,
            domain,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the pattern matches every address (`*@*`).
    pub fn is_any(&self) -> bool {
        self.local.is_star() && self.domain.is_star()
    }

    /// Whether `addr` matches. A domain-less address has the empty
    /// domain: `*@*` and domain-less globs match it, `*@example.org` does
    /// not (the policy tries it with each local domain, see
    /// [`crate::policy::Policy::select`]). An unparseable sender matches
    /// nothing.
    pub fn matches(&self, addr: &Address) -> bool {
        addr.kind() != Domain::Unparseable
            && self.domain.matches(addr.domain())
            && self.local.matches(&fold_case(&addr.local_unquoted()))
    }

    /// Whether every address matched by `other` is matched by `self`.
    pub fn covers(&self, other: &AddressGlob) -> bool {
        self.domain.covers(&other.domain) && self.local.covers(&other.local)
    }
}

impl fmt::Display for AddressGlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A glob on the envelope sender, which may be null (`MAIL FROM:<>`,
/// bounces and other notifications).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SenderGlob {
    /// `<>`: the null sender.
    Null,
    /// An address pattern; never matches the null sender.
    Addr(AddressGlob),
}

impl SenderGlob {
    /// Parses `<>` or an address glob.
    pub fn parse(text: &str) -> Result<Self, GlobError> {
        if text.trim() == "<>" {
            Ok(SenderGlob::Null)
        } else {
            AddressGlob::parse(text).map(SenderGlob::Addr)
        }
    }

    /// Whether the sender (`None` = null sender) matches.
    pub fn matches(&self, sender: Option<&Address>) -> bool {
        match (self, sender) {
            (SenderGlob::Null, None) => true,
            (SenderGlob::Addr(g), Some(a)) => g.matches(a),
            _ => false,
        }
    }

    /// Whether every sender matched by `other` is matched by `self`.
    pub fn covers(&self, other: &SenderGlob) -> bool {
        match (self, other) {
            (SenderGlob::Null, SenderGlob::Null) => true,
            (SenderGlob::Addr(a), SenderGlob::Addr(b)) => a.covers(b),
            _ => false,
        }
    }
}

impl fmt::Display for SenderGlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SenderGlob::Null => f.write_str("<>"),
            SenderGlob::Addr(g) => g.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn g(s: &str) -> AddressGlob {
        AddressGlob::parse(s).unwrap()
    }
    fn a(s: &str) -> Address {
        Address::parse(s).unwrap()
    }

    #[test]
    fn domain_globs() {
        assert!(g("*@example.org").matches(&a("x@EXAMPLE.ORG")));
        assert!(g("*@Example.ORG").matches(&a("x@example.org")));
        assert!(!g("*@example.org").matches(&a("x@sub.example.org")));
        assert!(g("*@*.example.org").matches(&a("x@sub.example.org")));
        assert!(g("*@*.example.org").matches(&a("x@a.b.example.org")));
        assert!(!g("*@*.example.org").matches(&a("x@example.org")));
        assert!(!g("*@*.example.org").matches(&a("x@badexample.org")));
        assert!(g("*@example.org.").matches(&a("x@example.org.")));
    }

    #[test]
    fn idn_globs_are_canonical() {
        let spellings = [
            "x@bücher.test",
            "x@XN--BCHER-KVA.test",
            "x@xn--bcher-kva.test.",
            "x@bücher\u{3002}test",
        ];
        for glob in [
            "*@xn--bcher-kva.test",
            "*@bücher.test",
            "*@BÜCHER.TEST.",
            "*@XN--BCHER-KVA.test",
            "*@\u{ff42}\u{fc}cher\u{ff0e}test",
            "x@*.test",
            "*@xn--*.test",
        ] {
            for s in spellings {
                assert!(g(glob).matches(&a(s)), "{glob} vs {s}");
            }
        }
        assert!(g("*@*.müller.test").matches(&a("x@mail.xn--mller-kva.test")));
        assert!(!g("*@müller.test").matches(&a("x@mueller.test")));
        assert!(g("*@bücher.test").covers(&g("a@XN--BCHER-KVA.test")));
        assert_eq!(g("*@bücher.test").as_str(), "*@bücher.test");
    }

    #[test]
    fn domain_less_and_literal_addresses() {
        assert!(g("postmaster").matches(&a("<Postmaster>")));
        assert!(g("post*").matches(&a("postmaster")));
        assert!(!g("postmaster").matches(&a("postmaster@example.org")));
        // A domain of only `*` takes the empty domain too.
        assert!(g("postmaster@*").matches(&a("postmaster")));
        assert!(g("*@*").matches(&a("postmaster")));
        assert!(g("\"a.b\"").matches(&a("a.b")));
        assert!(!g("*@example.org").matches(&a("alice")));
        assert!(g("*@*").matches(&a("alice@[192.0.2.1]")));
        assert!(!g("*@*.1").matches(&a("alice@[192.0.2.1]")));
        assert!(g("*@*").covers(&g("postmaster")));
        let bad = Address::unparseable("<\"x>");
        assert!(!g("*@*").matches(&bad));
        assert!(!SenderGlob::parse("<>").unwrap().matches(Some(&bad)));
    }

    #[test]
    fn local_globs_and_case() {
        assert!(g("postmaster@*").matches(&a("PostMaster@any.example")));
        assert!(g("*-request@lists.example").matches(&a("dev-request@lists.example")));
        assert!(!g("*-request@lists.example").matches(&a("dev@lists.example")));
        assert!(g("a*b*c@x").matches(&a("aXXbYYbc@x")));
        assert!(!g("a*b*c@x").matches(&a("aXXbYYb@x")));
        assert!(g("*@*").matches(&a("\"odd one\"@x.y")));
    }

    #[test]
    fn local_case_folds_the_same_on_both_sides() {
        // str::to_lowercase writes a final Σ as ς, char-wise lowering as σ:
        // a glob did not even match its own spelling.
        assert!(g("ΑΣ@x.test").matches(&a("ΑΣ@x.test")));
        assert!(g("ασ@x.test").matches(&a("ΑΣ@x.test")));
        assert!(g("ας@x.test").matches(&a("ΑΣ@x.test")));
        assert!(g("\"ΟΔΥΣΣΕΑΣ\"@x.test").matches(&a("οδυσσεας@x.test")));
        // Full case folding, as Postfix compares UTF-8 local parts:
        // ß and ẞ fold to ss.
        assert!(g("strasse@x.test").matches(&a("STRAẞE@x.test")));
        assert!(g("straße@x.test").matches(&a("STRASSE@x.test")));
        assert!(g("stra*e@x.test").matches(&a("Straße@x.test")));
        let sigma = a("ΑΣ@x.test");
        assert!(sigma.matches_loosely(&a("ασ@x.test")));
    }

    #[test]
    fn quoted_local_parts() {
        // Quoted and unquoted spellings of one mailbox match each other.
        assert!(g("\"john.doe\"@example.org").matches(&a("john.doe@example.org")));
        assert!(g("john.doe@example.org").matches(&a("\"john.doe\"@example.org")));
        assert!(g("\"john doe\"@example.org").matches(&a("\"John Doe\"@example.org")));
        assert!(g("\"a@b\"@example.org").matches(&a("\"a@b\"@example.org")));
        // In quotes, '*' is literal.
        assert!(!g("\"*\"@example.org").matches(&a("anyone@example.org")));
        assert!(g("\"*\"@example.org").matches(&a("\"*\"@example.org")));
    }

    #[test]
    fn bad_patterns() {
        let long = format!("*@{}.test", "a".repeat(64));
        assert!(AddressGlob::parse(&long).is_err());
        for bad in [
            "@example.org",
            "x@",
            "a b@x",
            "\"ab@x",
            "a@b c",
            "a@b/c",
            "*@*bücher.test",
            "*@bü*cher.test",
            "*@xn--zz.test",
            "*@a..test",
            "*@.",
            "example.org",
        ] {
            assert!(AddressGlob::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn coverage() {
        assert!(g("*@*").covers(&g("*@example.org")));
        assert!(g("*@*").covers(&g("\"x y\"@example.org")));
        assert!(g("*@example.org").covers(&g("abuse@example.org")));
        assert!(g("*@*.example.org").covers(&g("*@a.*.example.org")));
        assert!(g("*@*example.org").covers(&g("*@*.example.org")));
        assert!(!g("*@*.example.org").covers(&g("*@*example.org")));
        assert!(!g("*@example.org").covers(&g("*@*.example.org")));
        assert!(!g("abuse@example.org").covers(&g("*@example.org")));
        assert!(g("a@B.org").covers(&g("A@b.org")));
    }

    #[test]
    fn null_sender() {
        let null = SenderGlob::parse("<>").unwrap();
        assert!(null.matches(None));
        assert!(!null.matches(Some(&a("x@y"))));
        assert!(!SenderGlob::parse("*@*").unwrap().matches(None));
    }
}
