//! The signing formats of issue 15 checked by independent verifiers,
//! byte for byte: entities signed through
//! `autoencrypt_milter::signing::sign`, wrapped in a small message, then
//!
//! * S/MIME: `openssl cms -verify` (test CA, `-binary`; its content
//!   output must be the transport-safe entity exactly), NSS `cmsutil -D`
//!   on the detached signature, `openssl cms -cmsout -print` for the
//!   digest (SHA-256), the signed attributes and the chain;
//! * OpenPGP: `gpg --verify` (`GOODSIG`, SHA-256 in `VALIDSIG`) and
//!   `rnp --verify` on `signature.asc` against the signed part;
//! * a changed byte in the signed part fails each of them;
//! * Python's email package decodes every part of the safe entity to the
//!   original octets.
//!
//! A missing tool fails the test (with the tool's name); nothing skips.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

#[path = "signing_formats/cases.rs"]
mod cases;
#[path = "signing_formats/support.rs"]
mod support;

use std::path::Path;
use std::sync::Arc;

use autoencrypt_milter::signing::safe::transport_safe;
use autoencrypt_milter::signing::{OpenPgpSigner, SignError, Signer, SmimeSigner, sign};
use cases::{Case, cases};
use sequoia_openpgp::cert::{CertBuilder, CipherSuite};
use sequoia_openpgp::serialize::SerializeInto;
use support::{Alg, Id, arg, certificate, nss_db, python_leaves, run, run_ok, signed_parts};

/// The signed message as it would leave: a small outer header, then the
/// `multipart/signed` entity.
fn message(case: &Case, signer: &Signer) -> Vec<u8> {
    let signed = sign(&case.entity, signer).unwrap_or_else(|e| panic!("{}: {e}", case.name));
    let mut msg = b"From: Alice <alice@example.org>\r\nTo: Bob <bob@example.net>\r\n\
        Subject: signed\r\nDate: Wed, 02 Dec 2026 12:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        .to_vec();
    msg.extend_from_slice(&signed.to_entity());
    let parts = signed_parts(&msg);
    let safe = transport_safe(&case.entity).unwrap();
    assert!(
        parts.signed == *safe,
        "{}: the signed part is the safe entity",
        case.name
    );
    msg
}

/// The same message with one octet of the signed part's body changed.
fn tampered(msg: &[u8], safe_entity: &[u8]) -> Vec<u8> {
    let at = msg
        .windows(safe_entity.len())
        .position(|w| w == safe_entity)
        .expect("the entity in the message");
    let mut bad = msg.to_vec();
    let i = at + safe_entity.len() - 3;
    bad[i] ^= 0x01;
    bad
}

/// Keys, trust stores and scratch space of one test.
struct World {
    dir: tempfile::TempDir,
    ca: Id,
    rsa: Id,
    ec: Id,
    /// NSS database trusting the CA.
    db: String,
}

fn world() -> World {
    let dir = tempfile::Builder::new()
        .prefix("aesig")
        .tempdir_in("/tmp")
        .unwrap();
    let ca = certificate(dir.path(), "Test CA", Alg::Rsa, None, "");
    let rsa = certificate(
        dir.path(),
        "alice rsa",
        Alg::Rsa,
        Some(&ca),
        "alice@example.org",
    );
    let ec = certificate(
        dir.path(),
        "alice ec",
        Alg::Ec,
        Some(&ca),
        "alice@example.org",
    );
    let db = nss_db(&dir.path().join("nss"), &ca);
    World {
        dir,
        ca,
        rsa,
        ec,
        db,
    }
}

impl World {
    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn smime(&self, id: &Id) -> Signer {
        Signer::Smime(Arc::new(SmimeSigner {
            cert: id.cert.clone(),
            chain: vec![self.ca.cert.clone()],
            key: id.key.clone(),
        }))
    }

