//! Client keys and how they become storage keys.
//!
//! A bucket lives at `<prefix>:{<client key>}:<limit name>`, a concurrency limit's slot set at
//! `<prefix>:{<client key>}#slots:<limit name>` (never a bucket's key). The braces are a Redis Cluster
//! hash tag: every limit of one client hashes to one slot, so a multi-limit check is one
//! legal, atomic script call on a cluster too. The client key comes from request data, which
//! may be hostile, so it is stored verbatim only when it is short printable ASCII without
//! braces; anything else (longer than 64 bytes, empty, binary, control bytes, `{`, `}`, or
//! starting with `#`) is replaced by `#` and the hex of its SHA-256 (first 128 bits). Plain
//! keys never start with `#`, so a digest can never equal another client's plain key.
//!
//! At rest (in Redis key names and per-key override fields) a client key is not stored as it
//! came: [`AtRest`] replaces it with a keyed digest, HMAC-SHA-256 under the deployment's
//! secret (`FLUX_KEY_SECRET`), so no client address, token or id can be read off Redis, its
//! slow log, `MONITOR` or a backup. The in-memory backend keeps keys as they are: they
//! never leave the process.

use std::fmt::{self, Write as _};
use std::net::IpAddr;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Longest client key stored verbatim; longer keys are digested.
pub const MAX_PLAIN_KEY_LEN: usize = 64;

/// A client key, encoded: safe to embed in a Redis key and inside a hash tag.
///
/// ```
/// use flux::Key;
///
/// assert_eq!(Key::new("user-42").as_str(), "user-42");
/// // Braces, binary data and long values are digested to a fixed length:
/// let hostile = Key::new(b"}{\n\0".as_slice());
/// assert!(hostile.as_str().starts_with('#'));
/// assert_eq!(hostile.as_str().len(), 33);
/// assert_eq!(Key::new("x".repeat(1 << 20)).as_str().len(), 33);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(Box<str>);

impl Key {
    /// Encodes `raw` (any bytes) as a client key.
    pub fn new(raw: impl AsRef<[u8]>) -> Key {
        let raw = raw.as_ref();
        if is_plain(raw) {
            // is_plain admits only ASCII, so this is valid UTF-8.
            Key(String::from_utf8_lossy(raw).into())
        } else {
            Key::digest(raw)
        }
    }

    /// The key shared by every caller: one bucket for the whole endpoint.
    pub fn global() -> Key {
        Key("global".into())
    }

