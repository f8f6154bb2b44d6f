//! Smoke test of the Postfix test environment (tests/env/postfix-up): a
//! second Postfix instance on loopback delivers to Maildirs untouched, defers
//! to the client when its milter is unavailable, runs beside another
//! instance, carries a 50 MB message, and hands a milter the macros the
//! README lists.
//!
//! Needs root and the postfix package (tests/env/install-deps); without them
//! every test fails (panics) — none is skipped.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

#[path = "env/postfix.rs"]
mod postfix;
#[path = "env/recording_milter.rs"]
mod recording_milter;

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use postfix::{PostfixEnv, Session, header_and_body, lf, split_delivery, strip_delivery_headers};
use recording_milter::{Seen, recording_milter};

const WAIT: Duration = Duration::from_secs(20);

/// A message exercising what the SMTP client must get right: CRLF line
/// endings, lines that need dot-stuffing, a lone dot, a line longer than
/// Postfix's line_length_limit (2048), 8-bit text, a folded header.
fn sample_message(subject: &str) -> Vec<u8> {
    let long = "x".repeat(5000);
    format!(
        "From: Sender <sender@example.org>\r\n\
         To: a@autoencrypt.test, b@partner.example\r\n\
         Subject: {subject}\r\n\
         X-Folded: one\r\n\
         \ttwo\r\n\
         Message-ID: <{subject}@example.org>\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\
         \r\n\
         Grüße aus Köln.\r\n\
         .leading dot\r\n\
         .\r\n\
         ..two dots\r\n\
         {long}\r\n\
         \r\n\
         last line\r\n"
    )
    .into_bytes()
}

/// (a) No milter: a message to two recipients reaches both, byte for byte;
/// several transactions on one session work.
#[test]
fn delivers_to_every_recipient_unchanged() {
    let t0 = Instant::now();
    let env = PostfixEnv::start(None);
    eprintln!("postfix-up took {:?}", t0.elapsed());
    assert_eq!(env.postconf("smtpd_milters"), "");

    let msg = sample_message("two-recipients");
    let to = ["a@autoencrypt.test", "B@Partner.Example"];
    let t1 = Instant::now();
    let outcome = env.send("sender@example.org", &to, &msg);
    env.wait_for_mail_count(to[1], 1, WAIT);
    eprintln!("SMTP transaction to delivery: {:?}", t1.elapsed());
    assert!(outcome.mail.is("250 2.1.0"), "{outcome}");
    assert!(
        outcome.rcpt("a@autoencrypt.test").is("250 2.1.5"),
        "{outcome}"
    );
    assert!(
        outcome.rcpt("b@partner.example").is("250 2.1.5"),
        "{outcome}"
    );
    assert!(outcome.data_start.as_ref().unwrap().is("354"), "{outcome}");
    assert!(outcome.accepted(), "{outcome}");
    assert!(outcome.queue_id().is_some(), "{outcome}");

    for rcpt in to {
        let mail = env.expect_mail(rcpt, 1, WAIT);
        let (delivery, sent) = split_delivery(&mail[0]);
        let delivery = String::from_utf8_lossy(delivery);
        assert!(
            delivery.starts_with("Return-Path: <sender@example.org>\n"),
            "{delivery}"
        );
        assert!(
            delivery.contains(&format!("\nDelivered-To: {rcpt}\n")),
            "{delivery}"
        );
        assert!(
            delivery.contains("by mx.autoencrypt.test (Postfix) with ESMTP id"),
            "{delivery}"
        );
        assert!(
            sent == lf(&msg).as_slice(),
            "{rcpt}: delivered message differs from the one sent:\n{}",
            String::from_utf8_lossy(sent)
        );
        let (header, body) = header_and_body(sent);
        assert!(header.starts_with(b"From: Sender"));
        assert!(body.starts_with("Grüße".as_bytes()));
    }
    assert_eq!(env.maildir_count("a@autoencrypt.test"), 1);
    assert_eq!(env.maildir_count("nobody@autoencrypt.test"), 0);

    // Several transactions on one connection, one refused recipient-less.
    let mut s = env.session();
    let first = s.send("x@example.net", &["c@sub.autoencrypt.test"], &msg);
    assert!(first.accepted(), "{first}");
    let second = s.send(
        "x@example.net",
        &["d@example.net"],
        b"Subject: s2\n\nbody\n",
    );
    assert!(second.accepted(), "{second}");
    assert_ne!(first.queue_id(), second.queue_id());
    s.quit();
    env.expect_mail("c@sub.autoencrypt.test", 1, WAIT);
    let d = env.expect_mail("d@example.net", 1, WAIT);
    assert_eq!(strip_delivery_headers(&d[0]), b"Subject: s2\n\nbody\n");
    assert!(env.wait_queue_empty(WAIT), "{}", env.postqueue());
    assert!(env.maillog().contains("status=sent (delivered to maildir)"));
}

