//! The milter driven like an MTA (`indymilter-test`), with keys from the
//! real DNSSEC test environment: RCPT decisions and replies (550, 451,
//! 452 split), encryption at end of message with the result decrypted by
//! openssl and gpg, and protocol edge cases: several messages on one
//! connection, abort mid-message, odd folding, a recipient refused and the
//! transaction continued, 8-bit bodies split across chunks.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod common;
#[path = "env/mod.rs"]
mod env;
#[path = "env/milter.rs"]
mod milter;

use std::net::SocketAddr;
use std::time::Duration;

use autoencrypt_milter::config::Config;
use common::{
    Gpg, Scratch, SmimeId, check_pgp_mime_output, check_smime_output, expected_inner_entity,
    expected_protected_entity, smime_decrypt,
};
use env::DnsEnv;
use indymilter::{MacroStage, ProtoOpts};
use indymilter_test::{EomActions, Status, TestConnection};
use milter::{InProcessMilter, apply_actions};

const POLICY: &str = r#"
[[rule]]
name = "partners must be encrypted"
recipient = ["none@autoencrypt.test", "bogus@autoencrypt.test"]
mode = "required"
on_missing_key = "reject"
on_lookup_error = "tempfail"

[[rule]]
name = "pgp first for pgp users"
recipient = ["pgp*@autoencrypt.test"]
methods = ["openpgp", "smime"]
"#;

async fn start(env: &DnsEnv, tweak: impl FnOnce(&mut Config)) -> InProcessMilter {
    InProcessMilter::trust_ad(env.resolver(), POLICY, |config| {
        config.limits.spool_threshold_bytes = 64 * 1024;
        tweak(config);
    })
    .await
}
/// Opens a connection from an MTA offering `offered` protocol options and
/// sends the connect stage.
async fn connect_offering(m: &InProcessMilter, offered: ProtoOpts) -> TestConnection {
    let mut c = TestConnection::configure()
        .available_opts(offered)
        .exact_leading_space(true)
        .read_timeout(Duration::from_secs(30))
        .open_tcp(m.addr)
        .await
        .unwrap();
    c.macros(MacroStage::Connect, [("{daemon_name}", "smtpd")])
        .await
        .unwrap();
    let quiet = c.negotiated_opts().contains(ProtoOpts::NOREPLY_CONNECT);
    assert_eq!(
        c.connect(
            "client.example",
            "127.0.0.1:4567".parse::<SocketAddr>().unwrap()
        )
        .await
        .unwrap(),
        if quiet {
            Status::Noreply
        } else {
            Status::Continue
        }
    );
    c
}

async fn open(m: &InProcessMilter) -> TestConnection {
    let c = connect_offering(m, ProtoOpts::all()).await;
    // The milter has no use for HELO and end-of-header and says so at
    // negotiation; an MTA then does not send them. DATA is kept (see
    // callbacks.rs: without it Postfix stalls 40 ms per message over TCP).
    let opts = c.negotiated_opts();
    assert!(
        opts.contains(ProtoOpts::NO_HELO | ProtoOpts::NO_EOH),
        "{opts:?}"
    );
    assert!(!opts.contains(ProtoOpts::NO_DATA), "{opts:?}");
    assert!(opts.contains(ProtoOpts::LEADING_SPACE), "{opts:?}");
    // No reply where nothing is ever refused, so the MTA need not wait;
    // RCPT and DATA keep theirs (RCPT carries the policy's verdict).
    assert!(
        opts.contains(
            ProtoOpts::NOREPLY_CONNECT
                | ProtoOpts::NOREPLY_MAIL
                | ProtoOpts::NOREPLY_HEADER
                | ProtoOpts::NOREPLY_BODY
        ),
        "{opts:?}"
    );
    assert!(
        !opts.intersects(ProtoOpts::NOREPLY_RCPT | ProtoOpts::NOREPLY_DATA),
        "{opts:?}"
    );
    c
}

