//! The milter session driven by an arbitrary sequence of stages (connect,
//! macros, MAIL, RCPT, header, body, end of message, abort) with
//! arbitrary arguments, on a current-thread runtime like the server's,
//! against an engine whose only key source is a local key directory (no
//! network).
//!
//! Invariant besides "no panic": when a recipient whose rule is
//! `required` was accepted, the message never ends as an unchanged pass
//! unless the verifier calls its whole body ciphertext; when it is
//! encrypted, the new body is ciphertext by the same verifier.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::rsa::Rsa;
use openssl::x509::extension::{KeyUsage, SubjectAlternativeName};
use openssl::x509::{X509Builder, X509NameBuilder};

use crate::address::Address;
use crate::backend::Registry;
use crate::config::Config;
use crate::keys::KeyService;
use crate::keys::directory::DirectorySource;
use crate::message::rewrite::apply_edits;
use crate::message::verify::{Verification, verify};
use crate::message::{Eol, HeaderField};
use crate::metrics::{Metrics, Outcome};
use crate::milter::session::{EomVerdict, RcptVerdict, Session};
use crate::milter::{Engine, Shared};
use crate::policy::{ConnectionFacts, Mode, Policy, Query, Treatment};

const POLICY: &str = r#"
[[rule]]
name = "required"
recipient = ["*@req.test"]
mode = "required"
methods = ["smime"]
on_missing_key = "reject"
on_lookup_error = "tempfail"

[[rule]]
name = "opportunistic"
recipient = ["*@opp.test"]
methods = ["smime"]
"#;

/// Recipients the `pick` stage chooses from: with and without keys, under
/// each rule, in spellings a client may use.
const RECIPIENTS: &[&str] = &[
    "<alice@req.test>",
    "<ALICE@REQ.TEST>",
    "<nokey@req.test>",
    "<bob@opp.test>",
    "<carol@plain.test>",
    "<\"alice\"@req.test>",
    "<alice@req.test.>",
    "<@relay.test:alice@req.test>",
    "<postmaster>",
    "alice@req.test",
];

/// Header fields the `canned header` stage chooses from: the ones that
/// make a message look encrypted.
const HEADERS: &[(&str, &str)] = &[
    (
        "Content-Type",
        " multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"b\"",
    ),
    ("Content-Type", " multipart/encrypted; boundary=b"),
    (
        "Content-Type",
        " application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m",
    ),
    ("Content-Type", " application/pkcs7-mime"),
    ("Content-Type", " text/plain; name=\"notes.p7m\""),
    ("Content-Type", " multipart/mixed; boundary=b"),
    ("Content-Type", " text/plain"),
    ("Content-Transfer-Encoding", " base64"),
    ("Content-Disposition", " attachment; filename=\"x.p7m\""),
    ("MIME-Version", " 1.0"),
];

struct Harness {
    runtime: tokio::runtime::Runtime,
    shared: Shared,
    // Held so that the key and policy files live as long as the engine.
    _dir: tempfile::TempDir,
}

fn harness() -> Option<&'static Harness> {
    static H: OnceLock<Option<Harness>> = OnceLock::new();
    H.get_or_init(|| build().ok()).as_ref()
}

fn build() -> Result<Harness, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let policy_dir = dir.path().join("policy");
    let key_dir = dir.path().join("keys");
    std::fs::create_dir_all(&policy_dir)?;
    std::fs::create_dir_all(&key_dir)?;
    std::fs::write(policy_dir.join("10-fuzz.toml"), POLICY)?;
    let pkey = PKey::from_rsa(Rsa::generate(2048)?)?;
    for addr in ["alice@req.test", "bob@opp.test"] {
        std::fs::write(
            key_dir.join(format!("{addr}.pem")),
            certificate(&pkey, addr)?,
        )?;
    }
    let config = Config {
        policy_dir,
        keys: crate::config::KeysConfig {
            directory: Some(key_dir.clone()),
        },
        ..Config::default()
    };
    let (policy, _) = Policy::load(&config)?;
    let metrics = Metrics::new();
    // The directory alone: no network in a fuzz run.
    let keys = KeyService::new(
        vec![Arc::new(DirectorySource::new(PathBuf::from(&key_dir)))],
        Arc::new(Registry::new()),
        Some(metrics.clone()),
    );
    let engine = Engine {
        config,
        policy,
        keys,
        metrics,
        harvester: None,
        signing: None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(Harness {
        runtime,
        shared: Shared::new(engine, "/nonexistent".into()),
        _dir: dir,
    })
}

pub(crate) fn certificate(
    pkey: &PKey<openssl::pkey::Private>,
    email: &str,
) -> Result<Vec<u8>, openssl::error::ErrorStack> {
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_text("CN", email)?;
    let name = name.build();
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    let serial = BigNum::from_u32(1)?.to_asn1_integer()?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(&name)?;
    b.set_issuer_name(&name)?;
    b.set_pubkey(pkey)?;
    let (from, until) = (Asn1Time::days_from_now(0)?, Asn1Time::days_from_now(3650)?);
    b.set_not_before(&from)?;
    b.set_not_after(&until)?;
    b.append_extension(KeyUsage::new().key_encipherment().build()?)?;
    let san = SubjectAlternativeName::new()
        .email(email)
        .build(&b.x509v3_context(None, None))?;
    b.append_extension(san)?;
    b.sign(pkey, MessageDigest::sha256())?;
    b.build().to_pem()
}

