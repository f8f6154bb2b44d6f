//! Key changes and store pins, end to end (issue 12): a real Postfix with
//! the milter in process, a SQLite key store of each test's own shared
//! with the `keys` command, the operator's key directory and the DNSSEC
//! test zone (changed and signed again while it is served). Every
//! encrypted copy is decrypted with `openssl cms` and compared byte for
//! byte with what was sent; a key that must not be a recipient is shown
//! not to open it.

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

use std::time::Duration;

use common::{CertSpec, KeyKind, SmimeId};
use harvest_e2e::zone::publish_smimea;
use harvest_e2e::{
    Mx, REFRESH_SECS, Site, assert_plain, assert_smime_to, local, log_lines, remote, replace_file,
    smime_fp, smime_id,
};

const DIRECTORY_CHANGES: &str = "autoencrypt_key_changes_total{source=\"directory\"}";
const PENDING: &str = "autoencrypt_key_changes_pending";

/// The documented staleness of a host's view of the store, and a little:
/// what `keys approve`, `keys pin` and `keys unpin` may take to apply.
fn past_refresh() {
    std::thread::sleep(Duration::from_millis(REFRESH_SECS * 1000 + 300));
}

/// A reply from a local user to `to`: the message and the delivered copy.
fn send(mx: &Mx, to: &str) -> (Vec<u8>, Vec<u8>) {
    let raw = harvest_e2e::mail::reply(&local("alice"), to);
    let got = mx.deliver(&local("alice"), to, &raw);
    (got, raw)
}

/// `id`'s certificate as the operator's key file for `address`.
fn install(site: &Site, address: &str, id: &SmimeId, ext: &str) {
    replace_file(
        &site.key_dir().join(format!("{address}.{ext}")),
        &id.cert.to_pem().unwrap(),
    );
}

#[test]
fn a_changed_key_file_is_logged_counted_and_used_under_accept() {
    let site = Site::new();
    let mx = site.mx("", |_| {});
    let s = &site.scratch;
    let carol = remote("carol");
    let (old, new) = (
        smime_id(s, "carol-old", &carol),
        smime_id(s, "carol-new", &carol),
    );
    install(&site, &carol, &old, "pem");

    let (got, raw) = send(&mx, &carol);
    assert_smime_to(s, &got, &raw, &old, &[&new]);
    assert_eq!(
        mx.metric(DIRECTORY_CHANGES),
        0.0,
        "the first key is no change"
    );

    // The operator replaces the certificate (default on_key_change = "accept").
    install(&site, &carol, &new, "pem");
    let (got, raw) = send(&mx, &carol);
    assert_smime_to(s, &got, &raw, &new, &[&old]);
    assert_eq!(mx.metric(DIRECTORY_CHANGES), 1.0);
    let logged = log_lines(&[&carol, "returned a new", &smime_fp(&new)]);
    assert!(
        logged.iter().any(|l| l.contains("accept")),
        "the key change is not logged: {logged:?}\n{}",
        harvest_e2e::logs()
    );
    // Once known, the same key is no change.
    let (got, raw) = send(&mx, &carol);
    assert_smime_to(s, &got, &raw, &new, &[&old]);
    assert_eq!(mx.metric(DIRECTORY_CHANGES), 1.0);
}

fn review_policy(address: &str) -> String {
    format!(
        r#"
[[rule]]
name = "partner: key changes reviewed"
recipient = ["{address}"]
methods = ["smime"]
mode = "required"
on_key_change = "review"
"#
    )
}

#[test]
fn under_review_mail_goes_to_the_previous_key_until_approved() {
    let site = Site::new();
    let dave = remote("dave");
    let mx = site.mx(&review_policy(&dave), |_| {});
    let s = &site.scratch;
    let (old, new) = (
        smime_id(s, "dave-old", &dave),
        smime_id(s, "dave-new", &dave),
    );
    install(&site, &dave, &old, "pem");
    let (got, raw) = send(&mx, &dave);
    assert_smime_to(s, &got, &raw, &old, &[&new]);

    install(&site, &dave, &new, "pem");
    let (got, raw) = send(&mx, &dave);
    assert_smime_to(s, &got, &raw, &old, &[&new]);
    // Still held a refresh later (this lookup also has the pins, and the
    // pending-changes gauge with them, read again).
    past_refresh();
    let (got, raw) = send(&mx, &dave);
    assert_smime_to(s, &got, &raw, &old, &[&new]);
    assert_eq!(mx.metric(DIRECTORY_CHANGES), 1.0);
    let logged = log_lines(&[&dave, "returned a new", &smime_fp(&new)]);
    assert!(
        logged.iter().any(|l| l.contains("review")),
        "the held key change is not logged: {logged:?}"
    );
    let changes = site.keys_ok(&["changes"]);
    assert!(
        changes
            .lines()
            .any(|l| l.starts_with(&format!("{dave} smime directory"))
                && l.contains(&smime_fp(&new))
                && l.contains("pending")),
        "keys changes:\n{changes}"
    );
    // The gauge tells the operator (it is read with the pins).
    mx.wait_metric(PENDING, 1.0);

    site.keys_ok(&["approve", &dave, &smime_fp(&new)]);
    past_refresh();
    let (got, raw) = send(&mx, &dave);
    assert_smime_to(s, &got, &raw, &new, &[&old]);
    mx.wait_metric_until(PENDING, "back to 0 after the approval", |v| v == 0.0);
    assert_eq!(site.keys(&["changes"]).status.code(), Some(1));
}

