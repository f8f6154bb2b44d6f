//! The `ldap` key source against hostile LDAP servers running in the
//! test itself: what slapd cannot be made to do (garbage, malformed
//! entries, a server that ignores the size limit or sends one endless
//! entry, one that drips, one that closes idle connections). Each case has
//! one defined outcome, reached within the configured bounds: found, not
//! found, or a failure that says why — never "no key", never a panic.
//!
//! The server speaks just enough LDAPv3 BER (RFC 4511) to answer a bind
//! and a search with whatever the case wants.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use autoencrypt_milter::config::LdapConfig;
use autoencrypt_milter::keys::ldap::{LdapSettings, LdapSource};
use autoencrypt_milter::keys::{FailReason, KeySource, Lookup};
use autoencrypt_milter::{Address, Method};

const TIMEOUT_MS: u64 = 800;

// ---------------------------------------------------------------------------
// BER: the writer and reader of the attack suite (tests/ldap_attack/).

#[allow(
    dead_code,
    reason = "the attack suite's server module: this file uses its BER helpers only"
)]
#[path = "ldap_attack/server.rs"]
mod server;
use server::{int, message, result, tlv};

fn entry(dn: &str, attrs: &[(&str, &[&[u8]])]) -> Vec<u8> {
    let owned: Vec<(&str, Vec<Vec<u8>>)> = attrs
        .iter()
        .map(|(n, vs)| (*n, vs.iter().map(|v| v.to_vec()).collect()))
        .collect();
    server::entry(dn, &owned)
}

/// Reads one LDAPMessage; its id and operation tag, or `None` at EOF.
fn read_request(s: &mut TcpStream) -> Option<(u32, u8)> {
    server::read_request(s).map(|r| (r.id, r.op))
}

// ---------------------------------------------------------------------------
// The server.

/// What the server does after answering the bind (anonymous: none is sent).
#[derive(Clone, Copy)]
enum Case {
    /// Accepts and never answers.
    Silent,
    /// Answers a search with bytes that are no LDAP message.
    Garbage,
    /// Answers with a search entry whose attributes are malformed.
    MalformedEntry,
    /// An empty SEQUENCE as a message (ldap3's reader expects elements).
    EmptyMessage,
    /// Ignores the size limit: entries without end.
    EndlessEntries,
    /// One entry declared 64 MiB long, sent slowly.
    HugeEntry,
    /// One byte every 100 ms.
    Drip,
    /// A good entry, then closes the connection after each answer.
    CloseAfterAnswer,
    /// `busy` (51) for every search.
    Busy,
    /// No entry matched.
    Empty,
    /// Never answers anything, the bind included.
    Mute,
    /// Answers every bind `busy` (51): the server, not the credentials.
    BusyBind,
    /// An entry with 80 different values in the certificate attributes.
    ManyKeys,
    /// An entry without any key attribute.
    NoKeyEntry,
    /// Refuses every bind: invalidCredentials (49).
    RefuseBind,
    /// Answers the bind (or StartTLS) with a diagnostic message that is
    /// not UTF-8, which ldap3 reads with `expect`.
    MalformedBind,
}

const PEM_CERT: &[u8] = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

