//! A hostile sender's `Autocrypt:` headers (authenticated: he owns his
//! domain or has an account at Alice's): attribute injection, case, folds,
//! size, a thousand headers, and keys that must not be learned — no
//! encryption subkey, expired, revoked, a user ID for the `From:` nobody
//! signed, secret key material, a keyring with someone else's key first.

use std::time::Instant;

use autoencrypt_milter::Method;
use autoencrypt_milter::harvest::LearnedFrom;
use sequoia_openpgp::packet::{Packet, UserID};
use sequoia_openpgp::parse::{PacketParser, PacketParserResult, Parse};

use super::*;

/// Alice's authenticated message with exactly the header fields `fields`
/// (each with its line end) besides the usual ones.
fn with_fields(fields: &str) -> String {
    message_with(&format!("{AR_PASS}{fields}"))
}

fn alice_key() -> Vec<u8> {
    alice_pgp().to_vec().unwrap()
}

/// The one result of a message with one kind of key material.
fn only(raw: &str) -> Result<LearnedKey, Refusal> {
    let mut all = teaches(raw).expect("a candidate");
    assert_eq!(all.len(), 1, "{all:?}");
    all.remove(0)
}

fn refused(raw: &str) -> &'static str {
    match only(raw) {
        Ok(k) => panic!("learned {} for {}", k.fingerprint, k.address),
        Err(r) => r.as_str(),
    }
}

#[test]
fn a_plain_header_teaches_alices_key_in_its_public_form() {
    let k = only(&with_fields(&autocrypt_field(
        "alice@example.org",
        &alice_key(),
    )))
    .unwrap();
    assert_eq!(k.address, "alice@example.org");
    assert_eq!(k.method, Method::OpenPgp);
    assert_eq!(k.how, LearnedFrom::Autocrypt);
    assert_eq!(k.fingerprint, alice_pgp().fingerprint().to_hex());
}

#[test]
fn injected_and_misspelt_attributes_invalidate_the_header() {
    let key = folded_b64(&alice_key());
    for (attrs, label) in [
        (
            format!("addr=alice@example.org; addr=evil@evil.test; keydata={key}"),
            "malformed",
        ),
        (
            format!("addr=evil@evil.test; addr=alice@example.org; keydata={key}"),
            "malformed",
        ),
        (
            format!("addr=evil@evil.test; _addr=alice@example.org; keydata={key}"),
            "addr_mismatch",
        ),
        (
            format!("Addr=alice@example.org; keydata={key}"),
            "critical_attribute",
        ),
        (
            format!("addr =alice@example.org; ADDR=x@y; keydata={key}"),
            "critical_attribute",
        ),
        (
            format!("addr=alice@example.org; keydata={key}; addr=evil@evil.test"),
            "malformed",
        ),
        (
            format!(
                "addr=alice@example.org; prefer-encrypt=mutual; prefer-encrypt=nopreference; \
                 keydata={key}"
            ),
            "malformed",
        ),
        (
            format!("addr=alice@example.org; keydata={key}; keydata={key}"),
            "malformed",
        ),
        (format!("addr=alice@example.org keydata={key}"), "malformed"),
        ("addr=alice@example.org; keydata=".to_owned(), "malformed"),
        (
            "addr=alice@example.org; keydata=!!notbase64!!".to_owned(),
            "malformed",
        ),
        (
            format!("addr=alice@example.org,evil@evil.test; keydata={key}"),
            "malformed",
        ),
        (
            format!("addr=alice@example.org.evil.test; keydata={key}"),
            "addr_mismatch",
        ),
    ] {
        let raw = with_fields(&format!("Autocrypt: {attrs}\n"));
        assert_eq!(refused(&raw), label, "{attrs:.80}");
    }
}

#[test]
fn the_header_name_is_case_insensitive_and_folds_are_white_space() {
    let key = alice_key();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&key);
    for field in [
        autocrypt_field("alice@example.org", &key).replacen("Autocrypt:", "AUTOCRYPT:", 1),
        autocrypt_field("alice@example.org", &key).replacen("Autocrypt:", "autocrypt:", 1),
        format!("Autocrypt:\n addr=alice@example.org;\n\tkeydata={b64}\n"),
        format!("Autocrypt: addr=Alice@EXAMPLE.org; _x=y; keydata={b64}\n"),
        format!("Autocrypt: addr=alice@example.org; keydata={b64};\n"),
    ] {
        let k = only(&with_fields(&field)).unwrap_or_else(|r| panic!("{field:.60}: {r}"));
        assert_eq!(k.address, "alice@example.org");
    }
    // `Autocrypt-Gossip:` is another field (Level 1: inside encrypted
    // parts only): no key material at all.
    let gossip =
        autocrypt_field("alice@example.org", &key).replacen("Autocrypt:", "Autocrypt-Gossip:", 1);
    assert_eq!(screen(&parse(&with_fields(&gossip)).0), Screen::Nothing);
}

