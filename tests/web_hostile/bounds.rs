//! Shared fetches, the cache, fetches in flight, connection bounds and
//! the fallback to the direct method.

use super::*;

// ---------------------------------------------------------------------------
// 9. Shared fetches, the cache and the bound on fetches in flight.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_lookups_of_one_address_send_one_request() {
    let pki = Pki::new();
    let key = alice_key();
    let server = Server::https(&identity(&pki), 443, move |_, s| {
        let key = key.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            reply(s, "200 OK", &[], &key).await;
        }
    });
    let rig = Rig::wkd_at(&pki, server.ip());
    let wkd = Arc::new(rig.wkd());
    let mut all = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let wkd = Arc::clone(&wkd);
        all.spawn(async move { wkd.lookup(&addr_of(ALICE), Method::OpenPgp).await });
    }
    while let Some(lookup) = all.join_next().await {
        assert_eq!(assert_found(&lookup.unwrap()), (1, 0));
    }
    assert_eq!(server.seen.requests().len(), 1);
    assert_eq!(rig.client.fetches_sent(), 1);
    // Later lookups, of this address and of its other spelling, read the
    // cache or ask anew; a key for alice never answers bob.
    assert_eq!(assert_found(&rig.lookup(ALICE).await), (1, 0));
    assert_eq!(server.seen.requests().len(), 1);
    assert_eq!(assert_found(&rig.lookup("Alice@example.org").await), (1, 0));
    assert_eq!(assert_found(&rig.lookup("bob@example.org").await), (0, 1));
    assert_eq!(
        server.seen.requests().len(),
        3,
        "?l= differs: own cache entries"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_never_sees_more_than_max_in_flight_requests_at_once() {
    let pki = Pki::new();
    let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (n, p) = (Arc::clone(&now), Arc::clone(&peak));
    let server = Server::https(&identity(&pki), 443, move |_, s| {
        let (n, p) = (Arc::clone(&n), Arc::clone(&p));
        async move {
            let at = n.fetch_add(1, Ordering::SeqCst) + 1;
            p.fetch_max(at, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(150)).await;
            // Counted out before the answer: the client's next fetch
            // cannot start before it has this one.
            n.fetch_sub(1, Ordering::SeqCst);
            reply(s, "404 Not Found", &[], b"").await;
        }
    });
    let mut s = settings(&pki);
    s.max_in_flight = 3;
    let rig = Rig::new(s, MapHosts::new().with(HOST, server.ip()));
    let wkd = Arc::new(rig.wkd());
    let mut all = tokio::task::JoinSet::new();
    for i in 0..12 {
        let wkd = Arc::clone(&wkd);
        all.spawn(async move {
            wkd.lookup(&addr_of(&format!("user{i}@example.org")), Method::OpenPgp)
                .await
        });
    }
    while let Some(lookup) = all.join_next().await {
        let lookup = lookup.unwrap();
        assert!(matches!(lookup, Lookup::NotFound), "{lookup:?}");
    }
    assert_eq!(server.seen.requests().len(), 12);
    assert_eq!(peak.load(Ordering::SeqCst), 3);
}

/// Fetches beyond max_in_flight wait, within their own timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_a_slot_counts_against_the_timeout() {
    let pki = Pki::new();
    let server = Server::https(&identity(&pki), 443, |_, s| async move {
        tokio::time::sleep(Duration::from_millis(450)).await;
        reply(s, "404 Not Found", &[], b"").await;
    });
    let mut s = settings(&pki);
    s.max_in_flight = 1;
    let rig = Rig::new(s, MapHosts::new().with(HOST, server.ip()));
    let wkd = Arc::new(rig.wkd());
    let start = Instant::now();
    let mut all = tokio::task::JoinSet::new();
    for i in 0..5 {
        let wkd = Arc::clone(&wkd);
        all.spawn(async move {
            wkd.lookup(&addr_of(&format!("user{i}@example.org")), Method::OpenPgp)
                .await
        });
    }
    let (mut denied, mut timed_out) = (0, 0);
    while let Some(lookup) = all.join_next().await {
        match lookup.unwrap() {
            Lookup::NotFound => denied += 1,
            Lookup::Failed(FailReason::Timeout) => timed_out += 1,
            other => panic!("{other:?}"),
        }
    }
    assert!(
        denied >= 1 && timed_out >= 2,
        "{denied} denied, {timed_out} timed out"
    );
    assert!(
        start.elapsed() < TIMEOUT + Duration::from_millis(300),
        "{:?}",
        start.elapsed()
    );
    // The host answered each request in time; the client's own queue made
    // the lookups time out: the host is not to blame (not "down").
    let later = rig.lookup("later@example.org").await;
    assert!(matches!(later, Lookup::NotFound), "{later:?}");
}

