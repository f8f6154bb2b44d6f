//! Hostile header fields through the milter socket (issue 9 item 4): a
//! `Content-Type` of 100,000 parameters (889 KB) and 40
//! `Content-Disposition` fields of 11,800 parameters each get their normal
//! outcome: encrypted, and the result decrypts (openssl) to exactly the
//! message's inner entity. Parsing them is linear (see benches/parse.rs);
//! what the parser keeps of them is tested in src/message/mime.rs.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod common;
#[path = "env/mod.rs"]
mod env;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use autoencrypt_milter::config::{Config, DnsMode};
use autoencrypt_milter::metrics::Metrics;
use autoencrypt_milter::milter::{Engine, Shared, TcpMilterListener, run_on};
use common::{Scratch, SmimeId, check_smime_output, expected_inner_entity, smime_decrypt};
use env::DnsEnv;
use indymilter::MacroStage;
use indymilter_test::{EomAction, EomActions, Status, TestConnection};
use tokio::sync::oneshot;

struct Milter {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    _policy: tempfile::TempDir,
}

impl Drop for Milter {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn start(env: &DnsEnv) -> Milter {
    let policy = tempfile::tempdir().unwrap();
    std::fs::write(
        policy.path().join("10-test.toml"),
        "[[rule]]\nname = \"required\"\nrecipient = [\"smime@autoencrypt.test\"]\nmode = \"required\"\n",
    )
    .unwrap();
    let mut config = Config {
        policy_dir: policy.path().to_path_buf(),
        ..Config::default()
    };
    config.dns.mode = DnsMode::TrustAd;
    config.dns.resolvers = vec![env.resolver()];
    config.dns.timeout_ms = 2000;
    // The hostile headers here (40 fields of ~200 KB) are about parsing
    // cost, not about limits.max_header_bytes (tests/milter_memory.rs).
    config.limits.max_header_bytes = 64 << 20;
    let engine = Engine::from_config(config, Metrics::new()).expect("engine");
    let shared = Arc::new(Shared::new(engine, "/nonexistent".into()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = run_on(TcpMilterListener(listener), shared, async move {
            let _ = rx.await;
        })
        .await;
    });
    Milter {
        addr,
        stop: Some(tx),
        _policy: policy,
    }
}

/// Header fields (name, value with its leading space) and a CRLF body.
struct Msg {
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Msg {
    fn raw(&self) -> Vec<u8> {
        let mut v = Vec::new();
        for (n, val) in &self.headers {
            v.extend_from_slice(n.as_bytes());
            v.push(b':');
            v.extend_from_slice(val.as_bytes());
            v.extend_from_slice(b"\r\n");
        }
        v.extend_from_slice(b"\r\n");
        v.extend_from_slice(&self.body);
        v
    }

    /// Applies the milter's actions as an MTA would.
    fn apply(&self, eom: &EomActions) -> Vec<u8> {
        let mut headers: Vec<(String, String)> = self
            .headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), v.clone()))
            .collect();
        let mut body: Option<Vec<u8>> = None;
        let nth = |h: &Vec<(String, String)>, name: &str, index: i32| {
            h.iter()
                .enumerate()
                .filter(|(_, (n, _))| n.eq_ignore_ascii_case(name))
                .nth(usize::try_from(index - 1).unwrap())
                .map(|(i, _)| i)
        };
        for a in &eom.actions {
            match a {
                EomAction::AddHeader { name, value } => headers.push((
                    name.to_str().unwrap().to_owned(),
                    value.to_str().unwrap().to_owned(),
                )),
                EomAction::ChangeHeader { name, index, value } => {
                    let i = nth(&headers, name.to_str().unwrap(), *index)
                        .expect("changed header exists");
                    headers[i].1 = value.to_str().unwrap().to_owned();
                }
                EomAction::DeleteHeader { name, index } => {
                    let i = nth(&headers, name.to_str().unwrap(), *index)
                        .expect("deleted header exists");
                    headers.remove(i);
                }
                EomAction::ReplaceBody { chunk } => {
                    body.get_or_insert_with(Vec::new).extend_from_slice(chunk)
                }
                other => panic!("unexpected action {other:?}"),
            }
        }
        let mut v = Vec::new();
        for (n, val) in &headers {
            v.extend_from_slice(n.as_bytes());
            v.push(b':');
            v.extend_from_slice(val.replace("\r\n", "\n").replace('\n', "\r\n").as_bytes());
            v.extend_from_slice(b"\r\n");
        }
        v.extend_from_slice(b"\r\n");
        v.extend_from_slice(body.as_deref().unwrap_or(&self.body));
        v
    }
}