#[test]
fn oversized_keydata_is_refused_before_it_is_decoded() {
    let big = pgp("alice@example.org");
    // A key padded with 20 kB of user IDs: over the 10 KiB header limit.
    let mut packets: Vec<Packet> = Vec::new();
    for i in 0..400 {
        packets.push(UserID::from(format!("padding {i:04} <pad{i}@example.org> xxxxxxxx")).into());
    }
    let padded = big.insert_packets(packets).unwrap().0.to_vec().unwrap();
    assert!(padded.len() > 10 * 1024);
    let raw = with_fields(&autocrypt_field("alice@example.org", &padded));
    assert_eq!(refused(&raw), "oversized");
}

#[test]
fn a_thousand_headers_teach_nothing_and_cost_little() {
    let one = autocrypt_field("alice@example.org", &alice_key());
    let raw = with_fields(&one.repeat(1000));
    let started = Instant::now();
    assert_eq!(refused(&raw), "several_headers");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // 999 invalid and one valid: the valid one is taken (Level 1 discards
    // the invalid ones); 999 for other addresses and one for Alice, too.
    let bad = "Autocrypt: addr=alice@example.org; keydata=!!\n".repeat(999);
    assert!(only(&with_fields(&format!("{bad}{one}"))).is_ok());
    let other = autocrypt_field("bob@example.org", &alice_key()).repeat(999);
    assert!(only(&with_fields(&format!("{other}{one}"))).is_ok());
}

#[test]
fn keys_the_backend_would_not_encrypt_to_are_not_learned() {
    let (revocable, revocation) = CertBuilder::new()
        .add_userid("alice@example.org")
        .add_transport_encryption_subkey()
        .generate()
        .unwrap();
    let revoked = revocable.insert_packets(revocation).unwrap().0;
    let sign_only = CertBuilder::new()
        .add_userid("alice@example.org")
        .add_signing_subkey()
        .generate()
        .unwrap()
        .0;
    let expired = CertBuilder::new()
        .add_userid("alice@example.org")
        .add_transport_encryption_subkey()
        .set_creation_time(SystemTime::now() - Duration::from_secs(3 * 86_400))
        .set_validity_period(Duration::from_secs(86_400))
        .generate()
        .unwrap()
        .0;
    // Mallory's key with a user ID for Alice that nobody signed.
    let unbound = pgp("mallory@evil.test")
        .insert_packets(Packet::from(UserID::from("alice@example.org")))
        .unwrap()
        .0;
    // Only another address in it.
    let other = pgp("bob@example.org");
    for (what, cert) in [
        ("revoked", revoked),
        ("no encryption subkey", sign_only),
        ("expired", expired),
        ("unbound user ID", unbound),
        ("another address", other),
    ] {
        let raw = with_fields(&autocrypt_field(
            "alice@example.org",
            &cert.to_vec().unwrap(),
        ));
        assert_eq!(refused(&raw), "invalid_key", "{what}");
    }
}

/// The packet tags of an OpenPGP message.
fn tags(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut ppr = PacketParser::from_bytes(data).unwrap();
    while let PacketParserResult::Some(pp) = ppr {
        out.push(u8::from(pp.packet.tag()));
        ppr = pp.recurse().unwrap().1;
    }
    out
}

#[test]
fn secret_key_material_in_keydata_is_never_stored() {
    let tsk = alice_pgp().as_tsk().to_vec().unwrap();
    let sent = tags(&tsk);
    assert!(sent.contains(&5) && sent.contains(&7), "a TSK: {sent:?}");
    let k = only(&with_fields(&autocrypt_field("alice@example.org", &tsk))).unwrap();
    let kept = tags(&k.key);
    assert!(
        !kept.contains(&5) && !kept.contains(&7),
        "secret key packets stored: {kept:?}"
    );
}

#[test]
fn a_keyring_does_not_smuggle_another_key_in() {
    let mallory = pgp("mallory@evil.test").to_vec().unwrap();
    let alice = alice_key();
    for ring in [
        [mallory.clone(), alice.clone()].concat(),
        [alice.clone(), mallory.clone()].concat(),
    ] {
        match only(&with_fields(&autocrypt_field("alice@example.org", &ring))) {
            // If anything, Alice's own key, and nothing of Mallory's.
            Ok(k) => {
                assert_eq!(k.fingerprint, alice_pgp().fingerprint().to_hex());
                assert_eq!(k.key, alice, "only Alice's key is stored");
            }
            Err(r) => assert_eq!(r.as_str(), "invalid_key", "{r}"),
        }
    }
}

#[test]
fn a_key_with_many_user_ids_is_learned_for_the_from_address_only() {
    let mut b = CertBuilder::new().add_transport_encryption_subkey();
    for uid in [
        "ceo@bank.example",
        "Alice <alice@example.org>",
        "bob@example.org",
    ] {
        b = b.add_userid(uid);
    }
    let cert = b.generate().unwrap().0;
    let raw = with_fields(&autocrypt_field(
        "alice@example.org",
        &cert.to_vec().unwrap(),
    ));
    let keys = learned(&raw);
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].address, "alice@example.org");
}
