//! Part 4: an outage (Redis frozen, breaker open) against the in-memory backend.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flux::{FailurePolicy, Flux};

use super::Sizes;
use crate::Res;
use crate::driver::{DECISION_LIMIT, Op, client_keys, drive};
use crate::progress;
use crate::redis_server::RedisServer;
use crate::report::{Report, Section, count, micros, ratio};
use crate::stats::Summary;

pub(crate) fn part4_outage(
    report: &mut Report,
    sizes: &Sizes,
    runtime: &tokio::runtime::Runtime,
    redis: &mut RedisServer,
) -> Res<()> {
    progress("part 4: outage (redis-server SIGSTOPped, breaker open)");
    let mut section = Section::new(
        "4. Outage: decisions while redis-server is frozen (SIGSTOP) and the breaker is open, vs the in-memory backend",
        &[
            "limiter",
            "callers",
            "decisions/s",
            "p50 us",
            "p99 us",
            "p99.9 us",
            "max us",
            "decisions/s vs memory",
            "p99 vs memory",
        ],
    );
    let window = sizes.window;
    let keys = client_keys(sizes.random_keys);
    let memory = Flux::builder().memory().build()?;
    let local = Flux::builder()
        .redis(redis.url())
        .failure_policy(FailurePolicy::Local)
        .build()?;
    let open = Flux::builder()
        .redis(redis.url())
        .failure_policy(FailurePolicy::Open)
        .build()?;
    runtime.block_on(async {
        local.ping(Duration::from_secs(5)).await?;
        open.ping(Duration::from_secs(5)).await
    })?;

    let mut baseline = [f64::NAN, f64::NAN];
    let mut baseline_p99 = [f64::NAN, f64::NAN];
    for (c, callers) in [1_usize, 64].into_iter().enumerate() {
        let (s, _) = runtime.block_on(drive(
            &memory,
            Op::Check,
            callers,
            Arc::clone(&keys),
            window,
            None,
        ));
        baseline[c] = s.rate();
        baseline_p99[c] = s.p99();
        section.row(outage_row(
            "in-memory backend",
            callers,
            &s,
            s.rate(),
            s.p99(),
        ));
    }

    redis.pause()?;
    let result = (|| -> Res<()> {
        for (name, flux) in [
            ("Redis down, policy Local", &local),
            ("Redis down, policy Open", &open),
        ] {
            let opened = runtime.block_on(async {
                let begin = Instant::now();
                while !flux.is_degraded() && begin.elapsed() < Duration::from_secs(5) {
                    flux.check("trip", &DECISION_LIMIT).await;
                }
                flux.is_degraded().then(|| begin.elapsed())
            });
            let opened = opened.ok_or("the breaker did not open within 5 s")?;
            progress(&format!(
                "  {name}: breaker open after {:.0} ms",
                opened.as_secs_f64() * 1e3
            ));
            for (c, callers) in [1_usize, 64].into_iter().enumerate() {
                let (s, outcomes) = runtime.block_on(drive(
                    flux,
                    Op::Check,
                    callers,
                    Arc::clone(&keys),
                    window,
                    None,
                ));
                let mut row = outage_row(name, callers, &s, baseline[c], baseline_p99[c]);
                if outcomes.fallback < s.ops {
                    row[0] = format!("{} ({} from Redis?)", row[0], s.ops - outcomes.fallback);
                }
                section.row(row);
            }
        }
        Ok(())
    })();
    redis.resume()?;
    result?;
    // Recovery: how long until the breaker closes again once Redis answers.
    let recovered = runtime.block_on(async {
        let begin = Instant::now();
        while local.is_degraded() && begin.elapsed() < Duration::from_secs(5) {
            local.check("probe", &DECISION_LIMIT).await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (!local.is_degraded()).then(|| begin.elapsed())
    });
    section.note(match recovered {
        Some(d) => format!(
            "after SIGCONT the breaker closed again within {:.0} ms (probe every 500 ms)",
            d.as_secs_f64() * 1e3
        ),
        None => "after SIGCONT the breaker did not close within 5 s".to_owned(),
    });
    section.note(
        "while open, one check every 500 ms is a probe that waits for the 50 ms deadline: it shows in max \
         (and in p99.9 at 1 caller). No numeric target is set for this part",
    );
    report.sections.push(section);
    Ok(())
}

fn outage_row(
    name: &str,
    callers: usize,
    s: &Summary,
    base_rate: f64,
    base_p99: f64,
) -> Vec<String> {
    vec![
        name.to_owned(),
        callers.to_string(),
        count(s.rate()),
        micros(s.p50()),
        micros(s.p99()),
        micros(s.p999()),
        micros(s.hist.max_us()),
        ratio(s.rate() / base_rate),
        ratio(s.p99() / base_p99),
    ]
}
