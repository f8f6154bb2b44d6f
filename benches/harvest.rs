#![allow(missing_docs, reason = "criterion macros generate undocumented items")]
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "benchmark set-up: a failure should stop the run"
)]
//! The parts of harvesting keys from inbound mail (issue 12), one at a
//! time: `screen` (headers only, on the thread answering the MTA, for
//! every inbound message), `examine` (on the blocking pool, for a message
//! that passed the screen: an S/MIME signature verified and its signer's
//! certificate validated, or an Autocrypt header's key validated), and
//! `Store::learn` on SQLite (a new address, and the same key again);
//! beside them, for scale, one certificate decoded by OpenSSL.
//! Results go into BENCHMARKS.md, section "Harvesting keys from signed
//! inbound mail (issue 12)"; milter_load measures the whole.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

#[path = "support/signed.rs"]
mod signed;

use base64::Engine as _;
use criterion::{Criterion, criterion_group, criterion_main};
use sequoia_openpgp::cert::CertBuilder;
use sequoia_openpgp::serialize::SerializeInto;

use autoencrypt_milter::Registry;
use autoencrypt_milter::harvest::{Candidate, Screen, examine, screen};
use autoencrypt_milter::message::{HeaderField, Message};
use autoencrypt_milter::store::{Learned, LearnedKey, Store, StoreSettings};

const AUTHSERV_ID: &str = "mx.example.org";
const FROM: &str = "alice@signers.example";

/// Header fields and body of a raw message.
fn split(raw: &[u8]) -> (Vec<HeaderField>, Vec<u8>) {
    let m = Message::parse(raw);
    (m.headers, raw[m.body_offset..].to_vec())
}

/// An ordinary inbound message's header (no key material): what `screen`
/// sees most of the time.
fn plain_headers() -> Vec<HeaderField> {
    let raw = format!(
        "Received: from mail.signers.example (mail.signers.example [192.0.2.7])\r\n\tby {AUTHSERV_ID} (Postfix) with ESMTPS id 4XYZ; Tue, 01 Dec 2026 10:00:00 +0000\r\n\
         Authentication-Results: {AUTHSERV_ID};\r\n dkim=pass header.d=signers.example header.s=sel;\r\n spf=pass smtp.mailfrom=signers.example\r\n\
         DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=signers.example; s=sel;\r\n h=from:to:subject:date:message-id; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=;\r\n b=AbCdEf1234567890\r\n\
         From: Alice <{FROM}>\r\nTo: <bob@example.org>\r\nSubject: lunch\r\nDate: Tue, 01 Dec 2026 10:00:00 +0000\r\n\
         Message-ID: <1@signers.example>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello\r\n"
    );
    split(raw.as_bytes()).0
}

/// A message with an Autocrypt header under the domain's DKIM signature
/// (a cv25519 key for `FROM`, folded
/// as mail clients write it).
fn autocrypt_message() -> (Vec<HeaderField>, Vec<u8>) {
    let (cert, _) = CertBuilder::general_purpose(Some(format!("Alice <{FROM}>")))
        .generate()
        .unwrap();
    let keydata = base64::engine::general_purpose::STANDARD.encode(cert.to_vec().unwrap());
    let folded: Vec<&str> = keydata
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let raw = format!(
        "Authentication-Results: {AUTHSERV_ID}; dkim=pass header.d=signers.example\r\n\
         DKIM-Signature: v=1; a=rsa-sha256; d=signers.example; s=sel;\r\n \
         h=from:to:subject:date:autocrypt; bh=AAAA; b=AAAA\r\n\
         From: <{FROM}>\r\nTo: <bob@example.org>\r\nSubject: hi\r\nDate: {}\r\n\
         Autocrypt: addr={FROM}; prefer-encrypt=mutual; keydata=\r\n {}\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nHello.\r\n",
        signed::rfc5322_date(SystemTime::now() - Duration::from_secs(60)),
        folded.join("\r\n ")
    );
    split(raw.as_bytes())
}