/// (b) A milter that does not answer + milter_default_action = tempfail:
/// the client is told 451 4.7.1, nothing is delivered, nothing is queued.
#[test]
fn unavailable_milter_defers_to_the_client() {
    let unused = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    }; // closed again: nothing listens there
    let env = PostfixEnv::start(Some(unused));
    assert_eq!(env.postconf("smtpd_milters"), format!("inet:{unused}"));
    assert_eq!(env.postconf("milter_default_action"), "tempfail");

    let msg = sample_message("no-milter");
    let outcome = env.send(
        "sender@example.org",
        &["a@autoencrypt.test", "b@example.net"],
        &msg,
    );
    eprintln!("with the milter down: {outcome}");
    assert!(!outcome.accepted(), "{outcome}");
    // Postfix answers the first command after the failed milter connect
    // that can be refused: MAIL FROM.
    assert!(outcome.last().is("451 4.7.1"), "{outcome}");
    assert!(outcome.mail.is("451 4.7.1"), "{outcome}");

    std::thread::sleep(Duration::from_millis(500));
    assert!(
        env.all_mail().is_empty(),
        "delivered despite the milter being down"
    );
    assert!(env.queue_is_empty(), "queued: {:?}", env.queue_files());
    assert!(
        env.postqueue().contains("Mail queue is empty"),
        "{}",
        env.postqueue()
    );
    assert!(
        env.maillog().contains(&format!(
            "connect to Milter service inet:{unused}: Connection refused"
        )),
        "{}",
        env.maillog()
    );
}

/// (c) Two instances at once: own ports, own masters, own mail.
#[test]
fn two_instances_side_by_side() {
    let t0 = Instant::now();
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| PostfixEnv::start(None));
        let b = s.spawn(|| PostfixEnv::start(None));
        (a.join().unwrap(), b.join().unwrap())
    });
    eprintln!("two postfix-up in parallel took {:?}", t0.elapsed());
    assert_ne!(a.smtp_addr(), b.smtp_addr());
    assert_ne!(a.master_pid(), b.master_pid());
    assert_ne!(a.postconf("syslog_name"), b.postconf("syslog_name"));

    let ra = a.send(
        "s@example.org",
        &["only-a@example.net"],
        b"Subject: a\n\nA\n",
    );
    let rb = b.send(
        "s@example.org",
        &["only-b@example.net"],
        b"Subject: b\n\nB\n",
    );
    assert!(ra.accepted() && rb.accepted(), "{ra} / {rb}");
    assert_eq!(
        strip_delivery_headers(&a.expect_mail("only-a@example.net", 1, WAIT)[0]),
        b"Subject: a\n\nA\n"
    );
    assert_eq!(
        strip_delivery_headers(&b.expect_mail("only-b@example.net", 1, WAIT)[0]),
        b"Subject: b\n\nB\n"
    );
    assert_eq!(a.maildir_count("only-b@example.net"), 0);
    assert_eq!(b.maildir_count("only-a@example.net"), 0);

    // Stopping one leaves the other running.
    let mut a = a;
    let t1 = Instant::now();
    a.stop();
    eprintln!("postfix-down took {:?}", t1.elapsed());
    assert!(
        TcpStream::connect(a.smtp_addr()).is_err(),
        "a still listens after stop"
    );
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", a.master_pid()));
    assert!(
        stat.as_ref().map_or(true, |s| s.contains(") Z ")),
        "a's master is still running: {stat:?}"
    );
    let rb2 = b.send(
        "s@example.org",
        &["again-b@example.net"],
        b"Subject: b2\n\nB2\n",
    );
    assert!(rb2.accepted(), "{rb2}");
    b.expect_mail("again-b@example.net", 1, WAIT);
}

