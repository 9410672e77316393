//! The report's pictures, drawn with the project's one plotting module (`flux_demo::plot`,
//! shared with the demo):
//!
//! * `bench-latency.png`: the latency distribution of `flux.check` against a `PING` on the
//!   same connection (part 1's alternating caller, so both saw the same moments).
//! * `bench-callers.png`: decisions per second against the number of concurrent callers,
//!   `flux.check` beside `redis-benchmark` running the same script (part 1b).

use std::path::{Path, PathBuf};

use flux_demo::plot::{LineChart, LineStyle, Series, XScale};

use crate::Res;
use crate::report::{PictureData, count, micros};
use crate::stats::Hist;

/// The cumulative distribution of `hist`: (latency in µs, % of calls at or below it).
pub(crate) fn cdf(hist: &Hist) -> Vec<(f64, f64)> {
    let mut points = Vec::new();
    // Fine steps through the body, then the tail's landmarks.
    let mut quantiles: Vec<f64> = (1..=396).map(|i| f64::from(i) * 0.0025).collect();
    quantiles.extend([0.9925, 0.995, 0.9975, 0.999]);
    for q in quantiles {
        let us = hist.quantile_us(q);
        if us.is_finite() {
            points.push((us, q * 100.0));
        }
    }
    points
}

/// Draws the pictures the run has data for into `dir`; returns the files written.
pub(crate) fn draw(data: &PictureData, dir: &Path, title_note: &str) -> Res<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    if !data.check_cdf.is_empty() && !data.ping_cdf.is_empty() {
        let path = dir.join("bench-latency.png");
        latency(data, title_note).draw(&path)?;
        written.push(path);
    }
    if !data.callers.is_empty() {
        let path = dir.join("bench-callers.png");
        callers(data, title_note).draw(&path)?;
        written.push(path);
    }
    Ok(written)
}

fn latency(data: &PictureData, title_note: &str) -> LineChart {
    let (pp50, pp99) = data.ping_p50_p99;
    let (cp50, cp99) = data.check_p50_p99;
    // The body and the start of the tail: up to 1.25x the larger p99.
    let right = pp99.max(cp99) * 1.25;
    LineChart {
        title: format!("Latency of one decision against a PING, 1 caller{title_note}"),
        x_label: "latency (µs)".into(),
        y_label: "calls completed within (%)".into(),
        x_scale: XScale::Linear,
        x_range: Some((0.0, right)),
        y_range: Some((0.0, 100.0)),
        series: vec![
            Series {
                label: format!(
                    "PING on Flux's connection (flux.ping): p50 {} µs, p99 {} µs",
                    micros(pp50),
                    micros(pp99)
                ),
                points: data.ping_cdf.clone(),
                markers: false,
                style: LineStyle::Dashed,
            },
            Series {
                label: format!(
                    "flux.check, random keys: p50 {} µs, p99 {} µs",
                    micros(cp50),
                    micros(cp99)
                ),
                points: data.check_cdf.clone(),
                markers: false,
                style: LineStyle::Solid,
            },
        ],
        notes: vec![
            format!(
                "p50 of a check: {:.2}x the PING's. One caller alternates flux.ping and \
                 flux.check, so both see the same moments of the machine.",
                cp50 / pp50
            ),
            "A check is one EVALSHA of lua/gcra.lua (TIME, GET, SET PX) on the same \
             multiplexed connection. The x axis ends at 1.25x the larger p99."
                .into(),
        ],
    }
}

fn callers(data: &PictureData, title_note: &str) -> LineChart {
    let mut series = vec![Series {
        label: "flux.check (concurrent checks share one pipelined connection)".into(),
        points: data
            .callers
            .iter()
            .map(|p| (p.callers as f64, p.flux_rps))
            .collect(),
        markers: true,
        style: LineStyle::Solid,
    }];
    let evalsha: Vec<(f64, f64)> = data
        .callers
        .iter()
        .filter_map(|p| p.evalsha_rps.map(|r| (p.callers as f64, r)))
        .collect();
    if !evalsha.is_empty() {
        series.push(Series {
            label: "redis-benchmark, the same EVALSHA (one connection per caller)".into(),
            points: evalsha,
            markers: true,
            style: LineStyle::Dashed,
        });
    }
    LineChart {
        title: format!("Decisions per second against the number of callers{title_note}"),
        x_label: "concurrent callers".into(),
        y_label: "decisions per second".into(),
        x_scale: XScale::Log2,
        x_range: None,
        y_range: None,
        series,
        notes: vec![
            format!(
                "Random keys of {} clients, nothing denied: every check is a full admission \
                 through Redis.",
                count(data.callers_keys as f64)
            ),
            "Callers, Flux's connection task and redis-server share the machine's cores.".into(),
        ],
    }
}
