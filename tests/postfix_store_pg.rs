//! A fleet on one PostgreSQL key store, end to end: milter processes (the
//! built binary, each with its own configuration, socket and metrics
//! endpoint) behind real Postfix instances, one real PostgreSQL
//! (tests/env/pg-up: its own cluster on a loopback port, stopped by PID)
//! and the DNSSEC test zone. Each host has its own Postfix instance (host
//! A's takes the inbound mail, both send outbound mail). Every encrypted
//! copy is decrypted with `openssl cms` and compared byte for byte with
//! what was sent.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod common;
#[path = "env/mod.rs"]
mod env;
mod fleet;
#[path = "env/pg.rs"]
mod pg;
#[path = "env/postfix.rs"]
mod postfix;

use std::time::{Duration, Instant};

use autoencrypt_milter::Method;
use autoencrypt_milter::backend::key_fingerprint;
use autoencrypt_milter::harvest::PAUSE;
use common::{CertSpec, KeyKind, Scratch, SmimeId, expected_protected_entity, smime_decrypt};
use env::DnsEnv;
use fleet::{Host, HostSpec, LOCAL_DOMAIN, REFRESH, flush, plain_message, signed_message};
use pg::PgEnv;
use postfix::{PostfixEnv, SmtpOutcome, header_and_body, lf, strip_delivery_headers};

const WAIT: Duration = Duration::from_secs(30);

/// Inbound mail is delivered as received (its keys are learned); mail to
/// partners uses only the key they sent us: `partner.example`
/// opportunistically (lookup errors tempfail, the default),
/// `lenient.example` opportunistically with lookup errors passing,
/// `strict.example` required. Everything else takes the built-in rule
/// (DNSSEC first).
const POLICY: &str = r#"
[[rule]]
name = "inbound: delivered as received"
direction = "inbound"
methods = []

[[rule]]
name = "partners: the key they sent us"
direction = "outbound"
recipient = ["*@partner.example"]
methods = ["smime"]
sources = ["learned"]

[[rule]]
name = "lenient partners: the key they sent us, else as sent"
direction = "outbound"
recipient = ["*@lenient.example"]
methods = ["smime"]
sources = ["learned"]
on_lookup_error = "pass"

[[rule]]
name = "strict partners: the key they sent us or nothing"
direction = "outbound"
recipient = ["*@strict.example"]
methods = ["smime"]
mode = "required"
sources = ["learned"]
min_trust = "learned"
"#;

const ALICE: &str = "alice@partner.example";
const CAROL: &str = "carol@lenient.example";
const SAM: &str = "sam@strict.example";
const SENDER: &str = "user@local.example";
const LEARNED: &str = r#"autoencrypt_harvest_messages_total{result="learned"}"#;
const STORE_FAILED: &str = r#"autoencrypt_harvest_messages_total{result="store_failed"}"#;
const PAUSED: &str = "autoencrypt_harvest_paused";

fn inbox() -> String {
    format!("postmaster@{LOCAL_DOMAIN}")
}

/// A host with its own Postfix instance in front of it.
struct Site {
    pf: PostfixEnv,
    host: Host,
}

impl Site {
    fn start(name: &str, pg: &PgEnv, dns: &DnsEnv) -> Site {
        let host = Host::start(&HostSpec {
            name,
            store_url: pg.url("aem"),
            password_file: &pg.password_file(),
            resolver: dns.resolver(),
            policy: POLICY,
        });
        let pf = PostfixEnv::start(Some(host.addr));
        Site { pf, host }
    }

    /// The milter's log and Postfix's, for failure messages.
    fn logs(&self) -> String {
        format!(
            "\n--- milter {} ---\n{}\n--- maillog ---\n{}",
            self.host.name,
            self.host.log(),
            self.pf.maillog()
        )
    }

    /// One message from [`SENDER`] over SMTP.
    fn send(&self, to: &str, raw: &[u8]) -> SmtpOutcome {
        self.pf.send(SENDER, &[to], raw)
    }

    /// `id`'s signed message arrives inbound; waits until the host counted
    /// `learned` keys learned in all.
    fn teach(&self, scratch: &Scratch, id: &SmimeId, from: &str, learned: f64) {
        let tag = format!("{}-{}", self.host.name, from.replace('@', "."));
        let msg = signed_message(scratch, id, from, &inbox(), &tag);
        let out = self.pf.send(from, &[&inbox()], &msg);
        assert!(
            out.accepted(),
            "inbound signed mail from {from}: {out}{}",
            self.logs()
        );
        self.host.wait_metric(LEARNED, learned, WAIT);
    }

