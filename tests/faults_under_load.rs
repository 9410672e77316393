//! One service instance (a separate process) under steady traffic while Redis misbehaves
//! underneath: killed, paused with SIGSTOP, restarted empty, stripped of its scripts, flushed,
//! its connections killed, out of memory under `noeviction`.
//!
//! For every fault and policy: no request fails at the HTTP level or waits much longer than the
//! deadline, and limiting through Redis resumes soon after Redis is back (a fresh client's
//! bucket is written by the script again). Then, by the kind of fault:
//!
//! - an outage (kill, pause, maxmemory): clients get what the policy promises (open: 200,
//!   closed: 503, local: 200 under a per-instance limit that does deny), and the instance logs
//!   the outage once and the recovery once;
//! - a dropped connection (restart empty, `CLIENT KILL`): at most a blip, the requests in
//!   flight get the policy's answer and the breaker opens at most once, briefly;
//! - `SCRIPT FLUSH`, `FLUSHALL`: nothing at all, not one policy answer, nothing logged.
//!
//! Every fault runs as its own test with its own Redis and instance, so they run in parallel.
//! With `--nocapture` each test prints its row, and the last one to finish the whole table.

mod support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::{Conn, Instance, RedisServer, Reply, wait_healthy};

/// The service's deadline for one Redis call (its default, set explicitly).
const DEADLINE: Duration = Duration::from_millis(50);
/// Scheduling slack on a loaded 2-core machine shared with other suites: a fault must cost
/// about the deadline, never the seconds of a TCP or Redis timeout.
const SLACK: Duration = Duration::from_millis(400);
/// How soon after Redis is back its decisions must come back (the breaker probes every 500 ms).
const RESUME_WITHIN: Duration = Duration::from_secs(2);
/// Keep-alive connections of the steady load, one client (`x-client`) each.
const CONNECTIONS: usize = 8;
/// The pause between two requests of one connection: about 8 x 100 requests/s in all, far
/// under `/steady`'s 1000/s per client, so every 429 would be a bug.
const PACE: Duration = Duration::from_millis(10);
/// Load before the fault and after limiting resumed.
const SETTLE: Duration = Duration::from_millis(700);
/// How long a fault that Redis survives is watched.
const WATCH: Duration = Duration::from_secs(1);
/// A request without an answer after this long is recorded as hung (and fails the test).
const HANG: Duration = Duration::from_secs(5);
/// Rows of the table; the test that completes it prints it.
const FAULT_TESTS: usize = 15;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Policy {
    Open,
    Closed,
    Local,
}

impl Policy {
    fn as_str(self) -> &'static str {
        match self {
            Policy::Open => "open",
            Policy::Closed => "closed",
            Policy::Local => "local",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// SIGKILL, 2.2 s down, then a new empty process on the same port.
    Kill,
    /// SIGSTOP for 3 s, then SIGCONT: connections stay open, nothing answers.
    Pause,
    /// SIGKILL and at once a new empty process on the same port.
    Restart,
    /// `SCRIPT FLUSH`: the next EVALSHA gets NOSCRIPT.
    ScriptFlush,
    /// `FLUSHALL`: every bucket is gone.
    FlushAll,
    /// `CLIENT KILL TYPE normal`: the service's connections are closed by the server.
    ClientKill,
    /// `maxmemory` reached under `noeviction` (filled with `DEBUG POPULATE`): every write
    /// fails with OOM, for 2.2 s, until `maxmemory` is raised.
    MaxMemory,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill, 2.2 s, restart",
            Fault::Pause => "SIGSTOP 3 s, SIGCONT",
            Fault::Restart => "restart empty",
            Fault::ScriptFlush => "SCRIPT FLUSH",
            Fault::FlushAll => "FLUSHALL",
            Fault::ClientKill => "CLIENT KILL TYPE normal",
            Fault::MaxMemory => "maxmemory noeviction, 2.2 s",
        }
    }
}

/// How the service should take a fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Redis is gone (or refuses every admission) for seconds: the breaker opens once, the
    /// policy answers, the breaker closes once Redis is back.
    Outage,
    /// The service's connection drops (restart in ~30 ms, CLIENT KILL): the requests in
    /// flight on it fail and get the policy's answer; the breaker may open for up to one
    /// probe interval, never more than once.
    Blip,
    /// Redis keeps its connection and answers: nobody notices.
    Transparent,
}

