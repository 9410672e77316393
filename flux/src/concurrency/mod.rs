//! Concurrency limits: at most `max` requests in flight per (limit, client), across every
//! instance that shares the Redis.
//!
//! A request takes a *slot* ([`Flux::acquire`](crate::Flux::acquire)) and holds it, as a [`Slot`] guard, until the
//! guard is dropped: when the response has been produced, when the handler panics, or when
//! the client disconnects and the request's future is dropped. Slots live in Redis, one
//! sorted set per (limit, client) holding slot ids scored by their lease's expiry
//! (`lua/concurrency.lua`: one atomic call acquires, one releases). The holder renews its
//! lease every third of it, so a handler may run for any time; a slot whose holder died
//! (a crashed or killed instance) is freed when its lease runs out, 30 s by default
//! ([`DEFAULT_LEASE`]). The in-memory backend keeps the same table per process.
//!
//! The breaker, the deadline and the failure policy are the rate limits': when Redis cannot
//! answer, `Open` admits without a slot, `Closed` refuses (503) and `Local` takes a slot of
//! this process' table.
//!
//! Above the limiter, which it uses for the store, the breaker and the policy; the HTTP
//! flow takes a slot through [`Flux::acquire`](crate::Flux::acquire)'s path and turns a
//! refusal into its response.

use std::borrow::Cow;
use std::fmt;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use flux_core::check_concurrency;
pub use flux_core::{ConcurrencyError, DEFAULT_LEASE, MAX_LEASE, MIN_LEASE};

use crate::Flux;
use crate::model::decision::Source;
use crate::model::key::{Key, ToKey};
use crate::outage::policy::FailurePolicy;
use crate::store::SlotOp;
use crate::telemetry::{Outcome, SlotMetrics, Throttled, WARN_EVERY, shown_name, warn_throttled};

/// The `Retry-After` of a request refused by a concurrency limit: when a slot frees is not
/// known (it is when another request ends), so clients are told to try again shortly.
pub const CONCURRENCY_RETRY_AFTER: Duration = Duration::from_secs(1);

/// At most `max` requests in flight per client: a name (the slot set's identity), the
/// maximum, and the lease that frees the slots of a holder that died.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), flux::Error> {
/// use flux::Flux;
/// use flux::concurrency::ConcurrencyLimit;
/// use std::time::Duration;
///
/// static EXPORTS: ConcurrencyLimit = ConcurrencyLimit::new("exports", 2);
/// let flux = Flux::builder().build()?; // in-memory; .redis(url) for Redis
/// let first = flux.acquire("alice", &EXPORTS).await.expect("a free slot");
/// let _second = flux.acquire("alice", &EXPORTS).await.expect("a free slot");
/// let third = flux.acquire("alice", &EXPORTS).await;
/// assert_eq!(third.unwrap_err().max(), 2);
/// drop(first); // released
/// assert!(flux.acquire("alice", &EXPORTS).await.is_ok());
/// assert_eq!(EXPORTS.lease(), Duration::from_secs(30));
/// # Ok(()) }
/// ```
pub struct ConcurrencyLimit {
    name: Cow<'static, str>,
    max: NonZeroU32,
    lease: Duration,
    /// This limit's metrics handles, registered on first use. Not part of its identity.
    metrics: OnceLock<Arc<SlotMetrics>>,
}

impl Clone for ConcurrencyLimit {
    fn clone(&self) -> Self {
        ConcurrencyLimit {
            name: self.name.clone(),
            max: self.max,
            lease: self.lease,
            metrics: self.metrics.clone(),
        }
    }
}

impl PartialEq for ConcurrencyLimit {
    fn eq(&self, other: &Self) -> bool {
        (&self.name, self.max, self.lease) == (&other.name, other.max, other.lease)
    }
}

impl Eq for ConcurrencyLimit {}

impl fmt::Debug for ConcurrencyLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyLimit")
            .field("name", &self.name)
            .field("max", &self.max)
            .field("lease", &self.lease)
            .finish()
    }
}

