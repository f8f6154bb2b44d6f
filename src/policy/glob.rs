//! Address globs of the rule language: `*@example.org`, `*@*.example.org`,
//! `ceo@*.example.net`, exact addresses, `"quoted local"@example.org`, and
//! `<>` for the null sender.
//!
//! `*` matches any run of characters (also none, also dots). Matching is
//! case-insensitive in the domain and — because in practice every mail
//! system treats `Postmaster` and `postmaster` alike, and a policy must not
//! be dodged by capitalisation — in the local part too. Local parts are
//! compared unquoted: `"john.doe"@example.org` and `john.doe@example.org`
//! are the same mailbox. In a quoted pattern `*` is a literal character.

use std::fmt;

use crate::address::Address;

/// One token of a compiled pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Star,
    Ch(char),
}

/// A compiled glob over one part of an address (lower-cased).
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

    /// Whether `s` (already lower-cased) matches.
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
    /// Parses `LOCAL@DOMAIN` where either part may contain `*`.
    pub fn parse(text: &str) -> Result<Self, GlobError> {
        let err = |reason| GlobError {
            pattern: text.to_owned(),
            reason,
        };
        let t = text.trim();
        // The domain never contains '@'; a quoted local part may.
        let at = t
            .rfind('@')
            .ok_or_else(|| err("no '@' (write *@example.org for a whole domain)"))?;
        let (l, d) = (&t[..at], &t[at + 1..]);
        let d = d.trim_end_matches('.');
        if l.is_empty() {
            return Err(err("empty local part (use * for any)"));
        }
        if d.is_empty() {
            return Err(err("empty domain (use * for any)"));
        }
        let mut domain = Pattern(Vec::new());
        for c in d.chars() {
            match c {
                '*' => domain.push(Tok::Star),
                c if c.is_alphanumeric() || matches!(c, '-' | '.' | '_') => {
                    for lc in c.to_lowercase() {
                        domain.push(Tok::Ch(lc));
                    }
                }
                _ => return Err(err("invalid character in domain")),
            }
        }
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
                for lc in c.to_lowercase() {
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
                        for lc in c.to_lowercase() {
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

    /// Whether `addr` matches.
    pub fn matches(&self, addr: &Address) -> bool {
        self.domain.matches(addr.domain())
            && self.local.matches(&addr.local_unquoted().to_lowercase())
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
    fn local_globs_and_case() {
        assert!(g("postmaster@*").matches(&a("PostMaster@any.example")));
        assert!(g("*-request@lists.example").matches(&a("dev-request@lists.example")));
        assert!(!g("*-request@lists.example").matches(&a("dev@lists.example")));
        assert!(g("a*b*c@x").matches(&a("aXXbYYbc@x")));
        assert!(!g("a*b*c@x").matches(&a("aXXbYYb@x")));
        assert!(g("*@*").matches(&a("\"odd one\"@x.y")));
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
        for bad in [
            "example.org",
            "@example.org",
            "x@",
            "a b@x",
            "\"ab@x",
            "a@b c",
            "a@b/c",
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
