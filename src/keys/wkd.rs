//! Web Key Directory names (draft-koch-openpgp-webkey-service): the
//! z-base-32 SHA-1 hash of the lower-cased local part, and where a key
//! lives in the advanced (`openpgpkey.<domain>`) and direct (`<domain>`)
//! layouts. Pure: `wkd build` writes the files, a WKD key source (issue
//! 11, not built yet) will fetch them.

use crate::address::Address;

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