    /// The delivered copy for `to` whose Message-ID carries `tag`, waiting
    /// for it.
    fn copy(&self, to: &str, tag: &str) -> Vec<u8> {
        fleet::wait_until(WAIT, &format!("a copy of {tag} for {to}"), || {
            self.pf.mail_for(to).into_iter().find(|m| {
                let (h, _) = header_and_body(strip_delivery_headers(m));
                common::find(h, format!("<{tag}.").as_bytes()).is_some()
            })
        })
        .unwrap_or_else(|why| panic!("{why}{}", self.logs()))
    }

    /// Sends `tag` to `to` and checks that the copy delivered is S/MIME
    /// that `id` decrypts to the inner entity sent, byte for byte.
    fn assert_encrypted(&self, scratch: &Scratch, to: &str, id: &SmimeId, tag: &str) {
        let raw = plain_message(to, tag);
        let out = self.send(to, &raw);
        assert!(out.accepted(), "{tag} to {to}: {out}{}", self.logs());
        self.assert_opens(scratch, &self.copy(to, tag), id, &raw, tag);
    }

    fn assert_opens(
        &self,
        scratch: &Scratch,
        delivered: &[u8],
        id: &SmimeId,
        raw: &[u8],
        tag: &str,
    ) {
        let msg = strip_delivery_headers(delivered);
        let (h, _) = header_and_body(msg);
        assert!(
            String::from_utf8_lossy(h)
                .to_ascii_lowercase()
                .contains("application/pkcs7-mime"),
            "{tag}: not S/MIME encrypted:\n{}{}",
            String::from_utf8_lossy(delivered),
            self.logs()
        );
        let plain = smime_decrypt(scratch, msg, "SMIME", id)
            .unwrap_or_else(|e| panic!("{tag}: {e}{}", self.logs()));
        assert_eq!(
            plain,
            expected_protected_entity(raw),
            "{tag}: decrypted entity"
        );
    }

    /// Sends `tag` to `to` and checks it is delivered as sent.
    fn assert_passed(&self, to: &str, tag: &str) {
        let raw = plain_message(to, tag);
        let out = self.send(to, &raw);
        assert!(out.accepted(), "{tag} to {to}: {out}{}", self.logs());
        let got = self.copy(to, tag);
        assert!(
            lf(strip_delivery_headers(&got)) == lf(&raw),
            "{tag}: not delivered as sent:\n{}{}",
            String::from_utf8_lossy(&got),
            self.logs()
        );
    }

    /// Sends `tag` to `to` and checks the RCPT reply starts with `reply`.
    fn assert_refused(&self, to: &str, tag: &str, reply: &str) {
        let out = self.send(to, &plain_message(to, tag));
        assert!(
            out.rcpt(to).is(reply),
            "{tag} to {to}: {out}{}",
            self.logs()
        );
    }
}

/// A new self-signed certificate for `address` (files named after `label`).
fn identity(scratch: &Scratch, address: &str, label: &str) -> SmimeId {
    SmimeId::generate(&scratch.work, label, &CertSpec::good(address, KeyKind::Rsa))
}

fn fingerprint(id: &SmimeId) -> String {
    key_fingerprint(Method::Smime, &id.cert.to_der().unwrap()).unwrap()
}

fn learned_fingerprint(pg: &PgEnv, address: &str) -> String {
    pg.psql(
        "aem",
        &format!(
            "SELECT fingerprint FROM learned_keys WHERE address = '{address}' AND method = 'smime'"
        ),
    )
}

