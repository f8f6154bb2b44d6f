#![allow(missing_docs, reason = "criterion macros generate undocumented items")]
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "benchmark set-up: a failure should stop the run"
)]
//! Throughput of the full ciphertext verification (issue 9.1) over large
//! genuine ciphertext: a 25 MB message encrypted by the project's own
//! backends (S/MIME enveloped and authEnveloped, PGP/MIME), then
//! `message::verify::verify` over the encrypted message as it would stream
//! from the spool. Results go into BENCHMARKS.md.

use std::hint::black_box;
use std::time::Duration;

mod support;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use autoencrypt_milter::backend::{EncryptOptions, Method, Recipient, Registry, SmimeCipher};
use autoencrypt_milter::message::{Eol, Message};
use autoencrypt_milter::message::{Verification, apply_edits, verify, write_header};
use autoencrypt_milter::pipeline::{Prepared, prepare};

use sequoia_openpgp::serialize::SerializeInto;

const ADDR: &str = "bench@example.org";

fn recipient(registry: &Registry, method: Method, data: Vec<u8>) -> Recipient {
    support::recipient(registry, method, data, ADDR)
}

fn plain(size: usize) -> Vec<u8> {
    let mut m = String::from(
        "From: a@example.net\r\nTo: bench@example.org\r\nSubject: bench\r\nMIME-Version: 1.0\r\n\
         Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n",
    );
    let line = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAx\r\n";
    while m.len() + line.len() < size {
        m.push_str(line);
    }
    m.into_bytes()
}

/// The whole encrypted message, CRLF, as the milter would hand it on.
fn encrypted(
    raw: &[u8],
    registry: &Registry,
    method: Method,
    to: &[Recipient],
    cipher: SmimeCipher,
) -> Vec<u8> {
    let msg = Message::parse(raw);
    let opts = EncryptOptions {
        smime_cipher: cipher,
        ..EncryptOptions::default()
    };
    let prepared = prepare(
        &msg.headers,
        &raw[msg.body_offset..],
        registry.get(method),
        to,
        &opts,
    )
    .unwrap();
    let Prepared::Encrypted { edits, entity } = prepared else {
        panic!("bench message is plain")
    };
    let mut headers = msg.headers;
    apply_edits(&mut headers, &edits, Eol::Crlf);
    let mut out = Vec::new();
    write_header(&headers, Eol::Crlf, &mut out).unwrap();
    entity.body.write_to(Eol::Crlf, &mut out).unwrap();
    out
}

fn bench(c: &mut Criterion) {
    let registry = Registry::new();
    let smime = [recipient(
        &registry,
        Method::Smime,
        support::smime_cert(ADDR).to_der().unwrap(),
    )];
    let pgp = [recipient(
        &registry,
        Method::OpenPgp,
        support::openpgp_cert(ADDR).to_vec().unwrap(),
    )];
    let raw = plain(25 * 1024 * 1024);
    let cases: [(&str, Method, &[Recipient], SmimeCipher); 3] = [
        (
            "smime-enveloped",
            Method::Smime,
            &smime,
            SmimeCipher::Aes256Cbc,
        ),
        (
            "smime-authenveloped",
            Method::Smime,
            &smime,
            SmimeCipher::Aes256Gcm,
        ),
        ("pgp-mime", Method::OpenPgp, &pgp, SmimeCipher::Aes256Cbc),
    ];
    let mut group = c.benchmark_group("verify/25MB");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    for (name, method, to, cipher) in cases {
        let message = encrypted(&raw, &registry, method, to, cipher);
        let parsed = Message::parse(&message);
        let body = &message[parsed.body_offset..];
        assert!(
            matches!(
                verify(&parsed.headers, &mut &body[..]),
                Verification::Verified(_)
            ),
            "{name}: the backend's output must verify"
        );
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| black_box(verify(&parsed.headers, &mut black_box(body))))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
