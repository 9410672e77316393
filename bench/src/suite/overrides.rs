//! Part 8: runtime overrides. What a check costs when overrides exist (in-process ns/op on
//! the in-memory backend, where nothing else hides it), and how long an override takes from
//! `set_override` to being in force on every instance (three limiters on the harness'
//! Redis, each with its own subscription, as separate instances would have).

use std::hint::black_box;
use std::time::{Duration, Instant};

use flux::overrides::{Override, Setting};
use flux::{Flux, Key, Limit, Rate};
use flux_bench::micro::block_ready;

use super::Sizes;
use crate::Res;
use crate::progress;
use crate::redis_server::RedisServer;
use crate::report::{Report, Section, micros};

/// The checked limit: fast enough that nothing is denied.
static CHECKED: Limit = Limit::new("bench::overrides::checked", Rate::per_second::<1_000_000>());

/// How many times an override is set and cleared to time its propagation.
const ROUNDS: usize = 20;

pub(crate) fn part9_overrides(
    report: &mut Report,
    sizes: &Sizes,
    runtime: &tokio::runtime::Runtime,
    redis: &RedisServer,
) -> Res<()> {
    progress("part 8: overrides (check cost, propagation)");
    let mut section = Section::new(
        "9. Runtime overrides: a check's cost with overrides present, and propagation",
        &["measure", "value", "vs no overrides"],
    );
    let dir = std::env::temp_dir().join(format!("flux-bench-overrides-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let cases = [
        ("none", String::new(), CHECKED.burst()),
        (
            "100 overrides of other limits",
            other_limits(100),
            CHECKED.burst(),
        ),
        (
            "an override of the checked limit",
            format!(
                "[[override]]\nlimit = \"{}\"\nrate = \"500000/s\"\n",
                CHECKED.name()
            ),
            500_000,
        ),
    ];
    let mut baseline = None;
    for (i, (name, file, capacity)) in cases.iter().enumerate() {
        let path = dir.join(format!("{i}.toml"));
        std::fs::write(&path, file)?;
        // Built inside the runtime, so that the file's poller runs there and checks (made
        // here without a runtime) find it started.
        let flux = {
            let _inside = runtime.enter();
            Flux::builder().overrides_file(&path).build()?
        };
        if block_ready(flux.check("sample", &CHECKED)).capacity != *capacity {
            return Err(
                format!("overrides {name:?}: the limit in force is not the expected one").into(),
            );
        }
        let ns = check_ns(&flux, sizes.micro_iterations);
        let base = *baseline.get_or_insert(ns);
        section.row(vec![
            format!("in-memory flux.check ns/op, overrides: {name}"),
            format!("{ns:.0}"),
            format!("{:.2}x", ns / base),
        ]);
    }
    let _ = std::fs::remove_dir_all(&dir);

    let (applied, cleared) = runtime.block_on(propagation(redis))?;
    for (what, mut times) in [("set", applied), ("clear", cleared)] {
        times.sort();
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        section.row(vec![
            format!("{what} -> in force on 3 instances, µs, p50 / max of {ROUNDS}"),
            format!(
                "{} / {}",
                micros(us(times[times.len() / 2])),
                micros(us(times[times.len() - 1]))
            ),
            "-".into(),
        ]);
    }
    section.note(
        "check cost: median of 5 batches on one thread; propagation: from set_override's \
         return to the last of 3 limiters applying it (pub/sub), polled with `peek` (one \
         Redis read per limiter per poll, included)",
    );
    report.sections.push(section);
    Ok(())
}

/// A `FLUX_OVERRIDES` file overriding `n` limits other than the checked one.
fn other_limits(n: usize) -> String {
    (0..n)
        .map(|i| format!("[[override]]\nlimit = \"other-{i}\"\nrate = \"5/s\"\n"))
        .collect()
}

/// ns per in-memory check of [`CHECKED`] over 1,000 keys: the median of 5 batches.
fn check_ns(flux: &Flux, iterations: u64) -> f64 {
    let keys: Vec<Key> = (0..1000).map(|i| Key::new(format!("client-{i}"))).collect();
    let mut next = 0;
    let mut one = || {
        next = (next + 7_919) % keys.len();
        black_box(block_ready(flux.check(&keys[next], &CHECKED)).allowed);
    };
    for _ in 0..iterations / 4 {
        one();
    }
    let mut samples: Vec<f64> = (0..5)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iterations {
                one();
            }
            start.elapsed().as_nanos() as f64 / iterations as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[2]
}

/// Times from `set_override` (and `clear_override`) returning to every one of three
/// limiters applying it, `ROUNDS` times each.
async fn propagation(redis: &RedisServer) -> Res<(Vec<Duration>, Vec<Duration>)> {
    let instances: Vec<Flux> = (0..3)
        .map(|_| {
            Flux::builder()
                .redis(redis.url())
                .key_prefix("bench8")
                .build()
        })
        .collect::<Result<_, _>>()?;
    let admin = Flux::builder()
        .redis(redis.url())
        .key_prefix("bench8")
        .build()?;
    let limits = std::slice::from_ref(&CHECKED);
    for flux in &instances {
        flux.sync_overrides().await?;
    }
    // Let every subscription be in place.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (mut applied, mut cleared) = (Vec::new(), Vec::new());
    let setting = Setting::Limited {
        rate: Rate::per_second::<7>(),
        burst: 7,
    };
    for _ in 0..ROUNDS {
        admin
            .set_override(&Override::new(CHECKED.name(), setting))
            .await?;
        applied.push(until(&instances, limits, 7).await?);
        admin.clear_override(CHECKED.name(), None).await?;
        cleared.push(until(&instances, limits, CHECKED.burst()).await?);
    }
    Ok((applied, cleared))
}

/// Waits until every instance's limit in force has capacity `capacity`.
async fn until(instances: &[Flux], limits: &[Limit], capacity: u32) -> Res<Duration> {
    let start = Instant::now();
    loop {
        let mut all = true;
        for flux in instances {
            // `peek` reads the instance's overrides in memory, as a check would.
            all &= flux.peek("probe", limits).await?.capacity == capacity;
        }
        if all {
            return Ok(start.elapsed());
        }
        if start.elapsed() > Duration::from_secs(10) {
            return Err("an override did not reach every instance in 10 s".into());
        }
        tokio::time::sleep(Duration::from_micros(100)).await;
    }
}