impl Fault {
    fn kind(self) -> Kind {
        match self {
            Fault::Kill | Fault::Pause | Fault::MaxMemory => Kind::Outage,
            Fault::Restart | Fault::ClientKill => Kind::Blip,
            Fault::ScriptFlush | Fault::FlushAll => Kind::Transparent,
        }
    }
}

/// One request of the steady load.
struct Sample {
    sent: Instant,
    latency: Duration,
    /// The status, or what went wrong at the HTTP level.
    outcome: Result<u16, String>,
    /// Whether the answer carries the RateLimit header fields, i.e. bucket state (from Redis
    /// or the local fallback). Fail-open and fail-closed answers have none.
    has_state: bool,
}

/// `CONNECTIONS` keep-alive connections looping `GET /steady`, each as its own client.
struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<Sample>>>,
}

impl Load {
    fn start(addr: SocketAddr) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..CONNECTIONS)
            .map(|c| {
                let stop = Arc::clone(&stop);
                tokio::spawn(async move {
                    let client = format!("load-{c}");
                    let mut conn = None;
                    let mut samples = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let sent = Instant::now();
                        let reply = tokio::time::timeout(
                            HANG,
                            get(&mut conn, addr, "/steady", client.as_bytes()),
                        )
                        .await
                        .unwrap_or_else(|_| Err(std::io::Error::other("no answer (hung)")));
                        let latency = sent.elapsed();
                        let (outcome, has_state) = match reply {
                            Ok(reply) => (Ok(reply.status), reply.header("ratelimit").is_some()),
                            Err(error) => {
                                // Reconnect for the next request; this one is a failure.
                                conn = None;
                                (Err(error.to_string()), false)
                            }
                        };
                        samples.push(Sample {
                            sent,
                            latency,
                            outcome,
                            has_state,
                        });
                        tokio::time::sleep(PACE).await;
                    }
                    samples
                })
            })
            .collect();
        Load { stop, tasks }
    }

    /// Stops the load; every request it sent, in the order sent.
    async fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        let mut samples = Vec::new();
        for task in self.tasks {
            samples.extend(task.await.expect("load task"));
        }
        samples.sort_by_key(|s| s.sent);
        samples
    }
}

/// `GET path` as client `x-client: client` on `conn`, opening it first if needed.
async fn get(
    conn: &mut Option<Conn>,
    addr: SocketAddr,
    path: &str,
    client: &[u8],
) -> std::io::Result<Reply> {
    if conn.is_none() {
        *conn = Some(Conn::open(addr).await?);
    }
    let Some(open) = conn.as_mut() else {
        unreachable!("opened above");
    };
    open.get(path, &[("x-client", client)]).await
}

/// Whether `key` exists in the Redis at `url` (false if Redis does not answer within 1 s).
async fn exists(url: &str, key: &str) -> bool {
    let check = async {
        let client = redis::Client::open(url)?;
        let mut con = client.get_multiplexed_async_connection().await?;
        redis::cmd("EXISTS")
            .arg(key)
            .query_async::<i64>(&mut con)
            .await
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), check).await,
        Ok(Ok(1))
    )
}

