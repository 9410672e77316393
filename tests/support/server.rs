//! One throwaway `redis-server` process: [`RedisServer`] and its options, [`RedisServerBuilder`].

use std::env;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

/// The environment variable naming the `redis-server` binary to run (default: `redis-server` on
/// `PATH`), such as the Redis 6.2 that `scripts/redis-6.2` installs.
pub(super) const REDIS_SERVER_VAR: &str = "FLUX_TEST_REDIS_SERVER";
/// The panic message when `redis-server` is not on `PATH` and [`REDIS_SERVER_VAR`] is unset.
const REDIS_SERVER_MISSING: &str = "redis-server not found on PATH (and FLUX_TEST_REDIS_SERVER, \
    which names another binary, is unset). Install it (Debian/Ubuntu: \
    `sudo apt-get install -y redis-server`) or run `scripts/test`, which installs it.";
/// How to fix a [`REDIS_SERVER_VAR`] that names no runnable `redis-server`.
const REDIS_SERVER_VAR_FIX: &str = "Set FLUX_TEST_REDIS_SERVER to the absolute path of a \
    redis-server binary (for Redis 6.2: `FLUX_TEST_REDIS_SERVER=$(scripts/redis-6.2)`), or unset \
    it to run redis-server from PATH.";
/// The panic message when `redis-cli` cannot be run.
const REDIS_CLI_MISSING: &str = "redis-cli not found on PATH. Install it (Debian/Ubuntu: \
    `sudo apt-get install -y redis-server`) or run `scripts/test`, which installs it.";

/// How long a new process may take to answer `PING`.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How many fresh ports [`RedisServerBuilder::start`] tries when another process takes the
/// chosen one between our probe and the server's `bind`.
const START_ATTEMPTS: u32 = 5;
/// How long [`RedisServer::restart`] keeps trying to bind the old port again.
const REBIND_TIMEOUT: Duration = Duration::from_secs(10);
/// The pause between two readiness probes.
const POLL_INTERVAL: Duration = Duration::from_millis(25);
/// What Redis adds to a node's port to get its cluster bus port.
const CLUSTER_BUS_OFFSET: u16 = 10_000;
/// `cluster-node-timeout` of cluster nodes, in milliseconds: short, so failover tests are quick.
const CLUSTER_NODE_TIMEOUT_MS: u32 = 2_000;

/// The server's own log (`logfile`).
const LOG_FILE: &str = "redis.log";
/// The process's stdout and stderr: where errors go before the log file is open.
const STDIO_FILE: &str = "stdio.log";
/// The generated configuration file.
const CONFIG_FILE: &str = "redis.conf";

/// Options for a [`RedisServer`]: a password and extra configuration directives.
///
/// ```ignore
/// let server = RedisServer::builder()
///     .password("s3cret")
///     .config("maxmemory", "2mb")
///     .config("maxmemory-policy", "noeviction")
///     .start();
/// ```
#[derive(Debug, Clone, Default)]
pub(crate) struct RedisServerBuilder {
    /// `requirepass`, if any.
    password: Option<String>,
    /// Extra lines of `redis.conf`, written after the harness's own.
    directives: Vec<String>,
    /// Whether the server is a Redis Cluster node (see [`super::RedisCluster`]).
    cluster_node: bool,
}

impl RedisServerBuilder {
    /// Requires clients to authenticate with `password` (`requirepass`).
    ///
    /// [`RedisServer::cli`] and the readiness check then authenticate by themselves;
    /// [`RedisServer::url`] stays without a password, see [`RedisServer::url_with_password`].
    pub(crate) fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// Adds the configuration directive `name value` to `redis.conf`, as written: quote a value
    /// that has spaces (`config("save", "\"60 1\"")`). Later directives override earlier ones,
    /// including the harness's defaults.
    pub(crate) fn config(mut self, name: &str, value: &str) -> Self {
        self.directives.push(format!("{name} {value}"));
        self
    }

    /// Makes the server a Redis Cluster node: its port is chosen so that the cluster bus port
    /// (port + 10000) is free too, and it runs with `cluster-enabled yes`.
    pub(super) fn cluster_node(mut self) -> Self {
        self.cluster_node = true;
        self
    }

