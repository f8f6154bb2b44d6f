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
#[path = "env/milter.rs"]
mod milter;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Scratch, SmimeId, check_smime_output, expected_protected_entity, smime_decrypt};
use env::DnsEnv;
use indymilter::MacroStage;
use indymilter_test::{EomActions, Status, TestConnection};
use milter::{InProcessMilter, apply_actions};

async fn start(env: &DnsEnv) -> InProcessMilter {
    InProcessMilter::trust_ad(
        env.resolver(),
        "[[rule]]\nname = \"required\"\nrecipient = [\"smime@autoencrypt.test\"]\nmode = \"required\"\n",
        |config| {
            // The hostile headers here (40 fields of ~200 KB) are about parsing
            // cost, not about limits.max_header_bytes (tests/milter_memory.rs).
            config.limits.max_header_bytes = 64 << 20;
        },
    )
    .await
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
        apply_actions(&self.headers, &self.body, eom)
    }
}

/// One message to smime@autoencrypt.test on a fresh connection; returns
/// the message as the recipient gets it.
async fn send(m: &InProcessMilter, msg: &Msg) -> Vec<u8> {
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
        plain == expected_protected_entity(&msg.raw()),
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
