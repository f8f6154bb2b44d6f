//! The key store's operation suite, run against every database: a test
//! file provides a [`Backend`] (a fresh, empty database) and calls each
//! function (`suite_tests!`).

#![allow(dead_code)]

#[path = "history.rs"]
mod history;
pub use history::*;

use autoencrypt_milter::Method;
use autoencrypt_milter::store::{
    Learned, LearnedFrom, LearnedKey, Pin, PreferEncrypt, SCHEMA_VERSION, Store, StoreError,
};

/// A fresh, empty database.
pub trait Backend {
    /// A new handle on it (each its own connection).
    fn open(&self) -> Result<Store, StoreError>;
    /// Runs `sql` on it outside the store; rows as `a|b` lines.
    fn raw(&self, sql: &str) -> String;
}

/// An arbitrary moment (unix seconds).
pub const T0: i64 = 1_700_000_000;

pub(crate) fn open(b: &dyn Backend) -> Store {
    b.open().unwrap()
}

/// A 40-digit fingerprint made of `c`.
pub fn fp(c: char) -> String {
    c.to_string().repeat(40)
}

fn key(address: &str, method: Method, f: char, effective: i64) -> LearnedKey {
    LearnedKey {
        address: address.to_owned(),
        method,
        fingerprint: fp(f),
        key: format!("key {f}").into_bytes(),
        how: LearnedFrom::Autocrypt,
        prefer_encrypt: Some(PreferEncrypt::Mutual),
        effective,
        first_seen: effective + 5,
        last_seen: effective + 5,
    }
}

pub async fn learned_keys_follow_the_update_rule(b: &dyn Backend) {
    let s = open(b);
    let a = "alice@example.org";
    assert_eq!(s.learned(a, Method::OpenPgp).await.unwrap(), None);
    let first = key(a, Method::OpenPgp, 'A', T0);
    assert_eq!(s.learn(&first).await.unwrap(), Learned::New);
    assert_eq!(
        s.learned(a, Method::OpenPgp).await.unwrap().as_ref(),
        Some(&first)
    );
    // The other method is another key.
    assert_eq!(s.learned(a, Method::Smime).await.unwrap(), None);

    // The same key from a newer message: refreshed, first_seen kept.
    let mut again = key(a, Method::OpenPgp, 'A', T0 + 100);
    again.prefer_encrypt = Some(PreferEncrypt::NoPreference);
    again.first_seen = T0 + 105;
    assert_eq!(s.learn(&again).await.unwrap(), Learned::Refreshed);
    let got = s.learned(a, Method::OpenPgp).await.unwrap().unwrap();
    assert_eq!(got.effective, T0 + 100);
    assert_eq!(got.prefer_encrypt, Some(PreferEncrypt::NoPreference));
    assert_eq!(got.first_seen, T0 + 5);
    assert_eq!(got.last_seen, T0 + 105);

    // Another key from an older (or equally old) message changes nothing.
    for effective in [T0 + 50, T0 + 100] {
        let older = key(a, Method::OpenPgp, 'B', effective);
        assert_eq!(s.learn(&older).await.unwrap(), Learned::Older);
    }
    // The same key from an older message neither.
    assert_eq!(
        s.learn(&key(a, Method::OpenPgp, 'A', T0)).await.unwrap(),
        Learned::Older
    );
    assert_eq!(
        s.learned(a, Method::OpenPgp)
            .await
            .unwrap()
            .unwrap()
            .effective,
        T0 + 100
    );

    // Another key from a newer message replaces it.
    let mut newer = key(a, Method::OpenPgp, 'B', T0 + 200);
    newer.prefer_encrypt = None;
    newer.how = LearnedFrom::Import;
    assert_eq!(
        s.learn(&newer).await.unwrap(),
        Learned::Replaced { previous: fp('A') }
    );
    assert_eq!(
        s.learned(a, Method::OpenPgp).await.unwrap().as_ref(),
        Some(&newer)
    );
}