    /// Starts the server on a free loopback port and waits until it answers `PING`.
    ///
    /// # Panics
    ///
    /// If `redis-server` cannot be run (see [`REDIS_SERVER_VAR`]), or the server does not come
    /// up (with its log).
    pub(crate) fn start(self) -> RedisServer {
        let dir = tempfile::Builder::new()
            .prefix("flux-redis-")
            .tempdir()
            .expect("create a temporary directory for redis-server");
        let mut server = RedisServer {
            child: None,
            port: 0,
            paused: false,
            options: self,
            dir,
        };
        for _ in 0..START_ATTEMPTS {
            server.port = free_port(server.options.cluster_node);
            match server.launch() {
                Launch::Ready => return server,
                // Another process took the port first: try another one.
                Launch::PortTaken => {}
            }
        }
        panic!(
            "redis-server found its port taken {START_ATTEMPTS} times in a row\n{}",
            server.log()
        );
    }
}

/// A `redis-server` child process on `127.0.0.1`, with its own temporary directory and log.
///
/// It keeps no data on disk (`save ""`, `appendonly no`). Dropping the handle kills the process,
/// also when the test panics.
#[derive(Debug)]
pub(crate) struct RedisServer {
    /// The running process; `None` once killed.
    child: Option<Child>,
    /// The TCP port, kept across [`RedisServer::restart`].
    port: u16,
    /// Whether the process was stopped with `SIGSTOP` by [`RedisServer::pause`].
    paused: bool,
    /// How the server was configured, to start it again the same way.
    options: RedisServerBuilder,
    /// Holds `redis.conf`, the logs and, for a cluster node, `nodes-PORT.conf`. Declared last so
    /// that it is removed after [`Drop`] has killed the process.
    dir: TempDir,
}

/// How one launch of the process ended.
enum Launch {
    /// It answers `PING`.
    Ready,
    /// It exited because its port (or cluster bus port) was in use.
    PortTaken,
}

impl RedisServer {
    /// Starts a server with the default options; see [`RedisServerBuilder::start`].
    pub(crate) fn start() -> Self {
        Self::builder().start()
    }

    /// Options for a server with a password or extra configuration.
    pub(crate) fn builder() -> RedisServerBuilder {
        RedisServerBuilder::default()
    }

    /// The TCP port on `127.0.0.1`.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`, as `redis-cli --cluster` wants it.
    pub(crate) fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `redis://127.0.0.1:PORT/`, without a password even if one is set.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A limiter on this server, its keys under `prefix`, with a deadline generous enough for a
    /// loaded CI machine: for tests about the algorithm, not about outages.
    pub(crate) fn flux(&self, prefix: &str) -> flux::Flux {
        flux::Flux::builder()
            .redis(self.url())
            .key_prefix(prefix)
            .deadline(Duration::from_secs(5))
            .build()
            .expect("valid configuration")
    }

    /// The Redis key of `client`'s bucket of the limit `name` under `prefix`, as a limiter
    /// with the default key secret stores it (client keys are digests at rest).
    pub(crate) fn bucket(&self, prefix: &str, client: &str, name: &str) -> String {
        format!("{prefix}:{{{}}}:{name}", crate::support::stored(client))
    }

    /// The Redis key of `client`'s slot set of the concurrency limit `name` under `prefix`,
    /// as [`RedisServer::bucket`] names buckets.
    pub(crate) fn slot_set(&self, prefix: &str, client: &str, name: &str) -> String {
        format!(
            "{prefix}:{{{}}}#slots:{name}",
            crate::support::stored(client)
        )
    }

    /// `redis://:PASSWORD@127.0.0.1:PORT/`, the password percent-encoded. Any password can be
    /// given, to test a wrong one too.
    pub(crate) fn url_with_password(&self, password: &str) -> String {
        format!(
            "redis://:{}@127.0.0.1:{}/",
            percent_encode(password),
            self.port
        )
    }

    /// The password set with [`RedisServerBuilder::password`], if any.
    pub(crate) fn password(&self) -> Option<&str> {
        self.options.password.as_deref()
    }

