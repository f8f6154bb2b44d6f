//! The one canonical form of a mail domain: IDNA A-labels (UTS #46
//! ToASCII with the full-width dots and other compatibility characters
//! mapped), lower case, no trailing dot; address literals as the address
//! they name. Policy globs, `local_domains`, key file names, DNS owner
//! names and log lines all compare this form, so that `bücher.test`,
//! `XN--BCHER-KVA.test.` and `ｂüｃｈｅｒ。test` are one domain.

use std::net::{Ipv4Addr, Ipv6Addr};

use idna::uts46::{AsciiDenyList, DnsLength, Hyphens, Uts46};

/// Longest domain text looked at: anything longer cannot be a DNS name
/// (253 octets) even after UTS #46 mapping shrinks it, and refusing it
/// early keeps the work bounded.
const MAX_INPUT: usize = 1024;

/// ASCII refused in a domain: everything but letters, digits, `-`, `.`
/// and `_` (seen in real host names), plus controls and space.
const DENY: AsciiDenyList = AsciiDenyList::new(true, "!\"#$%&'()*+,/:;<=>?@[\\]^`{|}~");

/// The dots UTS #46 maps to U+002E (ideographic, full-width and
/// half-width ideographic full stops). Mapped before labels are split so
/// that a glob splits where the address would.
const DOT_VARIANTS: [char; 3] = ['\u{3002}', '\u{ff0e}', '\u{ff61}'];

/// Why a domain has no canonical form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// Nothing left once the trailing dot is gone.
    #[error("empty domain")]
    Empty,
    /// Longer than any domain can be.
    #[error("domain longer than {MAX_INPUT} bytes")]
    TooLong,
    /// UTS #46 refuses it: invalid punycode (`xn--zz`), a label over 63
    /// octets, a name over 253, an empty label, a forbidden character.
    #[error("not a valid domain name (IDNA/UTS #46)")]
    Idna,
    /// `[...]` that is neither an IPv4 nor an `IPv6:` literal.
    #[error("not an IPv4 or IPv6 address literal")]
    Literal,
}

/// Maps the UTS #46 dot variants to `.`.
pub fn map_dots(s: &str) -> String {
    s.chars()
        .map(|c| if DOT_VARIANTS.contains(&c) { '.' } else { c })
        .collect()
}

/// The canonical A-label form of a DNS domain (not a literal): mapped,
/// lower-cased, checked, without one trailing dot.
pub fn canonical_name(input: &str) -> Result<String, DomainError> {
    if input.len() > MAX_INPUT {
        return Err(DomainError::TooLong);
    }
    let mapped = map_dots(input);
    let name = mapped.strip_suffix('.').unwrap_or(&mapped);
    if name.is_empty() {
        return Err(DomainError::Empty);
    }
    Uts46::new()
        .to_ascii(
            name.as_bytes(),
            DENY,
            Hyphens::CheckFirstLast,
            DnsLength::Verify,
        )
        .map(|c| c.into_owned())
        .map_err(|_| DomainError::Idna)
}

/// One label (no dots) in canonical form; used by globs for the labels
/// without a wildcard.
pub fn canonical_label(label: &str) -> Result<String, DomainError> {
    if label.is_empty() {
        return Err(DomainError::Idna);
    }
    canonical_name(label)
}

/// The canonical form of an address literal `[192.0.2.1]` or
/// `[IPv6:2001:db8::1]` (RFC 5321 §4.1.3): the address as Rust writes it.
pub fn canonical_literal(input: &str) -> Result<String, DomainError> {
    let inner = input
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .ok_or(DomainError::Literal)?;
    if let Ok(v4) = inner.parse::<Ipv4Addr>() {
        return Ok(format!("[{v4}]"));
    }
    let (tag, rest) = inner.split_once(':').ok_or(DomainError::Literal)?;
    if tag.eq_ignore_ascii_case("ipv6")
        && let Ok(v6) = rest.parse::<Ipv6Addr>()
    {
        return Ok(format!("[IPv6:{v6}]"));
    }
    Err(DomainError::Literal)
}

/// The display (U-label) form of a canonical name: what a person reads.
/// Falls back to the canonical form if it does not decode.
pub fn unicode_form(canonical: &str) -> String {
    let (u, r) = Uts46::new().to_unicode(canonical.as_bytes(), DENY, Hyphens::CheckFirstLast);
    match r {
        Ok(()) => u.into_owned(),
        Err(_) => canonical.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn one_form_for_every_spelling() {
        for s in [
            "bücher.test",
            "BÜCHER.TEST",
            "xn--bcher-kva.test",
            "XN--BCHER-KVA.test",
            "Xn--Bcher-Kva.Test.",
            "bücher.test.",
            "bücher\u{3002}test",
            "bücher\u{ff0e}test\u{ff61}",
            "\u{ff42}\u{fc}\u{ff43}\u{ff48}\u{ff45}\u{ff52}.test",
        ] {
            assert_eq!(canonical_name(s).unwrap(), "xn--bcher-kva.test", "{s:?}");
        }
        assert_eq!(canonical_name("Example.ORG.").unwrap(), "example.org");
        assert_eq!(
            canonical_name("mail_relay.example").unwrap(),
            "mail_relay.example"
        );
        assert_eq!(unicode_form("xn--bcher-kva.test"), "bücher.test");
        assert_eq!(unicode_form("example.org"), "example.org");
    }

    #[test]
    fn no_canonical_form() {
        let long_label = format!("{}.test", "a".repeat(64));
        let long_name = format!("{}test", "abcdefghi.".repeat(26));
        for bad in [
            "",
            ".",
            "xn--zz.test",
            "a..b",
            ".example.org",
            "example.org..",
            "-a.test",
            "a-.test",
            "exa mple.org",
            "a/b.test",
            "a*b.test",
            "a@b",
            "\u{0}x.test",
            long_label.as_str(),
            long_name.as_str(),
        ] {
            assert!(canonical_name(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(canonical_name(&"a".repeat(2000)), Err(DomainError::TooLong));
        assert!(canonical_name(&format!("{}.test", "a".repeat(63))).is_ok());
    }

    #[test]
    fn literals() {
        assert_eq!(canonical_literal("[192.0.2.1]").unwrap(), "[192.0.2.1]");
        assert_eq!(
            canonical_literal("[ipv6:2001:DB8:0::1]").unwrap(),
            "[IPv6:2001:db8::1]"
        );
        for bad in [
            "[192.0.2.256]",
            "[01.2.3.4]",
            "[x:y]",
            "[IPv6:zz]",
            "[]",
            "[1.2.3.4",
        ] {
            assert!(canonical_literal(bad).is_err(), "{bad:?} accepted");
        }
    }
}
