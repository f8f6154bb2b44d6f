//! DNS owner names for OPENPGPKEY (RFC 7929 §3) and SMIMEA (RFC 8162 §3):
//! the hex of the first 28 octets of SHA2-256 over the local part (as
//! written, UTF-8), then `_openpgpkey` or `_smimecert`, then the domain as
//! an IDNA A-label (the address's canonical form, see
//! [`crate::address::domain`]). Domain-less addresses and address literals
//! have no owner name: no DNS query is sent for them.

use hickory_resolver::proto::rr::Name;
use sha2::{Digest, Sha256};

use crate::address::Address;
use crate::material::Method;

/// Why no owner name can be made for an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{address}: no DNS owner name: {reason}")]
pub struct OwnerNameError {
    /// The address.
    pub address: String,
    /// What is wrong.
    pub reason: String,
}

/// The label under which `method`'s records live.
pub fn service_label(method: Method) -> &'static str {
    match method {
        Method::Smime => "_smimecert",
        Method::OpenPgp => "_openpgpkey",
    }
}

/// The hashed local-part label: hex of the first 28 octets of SHA2-256.
pub fn local_part_label(local: &str) -> String {
    let digest = Sha256::digest(local.as_bytes());
    digest[..28].iter().map(|b| format!("{b:02x}")).collect()
}

/// The fully qualified owner name (with trailing dot) for `addr`'s
/// `method` record, hashing `local` as the local part. Quoted local parts
/// are hashed without their quotes (RFC 7929 §3 hashes the local part's
/// value).
pub fn owner_name_for(local: &str, domain: &str, method: Method) -> Result<Name, OwnerNameError> {
    let err = |reason: String| OwnerNameError {
        address: format!("{local}@{domain}"),
        reason,
    };
    // Name::from_utf8 reads `\` as an escape (`a\.b` is one label, a
    // trailing `\.` makes the name relative): a domain must not steer the
    // query that way.
    if domain.contains('\\') {
        return Err(err("backslash in domain".into()));
    }
    let fqdn = format!(
        "{}.{}.{}.",
        local_part_label(local),
        service_label(method),
        domain.trim_end_matches('.')
    );
    // from_utf8 converts U-labels to A-labels (IDNA).
    Name::from_utf8(&fqdn).map_err(|e| err(e.to_string()))
}

/// Refuses addresses without a DNS domain: `alice`, `alice@[192.0.2.1]`.
fn dns_domain(addr: &Address) -> Result<&str, OwnerNameError> {
    if addr.has_dns_domain() {
        Ok(addr.domain())
    } else {
        Err(OwnerNameError {
            address: addr.to_string(),
            reason: "no DNS domain (domain-less address or address literal)".to_owned(),
        })
    }
}

/// The owner name for `addr`'s `method` record, local part as written.
pub fn owner_name(addr: &Address, method: Method) -> Result<Name, OwnerNameError> {
    owner_name_for(&addr.local_unquoted(), dns_domain(addr)?, method)
}

/// The owner name with the local part lower-cased: the RFC 7929 §3
/// fallback. `None` when lower-casing changes nothing.
pub fn lowercase_owner_name(
    addr: &Address,
    method: Method,
) -> Option<Result<Name, OwnerNameError>> {
    let local = addr.local_unquoted();
    let lower = local.to_lowercase();
    (lower != local).then(|| owner_name_for(&lower, dns_domain(addr)?, method))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backslash_cannot_escape_a_label_or_the_root() {
        // Found by fuzzing: `h@\` gave a relative owner name.
        for domain in ["\\", "example\\.org", "example.org\\"] {
            assert!(
                owner_name_for("h", domain, Method::Smime).is_err(),
                "{domain}"
            );
        }
    }

    #[test]
    fn rfc_7929_test_vector() {
        let a = Address::parse("hugh@example.com").unwrap();
        assert_eq!(
            owner_name(&a, Method::OpenPgp).unwrap().to_ascii(),
            "c93f1e400f26708f98cb19d936620da35eec8f72e57f9eec01c1afd6._openpgpkey.example.com."
        );
        assert_eq!(
            owner_name(&a, Method::Smime).unwrap().to_ascii(),
            "c93f1e400f26708f98cb19d936620da35eec8f72e57f9eec01c1afd6._smimecert.example.com."
        );
    }

    #[test]
    fn local_part_hashed_as_written_with_lowercase_fallback() {
        let a = Address::parse("Hugh@Example.com").unwrap();
        let exact = owner_name(&a, Method::OpenPgp).unwrap().to_ascii();
        assert!(
            !exact.starts_with("c93f1e40"),
            "hashed as written, not lower-cased"
        );
        let lower = lowercase_owner_name(&a, Method::OpenPgp)
            .unwrap()
            .unwrap()
            .to_ascii();
        assert!(lower.starts_with("c93f1e400f26708f98cb19d936620da35eec8f72e57f9eec01c1afd6."));
        assert!(
            lowercase_owner_name(&Address::parse("hugh@x.org").unwrap(), Method::Smime).is_none()
        );
    }

    #[test]
    fn plus_tags_quotes_and_non_ascii() {
        // +tags are part of the local part: not stripped.
        let tagged = owner_name(
            &Address::parse("hugh+news@example.com").unwrap(),
            Method::Smime,
        )
        .unwrap();
        assert_eq!(
            tagged.to_ascii(),
            format!("{}._smimecert.example.com.", local_part_label("hugh+news"))
        );
        // A quoted local part is hashed without its quotes.
        let quoted = owner_name(
            &Address::parse("\"john doe\"@example.com").unwrap(),
            Method::Smime,
        )
        .unwrap();
        assert!(quoted.to_ascii().starts_with(&local_part_label("john doe")));
        // Non-ASCII local part: UTF-8 bytes hashed; non-ASCII domain: A-label.
        let uni = owner_name(
            &Address::parse("jürgen@bücher.example").unwrap(),
            Method::OpenPgp,
        )
        .unwrap();
        assert_eq!(
            uni.to_ascii(),
            format!(
                "{}._openpgpkey.xn--bcher-kva.example.",
                local_part_label("jürgen")
            )
        );
    }

    #[test]
    fn every_spelling_one_owner_name_and_none_without_dns_domain() {
        let want = owner_name(
            &Address::parse("x@xn--bcher-kva.test").unwrap(),
            Method::Smime,
        )
        .unwrap()
        .to_ascii();
        for s in [
            "x@bücher.test",
            "x@XN--BCHER-KVA.TEST.",
            "x@bücher\u{ff0e}test",
        ] {
            let got = owner_name(&Address::parse(s).unwrap(), Method::Smime).unwrap();
            assert_eq!(got.to_ascii(), want, "{s}");
        }
        for s in [
            "postmaster",
            "Alice",
            "alice@[192.0.2.1]",
            "a@[IPv6:2001:db8::1]",
        ] {
            let a = Address::parse(s).unwrap();
            assert!(owner_name(&a, Method::OpenPgp).is_err(), "{s}");
            assert!(
                lowercase_owner_name(&a, Method::OpenPgp).is_none_or(|r| r.is_err()),
                "{s}"
            );
        }
    }
}
