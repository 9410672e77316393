//! `flux-demo run`: the load generator and picture of `scripts/demo`.
//!
//! Sends a paced, bounded load (by default 50 req/s for 20 s, from 5 clients on keep-alive
//! connections) to one URL on this machine's loopback (the load balancer), optionally
//! pauses a Redis server (`SIGSTOP`, then `SIGCONT`) for a window of the run, counts the
//! answers per second and per instance (from the balancer's `X-Flux-Upstream` header), prints
//! them against the bound of the limit and draws them (`--png`).
//!
//! It only ever sends to loopback addresses (127.0.0.0/8, ::1, `localhost`): any other URL
//! is refused.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use flux_demo::plot::{GREY, HLine, LIMIT_RED, LineStyle, SecondsChart, Shade};
use http::header::HOST;
use http::{HeaderValue, Request};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::time::Instant;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const USAGE: &str = "usage: flux-demo run --url http://127.0.0.1:PORT/PATH --instance NAME=ADDR [--instance NAME=ADDR ...]
                     [--rate 50] [--clients 5] [--secs 20]
                     [--redis-pid PID --pause 8-13]
                     [--limit 10] [--burst LIMIT] [--policy NAME]
                     [--png FILE] [--csv FILE]

Sends RATE requests per second for SECS seconds (at most 100,000 requests, only to loopback),
pauses the Redis server PID (SIGSTOP) from the first to the second second of --pause, and
prints what each instance admitted against the bound of a LIMIT/s limit with burst BURST.";

/// The response header the balancer adds: the address of the instance that answered.
const UPSTREAM_HEADER: &str = "x-flux-upstream";
/// The longest one request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Bounds of a run, whatever the options say.
const MAX_REQUESTS: u64 = 100_000;
const MAX_SECS: u64 = 600;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    match args.first().map(String::as_str) {
        Some("run") => match Options::parse(&args[1..]) {
            Ok(options) => match run(&options) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("flux-demo: {e}");
                    ExitCode::FAILURE
                }
            },
            Err(e) => {
                eprintln!("flux-demo: {e}\n{USAGE}");
                ExitCode::from(2)
            }
        },
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// What `flux-demo run` was asked to do.
#[derive(Debug)]
struct Options {
    target: Target,
    /// (name, address) of each instance behind the balancer, in order.
    instances: Vec<(String, String)>,
    rate: u64,
    clients: u64,
    secs: u64,
    redis_pid: Option<i32>,
    pause: Option<(f64, f64)>,
    limit: f64,
    burst: f64,
    policy: Option<String>,
    png: Option<PathBuf>,
    csv: Option<PathBuf>,
}

