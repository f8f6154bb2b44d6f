//! Issue 9 item 3 on the milter socket (what Postfix itself would refuse
//! before the milter sees it): an unparseable MAIL FROM is not the null
//! sender, a domain-less recipient is accepted and goes through the
//! policy, a domain without a canonical form is refused for good.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

#[path = "env/mod.rs"]
mod env;
#[path = "env/milter.rs"]
mod milter;

use std::net::SocketAddr;
use std::time::Duration;

use env::DnsEnv;
use indymilter::MacroStage;
use indymilter_test::{Status, TestConnection};
use milter::InProcessMilter;

/// Bounces are exempt; everything else must be encrypted.
const POLICY: &str = r#"
[[rule]]
name = "bounces exempt"
sender = ["<>"]
methods = []

[[rule]]
name = "postmaster exempt"
recipient = ["postmaster"]
methods = []

[[rule]]
name = "everything required"
mode = "required"
"#;

async fn start(env: &DnsEnv) -> InProcessMilter {
    InProcessMilter::trust_ad(env.resolver(), POLICY, |_| {}).await
}

/// One transaction: the RCPT status for `rcpt` after `MAIL FROM:from`.
async fn rcpt_status(addr: SocketAddr, from: &str, rcpt: &str) -> Status {
    let mut c = TestConnection::configure()
        .read_timeout(Duration::from_secs(30))
        .open_tcp(addr)
        .await
        .unwrap();
    c.connect(
        "client.example",
        "127.0.0.1:4567".parse::<SocketAddr>().unwrap(),
    )
    .await
    .unwrap();
    c.macros(MacroStage::Mail, [("i", "ADDR1")]).await.unwrap();
    c.mail([from]).await.unwrap();
    let st = c.rcpt([rcpt]).await.unwrap();
    c.abort().await.unwrap();
    c.close().await.unwrap();
    st
}

fn reply(s: &Status) -> String {
    match s {
        Status::Reject { message: Some(m) } | Status::Tempfail { message: Some(m) } => {
            m.to_string_lossy().into_owned()
        }
        other => format!("{other:?}"),
    }
}

#[tokio::test]
async fn unparseable_sender_is_not_the_null_sender() {
    let env = DnsEnv::start();
    let m = start(&env).await;
    let addr = m.addr;
    let rcpt = "<none@autoencrypt.test>";
    // The null sender is exempt ...
    assert_eq!(rcpt_status(addr, "<>", rcpt).await, Status::Continue);
    // ... a MAIL FROM that does not parse is not: it matches no sender
    // glob, so the required rule applies (none@ has no key: 550 5.7.1).
    for from in ["<\"broken@example.net>", "<a@b@c>", "<x@xn--zz.example>"] {
        let st = rcpt_status(addr, from, rcpt).await;
        assert!(reply(&st).starts_with("550 5.7.1"), "{from}: {st:?}");
    }
}

#[tokio::test]
async fn domain_less_and_unparseable_recipients() {
    let env = DnsEnv::start();
    let m = start(&env).await;
    let addr = m.addr;
    let from = "<sender@example.net>";
    for r in ["<postmaster>", "<Postmaster>", "<@a,@b:postmaster>"] {
        assert_eq!(rcpt_status(addr, from, r).await, Status::Continue, "{r}");
    }
    // `alice` has no domain, so no key can be found: the required rule
    // refuses (a defined outcome, not the 451 loop of before).
    let st = rcpt_status(addr, from, "<alice>").await;
    assert!(reply(&st).starts_with("550 5.7.1"), "{st:?}");
    for r in [
        "<x@xn--zz.test>",
        "<x@a..test>",
        "<x@[300.1.1.1]>",
        "<\"x@y.test>",
    ] {
        let st = rcpt_status(addr, from, r).await;
        assert!(
            reply(&st).starts_with("550 5.1.3 Bad recipient address syntax"),
            "{r}: {st:?}"
        );
    }
}
