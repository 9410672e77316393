//! Who the client is, and which limiter serves the request: [`ClientIp`], the [`Flux`]
//! extractor, and the extractors `#[rate_limit]` injects (`Scope`, `HeaderKey`,
//! `RequestHeaders`, reached through `__private`).

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::response::Response;
use http::HeaderMap;
use http::request::Parts;

use super::response::{missing_header, no_peer_address};
use crate::Flux;
use crate::model::key::Key;

/// The client key of `key = "ip"`, as an axum extractor: the peer address (IPv6 by /64),
/// or, behind the trusted proxies of the limiter serving the request, the address they
/// forwarded. That limiter is the [`Flux`] in the request's extensions (inserted with
/// `Extension(flux)`), else the process-wide one.
///
/// Needs `into_make_service_with_connect_info::<SocketAddr>()`; without it the request is
/// answered `500` with an error log that says so, never lumped into a shared bucket.
///
/// ```
/// use axum::{Router, routing::get};
/// use flux::http::ClientIp;
///
/// async fn whoami(ip: ClientIp) -> String {
///     format!("you are {}", ip.key().as_str())
/// }
/// let app: Router = Router::new().route("/whoami", get(whoami));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientIp(Key);

impl ClientIp {
    /// The client's key: `192.0.2.1`, or `2001:db8:1:2::/64` for an IPv6 client.
    pub fn key(&self) -> &Key {
        &self.0
    }

    /// The client's key, by value.
    pub fn into_key(self) -> Key {
        self.0
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let flux = Serving::of(parts);
        match client_ip(&flux, parts) {
            Some(ip) => Ok(ClientIp(Key::from_ip(ip))),
            None => Err(no_peer_address()),
        }
    }
}

/// The connection's peer address: `ConnectInfo`, or axum's `MockConnectInfo` in tests.
fn peer(parts: &Parts) -> Option<SocketAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr)
        .or_else(|| {
            parts
                .extensions
                .get::<axum::extract::connect_info::MockConnectInfo<SocketAddr>>()
                .map(|m| m.0)
        })
}

/// The client's address as `flux` sees it: the peer, or behind its trusted proxies the
/// address they forwarded.
pub(crate) fn client_ip(flux: &Flux, parts: &Parts) -> Option<IpAddr> {
    let peer = peer(parts)?;
    Some(flux.trusted_proxies().client_ip(peer, &parts.headers))
}

/// The limiter serving a request: the [`Flux`] in its extensions, else the global one.
#[derive(Clone, Debug)]
pub(crate) enum Serving {
    /// The process-wide limiter.
    Global(&'static Flux),
    /// The limiter the request carries.
    Request(Flux),
}

impl Serving {
    /// The limiter serving the request of `parts`.
    pub(crate) fn of(parts: &Parts) -> Serving {
        match parts.extensions.get::<Flux>() {
            Some(flux) => Serving::Request(flux.clone()),
            None => Serving::Global(Flux::global()),
        }
    }
}

impl std::ops::Deref for Serving {
    type Target = Flux;

    fn deref(&self) -> &Flux {
        match self {
            Serving::Global(flux) => flux,
            Serving::Request(flux) => flux,
        }
    }
}

/// The limiter serving a request, as an axum extractor: the [`Flux`] in its extensions
/// (inserted by [`FluxLayer::flux`](crate::FluxLayer::flux) or `Extension(flux)`), else the
/// process-wide one; the same that `#[rate_limit]` checks with. A handler charges a cost
/// known after the work with it ([`Flux::charge`]), on the buckets its check used.
///
/// ```
/// use axum::{Router, routing::get};
/// use flux::{Flux, Limit, Rate};
///
/// static ROWS: Limit = Limit::new("rows", Rate::per_minute::<100_000>());
///
/// async fn export(flux: Flux) -> String {
///     let rows = 1_234; // known once the export is done
///     flux.charge("tenant-7", &ROWS, rows).await;
///     format!("{rows} rows")
/// }
/// let app: Router = Router::new().route("/export", get(export));
/// ```
impl<S: Send + Sync> FromRequestParts<S> for Flux {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Flux::clone(&Serving::of(parts)))
    }
}

