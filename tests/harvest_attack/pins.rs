//! Pins and key-change review against what an operator types and what a
//! hostile key source returns: a pin set with `keys pin` for an address
//! as people write it, a pin in another spelling of the fingerprint, a
//! source returning the approved key and a new one at once, a learned key
//! replaced under `on_key_change = "review"`, and a source rotating keys
//! to grow the history.

use autoencrypt_milter::Address;
use autoencrypt_milter::backend::{RejectReason, identify};
use autoencrypt_milter::keys::{KeyChoice, OnKeyChange, SourceKind};
use autoencrypt_milter::policy::KeyOutcome;
use autoencrypt_milter::store::Pin;

use super::certs::identity;
use super::store::{config, keys_cmd, only, service, usable};
use super::*;
use autoencrypt_milter::Method;

fn smime_fp(der: &[u8]) -> String {
    identify(Method::Smime, der).unwrap().fingerprint
}

/// A state directory, a key directory with Alice's certificate, the
/// store URL, and the fingerprints of Alice's certificate and of another.
struct Rig {
    state: tempfile::TempDir,
    keys: tempfile::TempDir,
    url: String,
    alice: String,
    other: String,
}

fn rig() -> Rig {
    let state = tempfile::tempdir().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let alice = identity(&["alice@example.org"]);
    std::fs::write(
        keys.path().join("alice@example.org.pem"),
        alice.cert.to_pem().unwrap(),
    )
    .unwrap();
    let other = identity(&["alice@example.org"]);
    std::fs::write(state.path().join("other.pem"), other.cert.to_pem().unwrap()).unwrap();
    let url = format!("sqlite://{}", state.path().join("keys.sqlite").display());
    Rig {
        alice: smime_fp(&alice.der()),
        other: smime_fp(&other.der()),
        state,
        keys,
        url,
    }
}

fn resolve(
    rt: &tokio::runtime::Runtime,
    keys: &autoencrypt_milter::keys::KeyService,
    rcpt: &str,
    method: Method,
    choice: &KeyChoice,
) -> KeyOutcome<autoencrypt_milter::backend::Recipient> {
    let a = Address::parse(rcpt).unwrap();
    rt.block_on(keys.resolve(&a, method, choice)).outcome
}

fn refused_as_not_pinned(o: &KeyOutcome<autoencrypt_milter::backend::Recipient>) -> bool {
    match o {
        KeyOutcome::Found {
            usable, rejected, ..
        } => {
            usable.is_empty()
                && rejected
                    .iter()
                    .any(|r| matches!(r.reason, RejectReason::NotPinned(_)))
        }
        _ => false,
    }
}

#[test]
fn a_pin_set_with_the_cli_for_a_capitalised_address_is_in_force() {
    let rt = runtime();
    let r = rig();
    let (code, out, err) = keys_cmd(
        r.state.path(),
        &r.url,
        &["pin", "Alice@example.org", &r.other],
    );
    assert_eq!(code, 0, "{out} {err}");
    let keys = service(&config(&r.url, Some(r.keys.path())));
    for rcpt in ["alice@example.org", "Alice@example.org"] {
        let o = resolve(
            &rt,
            &keys,
            rcpt,
            Method::Smime,
            &only(&[SourceKind::Directory]),
        );
        assert!(
            refused_as_not_pinned(&o),
            "{rcpt}: Alice's certificate {} was used although {} is pinned: {o:?}",
            r.alice,
            r.other
        );
    }
}

#[test]
fn keys_commands_with_a_capitalised_address_act_on_the_milters_rows() {
    let rt = runtime();
    let r = rig();
    let other = r.state.path().join("other.pem");
    let (code, out, err) = keys_cmd(
        r.state.path(),
        &r.url,
        &[
            "import",
            other.to_str().unwrap(),
            "--address",
            "Alice@example.org",
        ],
    );
    assert_eq!(code, 0, "{out} {err}");
    let keys = service(&config(&r.url, Some(r.keys.path())));
    let o = resolve(
        &rt,
        &keys,
        "Alice@example.org",
        Method::Smime,
        &only(&[SourceKind::Learned]),
    );
    assert!(
        matches!(&o, KeyOutcome::Found { usable, .. } if usable.len() == 1),
        "the imported key is not found for the address it was imported for: {o:?}"
    );
}

#[test]
fn a_pin_in_any_spelling_of_the_fingerprint_is_in_force() {
    let rt = runtime();
    let spellings: [fn(&str) -> String; 3] = [
        |f: &str| f.to_lowercase(),
        |f: &str| {
            f.as_bytes()
                .chunks(2)
                .map(|c| std::str::from_utf8(c).unwrap())
                .collect::<Vec<_>>()
                .join(":")
        },
        |f: &str| {
            f.as_bytes()
                .chunks(4)
                .map(|c| std::str::from_utf8(c).unwrap().to_lowercase())
                .collect::<Vec<_>>()
                .join(" ")
        },
    ];
    for spelling in spellings {
        let r = rig();
        let keys = service(&config(&r.url, Some(r.keys.path())));
        let store = keys.store().unwrap().clone();
        let written = spelling(&r.other);
        let (code, out, err) = keys_cmd(
            r.state.path(),
            &r.url,
            &["pin", "alice@example.org", &written],
        );
        assert_eq!(code, 0, "{written}: {out} {err}");
        // Through the library too: the same canonical row.
        let pin = Pin {
            address: "alice@example.org".to_owned(),
            fingerprint: spelling(&r.alice),
            created: 1,
            note: String::new(),
        };
        assert!(rt.block_on(store.pin(&pin)).unwrap());
        let o = resolve(
            &rt,
            &keys,
            "alice@example.org",
            Method::Smime,
            &only(&[SourceKind::Directory]),
        );
        assert_eq!(usable(&o), std::slice::from_ref(&r.alice), "{written}");
        // The other pin alone: Alice's certificate is refused.
        assert_eq!(
            rt.block_on(store.unpin("alice@example.org", Some(&r.alice)))
                .unwrap(),
            1
        );
        std::thread::sleep(Duration::from_millis(2_100));
        let o = resolve(
            &rt,
            &keys,
            "alice@example.org",
            Method::Smime,
            &only(&[SourceKind::Directory]),
        );
        assert!(refused_as_not_pinned(&o), "{written}: {o:?}");
    }
}

