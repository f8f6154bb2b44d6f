//! A broken network or server: connections that end at the worst moment,
//! a bind the server is too busy to answer, a TLS certificate that is
//! valid but for another host, and many lookups at once against a slow
//! directory and against a down one (how often is it bothered?).

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use autoencrypt_milter::Address;
use autoencrypt_milter::policy::KeyOutcome;

use super::certs::{cert, sorted};
use super::ldap::LdapEnv;
use super::server::{
    self, BIND, SEARCH, Session, answering, bind_response, done, entry, message, reset,
};
use super::*;

fn entry_for(addr: &str, der: &[u8]) -> Vec<u8> {
    entry(
        &format!("cn={addr},dc=test"),
        &[
            ("mail", vec![addr.as_bytes().to_vec()]),
            ("userCertificate;binary", vec![der.to_vec()]),
        ],
    )
}

#[test]
fn a_server_closing_before_the_bind_answer_is_a_failure_and_is_left_alone() {
    let rt = runtime();
    let h = server::start(|s: &mut Session| {
        // Reads the bind, answers nothing, closes.
        let _ = s.next();
    });
    let (c, _pw) = with_bind(dir(h.port()));
    let keys = service(vec![c]);
    let why = failed(&resolve(&rt, &keys, "a@example.org"));
    assert!(why.contains("127.0.0.1"), "{why}");
    // Another address: no new connection within DOWN_FOR.
    let t = Instant::now();
    let why = failed(&resolve(&rt, &keys, "b@example.org"));
    assert!(why.contains("not retried for 10 s"), "{why}");
    assert!(
        t.elapsed() < Duration::from_millis(100),
        "{:?}",
        t.elapsed()
    );
    assert_eq!((h.connections(), h.binds()), (1, 1));
}

#[test]
fn a_server_closing_on_the_first_search_is_a_failure_not_retried() {
    let rt = runtime();
    let h = server::start(|s: &mut Session| {
        while let Some(r) = s.next() {
            match r.op {
                BIND => {
                    s.send(&bind_response(r.id, 0));
                }
                SEARCH => return,
                _ => {}
            }
        }
    });
    let (c, _pw) = with_bind(dir(h.port()));
    let keys = service(vec![c]);
    let why = failed(&resolve(&rt, &keys, "a@example.org"));
    assert!(why.contains("127.0.0.1"), "{why}");
    // A fresh connection that broke is not retried: one search.
    assert_eq!((h.connections(), h.searches()), (1, 1));
    // The bind worked, so the directory is not "down": the next lookup
    // connects again (and fails the same way).
    failed(&resolve(&rt, &keys, "b@example.org"));
    assert_eq!((h.connections(), h.searches()), (2, 2));
}

/// Writes the first half of `op` as an answer to `id`, then resets.
fn half_then_reset(s: &mut Session, id: u32, op: Vec<u8>) {
    let m = message(id, op);
    let _ = s.stream.write_all(&m[..m.len() / 2]);
    let _ = s.stream.flush();
    std::thread::sleep(Duration::from_millis(50));
    reset(s.stream.try_clone().unwrap());
}

#[test]
fn a_reset_mid_entry_is_retried_once_on_a_reused_connection_and_fails_on_a_fresh_one() {
    let rt = runtime();
    let cb = cert("b@example.org");
    let eb = entry_for("b@example.org", &cb.der);
    let h = server::start(move |s: &mut Session| {
        let mut searches = 0;
        while let Some(r) = s.next() {
            if r.op != SEARCH {
                continue;
            }
            searches += 1;
            match (s.number, searches) {
                // The first connection: a's search answered, b's cut off.
                (0, 1) => {
                    s.send(&done(r.id, 0));
                }
                (0, _) => return half_then_reset(s, r.id, eb.clone()),
                _ => {
                    s.send(&message(r.id, eb.clone()));
                    s.send(&done(r.id, 0));
                }
            }
        }
    });
    let keys = service(vec![LdapConfig {
        connections: 1,
        ..dir(h.port())
    }]);
    not_found(&resolve(&rt, &keys, "a@example.org"));
    let o = resolve(&rt, &keys, "b@example.org");
    assert_eq!(usable(&o), sorted(&[&cb]));
    assert_eq!((h.connections(), h.searches()), (2, 3));

    // Cut off on every connection: a failure after one fresh try.
    let eb2 = entry_for("b@example.org", &cb.der);
    let always = server::start(move |s: &mut Session| {
        while let Some(r) = s.next() {
            if r.op == SEARCH {
                return half_then_reset(s, r.id, eb2.clone());
            }
        }
    });
    let keys = service(vec![dir(always.port())]);
    let t = Instant::now();
    let why = failed(&resolve(&rt, &keys, "b@example.org"));
    assert!(why.contains("127.0.0.1"), "{why}");
    assert!(t.elapsed() < bound(), "{:?}", t.elapsed());
    assert_eq!(always.connections(), 1);
}