/// Not public API (reached through `__private`): what a rate-limited handler needs from its
/// request besides its key: the limiter serving it and, when `IP` (the handler is keyed by
/// address) or when the limiter exempts addresses, the client's address. Never rejects:
/// a missing peer address becomes the key's error, so an exempt request still passes.
#[derive(Clone, Debug)]
pub struct Scope<const IP: bool> {
    pub(crate) flux: Serving,
    pub(crate) ip: Option<IpAddr>,
}

impl<S: Send + Sync, const IP: bool> FromRequestParts<S> for Scope<IP> {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let flux = Serving::of(parts);
        let ip = if IP || flux.has_exempt_ips() {
            client_ip(&flux, parts)
        } else {
            None
        };
        Ok(Scope { flux, ip })
    }
}

impl<const IP: bool> Scope<IP> {
    /// The key of `key = "ip"`: the client's address, or the 500 answer without one.
    #[allow(clippy::result_large_err)] // the rejection is the response itself
    pub(crate) fn ip_key(&self) -> Result<Key, Response> {
        self.ip.map(Key::from_ip).ok_or_else(no_peer_address)
    }

    /// Whether the limiter exempts this request's client.
    pub(crate) fn is_exempt(&self) -> bool {
        self.ip.is_some_and(|ip| self.flux.is_exempt_ip(ip))
    }
}

/// Not public API (reached through `__private`): the key of `key = "header:NAME"` for names
/// of up to 32 bytes, read without copying the
/// request's other headers: the lowercase name is packed, little-endian and zero-padded, into
/// the two const parameters (a type cannot carry a `&str` on stable Rust). A request without
/// the header is refused with `400` (by [`HeaderKey::key`], so that an exempt request
/// passes), never lumped with other clients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderKey<const A: u128, const B: u128>(Option<Key>);

impl<const A: u128, const B: u128> HeaderKey<A, B> {
    fn name() -> ([u8; 32], usize) {
        let mut bytes = [0u8; 32];
        bytes[..16].copy_from_slice(&A.to_le_bytes());
        bytes[16..].copy_from_slice(&B.to_le_bytes());
        let len = bytes.iter().position(|&b| b == 0).unwrap_or(32);
        (bytes, len)
    }

    /// The key, or the `400` answer for a request without the header.
    #[allow(clippy::result_large_err)] // the rejection is the response itself
    pub fn key(self) -> Result<Key, Response> {
        self.0.ok_or_else(|| {
            let (bytes, len) = Self::name();
            missing_header(std::str::from_utf8(&bytes[..len]).unwrap_or_default())
        })
    }
}

impl<S: Send + Sync, const A: u128, const B: u128> FromRequestParts<S> for HeaderKey<A, B> {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let (bytes, len) = Self::name();
        let name = std::str::from_utf8(&bytes[..len]).unwrap_or_default();
        Ok(HeaderKey(match parts.headers.get(name) {
            Some(value) if !value.as_bytes().is_empty() => Some(Key::new(value.as_bytes())),
            _ => None,
        }))
    }
}

/// Not public API (reached through `__private`): the request's headers, for
/// `key = "header:NAME"` with names longer than 32 bytes.
#[derive(Clone, Debug)]
pub struct RequestHeaders(pub HeaderMap);

impl<S: Send + Sync> FromRequestParts<S> for RequestHeaders {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(RequestHeaders(parts.headers.clone()))
    }
}

impl RequestHeaders {
    /// The key from header `name`; a request without it gets a `400` saying which header
    /// is missing (it is never lumped with other clients).
    #[allow(clippy::result_large_err)] // the rejection is the response itself
    pub fn key(&self, name: &'static str) -> Result<Key, Response> {
        match self.0.get(name) {
            Some(value) if !value.as_bytes().is_empty() => Ok(Key::new(value.as_bytes())),
            _ => Err(missing_header(name)),
        }
    }
}