#[test]
fn a_held_change_whose_previous_key_expired_defers_and_loses_nothing() {
    let site = Site::new();
    let erin = remote("erin");
    let policy = review_policy(&erin);
    let s = &site.scratch;
    // Valid for a few seconds only.
    let lifetime = 6;
    let short = SmimeId::generate(
        &s.work,
        "erin-short",
        &CertSpec {
            not_after: lifetime,
            ..CertSpec::good(&erin, KeyKind::Rsa)
        },
    );
    let made = std::time::Instant::now();
    let new = smime_id(s, "erin-new", &erin);
    install(&site, &erin, &short, "pem");
    {
        let mx = site.mx(&policy, |_| {});
        let (got, raw) = send(&mx, &erin);
        assert!(made.elapsed().as_secs() < u64::try_from(lifetime).unwrap());
        assert_smime_to(s, &got, &raw, &short, &[&new]);
    }
    // The key approved before has expired; its file is replaced. A fresh
    // milter (a restart; it has validated nothing yet) on the same store.
    std::thread::sleep(
        Duration::from_secs(u64::try_from(lifetime).unwrap() + 1).saturating_sub(made.elapsed()),
    );
    install(&site, &erin, &new, "pem");
    let mx = site.mx(&policy, |_| {});
    let raw = harvest_e2e::mail::reply(&local("alice"), &erin);
    let out = mx.pf.send(&local("alice"), &[&erin], &raw);
    let reply = out.rcpt(&erin);
    assert!(reply.is("451 4.7.1"), "{out}");
    assert!(reply.text().contains("awaiting review"), "{out}");
    assert_eq!(mx.pf.maildir_count(&erin), 0);
    assert!(mx.pf.queue_is_empty(), "{}", mx.pf.postqueue());

    // The operator approves; the client's retry goes through, to the new key.
    site.keys_ok(&["approve", &erin, &smime_fp(&new)]);
    past_refresh();
    let got = mx.deliver(&local("alice"), &erin, &raw);
    assert_smime_to(s, &got, &raw, &new, &[&short]);
}

const PINNED: &str = r#"
[[rule]]
name = "pinned partners: required"
recipient = ["frank@partner.autoencrypt.test", "grace@partner.autoencrypt.test"]
methods = ["smime"]
mode = "required"

[[rule]]
name = "pinned partner: required, tempfail"
recipient = ["heidi@partner.autoencrypt.test"]
methods = ["smime"]
mode = "required"
on_missing_key = "tempfail"
"#;

