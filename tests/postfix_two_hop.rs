//! The two-hop Postfix deployment gives every recipient an S/MIME copy of
//! their own (issue 14, Bcc privacy). A front instance without a milter
//! (tests/env/postfix-up in relay mode) relays a message for a `To:`
//! recipient and a Bcc recipient (envelope only) to a second, real Postfix
//! instance, one recipient per transaction; that instance's smtpd runs the
//! milter (keys from SMIMEA in the signed test zone). Proven: each recipient
//! gets exactly one copy, whose CMS holds exactly one RecipientInfo — its
//! own, by issuer and serial number — which decrypts with its own key to the
//! inner entity byte for byte, and not with the other recipient's key.
//!
//! Contrast: the same message sent straight into the milter's instance (one
//! hop) is encrypted once for both, and both copies carry both
//! RecipientInfos: the `To:` recipient can read who the Bcc recipient is.
//!
//! Needs root, postfix, nsd, unbound and openssl (tests/env/install-deps);
//! without them the tests fail, they are never skipped.

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
#[path = "env/postfix.rs"]
mod postfix;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use common::{Scratch, SmimeId, expected_inner_entity, smime_decrypt};
use env::DnsEnv;
use milter::InProcessMilter;
use openssl::nid::Nid;
use postfix::{
    FRONT_MYHOSTNAME, MYHOSTNAME, PostfixEnv, header_and_body, split_delivery,
    strip_delivery_headers,
};

/// Delivery through both hops takes well under a second; this only bounds
/// a failure.
const WAIT: Duration = Duration::from_secs(15);

/// Named in `To:`.
const TO: &str = "smime@autoencrypt.test";
/// In the envelope only: the Bcc recipient.
const BCC: &str = "both@autoencrypt.test";

/// Required S/MIME for both users (RSA keys: key transport), so a copy
/// that is not encrypted is refused, never delivered; the header is not
/// protected, so the inner entity is just the Content-* fields and body
/// (`expected_inner_entity`).
const POLICY: &str = r#"
[[rule]]
name = "two-hop test: S/MIME, header not protected"
recipient = ["smime@autoencrypt.test", "both@autoencrypt.test"]
methods = ["smime"]
mode = "required"
on_missing_key = "reject"
protect_headers = false
"#;

fn message() -> Vec<u8> {
    format!(
        "From: sender@example.net\r\nTo: {TO}\r\nSubject: two hops\r\nMessage-ID: <two-hop@example.net>\r\nDate: Wed, 02 Dec 2026 08:00:00 +0000\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nNur für die Empfänger.\r\n"
    )
    .into_bytes()
}

/// The milter in trust-ad mode against the DNS environment's unbound
/// (`trust_ad_config`'s settings, nothing changed).
fn milter(env: &DnsEnv) -> InProcessMilter {
    InProcessMilter::trust_ad_on_thread(env.resolver(), POLICY, |_config| {})
}

fn smime_id(env: &DnsEnv, user: &str) -> SmimeId {
    let u = env.user(user);
    SmimeId::from_files(u.cert.as_ref().unwrap(), u.key.as_ref().unwrap())
}

/// The DER CMS of a delivered S/MIME copy; panics on anything else.
fn cms_der(delivered: &[u8]) -> Vec<u8> {
    let msg = strip_delivery_headers(delivered);
    let (header, body) = header_and_body(msg);
    let header = String::from_utf8_lossy(header).to_ascii_lowercase();
    assert!(
        header.contains("application/pkcs7-mime"),
        "expected S/MIME, got:\n{}",
        String::from_utf8_lossy(delivered)
    );
    let b64: String = String::from_utf8_lossy(body)
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    openssl::base64::decode_block(&b64).expect("base64 body")
}

/// One RecipientInfo as `openssl cms -cmsout -print` shows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Ri {
    /// `d.ktri` with `d.issuerAndSerialNumber`: (issuer, serialNumber),
    /// as printed.
    Ktri(String, String),
    /// Any other kind (`d.kari`, `d.kekri`, `d.pwri`, `d.ori`): its tag.
    Other(String),
}

