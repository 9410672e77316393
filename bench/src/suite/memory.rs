//! Part 6: memory per active key.

use flux::Flux;

use super::Sizes;
use crate::Res;
use crate::memory;
use crate::progress;
use crate::redis_server::RedisServer;
use crate::report::{Report, Section, count};

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
    Ok(())
}