    /// The directory holding the configuration, the logs and any file the server writes.
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The process id.
    ///
    /// # Panics
    ///
    /// If the server was killed (and not restarted).
    pub(crate) fn pid(&self) -> u32 {
        let Some(child) = &self.child else {
            panic!("redis-server on port {} is not running", self.port);
        };
        child.id()
    }

    /// Whether the process is alive (a paused process is). Notices a process that died by
    /// itself.
    pub(crate) fn is_running(&mut self) -> bool {
        let Some(child) = &mut self.child else {
            return false;
        };
        matches!(child.try_wait(), Ok(None))
    }

    /// Whether the harness neither killed nor paused the process, so it should answer. Unlike
    /// [`RedisServer::is_running`], does not look at the process itself.
    pub(crate) fn is_up(&self) -> bool {
        self.child.is_some() && !self.paused
    }

    /// Whether [`RedisServer::pause`] stopped the process.
    pub(crate) fn is_paused(&self) -> bool {
        self.paused
    }

    /// Freezes the process with `SIGSTOP`: connections still open (the kernel accepts them) but
    /// nothing is answered until [`RedisServer::resume`]. Returns once the process is stopped.
    pub(crate) fn pause(&mut self) {
        self.signal(Signal::SIGSTOP);
        self.paused = true;
        self.wait_for_state(|state| state == 'T' || state == 't');
    }

    /// Lets a paused process go on with `SIGCONT`; it then answers what it was sent meanwhile.
    pub(crate) fn resume(&mut self) {
        self.signal(Signal::SIGCONT);
        self.paused = false;
        self.wait_for_state(|state| state != 'T' && state != 't');
    }

