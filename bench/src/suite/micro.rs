//! Part 5: in-process ns/op of the `flux_bench::micro` workloads.

use std::hint::black_box;
use std::time::Instant;

use flux_bench::micro;

use super::Sizes;
use crate::progress;
use crate::report::{Report, Section, count};

/// ns per call of `f`: the median of 5 batches of `iterations`, after a warm-up batch.
fn ns_per_op(iterations: u64, mut f: impl FnMut()) -> f64 {
    for _ in 0..iterations / 4 {
        f();
    }
    let mut samples: Vec<f64> = (0..5)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iterations {
                f();
            }
            start.elapsed().as_nanos() as f64 / iterations as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[2]
}

pub(crate) fn part5_micro(report: &mut Report, sizes: &Sizes) {
    progress("part 5: in-process ns/op");
    let n = sizes.micro_iterations;
    let mut section = Section::new(
        "5. In-process operations (single thread; careful figures: cargo bench -p flux-bench)",
        &["operation", "ns/op", "criterion bench"],
    );
    for text in ["100/s", "6000 per minute"] {
        let ns = ns_per_op(n, || {
            black_box(micro::parse_rate(black_box(text)));
        });
        section.row(vec![
            format!("Rate::from_str({text:?})"),
            format!("{ns:.0}"),
            format!("rate_parse/{text}"),
        ]);
    }
    for (name, raw, bench) in [
        (
            "Key::new, plain (13 bytes)",
            micro::PLAIN_KEY,
            "key_encode/plain",
        ),
        (
            "Key::new, digested (>64 bytes)",
            micro::LONG_KEY,
            "key_encode/digest",
        ),
    ] {
        let ns = ns_per_op(n, || {
            black_box(micro::encode_key(black_box(raw)));
        });
        section.row(vec![name.to_owned(), format!("{ns:.0}"), bench.to_owned()]);
    }
    let ns = ns_per_op(n, || {
        black_box(micro::encode_ip(black_box(micro::IPV4)));
    });
    section.row(vec![
        "Key::from_ip, IPv4".into(),
        format!("{ns:.0}"),
        "key_encode/ipv4".into(),
    ]);
    for clients in [100_usize, 100_000] {
        let mut decisions = micro::MemoryDecisions::new(clients);
        let ns = ns_per_op(n, || {
            black_box(decisions.decide());
        });
        section.row(vec![
            format!("in-memory flux.check, {} keys", count(clients as f64)),
            format!("{ns:.0}"),
            format!("memory_decision/{clients}_keys"),
        ]);
    }
    let decision = micro::MemoryDecisions::new(1).sample_decision();
    let mut headers = ::http::HeaderMap::new();
    let ns = ns_per_op(n, || micro::render_headers(&decision, &mut headers));
    section.row(vec![
        "Decision::write_headers (RateLimit + RateLimit-Policy)".into(),
        format!("{ns:.0}"),
        "write_headers".into(),
    ]);
    section.note("median of 5 batches; no target is set for this part");
    report.sections.push(section);
}