impl ConcurrencyLimit {
    /// At most `max` in flight per client, under the default lease ([`DEFAULT_LEASE`]).
    ///
    /// # Panics
    ///
    /// When `max` is 0; in a `static` or `const` that is a compile error.
    pub const fn new(name: &'static str, max: u32) -> ConcurrencyLimit {
        let Some(max) = NonZeroU32::new(max) else {
            panic!("flux: a concurrency limit's max must be at least 1");
        };
        ConcurrencyLimit {
            name: Cow::Borrowed(name),
            max,
            lease: DEFAULT_LEASE,
            metrics: OnceLock::new(),
        }
    }

    /// Like [`ConcurrencyLimit::new`], with a name computed at run time and `max` checked.
    pub fn named(
        name: impl Into<Cow<'static, str>>,
        max: u32,
    ) -> Result<ConcurrencyLimit, ConcurrencyError> {
        check_concurrency(max, DEFAULT_LEASE)?;
        Ok(ConcurrencyLimit {
            name: name.into(),
            max: NonZeroU32::new(max).ok_or(ConcurrencyError::ZeroMax)?,
            lease: DEFAULT_LEASE,
            metrics: OnceLock::new(),
        })
    }

    /// This limit with slots held under `lease` (from [`MIN_LEASE`] to [`MAX_LEASE`]):
    /// the time a crashed instance's slots stay taken. Live holders renew it.
    pub fn with_lease(mut self, lease: Duration) -> Result<ConcurrencyLimit, ConcurrencyError> {
        check_concurrency(self.max.get(), lease)?;
        self.lease = lease;
        Ok(self)
    }

    /// For `#[concurrency_limit]` (through the macros' support module), which has validated
    /// every argument at compile time.
    pub(crate) const fn from_macro(
        name: &'static str,
        max: u32,
        lease_ms: u64,
    ) -> ConcurrencyLimit {
        let lease = Duration::from_millis(lease_ms);
        let (Some(max), Ok(())) = (NonZeroU32::new(max), check_concurrency(max, lease)) else {
            panic!("flux: invalid limit from #[concurrency_limit]");
        };
        ConcurrencyLimit {
            name: Cow::Borrowed(name),
            max,
            lease,
            metrics: OnceLock::new(),
        }
    }

    /// The slot set's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn name_cow(&self) -> &Cow<'static, str> {
        &self.name
    }

    /// Requests in flight at most, per client.
    pub const fn max(&self) -> u32 {
        self.max.get()
    }

    /// How long a slot stays taken after its holder stopped renewing it.
    pub const fn lease(&self) -> Duration {
        self.lease
    }

    pub(crate) fn metrics(&self) -> &SlotMetrics {
        self.metrics.get_or_init(Arc::default)
    }

    /// The slot set's storage key: `<prefix>:{<client>}#slots:<name>`, which no rate
    /// limit's bucket can be (see `Key::slot_set`).
    fn storage_key(&self, prefix: &str, key: &Key) -> String {
        key.slot_set(prefix, &self.name)
    }
}

/// A request refused by a concurrency limit: `max` were in flight (or, from the `Closed`
/// failure policy, the store could not be asked). As a response: `429 Too Many Requests`
/// with `Retry-After: 1` ([`CONCURRENCY_RETRY_AFTER`]), or `503` for the `Closed` policy.
///
/// ```
/// use axum::response::IntoResponse;
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), flux::Error> {
/// use flux::Flux;
/// use flux::concurrency::ConcurrencyLimit;
///
/// static ONE: ConcurrencyLimit = ConcurrencyLimit::new("one", 1);
/// let flux = Flux::builder().build()?;
/// let _held = flux.acquire("k", &ONE).await.expect("free");
/// let refused = flux.acquire("k", &ONE).await.unwrap_err();
/// assert!(refused.to_string().contains("concurrency limit"));
/// let response = refused.into_response();
/// assert_eq!(response.status(), 429);
/// assert_eq!(response.headers()["retry-after"], "1");
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConcurrencyLimited {
    name: Cow<'static, str>,
    max: u32,
    source: Source,
}

impl ConcurrencyLimited {
    /// The limit's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The limit's maximum in flight.
    pub fn max(&self) -> u32 {
        self.max
    }

    /// Who refused: the backend, or the `Closed` failure policy
    /// (`Source::FailClosed`).
    pub fn source(&self) -> Source {
        self.source
    }

    /// When to try again: [`CONCURRENCY_RETRY_AFTER`].
    pub fn retry_after(&self) -> Duration {
        CONCURRENCY_RETRY_AFTER
    }
}

impl fmt::Display for ConcurrencyLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.source == Source::FailClosed {
            f.write_str(
                "concurrency limiter unavailable and the failure policy is closed: request refused",
            )
        } else {
            write!(
                f,
                "concurrency limit exceeded: at most {} requests in flight; retry after {} s",
                self.max,
                CONCURRENCY_RETRY_AFTER.as_secs()
            )
        }
    }
}

