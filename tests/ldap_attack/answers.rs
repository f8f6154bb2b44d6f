//! A hostile directory's answers, from a scripted server: what it says
//! decides the outcome only as far as the design allows (references are
//! not entries, a referral is a failure, an answer under another message
//! id is no answer, a key must name the address), and nothing it sends
//! makes the answer larger than the bounds on a search.

use std::time::{Duration, Instant};

use autoencrypt_milter::backend::RejectReason;
use autoencrypt_milter::policy::KeyOutcome;

use super::certs::{bag, cert, sorted};
use super::server::{self, Session, answering, done, done_referral, entry, message, reference};
use super::*;

/// Answers every search with `entries` (operations), then success.
fn fixed(entries: Vec<Vec<u8>>) -> impl Fn(&mut Session) + Send + Sync + 'static {
    answering(move |s, r| {
        for e in &entries {
            s.send(&message(r.id, e.clone()));
        }
        s.send(&done(r.id, 0));
    })
}

fn v(bytes: &[u8]) -> Vec<Vec<u8>> {
    vec![bytes.to_vec()]
}

#[test]
fn references_alone_are_no_entry_and_a_referral_is_a_failure() {
    let rt = runtime();
    let urls = ["ldap://elsewhere.test/dc=test??sub", "ldap://other.test/"];
    let refs = server::start(answering(move |s, r| {
        s.send(&reference(r.id, &urls));
        s.send(&reference(r.id, &urls[..1]));
        s.send(&done(r.id, 0));
    }));
    not_found(&resolve(
        &rt,
        &service(vec![dir(refs.port())]),
        "a@example.org",
    ));

    // Beside a reference, the entry is the answer.
    let c = cert("a@example.org");
    let e = entry(
        "cn=a,dc=test",
        &[
            ("mail", v(b"a@example.org")),
            ("userCertificate;binary", v(&c.der)),
        ],
    );
    let mixed = server::start(answering(move |s, r| {
        s.send(&reference(r.id, &urls));
        s.send(&message(r.id, e.clone()));
        s.send(&reference(r.id, &urls));
        s.send(&done(r.id, 0));
    }));
    let o = resolve(&rt, &service(vec![dir(mixed.port())]), "a@example.org");
    assert_eq!(usable(&o), sorted(&[&c]));

    // A referral result (rc 10) is not chased and not "no key".
    let referral = server::start(answering(move |s, r| {
        s.send(&done_referral(r.id, &urls));
    }));
    let why = failed(&resolve(
        &rt,
        &service(vec![dir(referral.port())]),
        "a@example.org",
    ));
    assert!(why.contains("referral (10)"), "{why}");
}

#[test]
fn endless_references_end_at_the_timeout() {
    let rt = runtime();
    let h = server::start(answering(|s, r| {
        while s.send(&reference(r.id, &["ldap://elsewhere.test/"])) {}
    }));
    let t = Instant::now();
    let o = resolve(&rt, &service(vec![dir(h.port())]), "a@example.org");
    assert_eq!(failed(&o), "timed out");
    assert!(t.elapsed() < bound(), "{:?}", t.elapsed());
}

#[test]
fn an_answer_finished_under_another_message_id_is_a_timeout_not_a_partial_answer() {
    let rt = runtime();
    let c = cert("a@example.org");
    let e = entry(
        "cn=a,dc=test",
        &[
            ("mail", v(b"a@example.org")),
            ("userCertificate;binary", v(&c.der)),
        ],
    );
    let h = server::start(answering(move |s, r| {
        s.send(&message(r.id, e.clone()));
        s.send(&done(r.id + 7, 0));
    }));
    let t = Instant::now();
    let o = resolve(&rt, &service(vec![dir(h.port())]), "a@example.org");
    assert_eq!(failed(&o), "timed out");
    assert!(t.elapsed() < bound(), "{:?}", t.elapsed());
}