/// Sends `GET /many` as a fresh client (`TAG-n`) every 20 ms until one request is decided by Redis:
/// its bucket key then exists in Redis, written by the script (`/many` keeps a key 12 s).
/// Neither a policy answer nor a local decision writes to Redis. Returns when that answer
/// arrived, or `None` if none came within 10 s.
async fn until_redis_decides(addr: SocketAddr, url: &str, tag: &str) -> Option<Instant> {
    let start = Instant::now();
    let mut conn = None;
    for n in 0.. {
        if start.elapsed() > Duration::from_secs(10) {
            break;
        }
        let client = format!("{tag}-{n}");
        let reply = tokio::time::timeout(HANG, get(&mut conn, addr, "/many", client.as_bytes()))
            .await
            .unwrap_or_else(|_| Err(std::io::Error::other("no answer (hung)")));
        let answered = Instant::now();
        match reply {
            Ok(reply) if reply.status == 200 => {
                if exists(url, &format!("flux:{{{}}}:many", support::stored(client))).await {
                    return Some(answered);
                }
            }
            Ok(_) => {}
            Err(_) => conn = None,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// What `/one` (100/s, burst 50) answered to one client driven over its limit during an
/// outage under the `local` policy.
struct LocalDrive {
    ok: u64,
    limited: u64,
    other: Vec<String>,
    elapsed: Duration,
}

/// Drives `/one` over its limit as one client, 120 requests back to back.
async fn drive_over_limit(addr: SocketAddr, client: &str) -> LocalDrive {
    let mut conn = None;
    let (mut ok, mut limited, mut other) = (0, 0, Vec::new());
    let start = Instant::now();
    for _ in 0..120 {
        match get(&mut conn, addr, "/one", client.as_bytes()).await {
            Ok(reply) if reply.status == 200 => ok += 1,
            Ok(reply) if reply.status == 429 => limited += 1,
            Ok(reply) => other.push(reply.status.to_string()),
            Err(error) => {
                conn = None;
                other.push(error.to_string());
            }
        }
    }
    LocalDrive {
        ok,
        limited,
        other,
        elapsed: start.elapsed(),
    }
}

/// Keeps Redis away for `length`; under `local`, drives `/one` over its limit meanwhile.
async fn outage(addr: SocketAddr, policy: Policy, length: Duration) -> Option<LocalDrive> {
    let start = Instant::now();
    let mut drive = None;
    if policy == Policy::Local {
        // Let the breaker open first: then every decision is the local fallback's.
        tokio::time::sleep(Duration::from_millis(300)).await;
        drive = Some(drive_over_limit(addr, "local-burst").await);
    }
    tokio::time::sleep(length.saturating_sub(start.elapsed())).await;
    drive
}

/// Runs a blocking harness call without holding up the load's tasks on this worker.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// A change of the breaker's state, from the instance's log.
#[derive(Clone, Copy, Debug)]
struct Change {
    at: SystemTime,
    /// The WARN "Redis unavailable ..."; else the INFO "Redis is reachable again ...".
    opened: bool,
    /// An opening caused by missed deadlines ("did not answer within"), not by an error:
    /// on a loaded machine that happens without any fault.
    slow: bool,
}

/// The breaker's state changes in the instance's log, in order.
fn breaker_changes(log: &str) -> Vec<Change> {
    log.lines()
        .filter_map(|line| {
            let opened = if line.contains("WARN") && line.contains("Redis unavailable") {
                true
            } else if line.contains("Redis is reachable again") {
                false
            } else {
                return None;
            };
            let at = log_time(line)
                .unwrap_or_else(|| panic!("a log line without a readable time: {line}"));
            let slow = opened && line.contains("did not answer within");
            Some(Change { at, opened, slow })
        })
        .collect()
}

/// The time a `tracing` log line starts with: `2026-01-31T12:34:56.789012Z` (UTC).
fn log_time(line: &str) -> Option<SystemTime> {
    let stamp = line.split_whitespace().next()?.strip_suffix('Z')?;
    let (date, time) = stamp.split_once('T')?;
    let mut ymd = date.split('-').map(|n| n.parse::<i64>().ok());
    let (y, m, d) = (ymd.next()??, ymd.next()??, ymd.next()??);
    let (hms, fraction) = time.split_once('.').unwrap_or((time, "0"));
    let mut hms = hms.split(':').map(|n| n.parse::<u64>().ok());
    let (h, min, sec) = (hms.next()??, hms.next()??, hms.next()??);
    // Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = u64::try_from(era * 146_097 + doe - 719_468).ok()?;
    let nanos: u64 = format!("{fraction:0<9}").get(..9)?.parse().ok()?;
    Some(
        UNIX_EPOCH
            + Duration::from_secs(days * 86_400 + h * 3_600 + min * 60 + sec)
            + Duration::from_nanos(nanos),
    )
}

/// `HH:MM:SS.ffffff` of `at` in UTC, as the instance's log writes times.
fn utc(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:06}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        since.subsec_micros()
    )
}

/// One row of the table.
struct Row {
    fault: Fault,
    policy: Policy,
    /// Load requests sent from the fault until Redis decided again (at least `WATCH`, for a
    /// fault Redis survives).
    during: usize,
    /// Of those, answers of the failure policy (open: 200 without RateLimit fields;
    /// closed: 503); `None` for `local`, whose answers look like Redis' own.
    policy_answers: Option<usize>,
    /// Of those, the ones that are not the fault's doing: they waited the whole deadline
    /// first, or came while missed deadlines (a slow moment of this machine) had opened the
    /// breaker after the fault.
    timed_out: Option<usize>,
    worst_during: Duration,
    worst: Duration,
    statuses: BTreeMap<u16, usize>,
    /// From Redis back (from the fault, for a fault Redis survives) to its first decision.
    resume: Duration,
    /// Breaker openings and closings the fault caused, as logged.
    warnings: usize,
    recoveries: usize,
    /// Openings after those, caused by missed deadlines alone.
    slow_openings: usize,
}

const TABLE_HEADER: &str = "fault                       | policy | requests during | policy answers (slow) | worst during | worst overall | statuses during  | time to resume | WARN/INFO";

impl Row {
    fn line(&self) -> String {
        let statuses = self
            .statuses
            .iter()
            .map(|(status, n)| format!("{status}x{n}"))
            .collect::<Vec<_>>()
            .join(" ");
        format!(
            "{:<27} | {:<6} | {:>15} | {:>21} | {:>12} | {:>13} | {:<16} | {:>14} | {}/{}{}",
            self.fault.name(),
            self.policy.as_str(),
            self.during,
            match (self.policy_answers, self.timed_out) {
                (Some(n), Some(t)) => format!("{n} ({t})"),
                _ => "n/a".to_owned(),
            },
            format!("{:.1?}", self.worst_during),
            format!("{:.1?}", self.worst),
            statuses,
            format!("{:.0?}", self.resume),
            self.warnings,
            self.recoveries,
            if self.slow_openings > 0 {
                format!(" (+{} slow)", self.slow_openings)
            } else {
                String::new()
            },
        )
    }
}

static ROWS: Mutex<Vec<Row>> = Mutex::new(Vec::new());

fn report(row: Row) {
    println!("{TABLE_HEADER}\n{}", row.line());
    let mut rows = ROWS.lock().unwrap_or_else(|e| e.into_inner());
    rows.push(row);
    if rows.len() == FAULT_TESTS {
        rows.sort_by_key(|r| (r.fault as u8, r.policy as u8));
        let mut table = format!("\nall faults under load:\n{TABLE_HEADER}\n");
        for row in rows.iter() {
            let _ = writeln!(table, "{}", row.line());
        }
        println!("{table}");
    }
}

/// The whole scenario for one fault under one policy; see the module docs for what it proves.
async fn fault_under_load(fault: Fault, policy: Policy) {
    let mut redis = match fault {
        Fault::MaxMemory => RedisServer::builder()
            .config("maxmemory", "16mb")
            .config("maxmemory-policy", "noeviction")
            .start(),
        _ => RedisServer::start(),
    };
    // Instants of the test on the wall clock of the instance's log.
    let (origin, wall) = (Instant::now(), SystemTime::now());
    let wall = move |at: Instant| wall + at.saturating_duration_since(origin);
    let url = redis.url();
    let deadline_ms = DEADLINE.as_millis().to_string();
    let instance = Instance::start(&[
        ("FLUX_REDIS_URL", url.as_str()),
        ("FLUX_FAILURE_POLICY", policy.as_str()),
        ("FLUX_DEADLINE_MS", deadline_ms.as_str()),
    ]);
    wait_healthy(std::slice::from_ref(&instance)).await;
    let addr = instance.addr();

    let load = Load::start(addr);
    tokio::time::sleep(SETTLE).await;
    assert!(
        until_redis_decides(addr, &url, "before").await.is_some(),
        "before the fault, Redis decides"
    );

    let fault_at = Instant::now();
    // When the test began to bring Redis back (a restart, SIGCONT, the limit raised).
    let mut restoring_at = fault_at;
    let mut drive = None;
    match fault {
        Fault::Kill => {
            blocking(|| redis.kill());
            drive = outage(addr, policy, Duration::from_millis(2_200)).await;
            restoring_at = Instant::now();
            blocking(|| redis.restart());
        }
        Fault::Pause => {
            blocking(|| redis.pause());
            drive = outage(addr, policy, Duration::from_secs(3)).await;
            restoring_at = Instant::now();
            blocking(|| redis.resume());
        }
        Fault::Restart => blocking(|| redis.restart()),
        Fault::ScriptFlush => blocking(|| redis.flush_scripts()),
        Fault::FlushAll => {
            assert_eq!(blocking(|| redis.cli(&["FLUSHALL"])), "OK");
        }
        Fault::ClientKill => {
            let killed = blocking(|| redis.cli(&["CLIENT", "KILL", "TYPE", "normal"]));
            let killed: u32 = killed.parse().expect("CLIENT KILL answers a count");
            assert!(killed >= 1, "the service's connection was killed");
        }
        Fault::MaxMemory => {
            blocking(|| {
                let filled = redis.cli(&["DEBUG", "POPULATE", "20000", "fill", "1024"]);
                assert_eq!(filled, "OK");
                let refused = redis
                    .try_cli(&["SET", "probe", "1"])
                    .expect_err("Redis refuses writes over maxmemory");
                assert!(refused.contains("OOM"), "{refused}");
            });
            drive = outage(addr, policy, Duration::from_millis(2_200)).await;
            restoring_at = Instant::now();
            let raised = blocking(|| redis.cli(&["CONFIG", "SET", "maxmemory", "0"]));
            assert_eq!(raised, "OK");
        }
    }
    // When Redis is there again: after a restart, SIGCONT or the raised limit; for a fault
    // that keeps the process up and answering, the fault itself.
    let back_at = match fault {
        Fault::Kill | Fault::Pause | Fault::MaxMemory | Fault::Restart => Instant::now(),
        Fault::ScriptFlush | Fault::FlushAll | Fault::ClientKill => fault_at,
    };
    let resumed_at = until_redis_decides(addr, &url, "after")
        .await
        .unwrap_or_else(|| panic!("{fault:?}/{policy:?}: Redis never decided again"));
    let resume = resumed_at.saturating_duration_since(back_at);
    let window_end = match fault.kind() {
        Kind::Outage => resumed_at,
        Kind::Blip | Kind::Transparent => resumed_at.max(back_at + WATCH),
    };
    tokio::time::sleep((window_end + SETTLE).saturating_duration_since(Instant::now())).await;
    let samples = load.stop().await;

    // The instance outlived everything: it answers, and nothing in it panicked.
    let mut conn = Conn::open(addr).await.expect("the instance still accepts");
    let health = conn
        .get("/health", &[])
        .await
        .expect("the instance answers");
    assert_eq!(health.status, 200);
    let log = instance.log();
    assert!(!log.contains("panicked"), "the instance panicked:\n{log}");

    let during: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.sent >= fault_at && s.sent <= window_end)
        .collect();
    let mut statuses = BTreeMap::new();
    for sample in &during {
        if let Ok(status) = sample.outcome {
            *statuses.entry(status).or_insert(0) += 1;
        }
    }

    // The breaker's changes since the fault: first those the fault caused, then any that a
    // slow moment of this machine caused (3 missed deadlines in a row, no fault needed).
    let changes: Vec<Change> = breaker_changes(&log)
        .into_iter()
        .filter(|c| c.at >= wall(fault_at))
        .collect();
    let caused = match fault.kind() {
        // The outage opens the breaker, Redis' return closes it.
        Kind::Outage => 2.min(changes.len()),
        // A dropped connection may open it, right then.
        Kind::Blip => match changes.first() {
            Some(c) if c.opened && c.at <= wall(back_at + Duration::from_millis(800)) => {
                2.min(changes.len())
            }
            _ => 0,
        },
        Kind::Transparent => 0,
    };
    let (by_fault, later) = changes.split_at(caused);
    // Openings after that: (from, to) on the test's clock, to excuse the policy answers they
    // gave, as long as missed deadlines caused them.
    let slow_spells: Vec<(Instant, Instant)> = later
        .iter()
        .enumerate()
        .filter(|(_, c)| c.opened && c.slow)
        .map(|(i, c)| {
            let since = c.at.duration_since(wall(origin)).unwrap_or_default();
            let until = later
                .get(i + 1)
                .and_then(|next| next.at.duration_since(wall(origin)).ok());
            (
                origin + since.saturating_sub(DEADLINE * 2),
                until.map_or(Instant::now(), |u| origin + u + Duration::from_millis(5)),
            )
        })
        .collect();

    let is_policy_answer = |s: &Sample| match policy {
        Policy::Open => s.outcome == Ok(200) && !s.has_state,
        Policy::Closed => s.outcome == Ok(503),
        Policy::Local => false,
    };
    // A policy answer that waited the whole deadline (Redis, or this machine, too slow), or
    // that came while a slow moment had the breaker open, is not the fault's doing.
    let excused = |s: &Sample| {
        s.latency >= DEADLINE
            || slow_spells
                .iter()
                .any(|&(from, to)| s.sent >= from && s.sent <= to)
    };
    let count = |f: &dyn Fn(&Sample) -> bool| {
        (policy != Policy::Local).then(|| during.iter().filter(|s| f(s)).count())
    };
    let policy_answers = count(&is_policy_answer);
    let excused_answers = count(&|s| is_policy_answer(s) && excused(s));
    let worst = samples.iter().map(|s| s.latency).max().unwrap_or_default();
    let worst_during = during.iter().map(|s| s.latency).max().unwrap_or_default();
    let row = Row {
        fault,
        policy,
        during: during.len(),
        policy_answers,
        timed_out: excused_answers,
        worst_during,
        worst,
        statuses: statuses.clone(),
        resume,
        warnings: by_fault.iter().filter(|c| c.opened).count(),
        recoveries: by_fault.iter().filter(|c| !c.opened).count(),
        slow_openings: later.iter().filter(|c| c.opened).count(),
    };
    let allowed: &[Result<u16, String>] = match policy {
        Policy::Closed => &[Ok(200), Ok(503)],
        Policy::Open | Policy::Local => &[Ok(200)],
    };
    // What the test did and saw, on the clock of the instance's log, for failure messages.
    let show = |s: &&Sample| format!("{} {:?} in {:.1?}", utc(wall(s.sent)), s.outcome, s.latency);
    // Once Redis decides again, no policy answers but excused ones.
    let late: Vec<String> = samples
        .iter()
        .filter(|s| s.sent > resumed_at)
        .filter(|s| (is_policy_answer(s) && !excused(s)) || !allowed.contains(&s.outcome))
        .take(20)
        .map(|s| show(&s))
        .collect();
    let slow: Vec<String> = samples
        .iter()
        .filter(|s| s.latency > DEADLINE + Duration::from_millis(20))
        .take(20)
        .map(|s| show(&s))
        .collect();
    let context = format!(
        "{TABLE_HEADER}\n{}\nfault at {}, restoring at {}, Redis back at {}, Redis decided again at {}\n\
         unexcused policy answers or errors after that: {late:?}\nslow requests: {slow:?}\n\
         --- instance log ---\n{log}",
        row.line(),
        utc(wall(fault_at)),
        utc(wall(restoring_at)),
        utc(wall(back_at)),
        utc(wall(resumed_at)),
    );
    report(row);

    // No request failed at the HTTP level, none hung.
    let failed: Vec<&String> = samples
        .iter()
        .filter_map(|s| s.outcome.as_ref().err())
        .collect();
    assert!(
        failed.is_empty(),
        "{} requests failed: {failed:?}\n{context}",
        failed.len()
    );
    assert!(
        worst < DEADLINE + SLACK,
        "a request took {worst:?} (deadline {DEADLINE:?})\n{context}"
    );
    assert!(
        samples.len() > 200 && !during.is_empty(),
        "the load ran\n{context}"
    );
    // What clients see: the policy's answer, never a 429 (the load is far under its limit)
    // nor any other error status.
    assert!(
        statuses.keys().all(|&s| allowed.contains(&Ok(s))),
        "statuses {statuses:?} beyond {allowed:?}\n{context}"
    );
    // Limiting through Redis is back soon after Redis.
    assert!(
        resume <= RESUME_WITHIN,
        "Redis decided again only {resume:?} after it was back\n{context}"
    );
    // Once Redis decides again, the policy answers no more.
    assert!(
        late.is_empty(),
        "policy answers after the recovery\n{context}"
    );
    // Whatever the breaker did after the fault's own changes, missed deadlines caused it,
    // and each opening was closed again.
    assert!(
        later.iter().all(|c| !c.opened || c.slow),
        "the breaker opened again for an error after the fault\n{context}"
    );
    assert!(
        later
            .chunks(2)
            .all(|pair| pair.len() == 2 && pair[0].opened && !pair[1].opened),
        "openings and recoveries alternate\n{context}"
    );

    match fault.kind() {
        Kind::Outage => {
            if let Some(answers) = policy_answers {
                assert!(
                    answers > 0,
                    "clients saw the `{policy:?}` policy\n{context}"
                );
            }
            // Logged once when the outage began, once when Redis was back: not while it
            // was still away, and not per request.
            assert!(
                by_fault.len() == 2 && by_fault[0].opened && !by_fault[1].opened,
                "the outage is logged once, then the recovery once\n{context}"
            );
            assert!(
                by_fault[1].at >= wall(restoring_at),
                "the recovery is not logged before Redis is back\n{context}"
            );
        }
        Kind::Blip => {
            // At most one opening, closed again; policy answers only around the fault,
            // within one probe interval (500 ms) and some slack.
            assert!(
                by_fault.is_empty()
                    || (by_fault.len() == 2 && by_fault[0].opened && !by_fault[1].opened),
                "at most one opening, closed again\n{context}"
            );
            let blip_end = back_at + Duration::from_millis(800);
            assert!(
                during
                    .iter()
                    .filter(|s| is_policy_answer(s) && !excused(s))
                    .all(|s| s.sent <= blip_end),
                "policy answers only within 800 ms of the fault\n{context}"
            );
        }
        Kind::Transparent => {
            // Not one request failed over to the policy because of the fault.
            assert_eq!(
                policy_answers
                    .zip(excused_answers)
                    .map(|(all, ok)| all - ok),
                Some(0),
                "Redis survives {fault:?}: no request saw the failure policy\n{context}"
            );
            assert!(by_fault.is_empty(), "nothing logged\n{context}");
        }
    }

    if let Some(drive) = drive {
        // `/one` is 100/s with burst 50: the local fallback admits the burst plus what
        // refilled while driving, and denies the rest, on this instance alone.
        let bound = 50 + (100.0 * drive.elapsed.as_secs_f64()) as u64 + 1;
        println!(
            "{} / local: /one driven during the outage: {} admitted, {} limited in {:.0?} (bound {bound})",
            fault.name(),
            drive.ok,
            drive.limited,
            drive.elapsed
        );
        assert!(drive.other.is_empty(), "{:?}\n{context}", drive.other);
        assert!(drive.limited > 0, "per-instance limiting denied\n{context}");
        assert!(
            (50..=bound).contains(&drive.ok),
            "{} admitted, expected the burst of 50 up to {bound}\n{context}",
            drive.ok
        );
        // Those decisions never reached Redis.
        let bucket = format!("flux:{{{}}}:one", support::stored("local-burst"));
        assert!(!exists(&url, &bucket).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_open() {
    fault_under_load(Fault::Kill, Policy::Open).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_closed() {
    fault_under_load(Fault::Kill, Policy::Closed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_local() {
    fault_under_load(Fault::Kill, Policy::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_open() {
    fault_under_load(Fault::Pause, Policy::Open).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_closed() {
    fault_under_load(Fault::Pause, Policy::Closed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_local() {
    fault_under_load(Fault::Pause, Policy::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_empty_open() {
    fault_under_load(Fault::Restart, Policy::Open).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_empty_closed() {
    fault_under_load(Fault::Restart, Policy::Closed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_empty_local() {
    fault_under_load(Fault::Restart, Policy::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maxmemory_open() {
    fault_under_load(Fault::MaxMemory, Policy::Open).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maxmemory_closed() {
    fault_under_load(Fault::MaxMemory, Policy::Closed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maxmemory_local() {
    fault_under_load(Fault::MaxMemory, Policy::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_flush_closed() {
    fault_under_load(Fault::ScriptFlush, Policy::Closed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushall_closed() {
    fault_under_load(Fault::FlushAll, Policy::Closed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_kill_closed() {
    fault_under_load(Fault::ClientKill, Policy::Closed).await;
}