fn serve(case: Case, s: &mut TcpStream, searches: &AtomicUsize) {
    while let Some((id, op)) = read_request(s) {
        if matches!(case, Case::Mute) {
            continue;
        }
        match op {
            0x42 => return, // unbind
            0x63 => {}      // search
            0x50 => continue,
            _ if matches!(case, Case::MalformedBind) => {
                // Success, with a diagnostic message that is not UTF-8.
                let op = if op == 0x77 { 0x78 } else { 0x61 };
                let mut body = int(0x0a, 0);
                body.extend(tlv(0x04, b""));
                body.extend(tlv(0x04, b"\xff\xfe"));
                let _ = s.write_all(&message(id, tlv(op, &body)));
                continue;
            }
            _ => {
                let rc = match case {
                    Case::RefuseBind => 49,
                    Case::BusyBind => 51,
                    _ => 0,
                };
                let _ = s.write_all(&message(id, result(0x61, rc)));
                continue;
            }
        }
        searches.fetch_add(1, Ordering::SeqCst);
        let good = entry(
            "cn=a,dc=test",
            &[
                ("mail", &[b"a@example.org"]),
                ("userCertificate;binary", &[PEM_CERT]),
            ],
        );
        let done = message(id, result(0x65, 0));
        match case {
            Case::Silent => std::thread::sleep(Duration::from_secs(30)),
            Case::Garbage => {
                let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
                std::thread::sleep(Duration::from_secs(5));
            }
            Case::MalformedEntry => {
                // An attribute with a type and no value set.
                let mut body = tlv(0x04, b"cn=a");
                body.extend(tlv(0x30, &tlv(0x30, &tlv(0x04, b"mail"))));
                let _ = s.write_all(&message(id, tlv(0x64, &body)));
                let _ = s.write_all(&done);
            }
            Case::EmptyMessage => {
                let _ = s.write_all(&tlv(0x30, b""));
                std::thread::sleep(Duration::from_secs(5));
            }
            Case::EndlessEntries => {
                for i in 0.. {
                    let e = entry(&format!("cn={i},dc=test"), &[("mail", &[b"a@example.org"])]);
                    if s.write_all(&message(id, e)).is_err() {
                        return;
                    }
                }
            }
            Case::HugeEntry => {
                let mut head = vec![0x30, 0x84];
                head.extend_from_slice(&(64u32 << 20).to_be_bytes());
                head.extend(int(0x02, id));
                head.extend([0x64, 0x84]);
                head.extend_from_slice(&((64u32 << 20) - 10).to_be_bytes());
                let _ = s.write_all(&head);
                let chunk = vec![b'x'; 65_536];
                for _ in 0..1024 {
                    if s.write_all(&chunk).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            Case::Drip => {
                for b in message(id, good.clone()) {
                    if s.write_all(&[b]).is_err() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            Case::CloseAfterAnswer => {
                let _ = s.write_all(&message(id, good));
                let _ = s.write_all(&done);
                return;
            }
            Case::Busy => {
                let _ = s.write_all(&message(id, result(0x65, 51)));
            }
            Case::ManyKeys => {
                let a: Vec<Vec<u8>> = (0..40)
                    .map(|i| format!("junk-a-{i}").into_bytes())
                    .collect();
                let b: Vec<Vec<u8>> = (0..40)
                    .map(|i| format!("junk-b-{i}").into_bytes())
                    .collect();
                let a: Vec<&[u8]> = a.iter().map(Vec::as_slice).collect();
                let b: Vec<&[u8]> = b.iter().map(Vec::as_slice).collect();
                let e = entry(
                    "cn=a,dc=test",
                    &[("userCertificate;binary", &a), ("userSMIMECertificate", &b)],
                );
                let _ = s.write_all(&message(id, e));
                let _ = s.write_all(&done);
            }
            Case::NoKeyEntry => {
                let e = entry("cn=a,dc=test", &[("mail", &[b"a@example.org"])]);
                let _ = s.write_all(&message(id, e));
                let _ = s.write_all(&done);
            }
            Case::Mute => {}
            Case::Empty | Case::RefuseBind | Case::BusyBind | Case::MalformedBind => {
                let _ = s.write_all(&done);
            }
        }
    }
}

struct Hostile {
    port: u16,
    searches: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
}

fn start(case: Case) -> Hostile {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let searches = Arc::new(AtomicUsize::new(0));
    let connections = Arc::new(AtomicUsize::new(0));
    let (s2, c2) = (Arc::clone(&searches), Arc::clone(&connections));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            c2.fetch_add(1, Ordering::SeqCst);
            let s3 = Arc::clone(&s2);
            std::thread::spawn(move || serve(case, &mut conn, &s3));
        }
    });
    Hostile {
        port,
        searches,
        connections,
    }
}

fn source(port: u16, tweak: impl FnOnce(&mut LdapConfig)) -> LdapSource {
    let mut c = LdapConfig {
        url: format!("ldap://127.0.0.1:{port}"),
        domains: vec!["example.org".to_owned()],
        base: "dc=test".to_owned(),
        timeout_ms: TIMEOUT_MS,
        connect_timeout_ms: 500,
        size_limit: 5,
        ..LdapConfig::default()
    };
    tweak(&mut c);
    LdapSource::new(LdapSettings::from_config(&c).unwrap())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The lookup of `a@example.org`'s S/MIME keys and how long it took.
fn ask(rt: &tokio::runtime::Runtime, src: &LdapSource) -> (Lookup, Duration) {
    let addr = Address::parse("a@example.org").unwrap();
    let t = Instant::now();
    let l = rt.block_on(src.lookup(&addr, Method::Smime));
    (l, t.elapsed())
}

fn failure(l: &Lookup) -> &FailReason {
    match l {
        Lookup::Failed(why) => why,
        other => panic!("expected a failure, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// The cases.

#[test]
fn a_server_that_never_answers_is_a_timeout_within_the_bound() {
    let rt = runtime();
    let h = start(Case::Silent);
    let (l, took) = ask(&rt, &source(h.port, |_| {}));
    assert_eq!(failure(&l), &FailReason::Timeout);
    assert!(took < Duration::from_millis(TIMEOUT_MS * 3), "{took:?}");
}

#[test]
fn garbage_and_malformed_answers_are_failures_not_panics() {
    let rt = runtime();
    for case in [Case::Garbage, Case::MalformedEntry, Case::EmptyMessage] {
        let h = start(case);
        let (l, took) = ask(&rt, &source(h.port, |_| {}));
        let why = failure(&l).to_string();
        eprintln!("{why}");
        assert!(why.contains("127.0.0.1") || why == "timed out", "{why}");
        assert!(took < Duration::from_millis(TIMEOUT_MS * 3), "{took:?}");
    }
}

#[test]
fn a_server_ignoring_the_size_limit_is_cut_off() {
    let rt = runtime();
    let h = start(Case::EndlessEntries);
    let (l, took) = ask(&rt, &source(h.port, |_| {}));
    let why = failure(&l).to_string();
    assert!(why.contains("more than 5 entries"), "{why}");
    assert!(took < Duration::from_millis(TIMEOUT_MS * 3), "{took:?}");
}

#[test]
fn a_huge_or_dripping_answer_ends_at_the_timeout() {
    let rt = runtime();
    for case in [Case::HugeEntry, Case::Drip] {
        let h = start(case);
        let (l, took) = ask(&rt, &source(h.port, |_| {}));
        assert_eq!(failure(&l), &FailReason::Timeout);
        assert!(took < Duration::from_millis(TIMEOUT_MS * 3), "{took:?}");
    }
}

#[test]
fn an_error_result_is_a_failure_and_no_entry_a_denial() {
    let rt = runtime();
    let h = start(Case::Busy);
    let (l, _) = ask(&rt, &source(h.port, |_| {}));
    assert!(failure(&l).to_string().contains("busy (51)"), "{l:?}");
    let h = start(Case::Empty);
    let (l, _) = ask(&rt, &source(h.port, |_| {}));
    assert!(matches!(l, Lookup::NotFound), "{l:?}");
}

#[test]
fn a_closed_idle_connection_is_replaced_without_a_failure() {
    let rt = runtime();
    let h = start(Case::CloseAfterAnswer);
    // Nothing cached, one connection: each lookup searches, and every
    // one after the first finds its connection closed by the server.
    let src = source(h.port, |c| {
        c.cache_ttl_secs = 0;
        c.negative_ttl_secs = 0;
        c.connections = 1;
    });
    for round in 0..3 {
        let (l, _) = ask(&rt, &src);
        match l {
            Lookup::Found { keys, .. } => assert_eq!(keys.len(), 1, "round {round}"),
            other => panic!("round {round}: {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(h.searches.load(Ordering::SeqCst), 3);
    assert_eq!(h.connections.load(Ordering::SeqCst), 3);
}

#[test]
fn answers_are_cached_and_shared() {
    let rt = runtime();
    let h = start(Case::Empty);
    let src = source(h.port, |_| {});
    let addr = Address::parse("a@example.org").unwrap();
    let (a, b) = rt.block_on(async {
        tokio::join!(
            src.lookup(&addr, Method::Smime),
            src.lookup(&addr, Method::OpenPgp)
        )
    });
    assert!(matches!(a, Lookup::NotFound) && matches!(b, Lookup::NotFound));
    let (c, _) = ask(&rt, &src);
    assert!(matches!(c, Lookup::NotFound));
    // One search served both methods and the later lookup.
    assert_eq!(h.searches.load(Ordering::SeqCst), 1);
}

#[test]
fn a_failure_is_cached_briefly_so_a_down_directory_is_not_hammered() {
    let rt = runtime();
    let h = start(Case::Busy);
    let src = source(h.port, |_| {});
    for _ in 0..3 {
        let (l, _) = ask(&rt, &src);
        failure(&l);
    }
    assert_eq!(h.searches.load(Ordering::SeqCst), 1);
}

#[test]
fn a_refused_connection_is_a_failure() {
    let rt = runtime();
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (l, _) = ask(&rt, &source(port, |_| {}));
    assert!(matches!(failure(&l), FailReason::Network(_)), "{l:?}");
}

#[test]
fn addresses_outside_the_domains_are_not_asked() {
    let h = start(Case::Empty);
    let src = source(h.port, |_| {});
    for a in [
        "a@other.org",
        "a@sub.example.org",
        "postmaster",
        "a@[127.0.0.1]",
    ] {
        assert!(!src.answers_for(&Address::parse(a).unwrap()), "{a}");
    }
    assert!(src.answers_for(&Address::parse("A@EXAMPLE.ORG").unwrap()));
}

#[test]
fn a_refused_bind_is_a_failure_and_not_tried_again_at_once() {
    let rt = runtime();
    let h = start(Case::RefuseBind);
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "not-the-password\n").unwrap();
    let src = source(h.port, |c| {
        c.bind_dn = "cn=milter,dc=test".to_owned();
        c.bind_password_file = Some(pw.clone());
    });
    let (l, _) = ask(&rt, &src);
    let why = failure(&l).to_string();
    assert!(
        why.contains("bind as cn=milter,dc=test refused: invalidCredentials (49)"),
        "{why}"
    );
    assert!(!why.contains("not-the-password"), "{why}");
    // Another address: no second bind (Active Directory would count it
    // towards locking the account).
    let other = Address::parse("b@example.org").unwrap();
    let l = rt.block_on(src.lookup(&other, Method::Smime));
    let why = failure(&l).to_string();
    assert!(why.contains("not retried"), "{why}");
    assert_eq!(h.connections.load(Ordering::SeqCst), 1);
}

#[test]
fn a_malformed_bind_or_starttls_answer_is_a_failure_not_a_panic() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "pw\n").unwrap();
    for starttls in [false, true] {
        let h = start(Case::MalformedBind);
        let src = source(h.port, |c| {
            c.bind_dn = "cn=milter,dc=test".to_owned();
            c.bind_password_file = Some(pw.clone());
            c.starttls = starttls;
        });
        let (l, took) = ask(&rt, &src);
        let why = failure(&l).to_string();
        assert!(why.contains("127.0.0.1"), "starttls {starttls}: {why}");
        assert!(took < Duration::from_millis(TIMEOUT_MS * 3), "{took:?}");
    }
}

fn with_bind(dir: &std::path::Path) -> impl FnOnce(&mut LdapConfig) {
    let pw = dir.join("pw");
    std::fs::write(&pw, "pw\n").unwrap();
    move |c: &mut LdapConfig| {
        c.bind_dn = "cn=milter,dc=test".to_owned();
        c.bind_password_file = Some(pw);
    }
}

#[test]
fn a_lookup_given_up_on_still_leaves_the_directory_down() {
    let rt = runtime();
    let h = start(Case::Mute);
    let dir = tempfile::tempdir().unwrap();
    let src = source(h.port, with_bind(dir.path()));
    // The RCPT is gone (client left, deadline) before the bind times out.
    let addr = Address::parse("a@example.org").unwrap();
    let gone = rt.block_on(async {
        tokio::time::timeout(Duration::from_millis(100), src.lookup(&addr, Method::Smime)).await
    });
    assert!(gone.is_err(), "answered: {gone:?}");
    // The connect task ran on to its timeout and recorded it.
    std::thread::sleep(Duration::from_millis(TIMEOUT_MS + 300));
    let other = Address::parse("b@example.org").unwrap();
    let t = Instant::now();
    let l = rt.block_on(src.lookup(&other, Method::Smime));
    assert!(failure(&l).to_string().contains("not retried"), "{l:?}");
    assert!(
        t.elapsed() < Duration::from_millis(100),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(h.connections.load(Ordering::SeqCst), 1);
}

#[test]
fn a_busy_server_is_left_alone_briefly_not_like_a_refused_password() {
    let rt = runtime();
    let h = start(Case::BusyBind);
    let dir = tempfile::tempdir().unwrap();
    let src = source(h.port, with_bind(dir.path()));
    let (l, _) = ask(&rt, &src);
    assert!(failure(&l).to_string().contains("busy (51)"), "{l:?}");
    let other = Address::parse("b@example.org").unwrap();
    let l = rt.block_on(src.lookup(&other, Method::Smime));
    let why = failure(&l).to_string();
    assert!(why.contains("not retried for 10 s"), "{why}");
}

#[test]
fn more_keys_than_a_person_has_is_a_failure() {
    let rt = runtime();
    let h = start(Case::ManyKeys);
    let (l, _) = ask(&rt, &source(h.port, |_| {}));
    let why = failure(&l).to_string();
    assert!(why.contains("more than 64 smime keys"), "{why}");
}

#[test]
fn an_entry_without_keys_is_kept_only_as_long_as_no_entry() {
    let rt = runtime();
    let h = start(Case::NoKeyEntry);
    let src = source(h.port, |c| {
        c.cache_ttl_secs = 300;
        c.negative_ttl_secs = 0;
    });
    for _ in 0..2 {
        let (l, _) = ask(&rt, &src);
        assert!(matches!(l, Lookup::NotFound), "{l:?}");
    }
    assert_eq!(h.searches.load(Ordering::SeqCst), 2);
}
