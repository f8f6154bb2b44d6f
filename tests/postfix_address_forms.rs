//! Issue 9 items 2 and 3 through a real Postfix (tests/env/postfix-up):
//! both spellings of an IDN domain reach the same `required` rule (an
//! SMTPUTF8 U-label RCPT and an A-label RCPT, for a rule written either
//! way), and recipients Postfix accepts — `postmaster`, `Postmaster`,
//! `alice`, a source route, an IP literal — get a policy outcome, not the
//! endless `451 4.3.0` of before. Every encrypted copy is decrypted with
//! `openssl cms` and compared with what was sent.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod common;
#[path = "env/mod.rs"]
mod env;
#[path = "env/milter.rs"]
mod milter;
#[path = "env/postfix.rs"]
mod postfix;

use std::path::Path;
use std::time::Duration;

use common::{CertSpec, KeyKind, Scratch, SmimeId, expected_protected_entity, smime_decrypt};
use env::DnsEnv;
use milter::InProcessMilter;
use postfix::{PostfixEnv, SmtpOutcome, header_and_body, lf, strip_delivery_headers};

const WAIT: Duration = Duration::from_secs(30);

/// One rule written with the A-label, one with the U-label; a local
/// domain; outbound is strict, so an IP literal shows the no-key outcome.
const POLICY: &str = r#"
[[rule]]
name = "role accounts"
recipient = ["postmaster@*"]
methods = []

[[rule]]
name = "buecher required"
recipient = ["*@xn--bcher-kva.autoencrypt.test"]
methods = ["smime"]
mode = "required"

[[rule]]
name = "mueller required"
recipient = ["*@müller.autoencrypt.test"]
methods = ["smime"]
mode = "required"

[[rule]]
name = "local ceo required"
direction = "inbound"
recipient = ["ceo@mx.autoencrypt.test"]
methods = ["smime"]
mode = "required"

[[rule]]
name = "inbound opportunistic"
direction = "inbound"

[[rule]]
name = "outbound required"
direction = "outbound"
mode = "required"
"#;

/// The milter (trust-ad mode against unbound) with `keys` as its key
/// directory and Postfix's `$myorigin` as the local domain.
fn milter(env: &DnsEnv, keys: &Path) -> InProcessMilter {
    milter_with_policy(env, keys, POLICY)
}

