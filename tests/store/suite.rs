//! The key store's operation suite, run against every database: a test
//! file provides a [`Backend`] (a fresh, empty database) and calls each
//! function (`suite_tests!`).

#![allow(dead_code)]

use autoencrypt_milter::Method;
use autoencrypt_milter::store::{
    KeyChange, Learned, LearnedFrom, LearnedKey, Observation, Pin, PreferEncrypt, SCHEMA_VERSION,
    Store, StoreError,
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

fn open(b: &dyn Backend) -> Store {
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

pub async fn first_sight_is_trusted_then_changes_wait_for_review(b: &dyn Backend) {
    let s = open(b);
    let a = "frank@example.org";
    let k = |c: char| (fp(c), format!("key {c}").into_bytes());
    assert_eq!(
        s.observe("dane", a, Method::Smime, &[], true, T0)
            .await
            .unwrap(),
        Observation::Same
    );
    assert_eq!(
        s.observe(
            "dane",
            a,
            Method::Smime,
            &[k('A'), k('B'), k('A')],
            true,
            T0
        )
        .await
        .unwrap(),
        Observation::First
    );
    let h = s.history("dane", a, Method::Smime).await.unwrap();
    assert_eq!(h.len(), 2);
    assert!(h.iter().all(|x| x.approved && x.first_seen == T0));
    assert_eq!(h[0].key, b"key A");
    // Another source, another method: their own first sight.
    assert_eq!(
        s.observe("ldap", a, Method::Smime, &[k('C')], true, T0)
            .await
            .unwrap(),
        Observation::First
    );
    assert_eq!(
        s.observe("dane", a, Method::OpenPgp, &[k('C')], true, T0)
            .await
            .unwrap(),
        Observation::First
    );
    // A subset of what is known is no change.
    assert_eq!(
        s.observe("dane", a, Method::Smime, &[k('B')], true, T0 + 1)
            .await
            .unwrap(),
        Observation::Same
    );

    let Observation::Changed {
        new,
        approved_before,
        counted,
    } = s
        .observe("dane", a, Method::Smime, &[k('B'), k('D')], true, T0 + 2)
        .await
        .unwrap()
    else {
        panic!("a new fingerprint is a change");
    };
    assert_eq!(new, [fp('D')]);
    assert!(counted);
    let before: Vec<&str> = approved_before
        .iter()
        .map(|x| x.fingerprint.as_str())
        .collect();
    assert_eq!(before, [fp('A'), fp('B')]);
    let h = s.history("dane", a, Method::Smime).await.unwrap();
    let d = h.iter().find(|x| x.fingerprint == fp('D')).unwrap();
    assert!(!d.approved, "pending review");
    let pending = s.changes(true).await.unwrap();
    assert_eq!(
        pending,
        [KeyChange {
            source: "dane".into(),
            address: a.into(),
            method: Method::Smime,
            old: vec![fp('A'), fp('B')],
            new: fp('D'),
            detected: T0 + 2,
            approved: None,
        }]
    );
    // Seen again while pending: known, no second change.
    assert_eq!(
        s.observe("dane", a, Method::Smime, &[k('D')], true, T0 + 3)
            .await
            .unwrap(),
        Observation::Same
    );
    assert_eq!(s.changes(true).await.unwrap().len(), 1);

    assert_eq!(s.approve(a, &fp('E'), T0 + 4).await.unwrap(), 0);
    assert_eq!(
        s.approve("x@example.org", &fp('D'), T0 + 4).await.unwrap(),
        0
    );
    assert_eq!(s.approve(a, &fp('D'), T0 + 5).await.unwrap(), 1);
    assert_eq!(s.approve(a, &fp('D'), T0 + 6).await.unwrap(), 0);
    assert!(s.changes(true).await.unwrap().is_empty());
    let all = s.changes(false).await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].approved, Some(T0 + 5));
    let h = s.history("dane", a, Method::Smime).await.unwrap();
    assert!(h.iter().all(|x| x.approved));
}

pub async fn accepted_changes_are_recorded_approved(b: &dyn Backend) {
    let s = open(b);
    let a = "grace@example.org";
    let k = |c: char| (fp(c), c.to_string().into_bytes());
    s.observe("wkd", a, Method::OpenPgp, &[k('A')], false, T0)
        .await
        .unwrap();
    let Observation::Changed { new, counted, .. } = s
        .observe("wkd", a, Method::OpenPgp, &[k('B')], false, T0 + 1)
        .await
        .unwrap()
    else {
        panic!("a change");
    };
    assert_eq!(new, [fp('B')]);
    assert!(counted);
    assert!(
        s.history("wkd", a, Method::OpenPgp)
            .await
            .unwrap()
            .iter()
            .all(|x| x.approved)
    );
    assert!(s.changes(true).await.unwrap().is_empty());
    let all = s.changes(false).await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].old, [fp('A')]);
    assert_eq!(all[0].approved, Some(T0 + 1));
}

pub async fn a_change_is_counted_once_by_two_handles(b: &dyn Backend) {
    let (one, two) = (open(b), open(b));
    let a = "heidi@example.org";
    let k = |c: char| (fp(c), vec![c as u8]);
    one.observe("dane", a, Method::Smime, &[k('A')], true, T0)
        .await
        .unwrap();
    // The second host sees the first one's history: no first sight.
    assert_eq!(
        two.observe("dane", a, Method::Smime, &[k('A')], true, T0)
            .await
            .unwrap(),
        Observation::Same
    );
    let first = one
        .observe("dane", a, Method::Smime, &[k('B')], true, T0 + 1)
        .await
        .unwrap();
    assert!(
        matches!(first, Observation::Changed { counted: true, .. }),
        "{first:?}"
    );
    // The other host meets the same new key: known now, not counted again.
    let second = two
        .observe("dane", a, Method::Smime, &[k('B')], true, T0 + 1)
        .await
        .unwrap();
    assert_eq!(second, Observation::Same);
    assert_eq!(two.changes(true).await.unwrap().len(), 1);

    // Racing: both handles meet a third key at the same moment.
    let c = [k('C')];
    let (x, y) = tokio::join!(
        one.observe("dane", a, Method::Smime, &c, true, T0 + 2),
        two.observe("dane", a, Method::Smime, &c, true, T0 + 2),
    );
    let counted = [x.unwrap(), y.unwrap()]
        .iter()
        .filter(|o| matches!(o, Observation::Changed { counted: true, .. }))
        .count();
    assert_eq!(counted, 1, "counted once");
    assert_eq!(one.changes(true).await.unwrap().len(), 2);
}

pub async fn last_seen_is_written_at_most_hourly(b: &dyn Backend) {
    let s = open(b);
    let a = "ivan@example.org";
    let keys = [(fp('A'), b"a".to_vec())];
    s.observe("dane", a, Method::Smime, &keys, false, T0)
        .await
        .unwrap();
    s.observe("dane", a, Method::Smime, &keys, false, T0 + 3599)
        .await
        .unwrap();
    let h = s.history("dane", a, Method::Smime).await.unwrap();
    assert_eq!(h[0].last_seen, T0);
    s.observe("dane", a, Method::Smime, &keys, false, T0 + 3601)
        .await
        .unwrap();
    let h = s.history("dane", a, Method::Smime).await.unwrap();
    assert_eq!((h[0].first_seen, h[0].last_seen), (T0, T0 + 3601));
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