/// A message as the MTA passes it: header fields (name, raw value with the
/// leading space), CRLF body.
struct Msg {
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Msg {
    fn simple(to: &str, body: &str) -> Msg {
        Msg {
            headers: vec![
                ("From", " sender@example.net".into()),
                ("To", format!(" {to}")),
                ("Subject", " milter test".into()),
                ("MIME-Version", " 1.0".into()),
                ("Content-Type", " text/plain; charset=utf-8".into()),
                ("Content-Transfer-Encoding", " 8bit".into()),
            ],
            body: body.as_bytes().to_vec(),
        }
    }

    /// The message as one byte string (what the recipient would get
    /// without the milter).
    fn raw(&self) -> Vec<u8> {
        let mut v = Vec::new();
        for (n, val) in &self.headers {
            v.extend_from_slice(n.as_bytes());
            v.push(b':');
            v.extend_from_slice(val.replace('\n', "\r\n").as_bytes());
            v.extend_from_slice(b"\r\n");
        }
        v.extend_from_slice(b"\r\n");
        v.extend_from_slice(&self.body);
        v
    }

    /// Applies the milter's actions as an MTA would.
    fn apply(&self, eom: &EomActions) -> Vec<u8> {
        apply_actions(&self.headers, &self.body, eom)
    }
}

/// MAIL, RCPTs (statuses returned), then DATA..EOM when any was accepted.
async fn transaction(
    c: &mut TestConnection,
    qid: &str,
    rcpts: &[&str],
    msg: &Msg,
    chunk: usize,
) -> (Vec<Status>, Option<(EomActions, Status)>) {
    // Stages the milter never refuses get no reply where the MTA agreed.
    let opts = c.negotiated_opts();
    let quiet = |flag: ProtoOpts| {
        if opts.contains(flag) {
            Status::Noreply
        } else {
            Status::Continue
        }
    };
    c.macros(MacroStage::Mail, [("i", qid)]).await.unwrap();
    assert_eq!(
        c.mail(["<sender@example.net>"]).await.unwrap(),
        quiet(ProtoOpts::NOREPLY_MAIL)
    );
    let mut statuses = Vec::new();
    for r in rcpts {
        statuses.push(c.rcpt([format!("<{r}>")]).await.unwrap());
    }
    if !statuses.contains(&Status::Continue) {
        return (statuses, None);
    }
    assert_eq!(c.data().await.unwrap(), Status::Continue);
    for (n, v) in &msg.headers {
        assert_eq!(
            c.header(*n, v.as_str()).await.unwrap(),
            quiet(ProtoOpts::NOREPLY_HEADER)
        );
    }
    for piece in msg.body.chunks(chunk) {
        assert_eq!(
            c.body(piece.to_vec()).await.unwrap(),
            quiet(ProtoOpts::NOREPLY_BODY)
        );
    }
    c.macros(MacroStage::Eom, [("i", qid)]).await.unwrap();
    (statuses, Some(c.eom().await.unwrap()))
}

fn reply_of(s: &Status) -> String {
    match s {
        Status::Reject { message: Some(m) } | Status::Tempfail { message: Some(m) } => {
            m.to_string_lossy().into_owned()
        }
        other => format!("{other:?}"),
    }
}

fn smime_id(env: &DnsEnv, user: &str) -> SmimeId {
    let u = env.user(user);
    SmimeId::from_files(u.cert.as_ref().unwrap(), u.key.as_ref().unwrap())
}

fn decrypt_smime(env: &DnsEnv, user: &str, input: &[u8], output: &[u8]) -> Vec<u8> {
    let der = check_smime_output(input, output, false);
    smime_decrypt(&Scratch::new(), &der, "DER", &smime_id(env, user)).unwrap()
}

fn decrypt_pgp(env: &DnsEnv, user: &str, input: &[u8], output: &[u8]) -> Vec<u8> {
    let armored = check_pgp_mime_output(input, output);
    let gpg = Gpg::new();
    gpg.import(&std::fs::read(env.user(user).pgp_secret.as_ref().unwrap()).unwrap());
    gpg.decrypt(&armored).unwrap()
}

/// An MTA that offers none of the "no reply" options (but protocol 6 and
/// its `LEADING_SPACE`, which the milter needs) is served, with a reply to
/// every stage — not refused, and never left waiting for a reply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mta_without_noreply_gets_every_reply() {
    let env = DnsEnv::start();
    let m = start(&env, |_| {}).await;
    let no_noreply = ProtoOpts::all()
        - (ProtoOpts::NOREPLY_CONNECT
            | ProtoOpts::NOREPLY_HELO
            | ProtoOpts::NOREPLY_MAIL
            | ProtoOpts::NOREPLY_RCPT
            | ProtoOpts::NOREPLY_DATA
            | ProtoOpts::NOREPLY_HEADER
            | ProtoOpts::NOREPLY_EOH
            | ProtoOpts::NOREPLY_BODY
            | ProtoOpts::NOREPLY_UNKNOWN);
    let mut c = connect_offering(&m, no_noreply).await;
    assert!(
        !c.negotiated_opts()
            .intersects(ProtoOpts::all() - no_noreply),
        "{:?}",
        c.negotiated_opts()
    );
    let msg = Msg::simple("both@autoencrypt.test", "old MTA\r\n");
    smime_round_trip(&env, &mut c, "Q9", "both", &msg, 4).await;
}