impl std::error::Error for ConcurrencyLimited {}

/// A held concurrency slot: dropping it releases the slot. `#[concurrency_limit]` drops it
/// when the response has been produced, and a panic or a dropped future drops it too.
///
/// The release of a Redis slot is spawned on the current tokio runtime (a drop never
/// waits for Redis); without a runtime, or when Redis cannot be reached, the slot frees
/// itself when its lease runs out. While held, the lease is renewed every third of it.
/// A `Slot` that holds nothing (an exempt request, the `Open` policy during an outage,
/// shadow mode over the limit) releases nothing.
#[must_use = "the slot is released when this guard is dropped"]
pub struct Slot {
    held: Option<Held>,
}

struct Held {
    flux: Flux,
    storage: Arc<str>,
    id: u64,
    lease: Duration,
    /// Where the slot was taken: the (remote) store, or this process' table.
    remote: bool,
    in_flight: metrics::Gauge,
    renewal: Option<tokio::task::JoinHandle<()>>,
}

impl Slot {
    /// A slot that holds nothing.
    pub(crate) fn none() -> Slot {
        Slot { held: None }
    }

    /// Whether a slot is held (and will be released on drop).
    pub fn is_held(&self) -> bool {
        self.held.is_some()
    }
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slot")
            .field("held", &self.is_held())
            .finish_non_exhaustive()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(held) = self.held.take() else {
            return;
        };
        if let Some(renewal) = &held.renewal {
            renewal.abort();
        }
        held.in_flight.decrement(1.0);
        if !held.remote {
            held.flux
                .local_store()
                .slot(&held.storage, held.id, SlotOp::Release, held.lease);
            return;
        }
        release_later(held.flux, held.storage, held.id, held.lease, false);
    }
}

/// Most releases retried at once by this process; beyond that, slots are left to their
/// lease (a long outage must not pile up tasks).
const MAX_PENDING_RELEASES: usize = 10_000;
/// Releases being retried now, process-wide.
static PENDING_RELEASES: AtomicUsize = AtomicUsize::new(0);
/// Attempts of one release, at most.
const RELEASE_ATTEMPTS: u32 = 8;
/// The wait before a release's second attempt; it doubles after each, up to
/// [`RELEASE_RETRY_MAX`]: eight attempts span about 11 s.
const RELEASE_RETRY_FIRST: Duration = Duration::from_millis(100);
const RELEASE_RETRY_MAX: Duration = Duration::from_secs(5);
/// How long after an acquisition of unknown outcome a release that found nothing is tried
/// again: the acquisition may still be on its way (queued behind a reconnection).
const RELEASE_SETTLE: Duration = Duration::from_secs(2);

/// Releases slot `id` of the store's slot set `storage` in the background, retrying a
/// release that fails (up to [`RELEASE_ATTEMPTS`], with backoff, and never once the slot's
/// lease has run out: the lease frees it then). `unsure`: the slot was being acquired
/// when its answer was lost (a missed deadline, an error, a dropped request), so it may be
/// held or not, or not yet: a release that finds nothing is tried again for
/// [`RELEASE_SETTLE`]. Without a tokio runtime, or with [`MAX_PENDING_RELEASES`] already
/// retrying, the lease frees the slot.
fn release_later(flux: Flux, storage: Arc<str>, id: u64, lease: Duration, unsure: bool) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    if PENDING_RELEASES.fetch_add(1, Ordering::Relaxed) >= MAX_PENDING_RELEASES {
        PENDING_RELEASES.fetch_sub(1, Ordering::Relaxed);
        tracing::debug!(
            target: "flux",
            "too many concurrency slots being released: this one is left to its lease"
        );
        return;
    }
    runtime.spawn(async move {
        release(&flux, &storage, id, lease, unsure).await;
        PENDING_RELEASES.fetch_sub(1, Ordering::Relaxed);
    });
}

