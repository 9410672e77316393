//! A real nginx with the shipped `deploy/nginx.conf` in front of three service instances
//! (separate processes) on one Redis, the instances trusting nginx as the README says
//! (`FLUX_TRUSTED_PROXIES=127.0.0.1`, the default `FLUX_CLIENT_IP_HEADER`).
//!
//! The file is tested as shipped: only its upstream addresses and its listen port are
//! rewritten, by text substitution, so its forwarding lines are the ones under test.
//!
//! What holds: a client forging `Forwarded`, `X-Forwarded-For`, both, `X-Real-IP` or all of
//! them, with a different address in each request, is held to its own per-ip bound (exactly
//! the burst of `/ip` admitted); also from 127.0.0.1, nginx's own and trusted address; naming
//! another client's address does not drain that client's bucket; naming an exempt address
//! does not exempt, while a client whose real address is exempt is.
//!
//! The test clients are distinct loopback addresses (127.0.0.2, 127.0.0.3, ...: on Linux the
//! whole 127.0.0.0/8 is this machine), so each is its own client to nginx.
//!
//! nginx must be installed (`scripts/test` installs Debian's `nginx` package); it runs as a
//! child process of the test, not as a daemon, with its prefix, temporary files, pid file and
//! logs in a temporary directory, on a free loopback port.

use std::fs;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::support::{Conn, Instance, RedisServer, wait_healthy};

/// The panic message when nginx cannot be found: never a silent skip.
const NGINX_MISSING: &str = "nginx not found on PATH nor at /usr/sbin/nginx. The behind_nginx \
    suite runs the shipped deploy/nginx.conf in a real nginx. Install it (Debian/Ubuntu: \
    `sudo apt-get install -y nginx`; macOS: `brew install nginx`) or run `scripts/test`, which \
    installs it.";

/// `/ip` of flux-test-server: 1/min, burst 2, per client address. One token comes back a
/// minute later, far longer than a test takes.
const IP_BURST: usize = 2;

/// An exempt address that no test client has: the one the forgers name.
const FORGED_EXEMPT: &str = "198.51.100.77";

/// An exempt address that a test client really has.
const REAL_EXEMPT: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 20);

/// The addresses a forger names, one per request: strangers, IPv6, another client's
/// address (127.0.0.9, see the test), an exempt one, and junk.
const FORGED: [&str; 8] = [
    "198.51.100.1",
    "198.51.100.2",
    "2001:db8::3",
    "127.0.0.9",
    FORGED_EXEMPT,
    "203.0.113.6",
    "unknown",
    "198.51.100.8",
];

/// nginx as a child process. Dropping it stops it (fast shutdown, then a kill).
struct Nginx {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts `binary` with `deploy/nginx.conf`, its three upstreams rewritten to `upstreams`,
    /// listening on a free loopback port, and waits until it accepts connections.
    fn start(binary: &Path, upstreams: &[SocketAddr; 3]) -> Nginx {
        let mut last_error = String::new();
        // The free port may be taken between picking it and nginx binding it: try again.
        for _ in 0..3 {
            match Nginx::try_start(binary, upstreams) {
                Ok(nginx) => return nginx,
                Err(error) => last_error = error,
            }
        }
        panic!("nginx did not start:\n{last_error}");
    }

