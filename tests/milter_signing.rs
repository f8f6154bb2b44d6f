//! Signing and verifying driven like an MTA (`indymilter-test`, with the
//! `{auth_authen}` macro an authenticated Postfix session sends), keys
//! from the real DNSSEC test environment: who is signed and who is not
//! (each refusal counted and, under `sign_required`, answered with
//! `550 5.7.1`), sign + encrypt decrypted and then verified by openssl and
//! gpg, and inbound verification — `smime=pass` / `openpgp=pass` for a
//! sender whose key is in the signed zone, `fail` for a changed body,
//! `policy` for a key the zone does not have, `temperror` when the lookup
//! fails — with forged `Authentication-Results` fields removed.
//! (`postfix_signing.rs` does the same through Postfix with SASL, with
//! NSS `cmsutil` and RNP as the client-side verifiers.)

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

use common::{Gpg, Scratch, SmimeId, check_pgp_mime_output, check_smime_output, smime_decrypt};
use env::DnsEnv;
use indymilter_test::Status;
use signing::{
    Sent, content_entity, counter, decoded_body, header_of, openssl_verify, send, signed_parts,
    start,
};

/// An authenticated sender's S/MIME-signed message verifies with openssl
/// against the sender's certificate; the signed part decodes to the
/// original body; counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authenticated_senders_mail_is_signed_with_smime() {
    let env = DnsEnv::start();
    let s = start(&env).await;
    let msg = Sent::plain("smime@autoencrypt.test", "rcpt@example.net");
    let (status, out) = send(
        &s.m,
        Some("smime"),
        "smime@autoencrypt.test",
        &["rcpt@example.net"],
        &msg,
    )
    .await;
    assert_eq!(status, Status::Continue);
    let scratch = Scratch::new();
    let signed = openssl_verify(&scratch, &out, env.user("smime").cert.as_ref().unwrap())
        .expect("openssl verifies");
    let (part, _sig) = signed_parts(&out);
    assert_eq!(
        signed, part,
        "openssl's content is the first part, byte for byte"
    );
    assert_eq!(
        decoded_body(&part),
        decoded_body(&content_entity(&msg.raw())),
        "the transport-safe part decodes to the original body"
    );
    let h = header_of(&out);
    assert!(h.contains("Subject: signed by the server"), "{h}");
    assert!(!h.contains("Content-Transfer-Encoding: 8bit"), "{h}");
    assert!(counter(
        &s.m,
        "autoencrypt_signed_total{method=\"smime\"} 1"
    ));
}

/// `sign = ["openpgp", "smime"]`: pgp@ signs with OpenPGP (RFC 3156);
/// gpg verifies the detached signature over the first part.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openpgp_key_signs_pgp_mime() {
    let env = DnsEnv::start();
    let s = start(&env).await;
    let msg = Sent::plain("pgp@autoencrypt.test", "rcpt@example.net");
    let (status, out) = send(
        &s.m,
        Some("pgp"),
        "pgp@autoencrypt.test",
        &["rcpt@example.net"],
        &msg,
    )
    .await;
    assert_eq!(status, Status::Continue);
    let h = header_of(&out);
    assert!(h.contains("application/pgp-signature"), "{h}");
    assert!(
        h.contains("micalg=pgp-sha256") || h.contains("micalg=\"pgp-sha256\""),
        "{h}"
    );
    let (part, sig) = signed_parts(&out);
    let (_, armored) = signing::header_and_body(&sig);
    let gpg = Gpg::new();
    gpg.import(&std::fs::read(env.user("pgp").pgp_public.as_ref().unwrap()).unwrap());
    gpg.verify_detached(armored, &part).expect("gpg verifies");
    let mut changed = part.clone();
    let last = changed.len() - 3;
    changed[last] ^= 1;
    assert!(
        gpg.verify_detached(armored, &changed).is_err(),
        "a changed byte fails"
    );
    assert!(counter(
        &s.m,
        "autoencrypt_signed_total{method=\"openpgp\"} 1"
    ));
}

