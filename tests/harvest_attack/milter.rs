//! The same attacks through the milter protocol (the milter in-process,
//! driven like Postfix with `indymilter-test`): a PostgreSQL that accepts
//! and never answers while mail flows — RCPT is answered in time with the
//! rule's outcome, end of message never waits for harvesting, harvesting
//! pauses; and a signed message above `harvest.max_message_bytes`, or
//! without the receiver's pass, teaches nothing and is counted.

use std::net::SocketAddr;
use std::time::Instant;

use autoencrypt_milter::Method;
use autoencrypt_milter::config::Config;
use indymilter::{MacroStage, ProtoOpts};
use indymilter_test::{Status, TestConnection};

use super::certs::{identity, signed_message};
use super::milter_env::InProcessMilter;
use super::*;

const POLICY: &str = r#"
[[rule]]
name = "inbound: as received"
direction = "inbound"
methods = []

[[rule]]
name = "partners: the keys they sent us"
direction = "outbound"
recipient = ["*@partner.example"]
methods = ["smime", "openpgp"]
sources = ["learned"]
on_lookup_error = "tempfail"
"#;

async fn start(store_url: &str, tweak: impl FnOnce(&mut Config)) -> InProcessMilter {
    let resolver: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let url = store_url.to_owned();
    InProcessMilter::trust_ad(resolver, POLICY, move |c| {
        c.authserv_id = ID.to_owned();
        c.local_domains = vec!["example.org".to_owned()];
        c.wkd.enabled = false;
        c.store.url = url;
        c.store.connect_timeout_ms = 500;
        c.store.timeout_ms = 500;
        c.store.refresh_secs = 1;
        tweak(c);
    })
    .await
}

async fn open(m: &InProcessMilter) -> TestConnection {
    let mut c = TestConnection::configure()
        .available_opts(ProtoOpts::all())
        .exact_leading_space(true)
        .read_timeout(Duration::from_secs(30))
        .open_tcp(m.addr)
        .await
        .unwrap();
    c.macros(MacroStage::Connect, [("{daemon_name}", "smtpd")])
        .await
        .unwrap();
    c.connect(
        "client.example",
        "192.0.2.7:4567".parse::<SocketAddr>().unwrap(),
    )
    .await
    .unwrap();
    c
}

/// MAIL and RCPT `rcpt`: its status and how long the milter took.
async fn rcpt(c: &mut TestConnection, qid: &str, sender: &str, rcpt: &str) -> (Status, Duration) {
    c.macros(MacroStage::Mail, [("i", qid)]).await.unwrap();
    c.mail([format!("<{sender}>")]).await.unwrap();
    let started = Instant::now();
    let s = c.rcpt([format!("<{rcpt}>")]).await.unwrap();
    (s, started.elapsed())
}

/// A whole inbound transaction of `raw` to bob@example.org: the EOM
/// status and how long end of message took.
async fn deliver(c: &mut TestConnection, qid: &str, raw: &str) -> (Status, Duration) {
    let (s, _) = rcpt(c, qid, "alice@partner.example", "bob@example.org").await;
    assert_eq!(s, Status::Continue);
    assert_eq!(c.data().await.unwrap(), Status::Continue);
    let (headers, body) = parse(raw);
    for h in &headers {
        c.header(h.name.as_str(), String::from_utf8(h.value.clone()).unwrap())
            .await
            .unwrap();
    }
    for piece in body.chunks(65_536) {
        c.body(piece.to_vec()).await.unwrap();
    }
    c.macros(MacroStage::Eom, [("i", qid)]).await.unwrap();
    let started = Instant::now();
    let (_, status) = c.eom().await.unwrap();
    (status, started.elapsed())
}

/// `series` in the milter's metrics (0 when absent).
fn metric(m: &InProcessMilter, series: &str) -> f64 {
    m.metrics
        .render()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series)
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .unwrap_or(0.0)
}

