//! Part 3: a hot-key flood.

use std::cell::RefCell;
use std::time::Duration;

use super::Sizes;
use crate::Res;
use crate::http::{Group, ServerChild, cpu_probe, load};
use crate::progress;
use crate::redis_server::RedisServer;
use crate::report::{Report, Section, count, micros, ratio};
use crate::stats::Summary;

/// Connections of the flooding client.
const FLOOD_CONNECTIONS: usize = 8;
/// Each flooding connection sends one request per interval: 8 x 2,500/s = 20,000 req/s offered.
const FLOOD_INTERVAL: Duration = Duration::from_micros(400);

/// `INFO commandstats`: (calls of every command but INFO, calls of EVALSHA).
fn command_calls(redis: &RedisServer) -> Option<(u64, u64)> {
    let info = redis.info("commandstats").ok()?;
    let mut all = 0;
    let mut evalsha = 0;
    for (name, value) in &info {
        let Some(command) = name.strip_prefix("cmdstat_") else {
            continue;
        };
        let calls: u64 = value
            .split(',')
            .find_map(|kv| kv.strip_prefix("calls="))
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        if command == "info" {
            continue;
        }
        all += calls;
        if command == "evalsha" {
            evalsha += calls;
        }
    }
    Some((all, evalsha))
}