/// Sign + encrypt: both@ to smime@ is encrypted with S/MIME and signed
/// with S/MIME inside; decrypted by openssl, the payload is
/// multipart/signed and verifies, its first part the protected entity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_and_encrypted_decrypts_then_verifies() {
    let env = DnsEnv::start();
    let s = start(&env).await;
    let msg = Sent::plain("both@autoencrypt.test", "smime@autoencrypt.test");
    let (status, out) = send(
        &s.m,
        Some("both"),
        "both@autoencrypt.test",
        &["smime@autoencrypt.test"],
        &msg,
    )
    .await;
    assert_eq!(status, Status::Continue);
    let der = check_smime_output(&msg.raw(), &out, false);
    let u = env.user("smime");
    let id = SmimeId::from_files(u.cert.as_ref().unwrap(), u.key.as_ref().unwrap());
    let scratch = Scratch::new();
    let payload = smime_decrypt(&scratch, &der, "DER", &id).unwrap();
    let signed = openssl_verify(&scratch, &payload, env.user("both").cert.as_ref().unwrap())
        .expect("the decrypted payload verifies");
    let (part, _) = signed_parts(&payload);
    assert_eq!(signed, part);
    let part_header = header_of(&part);
    assert!(part_header.contains("hp=\"cipher\""), "{part_header}");
    assert!(
        part_header.contains("Subject: signed by the server"),
        "{part_header}"
    );
    assert!(header_of(&out).contains("Subject: [...]"));
    assert!(counter(
        &s.m,
        "autoencrypt_signed_total{method=\"smime\"} 1"
    ));
    assert!(counter(
        &s.m,
        "autoencrypt_encrypted_total{method=\"smime\"} 1"
    ));

    // The same with OpenPGP: both@ to pgp@ (pgp@ has no S/MIME key).
    let msg = Sent::plain("both@autoencrypt.test", "pgp@autoencrypt.test");
    let (_, out) = send(
        &s.m,
        Some("both"),
        "both@autoencrypt.test",
        &["pgp@autoencrypt.test"],
        &msg,
    )
    .await;
    let armored = check_pgp_mime_output(&msg.raw(), &out);
    let gpg = Gpg::new();
    gpg.import(&std::fs::read(env.user("pgp").pgp_secret.as_ref().unwrap()).unwrap());
    gpg.import(&std::fs::read(env.user("both").pgp_public.as_ref().unwrap()).unwrap());
    let payload = gpg.decrypt(&armored).unwrap();
    let (part, sig) = signed_parts(&payload);
    let (_, sig) = signing::header_and_body(&sig);
    gpg.verify_detached(sig, &part)
        .expect("the decrypted payload verifies");
    assert!(counter(
        &s.m,
        "autoencrypt_signed_total{method=\"openpgp\"} 1"
    ));
}

/// Who is not signed, each counted: no AUTH, a login the map does not
/// allow for the From: address, a From: without a key, a message the
/// client signed already. Each passes unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_or_not_allowed_mail_is_not_signed() {
    let env = DnsEnv::start();
    let s = start(&env).await;
    let msg = Sent::plain("smime@autoencrypt.test", "rcpt@example.net");
    let raw = msg.raw();
    for (login, from, reason) in [
        (None, "smime@autoencrypt.test", "not_authenticated"),
        (Some("pgp"), "smime@autoencrypt.test", "login_not_allowed"),
        (
            Some("smime@autoencrypt.test"),
            "smime@autoencrypt.test",
            "login_not_allowed",
        ),
    ] {
        let (status, out) = send(&s.m, login, from, &["rcpt@example.net"], &msg).await;
        assert_eq!(status, Status::Continue, "{reason}");
        assert_eq!(out, raw, "{reason}: unchanged");
        assert!(
            counter(
                &s.m,
                &format!("autoencrypt_unsigned_total{{reason=\"{reason}\"}} 1")
            ) || counter(
                &s.m,
                &format!("autoencrypt_unsigned_total{{reason=\"{reason}\"}} 2")
            ),
            "{reason}"
        );
    }
    // A From: of another user than the login's (the map allows pgp@ only).
    let other = Sent::plain("both@autoencrypt.test", "rcpt@example.net");
    let (_, out) = send(
        &s.m,
        Some("pgp"),
        "pgp@autoencrypt.test",
        &["rcpt@example.net"],
        &other,
    )
    .await;
    assert_eq!(out, other.raw());
    assert!(counter(
        &s.m,
        "autoencrypt_unsigned_total{reason=\"login_not_allowed\"} 3"
    ));
    // Two From: fields.
    let mut two = Sent::plain("smime@autoencrypt.test", "rcpt@example.net");
    two.headers
        .push(("From".into(), " <both@autoencrypt.test>".into()));
    let (_, out) = send(
        &s.m,
        Some("smime"),
        "smime@autoencrypt.test",
        &["rcpt@example.net"],
        &two,
    )
    .await;
    assert_eq!(out, two.raw());
    assert!(counter(
        &s.m,
        "autoencrypt_unsigned_total{reason=\"no_author\"} 1"
    ));
    // An expired certificate is in the key directory: not used.
    let expired = Sent::plain("expired@autoencrypt.test", "rcpt@example.net");
    let (_, out) = send(
        &s.m,
        Some("expired"),
        "expired@autoencrypt.test",
        &["rcpt@example.net"],
        &expired,
    )
    .await;
    assert_eq!(out, expired.raw());
    assert!(counter(
        &s.m,
        "autoencrypt_unsigned_total{reason=\"key_expired\"} 1"
    ));
    assert!(counter(
        &s.m,
        "autoencrypt_signed_total{method=\"smime\"} 0"
    ));
}

