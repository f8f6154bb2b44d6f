//! PGP/MIME verdicts: signatures made with Sequoia over a CRLF part.

use std::io::Write as _;
use std::time::SystemTime;

use sequoia_openpgp as openpgp;
use sequoia_openpgp::policy::StandardPolicy;
use sequoia_openpgp::serialize::SerializeInto;

use super::*;

#[test]
fn pgp_mime_passes() {
    let alice = pgp_id("alice@example.org");
    let key = pgp_key(&alice, "alice@example.org");
    let raw = pgp_mime(ENTITY, &pgp_sign(&alice.0, ENTITY));
    assert_eq!(signed_form(&split(&raw).0), Some(Form::PgpMime));
    pass(&run(&raw, std::slice::from_ref(&key)), &key);
}

#[test]
fn pgp_mime_one_changed_byte_fails() {
    let alice = pgp_id("alice@example.org");
    let key = pgp_key(&alice, "alice@example.org");
    let armor = pgp_sign(&alice.0, ENTITY);
    let mut changed = ENTITY.to_vec();
    changed[50] ^= 0x01;
    let v = run(&pgp_mime(&changed, &armor), &[key]);
    assert!(matches!(v, Verdict::Fail(_)), "{v:?}");
}

#[test]
fn pgp_mime_claiming_the_from_key_but_made_by_another_fails() {
    use openpgp::packet::signature::SignatureBuilder;
    use openpgp::types::SignatureType;
    let alice = pgp_id("alice@example.org");
    let mallory = pgp_id("alice@example.org");
    let policy = StandardPolicy::new();
    let alice_signing = alice
        .0
        .keys()
        .with_policy(&policy, None)
        .for_signing()
        .next()
        .unwrap()
        .key()
        .clone();
    let mut keypair = mallory
        .0
        .keys()
        .with_policy(&policy, None)
        .secret()
        .for_signing()
        .next()
        .unwrap()
        .key()
        .clone()
        .into_keypair()
        .unwrap();
    let sig = SignatureBuilder::new(SignatureType::Binary)
        .set_signature_creation_time(SystemTime::now())
        .unwrap()
        .set_issuer(alice_signing.keyid())
        .unwrap()
        .set_issuer_fingerprint(alice_signing.fingerprint())
        .unwrap()
        .sign_message(&mut keypair, ENTITY)
        .unwrap();
    let mut w = openpgp::armor::Writer::new(Vec::new(), openpgp::armor::Kind::Signature).unwrap();
    w.write_all(&openpgp::Packet::from(sig).to_vec().unwrap())
        .unwrap();
    let armor = String::from_utf8(w.finalize().unwrap()).unwrap();
    let v = run(
        &pgp_mime(ENTITY, &armor),
        &[pgp_key(&alice, "alice@example.org")],
    );
    assert!(matches!(v, Verdict::Fail(_)), "{v:?}");
}

#[test]
fn pgp_mime_by_another_key_or_without_keys_is_policy() {
    let alice = pgp_id("alice@example.org");
    let mallory = pgp_id("alice@example.org");
    let raw = pgp_mime(ENTITY, &pgp_sign(&mallory.0, ENTITY));
    assert_policy(
        &run(&raw, &[pgp_key(&alice, "alice@example.org")]),
        "not a key found for the From: address",
    );
    assert_eq!(
        run(&raw, &[]),
        Verdict::Policy("no key found for the From: address".into())
    );
}