/// (d) A 50 MB message goes through and arrives intact.
#[test]
fn fifty_megabyte_message() {
    let env = PostfixEnv::start(None);
    let mut msg = Vec::with_capacity(52 * 1024 * 1024);
    msg.extend_from_slice(
        b"From: big@example.org\r\nTo: big@autoencrypt.test\r\nSubject: 50 MB\r\n\
          MIME-Version: 1.0\r\nContent-Type: application/octet-stream\r\n\
          Content-Transfer-Encoding: base64\r\n\r\n",
    );
    // Base64-alphabet lines of 76 characters, pseudo-random, plus some
    // lines that start with a dot.
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut line = 0u64;
    while msg.len() < 50 * 1024 * 1024 {
        for _ in 0..76 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            msg.push(alphabet[(x % 64) as usize]);
        }
        if line.is_multiple_of(10_000) {
            let n = msg.len();
            msg[n - 76] = b'.';
        }
        msg.extend_from_slice(b"\r\n");
        line += 1;
    }
    let t0 = Instant::now();
    let outcome = env.send("big@example.org", &["big@autoencrypt.test"], &msg);
    let sent = t0.elapsed();
    assert!(outcome.accepted(), "{outcome}");
    let mail = env.expect_mail("big@autoencrypt.test", 1, Duration::from_secs(120));
    let delivered = t0.elapsed();
    eprintln!(
        "50 MB message ({} bytes): SMTP transaction {sent:?}, delivered after {delivered:?}",
        msg.len()
    );
    let got = strip_delivery_headers(&mail[0]);
    let want = lf(&msg);
    assert_eq!(got.len(), want.len(), "size differs");
    assert!(got == want.as_slice(), "50 MB message changed in transit");
    assert!(env.wait_queue_empty(WAIT), "{}", env.postqueue());
}

// ---------------------------------------------------------------------------
// (e) Which macros a milter receives at which stage: a minimal milter (protocol
// version 6, every step, "continue" to everything) that records them.

fn stage_name(c: char) -> &'static str {
    match c {
        'C' => "connect",
        'H' => "helo",
        'M' => "mail",
        'R' => "rcpt",
        'T' => "data",
        'L' => "header",
        'N' => "end-of-header",
        'B' => "body",
        'E' => "end-of-message",
        _ => "other",
    }
}

/// The macros of connection `conn` at stage `c`, one map per occurrence.
fn at(
    seen: &[Vec<(char, BTreeMap<String, String>)>],
    conn: usize,
    c: char,
) -> Vec<BTreeMap<String, String>> {
    seen[conn]
        .iter()
        .filter(|(s, _)| *s == c)
        .map(|(_, m)| m.clone())
        .collect()
}

fn get<'a>(m: &'a BTreeMap<String, String>, k: &str) -> Option<&'a str> {
    m.get(k).map(String::as_str)
}

