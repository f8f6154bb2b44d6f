#![allow(missing_docs, reason = "criterion macros generate undocumented items")]
//! Parsers that run on the thread answering the MTA, fed the hostile
//! header fields of issue 9 item 4: one `Content-Type` of 100,000
//! parameters (889 KB), 40 `Content-Disposition` fields of 11,800
//! parameters each (classified as at end of message), the same as RFC 2231
//! sections of one name, and unfolding a field of a million folds. Each
//! must be linear in its input; results go into BENCHMARKS.md.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use autoencrypt_milter::message::{ContentType, classify};
use autoencrypt_milter::message::{HeaderField, Message};

fn params(prefix: &str, n: usize, param: impl Fn(usize) -> String) -> String {
    let mut v = String::from(prefix);
    for i in 0..n {
        v.push_str(&param(i));
    }
    v
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    group.sample_size(20);

    let ct = params("text/plain", 100_000, |i| format!(";p{i}=v"));
    group.throughput(Throughput::Bytes(ct.len() as u64));
    group.bench_function("content_type_100k_params_889KB", |b| {
        b.iter(|| black_box(ContentType::parse(black_box(&ct))))
    });

    // As the milter sees them: fields with their leading space, then
    // classified at end of message (every disposition is parsed).
    let mut headers = vec![HeaderField::new("Content-Type", " text/plain")];
    let d = params(" attachment", 11_800, |i| format!("; p{i}=v"));
    for _ in 0..40 {
        headers.push(HeaderField::new("Content-Disposition", d.as_bytes()));
    }
    group.throughput(Throughput::Bytes(40 * d.len() as u64));
    group.bench_function("classify_40_dispositions_of_11800_params", |b| {
        b.iter(|| black_box(classify(black_box(&headers), b"body\r\n")))
    });

    let sections = params("attachment", 11_800, |i| format!("; filename*{i}*=x%41"));
    group.throughput(Throughput::Bytes(sections.len() as u64));
    group.bench_function("disposition_11800_rfc2231_sections", |b| {
        b.iter(|| black_box(ContentType::parse_disposition(black_box(&sections))))
    });

    let folded = HeaderField::new("Subject", b"\r\n v".repeat(1_000_000));
    group.throughput(Throughput::Bytes(folded.value.len() as u64));
    group.bench_function("unfold_1M_folds", |b| {
        b.iter(|| black_box(black_box(&folded).unfolded()))
    });

    let raw = format!("Content-Type: {ct}\r\nSubject: x\r\n\r\nbody\r\n");
    group.throughput(Throughput::Bytes(raw.len() as u64));
    group.bench_function("message_parse_889KB_field", |b| {
        b.iter(|| black_box(Message::parse(black_box(raw.as_bytes()))))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