fn harvested(m: &InProcessMilter, result: &str) -> f64 {
    metric(
        m,
        &format!("autoencrypt_harvest_messages_total{{result=\"{result}\"}}"),
    )
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "{what} did not happen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A message signed by Alice of partner.example, with the receiver's pass
/// for that domain (`signed_message` writes one for example.org).
fn partner_signed(alice: &super::certs::Id) -> String {
    signed_message("alice@partner.example", alice, &[])
        .replace("header.d=example.org", "header.d=partner.example")
}

/// A loopback port that accepts connections and never says a word (a
/// PostgreSQL that hangs); returns the port.
fn mute_server() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming().flatten() {
            held.push(s);
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mute_postgres_gets_rcpt_answered_in_time_and_eom_never_waits() {
    let port = mute_server();
    // Harvesting alone: verification (below) looks the signer's key up
    // at end of message, which asks the store for pins.
    let m = start(
        &format!("postgres://aem@127.0.0.1:{port}/keys?sslmode=disable"),
        |c| c.verify.enabled = false,
    )
    .await;
    let mut c = open(&m).await;
    for (i, who) in ["carol", "dave", "erin"].iter().enumerate() {
        let (s, took) = rcpt(
            &mut c,
            &format!("Q{i}"),
            "bob@example.org",
            &format!("{who}@partner.example"),
        )
        .await;
        assert!(
            matches!(s, Status::Tempfail { .. }),
            "{who}: on_lookup_error = tempfail: {s:?}"
        );
        assert!(took < Duration::from_secs(3), "{who}: RCPT took {took:?}");
        c.abort().await.unwrap();
    }
    // Inbound signed mail meanwhile: delivered at once, harvesting pauses.
    let alice = identity(&["alice@partner.example"]);
    let (s, took) = deliver(&mut c, "Q8", &partner_signed(&alice)).await;
    assert_eq!(s, Status::Continue);
    assert!(took < Duration::from_millis(500), "EOM waited {took:?}");
    wait_for("store_failed counted", || {
        harvested(&m, "store_failed") >= 1.0
    })
    .await;
    assert_eq!(metric(&m, "autoencrypt_harvest_paused"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_or_unauthenticated_signed_mail_teaches_nothing_and_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("keys.sqlite").display());
    let m = start(&url, |c| c.harvest.max_message_bytes = 4096).await;
    let store = Store::open(&sqlite_settings(dir.path())).unwrap();
    let alice = identity(&["alice@partner.example"]);
    let good = partner_signed(&alice);
    let mut c = open(&m).await;
    // Over the limit (an epilogue after the signed parts).
    let big = format!("{good}{}\n", "padding ".repeat(1_000));
    let (s, _) = deliver(&mut c, "Q1", &big).await;
    assert_eq!(s, Status::Continue);
    wait_for("too_large counted", || harvested(&m, "too_large") >= 1.0).await;
    // The receiver's pass missing (or for another domain).
    let (s, _) = deliver(
        &mut c,
        "Q2",
        &signed_message("alice@partner.example", &alice, &[]),
    )
    .await;
    assert_eq!(s, Status::Continue);
    wait_for("not_authenticated counted", || {
        harvested(&m, "not_authenticated") >= 1.0
    })
    .await;
    // Give the worker time, then: nothing learned.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        store
            .learned("alice@partner.example", Method::Smime)
            .await
            .unwrap(),
        None
    );
    // The same message within the limit and authenticated: learned.
    let (s, _) = deliver(&mut c, "Q3", &good).await;
    assert_eq!(s, Status::Continue);
    wait_for("learned counted", || harvested(&m, "learned") >= 1.0).await;
    let k = store
        .learned("alice@partner.example", Method::Smime)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(k.key, alice.der());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_process_is_not_the_mta_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("keys.sqlite").display());
    let m = start(&url, |_| {}).await;
    let store = Store::open(&sqlite_settings(dir.path())).unwrap();
    // Not Postfix: a local user's script on the MX connects to the milter
    // (loopback TCP, as configured by default) and sends a message for
    // ceo@bank.example with the pass written by itself.
    let mallory = pgp("CEO <ceo@bank.example>");
    let raw = format!(
        "Authentication-Results: mx.example.org; dkim=pass header.d=bank.example\n\
         DKIM-Signature: v=1; d=bank.example; s=s; h=from:autocrypt; bh=x; b=y\n\
         From: <ceo@bank.example>\nDate: Tue, 06 Jan 2026 10:00:00 +0100\n{}\nHi.\n",
        autocrypt_field("ceo@bank.example", &mallory.to_vec().unwrap())
    );
    let mut c = open(&m).await;
    let (s, _) = deliver(&mut c, "Q1", &raw).await;
    assert_eq!(s, Status::Continue);
    wait_for("learned counted", || harvested(&m, "learned") >= 1.0).await;
    let planted = store
        .learned("ceo@bank.example", Method::OpenPgp)
        .await
        .unwrap();
    assert!(planted.is_some(), "the milter trusts whoever connects");
    // So a configuration that harvests on a TCP socket (the default one)
    // does not load unless the operator says every client is the MTA.
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("c.toml");
    std::fs::write(&file, format!("authserv_id = {ID:?}\n")).unwrap();
    let e = Config::load(&file, autoencrypt_milter::config::FileRequirement::Required)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("authserv_id") && e.contains("harvest.allow_inet_socket"),
        "{e}"
    );
    std::fs::write(
        &file,
        format!("authserv_id = {ID:?}\n[harvest]\nallow_inet_socket = true\n"),
    )
    .unwrap();
    Config::load(&file, autoencrypt_milter::config::FileRequirement::Required).unwrap();
    std::fs::write(
        &file,
        format!("authserv_id = {ID:?}\nsocket = \"unix:/run/aem-test/m.sock\"\n"),
    )
    .unwrap();
    Config::load(&file, autoencrypt_milter::config::FileRequirement::Required).unwrap();
}

