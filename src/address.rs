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
//!
//! This file owns the [`Address`] value and its forms (display, U-labels,
//! loose comparison); `parse` reads an address as written (path,
//! local part, comments), `routing` finds routing operators in the local
//! part, [`domain`] makes domains canonical.

pub(crate) mod domain;
mod parse;
mod routing;

use std::fmt;
use std::str::FromStr;

pub(crate) use parse::split_local;
pub use parse::strip_comments;

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

impl Address {
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
    fn loose_match_ignores_local_case_only() {
        let a = Address::parse("Alice@example.org").unwrap();
        assert!(a.matches_loosely(&Address::parse("alice@EXAMPLE.org").unwrap()));
        assert!(!a.matches_loosely(&Address::parse("alice@example.net").unwrap()));
    }
}
