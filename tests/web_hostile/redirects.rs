//! Redirects, and the server certificates they lead to.

use super::*;

// ---------------------------------------------------------------------------
// 3. Redirects.

/// A server redirecting each path with `301` as `route` says (`None`:
/// serve `key`).
fn redirecting(id: &Identity, key: Vec<u8>, route: fn(&str) -> Option<String>) -> Server {
    let key = Arc::new(key);
    Server::https(id, 443, move |req: Request, s| {
        let key = Arc::clone(&key);
        async move {
            match route(&req.target) {
                Some(loc) => {
                    let head = format!(
                        "HTTP/1.1 301 Moved\r\nLocation: {loc}\r\nContent-Length: 0\r\n\r\n"
                    );
                    raw(s, head.as_bytes()).await;
                }
                None => reply(s, "200 OK", &[], &key).await,
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_loop_fails_naming_max_redirects() {
    let pki = Pki::new();
    let server = redirecting(&identity(&pki), alice_key(), |t| {
        Some(if t == "/a" { "/b" } else { "/a" }.to_owned())
    });
    let rig = Rig::wkd_at(&pki, server.ip());
    assert_failed(
        &rig.lookup(ALICE).await,
        &["more than 3 redirects", "wkd.max_redirects"],
    );
    // The first request and three redirects followed, no more.
    assert_eq!(server.seen.requests().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_redirects_are_followed_one_more_is_a_failure() {
    let pki = Pki::new();
    // /hop/N redirects to /hop/N+1 until N = 3, which has the key.
    let server = redirecting(&identity(&pki), alice_key(), |t| {
        let n = t.strip_prefix("/hop/").and_then(|n| n.parse::<u32>().ok());
        match n {
            None => Some("/hop/1".into()),
            Some(n) if n < 3 => Some(format!("/hop/{}", n + 1)),
            Some(_) => None,
        }
    });
    let rig = Rig::wkd_at(&pki, server.ip());
    assert_eq!(assert_found(&rig.lookup(ALICE).await), (1, 0));
    let mut s = settings(&pki);
    s.max_redirects = 2;
    let tight = Rig::new(s, MapHosts::new().with(HOST, server.ip()));
    assert_failed(&tight.lookup(ALICE).await, &["more than 2 redirects"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_that_cannot_be_followed_are_failures() {
    let pki = Pki::new();
    let id = identity(&pki);
    let cases: &[(&str, &[&str])] = &[
        (
            "HTTP/1.1 302 Found\r\nLocation: https://user@openpgpkey.example.org/k\r\n",
            &["redirects to", "user information"],
        ),
        (
            "HTTP/1.1 302 Found\r\n",
            &["HTTP 302 without a usable Location"],
        ),
        ("HTTP/1.1 304 Not Modified\r\n", &["HTTP 304"]),
        (
            "HTTP/1.1 301 Moved\r\nLocation: http://openpgpkey.example.org:8080/k\r\n",
            &["redirects to", "only https"],
        ),
        (
            "HTTP/1.1 301 Moved\r\nLocation: javascript:alert(1)\r\n",
            &["redirects to \"javascript:alert(1)\""],
        ),
        (
            "HTTP/1.1 301 Moved\r\nLocation: data:application/pgp-keys;base64,AAAA\r\n",
            &["redirects to \"data:"],
        ),
        ("HTTP/1.1 307 Temporary\r\nLocation: \u{1}\r\n", &[]),
    ];
    for (head, words) in cases {
        let bytes = format!("{head}Content-Length: 0\r\n\r\n").into_bytes();
        let server = raw_server(&id, bytes);
        let rig = Rig::wkd_at(&pki, server.ip());
        let lookup = rig.lookup(ALICE).await;
        let seen: Vec<String> = server
            .seen
            .requests()
            .into_iter()
            .map(|r| r.target)
            .collect();
        assert!(
            matches!(lookup, Lookup::Failed(_)),
            "{head:?}: {lookup:?}, requests {seen:?}"
        );
        assert_failed(&lookup, words);
        assert_eq!(
            seen.len(),
            1,
            "{head:?}: nothing followed, requests {seen:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_another_https_host_is_followed_and_verified_there() {
    let pki = Pki::new();
    let key = alice_key();
    let other = serving(
        &pki.issue(&["keys.elsewhere.test"], VALID),
        "200 OK",
        &[],
        key.clone(),
    );
    let wrong = serving(
        &pki.issue(&["not-it.test"], VALID),
        "200 OK",
        &[],
        key.clone(),
    );
    let first = redirecting(&identity(&pki), Vec::new(), |t| {
        Some(if t.ends_with("?l=alice") {
            "https://keys.elsewhere.test/alice".into()
        } else {
            "https://keys.wrongname.test/alice".into()
        })
    });
    let hosts = MapHosts::new()
        .with(HOST, first.ip())
        .with("keys.elsewhere.test", other.ip())
        .with("keys.wrongname.test", wrong.ip());
    let rig = Rig::new(settings(&pki), hosts);
    let lookup = rig.lookup(ALICE).await;
    let Lookup::Found { keys, .. } = &lookup else {
        panic!("{lookup:?}");
    };
    assert_eq!(keys.len(), 1);
    assert!(
        keys[0].origin.contains("https://keys.elsewhere.test/alice"),
        "{}",
        keys[0].origin
    );
    assert_eq!(
        other.seen.requests()[0].sni.as_deref(),
        Some("keys.elsewhere.test")
    );
    assert_eq!(
        other.seen.requests()[0].host.as_deref(),
        Some("keys.elsewhere.test")
    );
    // The same redirect to a host whose certificate names another host.
    let bob = rig.lookup("bob@example.org").await;
    assert_failed(
        &bob,
        &["TLS with keys.wrongname.test", "certificate not trusted"],
    );
    assert!(wrong.seen.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_an_ip_literal_is_verified_as_that_ip() {
    let pki = Pki::new();
    let target = serving(&pki.issue(&[HOST], VALID), "200 OK", &[], alice_key());
    let loc = format!("https://{}/k", target.ip());
    let loc: &'static str = Box::leak(loc.into_boxed_str());
    let first = Server::https(&identity(&pki), 443, move |_, s| async move {
        reply(s, "302 Found", &[("Location", loc)], b"").await
    });
    let rig = Rig::wkd_at(&pki, first.ip());
    assert_failed(&rig.lookup(ALICE).await, &["certificate not trusted"]);
    assert!(target.seen.requests().is_empty());
}

// ---------------------------------------------------------------------------
// 6. Server certificates.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_server_certificates_are_failures_that_say_why() {
    let pki = Pki::new();
    let key = alice_key();
    let cases: Vec<(Identity, &[&str])> = vec![
        (
            pki.issue(&[HOST], EXPIRED),
            &["certificate not trusted", "expired"],
        ),
        (
            Pki::self_signed(&[HOST]),
            &["certificate not trusted", "self-signed"],
        ),
        (
            pki.issue(&["openpgpkey.example.net"], VALID),
            &["certificate not trusted", "mismatch"],
        ),
        // Too broad a wildcard: OpenSSL matches none under a single label.
        (
            pki.issue(&["*.org"], VALID),
            &["certificate not trusted", "mismatch"],
        ),
        // A wildcard covers one label, not two.
        (
            pki.issue(&["*.openpgpkey.example.org"], VALID),
            &["mismatch"],
        ),
    ];
    for (id, words) in cases {
        let server = serving(&id, "200 OK", &[], key.clone());
        let rig = Rig::wkd_at(&pki, server.ip());
        assert_failed(&rig.lookup(ALICE).await, words);
        assert!(
            server.seen.requests().is_empty(),
            "{words:?}: no request sent"
        );
    }
}

/// `*.example.org` is the domain's own wildcard: it vouches for
/// `openpgpkey.example.org` (RFC 6125 §6.4.3, what browsers accept) but
/// not for `example.org` itself (the direct method).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_certificate_covers_the_advanced_host_not_the_domain() {
    let pki = Pki::new();
    let server = serving(
        &pki.issue(&["*.example.org"], VALID),
        "200 OK",
        &[],
        alice_key(),
    );
    let rig = Rig::wkd_at(&pki, server.ip());
    assert_eq!(assert_found(&rig.lookup(ALICE).await), (1, 0));
    let direct = Rig::new(
        settings(&pki),
        MapHosts::new().with("example.org", server.ip()),
    );
    assert_failed(
        &direct.lookup(ALICE).await,
        &["TLS with example.org", "mismatch"],
    );
    assert_eq!(direct.hosts.asked(), [HOST, "example.org"]);
}

/// An advanced host that exists decides, even when it redirects to a
/// host that does not: a failure, not "no such host" (which would send
/// the lookup on to the direct method and end as "no key").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_a_host_that_does_not_exist_is_a_failure() {
    let pki = Pki::new();
    let server = Server::https(&identity(&pki), 443, |_, s| async move {
        reply(
            s,
            "302 Found",
            &[("Location", "https://gone.example/k")],
            b"",
        )
        .await
    });
    let rig = Rig::wkd_at(&pki, server.ip());
    assert_failed(&rig.lookup(ALICE).await, &["gone.example"]);
    assert_eq!(
        rig.hosts.asked(),
        [HOST, "gone.example"],
        "the direct method not asked"
    );
}
