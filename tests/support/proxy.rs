//! A TCP proxy on a free loopback port that plays a server's address while the tests break
//! the network behind it: a black hole, added latency, one slow direction, reset connections,
//! or another server behind the same address.
//!
//! New connections go to the current target ([`FaultProxy::point_at`]) in the current mode
//! ([`FaultProxy::set_mode`]); each connection keeps its own mode, which the tests change for
//! all of them at once or for those open now only ([`FaultProxy::black_hole_existing`]: the
//! host behind the connections Flux holds vanished without a reset, while the address
//! already leads to a healthy server).
//!
//! Runs on the tokio runtime of the test that starts it; dropping it stops accepting and
//! resets every connection.
//!
//! ```ignore
//! let server = RedisServer::start();
//! let proxy = FaultProxy::start(server.port()).await;
//! let flux = Flux::builder().redis(proxy.url()).build()?;
//! proxy.set_mode(Mode::Latency(Duration::from_millis(100)));
//! ```

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What a connection through the proxy does with the bytes it gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Forwards both ways at once.
    Pass,
    /// Keeps the connection open and forwards nothing either way (what is sent waits in the
    /// sockets' buffers, as on a link that went dark; it flows again if the mode changes).
    BlackHole,
    /// Forwards both ways, each chunk after this delay.
    Latency(Duration),
    /// Forwards requests (client to server) after this delay, replies at once.
    SlowRequests(Duration),
    /// Forwards replies (server to client) after this delay, requests at once.
    SlowReplies(Duration),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Requests,
    Replies,
}

impl Mode {
    fn delay(self, direction: Direction) -> Duration {
        match (self, direction) {
            (Mode::Latency(d), _)
            | (Mode::SlowRequests(d), Direction::Requests)
            | (Mode::SlowReplies(d), Direction::Replies) => d,
            _ => Duration::ZERO,
        }
    }
}

/// One connection's controls: its mode, and whether it is to be reset.
struct Link {
    mode: watch::Sender<Mode>,
    reset: watch::Sender<bool>,
}

struct State {
    target: Mutex<SocketAddr>,
    /// The mode of new connections.
    mode: Mutex<Mode>,
    links: Mutex<Vec<Arc<Link>>>,
    accepted: Mutex<u64>,
}

/// A fault-injecting TCP proxy; see the module docs.
pub(crate) struct FaultProxy {
    addr: SocketAddr,
    state: Arc<State>,
    accept: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy to `127.0.0.1:port`, passing everything.
    pub(crate) async fn start(port: u16) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let state = Arc::new(State {
            target: Mutex::new(SocketAddr::from(([127, 0, 0, 1], port))),
            mode: Mutex::new(Mode::Pass),
            links: Mutex::new(Vec::new()),
            accepted: Mutex::new(0),
        });
        let accept = tokio::spawn(accept(listener, Arc::clone(&state)));
        FaultProxy {
            addr,
            state,
            accept,
        }
    }

    /// The proxy's port.
    pub(crate) fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `redis://127.0.0.1:<port>/`: the server behind the proxy, as a client sees it.
    pub(crate) fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    /// New connections go to `127.0.0.1:port` (open ones stay where they are).
    pub(crate) fn point_at(&self, port: u16) {
        *lock(&self.state.target) = SocketAddr::from(([127, 0, 0, 1], port));
    }

    /// Every connection, open or new, in `mode`.
    pub(crate) fn set_mode(&self, mode: Mode) {
        *lock(&self.state.mode) = mode;
        for link in self.links() {
            link.mode.send_replace(mode);
        }
    }

    /// The connections open now forward nothing any more; new ones are made as before.
    pub(crate) fn black_hole_existing(&self) {
        for link in self.links() {
            link.mode.send_replace(Mode::BlackHole);
        }
    }

    /// Resets every open connection (RST both ways); new ones are made as before.
    pub(crate) fn reset_all(&self) {
        for link in self.links() {
            link.reset.send_replace(true);
        }
    }

    /// Connections open now.
    pub(crate) fn open_connections(&self) -> usize {
        self.links().len()
    }

    /// Connections accepted since the start.
    pub(crate) fn accepted(&self) -> u64 {
        *lock(&self.state.accepted)
    }

    fn links(&self) -> Vec<Arc<Link>> {
        let mut links = lock(&self.state.links);
        links.retain(|l| !l.reset.is_closed());
        links.clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.reset_all();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn accept(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        *lock(&state.accepted) += 1;
        let target = *lock(&state.target);
        let (mode, mode_rx) = watch::channel(*lock(&state.mode));
        let (reset, reset_rx) = watch::channel(false);
        lock(&state.links).push(Arc::new(Link { mode, reset }));
        tokio::spawn(serve(client, target, mode_rx, reset_rx));
    }
}

/// Carries one connection until either side closes it or the test resets it.
async fn serve(
    client: TcpStream,
    target: SocketAddr,
    mode: watch::Receiver<Mode>,
    mut reset: watch::Receiver<bool>,
) {
    let Ok(server) = TcpStream::connect(target).await else {
        let _ = client.set_zero_linger();
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    // Closing with a zero linger sends RST, as a reset is meant to.
    let _ = client.set_zero_linger();
    let _ = server.set_zero_linger();
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::select! {
        () = pump(client_read, server_write, mode.clone(), Direction::Requests) => {}
        () = pump(server_read, client_write, mode, Direction::Replies) => {}
        _ = reset.wait_for(|r| *r) => {}
    }
}

/// Copies `from` to `to` as the connection's mode says, until `from` closes.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
    direction: Direction,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if mode.wait_for(|m| *m != Mode::BlackHole).await.is_err() {
            return;
        }
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            // A black hole stops reading at once.
            _ = mode.changed() => continue,
        };
        let delay = mode.borrow().delay(direction);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        // Bytes read before the link went dark are held until it comes back.
        if mode.wait_for(|m| *m != Mode::BlackHole).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
