//! Inbound signature verification driven like an MTA (`indymilter-test`),
//! keys from the real DNSSEC test environment: the result written into an
//! `Authentication-Results` field under our authserv-id (RFC 8601, RFC
//! 7281) for messages signed by independent tools (`openssl cms -sign`,
//! `gpg --detach-sign`) and by the milter itself; a changed body, a key
//! the zone does not hold, a sender without a key, a bogus zone; forged
//! fields under our authserv-id removed, the others' kept (also on a body
//! too large to keep); a verified message encrypted at rest.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod common;
#[path = "env/mod.rs"]
mod env;
#[path = "env/milter.rs"]
mod milter;
#[path = "signing/mod.rs"]
mod signing;

use common::{Gpg, Scratch, SmimeId, smime_sign_tool};
use env::DnsEnv;
use indymilter_test::Status;
use signing::{AUTHSERV, Sent, counter, header_and_body, header_of, send, start, start_with};

/// The method name OpenPGP results are written under.
const PGP: &str = "openpgp";

const OUTSIDE_HEADER: &str = "From: <{from}>\r\nTo: <user@local.test>\r\n\
     Subject: signed elsewhere\r\nDate: Wed, 02 Dec 2026 10:00:00 +0000\r\n\
     Message-ID: <in-1@elsewhere.test>\r\n";

/// `entity`, signed by `openssl cms -sign` with `id`, as a message from
/// `from`.
fn openssl_signed(from: &str, entity: &[u8], id: &SmimeId) -> Vec<u8> {
    let signed = smime_sign_tool(&Scratch::new(), entity, id, true);
    let mut msg = OUTSIDE_HEADER.replace("{from}", from).into_bytes();
    msg.extend_from_slice(&common::to_crlf(&signed));
    msg
}

/// The Authentication-Results fields of a delivered message, in order.
fn results(msg: &[u8]) -> Vec<String> {
    let (fields, _) = common::split_message(msg);
    fields
        .iter()
        .filter(|f| f.name == "authentication-results")
        .map(|f| f.value().trim().to_owned())
        .collect()
}

async fn deliver(s: &signing::Signing, from: &str, raw: &[u8]) -> Vec<u8> {
    let msg = Sent::from_raw(raw);
    let (status, out) = send(&s.m, None, from, &["user@local.test"], &msg).await;
    assert_eq!(status, Status::Continue);
    out
}

fn entity() -> Vec<u8> {
    b"Content-Type: text/plain; charset=us-ascii\r\n\r\nSigned by a client elsewhere.\r\n".to_vec()
}

fn smime_id(env: &DnsEnv, user: &str) -> SmimeId {
    let u = env.user(user);
    SmimeId::from_files(u.cert.as_ref().unwrap(), u.key.as_ref().unwrap())
}

/// A sender whose certificate is in the signed zone: `smime=pass`, the
/// field first in the header; its body changed: `smime=fail`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signature_by_the_zones_key_passes_and_a_changed_body_fails() {
    let env = DnsEnv::start();
    let s = start(&env).await;
    let raw = openssl_signed(
        "smime@autoencrypt.test",
        &entity(),
        &smime_id(&env, "smime"),
    );
    let out = deliver(&s, "smime@autoencrypt.test", &raw).await;
    let ar = results(&out);
    assert_eq!(ar.len(), 1, "{ar:?}");
    assert!(ar[0].starts_with(&format!("{AUTHSERV};")), "{}", ar[0]);
    assert!(ar[0].contains("smime=pass"), "{}", ar[0]);
    assert!(ar[0].contains("vouched for by DNSSEC"), "{}", ar[0]);
    assert!(
        header_of(&out).starts_with("Authentication-Results:"),
        "prepended"
    );
    assert_eq!(
        header_and_body(&out).1,
        header_and_body(&raw).1,
        "body unchanged"
    );
    assert!(counter(
        &s.m,
        "autoencrypt_verified_total{method=\"smime\",result=\"pass\"} 1"
    ));

    let text = String::from_utf8(raw).unwrap();
    let changed = text.replacen("Signed by a client", "Signed by a forger", 1);
    assert_ne!(changed, text);
    let out = deliver(&s, "smime@autoencrypt.test", changed.as_bytes()).await;
    let ar = results(&out);
    assert!(ar[0].contains("smime=fail"), "{ar:?}");
    assert!(counter(
        &s.m,
        "autoencrypt_verified_total{method=\"smime\",result=\"fail\"} 1"
    ));
}