// ---------------------------------------------------------------------------
// 10. Connection bounds, addresses, the direct method.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_finish_fail_within_connect_timeout() {
    let backlog = hostile::full_backlog(443).await;
    let silent = Server::tcp(443, |tcp| async move {
        tokio::time::sleep(Duration::from_secs(10)).await;
        drop(tcp);
    });
    let pki = Pki::new();
    for (what, ip) in [("full backlog", backlog.addr.ip()), ("no TLS", silent.ip())] {
        let rig = Rig::wkd_at(&pki, ip);
        let (lookup, took) = timed(rig.lookup(ALICE)).await;
        assert_failed(
            &lookup,
            &["no connection to", "within 400 ms (wkd.connect_timeout_ms)"],
        );
        assert!(
            took >= CONNECT && took < CONNECT + Duration::from_millis(300),
            "{what}: {took:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_address_is_tried_after_one_that_does_not_answer() {
    let pki = Pki::new();
    let silent = Server::tcp(443, |tcp| async move {
        tokio::time::sleep(Duration::from_secs(10)).await;
        drop(tcp);
    });
    let good = serving(&identity(&pki), "200 OK", &[], alice_key());
    let hosts = MapHosts::new().answer(HOST, HostAnswer::Addrs(vec![silent.ip(), good.ip()]));
    let rig = Rig::new(settings(&pki), hosts);
    let (lookup, took) = timed(rig.lookup(ALICE)).await;
    assert_eq!(assert_found(&lookup), (1, 0));
    assert!(took >= CONNECT, "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_missing_advanced_host_sends_the_lookup_to_the_direct_method() {
    let pki = Pki::new();
    let key = alice_key();
    let direct = Server::https(&identity(&pki), 443, move |req, s| {
        let key = key.clone();
        async move {
            if req.target.starts_with("/.well-known/openpgpkey/hu/") {
                reply(s, "200 OK", &[], &key).await;
            } else {
                reply(s, "404 Not Found", &[], b"").await;
            }
        }
    });
    // No advanced host: the direct method, then both answers cached.
    let rig = Rig::new(
        settings(&pki),
        MapHosts::new().with("example.org", direct.ip()),
    );
    assert_eq!(assert_found(&rig.lookup(ALICE).await), (1, 0));
    assert_eq!(rig.hosts.asked(), [HOST, "example.org"]);
    assert_eq!(assert_found(&rig.lookup(ALICE).await), (1, 0));
    assert_eq!((rig.client.fetches_sent(), rig.hosts.asked().len()), (2, 2));
    // An advanced host that fails, is bogus, denies or refuses decides.
    let refused = hostile::free_ip(443);
    let cases: Vec<(HostAnswer, &str)> = vec![
        (HostAnswer::Failed(FailReason::Timeout), "failed"),
        (HostAnswer::Bogus("forged".into()), "bogus"),
        (HostAnswer::Addrs(vec![direct.ip()]), "not_found"),
        (HostAnswer::Addrs(vec![IpAddr::V4(refused)]), "not_found"),
    ];
    for (answer, kind) in cases {
        let what = format!("{answer:?}");
        let hosts = MapHosts::new()
            .answer(HOST, answer)
            .with("example.org", direct.ip());
        let rig = Rig::new(settings(&pki), hosts);
        let lookup = rig.lookup(ALICE).await;
        assert_eq!(lookup.kind(), kind, "{what}: {lookup:?}");
        assert_eq!(
            rig.hosts.asked(),
            [HOST],
            "{what}: the direct method not asked"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyserver_that_does_not_exist_or_fails_is_never_no_key() {
    let pki = Pki::new();
    let id = pki.issue(&["keys.a.test", "keys.b.test"], VALID);
    let broken = serving(&id, "503 Busy", &[], Vec::new());
    let good = serving(&id, "200 OK", &[], alice_key());
    let empty = serving(&id, "404 Not Found", &[], Vec::new());
    let other = serving(&id, "200 OK", &[], binary(&cert("mallory@evil.example")));
    let ks = |a: &Server, b: &Server, bases: &[&str]| {
        let hosts = MapHosts::new()
            .with("keys.a.test", a.ip())
            .with("keys.b.test", b.ip());
        let rig = Rig::new(settings(&pki), hosts);
        KeyserverSource::new(rig.client, bases.iter().map(|b| (*b).to_owned()).collect())
    };
    let a = "https://keys.a.test";
    let b = "https://keys.b.test";
    let nowhere = "https://keys.nowhere.test";
    let alice = addr_of(ALICE);
    let look = |s: KeyserverSource| {
        let alice = alice.clone();
        async move { s.lookup(&alice, Method::OpenPgp).await }
    };
    assert_failed(
        &look(ks(&broken, &good, &[nowhere])).await,
        &["no such host keys.nowhere.test"],
    );
    assert_eq!(
        assert_found(&look(ks(&broken, &good, &[a, b])).await),
        (1, 0)
    );
    assert_failed(&look(ks(&empty, &broken, &[a, b])).await, &["HTTP 503"]);
    // Keys only for other addresses are no keys: beside a failure, the
    // lookup failed (the module's rule), whichever server answered first.
    assert_failed(&look(ks(&other, &broken, &[a, b])).await, &["HTTP 503"]);
    assert_failed(&look(ks(&broken, &other, &[a, b])).await, &["HTTP 503"]);
    assert!(matches!(
        look(ks(&empty, &empty, &[a, b])).await,
        Lookup::NotFound
    ));
}

/// A fetch that runs out of time while talking to a host blames it only
/// if that host had the time: a hostile server that answers with a
/// redirect to another domain's host just before its own time is up must
/// not make the milter think that healthy host is down (which would
/// fail every lookup for that domain for a while — suppressing the
/// opportunistic upgrade at will).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_redirect_cannot_make_another_domains_host_look_down() {
    let pki = Pki::new();
    let evil = Server::https(
        &pki.issue(&["openpgpkey.evil.example"], VALID),
        443,
        |_, s| async move {
            tokio::time::sleep(TIMEOUT - Duration::from_millis(150)).await;
            let to = [("Location", "https://openpgpkey.example.org/k")];
            reply(s, "302 Found", &to, b"").await;
        },
    );
    let victim = Server::https(&identity(&pki), 443, |_, s| async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        reply(s, "404 Not Found", &[], b"").await;
    });
    let hosts = MapHosts::new()
        .with("openpgpkey.evil.example", evil.ip())
        .with(HOST, victim.ip());
    let rig = Rig::new(settings(&pki), hosts);
    let lured = rig.lookup("mallory@evil.example").await;
    assert!(
        matches!(lured, Lookup::Failed(FailReason::Timeout)),
        "{lured:?}"
    );
    let lookup = rig.lookup(ALICE).await;
    assert!(matches!(lookup, Lookup::NotFound), "{lookup:?}");
    assert_eq!(
        victim.seen.requests().len(),
        2,
        "the victim was asked again"
    );
}