    /// Checks a signed S/MIME message with openssl and NSS; `good` says
    /// whether the signature must verify.
    fn smime_verifies(&self, msg: &[u8], good: bool) {
        let parts = signed_parts(msg);
        assert!(parts.content_type.starts_with(
            "multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=\""
        ));
        for field in [
            "Content-Type: application/pkcs7-signature; name=\"smime.p7s\"\r\n",
            "Content-Transfer-Encoding: base64\r\n",
            "Content-Disposition: attachment; filename=\"smime.p7s\"\r\n",
        ] {
            assert!(parts.signature_header.contains(field), "{field}");
        }
        let dir = self.path();
        let (eml, out, der, content) = (
            dir.join("msg.eml"),
            dir.join("out.bin"),
            dir.join("sig.der"),
            dir.join("content.bin"),
        );
        std::fs::write(&eml, msg).unwrap();
        let b64: String = String::from_utf8(parts.signature_body.clone())
            .unwrap()
            .split("\r\n")
            .collect();
        std::fs::write(&der, openssl::base64::decode_block(&b64).unwrap()).unwrap();
        std::fs::write(&content, &parts.signed).unwrap();
        // The message as a reader gets it, in openssl's default mode and
        // in binary mode with CRLF line ends (`-binary` alone reads LF
        // files: it would keep the CR of the CRLF before the delimiter);
        // and the detached signature over the exact octets.
        let ca = arg(&self.ca.pem);
        let smime = ["-inform", "SMIME", "-in", arg(&eml)];
        let detached = [
            "-inform",
            "DER",
            "-in",
            arg(&der),
            "-content",
            arg(&content),
        ];
        for (input, mode) in [
            (&smime[..], &[][..]),
            (&smime[..], &["-binary", "-crlfeol"][..]),
            (&detached[..], &["-binary"][..]),
        ] {
            let _ = std::fs::remove_file(&out);
            let mut args = vec!["cms", "-verify", "-CAfile", ca, "-out", arg(&out)];
            args.extend_from_slice(input);
            args.extend_from_slice(mode);
            let verify = run("openssl", &args, &[], b"");
            let stderr = String::from_utf8_lossy(&verify.stderr);
            assert_eq!(verify.status.success(), good, "openssl {args:?}: {stderr}");
            if good {
                assert!(
                    std::fs::read(&out).unwrap() == parts.signed,
                    "openssl {args:?}: the content differs"
                );
            }
        }
        let nss = run_ok(
            "cmsutil",
            &[
                "-D",
                "-d",
                &self.db,
                "-i",
                arg(&der),
                "-c",
                arg(&content),
                "-n",
                "-h",
                "2",
            ],
            &[],
        );
        let report = String::from_utf8_lossy(&nss.stdout);
        assert_eq!(
            report.contains("signer0.status=GoodSignature;"),
            good,
            "cmsutil: {report}"
        );
    }

    /// What `openssl cms -cmsout -print` shows of the last signature
    /// checked: SHA-256 only, the usual signed attributes, both
    /// certificates.
    fn smime_structure(&self, signer_cn: &str) {
        let der = self.path().join("sig.der");
        let printed = run_ok(
            "openssl",
            &[
                "cms",
                "-cmsout",
                "-print",
                "-inform",
                "DER",
                "-in",
                arg(&der),
            ],
            &[],
        );
        let text = String::from_utf8_lossy(&printed.stdout);
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        let digests: Vec<&str> = lines
            .windows(2)
            .filter(|w| w[0] == "digestAlgorithm:" || w[0] == "digestAlgorithms:")
            .map(|w| w[1])
            .collect();
        assert!(
            digests.len() == 2 && digests.iter().all(|d| d.starts_with("algorithm: sha256")),
            "{digests:?}\n{text}"
        );
        for attr in [
            "contentType",
            "messageDigest",
            "signingTime",
            "S/MIME Capabilities",
        ] {
            assert!(
                text.contains(&format!("object: {attr} (")),
                "no {attr}:\n{text}"
            );
        }
        assert_eq!(
            text.matches("cert_info:").count(),
            2,
            "signer and CA:\n{text}"
        );
        for cn in ["Test CA", signer_cn] {
            assert!(text.contains(&format!("subject: CN={cn}")), "{cn}:\n{text}");
        }
    }
}

/// An OpenPGP key and its public half imported into gpg and rnp homes.
struct Pgp {
    signer: Signer,
    gpg: std::path::PathBuf,
    rnp: std::path::PathBuf,
}

impl Pgp {
    fn new(dir: &Path, name: &str, suite: CipherSuite) -> Pgp {
        let (cert, _) = CertBuilder::general_purpose(["Alice <alice@example.org>"])
            .set_cipher_suite(suite)
            .generate()
            .unwrap();
        let public = dir.join(format!("{name}.pub.asc"));
        std::fs::write(&public, cert.armored().to_vec().unwrap()).unwrap();
        let (gpg, rnp) = (
            dir.join(format!("{name}-gpg")),
            dir.join(format!("{name}-rnp")),
        );
        std::fs::create_dir(&gpg).unwrap();
        std::fs::create_dir(&rnp).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::from_mode(0o700);
        std::fs::set_permissions(&gpg, mode).unwrap();
        run_ok(
            "gpg",
            &["--homedir", arg(&gpg), "--batch", "--import", arg(&public)],
            &[],
        );
        run_ok(
            "rnpkeys",
            &["--homedir", arg(&rnp), "--import", arg(&public)],
            &[],
        );
        Pgp {
            signer: Signer::OpenPgp(Arc::new(OpenPgpSigner { cert })),
            gpg,
            rnp,
        }
    }

