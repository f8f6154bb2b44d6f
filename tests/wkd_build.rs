//! `autoencrypt-milter wkd build`, run as the real binary on keys made by
//! gpg: the file names are computed here independently (SHA-1 by OpenSSL,
//! z-base-32 by hand, checked against the draft's example), and what was
//! written is read back by gpg.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed step is a failed test"
)]

mod common;

use std::path::Path;
use std::process::Command;

use common::{Gpg, PgpKind};

/// z-base-32, as draft-koch-openpgp-webkey-service §3.1 defines it.
fn zbase32(data: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ybndrfg8ejkmcpqxot1uwisza345h769";
    let bits: Vec<u8> = data
        .iter()
        .flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1))
        .collect();
    bits.chunks(5)
        .map(|c| {
            let v = c.iter().fold(0usize, |acc, b| (acc << 1) | usize::from(*b));
            let v = v << (5 - c.len());
            char::from(ALPHABET[v])
        })
        .collect()
}

fn hash(local: &str) -> String {
    zbase32(&openssl::sha::sha1(local.to_ascii_lowercase().as_bytes()))
}

fn build(cfg: &Path, keys: &Path, out: &Path) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_autoencrypt-milter"))
        .arg("--config")
        .arg(cfg)
        .args(["wkd", "build", "--key-dir"])
        .arg(keys)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// gpg's view of a key file: its `uid` lines (`--with-colons`).
