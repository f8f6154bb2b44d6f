//! Keys learned from inbound mail, end to end (issue 12): a real Postfix
//! with the milter in process, a SQLite key store of each test's own, the
//! DNSSEC test zone (which has no key for any address here). A signed
//! S/MIME message (`openssl cms -sign`) or a message with an Autocrypt
//! header (key by `gpg`) from a correspondent, with an
//! `Authentication-Results` field of the site's MTA saying DKIM or DMARC
//! passed for the `From:` domain, arrives for a local user; the reply goes
//! out encrypted to the learned key, and `openssl cms -decrypt` / `gpg
//! --decrypt` give back exactly the inner entity. Without the
//! authentication, or with key material that does not hold up, nothing is
//! learned: the store and `keys list` hold nothing, the reply stays
//! plaintext, and the harvest metric names the reason.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod common;
#[path = "env/mod.rs"]
mod env;
mod harvest_e2e;
#[path = "env/milter.rs"]
mod milter;
#[path = "env/postfix.rs"]
mod postfix;

use common::{Gpg, PgpKind, assert_bytes_eq, expected_protected_entity};
use harvest_e2e::mail::{
    self, AUTHSERV_ID, autocrypt_field, dkim_pass, dmarc_pass, plain_with, smime_signed, unix_now,
};
use harvest_e2e::{
    Mx, REMOTE, Site, assert_plain, assert_smime_to, harvest_series, local, log_lines, open_pgp,
    remote, smime_fp, smime_id,
};

/// Inbound `msg` from `from` to a local user: delivered as sent (the local
/// user has no key), then examined by the harvester.
fn arrives(mx: &Mx, from: &str, msg: &[u8]) {
    let to = local("alice");
    let got = mx.deliver(from, &to, msg);
    assert_plain(&got, msg, "inbound to a user without a key");
}

/// The reply from the local user to `to`, as delivered.
fn reply_to(mx: &Mx, to: &str) -> (Vec<u8>, Vec<u8>) {
    let raw = mail::reply(&local("alice"), to);
    let got = mx.deliver(&local("alice"), to, &raw);
    (got, raw)
}

/// Nothing is learned for `address`: not in the store, `keys list` finds
/// nothing, and the reply goes out as written.
fn nothing_learned(site: &Site, mx: &Mx, address: &str) {
    assert!(
        site.learned_for(address).is_empty(),
        "{address}: learned {:?}",
        site.learned()
    );
    let out = site.keys(&["list", address]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "keys list {address}: {out:?} (1: nothing learned)"
    );
    assert!(out.stdout.is_empty(), "keys list {address}: {out:?}");
    let (got, raw) = reply_to(mx, address);
    assert_plain(&got, &raw, address);
}