    fn try_start(binary: &Path, upstreams: &[SocketAddr; 3]) -> Result<Nginx, String> {
        let dir = tempfile::tempdir().expect("temp dir for nginx");
        // nginx's workers drop root; they must reach the temporary directories.
        set_mode(dir.path(), 0o755);
        let prefix = dir.path().display().to_string();
        let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        fs::write(
            dir.path().join("default.conf"),
            shipped_config(upstreams, listen),
        )
        .expect("write default.conf");
        // deploy/nginx.conf is the `http { }` part (compose mounts it in conf.d): the rest of
        // a whole configuration, with every path inside the temporary directory.
        fs::write(
            dir.path().join("nginx.conf"),
            format!(
                "worker_processes 1;\n\
                 error_log {prefix}/error.log warn;\n\
                 events {{ worker_connections 256; }}\n\
                 http {{\n\
                 \x20   access_log off;\n\
                 \x20   client_body_temp_path {prefix}/client_body;\n\
                 \x20   proxy_temp_path {prefix}/proxy;\n\
                 \x20   fastcgi_temp_path {prefix}/fastcgi;\n\
                 \x20   uwsgi_temp_path {prefix}/uwsgi;\n\
                 \x20   scgi_temp_path {prefix}/scgi;\n\
                 \x20   include {prefix}/default.conf;\n\
                 }}\n"
            ),
        )
        .expect("write nginx.conf");
        let output = fs::File::create(dir.path().join("output.log")).expect("nginx output file");
        let child = Command::new(binary)
            .arg("-p")
            .arg(format!("{prefix}/"))
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-g")
            .arg(format!("daemon off; pid {prefix}/nginx.pid;"))
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("clone output file"))
            .stderr(output)
            .spawn()
            .unwrap_or_else(|e| panic!("run {}: {e}", binary.display()));
        let mut nginx = Nginx {
            child,
            addr: listen,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = nginx.child.try_wait() {
                return Err(format!("nginx exited ({status}):\n{}", nginx.logs()));
            }
            // Ready once it answers as nginx: the port was free when picked, and another
            // test's server may have taken it since (then nginx exits, but the port answers).
            if answers_as_nginx(listen) {
                return Ok(nginx);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "nginx did not listen on {listen} within 10 s:\n{}",
                    nginx.logs()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What nginx wrote: its output and its error log.
    fn logs(&self) -> String {
        let read = |name: &str| fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!(
            "--- output ---\n{}\n--- error.log ---\n{}",
            read("output.log"),
            read("error.log")
        )
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers, then exits. A kill of the master alone would
        // leave the workers holding the port.
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("pids fit in i32"));
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether the server at `addr` answers `/health` with the header that deploy/nginx.conf adds
/// (`X-Flux-Upstream`) and nginx's `Server` header.
fn answers_as_nginx(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut answer = String::new();
    let exchange = stream
        .write_all(b"GET /health HTTP/1.0\r\nHost: flux\r\n\r\n")
        .and_then(|()| stream.read_to_string(&mut answer));
    let answer = answer.to_ascii_lowercase();
    exchange.is_ok()
        && answer.starts_with("http/1.1 200")
        && answer.contains("\r\nx-flux-upstream: ")
        && answer.contains("\r\nserver: nginx")
}

/// `nginx` on `PATH`, else Debian's `/usr/sbin/nginx` (not on a user's `PATH`).
fn nginx_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("nginx"))
        .find(|candidate| candidate.is_file());
    on_path
        .or_else(|| Some(PathBuf::from("/usr/sbin/nginx")).filter(|p| p.is_file()))
        .unwrap_or_else(|| panic!("{NGINX_MISSING}"))
}

/// `deploy/nginx.conf` with its upstreams (`flux-1:3000` ...) and its listen port rewritten,
/// and nothing else: each substitution must match exactly once.
fn shipped_config(upstreams: &[SocketAddr; 3], listen: SocketAddr) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nginx.conf");
    let mut text =
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut replace = |from: &str, to: &str| {
        assert_eq!(
            text.matches(from).count(),
            1,
            "deploy/nginx.conf no longer says `{from}` once: update this test's substitutions"
        );
        text = text.replacen(from, to, 1);
    };
    for (i, upstream) in upstreams.iter().enumerate() {
        replace(
            &format!("server flux-{}:3000;", i + 1),
            &format!("server {upstream};"),
        );
    }
    replace("listen 8080;", &format!("listen {listen};"));
    text
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// A port on 127.0.0.1 that nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("bind a free port on 127.0.0.1")
        .port()
}

/// Redis, three instances on it trusting 127.0.0.1 (nginx) and exempting [`FORGED_EXEMPT`]
/// and [`REAL_EXEMPT`], and nginx in front of them.
struct Site {
    nginx: Nginx,
    instances: Vec<Instance>,
    _redis: RedisServer,
}

impl Site {
    async fn start() -> Site {
        // First, so that a missing nginx fails before anything was started.
        let nginx_binary = nginx_binary();
        let redis = RedisServer::start();
        let url = redis.url();
        let exempt = format!("{FORGED_EXEMPT},{REAL_EXEMPT}");
        let instances: Vec<Instance> = (0..3)
            .map(|_| {
                Instance::start(&[
                    ("FLUX_REDIS_URL", url.as_str()),
                    // As the README advises behind a balancer on this machine.
                    ("FLUX_TRUSTED_PROXIES", "127.0.0.1"),
                    ("FLUX_EXEMPT_IPS", exempt.as_str()),
                    // Admitted only when Redis said so: counts are exact on a loaded machine.
                    ("FLUX_DEADLINE_MS", "2000"),
                    ("FLUX_FAILURE_POLICY", "closed"),
                ])
            })
            .collect();
        wait_healthy(&instances).await;
        let upstreams = [
            instances[0].addr(),
            instances[1].addr(),
            instances[2].addr(),
        ];
        let nginx = Nginx::start(&nginx_binary, &upstreams);
        Site {
            nginx,
            instances,
            _redis: redis,
        }
    }

    /// The statuses of one request to `/ip` per header set, through nginx, on one
    /// connection from `client`.
    async fn statuses(&self, client: Ipv4Addr, requests: &[Headers]) -> Vec<u16> {
        let mut conn = Conn::open_from(IpAddr::V4(client), self.nginx.addr)
            .await
            .unwrap_or_else(|e| panic!("connect to nginx from {client}: {e}"));
        let mut statuses = Vec::with_capacity(requests.len());
        for headers in requests {
            let headers: Vec<(&str, &[u8])> = headers
                .iter()
                .map(|(name, value)| (*name, value.as_bytes()))
                .collect();
            let reply = conn
                .get("/ip", &headers)
                .await
                .unwrap_or_else(|e| panic!("GET /ip through nginx: {e}\n{}", self.nginx.logs()));
            statuses.push(reply.status);
        }
        statuses
    }

