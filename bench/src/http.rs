//! End-to-end HTTP (parts 2 and 3): the axum server, run as a child process of the harness
//! (`flux-bench serve`), and the load generator, a hyper client on keep-alive connections.
//!
//! The global limiter is per process, so each server variant is its own process: without
//! `FLUX_REDIS_URL` its limiter is the in-memory backend, with it Redis.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http::header::HOST;
use http::{HeaderValue, Request};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

use crate::Res;
use crate::stats::{Cpu, Hist, Summary, process_cpu, self_cpu};

/// The handler without a limiter: the baseline.
async fn unlimited() -> &'static str {
    "ok\n"
}

/// The same handler, limited per `x-client` header at a rate no client reaches: what is
/// measured is the limiter's overhead, not denials.
#[flux::rate_limit(rate = "1000000/s", burst = 1000000, key = "header:x-client")]
async fn limited() -> &'static str {
    "ok\n"
}

/// The limit of `/layered`: `limited`'s, applied by a `FluxLayer` instead of the attribute.
static LAYER_LIMIT: flux::Limit =
    flux::Limit::new("layered", flux::Rate::per_second::<1_000_000>());

/// The same handler with a limit a flooding client is far over (100/s per client).
#[flux::rate_limit(rate = "100/s", burst = 100, key = "header:x-client")]
async fn flood() -> &'static str {
    "ok\n"
}

/// The limit of `/fixed`: requests per client per 1-second window, more than any client sends.
const FIXED_LIMIT: u64 = 1_000_000;

/// tower_governor's key: the `x-client` header, as Flux's `key = "header:x-client"` (copied
/// into a `String`, as Flux copies it into its key).
#[derive(Clone)]
struct ClientHeader;

impl tower_governor::key_extractor::KeyExtractor for ClientHeader {
    type Key = String;

    fn extract<T>(&self, req: &Request<T>) -> Result<String, tower_governor::GovernorError> {
        req.headers()
            .get("x-client")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or(tower_governor::GovernorError::UnableToExtractKey)
    }
}

/// The hand-written fixed window that `/fixed` runs, the one of many a tutorial: per request
/// `MULTI; INCR fixed:<client>; EXPIRE fixed:<client> 1 NX; EXEC` on a `ConnectionManager`,
/// 429 once the count passes the limit. (`EXPIRE ... NX` needs Redis 7.) A Redis error
/// admits the request.
async fn fixed_window(
    axum::extract::State(conn): axum::extract::State<redis::aio::ConnectionManager>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let Some(client) = request.headers().get("x-client") else {
        return (http::StatusCode::BAD_REQUEST, "no x-client header\n").into_response();
    };
    let key = [b"fixed:".as_slice(), client.as_bytes()].concat();
    let mut conn = conn;
    let count: redis::RedisResult<(u64,)> = redis::pipe()
        .atomic()
        .cmd("INCR")
        .arg(&key)
        .cmd("EXPIRE")
        .arg(&key)
        .arg(1)
        .arg("NX")
        .ignore()
        .query_async(&mut conn)
        .await;
    match count {
        Ok((n,)) if n > FIXED_LIMIT => {
            (http::StatusCode::TOO_MANY_REQUESTS, "Too Many Requests\n").into_response()
        }
        _ => next.run(request).await,
    }
}