    /// Kills the process with `SIGKILL` and reaps it, as a crash would. Does nothing if it is
    /// already killed. The port and the directory stay reserved for [`RedisServer::restart`].
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.paused {
                // SIGKILL ends a stopped process too; resuming first keeps its state plain.
                let _ = signal::kill(pid_of(&child), Signal::SIGCONT);
            }
            // Fails only if the process is already reaped, which is the goal anyway.
            let _ = child.kill();
            let _ = child.wait();
        }
        self.paused = false;
    }

    /// Starts a new process on the same port with the same options and an empty data set (a
    /// cluster node keeps its `nodes-PORT.conf`, so it rejoins its cluster). Kills the current
    /// process first if it is still running, and waits until the new one answers `PING`.
    ///
    /// # Panics
    ///
    /// If the port stays taken for 10 s or the server does not come up (with its log).
    pub(crate) fn restart(&mut self) {
        self.kill();
        // Nothing is persisted by default, but a test may have run SAVE.
        let _ = fs::remove_file(self.dir.path().join("dump.rdb"));
        let _ = fs::remove_dir_all(self.dir.path().join("appendonlydir"));
        let deadline = Instant::now() + REBIND_TIMEOUT;
        loop {
            match self.launch() {
                Launch::Ready => return,
                Launch::PortTaken if Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(100));
                }
                Launch::PortTaken => panic!(
                    "redis-server could not bind port {} again within {REBIND_TIMEOUT:?}\n{}",
                    self.port,
                    self.log()
                ),
            }
        }
    }

    /// Runs `redis-cli -p PORT -e ARGS...` (authenticating if a password is set) and returns its
    /// output, trimmed. Replies come in `redis-cli`'s raw form: one line per array element.
    ///
    /// # Panics
    ///
    /// If the command fails or Redis answers with an error (with `redis-cli`'s output), and
    /// right away if the server is paused, where the call would hang.
    pub(crate) fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args).unwrap_or_else(|error| panic!("{error}"))
    }

    /// Like [`RedisServer::cli`], but an error reply or a failed connection is returned as a
    /// message instead of a panic.
    pub(crate) fn try_cli(&self, args: &[&str]) -> Result<String, String> {
        assert!(
            !self.paused,
            "redis-server on port {} is paused; a redis-cli call would hang: resume() it first",
            self.port
        );
        let port = self.port.to_string();
        let mut cli_args = vec!["-h", "127.0.0.1", "-p", &port, "-e"];
        if let Some(password) = &self.options.password {
            cli_args.extend(["-a", password, "--no-auth-warning"]);
        }
        cli_args.extend(args);
        redis_cli(&cli_args)
    }

    /// Removes all Lua scripts from the script cache (`SCRIPT FLUSH`), so the next `EVALSHA`
    /// gets `NOSCRIPT`.
    pub(crate) fn flush_scripts(&self) {
        let reply = self.cli(&["SCRIPT", "FLUSH"]);
        assert_eq!(reply, "OK", "SCRIPT FLUSH on port {}", self.port);
    }

    /// The number of keys in database 0 (`DBSIZE`).
    pub(crate) fn dbsize(&self) -> u64 {
        let reply = self.cli(&["DBSIZE"]);
        reply
            .parse()
            .unwrap_or_else(|_| panic!("DBSIZE on port {} answered {reply:?}", self.port))
    }

    /// `INFO section` as text: `# Section` headers and `name:value` lines.
    pub(crate) fn info(&self, section: &str) -> String {
        self.cli(&["INFO", section])
    }

    /// How many times `command` (any case; `"script|load"` for a subcommand) ran since the start
    /// or the last [`RedisServer::reset_stats`], from `INFO commandstats`; 0 if never.
    ///
    /// Redis 6 counts subcommands under their command only: there `"script|load"` counts every
    /// `SCRIPT` call (`LOAD`, `EXISTS`, `FLUSH`, ...), the closest it reports.
    pub(crate) fn command_calls(&self, command: &str) -> u64 {
        self.command_stat(command, "calls")
    }

    /// How many calls of `command` failed while running (an error reply such as `NOSCRIPT`),
    /// from the `failed_calls` field of `INFO commandstats` (Redis 6.2 and later); 0 if never
    /// called. Subcommands as in [`RedisServer::command_calls`].
    pub(crate) fn failed_calls(&self, command: &str) -> u64 {
        self.command_stat(command, "failed_calls")
    }

    /// The field `field` of `command`'s line in `INFO commandstats`; 0 if it never ran.
    fn command_stat(&self, command: &str, field: &str) -> u64 {
        let mut command = command.to_ascii_lowercase();
        if server_binary().version.0 < 7
            && let Some((parent, _)) = command.split_once('|')
        {
            command = parent.to_owned();
        }
        let prefix = format!("cmdstat_{command}:");
        let info = self.info("commandstats");
        let Some(stats) = info.lines().find_map(|line| line.strip_prefix(&prefix)) else {
            return 0;
        };
        stats
            .split(',')
            .find_map(|pair| pair.strip_prefix(field)?.strip_prefix('='))
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| {
                panic!("INFO commandstats line {prefix}{stats} has no {field} (Redis 6.2+ has)")
            })
    }

    /// Resets the counters of `INFO` (`CONFIG RESETSTAT`), so
    /// [`RedisServer::command_calls`] counts from zero.
    pub(crate) fn reset_stats(&self) {
        let reply = self.cli(&["CONFIG", "RESETSTAT"]);
        assert_eq!(reply, "OK", "CONFIG RESETSTAT on port {}", self.port);
    }

    /// The server's log so far, over all its (re)starts, followed by anything it printed to
    /// stdout or stderr (where configuration errors go).
    pub(crate) fn log(&self) -> String {
        let log_path = self.dir.path().join(LOG_FILE);
        let mut log = format!(
            "--- redis-server log ({}) ---\n{}",
            log_path.display(),
            read_from(&log_path, 0)
        );
        let stdio = read_from(&self.dir.path().join(STDIO_FILE), 0);
        if !stdio.trim().is_empty() {
            log.push_str("--- redis-server stdout/stderr ---\n");
            log.push_str(&stdio);
        }
        log
    }

    /// Spawns the process on `self.port` and waits until it answers `PING`.
    ///
    /// # Panics
    ///
    /// If it exits for another reason than a taken port, or does not answer in time.
    fn launch(&mut self) -> Launch {
        let log_path = self.dir.path().join(LOG_FILE);
        let stdio_path = self.dir.path().join(STDIO_FILE);
        let marks = (file_len(&log_path), file_len(&stdio_path));
        let config = self.write_config();

        let stdout = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&stdio_path)
            .expect("open the stdio log of redis-server");
        let stderr = stdout
            .try_clone()
            .expect("duplicate the stdio log handle of redis-server");
        let binary = server_binary();
        let child = Command::new(&binary.program)
            .arg(&config)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot run {}: {error}", binary.origin));
        self.child = Some(child);
        self.paused = false;

        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = &mut self.child
                && let Some(status) = child.try_wait().expect("poll the redis-server process")
            {
                self.child = None;
                let output = read_from(&log_path, marks.0) + &read_from(&stdio_path, marks.1);
                if output.contains("Address already in use") {
                    return Launch::PortTaken;
                }
                panic!(
                    "redis-server on port {} exited ({status}) before answering PING{}\n{}",
                    self.port,
                    self.config_hint(&output),
                    self.log()
                );
            }
            match self.probe() {
                Ok(()) => return Launch::Ready,
                Err(error) if Instant::now() >= deadline => {
                    self.kill();
                    panic!(
                        "redis-server on port {} did not answer PING within {READY_TIMEOUT:?} \
                         (last error: {error})\n{}",
                        self.port,
                        self.log()
                    );
                }
                Err(_) => thread::sleep(POLL_INTERVAL),
            }
        }
    }

    /// Checks that our process (not another one that took the port) answers `PING`.
    fn probe(&self) -> Result<(), String> {
        let url = match &self.options.password {
            Some(password) => self.url_with_password(password),
            None => self.url(),
        };
        let client = redis::Client::open(url).map_err(|error| error.to_string())?;
        let mut con = client
            .get_connection_with_timeout(Duration::from_millis(500))
            .map_err(|error| error.to_string())?;
        con.set_read_timeout(Some(Duration::from_secs(1)))
            .map_err(|error| error.to_string())?;
        let pong: String = redis::cmd("PING")
            .query(&mut con)
            .map_err(|error| error.to_string())?;
        if pong != "PONG" {
            return Err(format!("PING answered {pong:?}"));
        }
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query(&mut con)
            .map_err(|error| error.to_string())?;
        let pid = info_field(&info, "process_id").and_then(|pid| pid.parse::<u32>().ok());
        if pid != Some(self.pid()) {
            return Err(format!("port {} is served by process {pid:?}", self.port));
        }
        Ok(())
    }

    /// Writes `redis.conf` for the current port and returns its path.
    fn write_config(&self) -> PathBuf {
        let dir = self.dir.path();
        let mut lines = vec![
            format!("port {}", self.port),
            "bind 127.0.0.1".to_owned(),
            "daemonize no".to_owned(),
            "save \"\"".to_owned(),
            "appendonly no".to_owned(),
            format!("dir {}", quote(&dir.display().to_string())),
            format!(
                "logfile {}",
                quote(&dir.join(LOG_FILE).display().to_string())
            ),
        ];
        if server_binary().version.0 >= 7 {
            // Lets tests use DEBUG SLEEP and friends. Redis 6 has no such directive (and refuses
            // it): there DEBUG is always allowed.
            lines.push("enable-debug-command local".to_owned());
        }
        if let Some(password) = &self.options.password {
            lines.push(format!("requirepass {}", quote(password)));
        }
        if self.options.cluster_node {
            let nodes_file = dir.join(format!("nodes-{}.conf", self.port));
            lines.push("cluster-enabled yes".to_owned());
            lines.push(format!(
                "cluster-config-file {}",
                quote(&nodes_file.display().to_string())
            ));
            lines.push(format!("cluster-node-timeout {CLUSTER_NODE_TIMEOUT_MS}"));
        }
        lines.extend(self.options.directives.iter().cloned());
        let path = dir.join(CONFIG_FILE);
        fs::write(&path, lines.join("\n") + "\n").expect("write redis.conf");
        path
    }

    /// A note for a server that refused its configuration because the binary lacks TLS, or
    /// nothing.
    fn config_hint(&self, output: &str) -> String {
        let wants_tls = self
            .options
            .directives
            .iter()
            .any(|directive| directive.starts_with("tls-"));
        if wants_tls && output.contains("Bad directive") {
            format!(
                "\nIts `tls-*` directives were refused: {} was built without TLS. Use one built \
                 with BUILD_TLS=yes (`FLUX_TEST_REDIS_SERVER=$(scripts/redis-6.2)` is one, and \
                 so is Debian's redis-server).",
                server_binary().origin
            )
        } else {
            String::new()
        }
    }

    /// Sends `signal` to the process.
    fn signal(&self, signal: Signal) {
        let Some(child) = &self.child else {
            panic!("redis-server on port {} is not running", self.port);
        };
        signal::kill(pid_of(child), signal).unwrap_or_else(|error| {
            panic!(
                "sending {signal} to redis-server (pid {}): {error}",
                child.id()
            )
        });
    }

    /// Waits (up to 2 s) until the process's state letter in `/proc/PID/stat` satisfies `done`.
    /// Returns at once where `/proc` is missing.
    fn wait_for_state(&self, done: impl Fn(char) -> bool) {
        let stat_path = format!("/proc/{}/stat", self.pid());
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            let Ok(stat) = fs::read_to_string(&stat_path) else {
                return;
            };
            // `PID (COMM) STATE ...`; COMM may hold spaces and parentheses.
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next());
            if state.is_none_or(&done) {
                return;
            }
            thread::sleep(Duration::from_millis(1));
        }
        panic!(
            "redis-server (pid {}) did not change state in time",
            self.pid()
        );
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The `redis-server` binary that the harness runs.
#[derive(Debug)]
pub(super) struct ServerBinary {
    /// What to pass to [`Command::new`]: `redis-server`, or the absolute path from
    /// [`REDIS_SERVER_VAR`].
    pub(super) program: OsString,
    /// The program and where it came from, for messages.
    pub(super) origin: String,
    /// `(major, minor, patch)` from `redis-server --version`.
    pub(super) version: (u32, u32, u32),
}

