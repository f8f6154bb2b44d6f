//! What the signing and verification tests through the milter client
//! share: the policy, the key directory and login map built from the
//! DNSSEC test environment's users, one transaction with or without
//! `{auth_authen}`, and the independent verifiers' calls.

#![allow(dead_code, reason = "each test file uses its part")]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use indymilter::MacroStage;
use indymilter_test::{EomActions, Status, TestConnection};
use tempfile::TempDir;

use crate::common::{self, Scratch};
use crate::env::DnsEnv;
use crate::milter::{InProcessMilter, apply_actions};

pub const AUTHSERV: &str = "mx.local.test";

pub const POLICY: &str = r#"
[[rule]]
name = "must sign"
sender = "*@autoencrypt.test"
recipient = "strict@example.net"
methods = []
sign = ["smime"]
sign_required = true

[[rule]]
name = "sign pgp first"
sender = "*@autoencrypt.test"
recipient = "*@example.net"
methods = []
sign = ["openpgp", "smime"]

[[rule]]
name = "sign and encrypt"
sender = "*@autoencrypt.test"
recipient = "*@autoencrypt.test"
sign = ["smime", "openpgp"]

[[rule]]
name = "inbound: verify only"
direction = "inbound"
methods = []
"#;

/// The signing key directory: smime@ (S/MIME), pgp@ (OpenPGP) and both@
/// (both), each private key 0600.
pub fn key_dir(env: &DnsEnv) -> TempDir {
    let d = tempfile::tempdir().unwrap();
    let put = |name: &str, from: &Path, mode: u32| {
        let p = d.path().join(name);
        std::fs::copy(from, &p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    // expired@: a certificate that expired in 2021 (signing refuses it).
    for id in ["smime", "both", "expired"] {
        let u = env.user(id);
        put(
            &format!("{}.pem", u.address),
            u.cert.as_ref().unwrap(),
            0o644,
        );
        put(
            &format!("{}.key", u.address),
            u.key.as_ref().unwrap(),
            0o600,
        );
    }
    for id in ["pgp", "both"] {
        let u = env.user(id);
        put(
            &format!("{}.sec.asc", u.address),
            u.pgp_secret.as_ref().unwrap(),
            0o600,
        );
    }
    d
}

pub struct Signing {
    pub m: InProcessMilter,
    _keys: TempDir,
}

pub async fn start(env: &DnsEnv) -> Signing {
    start_with(env, |_| {}).await
}

/// [`start`], the configuration changed by `tweak`.
pub async fn start_with(
    env: &DnsEnv,
    tweak: impl FnOnce(&mut autoencrypt_milter::config::Config),
) -> Signing {
    let keys = key_dir(env);
    let map = keys.path().join("logins");
    std::fs::write(
        &map,
        "# login: addresses\nsmime: smime@autoencrypt.test\npgp: pgp@autoencrypt.test\n\
         both: both@autoencrypt.test\nexpired: expired@autoencrypt.test\n",
    )
    .unwrap();
    let dir = keys.path().to_owned();
    let m = InProcessMilter::trust_ad(env.resolver(), POLICY, |c| {
        c.signing.key_dir = Some(dir.clone());
        c.signing.login_map = Some(dir.join("logins"));
        c.authserv_id = AUTHSERV.to_owned();
        c.local_domains = vec!["local.test".to_owned()];
        tweak(c);
    })
    .await;
    Signing { m, _keys: keys }
}

pub struct Sent {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Sent {
    pub fn new(headers: &[(&str, &str)], body: &[u8]) -> Sent {
        Sent {
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), format!(" {v}")))
                .collect(),
            body: body.to_vec(),
        }
    }

    /// A message as bytes (CRLF): its header fields (a value keeps its
    /// folds) and body.
    pub fn from_raw(raw: &[u8]) -> Sent {
        let (head, body) = header_and_body(raw);
        let text = String::from_utf8_lossy(head);
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in text.split_inclusive("\r\n") {
            if line.starts_with([' ', '\t']) {
                let last = headers.last_mut().expect("a fold after a field");
                last.1.push_str(line);
            } else if let Some((n, v)) = line.split_once(':') {
                headers.push((n.to_owned(), v.to_owned()));
            }
        }
        for h in &mut headers {
            let v = h.1.strip_suffix("\r\n").unwrap_or(&h.1).to_owned();
            h.1 = v;
        }
        Sent {
            headers,
            body: body.to_vec(),
        }
    }

    /// A plain message from `from` to `to`.
    pub fn plain(from: &str, to: &str) -> Sent {
        Sent::new(
            &[
                ("From", &format!("<{from}>")),
                ("To", &format!("<{to}>")),
                ("Subject", "signed by the server"),
                ("Date", "Wed, 02 Dec 2026 10:00:00 +0000"),
                ("Message-ID", "<sign-1@autoencrypt.test>"),
                ("MIME-Version", "1.0"),
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Content-Transfer-Encoding", "8bit"),
            ],
            "Grüße aus dem Test.\r\nFrom the start of a line, \r\ntrailing space.\r\n".as_bytes(),
        )
    }

    /// The message as the milter saw it (CRLF).
    pub fn raw(&self) -> Vec<u8> {
        apply_actions(
            &self.headers,
            &self.body,
            &EomActions {
                actions: Vec::new(),
            },
        )
    }
}