#[test]
fn signed_mail_and_autocrypt_teach_keys_that_encrypt_the_replies() {
    let site = Site::new();
    let mx = site.mx("", |_| {});
    let s = &site.scratch;
    let now = unix_now();

    // multipart/signed, DKIM passed for the From: domain.
    let detached = remote("smime-detached");
    let id = smime_id(s, "detached", &detached);
    let dkim = [dkim_pass(AUTHSERV_ID, REMOTE)];
    arrives(
        &mx,
        &detached,
        &smime_signed(s, &id, &detached, &local("alice"), now - 60, &dkim, true),
    );
    mx.wait_metric(&harvest_series("learned"), 1.0);
    assert_eq!(site.learned_for(&detached), vec![smime_fp(&id)]);
    let (got, raw) = reply_to(&mx, &detached);
    assert_smime_to(s, &got, &raw, &id, &[]);

    // application/pkcs7-mime; smime-type=signed-data.
    let opaque = remote("smime-opaque");
    let id2 = smime_id(s, "opaque", &opaque);
    arrives(
        &mx,
        &opaque,
        &smime_signed(s, &id2, &opaque, &local("alice"), now - 60, &dkim, false),
    );
    mx.wait_metric(&harvest_series("learned"), 2.0);
    let (got, raw) = reply_to(&mx, &opaque);
    assert_smime_to(s, &got, &raw, &id2, &[&id]);

    // An Autocrypt header, DMARC passed for the From: domain.
    let ac = remote("autocrypt");
    let gpg = Gpg::new();
    let fpr = gpg.generate(&ac, PgpKind::Cv25519, "0", None);
    let fields = [
        dmarc_pass(AUTHSERV_ID, REMOTE),
        autocrypt_field(&ac, &gpg.export(&fpr, false)),
    ];
    arrives(
        &mx,
        &ac,
        &plain_with(&ac, &local("alice"), now - 60, &fields),
    );
    mx.wait_metric(&harvest_series("learned"), 3.0);
    assert_eq!(site.learned_for(&ac), vec![fpr.clone()]);
    let (got, raw) = reply_to(&mx, &ac);
    let plain = open_pgp(&gpg, &got).unwrap_or_else(|e| panic!("{ac}: gpg: {e}"));
    assert_bytes_eq(&plain, &expected_protected_entity(&raw), "PGP/MIME");

    // What the operator sees.
    let list = site.keys_ok(&["list"]);
    for (addr, method, fp) in [
        (&detached, "smime", smime_fp(&id)),
        (&opaque, "smime", smime_fp(&id2)),
        (&ac, "openpgp", fpr.clone()),
    ] {
        assert!(
            list.lines()
                .any(|l| l.starts_with(&format!("{addr} {method} {fp}"))),
            "keys list lacks {addr} {method} {fp}:\n{list}"
        );
    }
    assert_eq!(
        mx.metric("autoencrypt_keys_learned_total{method=\"smime\"}"),
        2.0
    );
    assert_eq!(
        mx.metric("autoencrypt_keys_learned_total{method=\"openpgp\"}"),
        1.0
    );
    assert!(
        !log_lines(&[&detached, "harvest:", &smime_fp(&id)]).is_empty(),
        "the learned key is not logged"
    );
}

/// One message that must teach nothing, and the harvest result it counts.
struct Case {
    from: String,
    msg: Vec<u8>,
    result: &'static str,
}