/// The RecipientInfos of a DER CMS, from `openssl cms -cmsout -print`.
fn recipient_infos(scratch: &Scratch, der: &[u8], label: &str) -> Vec<Ri> {
    let path = scratch.file(&format!("{label}.der"));
    std::fs::write(&path, der).unwrap();
    let out = Command::new("openssl")
        .args(["cms", "-cmsout", "-print", "-inform", "DER", "-in"])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run `openssl cms -cmsout -print` ({e}): install openssl (tests/env/install-deps)")
        });
    assert!(
        out.status.success(),
        "openssl cms -cmsout -print failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("openssl prints UTF-8");
    parse_recipient_infos(&text)
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// Splits the printout's `recipientInfos:` list into its entries: each
/// starts at a `d.ktri:`/`d.kari:`/… line one level below the list and
/// runs until the next one or the list's end (a line indented no deeper
/// than `recipientInfos:` itself).
fn parse_recipient_infos(text: &str) -> Vec<Ri> {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.trim() == "recipientInfos:")
        .unwrap_or_else(|| panic!("no recipientInfos in:\n{text}"));
    let list_indent = indent(lines[start]);
    let mut blocks: Vec<(String, Vec<&str>)> = Vec::new();
    for &line in &lines[start + 1..] {
        if line.trim().is_empty() {
            continue;
        }
        if indent(line) <= list_indent {
            break;
        }
        let t = line.trim();
        if ["d.ktri:", "d.kari:", "d.kekri:", "d.pwri:", "d.ori:"].contains(&t) {
            blocks.push((t.trim_end_matches(':').to_owned(), Vec::new()));
        } else {
            blocks
                .last_mut()
                .unwrap_or_else(|| panic!("recipientInfos: {line:?} before any entry in:\n{text}"))
                .1
                .push(line);
        }
    }
    blocks
        .into_iter()
        .map(|(tag, body)| {
            if tag != "d.ktri" {
                return Ri::Other(tag);
            }
            let field = |name: &str| {
                body.iter()
                    .find_map(|l| l.trim().strip_prefix(name))
                    .map(|v| v.trim().to_owned())
            };
            // The milter names a key-transport recipient by issuer and
            // serial number; a subjectKeyIdentifier would need this test
            // extended, not passed.
            assert!(
                body.iter().any(|l| l.trim() == "d.issuerAndSerialNumber:"),
                "ktri without issuerAndSerialNumber (subjectKeyIdentifier?):\n{text}"
            );
            Ri::Ktri(
                field("issuer:").unwrap_or_else(|| panic!("ktri without issuer:\n{text}")),
                field("serialNumber:")
                    .unwrap_or_else(|| panic!("ktri without serialNumber:\n{text}")),
            )
        })
        .collect()
}

/// The key-transport RecipientInfo for `id`'s certificate as `openssl cms
/// -print` prints it: `issuer: CN=…` (the test certificates' issuer is a
/// single CN) and the serial as OpenSSL 3's `i2s_ASN1_INTEGER` prints it
/// (decimal below 128 bits, else `0x` and `BN_bn2hex`'s upper-case hex).
fn ri_of(id: &SmimeId) -> Ri {
    let issuer: Vec<_> = id.cert.issuer_name().entries().collect();
    assert!(
        issuer.len() == 1 && issuer[0].object().nid() == Nid::COMMONNAME,
        "test certificates are issued by a single CN"
    );
    let cn = issuer[0].data().to_string().unwrap();
    let serial = id.cert.serial_number().to_bn().unwrap();
    let serial = if serial.num_bits() < 128 {
        serial.to_dec_str().unwrap().to_string()
    } else {
        format!("0x{}", serial.to_hex_str().unwrap())
    };
    Ri::Ktri(format!("CN={cn}"), serial)
}

/// The queue id in the first `Received:` Postfix added (`by HOST (Postfix)
/// with ESMTP id ID`).
fn queue_id_by(delivered: &[u8], host: &str) -> Option<String> {
    let text = String::from_utf8_lossy(delivered);
    let needle = format!("by {host} (Postfix) with ESMTP id ");
    let at = text.find(&needle)? + needle.len();
    let id: String = text[at..]
        .chars()
        .take_while(char::is_ascii_alphanumeric)
        .collect();
    (!id.is_empty()).then_some(id)
}