    /// The key of a client address: IPv4 as is, IPv6 grouped by its /64 network (one
    /// household or VM usually owns a whole /64, and can pick any address in it).
    ///
    /// ```
    /// use flux::Key;
    /// use std::net::IpAddr;
    ///
    /// let a: IpAddr = "2001:db8:1:2::7".parse().unwrap();
    /// let b: IpAddr = "2001:db8:1:2:ffff::1".parse().unwrap();
    /// assert_eq!(Key::from_ip(a), Key::from_ip(b));
    /// assert_eq!(Key::from_ip(a).as_str(), "2001:db8:1:2::/64");
    /// assert_eq!(Key::from_ip("::ffff:192.0.2.1".parse().unwrap()).as_str(), "192.0.2.1");
    /// ```
    pub fn from_ip(ip: IpAddr) -> Key {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Key(v4.to_string().into()),
            IpAddr::V6(v6) => {
                let network = u128::from(v6) & !((1u128 << 64) - 1);
                let network = std::net::Ipv6Addr::from(network);
                Key(format!("{network}/64").into())
            }
        }
    }

    /// A short digest of this key for logs: the first 48 bits of SHA-256 over the key and
    /// a random salt drawn once per process, so equal keys give equal digests within one
    /// process while no digest can be traced back to an address or an id.
    pub(crate) fn digest_hex(&self) -> String {
        use std::hash::{BuildHasher, RandomState};
        use std::sync::LazyLock;
        static SALT: LazyLock<[u8; 16]> = LazyLock::new(|| {
            let state = RandomState::new();
            let a = state.hash_one(1u8).to_le_bytes();
            let b = state.hash_one(2u8).to_le_bytes();
            let mut salt = [0u8; 16];
            salt[..8].copy_from_slice(&a);
            salt[8..].copy_from_slice(&b);
            salt
        });
        let hash = Sha256::new()
            .chain_update(*SALT)
            .chain_update(self.0.as_bytes())
            .finalize();
        let mut out = String::with_capacity(12);
        for byte in &hash[..6] {
            // Writing to a String cannot fail.
            let _ = write!(out, "{byte:02x}");
        }
        out
    }

    fn digest(raw: &[u8]) -> Key {
        let hash = Sha256::digest(raw);
        let mut out = String::with_capacity(33);
        out.push('#');
        for byte in &hash[..16] {
            // Writing to a String cannot fail.
            let _ = write!(out, "{byte:02x}");
        }
        Key(out.into())
    }

    /// A key already in encoded form (read back from storage), taken as it is.
    pub(crate) fn from_encoded(encoded: &str) -> Key {
        Key(encoded.into())
    }

    /// The encoded key.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The Redis Cluster hash slot of every bucket of this client (CRC16 of the hash tag).
    pub(crate) fn slot(&self) -> usize {
        usize::from(crc16_xmodem(self.0.as_bytes())) % SLOTS
    }

    /// The storage key of this client's bucket for the limit `name`:
    /// `<prefix>:{<client>}:<name>`.
    pub(crate) fn bucket(&self, prefix: &str, name: &str) -> String {
        self.storage(prefix, "}:", name)
    }

    /// The storage key of this client's slot set for the concurrency limit `name`:
    /// `<prefix>:{<client>}#slots:<name>`. A client key holds no `}`, so the character after
    /// the hash tag tells the two kinds apart: no rate-limit name, whatever it holds, gives
    /// the key of a slot set (nor the reverse), and both stay in the client's cluster slot.
    pub(crate) fn slot_set(&self, prefix: &str, name: &str) -> String {
        self.storage(prefix, "}#slots:", name)
    }

    fn storage(&self, prefix: &str, kind: &str, name: &str) -> String {
        let mut key =
            String::with_capacity(prefix.len() + self.0.len() + kind.len() + name.len() + 2);
        key.push_str(prefix);
        key.push_str(":{");
        key.push_str(&self.0);
        key.push_str(kind);
        key.push_str(name);
        key
    }
}

/// How client keys are stored where others can read them (Redis key names, per-key override
/// fields): as a keyed digest, or (to debug) as they are.
#[derive(Clone)]
pub(crate) enum AtRest {
    /// Keys as they are ([`Builder::clear_keys`](crate::Builder::clear_keys), and the
    /// in-memory backend, whose keys never leave the process).
    Clear,
    /// HMAC-SHA-256 of the encoded key under the secret, first 128 bits in hex: 32 characters.
    Digest(Box<Hmac<Sha256>>),
}

/// The secret of a deployment that sets none: digests then hide a key's text, but a key
/// drawn from a small set (an IPv4 address, a numeric id) can be found by trying them all.
pub(crate) const DEFAULT_KEY_SECRET: &[u8] = b"flux-ratelimit key digest, no secret set";

/// Length of a digest at rest.
pub(crate) const AT_REST_LEN: usize = 32;

impl AtRest {
    /// Digests under `secret` (any length; HMAC takes every length).
    pub(crate) fn digest(secret: &[u8]) -> AtRest {
        match Hmac::<Sha256>::new_from_slice(secret) {
            Ok(mac) => AtRest::Digest(Box::new(mac)),
            // HMAC accepts keys of every length; keep keys readable rather than fail.
            Err(_) => AtRest::Clear,
        }
    }

    /// `key` as it is stored.
    pub(crate) fn apply(&self, key: Key) -> Key {
        match self {
            AtRest::Clear => key,
            AtRest::Digest(mac) => {
                let mut mac = (**mac).clone();
                mac.update(key.as_str().as_bytes());
                let hash = mac.finalize().into_bytes();
                // Hex by table: `write!` per byte would cost more than the hash.
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let mut out = [0u8; AT_REST_LEN];
                for (pair, byte) in out.chunks_exact_mut(2).zip(&hash[..AT_REST_LEN / 2]) {
                    pair[0] = HEX[usize::from(byte >> 4)];
                    pair[1] = HEX[usize::from(byte & 0xf)];
                }
                // Hex digits are ASCII.
                Key(String::from_utf8_lossy(&out).into())
            }
        }
    }