#[test]
fn unauthenticated_or_unsound_key_material_teaches_nothing() {
    let site = Site::new();
    let mx = site.mx("", |_| {});
    let s = &site.scratch;
    let now = unix_now();
    let to = local("alice");
    let dkim = vec![dkim_pass(AUTHSERV_ID, REMOTE)];
    let signed = |label: &str, extra: &[String]| {
        let from = remote(label);
        let id = smime_id(s, label, &from);
        smime_signed(s, &id, &from, &to, now - 60, extra, true)
    };
    let gpg = Gpg::new();
    let autocrypt = |addr: &str| {
        let fpr = gpg.generate(addr, PgpKind::Cv25519, "0", None);
        autocrypt_field(addr, &gpg.export(&fpr, false))
    };

    let mut cases = vec![
        Case {
            from: remote("no-ar"),
            msg: signed("no-ar", &[]),
            result: "not_authenticated",
        },
        Case {
            from: remote("other-id"),
            msg: signed("other-id", &[dkim_pass("mx.elsewhere.test", REMOTE)]),
            result: "not_authenticated",
        },
        Case {
            from: remote("other-domain"),
            msg: signed(
                "other-domain",
                &[dkim_pass(AUTHSERV_ID, "mailer.autoencrypt.test")],
            ),
            result: "not_authenticated",
        },
        Case {
            from: remote("parent-domain"),
            msg: signed(
                "parent-domain",
                &[dkim_pass(AUTHSERV_ID, "autoencrypt.test")],
            ),
            result: "not_authenticated",
        },
        Case {
            from: remote("bad-sig"),
            msg: mail::tampered(&signed("bad-sig", &dkim)),
            result: "bad_signature",
        },
    ];
    // A certificate for another address than the From:.
    let someone = remote("someone-else");
    let other_cert = smime_id(s, "someone-else", &someone);
    cases.push(Case {
        from: remote("wrong-cert"),
        msg: smime_signed(
            s,
            &other_cert,
            &remote("wrong-cert"),
            &to,
            now - 60,
            &dkim,
            true,
        ),
        result: "signer_mismatch",
    });
    // Autocrypt: addr is not the From:; two headers.
    let mut fields = dkim.clone();
    fields.push(autocrypt(&remote("ac-addr-other")));
    cases.push(Case {
        from: remote("ac-addr"),
        msg: plain_with(&remote("ac-addr"), &to, now - 60, &fields),
        result: "addr_mismatch",
    });
    let mut fields = dkim.clone();
    fields.push(autocrypt(&remote("ac-two")));
    fields.push(autocrypt(&remote("ac-two")));
    cases.push(Case {
        from: remote("ac-two"),
        msg: plain_with(&remote("ac-two"), &to, now - 60, &fields),
        result: "several_headers",
    });
    // Autocrypt that the From: domain's DKIM signature does not cover:
    // anyone with one signed message of the sender could have added it.
    let mut fields = dkim.clone();
    let fpr = gpg.generate(&remote("ac-unsigned"), PgpKind::Cv25519, "0", None);
    fields.push(mail::autocrypt_unsigned_field(
        &remote("ac-unsigned"),
        &gpg.export(&fpr, false),
    ));
    cases.push(Case {
        from: remote("ac-unsigned"),
        msg: plain_with(&remote("ac-unsigned"), &to, now - 60, &fields),
        result: "autocrypt_unsigned",
    });
    // Autocrypt without any authentication result.
    let fields = vec![autocrypt(&remote("ac-noar"))];
    cases.push(Case {
        from: remote("ac-noar"),
        msg: plain_with(&remote("ac-noar"), &to, now - 60, &fields),
        result: "not_authenticated",
    });

    for case in &cases {
        let series = harvest_series(case.result);
        let before = mx.metric(&series);
        arrives(&mx, &case.from, &case.msg);
        mx.wait_metric(&series, before + 1.0);
        nothing_learned(&site, &mx, &case.from);
    }
    nothing_learned(&site, &mx, &someone);
    assert_eq!(mx.harvested("learned"), 0.0);
    assert!(site.learned().is_empty(), "{:?}", site.learned());

    // Mail that is not inbound (no local recipient) is not examined: it
    // would have been before the next one, which teaches its key.
    let relay = remote("relay");
    let msg = signed("relay", &dkim);
    let got = mx.deliver(&relay, &remote("elsewhere"), &msg);
    assert_plain(&got, &msg, "outbound to an address without a key");
    let control = remote("control");
    arrives(&mx, &control, &signed("control", &dkim));
    mx.wait_metric(&harvest_series("learned"), 1.0);
    let learned: Vec<String> = site.learned().into_iter().map(|k| k.0).collect();
    assert_eq!(learned, vec![control]);
}

