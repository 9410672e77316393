//! Settling a cost known only after the work is done: [`Flux::charge`] takes tokens from a
//! bucket whatever it holds, into debt if need be, so that the client's next requests wait.
//!
//! A charge is the check's own GCRA step (the model's `gcra::debt`): the same script on Redis, the same
//! `decide` in memory, with a tolerance no charge reaches, so `tat` moves by `cost x T` past
//! wherever it stood; what is left and when the next request passes are then told against the
//! limit's real tolerance (`gcra::settled`). There is no refund: GCRA has no clean way to give
//! tokens back on every backend, so check a low estimate up front and charge the rest.

use std::time::Duration;

use crate::model::decision::Source;
use crate::model::gcra::{self, Bucket};
use crate::model::key::{Key, ToKey};
use crate::model::limit::Limit;
use crate::outage::policy::FailurePolicy;
use crate::{Error, Flux};

/// What a [`Flux::charge`] did: whether the cost was recorded, and the bucket after it.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), flux::Error> {
/// use flux::{Flux, Limit, Rate};
///
/// static TOKENS: Limit = Limit::new("tokens", Rate::per_minute::<600>()); // 10 a second
/// let flux = Flux::builder().build()?;
/// let charged = flux.charge("alice", &TOKENS, 620).await; // 20 past the burst of 600
/// assert!(charged.recorded());
/// assert_eq!(charged.remaining, 0);
/// // The next request waits for the 20 owed and its own token: about 2.1 s.
/// assert!(charged.retry_after.as_millis() > 2_000);
/// assert!(!flux.check("alice", &TOKENS).await.allowed);
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Charged {
    /// Whole tokens left in the bucket after the charge (0 while the client is in debt).
    pub remaining: u32,
    /// How long until a request of the limit's own cost is admitted again: zero when that
    /// many tokens are left, else the time to refill the debt and that cost at the limit's
    /// rate.
    pub retry_after: Duration,
    /// How long until the bucket is full again.
    pub reset_after: Duration,
    /// Who recorded the charge: [`Source::Backend`] (Redis, or the in-memory backend), or
    /// [`Source::Local`] (Redis unavailable, `Local` policy: the per-process bucket). With
    /// [`Source::FailOpen`] or [`Source::FailClosed`] Redis was unavailable and the charge
    /// was dropped (nothing is left to refuse once the work is done); the other fields are
    /// then zero.
    pub source: Source,
    recorded: bool,
}

impl Charged {
    /// Whether the cost was taken from a bucket (Redis', the in-memory backend's, or the
    /// `Local` policy's). False when Redis was unavailable under the `Open` or `Closed`
    /// policy, and when the client already owes more than 10 years of refill.
    pub fn recorded(&self) -> bool {
        self.recorded
    }

    fn dropped(source: Source) -> Charged {
        Charged {
            remaining: 0,
            retry_after: Duration::ZERO,
            reset_after: Duration::ZERO,
            source,
            recorded: false,
        }
    }
}

impl Flux {
    /// Takes `cost` tokens of `limit` from `key`'s bucket now, even past empty: the client
    /// then owes them, and its next requests are denied until the debt has refilled at the
    /// limit's rate. For costs known only after the work is done (the tokens of an LLM
    /// answer, rows exported): check an estimate up front, then charge the difference.
    ///
    /// Redis calls go through the same deadline, breaker and failure policy as checks. When
    /// Redis is unavailable, the `Local` policy charges this process' bucket (which its
    /// local checks see); `Open` and `Closed` drop the charge (logged by the breaker like a
    /// failed check), so the client pays less than it used for the length of the outage.
    /// A debt is capped: one charge adds at most 10 years of refill, and a client already
    /// more than 10 years in debt is charged nothing more.
    ///
    /// There is no negative cost (refund): make the up-front estimate a low one.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use flux::{Flux, Limit, Rate};
    ///
    /// static BUDGET: Limit = Limit::new("llm-tokens", Rate::per_minute::<10_000>());
    /// let flux = Flux::builder().build()?;
    /// let estimate = BUDGET.clone().with_cost(500)?;
    /// assert!(flux.check("user-7", &estimate).await.allowed); // 500 up front
    /// let used = 1_800; // known once the answer is out
    /// flux.charge("user-7", &BUDGET, used - 500).await;
    /// # Ok(()) }
    /// ```
    pub async fn charge(&self, key: impl ToKey, limit: &Limit, cost: u64) -> Charged {
        self.charge_with_policy(key, limit, cost, None).await
    }

