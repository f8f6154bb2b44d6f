//! Which header fields the `From:` domain's DKIM signatures cover: the
//! `d=` and `h=` tags of `DKIM-Signature` fields (RFC 6376 §3.5). The
//! verification itself is the MTA's (its `Authentication-Results` say
//! whether a signature passed); this only reads what was signed.
//!
//! An `Autocrypt:` header is usually not signed: anyone holding one DKIM-
//! signed message of the sender could add a header with their own key,
//! and DKIM would still pass. So an Autocrypt key is learned only when
//! every signature of the `From:` domain lists `Autocrypt` in `h=`, unless
//! the operator accepts unsigned ones (`harvest.autocrypt_unsigned`).

use crate::address::domain::canonical_name;
use crate::message::HeaderField;

/// The tags of one `DKIM-Signature` value that matter here.
struct Signature {
    domain: Option<String>,
    signed: Vec<String>,
}

/// `d=` (canonical) and `h=` (lower-case names) of one field value; tags
/// are `name=value` separated by `;`, with folding white space anywhere
/// (RFC 6376 §3.2). Anything else is ignored: an unreadable signature
/// signs nothing.
fn parse(value: &[u8]) -> Signature {
    let text = String::from_utf8_lossy(value);
    let mut sig = Signature {
        domain: None,
        signed: Vec::new(),
    };
    for tag in text.split(';') {
        let Some((name, v)) = tag.split_once('=') else {
            continue;
        };
        let compact: String = v.chars().filter(|c| !c.is_whitespace()).collect();
        match name.trim() {
            "d" => sig.domain = canonical_name(&compact).ok(),
            "h" => {
                sig.signed = compact
                    .split(':')
                    .filter(|f| !f.is_empty())
                    .map(str::to_ascii_lowercase)
                    .collect();
            }
            _ => {}
        }
    }
    sig
}

/// Whether `headers` carry at least one DKIM signature of `domain`
/// (canonical form) or a parent of it, and every one of them lists
/// `field` in `h=`. Every,
/// not any: a signature that does not cover the field may be the one that
/// passed, and one added by the sender that covers it may have failed.
pub fn covers(headers: &[HeaderField], domain: &str, field: &str) -> bool {
    let mut seen = false;
    for h in headers.iter().filter(|h| h.is("DKIM-Signature")) {
        let sig = parse(&h.value);
        // The domain's own signatures and those of a parent, which DMARC
        // aligns with it.
        if !sig
            .domain
            .as_deref()
            .is_some_and(|d| super::auth_results::aligned(d, domain))
        {
            continue;
        }
        seen = true;
        if !sig.signed.iter().any(|f| f.eq_ignore_ascii_case(field)) {
            return false;
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(v: &str) -> HeaderField {
        HeaderField::new("DKIM-Signature", format!(" {v}").into_bytes())
    }

    #[test]
    fn every_signature_of_the_domain_must_list_the_field() {
        let covering = field(
            "v=1; a=rsa-sha256; d=Example.ORG; s=s1;\r\n\th=from:to:subject:\r\n\t AUTOCRYPT:date; bh=x; b=y",
        );
        let not = field("v=1; d=example.org; s=s2; h=from:to:subject; bh=x; b=y");
        let other = field("v=1; d=elsewhere.example; s=s; h=from; bh=x; b=y");
        assert!(covers(
            std::slice::from_ref(&covering),
            "example.org",
            "autocrypt"
        ));
        assert!(covers(
            &[covering.clone(), other.clone()],
            "example.org",
            "Autocrypt"
        ));
        assert!(!covers(
            &[covering.clone(), not.clone()],
            "example.org",
            "autocrypt"
        ));
        assert!(!covers(
            std::slice::from_ref(&not),
            "example.org",
            "autocrypt"
        ));
        assert!(!covers(
            std::slice::from_ref(&other),
            "example.org",
            "autocrypt"
        ));
        assert!(!covers(&[], "example.org", "autocrypt"));
        // A name that only contains the field's name is not the field.
        let lookalike = field("d=example.org; h=from:x-autocrypt:autocrypt-gossip; b=y");
        assert!(!covers(&[lookalike], "example.org", "autocrypt"));
        // A parent domain's signature aligns (DMARC, relaxed).
        let parent = field("d=example.org; h=from:autocrypt; b=y");
        assert!(covers(
            std::slice::from_ref(&parent),
            "mail.example.org",
            "autocrypt"
        ));
        assert!(!covers(&[parent], "xexample.org", "autocrypt"));
        // Garbage signs nothing.
        assert!(!covers(
            &[field("d=; h=autocrypt")],
            "example.org",
            "autocrypt"
        ));
        assert!(!covers(&[field("\u{0}\u{ff}")], "example.org", "autocrypt"));
    }
}