#[test]
fn stray_answers_do_not_reach_the_next_search_on_the_connection() {
    let rt = runtime();
    let (ca, cb) = (cert("a@example.org"), cert("b@example.org"));
    let ea = entry(
        "cn=a,dc=test",
        &[
            ("mail", v(b"a@example.org")),
            ("userCertificate;binary", v(&ca.der)),
        ],
    );
    let stray = entry(
        "cn=stray,dc=test",
        &[
            ("mail", v(b"b@example.org")),
            ("userCertificate;binary", v(&cb.der)),
        ],
    );
    let h = server::start(answering(move |s, r| {
        if r.asserted().as_deref() == Some("a@example.org") {
            s.send(&message(r.id, ea.clone()));
            s.send(&done(r.id, 0));
            // A second done, and an answer to a request not made yet.
            s.send(&done(r.id, 0));
            s.send(&message(r.id + 1, stray.clone()));
            s.send(&done(r.id + 1, 0));
        } else {
            s.send(&done(r.id, 0));
        }
    }));
    let keys = service(vec![LdapConfig {
        connections: 1,
        ..dir(h.port())
    }]);
    assert_eq!(
        usable(&resolve(&rt, &keys, "a@example.org")),
        sorted(&[&ca])
    );
    std::thread::sleep(Duration::from_millis(100));
    not_found(&resolve(&rt, &keys, "b@example.org"));
    // The strays did not break the connection either.
    assert_eq!(h.connections(), 1);
    assert_eq!(h.searches(), 2);
}

#[test]
fn swapped_message_ids_cannot_make_one_users_key_anothers() {
    let rt = runtime();
    let (ca, cb) = (cert("a@example.org"), cert("b@example.org"));
    let (ea, eb) = (
        entry(
            "cn=a,dc=test",
            &[
                ("mail", v(b"a@example.org")),
                ("userCertificate;binary", v(&ca.der)),
            ],
        ),
        entry(
            "cn=b,dc=test",
            &[
                ("mail", v(b"b@example.org")),
                ("userCertificate;binary", v(&cb.der)),
            ],
        ),
    );
    let h = server::start(move |s: &mut Session| {
        let mut pending = Vec::new();
        while let Some(r) = s.next() {
            match r.op {
                server::BIND => {
                    s.send(&server::bind_response(r.id, 0));
                }
                server::SEARCH => {
                    pending.push(r);
                    if pending.len() == 2 {
                        // Each search gets the other's entry.
                        let (x, y) = (pending[0].id, pending[1].id);
                        let first_is_a = pending[0].asserted().as_deref() == Some("a@example.org");
                        let (for_x, for_y) = if first_is_a { (&eb, &ea) } else { (&ea, &eb) };
                        s.send(&message(x, for_x.clone()));
                        s.send(&message(y, for_y.clone()));
                        s.send(&done(x, 0));
                        s.send(&done(y, 0));
                        pending.clear();
                    }
                }
                _ => {}
            }
        }
    });
    let keys = service(vec![LdapConfig {
        connections: 1,
        ..dir(h.port())
    }]);
    let (a, b) = (
        autoencrypt_milter::Address::parse("a@example.org").unwrap(),
        autoencrypt_milter::Address::parse("b@example.org").unwrap(),
    );
    let choice = only_ldap();
    let (oa, ob) = rt.block_on(async {
        tokio::join!(
            keys.resolve(&a, Method::Smime, &choice),
            keys.resolve(&b, Method::Smime, &choice)
        )
    });
    for o in [oa.outcome, ob.outcome] {
        assert!(usable(&o).is_empty(), "{o:?}");
        assert!(
            matches!(rejected(&o)[..], [RejectReason::AddressMismatch(_)]),
            "{o:?}"
        );
    }
    assert_eq!(h.connections(), 1, "both searches shared the connection");
}

#[test]
fn a_late_answer_to_a_timed_out_search_is_not_taken_for_the_next() {
    let rt = runtime();
    let ca = cert("a@example.org");
    let ea = entry(
        "cn=a,dc=test",
        &[
            ("mail", v(b"a@example.org")),
            ("mail", v(b"b@example.org")),
            ("userCertificate;binary", v(&ca.der)),
        ],
    );
    let h = server::start(answering(move |s, r| {
        if s.number == 0 {
            // Answers a's search after the client gave up, as if the
            // answer were b's too (the next id).
            std::thread::sleep(Duration::from_millis(TIMEOUT_MS + 400));
            s.send(&message(r.id, ea.clone()));
            s.send(&done(r.id, 0));
            s.send(&message(r.id + 1, ea.clone()));
            s.send(&done(r.id + 1, 0));
        } else {
            s.send(&done(r.id, 0));
        }
    }));
    let keys = service(vec![LdapConfig {
        connections: 1,
        ..dir(h.port())
    }]);
    assert_eq!(failed(&resolve(&rt, &keys, "a@example.org")), "timed out");
    std::thread::sleep(Duration::from_millis(600));
    not_found(&resolve(&rt, &keys, "b@example.org"));
    assert_eq!(
        h.connections(),
        2,
        "the timed-out connection was not reused"
    );
}

