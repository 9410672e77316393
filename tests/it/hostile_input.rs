//! Hostile request data against a real service instance (a separate process) on a real
//! Redis: client keys that are huge, binary, full of braces or shaped like digests; a flood of
//! distinct keys; forged `X-Forwarded-For` / `Forwarded` headers; IPv6 clients hopping
//! addresses inside their /64.
//!
//! What holds: nothing panics or stops the server; every client key, however odd, gets its
//! own bucket (exactly its own burst) and never another client's; Redis keys stay short,
//! printable and carry one hash tag; a flood's keys expire as their buckets refill; forwarding
//! headers count only from a trusted proxy, and then name the rightmost untrusted hop.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{Conn, Instance, RedisServer, wait_healthy};

/// `/many`: 5/min, burst 3, per `x-client`; one token comes back every 12 s, far longer than
/// a test takes, so every client gets exactly 3.
const MANY_BURST: usize = 3;

/// A Redis and one instance on it; with `trusted_proxy`, 127.0.0.1 (the test itself) is a
/// trusted proxy whose forwarding headers count.
async fn service(trusted_proxy: bool) -> (RedisServer, Instance) {
    let redis = RedisServer::start();
    let url = redis.url();
    // Client keys in clear, to read each client's bucket off Redis: these tests are about
    // how request data becomes a key (the digest at rest is tested on its own).
    let mut env = vec![("FLUX_REDIS_URL", url.as_str()), ("FLUX_CLEAR_KEYS", "on")];
    if trusted_proxy {
        env.push(("FLUX_TRUSTED_PROXIES", "127.0.0.1"));
    }
    let instance = Instance::start(&env);
    wait_healthy(std::slice::from_ref(&instance)).await;
    (redis, instance)
}

/// The statuses of `n` requests to `path` with these headers, on one connection.
async fn statuses(addr: SocketAddr, path: &str, headers: &[(&str, &[u8])], n: usize) -> Vec<u16> {
    let mut conn = Conn::open(addr).await.expect("connect");
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let reply = conn.get(path, headers).await.expect("an answer");
        out.push(reply.status);
    }
    out
}

/// `[200; burst]` followed by one 429: a fresh bucket of that burst, driven one over it.
fn own_burst(burst: usize) -> Vec<u16> {
    let mut expected = vec![200; burst];
    expected.push(429);
    expected
}

/// Every bucket key in Redis: all keys but the registry of declared limits (`flux:limits`,
/// written by the instances) and the overrides (`flux:overrides`).
fn keys(redis: &RedisServer) -> BTreeSet<String> {
    redis
        .cli(&["KEYS", "*"])
        .lines()
        .filter(|l| !l.is_empty() && !["flux:limits", "flux:overrides"].contains(l))
        .map(str::to_owned)
        .collect()
}