/// What the harness knows of the transaction in progress.
#[derive(Default)]
struct Mirror {
    open: bool,
    required: bool,
    headers: Vec<HeaderField>,
    body: Vec<u8>,
}

/// Stages: one byte (the stage in the low 4 bits, a flag in the high
/// bit), one length byte, that many argument bytes.
pub fn session(data: &[u8]) {
    session_outcomes(data);
}

/// [`session`], returning how each end of message ended (`encrypted`,
/// `verified`, `passed`, `refused`; `required:` first when a required
/// recipient was accepted): for the replay test to see that the checks
/// above are reached.
pub fn session_outcomes(data: &[u8]) -> Vec<String> {
    let Some(h) = harness() else {
        panic!("fuzz harness could not be set up");
    };
    h.runtime.block_on(run(h, data))
}

async fn run(h: &Harness, mut data: &[u8]) -> Vec<String> {
    let mut outcomes = Vec::new();
    let mut s = Session::new(&h.shared);
    let mut m = Mirror::default();
    while let [op, len, rest @ ..] = data {
        let n = usize::from(*len).min(rest.len());
        let (arg, tail) = rest.split_at(n);
        data = tail;
        let text = String::from_utf8_lossy(arg);
        let flag = op & 0x80 != 0;
        match op & 0x0f {
            0 => {
                s = Session::new(&h.shared);
                m = Mirror::default();
                s.set_daemon_name(&text);
            }
            1 => s.set_queue_id(&text),
            2 => {
                s.mail(&text, flag.then_some("fuzz@example.org"));
                m = Mirror {
                    open: true,
                    ..Mirror::default()
                };
            }
            3 => rcpt(h, &mut s, &mut m, &text).await,
            4 => {
                let pick =
                    RECIPIENTS[usize::from(arg.first().copied().unwrap_or(0)) % RECIPIENTS.len()];
                rcpt(h, &mut s, &mut m, pick).await;
            }
            5 => {
                let (name, value) = match arg.iter().position(|&b| b == b':') {
                    Some(i) => (&arg[..i], &arg[i + 1..]),
                    None => (arg, &b""[..]),
                };
                let name = String::from_utf8_lossy(name);
                header(&mut s, &mut m, &name, value);
            }
            6 => {
                let (name, value) =
                    HEADERS[usize::from(arg.first().copied().unwrap_or(0)) % HEADERS.len()];
                header(&mut s, &mut m, name, value.as_bytes());
            }
            7 if s.body(arg).is_ok() && m.open => m.body.extend_from_slice(arg),
            8 => {
                let verdict = s.eom().await;
                outcomes.push(check_eom(&m, verdict));
                m = Mirror::default();
            }
            9 => {
                s.abort();
                m = Mirror::default();
            }
            _ => {}
        }
    }
    outcomes
}

fn header(s: &mut Session, m: &mut Mirror, name: &str, value: &[u8]) {
    s.header(name, value);
    if m.open {
        m.headers.push(HeaderField::new(name, value));
    }
}

async fn rcpt(h: &Harness, s: &mut Session, m: &mut Mirror, rcpt: &str) {
    if let RcptVerdict::Accept = s.rcpt(rcpt).await
        && let Ok(addr) = Address::parse(rcpt)
    {
        let engine = h.shared.engine();
        let conn = ConnectionFacts::default();
        // The fuzz policy matches on the recipient alone.
        let q = Query {
            recipient: &addr,
            sender: None,
            direction: engine.policy.direction_of(&addr),
            conn: &conn,
        };
        if let Treatment::Encrypt {
            mode: Mode::Required { .. },
            ..
        } = engine.policy.select(&q).rule.treatment
        {
            m.required = true;
        }
    }
}

fn check_eom(m: &Mirror, verdict: EomVerdict) -> String {
    let required = m.open && m.required;
    let what = match &verdict {
        EomVerdict::Refuse(_) => "refused",
        EomVerdict::Unchanged {
            outcome: Outcome::AlreadyEncrypted,
            ..
        } => "verified",
        EomVerdict::Unchanged { .. } => "passed",
        EomVerdict::Signed { .. } => "signed",
        EomVerdict::Encrypt { .. } => "encrypted",
    };
    let what = if required {
        format!("required:{what}")
    } else {
        what.to_owned()
    };
    if !required {
        return what;
    }
    match verdict {
        EomVerdict::Refuse(_) => {}
        // The fuzz engine has no signing keys: nothing is signed.
        EomVerdict::Signed { .. } => panic!("required recipient, signed and not encrypted"),
        EomVerdict::Unchanged {
            reason, outcome, ..
        } => {
            assert!(
                matches!(outcome, Outcome::AlreadyEncrypted),
                "required recipient, passed unchanged: {reason}"
            );
            assert!(
                matches!(
                    verify(&m.headers, &mut &m.body[..]),
                    Verification::Verified(_)
                ),
                "required recipient, passed as encrypted without verifying: {reason}"
            );
        }
        EomVerdict::Encrypt { edits, body, .. } => {
            let mut headers = m.headers.clone();
            apply_edits(&mut headers, &edits, Eol::Crlf);
            let Ok(body) = body.to_vec() else {
                panic!("encrypted body unreadable");
            };
            let v = verify(&headers, &mut &body[..]);
            assert!(
                matches!(v, Verification::Verified(_)),
                "the encrypted output is not ciphertext: {v:?}"
            );
        }
    }
    what
}
