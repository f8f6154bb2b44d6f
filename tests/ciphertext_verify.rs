//! Issue 9.1 through the `encrypt` binary: only verified ciphertext passes
//! unchanged. Each hostile input of tests/fixtures/ciphertext/ (it looks
//! encrypted, or part of it is, but secret text is readable) is encrypted,
//! and decrypts with `openssl cms` / `gpg` to the expected inner entity;
//! each genuine ciphertext (committed, and made fresh by gpg / openssl) is
//! copied byte for byte.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use autoencrypt_milter::message::Message;
use autoencrypt_milter::message::{EncryptedKind, Verification, verify};
use common::*;

const ALICE: &str = "alice@example.org";

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ciphertext")
}

/// The fixtures whose name starts with `prefix`, sorted, with contents.
fn fixtures(prefix: &str) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(fixture_dir())
        .expect("fixture directory")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "eml"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .filter(|(n, _)| n.starts_with(prefix))
        .collect();
    v.sort();
    assert!(v.len() >= 6, "too few {prefix} fixtures: {}", v.len());
    v
}

fn verify_raw(raw: &[u8]) -> Verification {
    let m = Message::parse(raw);
    verify(&m.headers, &mut &raw[m.body_offset..])
}

fn expected_kind(name: &str) -> EncryptedKind {
    if name.contains("pgp-mime") {
        EncryptedKind::PgpMime
    } else if name.contains("inline") {
        EncryptedKind::InlinePgp
    } else if name.contains("p7m") {
        EncryptedKind::P7mFile
    } else {
        EncryptedKind::Smime
    }
}

/// The verifier itself on the corpus, LF and CRLF.
#[test]
fn fixture_corpus_verifies_as_named() {
    for (name, raw) in fixtures("genuine-") {
        for input in [raw.clone(), to_crlf(&raw)] {
            assert_eq!(
                verify_raw(&input),
                Verification::Verified(expected_kind(&name)),
                "{name}"
            );
        }
    }
    for (name, raw) in fixtures("hostile-") {
        for input in [raw.clone(), to_crlf(&raw)] {
            assert!(
                matches!(verify_raw(&input), Verification::NotCiphertext(_)),
                "{name}: {:?}",
                verify_raw(&input)
            );
        }
    }
}

/// A key directory with an S/MIME certificate and an OpenPGP key for Alice.
struct Setup {
    s: Scratch,
    cert: SmimeId,
    gpg: Gpg,
    fpr: String,
}

impl Setup {
    fn new() -> Self {
        let s = Scratch::new();
        let cert = SmimeId::generate(&s.work, "alice", &CertSpec::good(ALICE, KeyKind::Rsa));
        cert.install_pem(&s.keys, ALICE);
        let gpg = Gpg::new();
        let fpr = gpg.generate(ALICE, PgpKind::Cv25519, "0", None);
        gpg.install(&fpr, &s.keys, ALICE, true);
        Setup { s, cert, gpg, fpr }
    }

    /// `input` is encrypted with both methods, decrypts to the expected
    /// inner entity, and no `SECRET` marker is readable in the output.
    fn assert_encrypted(&self, name: &str, input: &[u8]) {
        let expected = expected_inner_entity(input);
        for method in ["smime", "openpgp"] {
            let run = run_encrypt(input, &[ALICE], &self.s.keys, &["--method", method]);
            run.assert_success(name);
            assert!(
                !run.stderr.contains("already encrypted"),
                "{name} ({method}): {}",
                run.stderr
            );
            assert!(
                find(&run.stdout, b"SECRET").is_none(),
                "{name} ({method}): secret readable in the output: {}",
                escape(&run.stdout, 600)
            );
            let decrypted = if method == "smime" {
                check_smime_output(input, &run.stdout, false);
                smime_decrypt(&self.s, &run.stdout, "SMIME", &self.cert)
                    .unwrap_or_else(|e| panic!("{name}: {e}"))
            } else {
                let armored = check_pgp_mime_output(input, &run.stdout);
                self.gpg
                    .decrypt(&armored)
                    .unwrap_or_else(|e| panic!("{name}: {e}"))
            };
            assert_bytes_eq(&decrypted, &expected, &format!("{name} ({method})"));
        }
    }

    fn assert_unchanged(&self, name: &str, input: &[u8]) {
        for extra in [&[][..], &["--method", "smime"], &["--method", "openpgp"]] {
            let run = run_encrypt(input, &[ALICE], &self.s.keys, extra);
            run.assert_success(name);
            assert!(
                run.stdout == input,
                "{name}: verified ciphertext must be copied byte-identical\n{}",
                escape(&run.stdout, 400)
            );
            assert!(
                run.stderr.contains("already encrypted (verified"),
                "{name}: {}",
                run.stderr
            );
        }
    }
}

#[test]
fn hostile_look_alikes_are_encrypted() {
    let p = Setup::new();
    for (name, raw) in fixtures("hostile-") {
        p.assert_encrypted(&name, &raw);
    }
    // CRLF input takes the same paths.
    let name = "hostile-pgp-mime-plain-parts.eml";
    let raw = std::fs::read(fixture_dir().join(name)).unwrap();
    p.assert_encrypted(name, &to_crlf(&raw));
}

/// A candidate refused by verification says so on stderr.
#[test]
fn refused_candidate_is_logged_with_its_reason() {
    let p = Setup::new();
    let raw = std::fs::read(fixture_dir().join("hostile-pkcs7-enveloped-over-plain.eml")).unwrap();
    let run = run_encrypt(&raw, &[ALICE], &p.s.keys, &["--method", "smime"]);
    run.assert_success("enveloped-data over plain text");
    assert!(
        run.stderr.contains("looks encrypted (S/MIME) but is not (")
            && run.stderr.contains("encrypting"),
        "{}",
        run.stderr
    );
}