impl Options {
    fn parse(args: &[String]) -> Result<Options, String> {
        let mut url = None;
        let mut options = Options {
            target: Target::default(),
            instances: Vec::new(),
            rate: 50,
            clients: 5,
            secs: 20,
            redis_pid: None,
            pause: None,
            limit: 10.0,
            burst: f64::NAN,
            policy: None,
            png: None,
            csv: None,
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = || {
                args.next()
                    .cloned()
                    .ok_or_else(|| format!("{arg} needs a value"))
            };
            let number = |v: String| -> Result<u64, String> {
                v.parse()
                    .map_err(|_| format!("{arg} takes a whole number, not {v:?}"))
            };
            match arg.as_str() {
                "--url" => url = Some(value()?),
                "--instance" => {
                    let v = value()?;
                    let (name, addr) = v
                        .split_once('=')
                        .ok_or_else(|| format!("--instance takes NAME=ADDR, not {v:?}"))?;
                    options.instances.push((name.to_owned(), addr.to_owned()));
                }
                "--rate" => options.rate = number(value()?)?,
                "--clients" => options.clients = number(value()?)?,
                "--secs" => options.secs = number(value()?)?,
                "--redis-pid" => {
                    let v = value()?;
                    options.redis_pid = Some(
                        v.parse()
                            .map_err(|_| format!("--redis-pid takes a pid, not {v:?}"))?,
                    );
                }
                "--pause" => {
                    let v = value()?;
                    let parsed = v
                        .split_once('-')
                        .and_then(|(a, b)| Some((a.parse::<f64>().ok()?, b.parse::<f64>().ok()?)));
                    match parsed {
                        Some((a, b)) if a >= 0.0 && b > a => options.pause = Some((a, b)),
                        _ => return Err(format!("--pause takes FROM-TO in seconds, not {v:?}")),
                    }
                }
                "--limit" => {
                    let v = value()?;
                    options.limit = v
                        .parse()
                        .map_err(|_| format!("--limit takes requests per second, not {v:?}"))?;
                }
                "--burst" => {
                    let v = value()?;
                    options.burst = v
                        .parse()
                        .map_err(|_| format!("--burst takes a number, not {v:?}"))?;
                }
                "--policy" => options.policy = Some(value()?),
                "--png" => options.png = Some(PathBuf::from(value()?)),
                "--csv" => options.csv = Some(PathBuf::from(value()?)),
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        options.target = Target::parse(&url.ok_or("--url is needed")?)?;
        if options.burst.is_nan() {
            options.burst = options.limit;
        }
        if options.rate == 0 || options.clients == 0 || options.secs == 0 {
            return Err("--rate, --clients and --secs must be above 0".into());
        }
        if options.secs > MAX_SECS || options.rate.saturating_mul(options.secs) > MAX_REQUESTS {
            return Err(format!(
                "a run is bounded: at most {MAX_SECS} s and {MAX_REQUESTS} requests"
            ));
        }
        if let Some((_, to)) = options.pause {
            if to > options.secs as f64 {
                return Err("--pause must end within --secs".into());
            }
            if options.redis_pid.is_none() {
                return Err("--pause needs --redis-pid".into());
            }
        }
        Ok(options)
    }
}

/// A loopback HTTP URL, split.
#[derive(Debug)]
struct Target {
    addr: SocketAddr,
    host: String,
    path: String,
    url: String,
}

impl Default for Target {
    fn default() -> Target {
        Target {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 80)),
            host: String::new(),
            path: "/".into(),
            url: String::new(),
        }
    }
}

impl Target {
    /// `http://HOST[:PORT][/PATH]` where HOST is a loopback address or `localhost`.
    fn parse(url: &str) -> Result<Target, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("only http:// URLs are supported, not {url:?}"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
                h,
                p.parse::<u16>()
                    .map_err(|_| format!("bad port in {url:?}"))?,
            ),
            _ => (authority, 80),
        };
        let ip: IpAddr = match host.trim_start_matches('[').trim_end_matches(']') {
            "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
            literal => literal
                .parse()
                .map_err(|_| format!("the host of {url:?} must be a loopback address"))?,
        };
        if !ip.is_loopback() {
            return Err(format!(
                "flux-demo only sends to this machine's loopback (127.0.0.0/8, ::1, localhost), not {ip}"
            ));
        }
        Ok(Target {
            addr: SocketAddr::new(ip, port),
            host: authority.to_owned(),
            path: path.to_owned(),
            url: url.to_owned(),
        })
    }
}

/// The answer to one request.
#[derive(Debug, Clone)]
struct Answer {
    /// The second of the run it was scheduled in.
    second: usize,
    /// The HTTP status, or `None` when the request failed (connection, timeout).
    status: Option<u16>,
    /// The balancer's `X-Flux-Upstream`: which instance answered.
    upstream: Option<String>,
}

fn run(options: &Options) -> Res<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let answers = runtime.block_on(drive(options));
    // Whatever happened, Redis is never left paused.
    if let Some(pid) = options.redis_pid {
        let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
    }
    let answers = answers?;
    let tally = Tally::new(options, &answers);
    print!("{}", tally.render(options));
    if let Some(path) = &options.csv {
        std::fs::write(path, tally.csv())?;
        println!("csv: {}", path.display());
    }
    if let Some(path) = &options.png {
        tally.chart(options).draw(path)?;
        println!("png: {}", path.display());
    }
    Ok(())
}