fn milter_with_policy(env: &DnsEnv, keys: &Path, policy: &str) -> InProcessMilter {
    InProcessMilter::trust_ad_on_thread(env.resolver(), policy, |config| {
        config.local_domains = vec!["mx.autoencrypt.test".into()];
        config.keys.directory = Some(keys.to_path_buf());
    })
}
fn message(to: &str, body: &str) -> Vec<u8> {
    format!(
        "From: sender@example.net\r\nTo: {to}\r\nSubject: address forms\r\nMessage-ID: <{}@example.net>\r\nDate: Sun, 22 Nov 2026 07:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Sends with `MAIL FROM:<…> SMTPUTF8`, as a client must for a U-label.
fn send_utf8(pf: &PostfixEnv, to: &str, msg: &[u8]) -> SmtpOutcome {
    let mut s = pf.session();
    let out = s.send_with_params("sender@example.net", " SMTPUTF8", &[to], msg);
    s.quit();
    out
}

/// The newest copy for `rcpt`, once `n` have arrived.
fn newest_for(pf: &PostfixEnv, rcpt: &str, n: usize) -> Vec<u8> {
    let mail = pf.expect_mail(rcpt, n, WAIT);
    mail.last().unwrap().clone()
}

/// The first copy delivered after `before` copies, whoever it is for.
fn next_delivery(pf: &PostfixEnv, before: usize) -> Vec<u8> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let all = pf.all_mail();
        if all.len() > before {
            return all[before].raw.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nothing delivered: {}",
            pf.maillog()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_smime(id: &SmimeId, delivered: &[u8], sent: &[u8]) {
    let msg = strip_delivery_headers(delivered);
    let (header, body) = header_and_body(msg);
    let header = String::from_utf8_lossy(header).to_ascii_lowercase();
    assert!(
        header.contains("application/pkcs7-mime"),
        "expected S/MIME, got:\n{}",
        String::from_utf8_lossy(delivered)
    );
    let b64: String = String::from_utf8_lossy(body)
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let der = openssl::base64::decode_block(&b64).expect("base64 body");
    let plain = smime_decrypt(&Scratch::new(), &der, "DER", id).unwrap();
    assert_eq!(
        plain,
        expected_protected_entity(sent),
        "decrypted entity differs"
    );
    assert!(
        !String::from_utf8_lossy(msg).contains("secret"),
        "secret text readable in the Maildir copy"
    );
}

#[test]
fn both_idn_spellings_meet_the_same_required_rule() {
    let env = DnsEnv::start();
    let work = tempfile::tempdir().unwrap();
    let keys = work.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    // One certificate per domain; the key files are named once with the
    // U-label (found as a fallback) and once with the A-label.
    let buecher = SmimeId::generate(
        work.path(),
        "buecher",
        &CertSpec::good("x@xn--bcher-kva.autoencrypt.test", KeyKind::Rsa),
    );
    std::fs::copy(
        &buecher.cert_path,
        keys.join("x@bücher.autoencrypt.test.pem"),
    )
    .unwrap();
    let mueller = SmimeId::generate(
        work.path(),
        "mueller",
        &CertSpec::good("x@xn--mller-kva.autoencrypt.test", KeyKind::Rsa),
    );
    std::fs::copy(
        &mueller.cert_path,
        keys.join("x@xn--mller-kva.autoencrypt.test.pem"),
    )
    .unwrap();
    let m = milter(&env, &keys);
    let pf = PostfixEnv::start(Some(m.addr));

    // Rule written with the A-label, RCPT with the U-label (and back);
    // rule written with the U-label, RCPT with the A-label (and back).
    for (id, rcpts) in [
        (
            &buecher,
            [
                "x@bücher.autoencrypt.test",
                "x@XN--BCHER-KVA.autoencrypt.test",
                "x@b\u{fc}cher\u{3002}autoencrypt.test.",
            ],
        ),
        (
            &mueller,
            [
                "x@xn--mller-kva.autoencrypt.test",
                "X@MÜLLER.autoencrypt.test",
                "x@\u{ff4d}\u{fc}ller.autoencrypt.test",
            ],
        ),
    ] {
        for rcpt in rcpts {
            let sent = message(rcpt, "the secret plan\r\n");
            let before = pf.all_mail().len();
            let out = send_utf8(&pf, rcpt, &sent);
            assert!(out.accepted(), "{rcpt}: {out}");
            // Postfix may rewrite the odd spellings in Delivered-To: take
            // the next copy delivered at all.
            assert_smime(id, &next_delivery(&pf, before), &sent);
        }
    }
    // No key at either spelling (the signed zone proves the SMIMEA
    // absent): the required rule refuses, 550 5.7.1, for both spellings
    // of both domains.
    for rcpt in [
        "nokey@bücher.autoencrypt.test",
        "nokey@xn--bcher-kva.autoencrypt.test",
        "nokey@müller.autoencrypt.test",
        "nokey@XN--MLLER-KVA.autoencrypt.test",
    ] {
        let out = send_utf8(&pf, rcpt, &message(rcpt, "the secret plan\r\n"));
        assert!(out.rcpt(rcpt).is("550 5.7.1"), "{rcpt}: {out}");
        assert_eq!(pf.maildir_count(rcpt), 0, "{rcpt}");
    }
    // A domain without a canonical form: permanent 550 5.1.3 from the
    // milter at RCPT, not a 451 retried until the queue lifetime ends.
    let rcpt = "x@xn--zz.autoencrypt.test";
    let out = send_utf8(&pf, rcpt, &message(rcpt, "x\r\n"));
    assert!(
        out.rcpt(rcpt).is("550 5.1.3 Bad recipient address syntax"),
        "{out}"
    );
    // An overlong label: Postfix refuses it itself (501 5.1.3); the
    // milter's unit tests cover the same refusal.
    let rcpt = format!("x@{}.test", "a".repeat(64));
    let out = send_utf8(&pf, &rcpt, &message(&rcpt, "x\r\n"));
    let r = out.rcpt(&rcpt);
    assert!(r.is_permanent() && r.enhanced() == Some("5.1.3"), "{out}");
    assert!(pf.wait_queue_empty(WAIT), "{}", pf.postqueue());
}

#[test]
fn recipients_postfix_accepts_get_a_policy_outcome() {
    let env = DnsEnv::start();
    let keys = tempfile::tempdir().unwrap();
    let m = milter(&env, keys.path());
    let pf = PostfixEnv::start(Some(m.addr));

    // postmaster in any spelling: exempt by the role-account rule.
    for rcpt in ["postmaster", "Postmaster"] {
        let sent = message(rcpt, "hello postmaster\r\n");
        let before = pf.maildir_count("postmaster@mx.autoencrypt.test");
        let out = pf.send("sender@example.net", &[rcpt], &sent);
        assert!(out.accepted(), "{rcpt}: {out}");
        let copy = newest_for(&pf, "postmaster@mx.autoencrypt.test", before + 1);
        assert_eq!(strip_delivery_headers(&copy), lf(&sent).as_slice());
    }
    // alice: local, inbound opportunistic, no key → delivered as sent.
    let sent = message("alice", "hello alice\r\n");
    let out = pf.send("sender@example.net", &["alice"], &sent);
    assert!(out.accepted(), "{out}");
    let copy = newest_for(&pf, "alice@mx.autoencrypt.test", 1);
    assert_eq!(strip_delivery_headers(&copy), lf(&sent).as_slice());
    // ceo: domain-less, but the required rule for ceo@<local domain>
    // applies: no key → 550 5.7.1, never plaintext.
    let out = pf.send("sender@example.net", &["ceo"], &message("ceo", "x\r\n"));
    assert!(out.rcpt("ceo").is("550 5.7.1"), "{out}");

    // A source route reduces to its final address: both@ has an SMIMEA,
    // so it is encrypted for both@ and decrypts with both@'s key.
    let route = "@relay.example,@b.example:both@autoencrypt.test";
    let sent = message("both@autoencrypt.test", "the secret route\r\n");
    let out = pf.send("sender@example.net", &[route], &sent);
    assert!(out.accepted(), "{out}");
    let copy = newest_for(&pf, "both@autoencrypt.test", 1);
    let u = env.user("both");
    let id = SmimeId::from_files(u.cert.as_ref().unwrap(), u.key.as_ref().unwrap());
    assert_smime(&id, &copy, &sent);

    // IP literals: no key source can answer, and no DNS query is sent;
    // the outbound rule is required, so its no-key outcome is 550 5.7.1.
    let queries = env.unbound_queries();
    for rcpt in ["alice@[192.0.2.1]", "alice@[IPv6:2001:db8::1]"] {
        let out = pf.send("sender@example.net", &[rcpt], &message(rcpt, "x\r\n"));
        assert!(out.rcpt(rcpt).is("550 5.7.1"), "{rcpt}: {out}");
    }
    assert_eq!(env.unbound_queries(), queries, "a DNS query for a literal");
    assert!(pf.wait_queue_empty(WAIT), "{}", pf.postqueue());
}

/// Routing operators in a local part: Postfix rewrites `site!user` to
/// `user@site` (`swap_bangpath`) and resolves a quoted `"user@site"`
/// (`resolve_dequoted_address`), `user%site@local` too (`allow_percent_hack`)
/// — so the mail goes to `site`, while the milter saw a domain-less (or
/// local) recipient and applied the local rule. nokey@autoencrypt.test is
/// under the `outbound required` rule: before, these spellings delivered it
/// in plaintext. Now they are refused at RCPT (550 5.1.3) and nothing is
/// delivered.
#[test]
fn routing_in_the_local_part_cannot_dodge_a_required_rule() {
    let env = DnsEnv::start();
    let keys = tempfile::tempdir().unwrap();
    let m = milter(&env, keys.path());
    let pf = PostfixEnv::start(Some(m.addr));
    // The plain spelling: required, no key → refused.
    let out = pf.send(
        "sender@example.net",
        &["nokey@autoencrypt.test"],
        &message("nokey@autoencrypt.test", "the secret plan\r\n"),
    );
    assert!(out.rcpt("nokey@autoencrypt.test").is("550 5.7.1"), "{out}");
    for rcpt in [
        "autoencrypt.test!nokey",
        "\"nokey@autoencrypt.test\"",
        "nokey%autoencrypt.test@mx.autoencrypt.test",
        "\"nokey@autoencrypt.test\"@mx.autoencrypt.test",
    ] {
        let out = pf.send(
            "sender@example.net",
            &[rcpt],
            &message(rcpt, "the secret plan\r\n"),
        );
        assert!(
            out.rcpt(rcpt).is("550 5.1.3"),
            "{rcpt}: {out}\n{}",
            pf.maillog()
        );
    }
    assert!(pf.wait_queue_empty(WAIT), "{}", pf.postqueue());
    for mail in pf.all_mail() {
        assert!(
            !String::from_utf8_lossy(&mail.raw).contains("secret"),
            "delivered in plaintext:\n{}",
            String::from_utf8_lossy(&mail.raw)
        );
    }
}

/// Postfix delivers `user@[its own address]` locally (relay=local: a
/// literal of `inet_interfaces` is a local domain). With an opportunistic
/// outbound rule, `RCPT TO:<ceo@[127.0.0.1]>` used to be accepted and
/// passed in plaintext although the inbound rule for ceo@ is required;
/// now the required rule applies (no key for a literal → 550 5.7.1).
#[test]
fn an_address_literal_cannot_dodge_a_required_local_rule() {
    const LITERAL_POLICY: &str = r#"
[[rule]]
name = "local ceo required"
direction = "inbound"
recipient = ["ceo@mx.autoencrypt.test"]
methods = ["smime"]
mode = "required"

[[rule]]
name = "outbound opportunistic"
direction = "outbound"
"#;
    let env = DnsEnv::start();
    let keys = tempfile::tempdir().unwrap();
    let m = milter_with_policy(&env, keys.path(), LITERAL_POLICY);
    let pf = PostfixEnv::start(Some(m.addr));
    for rcpt in ["ceo@[127.0.0.1]", "CEO@[127.0.0.1]"] {
        let out = pf.send(
            "sender@example.net",
            &[rcpt],
            &message(rcpt, "the secret plan\r\n"),
        );
        assert!(out.rcpt(rcpt).is("550 5.7.1"), "{rcpt}: {out}");
    }
    // Another literal is not the local ceo: its own rule (opportunistic,
    // no key) passes it, as before.
    let rcpt = "alice@[127.0.0.1]";
    let out = pf.send("sender@example.net", &[rcpt], &message(rcpt, "hello\r\n"));
    assert!(out.accepted(), "{out}");
}

/// Postfix drops RFC 5322 comments and white space in MAIL FROM (its log
/// says from=<sender@example.net>) but hands the milter the text as sent:
/// `<sender(c)@example.net>` used to be unparseable there, match no
/// sender glob and dodge a required rule for mail from example.net.
#[test]
fn a_commented_sender_cannot_dodge_a_required_sender_rule() {
    const SENDER_POLICY: &str = r#"
[[rule]]
name = "from example.net required"
sender = ["*@example.net"]
methods = ["smime"]
mode = "required"
"#;
    let env = DnsEnv::start();
    let keys = tempfile::tempdir().unwrap();
    let m = milter_with_policy(&env, keys.path(), SENDER_POLICY);
    let pf = PostfixEnv::start(Some(m.addr));
    let rcpt = "nokey@autoencrypt.test";
    for from in [
        "sender@example.net",
        "sender(comment)@example.net",
        "sender @example.net",
        "sender@(c)example.net",
        "\"sender\"@example.net",
    ] {
        let out = pf.send(from, &[rcpt], &message(rcpt, "the secret plan\r\n"));
        assert!(out.rcpt(rcpt).is("550 5.7.1"), "{from}: {out}");
    }
    assert_eq!(pf.maildir_count(rcpt), 0);
}