/// `flux-bench serve --addr A [--workers N]`: serves `/unlimited`, `/limited`, `/layered`
/// (the same limit through a `FluxLayer`), `/governor` (the same limit through
/// tower_governor), `/fixed` (a hand-written fixed window on Redis, when
/// `FLUX_BENCH_REDIS_URL` names one), `/flood`, and `/stats` (`local_buckets N
/// governor_entries N`: the keys the process's limiters hold)
/// until its standard input closes (the harness holds the other end, so the server never
/// outlives it). Prints `LISTENING <addr>` once it accepts connections.
pub(crate) fn serve(addr: &str, workers: usize) -> Res<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let flux = flux::Flux::global();
        flux.ping(Duration::from_secs(5)).await?;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let layered = Router::new().route("/layered", get(unlimited)).route_layer(
            flux::FluxLayer::new(LAYER_LIMIT.clone())
                .key_header(http::HeaderName::from_static("x-client")),
        );
        let mut governor =
            tower_governor::governor::GovernorConfigBuilder::default().key_extractor(ClientHeader);
        governor
            .period(Duration::from_micros(1))
            .burst_size(1_000_000);
        let governor = governor
            .finish()
            .ok_or("invalid tower_governor configuration")?;
        let governor_limiter = governor.limiter().clone();
        let governed = Router::new()
            .route("/governor", get(unlimited))
            .route_layer(tower_governor::GovernorLayer::new(governor));
        let stats = move || {
            let entries = governor_limiter.len();
            async move {
                format!(
                    "local_buckets {} governor_entries {entries}\n",
                    flux::Flux::global().local_buckets()
                )
            }
        };
        let mut app = Router::new()
            .route("/unlimited", get(unlimited))
            .route("/limited", get(limited))
            .route("/flood", get(flood))
            .route("/stats", get(stats))
            .merge(layered)
            .merge(governed);
        if let Ok(url) = std::env::var("FLUX_BENCH_REDIS_URL") {
            let conn = redis::aio::ConnectionManager::new(redis::Client::open(url)?).await?;
            app = app.merge(
                Router::new()
                    .route("/fixed", get(unlimited))
                    .route_layer(axum::middleware::from_fn_with_state(conn, fixed_window)),
            );
        }
        let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
            let _ = closed_tx.send(());
        });
        println!("LISTENING {local} {}", flux.describe());
        std::io::stdout().flush()?;
        use axum::serve::ListenerExt;
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = closed_rx.await;
            })
            .await?;
        Ok::<(), Box<dyn std::error::Error>>(())
    })?;
    Ok(())
}

/// A server child process; dropping it closes its stdin, waits briefly, then kills it.
pub(crate) struct ServerChild {
    child: Child,
    stdin: Option<ChildStdin>,
    pub(crate) addr: SocketAddr,
    pub(crate) backend: String,
}