/// A message the milter signed (outbound, for an authenticated sender)
/// passes the milter's own inbound verification against the zone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_milters_own_signature_verifies_inbound() {
    let env = DnsEnv::start();
    let s = start(&env).await;
    let msg = Sent::plain("smime@autoencrypt.test", "rcpt@example.net");
    let (_, signed) = send(
        &s.m,
        Some("smime"),
        "smime@autoencrypt.test",
        &["rcpt@example.net"],
        &msg,
    )
    .await;
    assert!(header_of(&signed).contains("multipart/signed"));
    let out = deliver(&s, "smime@autoencrypt.test", &signed).await;
    let ar = results(&out);
    assert!(ar[0].contains("smime=pass"), "{ar:?}");

    // OpenPGP: pgp@ signs; verified against its OPENPGPKEY record.
    let msg = Sent::plain("pgp@autoencrypt.test", "rcpt@example.net");
    let (_, signed) = send(
        &s.m,
        Some("pgp"),
        "pgp@autoencrypt.test",
        &["rcpt@example.net"],
        &msg,
    )
    .await;
    let out = deliver(&s, "pgp@autoencrypt.test", &signed).await;
    let ar = results(&out);
    assert!(ar[0].contains(&format!("{PGP}=pass")), "{ar:?}");
    assert!(counter(
        &s.m,
        "autoencrypt_verified_total{method=\"openpgp\",result=\"pass\"} 1"
    ));
}

/// `gpg --detach-sign` in RFC 3156 form, by the zone's key: pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pgp_mime_signature_made_by_gpg_passes() {
    let env = DnsEnv::start();
    let s = start(&env).await;
    let u = env.user("pgp");
    let gpg = Gpg::new();
    gpg.import(&std::fs::read(u.pgp_secret.as_ref().unwrap()).unwrap());
    let part = entity();
    let sig = gpg.detach_sign(&part, u.pgp_fpr.as_ref().unwrap());
    let mut raw = OUTSIDE_HEADER
        .replace("{from}", "pgp@autoencrypt.test")
        .into_bytes();
    raw.extend_from_slice(
        b"MIME-Version: 1.0\r\nContent-Type: multipart/signed; micalg=pgp-sha256;\r\n \
          protocol=\"application/pgp-signature\"; boundary=\"b1\"\r\n\r\n--b1\r\n",
    );
    raw.extend_from_slice(&part);
    raw.extend_from_slice(b"\r\n--b1\r\nContent-Type: application/pgp-signature\r\n\r\n");
    raw.extend_from_slice(&common::to_crlf(&sig));
    raw.extend_from_slice(b"\r\n--b1--\r\n");
    let out = deliver(&s, "pgp@autoencrypt.test", &raw).await;
    let ar = results(&out);
    assert!(ar[0].contains(&format!("{PGP}=pass")), "{ar:?}");
}

/// A valid signature by a certificate the zone does not publish for the
/// sender, and one by a sender with no key at all: `policy`, never pass.
/// A sender in the bogus zone: `temperror`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_the_zone_does_not_vouch_for_are_policy_and_a_bogus_zone_temperror() {
    let env = DnsEnv::start();
    let s = start(&env).await;
    // smime@ signing with both@'s certificate.
    let raw = openssl_signed("smime@autoencrypt.test", &entity(), &smime_id(&env, "both"));
    let ar = results(&deliver(&s, "smime@autoencrypt.test", &raw).await);
    assert!(ar[0].contains("smime=policy"), "{ar:?}");
    // none@ has no key in the zone.
    let raw = openssl_signed("none@autoencrypt.test", &entity(), &smime_id(&env, "smime"));
    let ar = results(&deliver(&s, "none@autoencrypt.test", &raw).await);
    assert!(ar[0].contains("smime=policy"), "{ar:?}");
    assert!(counter(
        &s.m,
        "autoencrypt_verified_total{method=\"smime\",result=\"policy\"} 2"
    ));
    // bogus@: the zone's signatures do not validate.
    let raw = openssl_signed(
        "bogus@autoencrypt.test",
        &entity(),
        &smime_id(&env, "bogus"),
    );
    let ar = results(&deliver(&s, "bogus@autoencrypt.test", &raw).await);
    assert!(ar[0].contains("smime=temperror"), "{ar:?}");
    assert!(counter(
        &s.m,
        "autoencrypt_verified_total{method=\"smime\",result=\"temperror\"} 1"
    ));
}

