//! What a body holds (only keys for the address count) and how an
//! address becomes a URL.

use super::*;

// ---------------------------------------------------------------------------
// 7. Key bodies.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_bodies_keep_only_certificates_for_the_address() {
    let pki = Pki::new();
    let id = identity(&pki);
    let alice = cert(ALICE);
    let mallory = cert("Mallory <mallory@evil.example>");
    let many = |n: usize| -> Vec<u8> {
        let mut v = Vec::new();
        for i in 0..n - 1 {
            v.extend(binary(&cert(&format!("other{i}@example.org"))));
        }
        v.extend(binary(&alice));
        v
    };
    let mut junk_after = binary(&alice);
    junk_after.extend_from_slice(b"\n<html></html>\n");
    let cases: Vec<(&str, Vec<u8>, Expected)> = vec![
        ("armored", alice.armored().to_vec().unwrap(), Ok((1, 0))),
        (
            "two, the second for alice",
            [binary(&mallory), binary(&alice)].concat(),
            Ok((1, 1)),
        ),
        ("16 certificates", many(16), Ok((1, 15))),
        (
            "17 certificates",
            many(17),
            Err("more than 16 certificates"),
        ),
        (
            "upper-case UID",
            binary(&cert("<ALICE@Example.ORG>")),
            Ok((1, 0)),
        ),
        ("a key, then HTML", junk_after, Err("not an OpenPGP key")),
        ("empty", Vec::new(), Err("no OpenPGP key")),
    ];
    for (what, body, expected) in cases {
        let server = serving(&id, "200 OK", &[], body);
        let rig = Rig::wkd_at(&pki, server.ip());
        let lookup = rig.lookup(ALICE).await;
        match expected {
            Ok(counts) => assert_eq!(assert_found(&lookup), counts, "{what}"),
            Err(words) => {
                assert_failed(&lookup, &[words]);
            }
        }
    }
}

/// Keys for alice and for others, or the failure's words.
type Expected = Result<(usize, usize), &'static str>;