/// The `redis-server` binary to run: the one [`REDIS_SERVER_VAR`] names, else `redis-server` on
/// `PATH`. The first call runs `--version` once, and says on stderr which Redis the tests use
/// (straight to the process's stderr, past the test harness's capture, so a CI log shows it
/// once per test binary).
///
/// # Panics
///
/// If the binary is missing or not runnable, or does not tell a Redis version; the message
/// names [`REDIS_SERVER_VAR`] and how to fix it.
pub(super) fn server_binary() -> &'static ServerBinary {
    static BINARY: OnceLock<ServerBinary> = OnceLock::new();
    BINARY.get_or_init(|| {
        let binary = find_server_binary();
        // A failed write to stderr is no reason to fail a test.
        let _ = writeln!(
            std::io::stderr(),
            "flux-tests: redis-server {}.{}.{}: {}",
            binary.version.0,
            binary.version.1,
            binary.version.2,
            binary.origin
        );
        binary
    })
}

/// Resolves [`REDIS_SERVER_VAR`] and asks the binary for its version; see [`server_binary`].
fn find_server_binary() -> ServerBinary {
    let named = env::var_os(REDIS_SERVER_VAR).filter(|value| !value.is_empty());
    let Some(value) = named else {
        let origin = "`redis-server` on PATH".to_owned();
        return ask_version(OsString::from("redis-server"), origin, REDIS_SERVER_MISSING);
    };
    let path = Path::new(&value);
    // A relative path would be resolved against each server's own directory (its working
    // directory), so resolve it here, against the test's (cargo runs tests in the package's
    // directory, tests/). A bare name is looked up on PATH.
    let program = if path.is_absolute() || path.components().count() > 1 {
        fs::canonicalize(path)
            .unwrap_or_else(|error| {
                panic!(
                    "{REDIS_SERVER_VAR}={} names no usable file ({error}). {REDIS_SERVER_VAR_FIX}",
                    path.display()
                )
            })
            .into_os_string()
    } else {
        value.clone()
    };
    let origin = format!(
        "`{}` (from {REDIS_SERVER_VAR})",
        Path::new(&program).display()
    );
    let place = if Path::new(&program).is_absolute() {
        ""
    } else {
        " on PATH"
    };
    let missing = format!("{origin} not found{place}. {REDIS_SERVER_VAR_FIX}");
    ask_version(program, origin, &missing)
}