/// Fields claiming our authserv-id with a signature result are removed,
/// whatever their spelling; our id's DKIM result and other ids' fields
/// stay; a signed message gets ours alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_results_under_our_authserv_id_are_removed() {
    let env = DnsEnv::start();
    let s = start(&env).await;
    let forged = format!(
        "Authentication-Results: {AUTHSERV}; smime=pass header.from=ceo@local.test\r\n\
         Authentication-Results: MX.Local.Test (comment) ; openpgp=pass\r\n\
         Authentication-Results: {AUTHSERV}; dkim=pass header.d=elsewhere.test\r\n\
         Authentication-Results: other.test; smime=pass\r\n"
    );
    let mut raw = forged.clone().into_bytes();
    raw.extend_from_slice(
        b"From: <ceo@elsewhere.test>\r\nTo: <user@local.test>\r\nSubject: hi\r\n\r\nunsigned\r\n",
    );
    let out = deliver(&s, "ceo@elsewhere.test", &raw).await;
    let ar = results(&out);
    assert_eq!(
        ar,
        [
            format!("{AUTHSERV}; dkim=pass header.d=elsewhere.test"),
            "other.test; smime=pass".to_owned()
        ]
    );
    assert!(counter(&s.m, "autoencrypt_forged_results_removed_total 2"));

    let mut raw = forged.into_bytes();
    raw.extend_from_slice(&openssl_signed(
        "smime@autoencrypt.test",
        &entity(),
        &smime_id(&env, "smime"),
    ));
    let ar = results(&deliver(&s, "smime@autoencrypt.test", &raw).await);
    assert_eq!(ar.len(), 3, "{ar:?}");
    assert!(
        ar[0].starts_with(AUTHSERV) && ar[0].contains("smime=pass"),
        "{ar:?}"
    );
    assert!(
        !ar[1..]
            .iter()
            .any(|a| a.contains("smime=pass") && a.starts_with(AUTHSERV))
    );
}

/// A body too large to keep (past `limits.max_message_bytes`, passed
/// opportunistically) is not verified, but its header was kept: a forged
/// result under our authserv-id is removed all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_result_on_a_message_too_large_to_keep_is_removed() {
    let env = DnsEnv::start();
    let s = start_with(&env, |c| c.limits.max_message_bytes = 1024).await;
    let mut raw = format!(
        "Authentication-Results: {AUTHSERV}; smime=pass\r\nFrom: <ceo@elsewhere.test>\r\n\
         To: <user@local.test>\r\nSubject: big\r\n\r\n"
    )
    .into_bytes();
    raw.extend(std::iter::repeat_n(b"0123456789abcdef\r\n".as_slice(), 200).flatten());
    let out = deliver(&s, "ceo@elsewhere.test", &raw).await;
    assert!(results(&out).is_empty(), "{:?}", results(&out));
    assert_eq!(
        header_and_body(&out).1,
        header_and_body(&raw).1,
        "body as sent"
    );
    assert!(counter(&s.m, "autoencrypt_forged_results_removed_total 1"));
}

/// An inbound signed message that is also encrypted at rest: verified
/// first (the field, forged ones removed, in the outer header), then
/// encrypted; the stored copy decrypts to the signed entity as it came,
/// which still verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_message_encrypted_at_rest_keeps_its_result_outside() {
    let env = DnsEnv::start();
    let s = start_with(&env, |c| {
        c.local_domains = vec!["local.test".to_owned(), "autoencrypt.test".to_owned()];
    })
    .await;
    let mut raw = format!("Authentication-Results: {AUTHSERV}; smime=fail\r\n").into_bytes();
    raw.extend_from_slice(&openssl_signed(
        "smime@autoencrypt.test",
        &entity(),
        &smime_id(&env, "smime"),
    ));
    let msg = Sent::from_raw(&raw);
    let (status, out) = send(
        &s.m,
        None,
        "smime@autoencrypt.test",
        &["both@autoencrypt.test"],
        &msg,
    )
    .await;
    assert_eq!(status, Status::Continue);
    let ar = results(&out);
    assert_eq!(ar.len(), 1, "{ar:?}");
    assert!(ar[0].contains("smime=pass"), "{ar:?}");
    assert!(header_of(&out).contains("application/pkcs7-mime"));
    let b64: String = String::from_utf8_lossy(header_and_body(&out).1)
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let der = openssl::base64::decode_block(&b64).unwrap();
    let payload =
        common::smime_decrypt(&Scratch::new(), &der, "DER", &smime_id(&env, "both")).unwrap();
    assert_eq!(payload, common::expected_inner_entity(&msg.raw()));
    common::smime_verify(&Scratch::new(), &payload).expect("the stored payload still verifies");
    assert!(counter(
        &s.m,
        "autoencrypt_encrypted_total{method=\"smime\"} 1"
    ));
}