#[test]
fn a_key_learned_on_one_host_is_used_by_the_other_and_a_pin_takes_effect_on_both() {
    let dns = DnsEnv::start();
    let pg = PgEnv::start();
    let scratch = Scratch::new();
    let a = Site::start("a", &pg, &dns);
    let b = Site::start("b", &pg, &dns);
    let alice = identity(&scratch, ALICE, "alice");
    let sam = identity(&scratch, SAM, "sam");

    // Signed mail arrives at host A only: A learns both certificates,
    // into the one store.
    a.teach(&scratch, &alice, ALICE, 1.0);
    a.teach(&scratch, &sam, SAM, 2.0);
    assert_eq!(learned_fingerprint(&pg, ALICE), fingerprint(&alice));
    assert_eq!(learned_fingerprint(&pg, SAM), fingerprint(&sam));
    assert_eq!(b.host.metric(LEARNED), 0.0, "host B learned nothing itself");
    a.pf.expect_mail(&inbox(), 2, WAIT);

    // Host B encrypts to what A learned; so does A.
    for site in [&b, &a] {
        let name = &site.host.name;
        site.assert_encrypted(&scratch, ALICE, &alice, &format!("{name}-alice-learned"));
        site.assert_encrypted(&scratch, SAM, &sam, &format!("{name}-sam-learned"));
    }

    // Pins set with the CLI (one through each host's configuration) for
    // fingerprints that are not the learned ones.
    let alice_new = identity(&scratch, ALICE, "alice-new");
    let sam_new = identity(&scratch, SAM, "sam-new");
    for (site, who, id) in [(&a, ALICE, &alice_new), (&b, SAM, &sam_new)] {
        let out = site
            .host
            .keys(&["pin", who, &fingerprint(id), "--note", "fleet test"]);
        assert!(
            out.status.success(),
            "keys pin {who}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(
        pg.psql(
            "aem",
            "SELECT address || ' ' || fingerprint FROM pins ORDER BY address"
        ),
        format!(
            "{ALICE} {}\n{SAM} {}",
            fingerprint(&alice_new),
            fingerprint(&sam_new)
        )
    );

    // Within refresh_secs (and a margin) every host knows the pins
    // (`store.refresh_secs`: re-read at least this often, so a `keys pin`
    // takes effect on every host within it), even the first message after
    // a quiet spell: the learned keys are not pinned, so they are never
    // used. Opportunistic partner: passed as sent; required: refused.
    std::thread::sleep(REFRESH + Duration::from_secs(1));
    for site in [&a, &b] {
        let name = &site.host.name;
        site.assert_passed(ALICE, &format!("{name}-alice-pinned"));
        site.assert_refused(SAM, &format!("{name}-sam-pinned"), "550 5.7.1");
    }
    assert_eq!(a.pf.maildir_count(SAM) + b.pf.maildir_count(SAM), 2);
}

#[test]
fn postgres_down_mid_run_dnssec_mail_is_encrypted_learned_only_mail_follows_on_lookup_error_and_harvesting_pauses()
 {
    let dns = DnsEnv::start();
    let mut pg = PgEnv::start();
    let scratch = Scratch::new();
    let h = Site::start("h", &pg, &dns);
    let u = dns.user("both");
    let both = SmimeId::from_files(u.cert.as_ref().unwrap(), u.key.as_ref().unwrap());
    let alice = identity(&scratch, ALICE, "alice");
    let carol = identity(&scratch, CAROL, "carol");
    h.teach(&scratch, &alice, ALICE, 1.0);
    h.teach(&scratch, &carol, CAROL, 2.0);
    // Running: the store was read (pins, history, learned keys).
    h.assert_encrypted(&scratch, &u.address, &both, "up-both");
    h.assert_encrypted(&scratch, ALICE, &alice, "up-alice");
    h.assert_encrypted(&scratch, CAROL, &carol, "up-carol");

    pg.stop();
    // A signed message while the store is down: not learned, harvesting
    // pauses, the message itself is delivered.
    let dave = identity(&scratch, "dave@partner.example", "dave");
    let msg = signed_message(
        &scratch,
        &dave,
        "dave@partner.example",
        &inbox(),
        "down-dave",
    );
    let out = h.pf.send("dave@partner.example", &[&inbox()], &msg);
    assert!(
        out.accepted(),
        "inbound while the store is down: {out}{}",
        h.logs()
    );
    h.host.wait_metric(STORE_FAILED, 1.0, WAIT);
    let paused_at = Instant::now();
    h.host.wait_metric(PAUSED, 1.0, Duration::from_secs(2));
    assert_eq!(h.host.metric(LEARNED), 2.0);
    h.copy(&inbox(), "down-dave");
    // What was read is kept for refresh_secs; after that the store is asked.
    std::thread::sleep(REFRESH + Duration::from_millis(200));

    // DNSSEC-keyed recipient: encrypted as before.
    h.assert_encrypted(&scratch, &u.address, &both, "down-both");
    // Learned-only, on_lookup_error = "pass": delivered as sent.
    h.assert_passed(CAROL, "down-carol");
    // Learned-only, default tempfail: 451 over SMTP (the client keeps it)…
    h.assert_refused(ALICE, "down-alice-smtp", "451 4.7.1");
    // …and submitted locally it stays in Postfix's queue: nothing lost.
    let raw = plain_message(ALICE, "down-alice-queued");
    let sent = h.pf.sendmail(SENDER, &[ALICE], &raw);
    assert!(sent.status.success(), "sendmail: {sent:?}");
    fleet::wait_until(WAIT, "the milter's 4.7.1 in the maillog", || {
        h.pf.maillog()
            .contains(&format!("4.7.1 Encryption key lookup for <{ALICE}> failed"))
            .then_some(())
    })
    .unwrap_or_else(|why| panic!("{why}{}", h.logs()));
    assert!(
        h.pf.queue_files()
            .iter()
            .any(|f| f.parent().is_some_and(|d| d.ends_with("maildrop"))),
        "the message waits in the maildrop queue: {:?}",
        h.pf.queue_files()
    );
    assert_eq!(h.pf.maildir_count(ALICE), 1, "only the copy sent while up");

    // PostgreSQL back: after the pause a new signed message is learned.
    pg.start_again();
    std::thread::sleep(
        (paused_at + PAUSE + Duration::from_millis(300)).saturating_duration_since(Instant::now()),
    );
    let erin = identity(&scratch, "erin@partner.example", "erin");
    h.teach(&scratch, &erin, "erin@partner.example", 3.0);
    assert_eq!(
        learned_fingerprint(&pg, "erin@partner.example"),
        fingerprint(&erin)
    );
    assert_eq!(h.host.metric(PAUSED), 0.0, "{}", h.host.metrics());
    // The queued message goes out encrypted after a flush.
    flush(&h.pf);
    let queued = h.copy(ALICE, "down-alice-queued");
    h.assert_opens(&scratch, &queued, &alice, &raw, "down-alice-queued");
    assert!(h.pf.wait_queue_empty(WAIT), "{}", h.pf.postqueue());
    assert_eq!(h.pf.maildir_count(ALICE), 2);
}

#[test]
fn a_reload_reconnects_after_the_password_changed_and_after_a_restart() {
    let dns = DnsEnv::start();
    let mut pg = PgEnv::start();
    let scratch = Scratch::new();
    let h = Site::start("r", &pg, &dns);
    let alice = identity(&scratch, ALICE, "alice");
    h.teach(&scratch, &alice, ALICE, 1.0);
    h.assert_encrypted(&scratch, ALICE, &alice, "r-before");

    // The password is rotated (server and file) and the milter's session
    // ends: it logs in again with the password it read when it loaded its
    // configuration, which the server refuses.
    let new_password = "5e1f0c2a9b7d4e6f8a0b1c2d3e4f5a6b";
    pg.psql(
        "postgres",
        &format!("ALTER ROLE aem PASSWORD '{new_password}'"),
    );
    // The host's file, and the environment's (pg-up checks the role's
    // login with it when the server starts again).
    for file in [h.host.password_file.clone(), pg.password_file()] {
        std::fs::write(file, format!("{new_password}\n")).unwrap();
    }
    pg.psql(
        "postgres",
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = 'aem'",
    );
    std::thread::sleep(REFRESH + Duration::from_millis(200));
    h.assert_refused(ALICE, "r-old-password", "451 4.7.1");
    fleet::wait_until(WAIT, "the server refusing the old password", || {
        pg.log()
            .contains("password authentication failed for user \"aem\"")
            .then_some(())
    })
    .unwrap_or_else(|why| panic!("{why}\n{}{}", pg.log(), h.logs()));

    // SIGHUP: the new password is read and used.
    h.host.reload();
    h.assert_encrypted(&scratch, ALICE, &alice, "r-reloaded");

    // PostgreSQL restarted, a reload right after: mail and harvesting
    // go on with the new sessions.
    pg.stop();
    pg.start_again();
    h.host.reload();
    h.assert_encrypted(&scratch, ALICE, &alice, "r-restarted");
    let bob = identity(&scratch, "bob@partner.example", "bob");
    h.teach(&scratch, &bob, "bob@partner.example", 2.0);
    h.assert_encrypted(&scratch, "bob@partner.example", &bob, "r-bob");
    assert_eq!(h.host.metric(STORE_FAILED), 0.0, "{}", h.host.metrics());
}

/// A reload while the store is down: the new configuration has read no
/// pins yet, but the process has; mail that does not depend on the store
/// must go on as before the reload (issue 12, item 7).
#[test]
fn a_reload_while_postgres_is_down_keeps_dnssec_mail_encrypted() {
    let dns = DnsEnv::start();
    let mut pg = PgEnv::start();
    let scratch = Scratch::new();
    let h = Site::start("d", &pg, &dns);
    let u = dns.user("both");
    let both = SmimeId::from_files(u.cert.as_ref().unwrap(), u.key.as_ref().unwrap());
    h.assert_encrypted(&scratch, &u.address, &both, "d-up");
    pg.stop();
    h.assert_encrypted(&scratch, &u.address, &both, "d-down");
    h.host.reload();
    h.assert_encrypted(&scratch, &u.address, &both, "d-down-reloaded");
    pg.start_again();
    h.assert_encrypted(&scratch, &u.address, &both, "d-up-again");
}