/// Runs `program --version`; panics with `missing` if there is no such program.
fn ask_version(program: OsString, origin: String, missing: &str) -> ServerBinary {
    let output = match Command::new(&program)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
    {
        Ok(output) => output,
        Err(error) if error.kind() == ErrorKind::NotFound => panic!("{missing}"),
        Err(error) => panic!("cannot run {origin}: {error}. {REDIS_SERVER_VAR_FIX}"),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    // `Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=...`
    let version = stdout
        .split_whitespace()
        .find_map(|word| word.strip_prefix("v="))
        .and_then(|version| {
            let mut numbers = version.split('.').map(|number| number.parse::<u32>().ok());
            Some((numbers.next()??, numbers.next()??, numbers.next()??))
        });
    match version {
        Some(version) if output.status.success() => ServerBinary {
            program,
            origin,
            version,
        },
        _ => panic!(
            "{origin} is not a redis-server: `--version` ({}) printed {:?} and {:?}. \
             {REDIS_SERVER_VAR_FIX}",
            output.status,
            stdout.trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        ),
    }
}

/// Runs `redis-cli ARGS...` and returns its stdout, trimmed, or a message with its output if it
/// fails.
///
/// # Panics
///
/// If `redis-cli` is not on `PATH`.
pub(super) fn redis_cli<S: AsRef<OsStr>>(args: &[S]) -> Result<String, String> {
    let output = match Command::new("redis-cli")
        .args(args)
        .stdin(Stdio::null())
        .output()
    {
        Ok(output) => output,
        Err(error) if error.kind() == ErrorKind::NotFound => panic!("{REDIS_CLI_MISSING}"),
        Err(error) => panic!("cannot run redis-cli: {error}"),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    if output.status.success() {
        Ok(stdout.trim().to_owned())
    } else {
        let command: Vec<_> = args
            .iter()
            .map(|arg| arg.as_ref().to_string_lossy())
            .collect();
        Err(format!(
            "`redis-cli {}` failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
            command.join(" "),
            output.status,
            stdout.trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// The value of `name` in `INFO` output (`name:value` lines).
pub(super) fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// A port on `127.0.0.1` that nothing listens on right now. For a cluster node, port + 10000
/// (the cluster bus) is free too. Another process may still take it before the server binds it;
/// [`RedisServerBuilder::start`] retries then.
fn free_port(with_cluster_bus: bool) -> u16 {
    for _ in 0..100 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .expect("bind a free port on 127.0.0.1 to pick one for redis-server");
        let port = listener
            .local_addr()
            .expect("read the address of a bound listener")
            .port();
        if !with_cluster_bus {
            return port;
        }
        if let Some(bus_port) = port.checked_add(CLUSTER_BUS_OFFSET)
            && TcpListener::bind((Ipv4Addr::LOCALHOST, bus_port)).is_ok()
        {
            return port;
        }
    }
    panic!(
        "found no free port on 127.0.0.1 whose cluster bus port (+{CLUSTER_BUS_OFFSET}) is free"
    );
}

/// The process id of `child`, as `nix` wants it.
fn pid_of(child: &Child) -> Pid {
    Pid::from_raw(i32::try_from(child.id()).expect("process ids fit in i32"))
}

/// The length of the file at `path`, 0 if it does not exist.
fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map_or(0, |metadata| metadata.len())
}

/// The text of the file at `path` from byte `offset` on; empty if it does not exist.
fn read_from(path: &Path, offset: u64) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(offset)).is_err() || file.read_to_end(&mut bytes).is_err() {
        return String::new();
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// `value` as a double-quoted `redis.conf` argument.
fn quote(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

/// `value` with every byte outside RFC 3986's unreserved set percent-encoded, for a URL's
/// userinfo.
fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                char::from(byte).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}
