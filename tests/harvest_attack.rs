//! Attacks on learning keys from mail, the key store, pins and key-change
//! review (issue 12), as a hostile sender, a hostile local client and a
//! broken network would make them. Each test has one defined outcome; a
//! test marked `#[ignore = "finding N: …"]` fails today and documents a
//! weakness (the report that came with it says where and how to fix it).
//!
//! * `auth`: forged `Authentication-Results` fields and `From:` tricks
//!   ([`screen_at`]), and what a DKIM or DMARC pass does not cover.
//! * `autocrypt`: hostile `Autocrypt:` headers and keys.
//! * `smime`: hostile signed messages (other signers, other certificates
//!   in the bag, other content, odd structures).
//! * `store`: the update rule, SQL-significant text, a store file deleted
//!   under the milter, a schema from the future, a PostgreSQL that accepts
//!   and never answers.
//! * `pins`: pins written by the CLI and by hand, a store that cannot be
//!   read, key-change review against a source returning old and new keys.
//! * `milter`: through the milter protocol: RCPT and end of message with
//!   a PostgreSQL that never answers, `harvest.max_message_bytes`, and the
//!   counting of messages that teach nothing.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed step is a failed test"
)]

#[path = "harvest_attack/auth.rs"]
mod auth;
#[path = "harvest_attack/autocrypt.rs"]
mod autocrypt;
#[path = "harvest_attack/certs.rs"]
mod certs;
#[path = "harvest_attack/milter.rs"]
mod milter;
#[path = "env/milter.rs"]
mod milter_env;
#[path = "harvest_attack/pins.rs"]
mod pins;
#[path = "harvest_attack/smime.rs"]
mod smime;
#[path = "harvest_attack/store.rs"]
mod store;

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use autoencrypt_milter::Registry;
use autoencrypt_milter::harvest::{Candidate, LearnedKey, Refusal, Screen, examine, screen_at};
use autoencrypt_milter::message::{HeaderField, Message};
use autoencrypt_milter::store::{Store, StoreSettings};
use base64::Engine as _;
use sequoia_openpgp::Cert;
use sequoia_openpgp::cert::CertBuilder;
use sequoia_openpgp::serialize::SerializeInto;

/// The authserv-id the tests' MTA writes.
const ID: &str = "mx.example.org";

/// A passing DKIM and DMARC result for example.org under [`ID`].
/// The receiving MTA's pass for example.org, and example.org's DKIM
/// signature, which covers the Autocrypt field (as a provider that signs
/// it writes it; without it an Autocrypt header teaches nothing).
const AR_PASS: &str = "Authentication-Results: mx.example.org;\n dkim=pass header.d=example.org \
                       header.s=sel header.b=ABCDabcd;\n dmarc=pass header.from=example.org\n\
                       DKIM-Signature: v=1; a=rsa-sha256; d=example.org; s=sel;\n \
                       h=from:to:subject:date:autocrypt; bh=AAAA; b=ABCDabcd\n";

/// `raw` (LF or CRLF) as the milter holds it: header fields, and the body
/// with CRLF line ends.
fn parse(raw: &str) -> (Vec<HeaderField>, Vec<u8>) {
    let crlf = raw.replace("\r\n", "\n").replace('\n', "\r\n");
    let m = Message::parse(crlf.as_bytes());
    (m.headers, crlf.as_bytes()[m.body_offset..].to_vec())
}

/// [`screen_at`] now under [`ID`].
fn screen(headers: &[HeaderField]) -> Screen {
    screen_at(headers, ID, SystemTime::now())
}

fn candidate(headers: &[HeaderField]) -> Candidate {
    match screen(headers) {
        Screen::Candidate(c) => c,
        other => panic!("not a candidate: {other:?}"),
    }
}

/// Everything `raw` teaches, when it is a candidate at all (`None`: the
/// screen stopped it).
fn teaches(raw: &str) -> Option<Vec<Result<LearnedKey, Refusal>>> {
    let (h, b) = parse(raw);
    match screen(&h) {
        Screen::Candidate(c) => Some(examine(&c, &h, &b, registry(), SystemTime::now())),
        _ => None,
    }
}

/// The keys `raw` teaches (refusals dropped).
fn learned(raw: &str) -> Vec<LearnedKey> {
    teaches(raw)
        .unwrap_or_default()
        .into_iter()
        .filter_map(Result::ok)
        .collect()
}

fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(Registry::new)
}

/// An OpenPGP certificate with an encryption subkey and the user ID `uid`.
fn pgp(uid: &str) -> Cert {
    CertBuilder::new()
        .add_userid(uid)
        .add_transport_encryption_subkey()
        .generate()
        .unwrap()
        .0
}

/// Alice's (alice@example.org) one OpenPGP key for the whole run.
fn alice_pgp() -> &'static Cert {
    static C: OnceLock<Cert> = OnceLock::new();
    C.get_or_init(|| pgp("Alice <alice@example.org>"))
}

/// The base64 of `data` in 76-column lines, each after a fold (`\n `).
fn folded_b64(data: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(data);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    lines.join("\n ")
}

/// An `Autocrypt:` field (with its line end) for `addr` carrying `key`.
fn autocrypt_field(addr: &str, key: &[u8]) -> String {
    format!(
        "Autocrypt: addr={addr}; prefer-encrypt=mutual; keydata=\n {}\n",
        folded_b64(key)
    )
}

/// A message with `head` (header fields, each with its line end), then
/// `From: alice@example.org`, a Date and a text body.
fn message_with(head: &str) -> String {
    format!(
        "{head}From: Alice <alice@example.org>\nTo: <bob@example.net>\nSubject: hi\n\
         Date: Tue, 06 Jan 2026 10:00:00 +0100\nMessage-ID: <1@example.org>\n\n\
         Hello.\n"
    )
}

/// Alice's message with her Autocrypt header and the authentication
/// fields `ar`.
fn autocrypt_message(ar: &str) -> String {
    message_with(&format!(
        "{ar}{}",
        autocrypt_field("alice@example.org", &alice_pgp().to_vec().unwrap())
    ))
}

/// A SQLite store in `dir` (`keys.sqlite`), with short timeouts.
fn sqlite_store(dir: &std::path::Path) -> Store {
    Store::open(&sqlite_settings(dir)).unwrap()
}

fn sqlite_settings(dir: &std::path::Path) -> StoreSettings {
    StoreSettings {
        url: format!("sqlite://{}", dir.join("keys.sqlite").display()),
        password_file: None,
        ca_file: None,
        connect_timeout: Duration::from_millis(500),
        timeout: Duration::from_millis(500),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
