//! Flux service instances as separate processes (the `flux-test-server` binary), and a small
//! keep-alive HTTP/1.1 client to drive them the way a load balancer would.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader as AsyncBufReader};
use tokio::net::TcpStream;

/// One running instance of the test service. Dropping it kills the process.
pub(crate) struct Instance {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Instance {
    /// Starts an instance with these environment variables (e.g. `FLUX_REDIS_URL`) and waits
    /// until it listens.
    pub(crate) fn start(env: &[(&str, &str)]) -> Instance {
        let dir = tempfile::tempdir().expect("temp dir for the instance log");
        let log = dir.path().join("instance.log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_flux-test-server"));
        command
            .env_remove("FLUX_REDIS_URL")
            .env_remove("FLUX_REDIS_CLUSTER")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("instance log file"));
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("start flux-test-server");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so the child never blocks on a full pipe.
            for _ in lines {}
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                let _ = child.kill();
                panic!(
                    "flux-test-server did not start: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        let addr = line
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from flux-test-server: {line:?}"));
        Instance {
            child,
            addr,
            log,
            _dir: dir,
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What the instance logged so far (stderr).
    pub(crate) fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(&self.log) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response: status, headers and body (as text).
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Reply {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One keep-alive HTTP/1.1 connection.
pub(crate) struct Conn {
    stream: AsyncBufReader<TcpStream>,
}

impl Conn {
    pub(crate) async fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream: AsyncBufReader::new(stream),
        })
    }

    /// [`Conn::open`] from the local address `source` (on Linux any 127.x.y.z is this
    /// machine), so that one test can be several clients.
    pub(crate) async fn open_from(
        source: std::net::IpAddr,
        addr: SocketAddr,
    ) -> std::io::Result<Conn> {
        let socket = match source {
            std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.bind(SocketAddr::new(source, 0))?;
        let stream = socket.connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream: AsyncBufReader::new(stream),
        })
    }

    /// `GET path` with extra header lines (raw bytes, so tests can send anything).
    pub(crate) async fn get(
        &mut self,
        path: &str,
        headers: &[(&str, &[u8])],
    ) -> std::io::Result<Reply> {
        let mut request = format!("GET {path} HTTP/1.1\r\nhost: flux\r\n").into_bytes();
        for (name, value) in headers {
            request.extend_from_slice(name.as_bytes());
            request.extend_from_slice(b": ");
            request.extend_from_slice(value);
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"\r\n");
        self.stream.get_mut().write_all(&request).await?;
        let mut line = String::new();
        self.stream.read_line(&mut line).await?;
        let status = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
        let mut headers = Vec::new();
        let mut length = 0usize;
        loop {
            line.clear();
            if self.stream.read_line(&mut line).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let trimmed = line.trim_end();
            if trimmed.is_empty() {
                break;
            }
            if let Some((name, value)) = trimmed.split_once(": ") {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.parse().unwrap_or(0);
                }
                headers.push((name.to_owned(), value.to_owned()));
            }
        }
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).await?;
        Ok(Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

/// Waits until every instance answers `/health`.
pub(crate) async fn wait_healthy(instances: &[Instance]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    for instance in instances {
        loop {
            if let Ok(mut conn) = Conn::open(instance.addr()).await
                && conn.get("/health", &[]).await.map(|r| r.status).ok() == Some(200)
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "instance {} not healthy",
                instance.addr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Starts `n` instances on the Redis at `url` and waits until they answer. A generous
/// deadline and the `closed` policy: a request is admitted only when Redis said so, so
/// what the instances admit measures the algorithm, never a fail-open on a loaded machine.
pub(crate) async fn fleet(url: &str, n: usize) -> Vec<Instance> {
    let list: Vec<Instance> = (0..n)
        .map(|_| {
            Instance::start(&[
                ("FLUX_REDIS_URL", url),
                ("FLUX_DEADLINE_MS", "2000"),
                ("FLUX_FAILURE_POLICY", "closed"),
            ])
        })
        .collect();
    wait_healthy(&list).await;
    list
}

/// Serves `app` in this process on a free loopback port, with the peer address
/// (`ConnectInfo`) that `key = "ip"` needs.
pub(crate) async fn serve(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .expect("serve");
    });
    addr
}