async fn drive(options: &Options) -> Res<Vec<Answer>> {
    let total = options.rate * options.secs;
    // Start on a whole millisecond a little ahead, so every client is ready.
    let start = Instant::now() + Duration::from_millis(200);
    let mut clients = Vec::new();
    for client in 0..options.clients {
        let addr = options.target.addr;
        let host = HeaderValue::from_str(&options.target.host)?;
        let path = options.target.path.clone();
        let (rate, count) = (options.rate, options.clients);
        clients.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            let mut sender: Option<http1::SendRequest<Empty<Bytes>>> = None;
            let mut index = client;
            while index < total {
                let at = start + Duration::from_secs_f64(index as f64 / rate as f64);
                tokio::time::sleep_until(at).await;
                let second = (index / rate) as usize;
                let result =
                    tokio::time::timeout(REQUEST_TIMEOUT, request(&mut sender, addr, &host, &path))
                        .await;
                let answer = match result {
                    Ok(Ok((status, upstream))) => Answer {
                        second,
                        status: Some(status),
                        upstream,
                    },
                    _ => {
                        sender = None;
                        Answer {
                            second,
                            status: None,
                            upstream: None,
                        }
                    }
                };
                answers.push(answer);
                index += count;
            }
            answers
        }));
    }
    let pause = match (options.redis_pid, options.pause) {
        (Some(pid), Some((from, to))) => Some(tokio::spawn(async move {
            let pid = Pid::from_raw(pid);
            tokio::time::sleep_until(start + Duration::from_secs_f64(from)).await;
            kill(pid, Signal::SIGSTOP).map_err(|e| format!("SIGSTOP to redis-server: {e}"))?;
            tokio::time::sleep_until(start + Duration::from_secs_f64(to)).await;
            kill(pid, Signal::SIGCONT).map_err(|e| format!("SIGCONT to redis-server: {e}"))?;
            Ok::<(), String>(())
        })),
        _ => None,
    };
    let mut answers = Vec::with_capacity(total as usize);
    for client in clients {
        answers.extend(client.await?);
    }
    if let Some(pause) = pause {
        pause.await??;
    }
    Ok(answers)
}