#[test]
fn a_forged_signed_message_plants_no_key() {
    let site = Site::new();
    let mx = site.mx("", |_| {});
    let s = &site.scratch;
    let now = unix_now();
    let to = local("alice");

    // The victim's real key, learned from authenticated mail.
    let victim = remote("victim");
    let real = smime_id(s, "victim", &victim);
    let dkim = [dkim_pass(AUTHSERV_ID, REMOTE)];
    arrives(
        &mx,
        &victim,
        &smime_signed(s, &real, &victim, &to, now - 3600, &dkim, true),
    );
    mx.wait_metric(&harvest_series("learned"), 1.0);

    // The attacker's own self-signed certificate naming the victim, a
    // newer Date:, DKIM passed only for the attacker's domain, and a
    // "pass" under an authserv-id that is not ours.
    let forged_cert = smime_id(s, "forged", &victim);
    let forged_fields = [
        dkim_pass(AUTHSERV_ID, "attacker.autoencrypt.test"),
        dkim_pass("mx.autoencrypt.test.attacker.autoencrypt.test", REMOTE),
    ];
    let unauth = harvest_series("not_authenticated");
    let before = mx.metric(&unauth);
    arrives(
        &mx,
        &victim,
        &smime_signed(s, &forged_cert, &victim, &to, now, &forged_fields, true),
    );
    mx.wait_metric(&unauth, before + 1.0);
    // And a victim with no key yet.
    let fresh = remote("fresh-victim");
    let forged_fresh = smime_id(s, "forged-fresh", &fresh);
    arrives(
        &mx,
        &fresh,
        &smime_signed(s, &forged_fresh, &fresh, &to, now, &forged_fields, true),
    );
    mx.wait_metric(&unauth, before + 2.0);

    assert_eq!(site.learned_for(&victim), vec![smime_fp(&real)]);
    let (got, raw) = reply_to(&mx, &victim);
    assert_smime_to(s, &got, &raw, &real, &[&forged_cert]);
    nothing_learned(&site, &mx, &fresh);
    assert_eq!(mx.harvested("learned"), 1.0);
}

#[test]
fn an_unsigned_autocrypt_header_teaches_only_when_the_operator_accepts_it() {
    let site = Site::new();
    let now = unix_now();
    let gpg = Gpg::new();
    let from = remote("plain-provider");
    let fpr = gpg.generate(&from, PgpKind::Cv25519, "0", None);
    let fields = [
        dkim_pass(AUTHSERV_ID, REMOTE),
        mail::autocrypt_unsigned_field(&from, &gpg.export(&fpr, false)),
    ];
    let msg = plain_with(&from, &local("alice"), now - 60, &fields);
    {
        let mx = site.mx("", |_| {});
        arrives(&mx, &from, &msg);
        mx.wait_metric(&harvest_series("autocrypt_unsigned"), 1.0);
        assert!(site.learned_for(&from).is_empty());
    }
    let mx = site.mx("", |c| c.harvest.autocrypt_unsigned = true);
    arrives(&mx, &from, &msg);
    mx.wait_metric(&harvest_series("learned"), 1.0);
    assert_eq!(site.learned_for(&from), vec![fpr.clone()]);
    let (got, raw) = reply_to(&mx, &from);
    let plain = open_pgp(&gpg, &got).unwrap_or_else(|e| panic!("{from}: gpg: {e}"));
    assert_bytes_eq(&plain, &expected_protected_entity(&raw), "PGP/MIME");
}

#[test]
fn an_older_message_does_not_replace_a_newer_key() {
    let site = Site::new();
    let mx = site.mx("", |_| {});
    let now = unix_now();
    let from = remote("updates");
    let to = local("alice");
    let (first, second) = (Gpg::new(), Gpg::new());
    let k1 = first.generate(&from, PgpKind::Cv25519, "0", None);
    let k2 = second.generate(&from, PgpKind::Cv25519, "0", None);
    let with_key = |gpg: &Gpg, fpr: &str, date: i64| {
        let fields = [
            dkim_pass(AUTHSERV_ID, REMOTE),
            autocrypt_field(&from, &gpg.export(fpr, false)),
        ];
        plain_with(&from, &to, date, &fields)
    };
    let reply_opens = |gpg: &Gpg, other: &Gpg| {
        let (got, raw) = reply_to(&mx, &from);
        let plain = open_pgp(gpg, &got).unwrap_or_else(|e| panic!("{from}: gpg: {e}"));
        assert_bytes_eq(&plain, &expected_protected_entity(&raw), "PGP/MIME");
        assert!(open_pgp(other, &got).is_err(), "the other key opens it");
    };

    arrives(&mx, &from, &with_key(&first, &k1, now - 3600));
    mx.wait_metric(&harvest_series("learned"), 1.0);
    reply_opens(&first, &second);

    // Written a day earlier (Autocrypt's update rule: the newer effective
    // date wins): counted "older", nothing changes.
    arrives(&mx, &from, &with_key(&second, &k2, now - 86_400));
    mx.wait_metric(&harvest_series("older"), 1.0);
    assert_eq!(site.learned_for(&from), vec![k1.clone()]);
    reply_opens(&first, &second);

    // Written after the first: it replaces it.
    arrives(&mx, &from, &with_key(&second, &k2, now - 60));
    mx.wait_metric(&harvest_series("learned"), 2.0);
    assert_eq!(site.learned_for(&from), vec![k2.clone()]);
    reply_opens(&second, &first);
}