#[test]
fn an_answer_ldap3_cannot_read_is_a_failure_and_the_next_connection_works() {
    let rt = runtime();
    // Under the search's id: a BindResponse (ldap3's connection task
    // panics: "unrecognized op id"), or a SearchResultDone whose
    // diagnostic message is not UTF-8 (it panics reading it).
    let mut not_utf8 = server::int(0x0a, 0);
    not_utf8.extend(server::tlv(0x04, b""));
    not_utf8.extend(server::tlv(0x04, b"\xff\xfe"));
    for bad in [server::result(0x61, 0), server::tlv(0x65, &not_utf8)] {
        let h = server::start(answering(move |s, r| {
            if s.number == 0 {
                s.send(&message(r.id, bad.clone()));
            } else {
                s.send(&done(r.id, 0));
            }
        }));
        let keys = service(vec![dir(h.port())]);
        let t = Instant::now();
        let why = failed(&resolve(&rt, &keys, "a@example.org"));
        assert!(why.contains("127.0.0.1"), "{why}");
        assert!(t.elapsed() < bound(), "{:?}", t.elapsed());
        not_found(&resolve(&rt, &keys, "b@example.org"));
        assert_eq!(h.connections(), 2);
    }
}

#[test]
fn odd_attribute_descriptions_are_the_attribute_and_near_names_are_not() {
    let rt = runtime();
    let cs: Vec<_> = (0..5).map(|_| cert("a@example.org")).collect();
    let e = entry(
        "cn=a,dc=test",
        &[
            ("MAIL", v(b"a@example.org")),
            ("userCertificate;binary;x-odd", v(&cs[0].der)),
            ("USERCERTIFICATE;BINARY", v(&cs[1].der)),
            ("userCertificate;", v(&cs[2].der)),
            ("usersmimecertificate", v(&bag(&[&cs[3].der]))),
            // Not an attribute asked for: ignored.
            ("userCertificateX;binary", v(&cs[4].der)),
        ],
    );
    let h = server::start(fixed(vec![e]));
    let o = resolve(&rt, &service(vec![dir(h.port())]), "a@example.org");
    assert_eq!(usable(&o), sorted(&[&cs[0], &cs[1], &cs[2], &cs[3]]));
    assert!(rejected(&o).is_empty(), "{o:?}");
}

#[test]
fn pem_and_der_values_and_bags_are_all_read() {
    let rt = runtime();
    let (c1, c2) = (cert("a@example.org"), cert("a@example.org"));
    let mut pem_with_space = b"\n  ".to_vec();
    pem_with_space.extend_from_slice(&c1.pem);
    let e = entry(
        "cn=a,dc=test",
        &[
            ("mail", v(b"a@example.org")),
            (
                "userCertificate;binary",
                vec![pem_with_space, c2.der.clone()],
            ),
            // The same c2 again in a bag: one recipient.
            ("userSMIMECertificate", v(&bag(&[&c2.der]))),
        ],
    );
    let h = server::start(fixed(vec![e]));
    let o = resolve(&rt, &service(vec![dir(h.port())]), "a@example.org");
    assert_eq!(usable(&o), sorted(&[&c1, &c2]));
}

#[test]
fn the_same_certificate_as_pem_and_der_is_one_recipient() {
    let rt = runtime();
    let c = cert("a@example.org");
    let e = entry(
        "cn=a,dc=test",
        &[
            ("mail", v(b"a@example.org")),
            ("userCertificate;binary", v(&c.der)),
            ("userSMIMECertificate", v(&c.pem)),
        ],
    );
    let h = server::start(fixed(vec![e]));
    let o = resolve(&rt, &service(vec![dir(h.port())]), "a@example.org");
    assert_eq!(usable(&o), sorted(&[&c]), "one certificate, one recipient");
}

#[test]
fn a_bag_with_another_addresss_certificate_gives_only_the_right_one() {
    let rt = runtime();
    let (other, right) = (cert("mallory@example.org"), cert("a@example.org"));
    let e = entry(
        "cn=a,dc=test",
        &[
            ("mail", v(b"a@example.org")),
            ("userSMIMECertificate", v(&bag(&[&other.der, &right.der]))),
        ],
    );
    let h = server::start(fixed(vec![e]));
    let o = resolve(&rt, &service(vec![dir(h.port())]), "a@example.org");
    assert_eq!(usable(&o), sorted(&[&right]));
    assert!(
        matches!(rejected(&o)[..], [RejectReason::AddressMismatch(_)]),
        "{o:?}"
    );
}