/// A server that answers every bind with `rc`.
fn binds_answered(rc: u32) -> server::Server {
    server::start(move |s: &mut Session| {
        while let Some(r) = s.next() {
            if r.op == BIND {
                s.send(&bind_response(r.id, rc));
            } else if r.op == SEARCH {
                s.send(&done(r.id, 0));
            }
        }
    })
}

#[test]
fn a_wrong_password_is_left_alone_for_five_minutes() {
    let rt = runtime();
    let h = binds_answered(49);
    let (c, _pw) = with_bind(dir(h.port()));
    let keys = service(vec![c]);
    let why = failed(&resolve(&rt, &keys, "a@example.org"));
    assert!(why.contains("invalidCredentials (49)"), "{why}");
    assert!(!why.contains("secret-password"), "{why}");
    let why = failed(&resolve(&rt, &keys, "b@example.org"));
    assert!(why.contains("not retried for 300 s"), "{why}");
}

#[test]
fn a_busy_directory_is_not_held_like_a_wrong_password() {
    let rt = runtime();
    for (rc, name) in [(51, "busy (51)"), (52, "unavailable (52)")] {
        let h = binds_answered(rc);
        let (c, _pw) = with_bind(dir(h.port()));
        let keys = service(vec![c]);
        let why = failed(&resolve(&rt, &keys, "a@example.org"));
        assert!(why.contains(name), "{why}");
        let why = failed(&resolve(&rt, &keys, "b@example.org"));
        assert!(why.contains("not retried for 10 s"), "{rc}: {why}");
    }
}

#[test]
fn a_starttls_refusal_or_a_plaintext_answer_never_gets_the_password() {
    let rt = runtime();
    // 0: StartTLS refused (protocolError); 1: "accepted", then the server
    // goes on in plaintext, answering the bind it hopes for.
    for accept in [false, true] {
        let h = server::start(move |s: &mut Session| {
            while let Some(r) = s.next() {
                match r.op {
                    server::EXTENDED if accept => {
                        s.send(&message(r.id, server::result(0x78, 0)));
                        s.send(&bind_response(r.id + 1, 0));
                    }
                    server::EXTENDED => {
                        s.send(&message(r.id, server::result(0x78, 2)));
                    }
                    BIND => {
                        s.send(&bind_response(r.id, 0));
                    }
                    SEARCH => {
                        s.send(&done(r.id, 0));
                    }
                    _ => {}
                }
            }
        });
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("ca.pem"), cert("ca@example.org").pem).unwrap();
        let (c, _pw) = with_bind(LdapConfig {
            starttls: true,
            ca_file: Some(d.path().join("ca.pem")),
            ..dir(h.port())
        });
        let t = Instant::now();
        let why = failed(&resolve(&rt, &service(vec![c]), "a@example.org"));
        assert!(why.contains("127.0.0.1"), "accept {accept}: {why}");
        assert!(t.elapsed() < bound(), "{:?}", t.elapsed());
        assert_eq!(h.binds(), 0, "accept {accept}: the bind was sent in clear");
    }
}

#[test]
fn a_directory_that_never_answers_the_bind_holds_fifty_lookups_for_one_timeout() {
    let h = server::start(|s: &mut Session| while s.next().is_some() {});
    let (c, _pw) = with_bind(dir(h.port()));
    let (outcomes, took) = fifty_at_once(Arc::new(service(vec![c])));
    for o in &outcomes {
        failed(o);
    }
    // One bind timeout (800 ms) for all of them, not one each.
    assert!(took < bound(), "{took:?}");
    assert!(h.connections() <= 4, "{}", h.connections());
}

