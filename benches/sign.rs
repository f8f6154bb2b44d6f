#![allow(missing_docs, reason = "criterion macros generate undocumented items")]
#![allow(
    clippy::unwrap_used,
    reason = "benchmark set-up: a failure should stop the run"
)]
//! Signing + encryption beside encryption alone (issue 15): the whole
//! end-of-message step for one recipient — compose the inner entity,
//! (make it transport-safe and sign it,) encrypt, render — for 10 KB and
//! 1 MB messages with an 8-bit text part (re-encoded for signing) and a
//! base64 attachment. S/MIME signs with RSA-2048 / SHA-256 and encrypts
//! with AES-256-CBC to RSA-2048; OpenPGP signs with Ed25519 and encrypts
//! to Cv25519. Results and the machine go into BENCHMARKS.md.

use std::hint::black_box;
use std::sync::Arc;

mod support;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use autoencrypt_milter::backend::{EncryptOptions, Method, Recipient, Registry};
use autoencrypt_milter::message::Message;
use autoencrypt_milter::pipeline::{Prepared, prepare, prepare_signed};
use autoencrypt_milter::signing::{OpenPgpSigner, Signer, SmimeSigner};

use sequoia_openpgp::serialize::SerializeInto;

const ADDR: &str = "bench@example.org";

fn message(size: usize) -> Vec<u8> {
    let mut m = String::from(
        "From: a@example.net\nTo: bench@example.org\nSubject: bench\nMIME-Version: 1.0\n\
         Content-Type: multipart/mixed; boundary=\"b\"\n\n--b\nContent-Type: text/plain; \
         charset=utf-8\nContent-Transfer-Encoding: 8bit\n\nGrüße, \nFrom the bench.\n\
         --b\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n",
    );
    let line = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAx\n";
    while m.len() + line.len() + 8 < size {
        m.push_str(line);
    }
    m.push_str("--b--\n");
    m.into_bytes()
}

fn smime_signer() -> Signer {
    let key = openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
    let cert = support::smime_cert_for_key(&key, "sender@example.net");
    Signer::Smime(Arc::new(SmimeSigner {
        cert,
        chain: Vec::new(),
        key,
    }))
}

fn openpgp_signer() -> Signer {
    let (cert, _) =
        sequoia_openpgp::cert::CertBuilder::general_purpose(Some("<sender@example.net>"))
            .generate()
            .unwrap();
    Signer::OpenPgp(Arc::new(OpenPgpSigner { cert }))
}

fn body_len(p: Prepared) -> usize {
    let Prepared::Encrypted { entity, .. } = p else {
        unreachable!("bench message is plain")
    };
    let mut out = Vec::new();
    entity
        .body
        .write_to(autoencrypt_milter::message::Eol::Crlf, &mut out)
        .unwrap();
    out.len()
}

fn bench(c: &mut Criterion) {
    let registry = Registry::new();
    let smime_to = [support::recipient(
        &registry,
        Method::Smime,
        support::smime_cert(ADDR).to_der().unwrap(),
        ADDR,
    )];
    let pgp_to = [support::recipient(
        &registry,
        Method::OpenPgp,
        support::openpgp_cert(ADDR).to_vec().unwrap(),
        ADDR,
    )];
    let cases: [(&str, Method, &[Recipient], Signer); 2] = [
        ("smime", Method::Smime, &smime_to, smime_signer()),
        ("openpgp", Method::OpenPgp, &pgp_to, openpgp_signer()),
    ];
    let opts = EncryptOptions {
        protect_headers: true,
        ..EncryptOptions::default()
    };
    for (size_name, size) in [("10KB", 10 * 1024), ("1MB", 1024 * 1024)] {
        let raw = message(size);
        let msg = Message::parse(&raw);
        let body = &raw[msg.body_offset..];
        let mut group = c.benchmark_group(format!("sign/{size_name}"));
        group.throughput(Throughput::Bytes(raw.len() as u64));
        for (name, method, to, signer) in &cases {
            let backend = registry.get(*method);
            group.bench_function(format!("{name}-encrypt"), |b| {
                b.iter(|| {
                    black_box(body_len(
                        prepare(&msg.headers, black_box(body), backend, to, &opts).unwrap(),
                    ))
                })
            });
            group.bench_function(format!("{name}-sign-encrypt"), |b| {
                b.iter(|| {
                    black_box(body_len(
                        prepare_signed(&msg.headers, black_box(body), backend, to, &opts, signer)
                            .unwrap(),
                    ))
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
