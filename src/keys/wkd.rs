//! Web Key Directory (draft-koch-openpgp-webkey-service): the names —
//! the z-base-32 SHA-1 hash of the lower-cased local part, and where a
//! key lives in the advanced (`openpgpkey.<domain>`) and direct
//! (`<domain>`) layouts, which `wkd build` writes — and the key source
//! that fetches them, [`WkdSource`].
//!
//! The source asks the advanced method first and falls back to the
//! direct method only when the host `openpgpkey.<domain>` does not exist
//! (the draft's rule: a host that exists but fails is a failure, not a
//! reason to ask elsewhere). Only keys with a user ID for the address are
//! kept; the key service validates them. Trust `tls`: the web PKI alone
//! vouches for what the domain's web server says.

use std::sync::Arc;

use crate::address::Address;
use crate::keys::web::url::{HttpsUrl, percent_encode};
use crate::keys::web::{Fetched, WebClient, answer};
use crate::keys::{FailReason, KeySource, Lookup, LookupFuture, SourceKind, Traced, TracedFuture};
use crate::material::Method;

/// z-base-32's alphabet (the draft, §3.1, after Zooko's proposal).
const ZBASE32: &[u8; 32] = b"ybndrfg8ejkmcpqxot1uwisza345h769";

/// The 32-character name of `addr`'s key file: SHA-1 of the local part
/// with ASCII upper case mapped to lower case (non-ASCII is kept as it
/// is), in z-base-32. The local part is hashed unquoted, as a mail client
/// writes it into the key's user ID.
pub fn local_part_hash(addr: &Address) -> String {
    let local = addr.local_unquoted().to_ascii_lowercase();
    zbase32(&openssl::sha::sha1(local.as_bytes()))
}

/// `data` in z-base-32, five bits per character, most significant first.
fn zbase32(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(5) * 8);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &b in data {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ZBASE32[((acc >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ZBASE32[((acc << (5 - bits)) & 31) as usize]));
    }
    out
}

/// Where `addr`'s key lives below the document root of
/// `openpgpkey.<domain>` (the advanced method).
pub fn advanced_path(addr: &Address) -> String {
    format!(
        ".well-known/openpgpkey/{}/hu/{}",
        addr.domain(),
        local_part_hash(addr)
    )
}

/// Where `addr`'s key lives below the document root of `<domain>` (the
/// direct method).
pub fn direct_path(addr: &Address) -> String {
    format!(".well-known/openpgpkey/hu/{}", local_part_hash(addr))
}

/// The advanced and direct URLs of `addr`'s key; `None` for an address
/// without a DNS domain. The `l` parameter carries the local part as
/// written (the draft: servers may use it to find the key).
pub fn urls(addr: &Address) -> Option<(String, String)> {
    // A dotted quad without brackets passes as a domain, but it is no
    // host name: the direct method would connect to the IP, DNS unasked.
    if !addr.has_dns_domain() || addr.domain().parse::<std::net::IpAddr>().is_ok() {
        return None;
    }
    let l = percent_encode(&addr.local_unquoted());
    Some((
        format!(
            "https://openpgpkey.{}/{}?l={l}",
            addr.domain(),
            advanced_path(addr)
        ),
        format!("https://{}/{}?l={l}", addr.domain(), direct_path(addr)),
    ))
}

/// The WKD key source.
pub struct WkdSource {
    client: Arc<WebClient>,
}

impl WkdSource {
    /// A source fetching through `client`.
    pub fn new(client: Arc<WebClient>) -> Self {
        WkdSource { client }
    }

    async fn run(&self, addr: &Address, method: Method, detail: bool) -> Traced {
        let mut traced = Traced::plain(Lookup::NotFound);
        let Some((advanced, direct)) = urls(addr).filter(|_| method == Method::OpenPgp) else {
            return traced;
        };
        let mut all_cached = true;
        let mut answer = None;
        for text in [advanced, direct] {
            let url = match HttpsUrl::parse(&text) {
                Ok(u) => u,
                // Not expected for a canonical domain; unknown, not "no key".
                Err(why) => {
                    answer = Some(Lookup::Failed(FailReason::BadAnswer(why)));
                    break;
                }
            };
            let (fetched, cached, at) = self.client.get(&url, addr).await;
            all_cached &= cached;
            let (lookup, note) = answer::to_lookup(&fetched, addr, SourceKind::Wkd, at);
            if detail {
                traced.asked.push(answer::trace_line(&url, &fetched, note));
            }
            let next = matches!(fetched, Fetched::NoSuchHost(_));
            answer = Some(lookup);
            if !next {
                break;
            }
        }
        traced.lookup = answer.unwrap_or(Lookup::NotFound);
        traced.cached = all_cached;
        traced
    }
}

impl KeySource for WkdSource {
    fn kind(&self) -> SourceKind {
        SourceKind::Wkd
    }

    fn describe(&self) -> String {
        "Web Key Directory".to_owned()
    }

    fn lookup<'a>(&'a self, addr: &'a Address, method: Method) -> LookupFuture<'a> {
        Box::pin(async move { self.run(addr, method, false).await.lookup })
    }

    fn lookup_traced<'a>(
        &'a self,
        addr: &'a Address,
        method: Method,
        detail: bool,
    ) -> TracedFuture<'a> {
        Box::pin(self.run(addr, method, detail))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn the_drafts_example() {
        // draft-koch-openpgp-webkey-service §3.1: Joe.Doe@Example.ORG.
        let a = Address::parse("Joe.Doe@Example.ORG").unwrap();
        assert_eq!(local_part_hash(&a), "iy9q119eutrkn8s1mk4r39qejnbu3n5q");
        assert_eq!(
            advanced_path(&a),
            ".well-known/openpgpkey/example.org/hu/iy9q119eutrkn8s1mk4r39qejnbu3n5q"
        );
        assert_eq!(
            direct_path(&a),
            ".well-known/openpgpkey/hu/iy9q119eutrkn8s1mk4r39qejnbu3n5q"
        );
    }

    #[test]
    fn urls_of_both_methods_carry_the_local_part_as_written() {
        let a = Address::parse("Joe.Doe@Example.ORG").unwrap();
        let (advanced, direct) = urls(&a).unwrap();
        assert_eq!(
            advanced,
            "https://openpgpkey.example.org/.well-known/openpgpkey/example.org/hu/\
             iy9q119eutrkn8s1mk4r39qejnbu3n5q?l=Joe.Doe"
        );
        assert_eq!(
            direct,
            "https://example.org/.well-known/openpgpkey/hu/iy9q119eutrkn8s1mk4r39qejnbu3n5q?l=Joe.Doe"
        );
        let odd = Address::parse("\"a b&c\"@example.org").unwrap();
        assert!(urls(&odd).unwrap().0.ends_with("?l=a%20b%26c"));
        assert!(urls(&Address::parse("x@[192.0.2.1]").unwrap()).is_none());
        assert!(urls(&Address::parse("x@192.0.2.1").unwrap()).is_none());
    }

    #[test]
    fn zbase32_of_short_inputs() {
        // Bits left over are padded with zeros on the right.
        assert_eq!(zbase32(&[]), "");
        assert_eq!(zbase32(&[0]), "yy");
        assert_eq!(zbase32(&[0xff]), "9h");
        // Only ASCII is lower-cased: a non-ASCII upper-case letter stays.
        let upper = Address::parse("\u{c4}x@example.org").unwrap();
        let lower = Address::parse("\u{e4}x@example.org").unwrap();
        assert_ne!(local_part_hash(&upper), local_part_hash(&lower));
    }
}