/// The attempts of [`release_later`].
async fn release(flux: &Flux, storage: &str, id: u64, lease: Duration, unsure: bool) {
    let started = tokio::time::Instant::now();
    let mut wait = RELEASE_RETRY_FIRST;
    for _ in 1..RELEASE_ATTEMPTS {
        match flux.store().slot(storage, id, SlotOp::Release, lease).await {
            Ok((true, _)) => return,
            Ok((false, _)) if !unsure || started.elapsed() + wait > RELEASE_SETTLE => return,
            // Not held (yet), or the release failed: again after `wait`.
            Ok((false, _)) | Err(_) => {}
        }
        if started.elapsed() + wait >= lease {
            return; // the lease frees it first
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(RELEASE_RETRY_MAX);
    }
    let _ = flux.store().slot(storage, id, SlotOp::Release, lease).await;
}

/// Until disarmed, releases (in the background) the remote slot an acquisition asked for:
/// armed while the acquisition's answer is unknown, so that a missed deadline, an error or
/// a dropped request future never leaves a slot taken in Redis with no holder.
struct Acquiring<'a> {
    flux: &'a Flux,
    storage: &'a Arc<str>,
    id: u64,
    lease: Duration,
    /// The call was made (a call the breaker skips never is).
    sent: AtomicBool,
    /// Redis' answer arrived: the slot was taken (its guard releases it) or refused.
    answered: bool,
}

impl Drop for Acquiring<'_> {
    fn drop(&mut self) {
        if self.sent.load(Ordering::Relaxed) && !self.answered {
            let storage = Arc::clone(self.storage);
            release_later(self.flux.clone(), storage, self.id, self.lease, true);
        }
    }
}