/// One message to smime@autoencrypt.test on a fresh connection; returns
/// the message as the recipient gets it.
async fn send(m: &Milter, msg: &Msg) -> Vec<u8> {
    let mut c = TestConnection::configure()
        .exact_leading_space(true)
        .read_timeout(Duration::from_secs(120))
        .open_tcp(m.addr)
        .await
        .unwrap();
    c.connect(
        "client.example",
        "127.0.0.1:4567".parse::<SocketAddr>().unwrap(),
    )
    .await
    .unwrap();
    c.macros(MacroStage::Mail, [("i", "QBIG")]).await.unwrap();
    c.mail(["<sender@example.net>"]).await.unwrap();
    assert_eq!(
        c.rcpt(["<smime@autoencrypt.test>"]).await.unwrap(),
        Status::Continue
    );
    assert_eq!(c.data().await.unwrap(), Status::Continue);
    for (n, v) in &msg.headers {
        c.header(*n, v.as_str()).await.unwrap();
    }
    for piece in msg.body.chunks(65_535) {
        c.body(piece.to_vec()).await.unwrap();
    }
    c.macros(MacroStage::Eom, [("i", "QBIG")]).await.unwrap();
    let (actions, status) = c.eom().await.unwrap();
    assert_eq!(status, Status::Continue);
    c.close().await.unwrap();
    msg.apply(&actions)
}

fn decrypts_to_inner_entity(env: &DnsEnv, msg: &Msg, out: &[u8]) {
    let u = env.user("smime");
    let id = SmimeId::from_files(u.cert.as_ref().unwrap(), u.key.as_ref().unwrap());
    let der = check_smime_output(&msg.raw(), out, false);
    let plain = smime_decrypt(&Scratch::new(), &der, "DER", &id).unwrap();
    assert!(
        plain == expected_inner_entity(&msg.raw()),
        "decrypted entity differs from the inner entity sent"
    );
}

fn base_headers() -> Vec<(&'static str, String)> {
    vec![
        ("From", " sender@example.net".into()),
        ("To", " smime@autoencrypt.test".into()),
        ("Subject", " many parameters".into()),
        ("MIME-Version", " 1.0".into()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_content_type_of_100000_parameters_is_encrypted() {
    let env = DnsEnv::start();
    let m = start(&env).await;
    let mut ct = String::from(" text/plain");
    for i in 0..100_000 {
        ct.push_str(&format!(";p{i}=v"));
    }
    assert!(ct.len() > 888_000, "{}", ct.len());
    let mut headers = base_headers();
    headers.push(("Content-Type", ct));
    let msg = Msg {
        headers,
        body: b"secret text under a huge Content-Type\r\n".to_vec(),
    };
    let out = send(&m, &msg).await;
    assert!(!String::from_utf8_lossy(&out).contains("secret text"));
    decrypts_to_inner_entity(&env, &msg, &out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_dispositions_of_11800_parameters_are_encrypted() {
    let env = DnsEnv::start();
    let m = start(&env).await;
    let mut headers = base_headers();
    headers.push(("Content-Type", " text/plain; charset=us-ascii".into()));
    // Sections of a `.p7m` file name, far beyond what is kept: the message
    // must not be mistaken for an encrypted file.
    let mut d = String::from(" attachment");
    for i in 0..11_800 {
        d.push_str(&format!("; filename*{i}=\"x\""));
    }
    d.push_str("; filename*11800=\".p7m\"");
    for _ in 0..40 {
        headers.push(("Content-Disposition", d.clone()));
    }
    let msg = Msg {
        headers,
        body: b"secret text under forty dispositions\r\n".to_vec(),
    };
    let out = send(&m, &msg).await;
    assert!(!String::from_utf8_lossy(&out).contains("secret text"));
    decrypts_to_inner_entity(&env, &msg, &out);
}