/// One transaction to `user`@autoencrypt.test whose result must be S/MIME
/// that decrypts to the message's inner entity.
async fn smime_round_trip(
    env: &DnsEnv,
    c: &mut TestConnection,
    qid: &str,
    user: &str,
    msg: &Msg,
    chunk: usize,
) {
    let to = format!("{user}@autoencrypt.test");
    let (st, eom) = transaction(c, qid, &[to.as_str()], msg, chunk).await;
    assert_eq!(st, [Status::Continue]);
    let (actions, status) = eom.unwrap();
    assert_eq!(status, Status::Continue);
    let out = msg.apply(&actions);
    assert_eq!(
        decrypt_smime(env, user, &msg.raw(), &out),
        expected_protected_entity(&msg.raw())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypts_per_recipient_method_and_decrypts() {
    let env = DnsEnv::start();
    let m = start(&env, |_| {}).await;
    let mut c = open(&m).await;

    // S/MIME preferred by the default rule.
    let msg = Msg::simple("both@autoencrypt.test", "Grüße\r\nline two\r\n");
    smime_round_trip(&env, &mut c, "Q1", "both", &msg, 7).await;

    // A second message on the same connection: OpenPGP by its rule.
    let msg = Msg::simple("pgp@autoencrypt.test", "second message\r\n");
    let (st, eom) = transaction(&mut c, "Q2", &["pgp@autoencrypt.test"], &msg, 4096).await;
    assert_eq!(st, [Status::Continue]);
    let (actions, _) = eom.unwrap();
    let out = msg.apply(&actions);
    assert_eq!(
        decrypt_pgp(&env, "pgp", &msg.raw(), &out),
        expected_protected_entity(&msg.raw())
    );

    // What Prometheus would see.
    let text = m.metrics.render();
    for line in [
        "autoencrypt_encrypted_total{method=\"smime\"} 1",
        "autoencrypt_encrypted_total{method=\"openpgp\"} 1",
        "autoencrypt_messages_total{direction=\"outbound\",outcome=\"encrypted\"} 2",
        "autoencrypt_connections_active 1",
    ] {
        assert!(text.contains(line), "{line} missing in\n{text}");
    }
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rcpt_replies_never_downgrade() {
    let env = DnsEnv::start();
    let m = start(&env, |_| {}).await;
    let mut c = open(&m).await;
    let msg = Msg::simple("x", "body\r\n");
    // required + authenticated denial: 550 5.7.1.
    // required + bogus: 451 4.7.1, never "no key".
    // S/MIME-only after an S/MIME recipient: accepted; OpenPGP-only: 452.
    // No key at all (opportunistic): plaintext, which cannot share: 452.
    let rcpts = [
        "none@autoencrypt.test",
        "bogus@autoencrypt.test",
        "smime@autoencrypt.test",
        "pgp@autoencrypt.test",
        "nobody-here@example.invalid",
        "both@autoencrypt.test",
    ];
    let (st, eom) = transaction(&mut c, "Q3", &rcpts, &msg, 4096).await;
    assert!(reply_of(&st[0]).starts_with("550 5.7.1"), "{:?}", st[0]);
    assert!(matches!(st[0], Status::Reject { .. }));
    assert!(reply_of(&st[1]).starts_with("451 4.7.1"), "{:?}", st[1]);
    assert_eq!(st[2], Status::Continue);
    assert!(reply_of(&st[3]).starts_with("452 4.5.3"), "{:?}", st[3]);
    // example.invalid: the DNS answer is a failure or a denial; either way
    // it cannot join an encrypted transaction.
    assert!(matches!(st[4], Status::Tempfail { .. }), "{:?}", st[4]);
    assert_eq!(st[5], Status::Continue, "both@ can share S/MIME");
    // The transaction continued after the refusals and is encrypted to the
    // accepted recipients: each one's key decrypts it.
    let (actions, status) = eom.unwrap();
    assert_eq!(status, Status::Continue);
    let out = msg.apply(&actions);
    let inner = expected_protected_entity(&msg.raw());
    assert_eq!(decrypt_smime(&env, "smime", &msg.raw(), &out), inner);
    assert_eq!(decrypt_smime(&env, "both", &msg.raw(), &out), inner);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_folding_8bit_chunks_and_already_encrypted() {
    let env = DnsEnv::start();
    let m = start(&env, |_| {}).await;
    let mut c = open(&m).await;

    // Aborted mid-body: nothing of it survives into the next message.
    c.macros(MacroStage::Mail, [("i", "Q4")]).await.unwrap();
    c.mail(["<a@example.net>"]).await.unwrap();
    assert_eq!(
        c.rcpt(["<both@autoencrypt.test>"]).await.unwrap(),
        Status::Continue
    );
    c.data().await.unwrap();
    c.header("Subject", " aborted").await.unwrap();
    c.body(b"half a body".to_vec()).await.unwrap();
    c.abort().await.unwrap();

    // Odd folding, a Latin-1 body, a UTF-8 character split across chunks.
    let mut body = b"caf\xe9 \xc3".to_vec();
    body.extend_from_slice(b"\xa9t\xc3\xa9\r\n");
    let msg = Msg {
        headers: vec![
            ("From", " a@example.net".into()),
            ("Subject", " folded\n\tover\n  three lines".into()),
            (
                "Content-Type",
                " text/plain;\n\tcharset=\"iso-8859-1\"".into(),
            ),
            ("X-Empty", "".into()),
        ],
        body,
    };
    let (st, eom) = transaction(&mut c, "Q5", &["smime@autoencrypt.test"], &msg, 5).await;
    assert_eq!(st, [Status::Continue]);
    let (actions, _) = eom.unwrap();
    let out = msg.apply(&actions);
    assert_eq!(
        decrypt_smime(&env, "smime", &msg.raw(), &out),
        expected_protected_entity(&msg.raw())
    );
    assert!(!String::from_utf8_lossy(&out).contains("aborted"));

    // Looks encrypted (a PGP/MIME header without an encrypted part): it is
    // not verified ciphertext, so it is encrypted (issue 9.1).
    let enc = Msg {
        headers: vec![
            ("From", " a@example.net".into()),
            (
                "Content-Type",
                " multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=b".into(),
            ),
        ],
        body: b"--b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n--b--\r\n"
            .to_vec(),
    };
    let (_, eom) = transaction(&mut c, "Q6", &["smime@autoencrypt.test"], &enc, 4096).await;
    let (actions, status) = eom.unwrap();
    assert_eq!(status, Status::Continue);
    let out = enc.apply(&actions);
    assert_eq!(
        decrypt_smime(&env, "smime", &enc.raw(), &out),
        expected_protected_entity(&enc.raw())
    );

    // Genuine gpg-made PGP/MIME (tests/fixtures/ciphertext): no actions at all.
    let fixture = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/ciphertext/genuine-pgp-mime.eml"
    ))
    .unwrap();
    let split = fixture.windows(2).position(|w| w == b"\n\n").unwrap();
    let ct = String::from_utf8_lossy(&fixture[..split]);
    let ct = ct.split("Content-Type:").nth(1).unwrap().to_owned();
    let genuine = Msg {
        headers: vec![("From", " a@example.net".into()), ("Content-Type", ct)],
        body: common::to_crlf(&fixture[split + 2..]),
    };
    let (_, eom) = transaction(&mut c, "Q6b", &["both@autoencrypt.test"], &genuine, 4096).await;
    let (actions, status) = eom.unwrap();
    assert_eq!(status, Status::Continue);
    assert!(actions.actions.is_empty(), "{actions:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_and_large_body_spooled() {
    let env = DnsEnv::start();
    let dry = start(&env, |c| c.dry_run = true).await;
    let mut c = open(&dry).await;
    let msg = Msg::simple("both@autoencrypt.test", "dry\r\n");
    let (st, eom) = transaction(&mut c, "Q7", &["both@autoencrypt.test"], &msg, 4096).await;
    assert_eq!(st, [Status::Continue]);
    assert!(eom.unwrap().0.actions.is_empty(), "dry run changes nothing");

    // A body far above the 64 KiB spool threshold, in 64 KiB chunks.
    let m = start(&env, |_| {}).await;
    let mut c = open(&m).await;
    let line = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.,-\r\n";
    let big = Msg::simple("both@autoencrypt.test", &line.repeat(40_000));
    let (_, eom) = transaction(&mut c, "Q8", &["both@autoencrypt.test"], &big, 65_535).await;
    let (actions, status) = eom.unwrap();
    assert_eq!(status, Status::Continue);
    let out = big.apply(&actions);
    assert_eq!(
        decrypt_smime(&env, "both", &big.raw(), &out),
        expected_protected_entity(&big.raw())
    );
}

/// An MTA that cannot replace bodies or change headers is refused at
/// negotiation: the milter could never apply its decision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_an_mta_that_cannot_replace_bodies() {
    let env = DnsEnv::start();
    let m = start(&env, |_| {}).await;
    let weak = TestConnection::configure()
        .available_actions(indymilter::Actions::ADD_HEADER | indymilter::Actions::CHANGE_HEADER)
        .open_tcp(m.addr)
        .await;
    assert!(weak.is_err(), "negotiation must fail without REPLACE_BODY");
    let full = TestConnection::configure().open_tcp(m.addr).await.unwrap();
    assert!(full.negotiated_actions().contains(
        indymilter::Actions::ADD_HEADER
            | indymilter::Actions::CHANGE_HEADER
            | indymilter::Actions::REPLACE_BODY
    ));
    full.close().await.unwrap();
}

/// Both directions in one instance: recipients in `local_domains` are
/// inbound (encryption at rest, here OpenPGP first by an inbound rule),
/// others outbound (the built-in rule, S/MIME first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_and_outbound_in_one_instance() {
    let env = DnsEnv::start();
    let policy = tempfile::tempdir().unwrap();
    std::fs::write(
        policy.path().join("10-at-rest.toml"),
        "[[rule]]\nname = \"at rest\"\ndirection = \"inbound\"\nmethods = [\"openpgp\", \"smime\"]\n",
    )
    .unwrap();
    let dir = policy.path().to_path_buf();
    let m = start(&env, move |c| {
        c.policy_dir = dir;
        c.local_domains = vec!["autoencrypt.test".into()];
    })
    .await;
    let mut c = open(&m).await;
    // Inbound: both@ has both keys; the inbound rule prefers OpenPGP.
    let msg = Msg::simple("both@autoencrypt.test", "stored encrypted\r\n");
    let (_, eom) = transaction(&mut c, "Q9", &["both@autoencrypt.test"], &msg, 4096).await;
    let out = msg.apply(&eom.unwrap().0);
    // At rest the header is not protected by default: the Subject stays.
    assert_eq!(
        decrypt_pgp(&env, "both", &msg.raw(), &out),
        expected_inner_entity(&msg.raw())
    );
    // Outbound (a domain not in local_domains) on the same connection:
    // an unsigned zone, so the built-in rule passes it in the clear.
    let msg = Msg::simple("y@unsigned.autoencrypt.test", "leaves in the clear\r\n");
    let (st, eom) = transaction(&mut c, "Q10", &["y@unsigned.autoencrypt.test"], &msg, 4096).await;
    assert_eq!(st, [Status::Continue]);
    assert!(eom.unwrap().0.actions.is_empty());
    let text = m.metrics.render();
    assert!(
        text.contains("autoencrypt_messages_total{direction=\"inbound\",outcome=\"encrypted\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("autoencrypt_messages_total{direction=\"outbound\",outcome=\"passed\"} 1"),
        "{text}"
    );
}

/// One milter-protocol frame: length (kind included), kind, payload.
fn raw_frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = u32::try_from(payload.len() + 1)
        .unwrap()
        .to_be_bytes()
        .to_vec();
    v.push(kind);
    v.extend_from_slice(payload);
    v
}

/// Reads one reply frame: (kind, payload).
async fn raw_reply(s: &mut tokio::net::TcpStream) -> (u8, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let len = tokio::time::timeout(Duration::from_secs(10), s.read_u32())
        .await
        .expect("a reply within 10 s")
        .unwrap();
    let kind = s.read_u8().await.unwrap();
    let mut payload = vec![0; usize::try_from(len).unwrap() - 1];
    s.read_exact(&mut payload).await.unwrap();
    (kind, payload)
}

/// An MTA may reuse a milter connection for its next SMTP connection
/// (`SMFIC_QUIT_NC`, which indymilter-test cannot send, so this speaks
/// the protocol itself). The next connect gets a fresh session: its
/// recipient is accepted and its message encrypted like the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_reused_after_quit_nc_serves_the_next_smtp_connection() {
    use tokio::io::AsyncWriteExt;
    let env = DnsEnv::start();
    let m = start(&env, |_| {}).await;
    let mut s = tokio::net::TcpStream::connect(m.addr).await.unwrap();
    // Protocol 6, every action, every protocol option offered.
    let mut neg = 6u32.to_be_bytes().to_vec();
    neg.extend_from_slice(&0x1ffu32.to_be_bytes());
    neg.extend_from_slice(&0x1f_ffffu32.to_be_bytes());
    s.write_all(&raw_frame(b'O', &neg)).await.unwrap();
    let (kind, reply) = raw_reply(&mut s).await;
    assert_eq!(kind, b'O');
    let opts = u32::from_be_bytes(reply[8..12].try_into().unwrap());
    let noreply = |flag: ProtoOpts| opts & flag.bits() != 0;
    assert!(noreply(ProtoOpts::NOREPLY_CONNECT) && noreply(ProtoOpts::NOREPLY_MAIL));

    for round in 1..=2 {
        let mut connect = b"client.example\0".to_vec();
        connect.push(b'4');
        connect.extend_from_slice(&4567u16.to_be_bytes());
        connect.extend_from_slice(b"127.0.0.1\0");
        let mut out = raw_frame(b'C', &connect);
        out.extend(raw_frame(b'M', b"<a@example.net>\0"));
        out.extend(raw_frame(b'R', b"<both@autoencrypt.test>\0"));
        s.write_all(&out).await.unwrap();
        let (kind, _) = raw_reply(&mut s).await;
        assert_eq!(kind, b'c', "round {round}: RCPT accepted");
        s.write_all(&raw_frame(b'T', b"")).await.unwrap();
        assert_eq!(raw_reply(&mut s).await.0, b'c', "round {round}: DATA");
        let mut out = raw_frame(b'L', b"Subject\0 reused\0");
        out.extend(raw_frame(b'B', b"hello\r\n"));
        out.extend(raw_frame(b'E', b""));
        s.write_all(&out).await.unwrap();
        let mut replaced = false;
        loop {
            match raw_reply(&mut s).await {
                (b'b', _) => replaced = true,
                (b'c', _) => break,
                (b'h' | b'm' | b'i', _) => {}
                (other, p) => panic!(
                    "round {round}: end of message {:?} {}",
                    other as char,
                    String::from_utf8_lossy(&p)
                ),
            }
        }
        assert!(replaced, "round {round}: the body was encrypted");
        // Done with this SMTP connection; keep the milter connection.
        s.write_all(&raw_frame(b'K', b"")).await.unwrap();
    }
}