#[test]
fn a_valid_certificate_for_another_host_is_refused() {
    let env = LdapEnv::start();
    let rt = runtime();
    // The server certificate names IP:127.0.0.1 and DNS:localhost; the
    // same servers reached at 127.0.0.2 are another host.
    let port = |url: &str| -> u16 { url.rsplit(':').next().unwrap().parse().unwrap() };
    let at = |ip: &str, url: &str| -> std::net::SocketAddr {
        server::forward(
            ip.parse().unwrap(),
            format!("127.0.0.1:{}", port(url)).parse().unwrap(),
        )
    };
    let base = |url: String, starttls: bool| LdapConfig {
        url,
        starttls,
        ca_file: Some(env.ca_file()),
        domains: vec![env.domain().to_owned()],
        base: env.people_base().to_owned(),
        bind_dn: env.bind_dn().to_owned(),
        bind_password_file: Some(env.password_file()),
        timeout_ms: 2_000,
        connect_timeout_ms: 1_000,
        ..LdapConfig::default()
    };
    let one = env.user("one");
    let bind_line = format!("BIND dn=\"{}\" method=128", env.bind_dn());
    let binds_before = env.tls_log().matches(&bind_line).count();
    for (ip, ok) in [("127.0.0.1", true), ("127.0.0.2", false)] {
        let ldaps = at(ip, env.ldaps_url());
        let starttls = at(ip, env.starttls_url());
        for (name, c) in [
            ("ldaps", base(format!("ldaps://{ldaps}"), false)),
            ("starttls", base(format!("ldap://{starttls}"), true)),
        ] {
            let o = resolve(&rt, &service(vec![c]), &one.address);
            if ok {
                let mut want: Vec<String> = one
                    .valid_cert_sha256()
                    .iter()
                    .map(|s| s.to_ascii_uppercase())
                    .collect();
                want.sort();
                assert_eq!(usable(&o), want, "{name} via {ip}");
            } else {
                let why = failed(&o);
                assert!(why.contains(ip), "{name} via {ip}: {why}");
            }
        }
    }
    // No password was sent to the wrong host: the binds slapd saw came
    // through 127.0.0.1 only (two: ldaps and StartTLS).
    let binds = env.tls_log().matches(&bind_line).count() - binds_before;
    assert_eq!(binds, 2, "{}", env.tls_log());
}

#[test]
fn fifty_lookups_share_the_connections_of_a_slow_directory() {
    let rt = runtime();
    let addrs: Vec<String> = (0..50).map(|i| format!("u{i}@example.org")).collect();
    let certs: Arc<Vec<_>> = Arc::new(addrs.iter().map(|a| cert(a)).collect());
    let c2 = Arc::clone(&certs);
    let h = server::start(answering(move |s, r| {
        // Each search answered after 300 ms, concurrently.
        let (w, id, counts, certs) = (s.writer(), r.id, Arc::clone(&s.counts), Arc::clone(&c2));
        let asked = r.asserted().unwrap();
        let now = counts.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        counts.max_in_flight.fetch_max(now, Ordering::SeqCst);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            let i: usize = asked[1..asked.find('@').unwrap()].parse().unwrap();
            let mut out = message(id, entry_for(&asked, &certs[i].der));
            out.extend(done(id, 0));
            counts.in_flight.fetch_sub(1, Ordering::SeqCst);
            let _ = w.lock().unwrap().write_all(&out);
        });
    }));
    let keys = Arc::new(service(vec![LdapConfig {
        timeout_ms: 3_000,
        ..dir(h.port())
    }]));
    let t = Instant::now();
    let outcomes = rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for (i, a) in addrs.iter().enumerate() {
            let (keys, a) = (Arc::clone(&keys), Address::parse(a).unwrap());
            set.spawn(async move {
                (
                    i,
                    keys.resolve(&a, Method::Smime, &only_ldap()).await.outcome,
                )
            });
        }
        set.join_all().await
    });
    let took = t.elapsed();
    for (i, o) in &outcomes {
        assert_eq!(usable(o), sorted(&[&certs[*i]]), "{}", addrs[*i]);
    }
    // Four connections (the default), each carrying many searches at
    // once: not 50 connections, and not one search after the other.
    assert_eq!(h.connections(), 4);
    assert_eq!(h.searches(), 50);
    assert!(h.counts.max_in_flight.load(Ordering::SeqCst) > 4);
    // One after the other on each connection would be 13 x 300 ms.
    assert!(took < Duration::from_millis(3_000), "{took:?}");
}

