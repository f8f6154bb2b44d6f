//! The offline `encrypt` command on what surrounds the content: fields
//! that must not stay readable outside (every `Content-*` field moves
//! inside), and mbox input whose first line is a `From ` separator.
//!
//! Each output is decrypted with `openssl cms` / `gpg` and compared byte
//! for byte with the independently computed inner entity.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;

const ALICE: &str = "alice@example.org";

/// A message whose non-structural content fields carry secrets.
const LEAKY: &[u8] = b"From: bob@example.net\r\n\
To: alice@example.org\r\n\
Subject: quarterly\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
Content-Location: https://intranet.example.net/SECRET-LOCATION/q3.txt\r\n\
Content-Language: x-SECRET-LANGUAGE\r\n\
content-x-custom: SECRET-CUSTOM\r\n\
Content-Base: https://SECRET-BASE.example.net/\r\n\
Content-Location: SECRET-SECOND-LOCATION\r\n\
\r\n\
The numbers are up.\r\n";

const SECRETS: [&[u8]; 5] = [
    b"SECRET-LOCATION",
    b"SECRET-LANGUAGE",
    b"SECRET-CUSTOM",
    b"SECRET-BASE",
    b"SECRET-SECOND-LOCATION",
];

fn assert_outer_has_no_secret(output: &[u8], what: &str) {
    let (outer, _) = split_message(output);
    for f in &outer {
        for s in SECRETS {
            assert!(
                find(&f.raw, s).is_none(),
                "{what}: outer field {} still carries {:?}",
                f.show(),
                String::from_utf8_lossy(s)
            );
        }
    }
}

#[test]
fn smime_moves_every_content_field_inside() {
    let s = Scratch::new();
    let id = SmimeId::generate(&s.work, "alice", &CertSpec::good(ALICE, KeyKind::Rsa));
    id.install_pem(&s.keys, ALICE);
    let run = run_encrypt(LEAKY, &[ALICE], &s.keys, &["--method", "smime"]);
    run.assert_success("leaky content fields, S/MIME");
    assert_outer_has_no_secret(&run.stdout, "S/MIME");
    let der = check_smime_output(LEAKY, &run.stdout, false);
    let inner = smime_decrypt(&s, &der, "DER", &id).unwrap();
    assert_bytes_eq(&inner, &expected_inner_entity(LEAKY), "S/MIME inner entity");
    for secret in SECRETS {
        assert!(find(&inner, secret).is_some(), "moved inside, not dropped");
    }
}

#[test]
fn openpgp_moves_every_content_field_inside() {
    let s = Scratch::new();
    let gpg = Gpg::new();
    let fpr = gpg.generate(ALICE, PgpKind::Cv25519, "0", None);
    gpg.install(&fpr, &s.keys, ALICE, true);
    let run = run_encrypt(LEAKY, &[ALICE], &s.keys, &["--method", "openpgp"]);
    run.assert_success("leaky content fields, OpenPGP");
    assert_outer_has_no_secret(&run.stdout, "OpenPGP");
    let armored = check_pgp_mime_output(LEAKY, &run.stdout);
    let inner = gpg.decrypt(&armored).unwrap();
    assert_bytes_eq(
        &inner,
        &expected_inner_entity(LEAKY),
        "OpenPGP inner entity",
    );
}

const SEPARATOR: &[u8] = b"From bob@example.net Tue Dec  1 10:00:00 2026\n";
const MBOX_MESSAGE: &[u8] = b"From: bob@example.net\n\
To: alice@example.org\n\
Subject: from an mbox\n\
Content-Type: text/plain\n\
\n\
>From the archive.\n";

fn mbox_input() -> Vec<u8> {
    [SEPARATOR, MBOX_MESSAGE].concat()
}

#[test]
fn mbox_separator_stays_first_and_the_header_stays_outside_smime() {
    let s = Scratch::new();
    let id = SmimeId::generate(&s.work, "alice", &CertSpec::good(ALICE, KeyKind::Rsa));
    id.install_pem(&s.keys, ALICE);
    let run = run_encrypt(&mbox_input(), &[ALICE], &s.keys, &["--method", "smime"]);
    run.assert_success("mbox input, S/MIME");
    let out = run
        .stdout
        .strip_prefix(SEPARATOR)
        .unwrap_or_else(|| panic!("separator not kept first: {}", escape(&run.stdout, 120)));
    // From, To and Subject stay outside, byte for byte.
    let der = check_smime_output(MBOX_MESSAGE, out, false);
    let inner = smime_decrypt(&s, &der, "DER", &id).unwrap();
    assert_bytes_eq(
        &inner,
        &expected_inner_entity(MBOX_MESSAGE),
        "inner entity of the mbox message",
    );
}

#[test]
fn mbox_separator_stays_first_and_the_header_stays_outside_openpgp() {
    let s = Scratch::new();
    let gpg = Gpg::new();
    let fpr = gpg.generate(ALICE, PgpKind::Cv25519, "0", None);
    gpg.install(&fpr, &s.keys, ALICE, true);
    let run = run_encrypt(&mbox_input(), &[ALICE], &s.keys, &["--method", "openpgp"]);
    run.assert_success("mbox input, OpenPGP");
    let out = run
        .stdout
        .strip_prefix(SEPARATOR)
        .unwrap_or_else(|| panic!("separator not kept first: {}", escape(&run.stdout, 120)));
    let armored = check_pgp_mime_output(MBOX_MESSAGE, out);
    let inner = gpg.decrypt(&armored).unwrap();
    assert_bytes_eq(
        &inner,
        &expected_inner_entity(MBOX_MESSAGE),
        "inner entity of the mbox message",
    );
}