pub async fn list_and_forget(b: &dyn Backend) {
    let s = open(b);
    let mut smime = key("bob@example.org", Method::Smime, 'C', T0);
    smime.how = LearnedFrom::SmimeSignature;
    smime.prefer_encrypt = None;
    // Binary keys survive the trip (base64 in the database).
    smime.key = (0..=255u8).collect();
    for k in [
        key("carol@example.org", Method::OpenPgp, 'D', T0),
        smime.clone(),
        key("bob@example.org", Method::OpenPgp, 'E', T0),
    ] {
        s.learn(&k).await.unwrap();
    }
    let all = s.list_learned(None).await.unwrap();
    let names: Vec<(&str, Method)> = all.iter().map(|k| (k.address.as_str(), k.method)).collect();
    assert_eq!(
        names,
        [
            ("bob@example.org", Method::OpenPgp),
            ("bob@example.org", Method::Smime),
            ("carol@example.org", Method::OpenPgp),
        ]
    );
    assert_eq!(all[1], smime);
    assert_eq!(
        s.list_learned(Some("bob@example.org")).await.unwrap().len(),
        2
    );
    assert!(
        s.list_learned(Some("nobody@example.org"))
            .await
            .unwrap()
            .is_empty()
    );

    // History, a pending change and a pin for bob.
    let keys = [(fp('E'), b"e".to_vec())];
    s.observe("dane", "bob@example.org", Method::OpenPgp, &keys, true, T0)
        .await
        .unwrap();
    let keys = [(fp('F'), b"f".to_vec())];
    s.observe(
        "dane",
        "bob@example.org",
        Method::OpenPgp,
        &keys,
        true,
        T0 + 1,
    )
    .await
    .unwrap();
    s.pin(&Pin {
        address: "bob@example.org".into(),
        fingerprint: fp('E'),
        created: T0,
        note: String::new(),
    })
    .await
    .unwrap();

    // One method: its learned key, history (2 rows) and change (1 row).
    assert_eq!(
        s.forget("bob@example.org", Some(Method::OpenPgp))
            .await
            .unwrap(),
        4
    );
    assert_eq!(
        s.list_learned(Some("bob@example.org")).await.unwrap(),
        [smime]
    );
    assert!(
        s.history("dane", "bob@example.org", Method::OpenPgp)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(s.changes(false).await.unwrap().is_empty());
    assert_eq!(s.forget("bob@example.org", None).await.unwrap(), 1);
    assert_eq!(s.forget("bob@example.org", None).await.unwrap(), 0);
    // Pins stay.
    assert_eq!(s.all_pins().await.unwrap().len(), 1);
    assert_eq!(s.list_learned(None).await.unwrap().len(), 1);
}

pub async fn pins(b: &dyn Backend) {
    let s = open(b);
    let written = "aaaa bbbb:cccc dddd eeee ffff 0000 1111 2222 3333";
    let canonical = "AAAABBBBCCCCDDDDEEEEFFFF0000111122223333";
    let pin = Pin {
        address: "dave@example.org".into(),
        fingerprint: written.into(),
        created: T0,
        note: "from the phone call".into(),
    };
    assert!(s.pin(&pin).await.unwrap());
    assert!(!s.pin(&pin).await.unwrap());
    let later = Pin {
        created: T0 + 10,
        note: "checked again".into(),
        ..pin.clone()
    };
    assert!(!s.pin(&later).await.unwrap());
    let quiet = Pin {
        note: String::new(),
        ..pin.clone()
    };
    assert!(!s.pin(&quiet).await.unwrap());
    let other = Pin {
        address: "dave@example.org".into(),
        fingerprint: "B".repeat(64),
        created: T0 + 20,
        note: String::new(),
    };
    assert!(s.pin(&other).await.unwrap());
    let erin = Pin {
        address: "erin@example.org".into(),
        fingerprint: fp('C'),
        created: T0,
        note: String::new(),
    };
    assert!(s.pin(&erin).await.unwrap());
    let all = s.all_pins().await.unwrap();
    assert_eq!(
        all,
        [
            Pin {
                address: "dave@example.org".into(),
                fingerprint: canonical.into(),
                created: T0,
                note: "checked again".into(),
            },
            other.clone(),
            erin.clone(),
        ]
    );
    let bad = Pin {
        fingerprint: "not hex".into(),
        ..pin.clone()
    };
    let e = s.pin(&bad).await.unwrap_err();
    assert!(matches!(e, StoreError::Invalid { .. }), "{e}");
    assert!(e.to_string().contains("not hex"), "{e}");

    assert_eq!(
        s.unpin("dave@example.org", Some(canonical)).await.unwrap(),
        1
    );
    assert_eq!(
        s.unpin("dave@example.org", Some(canonical)).await.unwrap(),
        0
    );
    assert_eq!(s.unpin("dave@example.org", None).await.unwrap(), 1);
    assert_eq!(s.all_pins().await.unwrap(), [erin]);
}

pub async fn two_handles_see_each_others_writes(b: &dyn Backend) {
    let (one, two) = (open(b), open(b));
    let k = key("judy@example.org", Method::OpenPgp, 'A', T0);
    one.learn(&k).await.unwrap();
    assert_eq!(
        two.learned(&k.address, k.method).await.unwrap(),
        Some(k.clone())
    );
    let newer = key("judy@example.org", Method::OpenPgp, 'B', T0 + 1);
    assert_eq!(
        two.learn(&newer).await.unwrap(),
        Learned::Replaced { previous: fp('A') }
    );
    assert_eq!(
        one.learned(&k.address, k.method).await.unwrap(),
        Some(newer)
    );
    let pin = Pin {
        address: k.address.clone(),
        fingerprint: fp('B'),
        created: T0,
        note: String::new(),
    };
    assert!(two.pin(&pin).await.unwrap());
    assert_eq!(one.all_pins().await.unwrap(), [pin]);
    // Racing learners: one key wins, the same for both.
    let (c, d) = (
        key("kim@example.org", Method::Smime, 'C', T0),
        key("kim@example.org", Method::Smime, 'D', T0 + 1),
    );
    let (x, y) = tokio::join!(one.learn(&c), two.learn(&d));
    let (x, y) = (x.unwrap(), y.unwrap());
    assert!(x == Learned::New || y == Learned::New, "{x:?} {y:?}");
    let now = one.learned("kim@example.org", Method::Smime).await.unwrap();
    assert_eq!(now.unwrap().fingerprint, fp('D'));
    drop(two);
    // A clone shares the handle.
    let clone = one.clone();
    assert_eq!(clone.all_pins().await.unwrap().len(), 1);
    one.ping().await.unwrap();
}

pub async fn opening_again_keeps_everything(b: &dyn Backend) {
    let s = open(b);
    let k = key("leo@example.org", Method::Smime, 'A', T0);
    s.learn(&k).await.unwrap();
    drop(s);
    let s = open(b);
    assert_eq!(s.learned(&k.address, k.method).await.unwrap(), Some(k));
    assert_eq!(
        b.raw("SELECT version FROM schema_migrations"),
        SCHEMA_VERSION.to_string()
    );
}

pub async fn bad_rows_are_errors_naming_the_row(b: &dyn Backend) {
    let s = open(b);
    s.ping().await.unwrap();
    let cols =
        "address, method, fingerprint, key, how, prefer_encrypt, effective, first_seen, last_seen";
    let fpa = fp('A');
    for (address, method, key, how, prefer, what) in [
        (
            "m@example.org",
            "smime",
            "%%%",
            "autocrypt",
            "NULL",
            "not base64",
        ),
        ("n@example.org", "pgp", "AAAA", "autocrypt", "NULL", "pgp"),
        (
            "o@example.org",
            "smime",
            "AAAA",
            "guessed",
            "NULL",
            "guessed",
        ),
        (
            "p@example.org",
            "openpgp",
            "AAAA",
            "autocrypt",
            "'always'",
            "always",
        ),
    ] {
        b.raw(&format!(
            "INSERT INTO learned_keys ({cols}) VALUES ('{address}', '{method}', '{fpa}', '{key}', \
             '{how}', {prefer}, 1, 1, 1)"
        ));
        let e = s.list_learned(Some(address)).await.unwrap_err();
        assert!(matches!(e, StoreError::BadRow { .. }), "{e}");
        let text = e.to_string();
        assert!(text.contains(address) && text.contains(what), "{text}");
        // One bad row spoils a listing, loudly.
        assert!(s.list_learned(None).await.is_err());
        b.raw(&format!(
            "DELETE FROM learned_keys WHERE address = '{address}'"
        ));
    }
    b.raw(&format!(
        "INSERT INTO key_history (source, address, method, fingerprint, key, first_seen, \
         last_seen, approved) VALUES ('dane', 'q@example.org', 'smime', '{fpa}', 'AAAA', 1, 1, 7)"
    ));
    let e = s
        .history("dane", "q@example.org", Method::Smime)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("approved is 7"), "{e}");
    // observe() reads the history first: it refuses too, recording nothing.
    let keys = [(fp('B'), b"b".to_vec())];
    assert!(
        s.observe("dane", "q@example.org", Method::Smime, &keys, true, T0)
            .await
            .is_err()
    );
    assert!(s.changes(false).await.unwrap().is_empty());
    b.raw("INSERT INTO pins (address, fingerprint, created, note) VALUES ('r@example.org', 'abc', 1, '')");
    let e = s.all_pins().await.unwrap_err();
    assert!(e.to_string().contains("r@example.org"), "{e}");
    b.raw(&format!(
        "INSERT INTO key_changes (source, address, method, old, new, detected, approved) \
         VALUES ('dane', 's@example.org', 'x509', '', '{fpa}', 1, NULL)"
    ));
    let e = s.changes(true).await.unwrap_err();
    assert!(e.to_string().contains("x509"), "{e}");
    // The store's name and the operation are in every message.
    assert!(e.to_string().contains(&s.describe()), "{e}");
    assert!(e.to_string().contains("key changes"), "{e}");
}

pub async fn a_newer_schema_is_refused(b: &dyn Backend) {
    open(b).ping().await.unwrap();
    b.raw(
        "INSERT INTO schema_migrations (version, name, applied) VALUES (99, 'from the future', 1)",
    );
    let e = match b.open() {
        Err(e) => e,
        Ok(s) => s.ping().await.unwrap_err(),
    };
    let StoreError::SchemaTooNew { found, known, .. } = &e else {
        panic!("{e}");
    };
    assert_eq!((*found, *known), (99, SCHEMA_VERSION));
    assert!(e.to_string().contains("newer"), "{e}");
}

/// One `#[tokio::test]` per suite function; `$backend` makes a fresh
/// [`Backend`].
#[macro_export]
macro_rules! suite_tests {
    ($backend:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let b = $backend;
                suite::$name(&b).await;
            }
        )*
    };
}