#[test]
fn milter_receives_the_configured_macros() {
    let seen: Seen = Arc::default();
    let milter = recording_milter(seen.clone());
    let env = PostfixEnv::start(Some(milter));
    let rcpts = ["m1@autoencrypt.test", "m2@example.net"];
    let msg = b"Subject: macros\r\n\r\nbody\r\n";

    // 1. port "25": {daemon_name} = myhostname
    let mut s = Session::connect(env.smtp_addr());
    let outcome = s.send("sender@example.org", &rcpts, msg);
    s.quit();
    assert!(outcome.accepted(), "{outcome}");
    // 2. the ORIGINATING smtpd
    let sub = env.send_submission("sender@autoencrypt.test", &["m3@example.net"], msg);
    assert!(sub.accepted(), "{sub}");
    // 3. sendmail: non_smtpd_milters
    let out = env.sendmail("local@autoencrypt.test", &["m4@example.net"], msg);
    assert!(out.status.success(), "sendmail: {out:?}");
    for r in [
        "m1@autoencrypt.test",
        "m2@example.net",
        "m3@example.net",
        "m4@example.net",
    ] {
        env.expect_mail(r, 1, WAIT);
    }

    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen.len(),
        3,
        "one milter connection per submission: {seen:#?}"
    );
    for (i, conn) in seen.iter().enumerate() {
        eprintln!("milter connection {}:", i + 1);
        for (stage, macros) in conn {
            eprintln!("{:>16}: {macros:?}", stage_name(*stage));
        }
    }

    // SMTP: {client_addr} and {daemon_name} from connect on, i once the
    // queue file exists (after the first accepted RCPT:
    // smtpd_delay_open_until_valid_rcpt = yes), {auth_authen} never (no SASL).
    let connect = at(&seen, 0, 'C');
    assert_eq!(connect.len(), 1, "{seen:?}");
    assert_eq!(get(&connect[0], "{client_addr}"), Some("127.0.0.1"));
    assert_eq!(
        get(&connect[0], "{daemon_name}"),
        Some("mx.autoencrypt.test")
    );
    let mail = at(&seen, 0, 'M');
    assert_eq!(get(&mail[0], "{client_addr}"), Some("127.0.0.1"));
    assert_eq!(get(&mail[0], "i"), None, "queue id at MAIL: {seen:?}");
    let rcpt = at(&seen, 0, 'R');
    assert_eq!(rcpt.len(), 2, "{seen:?}");
    for m in &rcpt {
        assert_eq!(get(m, "{daemon_name}"), Some("mx.autoencrypt.test"));
        assert_eq!(get(m, "{client_addr}"), Some("127.0.0.1"));
        assert_eq!(get(m, "{auth_authen}"), None);
    }
    assert_eq!(
        get(&rcpt[0], "i"),
        None,
        "queue id at the first RCPT: {seen:?}"
    );
    assert_eq!(get(&rcpt[1], "i"), outcome.queue_id().as_deref());
    for stage in ['T', 'N', 'E'] {
        let m = at(&seen, 0, stage);
        assert_eq!(m.len(), 1, "{seen:?}");
        assert_eq!(get(&m[0], "i"), outcome.queue_id().as_deref(), "{stage}");
        assert_eq!(get(&m[0], "{daemon_name}"), Some("mx.autoencrypt.test"));
        assert_eq!(get(&m[0], "{client_addr}"), Some("127.0.0.1"));
    }

    // The ORIGINATING smtpd, at every stage: the header/body/end-of-message
    // steps run in cleanup(8), which has its own milter_macro_daemon_name
    // (postfix-up gives that smtpd a cleanup-orig service for this).
    for stage in ['C', 'M', 'R', 'T', 'L', 'N', 'B', 'E'] {
        let m = at(&seen, 1, stage);
        assert_eq!(
            get(&m[0], "{daemon_name}"),
            Some("ORIGINATING"),
            "{stage}: {seen:?}"
        );
    }
    assert_eq!(get(&at(&seen, 1, 'E')[0], "i"), sub.queue_id().as_deref());

    // sendmail (non_smtpd_milters): the queue id at every stage; the
    // client is the local host.
    let e = at(&seen, 2, 'E');
    assert!(get(&e[0], "i").is_some_and(|i| !i.is_empty()), "{seen:?}");
}