pub(crate) fn part3_flood(
    report: &mut Report,
    sizes: &Sizes,
    redis: &RedisServer,
    server_workers: usize,
) -> Res<()> {
    progress("part 3: hot-key flood");
    let mut section = Section::new(
        "3. Hot-key flood (Redis backend, limit 100/s per client): 32 well-behaved clients at 50 req/s each; one client flooding at 20,000 req/s over 8 connections",
        &[
            "scenario",
            "good req/s",
            "good p50 us",
            "good p99 us",
            "good p99.9 us",
            "good 429s",
            "flood req/s",
            "flood 429 share",
            "redis cmds/req",
            "flood EVALSHA/s",
            "EVALSHA per flood req",
            "redis CPU",
            "good p99 vs no flood",
        ],
    );
    let url = redis.url();
    let good = Group {
        path: "/flood",
        connections: 32,
        client: |i| format!("good-{i}"),
        fresh: false,
        pace: Some(Duration::from_millis(20)),
    };
    // The flood is offered at a fixed rate, so that both deny-cache settings face the same
    // flood (a closed-loop flooder sends more the faster it is refused).
    let flooder = Group {
        path: "/flood",
        connections: FLOOD_CONNECTIONS,
        client: |_| "flooder".to_owned(),
        fresh: false,
        pace: Some(FLOOD_INTERVAL),
    };
    // (name, server index, flood?): server 0 has the deny cache on (the default), 1 off.
    let scenarios = [
        ("no flood (baseline)", 0, false),
        ("flood, deny cache on (default)", 0, true),
        ("flood, deny cache off", 1, true),
    ];
    let servers = [
        ServerChild::spawn(
            server_workers,
            &[("FLUX_REDIS_URL", url.as_str()), ("FLUX_DENY_CACHE", "on")],
        )?,
        ServerChild::spawn(
            server_workers,
            &[("FLUX_REDIS_URL", url.as_str()), ("FLUX_DENY_CACHE", "off")],
        )?,
    ];
    // Per scenario, over all rounds: good and flood summaries, commands, EVALSHAs, Redis CPU.
    struct Totals {
        good: Option<Summary>,
        flood_ops: u64,
        flood_denied: u64,
        secs: f64,
        commands: f64,
        evalsha: f64,
        redis_cpu: f64,
    }
    let mut totals: Vec<Totals> = scenarios
        .iter()
        .map(|_| Totals {
            good: None,
            flood_ops: 0,
            flood_denied: 0,
            secs: 0.0,
            commands: 0.0,
            evalsha: 0.0,
            redis_cpu: 0.0,
        })
        .collect();
    for round in 0..sizes.flood_rounds {
        for (i, (name, server, flood)) in scenarios.iter().enumerate() {
            progress(&format!("  round {}: {name}", round + 1));
            redis.query(&["FLUSHALL"])?;
            let calls = RefCell::new(Vec::new());
            let mut groups = vec![good.clone()];
            if *flood {
                groups.push(flooder.clone());
            }
            let results = {
                let cpu = cpu_probe(&servers[*server], Some(redis));
                let probe = || {
                    calls.borrow_mut().push(command_calls(redis));
                    cpu()
                };
                load(
                    servers[*server].addr,
                    &groups,
                    sizes.flood.warmup,
                    sizes.flood.measure,
                    &probe,
                )?
            };
            let calls = calls.into_inner();
            let (commands, evalsha) = match (calls.first(), calls.get(1)) {
                (Some(Some(a)), Some(Some(b))) => ((b.0 - a.0) as f64, (b.1 - a.1) as f64),
                _ => (f64::NAN, f64::NAN),
            };
            let mut results = results.into_iter();
            let Some(g) = results.next().map(|r| r.summary) else {
                continue;
            };
            let t = &mut totals[i];
            if let Some(f) = results.next() {
                t.flood_ops += f.summary.ops;
                t.flood_denied += f.summary.denied;
            }
            t.secs += sizes.flood.measure.as_secs_f64();
            t.commands += commands;
            t.evalsha += evalsha;
            t.redis_cpu += g.cpu.redis.unwrap_or(f64::NAN);
            match &mut t.good {
                None => t.good = Some(g),
                Some(all) => {
                    all.hist.merge(&g.hist);
                    all.ops += g.ops;
                    all.secs += g.secs;
                    all.denied += g.denied;
                    all.errors += g.errors;
                }
            }
        }
    }
    drop(servers);
    let mut no_flood_p99 = f64::NAN;
    for ((name, _, flood), t) in scenarios.iter().zip(&totals) {
        let Some(g) = &t.good else { continue };
        if !flood {
            no_flood_p99 = g.p99();
        }
        let requests = (g.ops + t.flood_ops).max(1) as f64;
        // Every well-behaved request is admitted by Redis: one EVALSHA each. The rest is the
        // flood's.
        let flood_evalsha = (t.evalsha - g.ops as f64).max(0.0);
        let only_flood = |text: String| if *flood { text } else { "-".to_owned() };
        section.row(vec![
            (*name).to_owned(),
            count(g.rate()),
            micros(g.p50()),
            micros(g.p99()),
            micros(g.p999()),
            format!("{}", g.denied + g.errors),
            only_flood(count(t.flood_ops as f64 / t.secs)),
            only_flood(format!(
                "{:.1}%",
                t.flood_denied as f64 * 100.0 / t.flood_ops.max(1) as f64
            )),
            format!("{:.3}", t.commands / requests),
            only_flood(count(flood_evalsha / t.secs)),
            only_flood(format!("{:.4}", flood_evalsha / t.flood_ops.max(1) as f64)),
            format!("{:.0}%", t.redis_cpu / t.secs * 100.0),
            ratio(g.p99() / no_flood_p99),
        ]);
    }
    section.note(format!(
        "{} round(s) of {:.1} s per scenario, scenarios interleaved; figures over all rounds",
        sizes.flood_rounds,
        sizes.flood.measure.as_secs_f64()
    ));
    section.note(
        "redis cmds/req = Redis commands (INFO excluded; EVALSHA plus the TIME/GET/SET it runs) per HTTP \
         request of all clients, from INFO commandstats over the measured window; flood EVALSHA = EVALSHA \
         calls less one per well-behaved request; redis CPU = share of one core used by redis-server",
    );
    section.note(
        "well-behaved latency counts from the scheduled send time whenever the previous request made a \
         send late (no coordinated omission); no target is set for this part",
    );
    report.sections.push(section);
    Ok(())
}