const REQUIRED: &str = r#"
[[rule]]
name = "partner: encryption required, learned keys are enough"
recipient = ["req-learned@partner.autoencrypt.test"]
mode = "required"
min_trust = "learned"

[[rule]]
name = "partner: encryption required, DNSSEC or better"
recipient = ["req-dnssec@partner.autoencrypt.test"]
mode = "required"
"#;

#[test]
fn required_rules_use_learned_keys_only_with_min_trust_learned() {
    let site = Site::new();
    let mx = site.mx(REQUIRED, |_| {});
    let s = &site.scratch;
    let dkim = [dkim_pass(AUTHSERV_ID, REMOTE)];
    let (ok, strict) = (remote("req-learned"), remote("req-dnssec"));
    let ok_id = smime_id(s, "req-learned", &ok);
    let strict_id = smime_id(s, "req-dnssec", &strict);
    for (from, id) in [(&ok, &ok_id), (&strict, &strict_id)] {
        arrives(
            &mx,
            from,
            &smime_signed(s, id, from, &local("alice"), unix_now(), &dkim, true),
        );
    }
    mx.wait_metric(&harvest_series("learned"), 2.0);
    assert_eq!(site.learned_for(&strict), vec![smime_fp(&strict_id)]);

    let (got, raw) = reply_to(&mx, &ok);
    assert_smime_to(s, &got, &raw, &ok_id, &[]);

    // The learned key is below the rule's trust: "no key" (550 5.7.1).
    let raw = mail::reply(&local("alice"), &strict);
    let out = mx.pf.send(&local("alice"), &[&strict], &raw);
    let reply = out.rcpt(&strict);
    assert!(reply.is("550 5.7.1"), "{out}");
    assert!(reply.text().contains("no usable key"), "{out}");
    assert_eq!(mx.pf.maildir_count(&strict), 0);
}

#[test]
fn keys_learned_after_a_reload_are_in_the_store_the_keys_command_reads() {
    let site = Site::new();
    let mx = site.mx_reloadable("");
    let s = &site.scratch;
    let dkim = [dkim_pass(AUTHSERV_ID, REMOTE)];
    let learn = |who: &str, n: f64| {
        let from = remote(who);
        let id = smime_id(s, who, &from);
        arrives(
            &mx,
            &from,
            &smime_signed(s, &id, &from, &local("alice"), unix_now(), &dkim, true),
        );
        mx.wait_metric(&harvest_series("learned"), n);
        (from, id)
    };
    let (before, before_id) = learn("before-reload", 1.0);
    assert_eq!(site.learned_for(&before), vec![smime_fp(&before_id)]);

    // SIGHUP: the same configuration read again, a new engine.
    mx.milter.shared.reload().expect("reload");
    let (first, first_id) = learn("after-reload", 2.0);
    assert_eq!(site.learned_for(&first), vec![smime_fp(&first_id)]);
    // (That `keys list` was another process reading the store.)
    let (second, second_id) = learn("after-keys-list", 3.0);
    assert_eq!(
        site.learned_for(&second),
        vec![smime_fp(&second_id)],
        "learned by the milter, not in the store `keys list` reads"
    );
    let (got, raw) = reply_to(&mx, &second);
    assert_smime_to(s, &got, &raw, &second_id, &[]);
    assert_eq!(site.learned_for(&before), vec![smime_fp(&before_id)]);
}