/// `sign_required`: a message the server cannot sign is refused with
/// `550 5.7.1` naming why; one it can sign goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_that_requires_signing_refuses_what_cannot_be_signed() {
    let env = DnsEnv::start();
    let s = start(&env).await;
    let msg = Sent::plain("smime@autoencrypt.test", "strict@example.net");
    let (status, _) = send(
        &s.m,
        None,
        "smime@autoencrypt.test",
        &["strict@example.net"],
        &msg,
    )
    .await;
    let Status::Reject {
        message: Some(text),
    } = status
    else {
        panic!("not refused: {status:?}");
    };
    let text = text.to_string_lossy().into_owned();
    assert!(
        text.starts_with("550 5.7.1 ") && text.contains("did not authenticate"),
        "{text}"
    );
    // pgp@ has no S/MIME key, and the rule signs with S/MIME only.
    let msg = Sent::plain("pgp@autoencrypt.test", "strict@example.net");
    let (status, _) = send(
        &s.m,
        Some("pgp"),
        "pgp@autoencrypt.test",
        &["strict@example.net"],
        &msg,
    )
    .await;
    assert!(matches!(status, Status::Reject { .. }), "{status:?}");
    assert!(counter(
        &s.m,
        "autoencrypt_unsigned_total{reason=\"no_key\"} 1"
    ));
    let msg = Sent::plain("smime@autoencrypt.test", "strict@example.net");
    let (status, out) = send(
        &s.m,
        Some("smime"),
        "smime@autoencrypt.test",
        &["strict@example.net"],
        &msg,
    )
    .await;
    assert_eq!(status, Status::Continue);
    assert!(header_of(&out).contains("multipart/signed"));
}

/// A key the group may read stops a reload with the file's name; the
/// running keys stay in force (the next message is still signed). Fixed,
/// the reload applies (a login map added takes effect without restart).
#[test]
fn a_bad_key_directory_is_refused_at_reload_and_the_old_keys_stay() {
    use std::os::unix::fs::PermissionsExt;
    let env = DnsEnv::start();
    let keys = signing::key_dir(&env);
    let policy = tempfile::tempdir().unwrap();
    std::fs::write(policy.path().join("10.toml"), signing::POLICY).unwrap();
    // Beside the policy directory, not in it (it reads every *.toml).
    let etc = tempfile::tempdir().unwrap();
    let cfg = etc.path().join("c.toml");
    let map = etc.path().join("logins");
    std::fs::write(&map, "alias: smime@autoencrypt.test\n").unwrap();
    let write_cfg = |login_map: &str| {
        std::fs::write(
            &cfg,
            format!(
                "policy_dir = {:?}\nlocal_domains = [\"local.test\"]\nauthserv_id = \"{}\"\n\
                 [dns]\nmode = \"trust-ad\"\nresolvers = [\"{}\"]\n[harvest]\nenabled = false\n[signing]\nkey_dir = {:?}\n\
                 login_map = {:?}\n",
                policy.path(),
                signing::AUTHSERV,
                env.resolver(),
                keys.path(),
                login_map,
            ),
        )
        .unwrap();
    };
    write_cfg("");
    let loaded = autoencrypt_milter::config::Config::load(
        &cfg,
        autoencrypt_milter::config::FileRequirement::Required,
    )
    .unwrap();
    let m = milter::InProcessMilter::on_thread_reloading(loaded.config, cfg.clone(), None);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let msg = Sent::plain("smime@autoencrypt.test", "rcpt@example.net");
    let from = "smime@autoencrypt.test";
    let signed_as = |login: &str| {
        let (_, out) = rt.block_on(send(&m, Some(login), from, &["rcpt@example.net"], &msg));
        header_of(&out).contains("multipart/signed")
    };
    // No login map: the login is the address.
    assert!(signed_as(from));
    assert!(!signed_as("alias"));

    let key = keys.path().join("smime@autoencrypt.test.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    write_cfg(map.to_str().unwrap());
    let e = m
        .shared
        .reload()
        .expect_err("a group-readable key must stop the reload");
    let text = e.to_string();
    assert!(
        text.contains("signing.key_dir") && text.contains("smime@autoencrypt.test.key"),
        "{text}"
    );
    // The running configuration: the key, and no login map.
    assert!(signed_as(from));
    assert!(!signed_as("alias"));

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    m.shared.reload().expect("fixed, the reload applies");
    assert!(signed_as("alias"), "the new login map is in force");
    assert!(
        !signed_as(from),
        "and the login is no longer its own address"
    );
}
