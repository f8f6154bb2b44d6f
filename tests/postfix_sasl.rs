//! SASL authentication on the test Postfix (tests/env/postfix-up with
//! `POSTFIX_ENV_SASL_USERS`, `PostfixEnv::start_sasl`): the submission
//! smtpd authenticates users from a Cyrus sasldb (PLAIN, LOGIN), a wrong
//! password gets 535 and delivers nothing, unauthenticated submission works
//! as before, and a milter receives `{auth_authen}` = the login at MAIL
//! FROM (what autoencrypt-milter reads to tell authenticated senders).
//!
//! Needs root, the postfix package and sasl2-bin, libsasl2-modules,
//! libsasl2-modules-db (tests/env/install-deps); without them every test
//! fails (panics) — none is skipped.

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
use std::sync::Arc;
use std::time::{Duration, Instant};

use postfix::{PostfixEnv, base64, strip_delivery_headers};
use recording_milter::{Seen, recording_milter};

const WAIT: Duration = Duration::from_secs(20);

const USERS: &[(&str, &str)] = &[("alice", "secret"), ("bob", "pa:ss-w0rd")];

fn message(subject: &str) -> Vec<u8> {
    format!(
        "From: Alice <alice@autoencrypt.test>\r\n\
         To: rcpt@example.net\r\n\
         Subject: {subject}\r\n\
         Message-ID: <{subject}@autoencrypt.test>\r\n\
         \r\n\
         body of {subject}\r\n"
    )
    .into_bytes()
}