impl ServerChild {
    /// Starts `flux-bench serve` with `env` added (and `FLUX_REDIS_URL` removed unless `env`
    /// sets it).
    pub(crate) fn spawn(workers: usize, env: &[(&str, &str)]) -> Res<ServerChild> {
        let exe = std::env::current_exe()?;
        let mut cmd = Command::new(exe);
        cmd.args(["serve", "--addr", "127.0.0.1:0", "--workers"])
            .arg(workers.to_string())
            .env_remove("FLUX_REDIS_URL")
            .env_remove("FLUX_BENCH_REDIS_URL")
            .env_remove("FLUX_DENY_CACHE")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn()?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next();
            let _ = tx.send(first);
            // Drain whatever else the server prints.
            for _ in lines {}
        });
        let mut server = ServerChild {
            child,
            stdin,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            backend: String::new(),
        };
        let line = match rx.recv_timeout(Duration::from_secs(15)) {
            Ok(Some(Ok(line))) => line,
            other => {
                return Err(format!("the server child did not start: {other:?}").into());
            }
        };
        let rest = line
            .strip_prefix("LISTENING ")
            .ok_or_else(|| format!("unexpected first line from the server: {line}"))?;
        let (addr, backend) = rest.split_once(' ').unwrap_or((rest, ""));
        server.addr = addr.parse()?;
        server.backend = backend.to_owned();
        Ok(server)
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ServerChild {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One group of connections of a load run.
#[derive(Clone)]
pub(crate) struct Group {
    pub(crate) path: &'static str,
    pub(crate) connections: usize,
    /// The `x-client` header of connection `i`.
    pub(crate) client: fn(usize) -> String,
    /// A new `x-client` for every request (`client(i)`, then `-`, the number of the load run
    /// in this process, `-` and the request's number on its connection), as a stream of
    /// clients each seen once; `false`: one per connection.
    pub(crate) fresh: bool,
    /// `Some(interval)`: each connection sends one request per interval (latency measured
    /// from the intended send time, so a stall is not hidden); `None`: back to back.
    pub(crate) pace: Option<Duration>,
}

/// What a group's connections saw in the measured window.
pub(crate) struct GroupResult {
    pub(crate) summary: Summary,
}

/// Drives `groups` against `addr`, each group on its own thread with a current-thread
/// runtime (so a flooding group cannot delay a well-behaved one inside the generator):
/// warm-up, then the measured window. `probe` snapshots CPU at both ends of it.
pub(crate) fn load(
    addr: SocketAddr,
    groups: &[Group],
    warmup: Duration,
    measure: Duration,
    probe: &dyn Fn() -> Cpu,
) -> Res<Vec<GroupResult>> {
    let start = Instant::now() + Duration::from_millis(50);
    let warm_end = start + warmup;
    let end = warm_end + measure;
    std::thread::scope(|scope| {
        let threads: Vec<_> = groups
            .iter()
            .map(|group| scope.spawn(move || run_group(addr, group, start, warm_end, end)))
            .collect();
        sleep_until(warm_end);
        let cpu_start = probe();
        sleep_until(end);
        let cpu_end = probe();
        let cpu = cpu_end.since(&cpu_start);
        let mut results = Vec::new();
        for thread in threads {
            let stats = thread
                .join()
                .map_err(|_| "a load generator thread panicked")??;
            results.push(GroupResult {
                summary: Summary {
                    ops: stats.ops,
                    secs: measure.as_secs_f64(),
                    hist: stats.hist,
                    errors: stats.errors,
                    denied: stats.denied,
                    cpu,
                },
            });
        }
        Ok(results)
    })
}

fn sleep_until(at: Instant) {
    let now = Instant::now();
    if at > now {
        std::thread::sleep(at - now);
    }
}

fn run_group(
    addr: SocketAddr,
    group: &Group,
    start: Instant,
    warm_end: Instant,
    end: Instant,
) -> Result<ConnStats, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let mut handles = Vec::new();
        // Fresh keys are never repeated, not even by the next run against the same server.
        static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for i in 0..group.connections {
            let base = if group.fresh {
                format!("{}-{run}", (group.client)(i))
            } else {
                (group.client)(i)
            };
            let client = HeaderValue::try_from(base).map_err(|e| e.to_string())?;
            // Spread paced connections over their interval.
            let phase = group.pace.map_or(Duration::ZERO, |p| {
                p.mul_f64(i as f64 / group.connections.max(1) as f64)
            });
            handles.push(tokio::spawn(connection(
                addr,
                group.path,
                Clients {
                    base: client,
                    fresh: group.fresh,
                },
                group.pace,
                start + phase,
                warm_end,
                end,
            )));
        }
        let mut total = ConnStats {
            hist: Hist::new(),
            ops: 0,
            ok: 0,
            denied: 0,
            errors: 0,
        };
        for handle in handles {
            let stats = handle.await.map_err(|e| e.to_string())?;
            total.hist.merge(&stats.hist);
            total.ops += stats.ops;
            total.ok += stats.ok;
            total.denied += stats.denied;
            total.errors += stats.errors;
        }
        Ok(total)
    })
}

/// The `x-client` headers of one connection: `base`, or `base-<n>` for its `n`th request.
struct Clients {
    base: HeaderValue,
    fresh: bool,
}

struct ConnStats {
    hist: Hist,
    ops: u64,
    ok: u64,
    denied: u64,
    errors: u64,
}