/// One GET on the client's keep-alive connection (opened first if there is none).
async fn request(
    sender: &mut Option<http1::SendRequest<Empty<Bytes>>>,
    addr: SocketAddr,
    host: &HeaderValue,
    path: &str,
) -> Res<(u16, Option<String>)> {
    if sender.as_ref().is_none_or(|s| s.is_closed()) {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (s, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        *sender = Some(s);
    }
    let s = sender.as_mut().ok_or("no connection")?;
    s.ready().await?;
    let request = Request::get(path)
        .header(HOST, host.clone())
        .body(Empty::<Bytes>::new())?;
    let response = s.send_request(request).await?;
    let status = response.status().as_u16();
    let upstream = response
        .headers()
        .get(UPSTREAM_HEADER)
        .and_then(|v| v.to_str().ok())
        // After a retry nginx lists every upstream it tried: the last one answered.
        .and_then(|v| v.rsplit(", ").next())
        .map(str::to_owned);
    response.into_body().collect().await?;
    Ok((status, upstream))
}

/// Counts by instance and by second.
struct Tally {
    /// Instance names in display order (the configured ones, then any other upstream seen).
    names: Vec<String>,
    /// Admitted (2xx) per instance, per second.
    admitted: Vec<Vec<u64>>,
    denied: Vec<u64>,
    unavailable: Vec<u64>,
    failed: Vec<u64>,
    /// Denied (429) and unavailable (503) per instance.
    denied_by: Vec<u64>,
    unavailable_by: Vec<u64>,
    seconds: usize,
    sent: usize,
}

impl Tally {
    fn new(options: &Options, answers: &[Answer]) -> Tally {
        let seconds = options.secs as usize;
        let mut names: Vec<String> = options.instances.iter().map(|(n, _)| n.clone()).collect();
        let by_addr: BTreeMap<&str, usize> = options
            .instances
            .iter()
            .enumerate()
            .map(|(i, (_, a))| (a.as_str(), i))
            .collect();
        let mut extra: BTreeMap<String, usize> = BTreeMap::new();
        let mut tally = Tally {
            names: Vec::new(),
            admitted: Vec::new(),
            denied: vec![0; seconds],
            unavailable: vec![0; seconds],
            failed: vec![0; seconds],
            denied_by: Vec::new(),
            unavailable_by: Vec::new(),
            seconds,
            sent: answers.len(),
        };
        let mut index_of = |upstream: &Option<String>, names: &mut Vec<String>| -> usize {
            let key = upstream.as_deref().unwrap_or("(no X-Flux-Upstream)");
            if let Some(&i) = by_addr.get(key) {
                return i;
            }
            *extra.entry(key.to_owned()).or_insert_with(|| {
                names.push(key.to_owned());
                names.len() - 1
            })
        };
        let mut rows: Vec<(usize, usize, Option<u16>)> = Vec::new();
        for a in answers {
            let i = match a.status {
                Some(_) => index_of(&a.upstream, &mut names),
                None => usize::MAX,
            };
            rows.push((a.second.min(seconds.saturating_sub(1)), i, a.status));
        }
        tally.admitted = vec![vec![0; seconds]; names.len()];
        tally.denied_by = vec![0; names.len()];
        tally.unavailable_by = vec![0; names.len()];
        for (second, i, status) in rows {
            match status {
                Some(200..=299) => tally.admitted[i][second] += 1,
                Some(429) => {
                    tally.denied[second] += 1;
                    tally.denied_by[i] += 1;
                }
                Some(503) => {
                    tally.unavailable[second] += 1;
                    tally.unavailable_by[i] += 1;
                }
                _ => tally.failed[second] += 1,
            }
        }
        tally.names = names;
        tally
    }

    fn admitted_in(&self, from: f64, to: f64) -> u64 {
        let (a, b) = (from.ceil() as usize, (to.ceil() as usize).min(self.seconds));
        self.admitted
            .iter()
            .map(|v| v[a..b].iter().sum::<u64>())
            .sum()
    }

    /// The phases of the run: before, during and after the pause, and the whole run.
    fn phases(&self, options: &Options) -> Vec<(&'static str, f64, f64)> {
        let end = self.seconds as f64;
        let mut phases = Vec::new();
        if let Some((from, to)) = options.pause {
            if from > 0.0 {
                phases.push(("before the pause", 0.0, from));
            }
            phases.push(("Redis paused", from, to));
            if to < end {
                phases.push(("after the pause", to, end));
            }
        }
        phases.push(("whole run", 0.0, end));
        phases
    }

    fn render(&self, options: &Options) -> String {
        let mut out = String::new();
        let policy = options.policy.as_deref().unwrap_or("-");
        let _ = writeln!(
            out,
            "flux-demo: policy {policy}: {} requests ({} req/s for {} s from {} clients) to {}{}",
            self.sent,
            options.rate,
            options.secs,
            options.clients,
            options.target.url,
            match (options.redis_pid, options.pause) {
                (Some(pid), Some((a, b))) =>
                    format!("; redis-server (pid {pid}) paused from {a} s to {b} s"),
                _ => String::new(),
            }
        );
        let width = self.names.iter().map(String::len).max().unwrap_or(0).max(8);
        let _ = writeln!(
            out,
            "{:<width$}  {:>8}  {:>12}  {:>17}  {:>6}",
            "instance", "admitted", "denied (429)", "unavailable (503)", "failed"
        );
        for (i, name) in self.names.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name:<width$}  {:>8}  {:>12}  {:>17}  {:>6}",
                self.admitted[i].iter().sum::<u64>(),
                self.denied_by[i],
                self.unavailable_by[i],
                "-"
            );
        }
        let total: u64 = self.admitted.iter().flatten().sum();
        let _ = writeln!(
            out,
            "{:<width$}  {total:>8}  {:>12}  {:>17}  {:>6}",
            "total",
            self.denied.iter().sum::<u64>(),
            self.unavailable.iter().sum::<u64>(),
            self.failed.iter().sum::<u64>(),
        );
        let n = options.instances.len().max(1);
        let _ = writeln!(
            out,
            "bound = burst + limit x seconds: what {}/s with burst {} admits at most",
            number(options.limit),
            number(options.burst)
        );
        let _ = writeln!(
            out,
            "{:<16}  {:>9}  {:>8}  {:>21}  {:>24}",
            "phase",
            "seconds",
            "admitted",
            "bound (shared bucket)",
            format!("bound ({n} separate buckets)")
        );
        for (name, from, to) in self.phases(options) {
            let bound = options.burst + options.limit * (to - from);
            let admitted = self.admitted_in(from, to);
            let _ = writeln!(
                out,
                "{name:<16}  {:>9}  {admitted:>8}  {:>21}  {:>24}",
                format!("{}-{}", number(from), number(to)),
                format!(
                    "{} {}",
                    number(bound),
                    if admitted as f64 <= bound {
                        "held"
                    } else {
                        "over"
                    }
                ),
                number(bound * n as f64),
            );
        }
        out
    }

    /// `second,<instance>...,denied,unavailable,failed`: one row per second.
    fn csv(&self) -> String {
        let mut out = String::from("second");
        for name in &self.names {
            let _ = write!(out, ",{name}");
        }
        out.push_str(",denied,unavailable,failed\n");
        for s in 0..self.seconds {
            let _ = write!(out, "{s}");
            for v in &self.admitted {
                let _ = write!(out, ",{}", v[s]);
            }
            let _ = writeln!(
                out,
                ",{},{},{}",
                self.denied[s], self.unavailable[s], self.failed[s]
            );
        }
        out
    }

    fn chart(&self, options: &Options) -> SecondsChart {
        let policy = options.policy.as_deref();
        let n = options.instances.len();
        let total: u64 = self.admitted.iter().flatten().sum();
        let mut lines = vec![
            HLine {
                label: format!(
                    "limit: {}/s, one bucket shared by all",
                    number(options.limit)
                ),
                y: options.limit,
                x: None,
                color: LIMIT_RED,
                style: LineStyle::Solid,
            },
            HLine {
                label: format!("offered: {} req/s", options.rate),
                y: options.rate as f64,
                x: None,
                color: GREY,
                style: LineStyle::Dashed,
            },
        ];
        let mut shades = Vec::new();
        if let Some((from, to)) = options.pause {
            shades.push(Shade {
                label: format!("Redis paused (SIGSTOP), {}-{} s", number(from), number(to)),
                from,
                to,
            });
            if policy == Some("local") && n > 1 {
                lines.push(HLine {
                    label: format!("{n} x limit: instances limiting alone (no fleet)"),
                    y: options.limit * n as f64,
                    x: Some((from, to)),
                    color: LIMIT_RED,
                    style: LineStyle::Dashed,
                });
            }
        }
        let what = match policy {
            Some("open") => "policy open: while Redis is away every request is admitted",
            Some("local") => {
                "policy local: while Redis is away each instance limits to its share (1/N) of the limit"
            }
            Some("closed") => "policy closed: while Redis is away every request is refused (503)",
            _ => "",
        };
        let mut notes = Vec::new();
        if !what.is_empty() {
            notes.push(what.to_owned());
        }
        notes.push(format!(
            "admitted {total} of {} requests; one shared bucket admits at most {} in {} s",
            self.sent,
            number(options.burst + options.limit * self.seconds as f64),
            self.seconds
        ));
        notes.push(format!(
            "{} clients, round robin over {n} instances; bars by the second each request was sent",
            options.clients
        ));
        SecondsChart {
            title: format!(
                "Flux: {} ({}/s) through one balancer and {n} instances{}",
                options.target.path,
                number(options.limit),
                policy.map_or(String::new(), |p| format!(", policy {p}"))
            ),
            x_label: "second of the run".into(),
            y_label: "requests admitted per second".into(),
            stacks: self
                .names
                .iter()
                .zip(&self.admitted)
                .map(|(name, v)| {
                    (
                        format!("admitted by {name}"),
                        v.iter().map(|&c| c as f64).collect(),
                    )
                })
                .collect(),
            lines,
            shades,
            notes,
        }
    }
}