#[test]
fn a_store_pin_allows_only_the_pinned_key() {
    let site = Site::new();
    let s = &site.scratch;
    let id = |who: &str, label: &str| smime_id(s, &format!("{who}-{label}"), &remote(who));
    // frank: two certificates in the directory, one pinned; the others:
    // the directory's certificate is not the pinned one.
    let (frank_a, frank_b) = (id("frank", "a"), id("frank", "b"));
    install(&site, &remote("frank"), &frank_a, "pem");
    install(&site, &remote("frank"), &frank_b, "crt");
    let mut served = Vec::new();
    for who in ["grace", "heidi", "ivan"] {
        let (dir_key, pinned) = (id(who, "dir"), id(who, "pinned"));
        install(&site, &remote(who), &dir_key, "pem");
        site.keys_ok(&["pin", &remote(who), &smime_fp(&pinned)]);
        served.push(dir_key);
    }
    // Lower case with colons, as an operator may paste it.
    let colons = smime_fp(&frank_a)
        .to_lowercase()
        .as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(":");
    site.keys_ok(&["pin", &remote("frank"), &colons]);
    let mx = site.mx(PINNED, |_| {});

    let frank = remote("frank");
    let (got, raw) = send(&mx, &frank);
    assert_smime_to(s, &got, &raw, &frank_a, &[&frank_b]);

    // The directory's key is not the pinned one: the rule's outcome for
    // "no usable key", never that key.
    for (who, code) in [("grace", "550 5.7.1"), ("heidi", "450 4.7.1")] {
        let to = remote(who);
        let raw = harvest_e2e::mail::reply(&local("alice"), &to);
        let out = mx.pf.send(&local("alice"), &[&to], &raw);
        assert!(out.rcpt(&to).is(code), "{to}: {out}");
        assert_eq!(mx.pf.maildir_count(&to), 0, "{to}");
    }
    let ivan = remote("ivan");
    let (got, raw) = send(&mx, &ivan);
    assert_plain(&got, &raw, "opportunistic, pinned to a key not found");

    // Unpinned (before this milter reads the store again: a restart).
    drop(mx);
    site.keys_ok(&["unpin", &remote("grace")]);
    let mx = site.mx(PINNED, |_| {});
    let (got, raw) = send(&mx, &remote("grace"));
    assert_smime_to(s, &got, &raw, &served[0], &[]);
}

#[test]
fn a_pin_set_or_lifted_while_running_applies_within_refresh_secs() {
    let site = Site::new();
    let s = &site.scratch;
    let judy = remote("judy");
    let (a, b) = (smime_id(s, "judy-a", &judy), smime_id(s, "judy-b", &judy));
    install(&site, &judy, &a, "pem");
    install(&site, &judy, &b, "crt");
    let mx = site.mx("", |_| {});
    let (got, raw) = send(&mx, &judy);
    assert_smime_to(s, &got, &raw, &a, &[]);
    assert_smime_to(s, &got, &raw, &b, &[]);

    site.keys_ok(&["pin", &judy, &smime_fp(&a)]);
    past_refresh();
    let (got, raw) = send(&mx, &judy);
    assert_smime_to(s, &got, &raw, &a, &[&b]);

    site.keys_ok(&["unpin", &judy]);
    past_refresh();
    let (got, raw) = send(&mx, &judy);
    assert_smime_to(s, &got, &raw, &b, &[]);
}

#[test]
fn a_pinned_address_whose_dns_key_changes_is_not_encrypted_to_the_new_key() {
    let site = Site::new();
    let s = &site.scratch;
    let (strict, loose) = (remote("dns-strict"), remote("dns-loose"));
    let mut old = Vec::new();
    let mut new = Vec::new();
    for who in [&strict, &loose] {
        let (o, n) = (
            smime_id(s, &format!("{who}-old"), who),
            smime_id(s, &format!("{who}-new"), who),
        );
        // A short TTL: the milter's DNS cache lets go of it in seconds.
        publish_smimea(&site.dns, who, &o.cert.to_der().unwrap(), 2);
        site.keys_ok(&["pin", who, &smime_fp(&o)]);
        old.push(o);
        new.push(n);
    }
    let policy = format!(
        "[[rule]]\nname = \"pinned, DNSSEC\"\nrecipient = [\"{strict}\"]\nmethods = [\"smime\"]\nmode = \"required\"\n"
    );
    let mx = site.mx(&policy, |_| {});
    for (who, o) in [(&strict, &old[0]), (&loose, &old[1])] {
        let (got, raw) = send(&mx, who);
        assert_smime_to(s, &got, &raw, o, &[]);
    }

    // The zone now publishes other certificates for both.
    for (who, n) in [(&strict, &new[0]), (&loose, &new[1])] {
        publish_smimea(&site.dns, who, &n.cert.to_der().unwrap(), 2);
    }
    std::thread::sleep(Duration::from_millis(2_500));
    let raw = harvest_e2e::mail::reply(&local("alice"), &strict);
    let out = mx.pf.send(&local("alice"), &[&strict], &raw);
    assert!(out.rcpt(&strict).is("550 5.7.1"), "{out}");
    assert_eq!(mx.pf.maildir_count(&strict), 1);
    let (got, raw) = send(&mx, &loose);
    assert_plain(
        &got,
        &raw,
        "opportunistic, the DNS key is not the pinned one",
    );

    // Unpinned, the new DNS key is used: the refusal was the pin's.
    drop(mx);
    site.keys_ok(&["unpin", &strict]);
    let mx = site.mx(&policy, |_| {});
    let (got, raw) = send(&mx, &strict);
    assert_smime_to(s, &got, &raw, &new[0], &[&old[0]]);
}