#[test]
fn pgp_mime_with_two_signatures_needs_every_checkable_one_good() {
    let alice = pgp_id("alice@example.org");
    let gateway = pgp_id("gateway@example.org");
    let key = pgp_key(&alice, "alice@example.org");
    let both = |a: &str, b: &str| {
        // Two armored blocks do not make one signature part: join the
        // packets under one armor.
        let mut packets = Vec::new();
        for armor in [a, b] {
            let mut r = openpgp::armor::Reader::from_bytes(
                armor.as_bytes(),
                openpgp::armor::ReaderMode::Tolerant(None),
            );
            std::io::Read::read_to_end(&mut r, &mut packets).unwrap();
        }
        let mut w =
            openpgp::armor::Writer::new(Vec::new(), openpgp::armor::Kind::Signature).unwrap();
        w.write_all(&packets).unwrap();
        String::from_utf8(w.finalize().unwrap()).unwrap()
    };
    let good = both(&pgp_sign(&gateway.0, ENTITY), &pgp_sign(&alice.0, ENTITY));
    pass(
        &run(&pgp_mime(ENTITY, &good), std::slice::from_ref(&key)),
        &key,
    );
    // Alice's signature over other bytes beside a good one by the gateway.
    let bad = both(&pgp_sign(&gateway.0, ENTITY), &pgp_sign(&alice.0, b"other"));
    let v = run(&pgp_mime(ENTITY, &bad), &[key]);
    assert!(matches!(v, Verdict::Fail(_)), "{v:?}");
}

#[test]
fn pgp_mime_malformed_is_permerror() {
    let alice = pgp_id("alice@example.org");
    let keys = [pgp_key(&alice, "alice@example.org")];
    let armor = pgp_sign(&alice.0, ENTITY);
    let good = pgp_mime(ENTITY, &armor);
    // One part only.
    let one = b"Content-Type: multipart/signed; protocol=\"application/pgp-signature\"; boundary=b1\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nx\r\n--b1--\r\n";
    assert_perm(&run(one, &keys));
    // Garbage armor, and garbage inside good armor lines.
    assert_perm(&run(&pgp_mime(ENTITY, "not a signature at all"), &keys));
    let inner = armor.replace(
        armor.lines().nth(2).unwrap(),
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    );
    assert_perm(&run(&pgp_mime(ENTITY, &inner), &keys));
    // No boundary.
    let text = String::from_utf8(good.clone())
        .unwrap()
        .replace("; boundary=\"b1\"", "");
    assert_perm(&run(text.as_bytes(), &keys));
    // The second part is not the signature.
    let text = String::from_utf8(good).unwrap().replace(
        "Content-Type: application/pgp-signature",
        "Content-Type: text/plain",
    );
    assert_perm(&run(text.as_bytes(), &keys));
    // A key where the signature should be.
    let key_armor = String::from_utf8(alice.1.clone())
        .unwrap()
        .replace("PUBLIC KEY BLOCK", "SIGNATURE");
    assert_perm(&run(&pgp_mime(ENTITY, &key_armor), &keys));
}

#[test]
fn pgp_mime_signatures_are_counted_before_any_is_verified() {
    let alice = pgp_id("alice@example.org");
    let one = pgp_sign(&alice.0, ENTITY);
    let mut packets = Vec::new();
    let mut r = openpgp::armor::Reader::from_bytes(
        one.as_bytes(),
        openpgp::armor::ReaderMode::Tolerant(None),
    );
    std::io::Read::read_to_end(&mut r, &mut packets).unwrap();
    let many = packets.repeat(MAX_SIGNATURES + 1);
    let mut w = openpgp::armor::Writer::new(Vec::new(), openpgp::armor::Kind::Signature).unwrap();
    w.write_all(&many).unwrap();
    let armor = String::from_utf8(w.finalize().unwrap()).unwrap();
    let v = run(
        &pgp_mime(ENTITY, &armor),
        &[pgp_key(&alice, "alice@example.org")],
    );
    match v {
        Verdict::PermError(why) => assert!(why.contains("more than"), "{why}"),
        other => panic!("{other:?}"),
    }
    // A signature part over the bound is refused unread.
    let huge = "A".repeat(MAX_PGP_SIGNATURE_BYTES + 1);
    assert_perm(&run(&pgp_mime(ENTITY, &huge), &[]));
}
