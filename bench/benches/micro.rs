//! Criterion micro-benchmarks of Flux's in-process parts: `cargo bench -p flux-bench`.
//!
//! Only `cargo bench` runs them (`cargo test` does not build bench targets). The load-test
//! binary prints quick ns/op figures of the same workloads (`flux_bench::micro`) in its
//! table; this suite gives the careful ones.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use flux_bench::micro::{
    IPV4, LONG_KEY, MemoryDecisions, PLAIN_KEY, RATE_TEXTS, encode_ip, encode_key, parse_rate,
    render_headers,
};
use http::HeaderMap;

fn rate_parsing(c: &mut Criterion) {
    let mut group = c.benchmark_group("rate_parse");
    for text in RATE_TEXTS {
        group.bench_function(text, |b| b.iter(|| parse_rate(black_box(text))));
    }
    group.finish();
}

fn key_encoding(c: &mut Criterion) {
    let mut group = c.benchmark_group("key_encode");
    group.bench_function("plain", |b| b.iter(|| encode_key(black_box(PLAIN_KEY))));
    group.bench_function("digest", |b| b.iter(|| encode_key(black_box(LONG_KEY))));
    group.bench_function("ipv4", |b| b.iter(|| encode_ip(black_box(IPV4))));
    group.finish();
}

fn memory_decision(c: &mut Criterion) {
    let mut group = c.benchmark_group("memory_decision");
    for clients in [100_usize, 100_000] {
        let mut memory = MemoryDecisions::new(clients);
        group.bench_function(format!("{clients}_keys"), |b| b.iter(|| memory.decide()));
    }
    group.finish();
}

fn header_rendering(c: &mut Criterion) {
    let decision = MemoryDecisions::new(1).sample_decision();
    let mut headers = HeaderMap::new();
    c.bench_function("write_headers", |b| {
        b.iter(|| render_headers(black_box(&decision), &mut headers));
    });
}

criterion_group!(
    benches,
    rate_parsing,
    key_encoding,
    memory_decision,
    header_rendering
);
criterion_main!(benches);
