//! The suite's key history and key change operations (observe, changes,
//! approve).

use autoencrypt_milter::Method;
use autoencrypt_milter::store::{KeyChange, Observation};

use super::{Backend, T0, fp, open};

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
