//! The in-process workloads: rate parsing, key encoding, an in-memory decision and header
//! rendering. The criterion suite (`benches/micro.rs`) and the load-test binary's quick
//! ns/op figures run these very functions, so both report the same operations.

use std::future::Future;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use flux::{Decision, Flux, Key, Limit, Rate};
use http::HeaderMap;

/// The limit of the in-memory decision and header rendering workloads: fast enough that
/// nothing is denied, so the admitted path is measured.
pub static MICRO_LIMIT: Limit = Limit::new("bench::micro::search", Rate::per_second::<1_000_000>());

/// Rate strings of the parsing workload, in the forms users write.
pub const RATE_TEXTS: [&str; 4] = ["100/s", "5/10s", "6000 per minute", "10000/day"];

/// Runs a future that is ready without waiting (the in-memory backend never waits) to its
/// output, on the calling thread and without any runtime.
///
/// # Panics
///
/// If the future is not ready at the first poll: it needed a runtime after all.
pub fn block_ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("block_ready: the future is waiting for I/O or a timer"),
    }
}

/// Parses one rate string.
pub fn parse_rate(text: &str) -> Rate {
    match text.parse::<Rate>() {
        Ok(rate) => rate,
        Err(e) => panic!("{text:?} is a valid rate: {e}"),
    }
}

/// A client key as `key = "header:..."` sees it: short printable text, stored verbatim.
pub const PLAIN_KEY: &str = "user-7f3a9c21";

/// A client key that must be digested (longer than 64 bytes): a bearer token, say.
pub const LONG_KEY: &str =
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkZsdXgifQ.c2lnbmF0dXJl";

/// Encodes a client key (`Key::new`).
pub fn encode_key(raw: &str) -> Key {
    Key::new(raw)
}

/// Encodes a peer address (`key = "ip"`).
pub fn encode_ip(ip: IpAddr) -> Key {
    Key::from_ip(ip)
}

/// An IPv4 peer address for [`encode_ip`].
pub const IPV4: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9));

/// In-memory decisions over a fixed set of client keys, visited in a scrambled order.
pub struct MemoryDecisions {
    flux: Flux,
    keys: Vec<Key>,
    next: usize,
    limit: Limit,
}

impl MemoryDecisions {
    /// A fresh in-memory limiter and `clients` distinct keys (at least 1), checking
    /// [`MICRO_LIMIT`].
    pub fn new(clients: usize) -> MemoryDecisions {
        MemoryDecisions::with_limit(clients, MICRO_LIMIT.clone())
    }

    /// The same, checking `limit`.
    pub fn with_limit(clients: usize, limit: Limit) -> MemoryDecisions {
        let flux = match Flux::builder().memory().build() {
            Ok(flux) => flux,
            Err(e) => panic!("the in-memory limiter builds: {e}"),
        };
        let keys = (0..clients.max(1))
            .map(|i| Key::new(format!("client-{i}")))
            .collect();
        MemoryDecisions {
            flux,
            keys,
            next: 0,
            limit,
        }
    }

    /// One `flux.check(key, &limit)` on the next key; whether it was admitted.
    pub fn decide(&mut self) -> bool {
        // A stride coprime with any count that is not a multiple of 7919 scrambles the
        // visiting order, so consecutive checks do not hit neighbouring shards.
        self.next = (self.next + 7_919) % self.keys.len();
        let key = &self.keys[self.next];
        block_ready(self.flux.check(key, &self.limit)).allowed
    }

    /// An admitted decision of [`MICRO_LIMIT`], to render headers from.
    pub fn sample_decision(&mut self) -> Decision {
        block_ready(self.flux.check("sample", &self.limit))
    }
}

/// Renders the RateLimit header fields of `decision` into `headers` (cleared first, so the
/// map's storage is reused as a response's would be).
pub fn render_headers(decision: &Decision, headers: &mut HeaderMap) {
    headers.clear();
    decision.write_headers(std::slice::from_ref(&MICRO_LIMIT), headers);
    black_box(headers);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workloads_do_what_they_say() {
        for text in RATE_TEXTS {
            assert!(parse_rate(text).count() > 0);
        }
        assert_eq!(encode_key(PLAIN_KEY).as_str(), PLAIN_KEY);
        assert_eq!(encode_key(LONG_KEY).as_str().len(), 33);
        assert_eq!(encode_ip(IPV4).as_str(), "203.0.113.9");
        let mut memory = MemoryDecisions::new(100);
        assert!((0..1_000).all(|_| memory.decide()));
        let decision = memory.sample_decision();
        let mut headers = HeaderMap::new();
        render_headers(&decision, &mut headers);
        assert!(headers.contains_key("ratelimit"));
        assert!(headers.contains_key("ratelimit-policy"));
    }
}