/// User IDs that only look like the address are keys for other
/// addresses: found, none usable for alice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_ids_that_merely_contain_the_address_do_not_match() {
    let pki = Pki::new();
    let id = identity(&pki);
    for uid in [
        "alice@example.org.evil.com",
        "<alice@example.org.evil.com>",
        "\"alice@example.org\" <mallory@evil.com>",
        "alice@example.org <mallory@evil.com>",
        "Mallory (alice@example.org) <mallory@evil.com>",
        "mallory@evil.com (alice@example.org)",
        "<mallory@evil.com> alice@example.org",
        "xalice@example.org",
        "alice@sub.example.org",
        "alice@example.org\u{0}<mallory@evil.com>",
    ] {
        let server = serving(&id, "200 OK", &[], binary(&cert(uid)));
        let rig = Rig::wkd_at(&pki, server.ip());
        assert_eq!(
            assert_found(&rig.lookup(ALICE).await),
            (0, 1),
            "UID {uid:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_for_the_address_that_cannot_be_used_are_rejected_with_the_reason() {
    let pki = Pki::new();
    let id = identity(&pki);
    let (alice, revocation) = CertBuilder::new()
        .add_userid(ALICE)
        .add_transport_encryption_subkey()
        .generate()
        .unwrap();
    let revoked = alice.insert_packets(revocation).unwrap().0;
    let signing_only = CertBuilder::new()
        .add_userid(ALICE)
        .add_signing_subkey()
        .generate()
        .unwrap()
        .0;
    // Mallory's key with a user ID for alice that nobody signed.
    let unbound = cert("mallory@evil.example")
        .insert_packets(Packet::from(UserID::from(ALICE)))
        .unwrap()
        .0;
    let cases = [
        ("revoked", revoked, RejectReason::Revoked),
        (
            "no encryption subkey",
            signing_only,
            RejectReason::NoEncryptionKey,
        ),
        (
            "unbound user ID",
            unbound,
            RejectReason::AddressMismatch(ALICE.into()),
        ),
    ];
    for (what, key, reason) in cases {
        let server = serving(&id, "200 OK", &[], binary(&key));
        let rig = Rig::wkd_at(&pki, server.ip());
        match rig.resolve(ALICE).await {
            KeyOutcome::Found {
                usable, rejected, ..
            } => {
                assert!(usable.is_empty(), "{what}");
                let reasons: Vec<_> = rejected.iter().map(|r| r.reason.clone()).collect();
                assert!(reasons.contains(&reason), "{what}: {reasons:?}");
            }
            other => panic!("{what}: {other:?}"),
        }
    }
    // And the plain key is usable, trust `tls`.
    let server = serving(&id, "200 OK", &[], binary(&cert(ALICE)));
    let rig = Rig::wkd_at(&pki, server.ip());
    let KeyOutcome::Found { usable, .. } = rig.resolve(ALICE).await else {
        panic!("alice's key");
    };
    assert_eq!(usable.len(), 1);
    assert_eq!(usable[0].provenance.trust().to_string(), "tls");
}

// ---------------------------------------------------------------------------
// 8. Addresses in URLs.

/// `s` percent-decoded, or `None` when it holds anything but unreserved
/// characters and well-formed `%XX`.
fn strict_percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            c if c.is_ascii_alphanumeric() || b"-._~".contains(&c) => {
                out.push(c);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

fn not_found_server(id: &Identity) -> Server {
    serving(id, "404 Not Found", &[], b"no".to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_local_parts_make_well_formed_urls_without_traversal() {
    let pki = Pki::new();
    let server = not_found_server(&identity(&pki));
    let rig = Rig::wkd_at(&pki, server.ip());
    let cases = [
        ("a?b@example.org", "a?b"),
        ("a#b@example.org", "a#b"),
        ("a/b@example.org", "a/b"),
        ("a%2Fb@example.org", "a%2Fb"),
        ("a&l=mallory@example.org", "a&l=mallory"),
        ("\"a b\"@example.org", "a b"),
        ("\"..\"@example.org", ".."),
        ("\"../../../etc/passwd\"@example.org", "../../../etc/passwd"),
        ("\"a\\\"b\"@example.org", "a\"b"),
        ("j\u{f6}rg@example.org", "j\u{f6}rg"),
        ("Joe.Doe@EXAMPLE.ORG", "Joe.Doe"),
    ];
    let zbase32 = "ybndrfg8ejkmcpqxot1uwisza345h769";
    for (i, (addr, local)) in cases.iter().enumerate() {
        assert!(matches!(rig.lookup(addr).await, Lookup::NotFound), "{addr}");
        let req = server.seen.requests()[i].clone();
        assert_eq!(req.host.as_deref(), Some(HOST), "{addr}");
        assert_eq!(req.sni.as_deref(), Some(HOST), "{addr}");
        let line: Vec<&str> = req.line.split(' ').collect();
        assert_eq!(
            (line.len(), line[0], line[2]),
            (3, "GET", "HTTP/1.1"),
            "{addr}: {req:?}"
        );
        let rest = req
            .target
            .strip_prefix("/.well-known/openpgpkey/example.org/hu/")
            .unwrap_or_else(|| panic!("{addr}: {}", req.target));
        let (hash, l) = rest
            .split_once("?l=")
            .unwrap_or_else(|| panic!("{addr}: {rest}"));
        assert!(
            hash.len() == 32 && hash.chars().all(|c| zbase32.contains(c)),
            "{addr}: hash {hash:?}"
        );
        assert_eq!(
            strict_percent_decode(l).as_deref(),
            Some(*local),
            "{addr}: l={l}"
        );
    }
    // The local part is hashed lower-cased, sent as written.
    let reqs = server.seen.requests();
    assert!(
        reqs.last()
            .unwrap()
            .target
            .contains("/hu/iy9q119eutrkn8s1mk4r39qejnbu3n5q?l=Joe.Doe")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn international_domains_are_asked_by_their_a_labels() {
    let pki = Pki::new();
    let host = "openpgpkey.xn--bcher-kva.example";
    let server = not_found_server(&pki.issue(&[host], VALID));
    let rig = Rig::new(settings(&pki), MapHosts::new().with(host, server.ip()));
    let lookup = rig.lookup("alice@B\u{fc}cher.Example").await;
    assert!(matches!(lookup, Lookup::NotFound), "{lookup:?}");
    assert_eq!(rig.hosts.asked(), [host]);
    let req = &server.seen.requests()[0];
    assert_eq!(req.sni.as_deref(), Some(host));
    assert!(
        req.target
            .starts_with("/.well-known/openpgpkey/xn--bcher-kva.example/hu/"),
        "{}",
        req.target
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyserver_url_carries_the_address_percent_encoded_below_its_base() {
    let pki = Pki::new();
    let key = alice_key();
    let server = Server::https(
        &pki.issue(&["keys.hostile.test"], VALID),
        0,
        move |req, s| {
            let key = key.clone();
            async move {
                if req.target == "/prefix/vks/v1/by-email/alice%40example.org" {
                    reply(s, "200 OK", &[], &key).await;
                } else {
                    reply(s, "404 Not Found", &[], b"").await;
                }
            }
        },
    );
    let rig = Rig::new(
        settings(&pki),
        MapHosts::new().with("keys.hostile.test", server.ip()),
    );
    let base = format!("https://keys.hostile.test:{}/prefix", server.addr.port());
    let ks = KeyserverSource::new(Arc::clone(&rig.client), vec![base]);
    let found = ks.lookup(&addr_of(ALICE), Method::OpenPgp).await;
    assert_eq!(assert_found(&found), (1, 0));
    for addr in ["\"a/../b\"@example.org", "a?b#c@example.org"] {
        let lookup = ks.lookup(&addr_of(addr), Method::OpenPgp).await;
        assert!(matches!(lookup, Lookup::NotFound), "{addr}: {lookup:?}");
    }
    let reqs = server.seen.requests();
    let port = server.addr.port();
    assert_eq!(
        reqs[0].host.as_deref(),
        Some(format!("keys.hostile.test:{port}").as_str())
    );
    let decoded: Vec<Option<String>> = reqs
        .iter()
        .map(|r| strict_percent_decode(r.target.strip_prefix("/prefix/vks/v1/by-email/").unwrap()))
        .collect();
    assert_eq!(
        decoded,
        [
            Some(ALICE.into()),
            Some("\"a/../b\"@example.org".into()),
            Some("a?b#c@example.org".into())
        ]
    );
}

/// `alice@10.1.2.3` — a dotted quad spelled as a domain, no brackets — is
/// no host name: WKD must not turn it into `https://10.1.2.3/…` and
/// connect there without DNS (a sender could aim the milter at any
/// internal address; an IP certificate would even make the key `tls`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dotted_quad_domain_has_no_web_key_directory() {
    let pki = Pki::new();
    let server = Server::https(&pki.issue(&["127.0.0.2"], VALID), 443, |_, s| async move {
        reply(s, "404 Not Found", &[], b"").await
    });
    let rig = Rig::new(settings(&pki), MapHosts::new());
    let addr = format!("alice@{}", server.ip());
    let lookup = rig.lookup(&addr).await;
    assert!(matches!(lookup, Lookup::NotFound), "{lookup:?}");
    assert_eq!(server.seen.accepted(), 0, "connected to {}", server.ip());
}