/// An entry for a@ whose userSMIMECertificate is one bag of `n`
/// distinct certificates, all for a@.
fn bag_server(n: usize) -> server::Server {
    let cs: Vec<_> = (0..n).map(|_| cert("a@example.org")).collect();
    let ders: Vec<&[u8]> = cs.iter().map(|c| c.der.as_slice()).collect();
    let e = entry(
        "cn=a,dc=test",
        &[
            ("mail", v(b"a@example.org")),
            ("userSMIMECertificate", v(&bag(&ders))),
        ],
    );
    server::start(fixed(vec![e]))
}

#[test]
fn a_bag_of_64_certificates_gives_64_keys() {
    let rt = runtime();
    let h = bag_server(64);
    let o = resolve(&rt, &service(vec![dir(h.port())]), "a@example.org");
    assert_eq!(usable(&o).len(), 64);
}

#[test]
fn a_bag_of_more_certificates_than_a_person_has_is_bounded() {
    let rt = runtime();
    let h = bag_server(200);
    let o = resolve(&rt, &service(vec![dir(h.port())]), "a@example.org");
    match &o {
        // As an attribute with more than 64 values is.
        KeyOutcome::Failed(why) => assert!(why.to_string().contains("127.0.0.1"), "{why}"),
        KeyOutcome::Found {
            usable, rejected, ..
        } => assert!(
            usable.len() + rejected.len() <= 64,
            "{} keys from one bag",
            usable.len() + rejected.len()
        ),
        other => panic!("{other:?}"),
    }
}

/// A DN of `n` bytes under dc=test.
fn long_dn(n: usize) -> String {
    format!("cn={},dc=test", "x".repeat(n))
}

#[test]
fn a_one_megabyte_dn_is_an_entry_like_any_other() {
    let rt = runtime();
    let c = cert("a@example.org");
    let e = entry(
        &long_dn(1 << 20),
        &[
            ("mail", v(b"a@example.org")),
            ("userCertificate;binary", v(&c.der)),
        ],
    );
    let h = server::start(fixed(vec![e]));
    let o = resolve(&rt, &service(vec![dir(h.port())]), "a@example.org");
    assert_eq!(usable(&o), sorted(&[&c]));
}

#[test]
fn a_huge_dn_is_not_copied_into_every_key() {
    let rt = runtime();
    let cs: Vec<_> = (0..16).map(|_| cert("a@example.org")).collect();
    let e = entry(
        &long_dn(1 << 20),
        &[
            ("mail", v(b"a@example.org")),
            (
                "userCertificate;binary",
                cs.iter().map(|c| c.der.clone()).collect(),
            ),
        ],
    );
    let h = server::start(fixed(vec![e]));
    let o = resolve(&rt, &service(vec![dir(h.port())]), "a@example.org");
    let KeyOutcome::Found { usable, .. } = &o else {
        panic!("{o:?}")
    };
    assert_eq!(usable.len(), 16);
    let held: usize = usable.iter().map(|r| r.origin.len()).sum();
    // The search itself may be 4 MiB (MAX_SEARCH_BYTES); what it makes
    // must not be many times that.
    assert!(held <= 4 << 20, "{held} bytes of origins");
    let longest = usable.iter().map(|r| r.origin.len()).max().unwrap();
    assert!(longest < 4096, "one origin (a log line) is {longest} bytes");
}

#[test]
fn sixty_four_addresses_are_read_and_sixty_five_are_a_failure() {
    let rt = runtime();
    let c = cert("a@example.org");
    let list = |n: usize| -> Vec<Vec<u8>> {
        let mut l: Vec<Vec<u8>> = (1..n)
            .map(|i| format!("alias{i}@example.org").into_bytes())
            .collect();
        l.push(b"a@example.org".to_vec());
        l
    };
    for (n, ok) in [(64, true), (65, false)] {
        let e = entry(
            "cn=a,dc=test",
            &[("mail", list(n)), ("userCertificate;binary", v(&c.der))],
        );
        let h = server::start(fixed(vec![e]));
        let o = resolve(&rt, &service(vec![dir(h.port())]), "a@example.org");
        if ok {
            assert_eq!(usable(&o), sorted(&[&c]), "{n}");
        } else {
            let why = failed(&o);
            assert!(why.contains("unreadable entry"), "{n}: {why}");
        }
    }
}