/// `10`, `2.5`: a number without a needless fraction.
fn number(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets() {
        let t = Target::parse("http://127.0.0.1:8080/global").unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(t.path, "/global");
        assert_eq!(t.host, "127.0.0.1:8080");
        assert!(Target::parse("http://localhost:9/").is_ok());
        assert!(Target::parse("http://127.3.2.1").is_ok());
        assert!(Target::parse("http://[::1]:8080/x").is_ok());
        for refused in [
            "http://10.0.0.1:8080/",
            "http://192.168.1.1/",
            "http://example.com/",
            "http://[2001:db8::1]:80/",
            "https://127.0.0.1/",
        ] {
            assert!(Target::parse(refused).is_err(), "{refused} must be refused");
        }
    }

    #[test]
    fn runs_are_bounded() {
        let args = |extra: &[&str]| -> Vec<String> {
            ["--url", "http://127.0.0.1:1/"]
                .iter()
                .chain(extra)
                .map(|s| (*s).to_owned())
                .collect()
        };
        assert!(Options::parse(&args(&[])).is_ok());
        assert!(Options::parse(&args(&["--secs", "601"])).is_err());
        assert!(Options::parse(&args(&["--rate", "10000", "--secs", "11"])).is_err());
        assert!(Options::parse(&args(&["--pause", "8-13"])).is_err());
        let o = Options::parse(&args(&["--redis-pid", "1", "--pause", "8-13"])).unwrap();
        assert_eq!(o.pause, Some((8.0, 13.0)));
        assert_eq!(o.burst, 10.0);
    }
}