/// Slot ids of this process (the store makes them unique across instances).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Flux {
    /// Takes a slot of `limit` for `key`, applying the failure policy if Redis cannot
    /// answer: the guard releases it when dropped, or `Err` when `max` are in flight.
    pub async fn acquire(
        &self,
        key: impl ToKey,
        limit: &ConcurrencyLimit,
    ) -> Result<Slot, ConcurrencyLimited> {
        self.acquire_with(&key.to_key(), limit, None, None).await
    }

    /// The acquisition behind every entry point: decides, counts (`flux_decisions_total`),
    /// and in shadow mode (this call's `shadow`, else the limiter's) admits over the limit
    /// without a slot.
    pub(crate) async fn acquire_with(
        &self,
        key: &Key,
        limit: &ConcurrencyLimit,
        policy: Option<FailurePolicy>,
        shadow: Option<bool>,
    ) -> Result<Slot, ConcurrencyLimited> {
        let shadow = shadow.unwrap_or_else(|| self.is_shadow());
        let key = &*self.store().stored_key_ref(key);
        let result = self.take_slot(key, limit, policy).await;
        let (outcome, source) = match &result {
            Ok((_, source)) => (Outcome::Allowed, *source),
            Err(denied) if shadow => (Outcome::ShadowDenied, denied.source),
            Err(denied) => (Outcome::Denied, denied.source),
        };
        limit
            .metrics()
            .counters
            .count(limit.name_cow(), outcome, source.label(self.is_redis()));
        match result {
            Ok((slot, _)) => Ok(slot),
            Err(denied) => {
                if denied.source != Source::FailClosed {
                    tracing::debug!(
                        target: "flux",
                        limit = limit.name(),
                        key = %key.digest_hex(),
                        max = limit.max(),
                        shadow,
                        "concurrency limit denied a request"
                    );
                }
                if shadow {
                    Ok(Slot::none())
                } else {
                    Err(denied)
                }
            }
        }
    }

    /// A slot from the store, the breaker and the failure policy, and who decided.
    async fn take_slot(
        &self,
        key: &Key,
        limit: &ConcurrencyLimit,
        policy: Option<FailurePolicy>,
    ) -> Result<(Slot, Source), ConcurrencyLimited> {
        let storage: Arc<str> = limit.storage_key(self.prefix(), key).into();
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let policy = policy.unwrap_or_else(|| self.failure_policy());
        let denied = |source| ConcurrencyLimited {
            name: limit.name_cow().clone(),
            max: limit.max(),
            source,
        };
        if !self.store().is_remote() {
            return self
                .take_local(storage, id, limit, Source::Backend)
                .ok_or(denied(Source::Backend));
        }
        let ticket = self.pass(key.slot());
        let op = SlotOp::Acquire { max: limit.max() };
        // Sent and not answered (a missed deadline, an error, this future dropped): the
        // slot may be taken in Redis, so `acquiring` releases it in the background.
        let mut acquiring = Acquiring {
            flux: self,
            storage: &storage,
            id,
            lease: limit.lease(),
            sent: AtomicBool::new(false),
            answered: false,
        };
        let call = async {
            acquiring.sent.store(true, Ordering::Relaxed);
            self.store().slot(&storage, id, op, limit.lease()).await
        };
        let answer = self.guarded(ticket, policy, call).await;
        acquiring.answered = answer.is_some();
        drop(acquiring);
        match answer {
            Some((true, _)) => return Ok((self.hold(storage, id, limit, true), Source::Backend)),
            Some((false, _)) => return Err(denied(Source::Backend)),
            None => {}
        }
        match policy {
            FailurePolicy::Open => Ok((Slot::none(), Source::FailOpen)),
            FailurePolicy::Closed => Err(denied(Source::FailClosed)),
            FailurePolicy::Local => self
                .take_local(storage, id, limit, Source::Local)
                .ok_or(denied(Source::Local)),
        }
    }

    /// A slot of this process' table.
    fn take_local(
        &self,
        storage: Arc<str>,
        id: u64,
        limit: &ConcurrencyLimit,
        source: Source,
    ) -> Option<(Slot, Source)> {
        let op = SlotOp::Acquire { max: limit.max() };
        let (taken, _) = self.local_store().slot(&storage, id, op, limit.lease());
        taken.then(|| (self.hold(storage, id, limit, false), source))
    }

    /// The guard of a slot just taken, with its lease renewal running.
    fn hold(&self, storage: Arc<str>, id: u64, limit: &ConcurrencyLimit, remote: bool) -> Slot {
        let in_flight = limit.metrics().in_flight(limit.name_cow()).clone();
        in_flight.increment(1.0);
        let lease = limit.lease();
        let renewal = tokio::runtime::Handle::try_current().ok().map(|runtime| {
            let name = limit.name_cow().clone();
            runtime.spawn(renew(
                self.clone(),
                Arc::clone(&storage),
                id,
                lease,
                remote,
                name,
            ))
        });
        Slot {
            held: Some(Held {
                flux: self.clone(),
                storage,
                id,
                lease,
                remote,
                in_flight,
                renewal,
            }),
        }
    }
}

/// Renews a held slot's lease every third of it until the guard aborts this task. A slot
/// that lapsed anyway (the store unreachable for a whole lease) is not taken again: another
/// request may hold it by now. That is logged at WARN once per limit per [`WARN_EVERY`]
/// (every slot held through an outage lapses: as many as the clients sent requests).
async fn renew(
    flux: Flux,
    storage: Arc<str>,
    id: u64,
    lease: Duration,
    remote: bool,
    limit: Cow<'static, str>,
) {
    static LAPSED: Throttled = Throttled::new(WARN_EVERY);
    let mut ticks = tokio::time::interval(lease / 3);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let held = if remote {
            match flux.store().slot(&storage, id, SlotOp::Renew, lease).await {
                Ok((held, _)) => held,
                // Tried again at the next tick; the lease covers two more.
                Err(_) => continue,
            }
        } else {
            flux.local_store()
                .slot(&storage, id, SlotOp::Renew, lease)
                .0
        };
        if !held {
            let limit = shown_name(&limit);
            warn_throttled!(
                LAPSED,
                limit,
                limit,
                "a concurrency slot's lease ran out while its request was still running \
                 (the store was unreachable for longer than the lease): the request goes on \
                 without its slot"
            );
            return;
        }
    }
}