/// A flood of signed mail costs a bounded share of the CPU: a sender whose
/// key was just confirmed is not examined again (`recent`), and past
/// `harvest.max_per_second` a message is not examined (`rate_limited`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_senders_are_not_examined_again_and_examination_is_rate_limited() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("keys.sqlite").display());
    let m = start(&url, |_| {}).await;
    let alice = identity(&["alice@partner.example"]);
    let good = partner_signed(&alice);
    let mut c = open(&m).await;
    let (s, _) = deliver(&mut c, "R1", &good).await;
    assert_eq!(s, Status::Continue);
    wait_for("learned counted", || harvested(&m, "learned") >= 1.0).await;
    for qid in ["R2", "R3"] {
        let (s, _) = deliver(&mut c, qid, &good).await;
        assert_eq!(s, Status::Continue);
    }
    wait_for("recent counted", || harvested(&m, "recent") >= 2.0).await;
    assert_eq!(harvested(&m, "known"), 0.0);

    // Every message examined (recheck_secs = 0), one a second at most.
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("keys.sqlite").display());
    let m = start(&url, |c| {
        c.harvest.recheck_secs = 0;
        c.harvest.max_per_second = 1;
    })
    .await;
    let mut c = open(&m).await;
    for i in 0..4 {
        let (s, _) = deliver(&mut c, &format!("S{i}"), &good).await;
        assert_eq!(s, Status::Continue);
    }
    wait_for("rate_limited counted", || {
        harvested(&m, "rate_limited") >= 2.0
    })
    .await;
    assert_eq!(harvested(&m, "learned"), 1.0);
    assert!(harvested(&m, "learned") + harvested(&m, "known") <= 2.0);
    assert_eq!(harvested(&m, "recent"), 0.0);
}

/// With verification on, a mute store costs a signed inbound message's
/// end of message at most the key lookup's bound (the store's timeout for
/// the pins), like a RCPT; the message is delivered, its result
/// `temperror` (a failure is never "no key").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mute_postgres_bounds_verification_and_gives_temperror() {
    let port = mute_server();
    let m = start(
        &format!("postgres://aem@127.0.0.1:{port}/keys?sslmode=disable"),
        |_| {},
    )
    .await;
    let mut c = open(&m).await;
    let alice = identity(&["alice@partner.example"]);
    let (s, took) = deliver(&mut c, "Q9", &partner_signed(&alice)).await;
    assert_eq!(s, Status::Continue);
    assert!(took < Duration::from_secs(3), "EOM waited {took:?}");
    assert_eq!(
        metric(
            &m,
            "autoencrypt_verified_total{method=\"smime\",result=\"temperror\"}"
        ),
        1.0
    );
}
