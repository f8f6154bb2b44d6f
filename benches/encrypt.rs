#![allow(missing_docs, reason = "criterion macros generate undocumented items")]
#![allow(
    clippy::unwrap_used,
    reason = "benchmark set-up: a failure should stop the run"
)]
//! Encryption throughput of the whole end-of-message step (classify,
//! inner entity, encrypt, render the new body) for 10 KB, 1 MB and 25 MB
//! messages, per method. Results and the machine go into BENCHMARKS.md.

use std::hint::black_box;
use std::time::Duration;

mod support;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use autoencrypt_milter::backend::{EncryptOptions, Method, Recipient, Registry, SmimeCipher};
use autoencrypt_milter::message::Message;
use autoencrypt_milter::message::apply_edits;
use autoencrypt_milter::pipeline::{Prepared, prepare};

use sequoia_openpgp::serialize::SerializeInto;

const ADDR: &str = "bench@example.org";

fn smime_cert() -> Vec<u8> {
    support::smime_cert(ADDR).to_der().unwrap()
}

fn openpgp_cert() -> Vec<u8> {
    support::openpgp_cert(ADDR).to_vec().unwrap()
}

fn recipient(registry: &Registry, method: Method, data: Vec<u8>) -> Recipient {
    support::recipient(registry, method, data, ADDR)
}

/// A realistic message: a short text part and a base64 attachment, `size`
/// bytes in all, LF line endings (as in a file).
fn message(size: usize) -> Vec<u8> {
    let mut m = String::from(
        "From: a@example.net\nTo: bench@example.org\nSubject: bench\nMIME-Version: 1.0\n\
         Content-Type: multipart/mixed; boundary=\"b\"\n\n--b\nContent-Type: text/plain\n\nhello\n\
         --b\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n",
    );
    let line = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAx\n";
    while m.len() + line.len() + 8 < size {
        m.push_str(line);
    }
    m.push_str("--b--\n");
    m.into_bytes()
}

fn run_once(
    raw: &[u8],
    registry: &Registry,
    method: Method,
    to: &[Recipient],
    opts: &EncryptOptions,
) -> usize {
    let msg = Message::parse(raw);
    let prepared = prepare(
        &msg.headers,
        &raw[msg.body_offset..],
        registry.get(method),
        to,
        opts,
    )
    .unwrap();
    let Prepared::Encrypted { edits, entity } = prepared else {
        unreachable!("bench message is plain")
    };
    let mut headers = msg.headers;
    apply_edits(&mut headers, &edits, msg.eol);
    let mut counter = CountingSink(0);
    entity.body.write_to(msg.eol, &mut counter).unwrap();
    counter.0
}

struct CountingSink(usize);
impl std::io::Write for CountingSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn bench(c: &mut Criterion) {
    let registry = Registry::new();
    let smime = [recipient(&registry, Method::Smime, smime_cert())];
    let pgp = [recipient(&registry, Method::OpenPgp, openpgp_cert())];
    let cases: [(&str, Method, &[Recipient], SmimeCipher); 3] = [
        (
            "smime-aes256cbc",
            Method::Smime,
            &smime,
            SmimeCipher::Aes256Cbc,
        ),
        (
            "smime-aes256gcm",
            Method::Smime,
            &smime,
            SmimeCipher::Aes256Gcm,
        ),
        (
            "openpgp-cv25519",
            Method::OpenPgp,
            &pgp,
            SmimeCipher::Aes256Cbc,
        ),
    ];
    for (size_name, size) in [
        ("10KB", 10 * 1024),
        ("1MB", 1024 * 1024),
        ("25MB", 25 * 1024 * 1024),
    ] {
        let raw = message(size);
        let mut group = c.benchmark_group(format!("encrypt/{size_name}"));
        group.throughput(Throughput::Bytes(raw.len() as u64));
        if size > 1024 * 1024 {
            group
                .sample_size(10)
                .measurement_time(Duration::from_secs(10));
        }
        for (name, method, to, cipher) in cases {
            let opts = EncryptOptions {
                smime_cipher: cipher,
                ..EncryptOptions::default()
            };
            group.bench_function(name, |b| {
                b.iter(|| black_box(run_once(black_box(&raw), &registry, method, to, &opts)))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