    /// Nothing panicked in any instance.
    fn assert_no_panic(&self) {
        for instance in &self.instances {
            let log = instance.log();
            assert!(!log.contains("panicked"), "an instance panicked:\n{log}");
        }
    }
}

/// The headers of one request, as (name, value).
type Headers = Vec<(&'static str, String)>;

/// Writes the forged headers naming one address.
type Forge = fn(&str) -> Headers;

/// `Forwarded: for=<address>`, bracketed and quoted for IPv6 (RFC 7239).
fn forwarded(address: &str) -> String {
    if address.contains(':') {
        format!("for=\"[{address}]\"")
    } else {
        format!("for={address}")
    }
}

/// One header set per request, each naming the next address of [`FORGED`] in the headers
/// `forge` writes.
fn forgeries(forge: Forge) -> Vec<Headers> {
    FORGED.iter().map(|address| forge(address)).collect()
}

/// `[200; burst]`, then 429 for the rest of `n` requests.
fn own_burst(burst: usize, n: usize) -> Vec<u16> {
    (0..n).map(|i| if i < burst { 200 } else { 429 }).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_forwarding_headers_are_held_to_the_clients_own_bound() {
    let site = Site::start().await;
    // Each way of forging from a client address of its own, so each has a bucket of its own.
    let cases: [(&str, Ipv4Addr, Forge); 6] = [
        ("Forwarded", Ipv4Addr::new(127, 0, 0, 2), |a| {
            vec![("forwarded", forwarded(a))]
        }),
        ("X-Forwarded-For", Ipv4Addr::new(127, 0, 0, 3), |a| {
            vec![("x-forwarded-for", a.to_owned())]
        }),
        (
            "Forwarded and X-Forwarded-For",
            Ipv4Addr::new(127, 0, 0, 4),
            |a| {
                vec![
                    ("forwarded", forwarded(a)),
                    ("x-forwarded-for", format!("{a}, {a}")),
                ]
            },
        ),
        ("X-Real-IP", Ipv4Addr::new(127, 0, 0, 5), |a| {
            vec![("x-real-ip", a.to_owned())]
        }),
        ("all three", Ipv4Addr::new(127, 0, 0, 6), |a| {
            vec![
                ("forwarded", forwarded(a)),
                ("x-forwarded-for", a.to_owned()),
                ("x-real-ip", a.to_owned()),
            ]
        }),
        // A client on nginx's own, trusted address: were nginx to append to the client's
        // X-Forwarded-For, Flux would walk past the trusted hop into the forged one.
        (
            "all three, from the trusted address",
            Ipv4Addr::LOCALHOST,
            |a| {
                vec![
                    ("forwarded", forwarded(a)),
                    ("x-forwarded-for", format!("{a}, 127.0.0.1")),
                    ("x-real-ip", a.to_owned()),
                ]
            },
        ),
    ];
    for (what, client, forge) in cases {
        let seen = site.statuses(client, &forgeries(forge)).await;
        assert_eq!(
            seen,
            own_burst(IP_BURST, FORGED.len()),
            "a client at {client} forging {what} with a new address per request is held to \
             its own burst of {IP_BURST}\n{}",
            site.nginx.logs()
        );
    }
    // 127.0.0.9 was named by every forger above, and still has its whole burst.
    let victim = Ipv4Addr::new(127, 0, 0, 9);
    assert_eq!(
        site.statuses(victim, &vec![Vec::new(); 3]).await,
        own_burst(IP_BURST, 3),
        "forgers naming {victim} did not drain its bucket\n{}",
        site.nginx.logs()
    );
    site.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forging_an_exempt_address_does_not_exempt() {
    let site = Site::start().await;
    let forge_exempt = vec![
        vec![("forwarded", forwarded(FORGED_EXEMPT))],
        vec![("x-forwarded-for", FORGED_EXEMPT.to_owned())],
        vec![("x-real-ip", FORGED_EXEMPT.to_owned())],
        vec![
            ("forwarded", forwarded(FORGED_EXEMPT)),
            ("x-forwarded-for", FORGED_EXEMPT.to_owned()),
            ("x-real-ip", FORGED_EXEMPT.to_owned()),
        ],
        vec![("x-forwarded-for", format!("{FORGED_EXEMPT}, 127.0.0.1"))],
    ];
    for client in [Ipv4Addr::new(127, 0, 0, 7), Ipv4Addr::LOCALHOST] {
        assert_eq!(
            site.statuses(client, &forge_exempt).await,
            own_burst(IP_BURST, forge_exempt.len()),
            "a client at {client} naming the exempt {FORGED_EXEMPT} is limited\n{}",
            site.nginx.logs()
        );
    }
    // The exemption itself works through nginx: a client whose real address is exempt
    // passes every time, so the denials above are not a broken exemption.
    assert_eq!(
        site.statuses(REAL_EXEMPT, &vec![Vec::new(); 5]).await,
        vec![200; 5],
        "the client at {REAL_EXEMPT} is exempt\n{}",
        site.nginx.logs()
    );
    site.assert_no_panic();
}