/// 50 lookups of different addresses at once; each outcome and the time
/// they took together.
fn fifty_at_once(keys: Arc<KeyService>) -> (Vec<KeyOutcome<Recipient>>, Duration) {
    let rt = runtime();
    let t = Instant::now();
    let outcomes = rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..50 {
            let keys = Arc::clone(&keys);
            let a = Address::parse(&format!("u{i}@example.org")).unwrap();
            set.spawn(async move { keys.resolve(&a, Method::Smime, &only_ldap()).await.outcome });
        }
        set.join_all().await
    });
    (outcomes, t.elapsed())
}

#[test]
fn a_down_directory_is_tried_once_by_concurrent_lookups() {
    // Accepts, then closes before answering the bind.
    let h = server::start(|s: &mut Session| {
        let _ = s.next();
    });
    let (c, _pw) = with_bind(dir(h.port()));
    let (outcomes, took) = fifty_at_once(Arc::new(service(vec![c])));
    for o in &outcomes {
        failed(o);
    }
    assert!(took < bound(), "{took:?}");
    assert_eq!(h.connections(), 1, "connection attempts");
}

#[test]
fn a_wrong_password_is_tried_once_by_concurrent_lookups() {
    let h = binds_answered(49);
    let (c, _pw) = with_bind(dir(h.port()));
    let c = LdapConfig {
        connections: 8,
        ..c
    };
    let (outcomes, took) = fifty_at_once(Arc::new(service(vec![c])));
    for o in &outcomes {
        failed(o);
    }
    assert!(took < bound(), "{took:?}");
    assert_eq!(h.binds(), 1, "failed binds");
}

#[test]
fn when_down_for_is_over_one_connection_probes_and_the_others_wait_for_it() {
    let h = server::start(|s: &mut Session| {
        while let Some(r) = s.next() {
            match (s.number, r.op) {
                (0, _) => return,
                (_, BIND) => {
                    // The probe's bind takes a while: every other lookup
                    // comes while it runs.
                    std::thread::sleep(Duration::from_millis(300));
                    s.send(&bind_response(r.id, 0));
                }
                (_, SEARCH) => {
                    s.send(&done(r.id, 0));
                }
                _ => {}
            }
        }
    });
    let (c, _pw) = with_bind(dir(h.port()));
    let keys = Arc::new(service(vec![c]));
    let rt = runtime();
    failed(&resolve(&rt, &keys, "first@example.org"));
    std::thread::sleep(Duration::from_millis(10_300));
    let (outcomes, _) = fifty_at_once(keys);
    let found = outcomes
        .iter()
        .filter(|o| matches!(o, KeyOutcome::NotFound))
        .count();
    for o in outcomes
        .iter()
        .filter(|o| !matches!(o, KeyOutcome::NotFound))
    {
        assert!(failed(o).contains("not retried"), "{o:?}");
    }
    // Connection attempts are made one at a time: every lookup waits for
    // the probe, and once it succeeded the directory is up again and
    // each is answered (the other slots connect one after another).
    assert_eq!(found, 50, "{found} found");
    assert!(h.connections() <= 1 + 4, "{} connections", h.connections());
}

#[test]
fn after_a_failed_connection_concurrent_lookups_fail_fast_without_connecting() {
    let h = server::start(|s: &mut Session| {
        let _ = s.next();
    });
    let (c, _pw) = with_bind(dir(h.port()));
    let keys = Arc::new(service(vec![LdapConfig {
        connections: 1,
        ..c
    }]));
    let rt = runtime();
    failed(&resolve(&rt, &keys, "first@example.org"));
    let (outcomes, took) = fifty_at_once(keys);
    for o in &outcomes {
        assert!(failed(o).contains("not retried"), "{o:?}");
    }
    assert!(took < Duration::from_millis(TIMEOUT_MS), "{took:?}");
    assert_eq!(h.connections(), 1);
}