/// Waits until the maillog holds a line containing `needle`.
fn wait_log(env: &PostfixEnv, needle: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let log = env.maillog();
        if let Some(line) = log.lines().find(|l| l.contains(needle)) {
            return line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no maillog line with {needle:?}:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The right password: 235, the message accepted and delivered unchanged,
/// and Postfix logs the queue id with `sasl_username=alice`. Only the
/// submission smtpd offers AUTH, with exactly PLAIN and LOGIN.
#[test]
fn right_password_authenticates_and_delivers() {
    let env = PostfixEnv::start_sasl(None, USERS);
    assert_eq!(env.sasl_logins(), ["alice", "bob"]);
    assert_eq!(env.sasl_realm(), Some("mx.autoencrypt.test"));

    let sub = env.submission_session();
    assert!(
        sub.ehlo.lines.iter().any(|l| l == "AUTH PLAIN LOGIN"),
        "submission EHLO: {}",
        sub.ehlo
    );
    sub.quit();
    let mut smtp = env.session();
    assert!(
        !smtp.ehlo.lines.iter().any(|l| l.starts_with("AUTH")),
        "port-25 EHLO offers AUTH: {}",
        smtp.ehlo
    );
    let refused = smtp.auth_plain("alice", "secret");
    assert!(
        refused.is("503 5.5.1"),
        "AUTH on the port-25 smtpd: {refused}"
    );
    smtp.quit();

    let msg = message("authenticated");
    let out = env.send_authenticated(
        "alice",
        "secret",
        "alice@autoencrypt.test",
        &["rcpt@example.net"],
        &msg,
    );
    assert!(out.authenticated(), "{out}");
    assert!(out.auth.as_ref().unwrap().is("235 2.7.0"), "{out}");
    assert!(out.accepted(), "{out}");
    let qid = out.queue_id().unwrap();
    let mail = env.expect_mail("rcpt@example.net", 1, WAIT);
    assert_eq!(
        strip_delivery_headers(&mail[0]),
        postfix::lf(&msg).as_slice()
    );
    let line = wait_log(&env, &format!("{qid}: client="));
    assert!(
        line.contains("/submission/smtpd[")
            && line.ends_with("sasl_method=PLAIN, sasl_username=alice"),
        "{line}"
    );

    // A password with ':' in it, and the LOGIN mechanism by hand.
    let mut s = env.submission_session();
    let r = s.command("AUTH LOGIN");
    assert_eq!((r.code, r.text()), (334, "VXNlcm5hbWU6".to_string()), "{r}");
    let r = s.command(&base64(b"bob"));
    assert_eq!((r.code, r.text()), (334, "UGFzc3dvcmQ6".to_string()), "{r}");
    let r = s.command(&base64(b"pa:ss-w0rd"));
    assert!(r.is("235 2.7.0"), "{r}");
    let out = s.send(
        "bob@autoencrypt.test",
        &["rcpt2@example.net"],
        &message("login-mech"),
    );
    s.quit();
    assert!(out.accepted(), "{out}");
    let qid = out.queue_id().unwrap();
    env.expect_mail("rcpt2@example.net", 1, WAIT);
    let line = wait_log(&env, &format!("{qid}: client="));
    assert!(
        line.ends_with("sasl_method=LOGIN, sasl_username=bob"),
        "{line}"
    );
}

/// A wrong password, an unknown login, and a right password for the other
/// user: 535, no MAIL FROM sent, nothing delivered.
#[test]
fn wrong_password_is_refused_and_nothing_delivered() {
    let env = PostfixEnv::start_sasl(None, USERS);
    for (login, password) in [("alice", "wrong"), ("mallory", "secret"), ("bob", "secret")] {
        let out = env.send_authenticated(
            login,
            password,
            "alice@autoencrypt.test",
            &["victim@example.net"],
            &message("refused"),
        );
        assert!(!out.authenticated(), "{login}: {out}");
        assert!(
            out.last().is("535 5.7.8 Error: authentication failed"),
            "{login}: {out}"
        );
        assert_eq!(out.mail.code, 0, "{login}: MAIL FROM sent: {out}");
        assert!(out.rcpts.is_empty() && !out.accepted(), "{out}");
        wait_log(
            &env,
            &format!(
                "SASL PLAIN authentication failed: authentication failure, sasl_username={login}"
            ),
        );
    }
    assert!(env.wait_queue_empty(WAIT), "{}", env.postqueue());
    assert!(
        env.wait_for_mail("victim@example.net", Duration::from_millis(500))
            .is_empty()
    );
    assert!(env.all_mail().is_empty(), "{:?}", env.all_mail());
    assert!(!env.maillog().contains("sasl_method="), "{}", env.maillog());
}

/// Without AUTH the submission smtpd accepts loopback clients as before
/// (mynetworks), and its log line names no SASL user.
#[test]
fn unauthenticated_submission_behaves_as_before() {
    let env = PostfixEnv::start_sasl(None, USERS);
    let out = env.send_submission(
        "anyone@autoencrypt.test",
        &["plain@example.net"],
        &message("unauthenticated"),
    );
    assert!(out.auth.is_none() && !out.authenticated(), "{out}");
    assert!(out.accepted(), "{out}");
    let qid = out.queue_id().unwrap();
    env.expect_mail("plain@example.net", 1, WAIT);
    let line = wait_log(&env, &format!("{qid}: client="));
    assert!(
        line.ends_with("client=unknown[127.0.0.1]") && !line.contains("sasl"),
        "{line}"
    );
    // And the port-25 smtpd too.
    let out = env.send(
        "anyone@example.org",
        &["plain25@example.net"],
        &message("port25"),
    );
    assert!(out.accepted(), "{out}");
    env.expect_mail("plain25@example.net", 1, WAIT);
}

// ---------------------------------------------------------------------------
// What a milter receives: a minimal milter (protocol version 6, every step,
// "continue" to everything) that records the macros per connection and
// stage, as in postfix_env.rs.

/// `{auth_authen}` of connection `conn` at each occurrence of stage `c`.
fn auth_authen(
    seen: &[Vec<(char, BTreeMap<String, String>)>],
    conn: usize,
    c: char,
) -> Vec<Option<&str>> {
    seen[conn]
        .iter()
        .filter(|(s, _)| *s == c)
        .map(|(_, m)| m.get("{auth_authen}").map(String::as_str))
        .collect()
}

/// Postfix asks for `{auth_authen}` at MAIL (milter_mail_macros), and a
/// milter gets the login there — not `alice@realm` — for an authenticated
/// session, and nothing for an unauthenticated one. Also from RCPT on and
/// at the content steps (which cleanup(8) runs, from the queue file).
#[test]
fn milter_receives_auth_authen() {
    let seen: Seen = Arc::default();
    let milter = recording_milter(seen.clone());
    let env = PostfixEnv::start_sasl(Some(milter), USERS);
    let mail_macros = env.postconf("milter_mail_macros");
    assert!(
        mail_macros.split_whitespace().any(|m| m == "{auth_authen}"),
        "milter_mail_macros = {mail_macros}"
    );

    let out = env.send_authenticated(
        "alice",
        "secret",
        "alice@autoencrypt.test",
        &["m1@example.net", "m2@example.net"],
        &message("milter-auth"),
    );
    assert!(out.authenticated() && out.accepted(), "{out}");
    let out2 = env.send_submission(
        "anyone@autoencrypt.test",
        &["m3@example.net"],
        &message("milter-noauth"),
    );
    assert!(out2.accepted(), "{out2}");
    env.expect_mail("m1@example.net", 1, WAIT);
    env.expect_mail("m2@example.net", 1, WAIT);
    env.expect_mail("m3@example.net", 1, WAIT);

    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen.len(),
        2,
        "one milter connection per session: {seen:#?}"
    );
    let alice = Some("alice");
    assert_eq!(auth_authen(&seen, 0, 'M'), [alice], "{seen:#?}");
    assert_eq!(auth_authen(&seen, 0, 'R'), [alice, alice], "{seen:#?}");
    for stage in ['T', 'N', 'E'] {
        assert_eq!(auth_authen(&seen, 0, stage), [alice], "{stage}: {seen:#?}");
    }
    for stage in ['M', 'R', 'T', 'N', 'E'] {
        assert!(
            auth_authen(&seen, 1, stage).iter().all(Option::is_none),
            "unauthenticated, {stage}: {seen:#?}"
        );
    }
    // The ORIGINATING smtpd, as before.
    let mail = seen[0].iter().find(|(s, _)| *s == 'M').unwrap();
    assert_eq!(
        mail.1.get("{daemon_name}").map(String::as_str),
        Some("ORIGINATING")
    );
}
