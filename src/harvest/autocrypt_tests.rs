use super::*;
use crate::message::Message;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/harvest/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn headers(name: &str) -> Vec<HeaderField> {
    Message::parse(&fixture(name)).headers
}

fn p(value: &str) -> Result<AutocryptHeader, AutocryptError> {
    parse("Autocrypt".len(), value.as_bytes())
}

fn addr(s: &str) -> Address {
    Address::parse(s).unwrap()
}

#[test]
fn the_three_attributes() {
    let h = p(" addr=a@example.org; prefer-encrypt=mutual; keydata=aGVs\r\n bG8=").unwrap();
    assert_eq!(h.addr, "a@example.org");
    assert_eq!(h.prefer_encrypt, PreferEncrypt::Mutual);
    assert_eq!(h.keydata, b"hello");
    let h = p(" addr=a@example.org; keydata=aGVsbG8=").unwrap();
    assert_eq!(h.prefer_encrypt, PreferEncrypt::NoPreference);
    // Any other value reads as nopreference.
    for v in ["nopreference", "Mutual", "yes", ""] {
        let h = p(&format!(
            " addr=a@example.org; prefer-encrypt={v}; keydata=aGVsbG8="
        ))
        .unwrap();
        assert_eq!(h.prefer_encrypt, PreferEncrypt::NoPreference, "{v}");
    }
    // A trailing ';' after keydata is harmless.
    assert!(p(" addr=a@example.org; keydata=aGVsbG8=;").is_ok());
}

#[test]
fn non_critical_attributes_are_ignored_critical_ones_invalidate() {
    let h = p(" _client=x; addr=a@example.org; _v=1; keydata=aGVsbG8=").unwrap();
    assert_eq!(h.addr, "a@example.org");
    assert_eq!(
        p(" addr=a@example.org; type=1; keydata=aGVsbG8="),
        Err(AutocryptError::Critical("type".into()))
    );
    // Names are the spec's, exactly.
    assert_eq!(
        p(" ADDR=a@example.org; keydata=aGVsbG8="),
        Err(AutocryptError::Critical("ADDR".into()))
    );
}

#[test]
fn malformed_headers() {
    use AutocryptError::*;
    for (v, want) in [
        (" keydata=aGVsbG8=", Missing("addr")),
        (" addr=a@example.org", Missing("keydata")),
        (
            " addr=a@example.org; keydata=aGVsbG8=; _x=1",
            KeydataNotLast,
        ),
        (
            " addr=a@example.org; addr=b@example.org; keydata=aGVsbG8=",
            Repeated("addr".into()),
        ),
        (
            " addr=a@example.org; prefer-encrypt=mutual; prefer-encrypt=mutual; keydata=aGVsbG8=",
            Repeated("prefer-encrypt".into()),
        ),
        (" addr=a@example.org; keydata=!!!", Keydata),
        (" addr=a@example.org; keydata=", Keydata),
        (
            " addr=a@example.org; junk; keydata=aGVsbG8=",
            NotAnAttribute("junk".into()),
        ),
        ("", NotAnAttribute(String::new())),
    ] {
        assert_eq!(p(v), Err(want), "{v:?}");
    }
}

#[test]
fn headers_over_10_kib_are_invalid() {
    // "Autocrypt:" + value = exactly 10 KiB is still valid.
    let fill = |n: usize| {
        format!(
            " addr=a@example.org; _pad={}; keydata=aGVsbG8=",
            "x".repeat(n)
        )
    };
    let base = "Autocrypt".len() + 1 + fill(0).len();
    let at_limit = fill(MAX_HEADER_BYTES - base);
    assert!(p(&at_limit).is_ok());
    let over = fill(MAX_HEADER_BYTES - base + 1);
    assert_eq!(
        p(&over),
        Err(AutocryptError::Oversized(MAX_HEADER_BYTES + 1))
    );
}

#[test]
fn the_fixtures_select_as_the_spec_says() {
    let carol = addr("carol@example.org");
    let h = select(&headers("autocrypt-gpg.eml"), &carol).unwrap();
    assert_eq!(h.prefer_encrypt, PreferEncrypt::Mutual);
    assert_eq!(h.keydata, fixture("carol-gpg.pgp"));
    let h = select(&headers("autocrypt-sq.eml"), &addr("dave@example.org")).unwrap();
    assert_eq!(h.keydata, fixture("dave-sq.pgp"));
    assert_eq!(
        select(&headers("autocrypt-two-headers.eml"), &carol),
        Err(Selection::Several(2))
    );
    assert_eq!(
        select(&headers("autocrypt-addr-mismatch.eml"), &carol),
        Err(Selection::AddrMismatch("mallory@example.org".into()))
    );
    assert_eq!(
        select(&headers("autocrypt-critical.eml"), &carol),
        Err(Selection::Invalid(AutocryptError::Critical(
            "future-attr".into()
        )))
    );
    // The header with a critical attribute is invalid; the other is the one.
    let h = select(&headers("autocrypt-critical-and-valid.eml"), &carol).unwrap();
    assert_eq!(h.keydata, fixture("carol-gpg.pgp"));
    assert_eq!(
        select(&headers("smime-detached.eml"), &carol),
        Err(Selection::None)
    );
}

#[test]
fn addr_compares_as_autocrypt_canonicalises() {
    let field = |v: &str| vec![HeaderField::new("Autocrypt", v)];
    let from = addr("Carol@Example.org");
    assert!(select(&field(" addr=carol@EXAMPLE.ORG; keydata=aGVsbG8="), &from).is_ok());
    assert!(select(&field(" addr=<carol@example.org>; keydata=aGVsbG8="), &from).is_ok());
    assert_eq!(
        select(
            &field(" addr=carol@example.org.evil.test; keydata=aGVsbG8="),
            &from
        ),
        Err(Selection::AddrMismatch(
            "carol@example.org.evil.test".into()
        ))
    );
    assert_eq!(
        select(&field(" addr=not an address; keydata=aGVsbG8="), &from),
        Err(Selection::Invalid(AutocryptError::Addr(
            "not an address".into()
        )))
    );
    // A valid header for the From: address beside one for another: the
    // other is invalid, so exactly one is valid.
    let mut two = field(" addr=mallory@example.org; keydata=aGVsbG8=");
    two.extend(field(" addr=carol@example.org; keydata=aGVsbG8="));
    assert!(select(&two, &from).is_ok());
}