fn uids(gpg: &Gpg, file: &Path) -> Vec<String> {
    let o = gpg
        .cmd()
        .args(["--with-colons", "--show-keys"])
        .arg(file)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.starts_with("uid:"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_test_hash_is_the_drafts() {
    assert_eq!(hash("Joe.Doe"), "iy9q119eutrkn8s1mk4r39qejnbu3n5q");
}

#[test]
fn publishes_usable_local_keys_with_only_their_address() {
    common::require_tools();
    let gpg = Gpg::new();
    let d = tempfile::tempdir().unwrap();
    let keys = d.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    let alice = gpg.generate("alice@example.org", PgpKind::Cv25519, "0", None);
    gpg.install(&alice, &keys, "alice@example.org", true);
    // Carol's key also names another address: that user ID is not
    // published.
    let carol = gpg.generate("carol@example.org", PgpKind::Cv25519, "0", None);
    let o = gpg
        .cmd()
        .args([
            "--quick-add-uid",
            &carol,
            "Carol Private <carol@private.example>",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    gpg.install(&carol, &keys, "Carol@example.org", false);
    // Expired, and not ours: left out, with the reason.
    let dave = gpg.generate(
        "dave@example.org",
        PgpKind::Cv25519,
        "1d",
        Some("20200101T000000!"),
    );
    gpg.install(&dave, &keys, "dave@example.org", true);
    let bob = gpg.generate("bob@elsewhere.example", PgpKind::Cv25519, "0", None);
    gpg.install(&bob, &keys, "bob@elsewhere.example", true);
    // Not a key file at all: ignored.
    std::fs::write(keys.join("README"), "not a key").unwrap();

    let cfg = d.path().join("c.toml");
    std::fs::write(&cfg, "local_domains = [\"example.org\"]\n").unwrap();
    let out = d.path().join("wkd");
    let (code, stdout, stderr) = build(&cfg, &keys, &out);
    assert_eq!(code, 0, "{stderr}");

    let advanced = out.join("advanced/.well-known/openpgpkey/example.org");
    let direct = out.join("direct/example.org/.well-known/openpgpkey");
    assert!(advanced.join("policy").is_file());
    assert!(direct.join("policy").is_file());
    for (local, fpr) in [("alice", &alice), ("carol", &carol)] {
        for file in [
            advanced.join("hu").join(hash(local)),
            direct.join("hu").join(hash(local)),
        ] {
            let shown = gpg
                .cmd()
                .args(["--with-colons", "--show-keys"])
                .arg(&file)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&shown.stdout);
            assert!(text.contains(fpr.as_str()), "{}: {text}", file.display());
            // Binary, as the draft asks: no armor.
            let data = std::fs::read(&file).unwrap();
            assert!(!data.starts_with(b"-----BEGIN"), "{}", file.display());
            assert!(!text.contains("sec:"), "no secret key material");
        }
    }
    let carol_uids = uids(&gpg, &advanced.join("hu").join(hash("carol")));
    assert_eq!(carol_uids.len(), 1, "{carol_uids:?}");
    assert!(
        carol_uids[0].contains("carol@example.org"),
        "{carol_uids:?}"
    );
    assert!(!carol_uids[0].contains("private.example"));
    // Dave (expired) and Bob (another domain) are not published.
    assert!(!advanced.join("hu").join(hash("dave")).exists());
    assert!(
        !out.join("advanced/.well-known/openpgpkey/elsewhere.example")
            .exists()
    );
    assert!(stdout.contains("dave@example.org.asc: expired"), "{stdout}");
    assert!(
        stdout.contains("bob@elsewhere.example.asc: elsewhere.example is not a local domain"),
        "{stdout}"
    );
    assert!(
        stdout.contains("published alice@example.org: advanced/"),
        "{stdout}"
    );

    // The tree is replaced as a whole: a key taken out of the directory is
    // no longer published.
    std::fs::remove_file(keys.join("alice@example.org.asc")).unwrap();
    let (code, _, stderr) = build(&cfg, &keys, &out);
    assert_eq!(code, 0, "{stderr}");
    assert!(!advanced.join("hu").join(hash("alice")).exists());
    assert!(advanced.join("hu").join(hash("carol")).exists());
    let leftovers: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("wkd."))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn without_local_domains_or_a_key_directory_it_refuses() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("c.toml");
    std::fs::write(&cfg, "").unwrap();
    let (code, _, stderr) = build(&cfg, d.path(), &d.path().join("out"));
    assert_eq!(code, 1);
    assert!(stderr.contains("local_domains is empty"), "{stderr}");
    std::fs::write(&cfg, "local_domains = [\"example.org\"]\n").unwrap();
    let (code, _, stderr) = build(&cfg, &d.path().join("missing"), &d.path().join("out"));
    assert_eq!(code, 1);
    assert!(stderr.contains("reading the key directory"), "{stderr}");
    assert!(!d.path().join("out").exists());
    // An output that is a file is not replaced.
    std::fs::write(d.path().join("out"), "mine").unwrap();
    let (code, _, stderr) = build(&cfg, d.path(), &d.path().join("out"));
    assert_eq!(code, 1);
    assert!(stderr.contains("exists and is not a directory"), "{stderr}");
    assert_eq!(std::fs::read(d.path().join("out")).unwrap(), b"mine");
}

/// The signing key directory (`signing.key_dir`) holds `<address>.sec.asc`
/// secret keys: `wkd build --key-dir` on it publishes their public halves
/// only, and `record --openpgpkey` prints no secret either.
#[test]
fn a_signing_key_directory_publishes_public_halves_only() {
    common::require_tools();
    let gpg = Gpg::new();
    let d = tempfile::tempdir().unwrap();
    let keys = d.path().join("signing");
    std::fs::create_dir(&keys).unwrap();
    let erin = gpg.generate("erin@example.org", PgpKind::Cv25519, "0", None);
    let secret = gpg
        .cmd()
        .args(["--armor", "--export-secret-keys", &erin])
        .output()
        .unwrap();
    assert!(secret.status.success());
    assert!(String::from_utf8_lossy(&secret.stdout).contains("PRIVATE KEY BLOCK"));
    let file = keys.join("erin@example.org.sec.asc");
    std::fs::write(&file, &secret.stdout).unwrap();

    let cfg = d.path().join("c.toml");
    std::fs::write(&cfg, "local_domains = [\"example.org\"]\n").unwrap();
    let out = d.path().join("wkd");
    let (code, stdout, stderr) = build(&cfg, &keys, &out);
    assert_eq!(code, 0, "{stderr}");
    let published = out
        .join("advanced/.well-known/openpgpkey/example.org/hu")
        .join(hash("erin"));
    assert!(published.is_file(), "{stdout}");
    let packets = gpg
        .cmd()
        .args(["--list-packets"])
        .arg(&published)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&packets.stdout);
    assert!(text.contains(":public key packet:"), "{text}");
    assert!(
        !text.contains("secret"),
        "secret key material published: {text}"
    );

    let o = Command::new(env!("CARGO_BIN_EXE_autoencrypt-milter"))
        .args(["record", "--openpgpkey"])
        .arg(&file)
        .arg("erin@example.org")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    let b64 = text
        .lines()
        .find_map(|l| l.split(" IN OPENPGPKEY ").nth(1))
        .expect("an OPENPGPKEY line");
    let der = base64_decode(b64.trim());
    let rdata = d.path().join("rdata.pgp");
    std::fs::write(&rdata, der).unwrap();
    let packets = gpg
        .cmd()
        .arg("--list-packets")
        .arg(&rdata)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&packets.stdout);
    assert!(text.contains(":public key packet:"), "{text}");
    assert!(
        !text.contains("secret"),
        "secret key material in the record: {text}"
    );
}

fn base64_decode(s: &str) -> Vec<u8> {
    let o = Command::new("openssl")
        .args(["base64", "-d", "-A"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(s.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    o.stdout
}
