//! The harness's own `redis-server`: a child process on a free loopback port, with its own
//! temporary directory, killed when the guard drops (also when the harness panics).

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

use crate::Res;

/// How long a new server may take to answer `PING`.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) struct RedisServer {
    child: Child,
    port: u16,
    paused: bool,
    /// `redis.conf`, the log; removed after `Drop` killed the process.
    dir: TempDir,
}

impl RedisServer {
    /// Starts `redis-server` (no persistence) on a free port of 127.0.0.1 and waits until it
    /// answers `PING`.
    pub(crate) fn start() -> Res<RedisServer> {
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
                .local_addr()?
                .port();
            let dir = tempfile::Builder::new()
                .prefix("flux-bench-redis-")
                .tempdir()?;
            let conf = dir.path().join("redis.conf");
            let log = dir.path().join("redis.log");
            let mut file = File::create(&conf)?;
            writeln!(file, "port {port}")?;
            writeln!(file, "bind 127.0.0.1")?;
            writeln!(file, "save \"\"")?;
            writeln!(file, "appendonly no")?;
            writeln!(file, "dir {}", dir.path().display())?;
            writeln!(file, "logfile {}", log.display())?;
            drop(file);
            let child = Command::new("redis-server")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot run redis-server (is it on PATH?): {e}"))?;
            let mut server = RedisServer {
                child,
                port,
                paused: false,
                dir,
            };
            match server.wait_ready() {
                Ok(()) => return Ok(server),
                Err(e) => last_error = format!("{e}\n{}", read_log(&log)),
            }
        }
        Err(format!("redis-server did not start: {last_error}").into())
    }

    fn wait_ready(&mut self) -> Res<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(format!("redis-server exited with {status}").into());
            }
            if raw_ping(self.port).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("redis-server did not answer PING within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A blocking connection for `INFO`, `FLUSHALL`, `SCRIPT LOAD` (never while paused).
    pub(crate) fn connection(&self) -> Res<redis::Connection> {
        let client = redis::Client::open(self.url())?;
        Ok(client.get_connection_with_timeout(Duration::from_secs(5))?)
    }

    /// Runs one command and returns its reply as text.
    pub(crate) fn query(&self, args: &[&str]) -> Res<String> {
        let mut con = self.connection()?;
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        Ok(cmd.query::<String>(&mut con)?)
    }

    /// `INFO section` parsed into `field -> value`.
    pub(crate) fn info(&self, section: &str) -> Res<Vec<(String, String)>> {
        let text = self.query(&["INFO", section])?;
        Ok(text
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect())
    }

    /// Seconds of CPU Redis has used (user + system), from `INFO cpu` (µs precision).
    pub(crate) fn cpu_seconds(&self) -> Res<f64> {
        let info = self.info("cpu")?;
        let field = |name: &str| -> f64 {
            info.iter()
                .find(|(k, _)| k == name)
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0.0)
        };
        Ok(field("used_cpu_user") + field("used_cpu_sys"))
    }

    /// Freezes the server (`SIGSTOP`): connections stay open, nothing is answered.
    pub(crate) fn pause(&mut self) -> Res<()> {
        signal::kill(pid_of(&self.child), Signal::SIGSTOP)?;
        self.paused = true;
        Ok(())
    }

    /// Lets a paused server go on (`SIGCONT`).
    pub(crate) fn resume(&mut self) -> Res<()> {
        signal::kill(pid_of(&self.child), Signal::SIGCONT)?;
        self.paused = false;
        Ok(())
    }

    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if self.paused {
            let _ = signal::kill(pid_of(&self.child), Signal::SIGCONT);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pid_of(child: &Child) -> Pid {
    Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX))
}

fn read_log(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut file) = File::open(path) {
        let _ = file.read_to_string(&mut text);
    }
    text
}

/// One `PING` on a fresh blocking socket.
fn raw_ping(port: u16) -> Res<()> {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
    stream.set_read_timeout(Some(Duration::from_secs(1)))?;
    stream.write_all(b"PING\r\n")?;
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply)?;
    if &reply == b"+PONG\r\n" {
        Ok(())
    } else {
        Err(format!(
            "unexpected PING reply {:?}",
            String::from_utf8_lossy(&reply)
        )
        .into())
    }
}

/// `PING` on one kept-open blocking socket: the floor of any Redis call on this machine.
pub(crate) struct RawPing(TcpStream);

impl RawPing {
    pub(crate) fn connect(port: u16) -> Res<RawPing> {
        let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(RawPing(stream))
    }

    /// One round trip.
    pub(crate) fn ping(&mut self) -> std::io::Result<()> {
        let mut reply = [0u8; 7];
        self.0.write_all(b"*1\r\n$4\r\nPING\r\n")?;
        self.0.read_exact(&mut reply)
    }
}