fn candidate(headers: &[HeaderField]) -> Candidate {
    match screen(headers, AUTHSERV_ID) {
        Screen::Candidate(c) => c,
        other => panic!("not a candidate: {other:?}"),
    }
}

fn bench_screen_examine(c: &mut Criterion) {
    let signer = signed::Signer::new(FROM, 1);
    let date = signed::rfc5322_date(SystemTime::now() - Duration::from_secs(60));
    let (sh, sb) = split(&signed::signed_message(
        &signer,
        "bob@example.org",
        AUTHSERV_ID,
        &date,
        10 * 1024,
    ));
    let (ah, ab) = autocrypt_message();
    let plain = plain_headers();
    assert_eq!(screen(&plain, AUTHSERV_ID), Screen::Nothing);
    let registry = Registry::new();
    let (sc, ac) = (candidate(&sh), candidate(&ah));
    for (c, h, b) in [(&sc, &sh, &sb), (&ac, &ah, &ab)] {
        let r = examine(c, h, b, &registry, SystemTime::now());
        assert!(matches!(r.as_slice(), [Ok(_)]), "examine: {r:?}");
    }

    let mut g = c.benchmark_group("harvest/screen");
    g.bench_function("plain message (nothing)", |b| {
        b.iter(|| screen(black_box(&plain), AUTHSERV_ID))
    });
    g.bench_function("S/MIME signed (candidate)", |b| {
        b.iter(|| screen(black_box(&sh), AUTHSERV_ID))
    });
    g.bench_function("Autocrypt (candidate)", |b| {
        b.iter(|| screen(black_box(&ah), AUTHSERV_ID))
    });
    g.finish();

    // The unit most of `examine` is made of: decoding one certificate
    // (OpenSSL decodes its public key through the provider decoders).
    let der = signer.cert.to_der().unwrap();
    c.bench_function("harvest/reference/X509::from_der (RSA 2048)", |b| {
        b.iter(|| openssl::x509::X509::from_der(black_box(&der)).unwrap())
    });

    let mut g = c.benchmark_group("harvest/examine");
    g.bench_function("S/MIME signed, 10 KiB (verify, validate)", |b| {
        b.iter(|| {
            examine(
                &sc,
                black_box(&sh),
                black_box(&sb),
                &registry,
                SystemTime::now(),
            )
        })
    });
    g.bench_function("Autocrypt header (cv25519, validate)", |b| {
        b.iter(|| examine(&ac, black_box(&ah), &ab, &registry, SystemTime::now()))
    });
    g.finish();
}

fn bench_learn(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&StoreSettings {
        url: format!("sqlite://{}/keys.sqlite", dir.path().display()),
        password_file: None,
        ca_file: None,
        connect_timeout: Duration::from_secs(3),
        timeout: Duration::from_secs(2),
    })
    .unwrap();
    let signer = signed::Signer::new(FROM, 1);
    let date = signed::rfc5322_date(SystemTime::now() - Duration::from_secs(60));
    let (h, b) = split(&signed::signed_message(
        &signer,
        "bob@example.org",
        AUTHSERV_ID,
        &date,
        10 * 1024,
    ));
    let key: LearnedKey = examine(&candidate(&h), &h, &b, &Registry::new(), SystemTime::now())
        .remove(0)
        .unwrap();
    assert_eq!(rt.block_on(store.learn(&key)).unwrap(), Learned::New);

    let mut g = c.benchmark_group("harvest/learn (SQLite)");
    let n = AtomicU64::new(0);
    g.bench_function("new address", |b| {
        b.iter(|| {
            let mut k = key.clone();
            k.address = format!("n{}@signers.example", n.fetch_add(1, Ordering::Relaxed));
            let r = rt.block_on(store.learn(&k)).unwrap();
            assert_eq!(r, Learned::New);
        })
    });
    g.bench_function("same key again (refreshed)", |b| {
        b.iter(|| {
            let r = rt.block_on(store.learn(black_box(&key))).unwrap();
            assert_eq!(r, Learned::Refreshed);
        })
    });
    g.finish();
}

criterion_group!(benches, bench_screen_examine, bench_learn);
criterion_main!(benches);