#[test]
fn committed_genuine_ciphertext_passes_unchanged() {
    let p = Setup::new();
    for (name, raw) in fixtures("genuine-") {
        p.assert_unchanged(&name, &raw);
        p.assert_unchanged(&name, &to_crlf(&raw));
    }
}

const HEADERS: &str = "From: Sender <sender@example.net>\nTo: Alice <alice@example.org>\n\
Subject: fresh ciphertext\nMIME-Version: 1.0\n";

fn pgp_mime(armored: &[u8]) -> Vec<u8> {
    let mut m = HEADERS.as_bytes().to_vec();
    m.extend_from_slice(
        b"Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"x\"\n\n\
--x\nContent-Type: application/pgp-encrypted\n\nVersion: 1\n\n--x\n\
Content-Type: application/octet-stream\n\n",
    );
    m.extend_from_slice(armored);
    m.extend_from_slice(b"\n--x--\n");
    m
}

/// gpg output for data on a pipe (length unknown: partial body lengths).
fn gpg_pipe(gpg: &Gpg, fpr: &str, data: &[u8], armor: bool) -> Vec<u8> {
    let mut cmd = gpg.cmd();
    if armor {
        cmd.arg("--armor");
    }
    let mut child = cmd
        .args(["--recipient", fpr, "--encrypt"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run gpg --encrypt");
    let mut stdin = child.stdin.take().unwrap();
    let data = data.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    assert!(out.status.success(), "gpg --encrypt failed");
    out.stdout
}

#[test]
fn fresh_large_genuine_ciphertext_passes_unchanged() {
    let p = Setup::new();
    let big = pseudo_random_bytes(300_000, 9);
    // Armored by gpg, from a pipe: partial body lengths.
    let armored = gpg_pipe(&p.gpg, &p.fpr, &big, true);
    p.assert_unchanged("gpg PGP/MIME, partial lengths", &pgp_mime(&armored));
    let mut inline = HEADERS.as_bytes().to_vec();
    inline.extend_from_slice(b"Content-Type: text/plain\n\n");
    inline.extend_from_slice(&armored);
    p.assert_unchanged("gpg inline armored text", &inline);
    // A binary gpg message, armored here without the optional checksum.
    let binary = gpg_pipe(&p.gpg, &p.fpr, &big, false);
    let mut ours = b"-----BEGIN PGP MESSAGE-----\n\n".to_vec();
    ours.extend(base64_lines(&binary, "\n"));
    ours.extend_from_slice(b"-----END PGP MESSAGE-----\n");
    p.assert_unchanged("gpg binary message", &pgp_mime(&ours));
    // Cut one byte off the binary message: not ciphertext any more.
    let mut cut = b"-----BEGIN PGP MESSAGE-----\n\n".to_vec();
    cut.extend(base64_lines(&binary[..binary.len() - 1], "\n"));
    cut.extend_from_slice(b"-----END PGP MESSAGE-----\n");
    let cut = pgp_mime(&cut);
    let run = run_encrypt(&cut, &[ALICE], &p.s.keys, &["--method", "openpgp"]);
    run.assert_success("truncated binary");
    assert!(run.stderr.contains("truncated"), "{}", run.stderr);
    assert_bytes_eq(
        &p.gpg
            .decrypt(&check_pgp_mime_output(&cut, &run.stdout))
            .unwrap(),
        &expected_inner_entity(&cut),
        "truncated binary re-encrypted",
    );

    // S/MIME by openssl with -stream: indefinite lengths, chunked content.
    let entity = [
        b"Content-Type: application/octet-stream\r\n\r\n".as_slice(),
        &big,
    ]
    .concat();
    for cipher in ["aes-256-cbc", "aes-256-gcm"] {
        let input = p.s.file(&format!("stream-in-{cipher}"));
        std::fs::write(&input, &entity).unwrap();
        let out = std::process::Command::new("openssl")
            .args([
                "cms",
                "-encrypt",
                "-binary",
                "-stream",
                &format!("-{cipher}"),
                "-in",
            ])
            .arg(&input)
            .arg(&p.cert.cert_path)
            .output()
            .expect("openssl cms -encrypt -stream");
        assert!(out.status.success());
        let mut msg = HEADERS.replace("MIME-Version: 1.0\n", "").into_bytes();
        msg.extend_from_slice(&out.stdout);
        p.assert_unchanged(&format!("openssl -stream {cipher}"), &msg);
    }
}

/// Every truncation of a genuine ciphertext that removes more than
/// trailing white space fails verification; flipped bytes never panic.
#[test]
fn truncated_genuine_ciphertext_never_verifies() {
    for (name, raw) in fixtures("genuine-") {
        let m = Message::parse(&raw);
        let body = &raw[m.body_offset..];
        let whole = body.trim_ascii_end();
        for cut in 0..body.len() {
            let part = &body[..cut];
            let v = verify(&m.headers, &mut &part[..]);
            if part.trim_ascii_end() != whole {
                assert!(
                    !matches!(v, Verification::Verified(_)),
                    "{name}: cut at {cut} of {} still verifies",
                    body.len()
                );
            }
        }
        for i in 0..body.len() {
            let mut flipped = body.to_vec();
            flipped[i] ^= 0x41;
            let _ = verify(&m.headers, &mut &flipped[..]);
        }
    }
}