    /// Checks a signed OpenPGP message with gpg and rnp.
    fn verifies(&self, dir: &Path, msg: &[u8], good: bool) {
        let parts = signed_parts(msg);
        assert!(parts.content_type.starts_with(
            "multipart/signed; micalg=pgp-sha256; protocol=\"application/pgp-signature\"; boundary=\""
        ));
        for field in [
            "Content-Type: application/pgp-signature; name=\"signature.asc\"\r\n",
            "Content-Description: OpenPGP digital signature\r\n",
            "Content-Disposition: attachment; filename=\"signature.asc\"\r\n",
        ] {
            assert!(parts.signature_header.contains(field), "{field}");
        }
        assert!(
            parts
                .signature_body
                .starts_with(b"-----BEGIN PGP SIGNATURE-----\r\n")
        );
        let (sig, content) = (dir.join("signature.asc"), dir.join("content"));
        std::fs::write(&sig, &parts.signature_body).unwrap();
        std::fs::write(&content, &parts.signed).unwrap();
        let out = run(
            "gpg",
            &[
                "--homedir",
                arg(&self.gpg),
                "--batch",
                "--status-fd",
                "1",
                "--verify",
                arg(&sig),
                arg(&content),
            ],
            &[],
            b"",
        );
        let status = String::from_utf8_lossy(&out.stdout);
        if good {
            assert!(status.contains("[GNUPG:] GOODSIG "), "gpg: {status}");
            let valid: Vec<&str> = status
                .lines()
                .find(|l| l.starts_with("[GNUPG:] VALIDSIG "))
                .expect("VALIDSIG")
                .split(' ')
                .collect();
            // Hash algorithm 8 is SHA-256; class 01 a text signature.
            assert_eq!((valid[9], valid[10]), ("8", "01"), "{status}");
        } else {
            assert!(status.contains("[GNUPG:] BADSIG "), "gpg: {status}");
        }
        let out = run(
            "rnp",
            &[
                "--homedir",
                arg(&self.rnp),
                "--verify",
                arg(&sig),
                "--source",
                arg(&content),
            ],
            &[],
            b"",
        );
        let report = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.success(), good, "rnp: {report}");
        if good {
            assert!(report.contains("Good signature"), "rnp: {report}");
        }
    }
}

impl Drop for Pgp {
    fn drop(&mut self) {
        let _ = run(
            "gpgconf",
            &["--homedir", arg(&self.gpg), "--kill", "all"],
            &[],
            b"",
        );
    }
}

#[test]
fn smime_rsa_and_ec_signatures_verify_with_openssl_and_nss() {
    let w = world();
    for (id, cn) in [(&w.rsa, "alice rsa"), (&w.ec, "alice ec")] {
        let signer = w.smime(id);
        for case in cases() {
            let msg = message(&case, &signer);
            w.smime_verifies(&msg, true);
            w.smime_structure(cn);
        }
    }
}

#[test]
fn openpgp_signatures_verify_with_gpg_and_rnp() {
    let w = world();
    for (name, suite) in [
        ("cv25519", CipherSuite::Cv25519),
        ("rsa", CipherSuite::RSA2k),
    ] {
        let pgp = Pgp::new(w.path(), name, suite);
        for case in cases() {
            let msg = message(&case, &pgp.signer);
            pgp.verifies(w.path(), &msg, true);
        }
    }
}

#[test]
fn a_changed_byte_in_the_signed_part_fails_every_verifier() {
    let w = world();
    let pgp = Pgp::new(w.path(), "cv25519", CipherSuite::Cv25519);
    for case in cases() {
        let safe = transport_safe(&case.entity).unwrap().into_owned();
        let msg = message(&case, &w.smime(&w.rsa));
        w.smime_verifies(&tampered(&msg, &safe), false);
        let msg = message(&case, &pgp.signer);
        pgp.verifies(w.path(), &tampered(&msg, &safe), false);
    }
}

#[test]
fn safe_entities_decode_to_the_original_parts() {
    for case in cases() {
        let safe = transport_safe(&case.entity).unwrap();
        assert_eq!(python_leaves(&safe), case.leaves, "{}", case.name);
        // 7-bit throughout, except header octets (the protected header
        // case has none): a downgrade has nothing to do.
        assert!(safe.is_ascii(), "{}", case.name);
    }
    // Already safe: not copied.
    let plain = &cases()[0].entity;
    assert!(matches!(
        transport_safe(plain),
        Ok(std::borrow::Cow::Borrowed(_))
    ));
}

#[test]
fn an_entity_that_cannot_be_made_safe_is_not_signed() {
    let w = world();
    let mislabelled = "Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n\
        JVBER\u{e9}\r\n";
    match sign(mislabelled.as_bytes(), &w.smime(&w.ec)) {
        Err(SignError::Unsafe(why)) => assert!(why.contains("base64"), "{why}"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("signed a mislabelled entity"),
    }
}