/// One transaction: MAIL (with `{auth_authen}` = `login` when given),
/// RCPTs, the message; the EOM status and the message as delivered.
pub async fn send(
    m: &InProcessMilter,
    login: Option<&str>,
    from: &str,
    rcpts: &[&str],
    msg: &Sent,
) -> (Status, Vec<u8>) {
    let mut c = TestConnection::configure()
        .exact_leading_space(true)
        .read_timeout(Duration::from_secs(30))
        .open_tcp(m.addr)
        .await
        .unwrap();
    c.macros(MacroStage::Connect, [("{daemon_name}", "submission")])
        .await
        .unwrap();
    c.connect("client.test", [127, 0, 0, 1]).await.unwrap();
    let mut mail = vec![("i", "QSIGN")];
    if let Some(l) = login {
        mail.push(("{auth_authen}", l));
    }
    c.macros(MacroStage::Mail, mail).await.unwrap();
    c.mail([format!("<{from}>")]).await.unwrap();
    for r in rcpts {
        let s = c.rcpt([format!("<{r}>")]).await.unwrap();
        assert!(
            matches!(s, Status::Continue | Status::Noreply),
            "rcpt {r}: {s:?}"
        );
    }
    c.data().await.unwrap();
    for (n, v) in &msg.headers {
        c.header(n.as_str(), v.as_str()).await.unwrap();
    }
    c.body(msg.body.clone()).await.unwrap();
    c.macros(MacroStage::Eom, [("i", "QSIGN")]).await.unwrap();
    let (actions, status) = c.eom().await.unwrap();
    let delivered = apply_actions(&msg.headers, &msg.body, &actions);
    c.close().await.unwrap();
    (status, delivered)
}

pub fn counter(m: &InProcessMilter, line: &str) -> bool {
    m.metrics.render().lines().any(|l| l == line)
}

/// The header section and the body of an entity with CRLF line endings.
pub fn header_and_body(msg: &[u8]) -> (&[u8], &[u8]) {
    match msg.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => (&msg[..i + 2], &msg[i + 4..]),
        None => (msg, &[]),
    }
}

pub fn header_of(msg: &[u8]) -> String {
    String::from_utf8_lossy(header_and_body(msg).0).into_owned()
}

/// The `multipart/signed` parts of `msg` (its boundary from the header).
pub fn signed_parts(msg: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let (fields, body) = common::split_message(msg);
    let ct = fields
        .iter()
        .find(|f| f.name == "content-type")
        .expect("Content-Type")
        .value();
    assert!(ct.starts_with("multipart/signed"), "{ct}");
    let boundary = common::ContentType::parse(&ct)
        .param("boundary")
        .expect("boundary")
        .to_owned();
    let parts = common::split_multipart(body, &boundary);
    assert_eq!(parts.len(), 2, "multipart/signed has two parts");
    (parts[0].to_vec(), parts[1].to_vec())
}

/// `openssl cms -verify` of a whole S/MIME message against `cert` as the
/// trust anchor: the content it signed.
pub fn openssl_verify(scratch: &Scratch, msg: &[u8], cert: &Path) -> Result<Vec<u8>, String> {
    let input = scratch.file(&format!("v-{}.eml", common::unique_tag()));
    let out = scratch.file(&format!("v-{}.out", common::unique_tag()));
    std::fs::write(&input, msg).unwrap();
    let o = Command::new("openssl")
        // No -binary: with it, openssl's MIME reader hands the part over
        // with LF line ends and the digest cannot match.
        .args(["cms", "-verify", "-inform", "SMIME", "-CAfile"])
        .arg(cert)
        .arg("-in")
        .arg(&input)
        .arg("-out")
        .arg(&out)
        .output()
        .expect("run openssl cms -verify");
    if o.status.success() {
        Ok(std::fs::read(&out).unwrap())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).into_owned())
    }
}

/// The Content-* fields and body of `msg` as one entity (CRLF): what the
/// server signs for a message it does not encrypt, before transport
/// encoding.
pub fn content_entity(msg: &[u8]) -> Vec<u8> {
    common::expected_inner_entity(msg)
}

/// The decoded body of a single-part entity (for an 8-bit part the
/// signing re-encoded): Python's email package, independent of ours.
pub fn decoded_body(entity: &[u8]) -> Vec<u8> {
    let scratch = Scratch::new();
    let p = scratch.file("entity.eml");
    std::fs::write(&p, entity).unwrap();
    let o = Command::new("python3")
        .args([
            "-c",
            "import sys,email,email.policy;m=email.message_from_binary_file(open(sys.argv[1],'rb'),\
             policy=email.policy.compat32);sys.stdout.buffer.write(m.get_payload(decode=True))",
        ])
        .arg(&p)
        .output()
        .expect("run python3");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    o.stdout
}
