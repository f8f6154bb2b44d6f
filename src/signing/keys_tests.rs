//! Tests of the signing key directory: what loads, and each refusal with
//! the file it names.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]

use std::os::unix::fs::PermissionsExt;

use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use openssl::pkey::PKey;
use sequoia_openpgp as pgp;

use super::*;

fn write(dir: &Path, name: &str, data: &[u8], mode: u32) {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn ec_key() -> PKey<openssl::pkey::Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
}

fn smime_pair(dir: &Path, addr: &str, key_mode: u32) {
    let key = ec_key();
    let cert = crate::fuzzing::session::certificate(&key, addr).unwrap();
    write(dir, &format!("{addr}.pem"), &cert, 0o644);
    write(
        dir,
        &format!("{addr}.key"),
        &key.private_key_to_pem_pkcs8().unwrap(),
        key_mode,
    );
}

fn pgp_key(addr: &str, with_secret: bool) -> Vec<u8> {
    use pgp::serialize::SerializeInto;
    let (cert, _) = pgp::cert::CertBuilder::general_purpose(Some(format!("<{addr}>")))
        .generate()
        .unwrap();
    if with_secret {
        cert.as_tsk().armored().to_vec().unwrap()
    } else {
        cert.armored().to_vec().unwrap()
    }
}

fn load_err(dir: &Path) -> String {
    match SigningKeys::load(dir) {
        Ok(_) => panic!("loaded"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn keys_load_by_address_and_method() {
    let d = tempfile::tempdir().unwrap();
    smime_pair(d.path(), "alice@example.org", 0o600);
    write(
        d.path(),
        "alice@example.org.sec.asc",
        &pgp_key("alice@example.org", true),
        0o600,
    );
    smime_pair(d.path(), "bob@example.org", 0o400);
    write(d.path(), "README", b"not a key", 0o644);
    write(d.path(), ".hidden.key", b"ignored", 0o644);
    let keys = SigningKeys::load(d.path()).unwrap();
    assert_eq!(keys.len(), 3);
    let alice = Address::parse("Alice@EXAMPLE.org").unwrap();
    assert_eq!(keys.methods(&alice), [Method::Smime, Method::OpenPgp]);
    assert!(keys.get(&alice, Method::Smime).is_some());
    let bob = Address::parse("bob@example.org").unwrap();
    assert!(keys.get(&bob, Method::OpenPgp).is_none());
    assert!(
        keys.get(&Address::parse("carol@example.org").unwrap(), Method::Smime)
            .is_none()
    );
}

#[test]
fn a_key_others_may_read_stops_the_load() {
    for mode in [0o640, 0o604, 0o660] {
        let d = tempfile::tempdir().unwrap();
        smime_pair(d.path(), "alice@example.org", mode);
        let e = load_err(d.path());
        assert!(
            e.contains("alice@example.org.key") && e.contains("readable by the milter's user only"),
            "{mode:o}: {e}"
        );
    }
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "p@example.org.sec.asc",
        &pgp_key("p@example.org", true),
        0o644,
    );
    assert!(load_err(d.path()).contains("mode 0644"));
}

#[test]
fn mismatched_missing_and_misnamed_files_are_named() {
    let d = tempfile::tempdir().unwrap();
    smime_pair(d.path(), "a@example.org", 0o600);
    // Another key under a's name.
    write(
        d.path(),
        "a@example.org.key",
        &ec_key().private_key_to_pem_pkcs8().unwrap(),
        0o600,
    );
    assert!(load_err(d.path()).contains("does not match the certificate"));

    let d = tempfile::tempdir().unwrap();
    write(d.path(), "b@example.org.key", b"x", 0o600);
    assert!(load_err(d.path()).contains("no certificate b@example.org.pem"));

    let d = tempfile::tempdir().unwrap();
    write(d.path(), "c@example.org.pem", b"x", 0o644);
    assert!(load_err(d.path()).contains("no private key c@example.org.key"));

    let d = tempfile::tempdir().unwrap();
    smime_pair(d.path(), "nodomain", 0o600);
    assert!(load_err(d.path()).contains("not <address>"));

    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "p@example.org.sec.asc",
        &pgp_key("p@example.org", false),
        0o600,
    );
    assert!(load_err(d.path()).contains("no valid signing key with unencrypted secret"));

    let d = tempfile::tempdir().unwrap();
    write(d.path(), "q@example.org.sec.asc", b"garbage", 0o600);
    assert!(load_err(d.path()).contains("not an OpenPGP key"));
}