    /// Like [`charge`](Self::charge), with a failure policy for this charge only.
    pub async fn charge_with_policy(
        &self,
        key: impl ToKey,
        limit: &Limit,
        cost: u64,
        policy: Option<FailurePolicy>,
    ) -> Charged {
        let key = self.store().stored_key(key.to_key());
        // Under an override the charge uses the limit in force; none when off.
        let Some(limit) = self.limit_in_force(&key, limit) else {
            return Charged::dropped(Source::Exempt);
        };
        let limit = &*limit;
        let policy = policy.unwrap_or_else(|| self.failure_policy());
        if !self.store().is_remote() {
            return self.charge_local(&key, limit, cost, None, Source::Backend);
        }
        let ticket = self.pass(key.slot());
        let call = self.charge_store(&key, limit, cost, None);
        if let Some(charged) = self.guarded(ticket, policy, call).await {
            return charged;
        }
        match policy {
            FailurePolicy::Local => self.charge_local(&key, limit, cost, None, Source::Local),
            FailurePolicy::Open => Charged::dropped(Source::FailOpen),
            FailurePolicy::Closed => Charged::dropped(Source::FailClosed),
        }
    }

    /// Charges without breaker or failure policy: Redis' answer or its error (with the
    /// deadline applied). For callers that want to handle failures themselves.
    pub async fn try_charge(
        &self,
        key: impl ToKey,
        limit: &Limit,
        cost: u64,
    ) -> Result<Charged, Error> {
        self.settle(key, limit, cost, None).await
    }

    /// [`try_charge`](Flux::try_charge) at an explicit time, `now_micros` µs on the
    /// backend's time line, as [`try_check_at`](Flux::try_check_at): tests check the exact
    /// wait a settled debt imposes.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), flux::Error> {
    /// use flux::{Flux, Limit, Rate};
    ///
    /// static API: Limit = Limit::new("api", Rate::per_second::<1>()); // burst 1
    /// let flux = Flux::builder().build()?;
    /// let t0 = 1_000_000;
    /// let charged = flux.try_charge_at("k", &API, 3, t0).await?; // 2 tokens of debt
    /// assert_eq!(charged.retry_after.as_secs(), 3);
    /// let api = std::slice::from_ref(&API);
    /// assert!(!flux.try_check_at("k", api, t0 + 2_999_999).await?.allowed);
    /// assert!(flux.try_check_at("k", api, t0 + 3_000_000).await?.allowed);
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "testing")]
    pub async fn try_charge_at(
        &self,
        key: impl ToKey,
        limit: &Limit,
        cost: u64,
        now_micros: u64,
    ) -> Result<Charged, Error> {
        self.settle(key, limit, cost, Some(now_micros)).await
    }

    /// A charge without breaker or failure policy, at `now_micros` (µs on the backend's
    /// time line) when given: Redis' answer or its error. Behind `Flux::try_charge_at` of
    /// the `testing` feature.
    pub(crate) async fn settle(
        &self,
        key: impl ToKey,
        limit: &Limit,
        cost: u64,
        now_micros: Option<u64>,
    ) -> Result<Charged, Error> {
        let key = self.store().stored_key(key.to_key());
        // Overrides, as in `charge_with_policy`.
        let Some(limit) = self.limit_in_force(&key, limit) else {
            return Ok(Charged::dropped(Source::Exempt));
        };
        let limit = &*limit;
        self.charge_store(&key, limit, cost, now_micros).await
    }

    /// One charge in the store: the check's step (on Redis, its script) with
    /// [`gcra::debt`]'s parameters.
    async fn charge_store(
        &self,
        key: &Key,
        limit: &Limit,
        cost: u64,
        at: Option<u64>,
    ) -> Result<Charged, Error> {
        let bucket = key.bucket(self.prefix(), limit.name());
        let params = [gcra::debt(limit.params(), cost)];
        let mut out = Vec::with_capacity(1);
        let recorded = self
            .store()
            .check(key, std::slice::from_ref(&bucket), &params, 1, at, &mut out)
            .await?;
        Ok(charged(limit, recorded > 0, &out, Source::Backend))
    }

    /// A charge of the per-process buckets (the in-memory backend's, or the `Local`
    /// policy's).
    fn charge_local(
        &self,
        key: &Key,
        limit: &Limit,
        cost: u64,
        at: Option<u64>,
        source: Source,
    ) -> Charged {
        let bucket = key.bucket(self.prefix(), limit.name());
        let params = [gcra::debt(limit.params(), cost)];
        let mut out = Vec::with_capacity(1);
        let recorded =
            self.local_store()
                .check(key, std::slice::from_ref(&bucket), &params, at, &mut out);
        charged(limit, recorded, &out, source)
    }
}

/// The outcome of a charge's script call or in-memory step, against `limit`'s real
/// tolerance.
fn charged(limit: &Limit, recorded: bool, out: &[Bucket], source: Source) -> Charged {
    let Some(&bucket) = out.first() else {
        return Charged::dropped(source);
    };
    let bucket = gcra::settled(limit.params(), bucket);
    Charged {
        remaining: u32::try_from(bucket.remaining).unwrap_or(u32::MAX),
        retry_after: Duration::from_micros(bucket.retry_after),
        reset_after: Duration::from_micros(bucket.reset_after),
        source,
        recorded,
    }
}