    /// A client key read from a stored field (a per-key override): a digest is taken as it
    /// is; anything else was written in clear (by hand, or before keys were digested) and is
    /// digested now, so that it applies to the client it names.
    pub(crate) fn stored(&self, field_key: &str) -> Key {
        let key = Key::from_encoded(field_key);
        match self {
            AtRest::Digest(_) if !is_digest(field_key) => self.apply(key),
            _ => key,
        }
    }

    /// Whether keys are digested.
    pub(crate) fn is_digest(&self) -> bool {
        matches!(self, AtRest::Digest(_))
    }
}

impl fmt::Debug for AtRest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secret.
        f.write_str(match self {
            AtRest::Clear => "Clear",
            AtRest::Digest(_) => "Digest",
        })
    }
}

/// Whether `text` has the shape of a digest at rest (32 lowercase hex digits).
fn is_digest(text: &str) -> bool {
    text.len() == AT_REST_LEN && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Hash slots of a Redis Cluster.
pub(crate) const SLOTS: usize = 16_384;

/// CRC-16/XMODEM, the checksum Redis Cluster maps keys to slots with.
fn crc16_xmodem(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

fn is_plain(raw: &[u8]) -> bool {
    !raw.is_empty()
        && raw.len() <= MAX_PLAIN_KEY_LEN
        && raw[0] != b'#'
        && raw
            .iter()
            .all(|&b| (0x20..=0x7e).contains(&b) && b != b'{' && b != b'}')
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Anything that can name a client: strings, bytes, numbers, addresses, or a [`Key`].
///
/// Implement it for your own identifier types (a user id, a tenant) to use them directly in
/// `flux.check(..)` and in `#[rate_limit(key = ...)]` expressions.
///
/// ```
/// use flux::Key;
/// use flux::key::ToKey;
///
/// struct TenantId(u64);
/// impl ToKey for TenantId {
///     fn to_key(&self) -> Key {
///         Key::new(format!("tenant:{}", self.0))
///     }
/// }
/// assert_eq!(TenantId(7).to_key().as_str(), "tenant:7");
/// ```
pub trait ToKey {
    /// The encoded client key.
    fn to_key(&self) -> Key;
}

impl ToKey for Key {
    fn to_key(&self) -> Key {
        self.clone()
    }
}

impl<T: ToKey + ?Sized> ToKey for &T {
    fn to_key(&self) -> Key {
        (**self).to_key()
    }
}

impl ToKey for str {
    fn to_key(&self) -> Key {
        Key::new(self)
    }
}

impl ToKey for String {
    fn to_key(&self) -> Key {
        Key::new(self)
    }
}

impl ToKey for [u8] {
    fn to_key(&self) -> Key {
        Key::new(self)
    }
}

impl ToKey for Vec<u8> {
    fn to_key(&self) -> Key {
        Key::new(self)
    }
}

impl ToKey for IpAddr {
    fn to_key(&self) -> Key {
        Key::from_ip(*self)
    }
}

macro_rules! display_keys {
    ($($t:ty)*) => {$(
        impl ToKey for $t {
            fn to_key(&self) -> Key {
                Key::new(self.to_string())
            }
        }
    )*};
}
display_keys!(u8 u16 u32 u64 u128 usize i8 i16 i32 i64 i128 isize);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_keys_stay_readable_and_hostile_ones_are_digested() {
        assert_eq!(Key::new("203.0.113.9").as_str(), "203.0.113.9");
        assert_eq!(Key::new("a b").as_str(), "a b");
        for hostile in [
            &b""[..],
            b"{tag}",
            b"}",
            b"a\nb",
            b"\0",
            b"\xff\xfe",
            b"#0123456789abcdef0123456789abcdef",
        ] {
            let key = Key::new(hostile);
            assert!(key.as_str().starts_with('#'), "{hostile:?} -> {key}");
            assert_eq!(key.as_str().len(), 33);
            assert!(!key.as_str().contains(['{', '}']));
        }
        assert_eq!(Key::new("x".repeat(64)).as_str().len(), 64);
        assert_eq!(Key::new("x".repeat(65)).as_str().len(), 33);
    }

    #[test]
    fn distinct_hostile_keys_get_distinct_buckets() {
        assert_ne!(Key::new(b"\0a"), Key::new(b"\0b"));
        assert_ne!(Key::new("y".repeat(65)), Key::new("y".repeat(66)));
        // A digest is never equal to a plain key, which cannot start with '#'.
        let digested = Key::new(b"\0");
        assert_eq!(Key::new(digested.as_str()).as_str().len(), 33);
        assert_ne!(Key::new(digested.as_str()), digested);
    }

    #[test]
    fn slots_match_redis_cluster() {
        // Reference values from `CLUSTER KEYSLOT`.
        assert_eq!(Key::new("somekey").slot(), 11_058);
        assert_eq!(Key::new("foo").slot(), 12_182);
        assert_eq!(Key::new("123456789").slot(), 0x31c3 % SLOTS);
    }

    proptest::proptest! {
        /// Whatever bytes a request carries: no panic, one hash tag in the bucket name, short
        /// and printable, and two different inputs never share a bucket, in clear or at rest.
        #[test]
        fn request_bytes_never_share_a_bucket(
            a in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
            b in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
        ) {
            let (ka, kb) = (Key::new(&a), Key::new(&b));
            let bucket = ka.bucket("flux", "api");
            proptest::prop_assert_eq!(bucket.matches('{').count(), 1);
            proptest::prop_assert_eq!(bucket.matches('}').count(), 1);
            proptest::prop_assert!(ka.as_str().len() <= MAX_PLAIN_KEY_LEN);
            proptest::prop_assert!(ka.as_str().bytes().all(|c| (0x20..0x7f).contains(&c)));
            let at_rest = AtRest::digest(b"a secret of sixteen bytes");
            let (sa, sb) = (at_rest.apply(ka.clone()), at_rest.apply(kb.clone()));
            proptest::prop_assert!(is_digest(sa.as_str()));
            if a != b {
                proptest::prop_assert_ne!(ka, kb);
                proptest::prop_assert_ne!(sa, sb);
            }
        }
    }

    proptest::proptest! {
        /// A rate limit and a concurrency limit never share a key, whatever their names (a
        /// rate limit `X:slots` beside a concurrency limit `X` did), and both keep the
        /// client's hash tag.
        #[test]
        fn buckets_and_slot_sets_never_collide(
            client in proptest::collection::vec(proptest::num::u8::ANY, 0..80),
            rate in "[:#a-z{}@ ]{0,12}",
            slots in "[:#a-z{}@ ]{0,12}",
        ) {
            let key = Key::new(&client);
            let (bucket, set) = (key.bucket("flux", &rate), key.slot_set("flux", &slots));
            proptest::prop_assert_ne!(&bucket, &set);
            proptest::prop_assert_ne!(key.bucket("flux", &format!("{slots}:slots")), set.clone());
            proptest::prop_assert_ne!(key.bucket("flux", &format!("slots:{slots}")), set.clone());
            let tagged = format!("flux:{{{key}}}");
            proptest::prop_assert!(bucket.starts_with(&tagged));
            proptest::prop_assert!(set.starts_with(&tagged));
        }
    }

    #[test]
    fn keys_at_rest_are_keyed_digests() {
        let ip = Key::new("203.0.113.9");
        let a = AtRest::digest(b"secret a");
        let stored = a.apply(ip.clone());
        assert_eq!(stored.as_str().len(), AT_REST_LEN);
        assert!(!stored.as_str().contains("203"));
        // The same key, the same digest (every instance finds the same bucket).
        assert_eq!(AtRest::digest(b"secret a").apply(ip.clone()), stored);
        // Another secret, another digest; other keys, other digests.
        assert_ne!(AtRest::digest(b"secret b").apply(ip.clone()), stored);
        assert_ne!(a.apply(Key::new("203.0.113.10")), stored);
        // A stored field's key: a digest as it is, a clear key digested.
        assert_eq!(a.stored(stored.as_str()), stored);
        assert_eq!(a.stored("203.0.113.9"), stored);
        assert_eq!(AtRest::Clear.apply(ip.clone()), ip);
        assert_eq!(AtRest::Clear.stored("203.0.113.9"), ip);
        assert_eq!(format!("{a:?}"), "Digest");
    }

    #[test]
    fn bucket_keys_carry_one_hash_tag() {
        let key = Key::new("user-1");
        assert_eq!(
            key.bucket("flux", "api::search"),
            "flux:{user-1}:api::search"
        );
        assert_eq!(Key::new("{x}").bucket("flux", "n").matches('{').count(), 1);
    }
}