/// A rule's `min_trust` is applied at RCPT: with `min_trust = "operator"`
/// the certificate in the key directory is used, and a recipient whose key
/// only DNSSEC vouches for is refused without DNS being asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_trust_decides_at_rcpt_which_sources_count() {
    const TRUST_POLICY: &str = r#"
[[rule]]
name = "operator keys only"
recipient = ["smime@autoencrypt.test", "both@autoencrypt.test"]
methods = ["smime"]
mode = "required"
on_missing_key = "reject"
min_trust = "operator"
"#;
    let env = DnsEnv::start();
    let keys = tempfile::tempdir().unwrap();
    std::fs::copy(
        smime_id(&env, "smime").cert_path,
        keys.path().join("smime@autoencrypt.test.pem"),
    )
    .unwrap();
    let dir = keys.path().to_path_buf();
    let m = InProcessMilter::trust_ad(env.resolver(), TRUST_POLICY, move |config| {
        config.keys.directory = Some(dir);
    })
    .await;
    let mut c = open(&m).await;
    let msg = Msg::simple("x", "body\r\n");
    // both@ has an S/MIME key in DNS, but DNSSEC is below the rule's bar.
    let rcpts = ["smime@autoencrypt.test", "both@autoencrypt.test"];
    let (st, eom) = transaction(&mut c, "Q7", &rcpts, &msg, 4096).await;
    assert_eq!(st[0], Status::Continue);
    assert!(reply_of(&st[1]).starts_with("550 5.7.1"), "{:?}", st[1]);
    let (actions, status) = eom.unwrap();
    assert_eq!(status, Status::Continue);
    let out = msg.apply(&actions);
    assert_eq!(
        decrypt_smime(&env, "smime", &msg.raw(), &out),
        expected_protected_entity(&msg.raw())
    );
    // DNS was never asked; the directory was, for both.
    let text = m.metrics.render();
    let count = |prefix: &str| -> u64 {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    assert_eq!(
        count("autoencrypt_key_lookups_total{source=\"dane\",record=\"smimea\""),
        0,
        "{text}"
    );
    assert_eq!(
        count("autoencrypt_key_lookups_total{source=\"directory\",record=\"smimea\""),
        2,
        "{text}"
    );
}
