//! Part 6: memory per active key; 6b: a key-rotation flood against the in-memory cap.

use flux::Flux;
use flux::config::DEFAULT_MEMORY_MAX_BUCKETS;

use super::Sizes;
use crate::Res;
use crate::memory::{self, Flood};
use crate::progress;
use crate::redis_server::RedisServer;
use crate::report::{Cmp, Report, Section, count};

pub(crate) fn part6_memory(
    report: &mut Report,
    sizes: &Sizes,
    runtime: &tokio::runtime::Runtime,
    flux: &Flux,
    redis: &RedisServer,
) -> Res<()> {
    progress("part 6: memory per active key");
    let mut section = Section::new(
        "6. Memory per active key (limit 10/hour, so every bucket stays alive while counted)",
        &["store", "keys", "bytes/key", "how"],
    );
    let r = runtime.block_on(memory::redis_bytes_per_key(
        flux,
        redis,
        sizes.redis_memory_keys,
    ))?;
    section.row(vec![
        "Redis".into(),
        count(r.keys as f64),
        format!("{:.0}", r.bytes_per_key),
        format!(
            "INFO memory used_memory growth / DBSIZE; keys like {:?}",
            r.sample_key
        ),
    ]);
    let l = memory::local_bytes_per_key(sizes.local_memory_keys)?;
    section.row(vec![
        "in-memory backend".into(),
        count(l.keys as f64),
        format!("{:.0}", l.bytes_per_key),
        "RSS growth (/proc/self/statm) of a fresh process / buckets held".into(),
    ]);
    section.note("no target is set for this part");
    report.sections.push(section);
    redis.query(&["FLUSHALL"])?;
    part6b_rotation(report, sizes)
}

/// 6b: rotating keys against a per-day limit, each flood in a fresh process, without a cap
/// (`usize::MAX`), at the default cap and at a small one.
fn part6b_rotation(report: &mut Report, sizes: &Sizes) -> Res<()> {
    progress("part 6b: key-rotation flood on the in-memory backend");
    let mut section = Section::new(
        "6b. Key-rotation flood, in memory: IPv6 /64s, every key visited twice, one drained client returning every 1,000 visits",
        &[
            "flood",
            "cap",
            "keys",
            "requests",
            "admitted",
            "drained client re-admitted",
            "buckets held",
            "evictions",
            "RSS +MB at 1/3",
            "at 2/3",
            "at end",
            "peak +MB",
            "end / 1/3",
            "target",
        ],
    );
    let mb = |bytes: u64| format!("{:.1}", bytes as f64 / 1e6);
    let runs = [
        (Flood::Light, sizes.flood_keys, None),
        (
            Flood::Light,
            sizes.flood_keys,
            Some(("6b-default", DEFAULT_MEMORY_MAX_BUCKETS)),
        ),
        (
            Flood::Light,
            sizes.flood_keys,
            Some(("6b-small", sizes.small_cap)),
        ),
        (Flood::Draining, sizes.draining_keys, None),
        (
            Flood::Draining,
            sizes.draining_keys,
            Some(("", sizes.small_cap)),
        ),
    ];
    for (flood, keys, cap) in runs {
        let r = memory::rotation_flood(keys, cap.map_or(usize::MAX, |(_, c)| c), flood)?;
        let flat = r.rss[2] as f64 / r.rss[0].max(1) as f64;
        // Flat at the cap: the cap is reached within the first third of the visits (a quick
        // run's few MB move by whole pages: no target there).
        let target = match cap {
            Some((id, cap)) if !id.is_empty() && cap < keys * 2 / 3 && !report.quick => {
                report.target(
                    id,
                    &format!(
                        "6b. RSS growth at the end / after 1/3 of a rotation flood, cap {}",
                        count(cap as f64)
                    ),
                    flat,
                    Cmp::AtMost,
                    1.10,
                );
                report.verdict_of(id)
            }
            _ => String::new(),
        };
        section.row(vec![
            flood.name().into(),
            cap.map_or_else(|| "none".into(), |(_, c)| count(c as f64)),
            count(keys as f64),
            count(r.requests as f64),
            count(r.admitted as f64),
            r.drained_admitted.to_string(),
            count(r.buckets as f64),
            count(r.evictions as f64),
            mb(r.rss[0]),
            mb(r.rss[1]),
            mb(r.rss[2]),
            mb(r.peak),
            format!("{flat:.2}x"),
            target,
        ]);
    }
    section.note(
        "each row is a fresh child process (`flux-bench memflood`); RSS from /proc/self/statm, peak from VmHWM, both as growth over the process before the flood",
    );
    section.note(
        "admitted: the flood's own requests; a key evicted before its second visit finds a fresh bucket (the cost of the cap), as a new key would",
    );
    report.sections.push(section);
    Ok(())
}