async fn connection(
    addr: SocketAddr,
    path: &'static str,
    clients: Clients,
    pace: Option<Duration>,
    first: Instant,
    warm_end: Instant,
    end: Instant,
) -> ConnStats {
    let mut stats = ConnStats {
        hist: Hist::new(),
        ops: 0,
        ok: 0,
        denied: 0,
        errors: 0,
    };
    let host = HeaderValue::from_static("127.0.0.1");
    let mut sender: Option<http1::SendRequest<Empty<Bytes>>> = None;
    let mut next = first;
    let mut previous_done = first;
    let mut sent: u64 = 0;
    let Clients {
        base: client,
        fresh,
    } = clients;
    let mut fresh_key = Vec::with_capacity(client.len() + 21);
    loop {
        // Latency counts from the intended send time when the previous request made this one
        // late (a slow server must not hide behind the pacing), and from the actual send
        // time when the generator was only sleeping (the timer's own lateness is not the
        // server's).
        let intended = match pace {
            Some(interval) => {
                let at = next;
                next += interval;
                if previous_done > at {
                    at
                } else {
                    tokio::time::sleep_until(at.into()).await;
                    Instant::now()
                }
            }
            None => Instant::now(),
        };
        if intended >= end || Instant::now() >= end {
            break;
        }
        if sender.is_none() {
            sender = open(addr).await;
            if sender.is_none() {
                stats.errors += u64::from(intended >= warm_end);
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        }
        let Some(s) = sender.as_mut() else { continue };
        let mut request = Request::new(Empty::<Bytes>::new());
        *request.uri_mut() = http::Uri::from_static(path);
        request.headers_mut().insert(HOST, host.clone());
        let key = if fresh {
            use std::io::Write as _;
            fresh_key.clear();
            fresh_key.extend_from_slice(client.as_bytes());
            let _ = write!(fresh_key, "-{sent}");
            HeaderValue::from_bytes(&fresh_key).unwrap_or_else(|_| client.clone())
        } else {
            client.clone()
        };
        sent += 1;
        request.headers_mut().insert("x-client", key);
        let status = match s.send_request(request).await {
            Ok(response) => {
                let status = response.status();
                match response.into_body().collect().await {
                    Ok(_) => Some(status),
                    Err(_) => None,
                }
            }
            Err(_) => None,
        };
        let done = Instant::now();
        previous_done = done;
        if intended >= warm_end {
            stats.ops += 1;
            stats.hist.record(done - intended);
            match status {
                Some(s) if s.is_success() => stats.ok += 1,
                Some(s) if s.as_u16() == 429 => stats.denied += 1,
                _ => stats.errors += 1,
            }
        }
        if status.is_none() {
            sender = None;
        }
    }
    stats
}

async fn open(addr: SocketAddr) -> Option<http1::SendRequest<Empty<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream.set_nodelay(true).ok()?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await.ok()?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Some(sender)
}

/// A CPU probe for a load run: this process, the server child, and Redis if given.
pub(crate) fn cpu_probe<'a>(
    server: &'a ServerChild,
    redis: Option<&'a crate::redis_server::RedisServer>,
) -> impl Fn() -> Cpu + 'a {
    move || Cpu {
        harness: self_cpu(),
        server: process_cpu(server.pid()),
        redis: redis.and_then(|r| r.cpu_seconds().ok()),
    }
}

/// `GET /stats` of a server child: `(local_buckets, governor_entries)`.
pub(crate) fn server_stats(addr: SocketAddr) -> Res<(u64, u64)> {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"GET /stats HTTP/1.0\r\nhost: 127.0.0.1\r\n\r\n")?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    let body = reply.split("\r\n\r\n").nth(1).unwrap_or("");
    let field = |name: &str| -> Option<u64> {
        let mut words = body.split_whitespace();
        words.find(|w| *w == name)?;
        words.next()?.parse().ok()
    };
    match (field("local_buckets"), field("governor_entries")) {
        (Some(local), Some(governor)) => Ok((local, governor)),
        _ => Err(format!("unexpected /stats reply: {reply:?}").into()),
    }
}

/// The resident set of process `pid` (`VmRSS` of `/proc/<pid>/status`), in bytes.
pub(crate) fn rss_bytes(pid: u32) -> Res<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .ok_or("no VmRSS in /proc/<pid>/status")?;
    Ok(kb * 1024)
}
