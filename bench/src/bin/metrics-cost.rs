//! `metrics-cost MODE N`: N in-memory decisions, MODE `none` (no metrics recorder) or
//! `prometheus` (a Prometheus recorder on this thread). Run under callgrind by
//! `scripts/metrics-cost`, which subtracts the count of `N = 0`. One decision always runs
//! first, so the baseline holds the one-time costs.

use flux_bench::micro::MemoryDecisions;
use metrics_exporter_prometheus::PrometheusBuilder;

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "none".to_owned());
    let n: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(10_000);
    let mut decisions = MemoryDecisions::new(1_000);
    // One decision first, in both modes and whatever N: the one-time costs (registering the
    // series, the recorder's clock calibration) are then in the N = 0 baseline too.
    let run = |decisions: &mut MemoryDecisions| {
        let mut admitted = u64::from(decisions.decide());
        for _ in 0..n {
            admitted += u64::from(decisions.decide());
        }
        admitted
    };
    let admitted = match mode.as_str() {
        "none" => run(&mut decisions),
        "prometheus" => {
            let recorder = PrometheusBuilder::new().build_recorder();
            metrics::with_local_recorder(&recorder, || run(&mut decisions))
        }
        other => {
            eprintln!("metrics-cost: unknown mode {other:?}: expected none or prometheus");
            std::process::exit(2);
        }
    };
    println!("{admitted} of {n} admitted");
}