/// Whether `tag` is a digested client key: `#` and 32 lowercase hex digits.
fn is_digest(tag: &str) -> bool {
    tag.len() == 33
        && tag.starts_with('#')
        && tag[1..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The client key inside `flux:{<key>}:<limit>`, checking that shape: one hash tag, short,
/// printable.
fn tag_of(key: &str) -> &str {
    assert!(
        key.len() <= 100 && key.bytes().all(|b| (0x20..0x7f).contains(&b)),
        "Redis key is short and printable: {key:?}"
    );
    assert_eq!(key.matches('{').count(), 1, "one hash tag in {key:?}");
    assert_eq!(key.matches('}').count(), 1, "one hash tag in {key:?}");
    let inner = key
        .strip_prefix("flux:{")
        .and_then(|rest| rest.split_once('}'))
        .map(|(tag, _)| tag);
    inner.unwrap_or_else(|| panic!("unexpected Redis key {key:?}"))
}

/// The server still accepts connections and answers, and nothing in it panicked.
async fn assert_alive(instance: &Instance) {
    let mut conn = Conn::open(instance.addr())
        .await
        .expect("the server still accepts connections");
    let reply = conn.get("/health", &[]).await.expect("the server answers");
    assert_eq!(reply.status, 200);
    let log = instance.log();
    assert!(!log.contains("panicked"), "the server panicked:\n{log}");
}

/// Sends one request with a `value_len`-byte `x-client` on its own connection; the status,
/// or how the connection ended if the server refused to read that much.
async fn huge_header(addr: SocketAddr, value_len: usize) -> Result<u16, String> {
    let mut request = b"GET /many HTTP/1.1\r\nhost: flux\r\nx-client: ".to_vec();
    request.extend(std::iter::repeat_n(b'k', value_len));
    request.extend_from_slice(b"\r\n\r\n");
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        // The server may answer and close before it read everything: keep what it said.
        let written = stream.write_all(&request).await;
        let mut answer = Vec::new();
        let read = stream.read_to_end(&mut answer).await;
        let text = String::from_utf8_lossy(&answer);
        match text.split(' ').nth(1).and_then(|s| s.parse().ok()) {
            Some(status) => Ok(status),
            None => Err(format!(
                "no status line (write: {written:?}, read: {read:?}, {} bytes)",
                answer.len()
            )),
        }
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .unwrap_or_else(|_| Err("no answer within 10 s".to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_client_keys_are_refused_or_digested_and_the_server_survives() {
    let (redis, instance) = service(false).await;
    let addr = instance.addr();

    // ~1 MB: beyond what the HTTP layer reads for a request head.
    let huge = huge_header(addr, 1 << 20).await;
    println!("1 MiB x-client: {huge:?}");
    assert!(
        matches!(huge, Ok(431) | Ok(400)) || huge.is_err(),
        "a 1 MiB header is refused at the HTTP layer, not served: {huge:?}"
    );
    assert_alive(&instance).await;
    assert_eq!(
        statuses(addr, "/many", &[("x-client", b"alice")], 4).await,
        own_burst(MANY_BURST),
        "others are served as before"
    );

    // 8 KiB passes HTTP and is digested. Two such keys that differ only in their last byte,
    // and the 64-byte prefix they share (the longest key kept verbatim), are three clients.
    let long_a = [vec![b'k'; 8191], b"a".to_vec()].concat();
    let long_b = [vec![b'k'; 8191], b"b".to_vec()].concat();
    let prefix = vec![b'k'; 64];
    for key in [&long_a, &long_b, &prefix] {
        assert_eq!(
            statuses(addr, "/many", &[("x-client", key)], 4).await,
            own_burst(MANY_BURST),
            "a {}-byte key has its own bucket",
            key.len()
        );
    }
    let tags: Vec<String> = keys(&redis).iter().map(|k| tag_of(k).to_owned()).collect();
    let digests = tags.iter().filter(|t| is_digest(t)).count();
    println!("Redis keys after the long keys: {tags:?}");
    assert_eq!(digests, 2, "each 8 KiB key became its own digest: {tags:?}");
    assert!(tags.contains(&"k".repeat(64)), "64 bytes stay verbatim");
    assert_eq!(tags.len(), 4, "alice, two digests, the prefix: {tags:?}");
    assert_eq!(
        statuses(addr, "/many", &[("x-client", b"alice")], 1).await,
        [429],
        "alice's bucket was never touched by the others"
    );
    assert_alive(&instance).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_braces_and_digest_lookalikes_each_get_their_own_bucket() {
    let (redis, instance) = service(false).await;
    let addr = instance.addr();
    let high: Vec<u8> = (0x80..=0xff).collect();
    let hostile: Vec<&[u8]> = vec![
        // obs-text: bytes 0x80-0xFF are legal in a header value. Two that decode to the same
        // replacement character as lossy UTF-8 must still be two clients.
        b"\x80",
        b"\xff",
        b"\xfe\xff",
        b"caf\xc3\xa9",
        &high,
        // Braces would break out of the hash tag if stored as is.
        b"{",
        b"}",
        b"}{",
        b"{}",
        b"{alice}",
        b"alice}:many",
        // A tab is a legal header byte and a control character.
        b"a\tb",
        // Look like digests; plain keys never start with '#', so these are digested too.
        b"#00000000000000000000000000000000",
        b"#ffffffffffffffffffffffffffffffff",
    ];
    for key in &hostile {
        let before = keys(&redis);
        assert_eq!(
            statuses(addr, "/many", &[("x-client", key)], 4).await,
            own_burst(MANY_BURST),
            "{:?} gets exactly its own burst",
            String::from_utf8_lossy(key)
        );
        let after = keys(&redis);
        let new: Vec<&String> = after.difference(&before).collect();
        assert_eq!(new.len(), 1, "one new bucket for {key:?}: {new:?}");
        assert!(
            is_digest(tag_of(new[0])),
            "{key:?} is stored as a digest: {new:?}"
        );
    }

    // A client that sends, verbatim, the digest another client's key became gets a bucket
    // of its own, not the (exhausted) one of that client.
    let before = keys(&redis);
    assert_eq!(
        statuses(addr, "/many", &[("x-client", b"}{}{")], 4).await,
        own_burst(MANY_BURST)
    );
    let after = keys(&redis);
    let victim = after
        .difference(&before)
        .next()
        .map(|k| tag_of(k).to_owned())
        .expect("the bucket of `}{}{`");
    assert_eq!(
        statuses(addr, "/many", &[("x-client", victim.as_bytes())], 4).await,
        own_burst(MANY_BURST),
        "sending the digest {victim} as a key does not reach that bucket"
    );

    // Bytes no header value may hold are refused by the HTTP layer; an empty or blank key is
    // refused by Flux (400), never lumped into a shared bucket.
    let mut refused = Vec::new();
    for key in [&b"a\x00b"[..], b"a\rb", b"\x7f", b"", b"   "] {
        let mut conn = Conn::open(addr).await.expect("connect");
        let status = conn
            .get("/many", &[("x-client", key)])
            .await
            .map(|r| r.status);
        assert!(
            matches!(status, Ok(400)) || status.is_err(),
            "{key:?} is refused: {status:?}"
        );
        refused.push((String::from_utf8_lossy(key).into_owned(), status));
    }
    println!("refused keys: {refused:?}");
    assert_eq!(keys(&redis).len(), hostile.len() + 2, "no bucket for those");

    // A plain client is unaffected by all of it, and every key in Redis is well formed.
    assert_eq!(
        statuses(addr, "/many", &[("x-client", b"alice")], 4).await,
        own_burst(MANY_BURST)
    );
    let all = keys(&redis);
    for key in &all {
        tag_of(key);
    }
    assert_eq!(
        all.len(),
        hostile.len() + 3,
        "one bucket per client: {all:?}"
    );
    assert!(all.contains("flux:{alice}:many"));
    println!(
        "{} hostile keys and alice, {} buckets: {all:?}",
        hostile.len() + 2,
        all.len()
    );
    assert_alive(&instance).await;
}

/// `used_memory` from `INFO memory`, and `DBSIZE` less the keys that are no buckets, over
/// one connection.
async fn memory_and_keys(con: &mut redis::aio::MultiplexedConnection) -> (u64, u64) {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(con)
        .await
        .expect("INFO memory");
    let used = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory in INFO memory");
    let dbsize: u64 = redis::cmd("DBSIZE").query_async(con).await.expect("DBSIZE");
    // The registry of declared limits and the overrides are no client's bucket.
    let not_buckets: u64 = redis::cmd("EXISTS")
        .arg("flux:limits")
        .arg("flux:overrides")
        .query_async(con)
        .await
        .expect("EXISTS");
    (used, dbsize - not_buckets)
}

/// Sends one request per key `format!("{prefix}-{n}")` for n in `0..count` to `path`, over
/// 16 connections; returns how many were not 200 and how long it took.
async fn distinct_keys(
    addr: SocketAddr,
    path: &'static str,
    prefix: &'static str,
    count: usize,
) -> (usize, Duration) {
    let next = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (next, refused) = (Arc::clone(&next), Arc::clone(&refused));
            tokio::spawn(async move {
                let mut conn = Conn::open(addr).await.expect("connect");
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= count {
                        break;
                    }
                    let key = format!("{prefix}-{n}");
                    let reply = conn
                        .get(path, &[("x-client", key.as_bytes())])
                        .await
                        .expect("an answer");
                    if reply.status != 200 {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("client task");
    }
    (refused.load(Ordering::Relaxed), start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_distinct_keys_stays_bounded_and_expires() {
    let (redis, instance) = service(false).await;
    let addr = instance.addr();
    let client = redis::Client::open(redis.url()).expect("URL");
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis");
    let (baseline, empty) = memory_and_keys(&mut con).await;
    assert_eq!(empty, 0);

    // 5,000 clients on `/one` (100/s, burst 50): one request leaves a bucket 10 ms from full,
    // so each key is written with a 10 ms expiry. Sample Redis while the flood runs.
    const FLOOD: usize = 5_000;
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = Arc::clone(&done);
        let mut con = con.clone();
        tokio::spawn(async move {
            let mut peak = (0, 0);
            while !done.load(Ordering::Relaxed) {
                let (used, dbsize) = memory_and_keys(&mut con).await;
                if dbsize > peak.1 {
                    peak = (used, dbsize);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            peak
        })
    };
    let (refused, elapsed) = distinct_keys(addr, "/one", "flood", FLOOD).await;
    done.store(true, Ordering::Relaxed);
    let (peak_used, peak_keys) = sampler.await.expect("sampler");
    assert_eq!(refused, 0, "every new client is admitted");

    // Keys expire as their buckets refill: all gone about a second later.
    let drained = Instant::now();
    let mut left = u64::MAX;
    while drained.elapsed() < Duration::from_secs(5) {
        left = memory_and_keys(&mut con).await.1;
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drain_time = drained.elapsed();
    let rate = FLOOD as f64 / elapsed.as_secs_f64();
    let flood_bytes = peak_used.saturating_sub(baseline) / peak_keys.max(1);
    println!(
        "{FLOOD} distinct keys on /one in {elapsed:.2?} ({rate:.0}/s): peak DBSIZE {peak_keys}, \
         used_memory +{} bytes at the peak (~{flood_bytes} bytes/key), 0 keys {drain_time:.2?} after the flood",
        peak_used.saturating_sub(baseline)
    );
    assert!(rate > 1_000.0, "thousands of keys per second ({rate:.0}/s)");
    assert!(
        peak_keys < FLOOD as u64 / 2,
        "keys expire during the flood: peak {peak_keys} of {FLOOD}"
    );
    assert_eq!(left, 0, "every flood key expired");
    assert!(
        drain_time <= Duration::from_millis(1_500),
        "the flood's keys expired within ~1 s ({drain_time:?})"
    );

    // Bytes per key, measured where it is not blurred by expiry: 2,000 clients on `/many`,
    // whose buckets stay 12 s.
    const STAY: usize = 2_000;
    let (before, _) = memory_and_keys(&mut con).await;
    let (refused, _) = distinct_keys(addr, "/many", "stay", STAY).await;
    assert_eq!(refused, 0);
    let (after, dbsize) = memory_and_keys(&mut con).await;
    assert_eq!(dbsize, STAY as u64);
    let per_key = after.saturating_sub(before) / STAY as u64;
    println!(
        "{STAY} buckets of /many held: used_memory +{} bytes = {per_key} bytes/key",
        after.saturating_sub(before)
    );
    assert!(
        (20..=512).contains(&per_key),
        "a bucket costs one short key and an integer ({per_key} bytes)"
    );
    assert_alive(&instance).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_from_an_untrusted_peer_are_ignored() {
    // No trusted proxies: whatever the headers say, the client is the peer, 127.0.0.1.
    let (redis, instance) = service(false).await;
    let addr = instance.addr();
    let spoofs: [&[(&str, &[u8])]; 4] = [
        &[("x-forwarded-for", b"198.51.100.1")],
        &[
            ("x-forwarded-for", b"198.51.100.2, 198.51.100.3"),
            ("forwarded", b"for=198.51.100.4"),
        ],
        &[("forwarded", b"for=\"[2001:db8::1]:4711\"")],
        &[],
    ];
    let mut seen = Vec::new();
    for headers in spoofs {
        seen.extend(statuses(addr, "/ip", headers, 1).await);
    }
    // `/ip` is 1/min with burst 2: the peer's two, then its bucket is empty.
    assert_eq!(seen, [200, 200, 429, 429], "one bucket, the peer's");
    let all = keys(&redis);
    assert_eq!(
        all,
        BTreeSet::from(["flux:{127.0.0.1}:ip".to_owned()]),
        "no bucket for a spoofed address"
    );
    assert_alive(&instance).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_names_the_rightmost_untrusted_hop() {
    let (redis, instance) = service(true).await;
    let addr = instance.addr();
    // The client prepends whatever it likes; the proxy (127.0.0.1, trusted) appended the
    // address it received from: 203.0.113.9. Every variant is that one client: a `Forwarded`
    // beside it is not the header Flux reads (FLUX_CLIENT_IP_HEADER, default x-forwarded-for).
    let same_client: [&[(&str, &[u8])]; 4] = [
        &[("x-forwarded-for", b"6.6.6.6, 203.0.113.9")],
        &[("x-forwarded-for", b"7.7.7.7, 203.0.113.9")],
        &[("x-forwarded-for", b"8.8.8.8, 203.0.113.9, 127.0.0.1")],
        &[
            ("forwarded", b"for=6.6.6.6"),
            ("x-forwarded-for", b"9.9.9.9"),
            ("x-forwarded-for", b"203.0.113.9"),
        ],
    ];
    let mut seen = Vec::new();
    for headers in same_client {
        seen.extend(statuses(addr, "/ip", headers, 1).await);
    }
    assert_eq!(
        seen,
        [200, 200, 429, 429],
        "a leftmost spoof does not change the bucket"
    );
    // Another client behind the proxy, and the proxy's own requests, are separate.
    assert_eq!(
        statuses(addr, "/ip", &[("x-forwarded-for", b"203.0.113.10")], 3).await,
        own_burst(2)
    );
    assert_eq!(statuses(addr, "/ip", &[], 3).await, own_burst(2));
    assert_eq!(
        keys(&redis),
        BTreeSet::from([
            "flux:{127.0.0.1}:ip".to_owned(),
            "flux:{203.0.113.10}:ip".to_owned(),
            "flux:{203.0.113.9}:ip".to_owned(),
        ]),
        "no bucket for a spoofed hop"
    );
    assert_alive(&instance).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_clients_share_a_bucket_per_64() {
    let (redis, instance) = service(true).await;
    let addr = instance.addr();
    // One /64: any address in it, by either header, is one client.
    let one_network: [&[(&str, &[u8])]; 4] = [
        &[("x-forwarded-for", b"2001:db8:1:2::7")],
        &[("x-forwarded-for", b"2001:db8:1:2::8")],
        &[("x-forwarded-for", b"2001:db8:1:2:ffff:ffff:ffff:ffff")],
        &[("x-forwarded-for", b"[2001:db8:1:2::9]:4711")],
    ];
    let mut seen = Vec::new();
    for headers in one_network {
        seen.extend(statuses(addr, "/ip", headers, 1).await);
    }
    assert_eq!(
        seen,
        [200, 200, 429, 429],
        "one bucket for 2001:db8:1:2::/64"
    );
    // The next /64 is another client.
    let mut seen = Vec::new();
    for address in [b"2001:db8:1:3::1", b"2001:db8:1:3::2", b"2001:db8:1:3::3"] {
        seen.extend(statuses(addr, "/ip", &[("x-forwarded-for", address)], 1).await);
    }
    assert_eq!(seen, own_burst(2), "2001:db8:1:3::/64 has its own bucket");
    assert_eq!(
        keys(&redis),
        BTreeSet::from([
            "flux:{2001:db8:1:2::/64}:ip".to_owned(),
            "flux:{2001:db8:1:3::/64}:ip".to_owned(),
        ])
    );
    assert_alive(&instance).await;
}