/// Front instance (relay mode, no milter) → milter's instance, one
/// recipient per transaction: every copy is for its recipient alone.
#[test]
fn two_hops_give_each_recipient_a_copy_only_it_can_read() {
    let env = DnsEnv::start();
    let m = milter(&env);
    let b = PostfixEnv::start(Some(m.addr));
    let a = PostfixEnv::start_relay(b.smtp_addr());
    assert_eq!(a.relay_to(), Some(b.smtp_addr()));
    assert_eq!(a.postconf("onebyone_destination_recipient_limit"), "1");
    assert_eq!(a.postconf("smtpd_milters"), "");

    let sent = message();
    let out = a.send("sender@example.net", &[TO, BCC], &sent);
    // The front instance has no milter: it takes both at once.
    assert!(out.rcpt(TO).is("250 2.1.5"), "{out}");
    assert!(out.rcpt(BCC).is("250 2.1.5"), "{out}");
    assert!(out.accepted(), "{out}");
    let front_id = out.queue_id().expect("queue id at the front");

    for rcpt in [TO, BCC] {
        b.expect_mail(rcpt, 1, WAIT);
    }
    assert!(a.wait_queue_empty(WAIT), "front queue:\n{}", a.postqueue());
    assert!(b.wait_queue_empty(WAIT), "second queue:\n{}", b.postqueue());
    // Nothing more arrived later, and nothing stayed at the front.
    assert!(
        a.all_mail().is_empty(),
        "the front instance delivers nothing"
    );
    let delivered = b.all_mail();
    assert_eq!(
        delivered.len(),
        2,
        "one copy per recipient, nothing else: {:?}",
        delivered.iter().map(|d| &d.recipient).collect::<Vec<_>>()
    );

    let scratch = Scratch::new();
    let blog = b.maillog();
    let mut second_ids = BTreeSet::new();
    for (user, other) in [("smime", "both"), ("both", "smime")] {
        let rcpt = env.user(user).address.clone();
        let copies = b.mail_for(&rcpt);
        assert_eq!(copies.len(), 1, "{rcpt}: exactly one copy");
        let copy = &copies[0];

        // It came through both hops: the front's queue id, then a
        // transaction of its own at the second instance.
        assert_eq!(
            queue_id_by(copy, FRONT_MYHOSTNAME).as_deref(),
            Some(front_id.as_str()),
            "{rcpt}: relayed by the front instance:\n{}",
            String::from_utf8_lossy(split_delivery(copy).0)
        );
        let id = queue_id_by(copy, MYHOSTNAME).expect("second instance's queue id");
        assert!(
            blog.contains(&format!("{id}: from=<sender@example.net>, size=")),
            "{rcpt}: no qmgr line for {id}:\n{blog}"
        );
        let nrcpt = blog
            .lines()
            .find(|l| l.contains(&format!("{id}: from=<sender@example.net>, size=")))
            .unwrap();
        assert!(
            nrcpt.contains(", nrcpt=1 "),
            "{rcpt}: one recipient in its transaction: {nrcpt}"
        );
        second_ids.insert(id);

        let der = cms_der(copy);
        let mine = smime_id(&env, user);
        let theirs = smime_id(&env, other);
        assert_ne!(ri_of(&mine), ri_of(&theirs), "distinct certificates");
        let ris = recipient_infos(&scratch, &der, user);
        assert_eq!(
            ris,
            vec![ri_of(&mine)],
            "{rcpt}: exactly one RecipientInfo, its own"
        );

        let plain = smime_decrypt(&scratch, &der, "DER", &mine)
            .unwrap_or_else(|e| panic!("{rcpt}: does not decrypt with its own key: {e}"));
        assert_eq!(
            plain,
            expected_inner_entity(&sent),
            "{rcpt}: decrypted entity differs"
        );
        let refused = smime_decrypt(&scratch, &der, "DER", &theirs);
        assert!(
            refused.is_err(),
            "{rcpt}'s copy must not decrypt with {other}'s key"
        );
    }
    assert_eq!(second_ids.len(), 2, "two transactions, two queue files");
}

/// One hop, for contrast: one encryption for both recipients, and each
/// copy names both — the Bcc recipient is exposed to the `To:` recipient.
#[test]
fn one_hop_names_every_recipient_in_the_one_ciphertext() {
    let env = DnsEnv::start();
    let m = milter(&env);
    let b = PostfixEnv::start(Some(m.addr));

    let sent = message();
    let out = b.send("sender@example.net", &[TO, BCC], &sent);
    // Same method for both: no 452 split, one transaction.
    assert!(out.rcpt(TO).is("250 2.1.5"), "{out}");
    assert!(out.rcpt(BCC).is("250 2.1.5"), "{out}");
    assert!(out.accepted(), "{out}");
    for rcpt in [TO, BCC] {
        b.expect_mail(rcpt, 1, WAIT);
    }
    assert!(b.wait_queue_empty(WAIT), "{}", b.postqueue());
    assert_eq!(b.all_mail().len(), 2, "one copy per recipient");

    let scratch = Scratch::new();
    let smime = smime_id(&env, "smime");
    let both = smime_id(&env, "both");
    let to_copy = cms_der(&b.mail_for(TO)[0]);
    let bcc_copy = cms_der(&b.mail_for(BCC)[0]);
    assert_eq!(to_copy, bcc_copy, "one ciphertext for both recipients");

    // The exposure: the To: recipient's copy names the Bcc recipient
    // (in whichever order the RecipientInfos come).
    let ris = recipient_infos(&scratch, &to_copy, "one-hop");
    assert_eq!(ris.len(), 2, "two RecipientInfos: {ris:?}");
    assert_eq!(
        ris.into_iter().collect::<BTreeSet<_>>(),
        BTreeSet::from([ri_of(&smime), ri_of(&both)]),
        "the To: recipient's and the Bcc recipient's"
    );
    for id in [&smime, &both] {
        assert_eq!(
            smime_decrypt(&scratch, &to_copy, "DER", id).unwrap(),
            expected_inner_entity(&sent)
        );
    }
}