#[test]
fn a_pinned_address_whose_store_cannot_be_read_is_never_encrypted_to_another_key() {
    let rt = runtime();
    let r = rig();
    // Nothing listens there: the pins cannot be read at all.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let url = format!("postgres://aem@127.0.0.1:{port}/keys?sslmode=disable");
    let keys = service(&config(&url, Some(r.keys.path())));
    let o = resolve(
        &rt,
        &keys,
        "alice@example.org",
        Method::Smime,
        &only(&[SourceKind::Directory]),
    );
    assert!(matches!(o, KeyOutcome::Failed(_)), "{o:?}");
}

fn review(kinds: &[SourceKind]) -> KeyChoice {
    KeyChoice {
        on_key_change: OnKeyChange::Review,
        ..only(kinds)
    }
}

#[test]
fn a_source_returning_the_approved_key_and_a_new_one_at_once_gets_the_approved_one_used() {
    let rt = runtime();
    let r = rig();
    let keys = service(&config(&r.url, Some(r.keys.path())));
    let choice = review(&[SourceKind::Directory]);
    let first = resolve(&rt, &keys, "alice@example.org", Method::Smime, &choice);
    assert_eq!(
        usable(&first),
        std::slice::from_ref(&r.alice),
        "trust on first use"
    );
    // The directory now also has a new certificate for Alice.
    std::fs::copy(
        r.state.path().join("other.pem"),
        r.keys.path().join("alice@example.org.crt"),
    )
    .unwrap();
    let both = resolve(&rt, &keys, "alice@example.org", Method::Smime, &choice);
    assert_eq!(
        usable(&both),
        std::slice::from_ref(&r.alice),
        "only the approved key"
    );
    // The old one gone: the one approved before, while it is valid.
    std::fs::remove_file(r.keys.path().join("alice@example.org.pem")).unwrap();
    let new_only = resolve(&rt, &keys, "alice@example.org", Method::Smime, &choice);
    assert_eq!(
        usable(&new_only),
        std::slice::from_ref(&r.alice),
        "the previous key"
    );
    // Approved: the new one, within refresh_secs.
    let store = keys.store().unwrap().clone();
    assert_eq!(
        rt.block_on(store.approve("alice@example.org", &r.other, 1))
            .unwrap(),
        1
    );
    std::thread::sleep(Duration::from_millis(1_100));
    let approved = resolve(&rt, &keys, "alice@example.org", Method::Smime, &choice);
    assert_eq!(usable(&approved), std::slice::from_ref(&r.other));
}

#[test]
fn review_holds_back_a_replaced_learned_key_too() {
    let rt = runtime();
    let r = rig();
    let keys = service(&config(&r.url, None));
    let store = keys.store().unwrap().clone();
    let learn = |cert: &Cert, effective: i64| {
        let key = LearnedKey {
            address: "carol@example.org".to_owned(),
            method: Method::OpenPgp,
            fingerprint: cert.fingerprint().to_hex(),
            key: cert.to_vec().unwrap(),
            how: autoencrypt_milter::harvest::LearnedFrom::Autocrypt,
            prefer_encrypt: None,
            effective,
            first_seen: effective,
            last_seen: effective,
        };
        rt.block_on(store.learn(&key)).unwrap()
    };
    let carol = pgp("carol@example.org");
    let mallory = pgp("Carol <carol@example.org>");
    learn(&carol, 1_000);
    let choice = review(&[SourceKind::Learned]);
    let before = resolve(&rt, &keys, "carol@example.org", Method::OpenPgp, &choice);
    assert_eq!(usable(&before), [carol.fingerprint().to_hex()]);
    // A newer message (Mallory's Autocrypt header in a message Carol's
    // domain signed) replaces it.
    learn(&mallory, 2_000);
    std::thread::sleep(Duration::from_millis(1_100));
    let after = resolve(&rt, &keys, "carol@example.org", Method::OpenPgp, &choice);
    assert!(
        !matches!(&after, KeyOutcome::Found { usable, .. }
            if usable.iter().any(|u| u.fingerprint == mallory.fingerprint().to_hex())),
        "the replacing key was used without review: {after:?}"
    );
}

#[test]
fn a_source_rotating_keys_does_not_grow_the_history_without_bound() {
    let rt = runtime();
    let r = rig();
    let keys = service(&config(&r.url, Some(r.keys.path())));
    let store = keys.store().unwrap().clone();
    let file = r.keys.path().join("rotor@example.org.pgp");
    let choice = review(&[SourceKind::Directory]);
    for _ in 0..60 {
        std::fs::write(&file, pgp("rotor@example.org").to_vec().unwrap()).unwrap();
        let _ = resolve(&rt, &keys, "rotor@example.org", Method::OpenPgp, &choice);
    }
    let seen = rt
        .block_on(store.history("directory", "rotor@example.org", Method::OpenPgp))
        .unwrap();
    let pending = rt.block_on(store.changes(true)).unwrap();
    assert!(
        seen.len() <= 16 && pending.len() <= 16,
        "{} history rows (each with its key) and {} pending changes for one address",
        seen.len(),
        pending.len()
    );
}
