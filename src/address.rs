//! E-mail addresses as the milter and the key sources see them.
//!
//! The local part is kept exactly as written (RFC 7929 §3 hashes it as
//! written); the domain is lower-cased, because DNS and policy globs treat
//! domains case-insensitively.

use std::fmt;
use std::str::FromStr;

/// A recipient or sender address, `local@domain`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address {
    local: String,
    domain: String,
}

/// Why a string is not an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an e-mail address: {input:?}: {reason}")]
pub struct AddressError {
    /// The text that was given.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl Address {
    /// Parses `local@domain`, `<local@domain>` or `"quoted local"@domain`.
    pub fn parse(input: &str) -> Result<Self, AddressError> {
        let err = |reason| AddressError {
            input: input.to_owned(),
            reason,
        };
        let s = input.trim();
        let s = s
            .strip_prefix('<')
            .and_then(|s| s.strip_suffix('>'))
            // `< a@b >` is `a@b`: a space kept in front would not survive
            // printing and parsing again (found by fuzzing).
            .map_or(s, str::trim);
        // The domain never contains '@'; a quoted local part may.
        let at = s.rfind('@').ok_or_else(|| err("no '@'"))?;
        let (local, domain) = (&s[..at], &s[at + 1..]);
        if local.is_empty() {
            return Err(err("empty local part"));
        }
        if local.starts_with('"') != local.ends_with('"') || (local == "\"") {
            return Err(err("unbalanced quotes in local part"));
        }
        if !local.starts_with('"') && local.contains('@') {
            return Err(err("'@' in unquoted local part"));
        }
        if local.chars().any(|c| c.is_control()) {
            return Err(err("control character in local part"));
        }
        let domain = domain.trim_end_matches('.');
        if domain.is_empty() {
            return Err(err("empty domain"));
        }
        if domain
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '@' | '<' | '>' | '"'))
        {
            return Err(err("invalid character in domain"));
        }
        Ok(Address {
            local: local.to_owned(),
            domain: domain.to_lowercase(),
        })
    }

    /// The local part, exactly as written (quotes included when quoted).
    pub fn local(&self) -> &str {
        &self.local
    }

    /// The local part without surrounding quotes and quoted-pair escapes:
    /// what RFC 7929 §3 hashes for `"john.doe"@example.com`-style addresses.
    pub fn local_unquoted(&self) -> String {
        match self
            .local
            .strip_prefix('"')
            .and_then(|l| l.strip_suffix('"'))
        {
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
            None => self.local.clone(),
        }
    }

    /// The domain, lower-cased.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The same address with the local part lower-cased (RFC 7929 §3
    /// fallback, and case-insensitive key file names).
    pub fn lowercased(&self) -> Address {
        Address {
            local: self.local.to_lowercase(),
            domain: self.domain.clone(),
        }
    }

    /// Whether `other` is this address, comparing the local part
    /// case-insensitively as nearly every mail system does in practice
    /// (used to match a key's user ID or certificate to the recipient).
    pub fn matches_loosely(&self, other: &Address) -> bool {
        self.domain == other.domain
            && self.local_unquoted().to_lowercase() == other.local_unquoted().to_lowercase()
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
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
        assert_eq!(Address::parse("< bob+tag@example.org >").unwrap(), b);
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
            "nobody",
            "@example.org",
            "a@",
            "a@b@c",
            "\"a@b",
            "a b@exa mple.org",
            "< @example.org>",
        ] {
            assert!(Address::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn loose_match_ignores_local_case_only() {
        let a = Address::parse("Alice@example.org").unwrap();
        assert!(a.matches_loosely(&Address::parse("alice@EXAMPLE.org").unwrap()));
        assert!(!a.matches_loosely(&Address::parse("alice@example.net").unwrap()));
    }
}
