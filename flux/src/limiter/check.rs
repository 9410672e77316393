//! The check: the one path every rate-limit decision takes, whatever asked for it (the
//! attribute, the layer, a plain function, a direct call). In order: the overrides in force,
//! then (on a remote store) the fleet's heartbeat, leased tokens, the breaker, the deny
//! cache, the store's script call, and the failure policy when the store cannot answer;
//! then counting, the denial log, and shadow mode.

use std::borrow::Cow;

use crate::hot::deny_cache::DenyCache;
use crate::hot::lease::{self, Refill};
use crate::model::cost::Unadmissible;
use crate::model::decision::{Decision, Source};
use crate::model::gcra::Params;
use crate::model::key::{Key, ToKey};
use crate::model::limit::Limit;
use crate::outage::breaker::Pass;
use crate::outage::fleet;
use crate::outage::policy::FailurePolicy;
use crate::overrides::Applied;
use crate::telemetry::{Outcome, Throttled, WARN_EVERY, shown_name, warn_throttled};
use crate::{Error, Flux};

impl Flux {
    /// Checks one limit for `key`, applying the failure policy if Redis cannot answer.
    pub async fn check(&self, key: impl ToKey, limit: &Limit) -> Decision {
        self.check_all(key, std::slice::from_ref(limit)).await
    }

    /// Checks several limits for `key` at once, all or nothing: the request is admitted
    /// only if every limit admits it, and a denial charges no bucket.
    pub async fn check_all(&self, key: impl ToKey, limits: &[Limit]) -> Decision {
        self.check_with_policy(key, limits, None).await
    }

    /// Like [`check_all`](Self::check_all) with a failure policy for this check only.
    pub async fn check_with_policy(
        &self,
        key: impl ToKey,
        limits: &[Limit],
        policy: Option<FailurePolicy>,
    ) -> Decision {
        self.check_with(key, limits, policy, None).await
    }

    /// The check behind every entry point: decides, counts the decision
    /// (`flux_decisions_total`), logs a denial, and in shadow mode (this check's `shadow`,
    /// else the limiter's) admits what the limits denied.
    pub(crate) async fn check_with(
        &self,
        key: impl ToKey,
        limits: &[Limit],
        policy: Option<FailurePolicy>,
        shadow: Option<bool>,
    ) -> Decision {
        if limits.is_empty() {
            // Nothing to enforce.
            return Decision::unchecked(true, Source::Backend);
        }
        // The key as the store keeps it (Redis: a digest), for overrides and buckets alike.
        let key = self.inner.store.stored_key(key.to_key());
        // Decide with the limits in force, report by the checked ones; a check whose every
        // limit is turned off skips the store.
        let applied = self.runtime_limits(&key, limits);
        let in_force = applied.as_ref().map_or(limits, |a| &a.limits[..]);
        let mut decision = if in_force.is_empty() {
            Decision::unchecked(true, Source::Exempt)
        } else {
            self.enforce(&key, in_force, policy).await
        };
        if let Some(a) = &applied {
            decision.index = a.original(decision.index);
        }
        let shadow = shadow.unwrap_or(self.inner.shadow);
        let outcome = match (decision.allowed, shadow) {
            (true, _) => Outcome::Allowed,
            (false, false) => Outcome::Denied,
            (false, true) => Outcome::ShadowDenied,
        };
        self.count(limits, outcome, decision.source);
        if !decision.allowed {
            if decision.source != Source::FailClosed {
                log_denial(&key, limits, &decision, shadow);
            }
            if shadow {
                decision.allowed = true;
                decision.shadow_denied = true;
            }
        }
        decision
    }

    /// The answer for an exempt request: admitted without asking any store, counted
    /// `exempt` for each limit.
    pub(crate) fn exempt(&self, limits: &[Limit]) -> Decision {
        self.count(limits, Outcome::Exempt, Source::Exempt);
        Decision::unchecked(true, Source::Exempt)
    }

    /// The refusal of a request whose computed cost no bucket can admit, as the check's
    /// decision: counted (`denied`, or `shadow_denied` in shadow mode, with source `none`)
    /// and logged at WARN once per limit per [`WARN_EVERY`] with the count of those held
    /// back, the others at DEBUG (a client sending such requests misuses the API, or the
    /// cost expression is wrong; either way the client must not choose how much is logged).
    pub(crate) fn refuse(&self, unadmissible: &Unadmissible, shadow: bool) -> Decision {
        static REFUSED: Throttled = Throttled::new(WARN_EVERY);
        let limit = unadmissible.limit();
        let outcome = if shadow {
            Outcome::ShadowDenied
        } else {
            Outcome::Denied
        };
        self.count(std::slice::from_ref(limit), outcome, Source::Unadmissible);
        let name = shown_name(limit.name_cow());
        warn_throttled!(
            REFUSED,
            name,
            limit = name,
            shadow,
            "request refused: {}",
            unadmissible.reason()
        );
        let mut decision = Decision::unchecked(shadow, Source::Unadmissible);
        decision.shadow_denied = shadow;
        decision.capacity = limit.burst();
        decision.window = limit.window();
        decision
    }

    /// Counts one check: one increment per limit checked, each with the check's outcome (a
    /// stacked check is all or nothing, so a denial by one limit is a denial for all of
    /// them, none of which was charged).
    fn count(&self, limits: &[Limit], outcome: Outcome, source: Source) {
        let source = source.label(self.is_redis());
        for limit in limits {
            limit.counters().count(limit.name_cow(), outcome, source);
        }
    }

    /// The limits in force for `key` when overrides change any of `limits` (`None`: the
    /// code's limits), after registering `limits` and starting the task that keeps the
    /// overrides current, if not done yet.
    #[inline]
    pub(crate) fn runtime_limits(&self, key: &Key, limits: &[Limit]) -> Option<Applied> {
        let inner = &self.inner;
        if inner.overrides.claim_start() {
            self.start_runtime();
        }
        if self.is_redis() {
            inner.overrides.registry.note(limits);
        }
        inner.overrides.apply(key, limits)
    }

    /// The one limit `limit` is for `key` under the overrides in force (`None`: turned
    /// off), for a charge ([`Flux::charge`]) to settle in the buckets as checks use them.
    pub(crate) fn limit_in_force<'l>(&self, key: &Key, limit: &'l Limit) -> Option<Cow<'l, Limit>> {
        match self.runtime_limits(key, std::slice::from_ref(limit)) {
            None => Some(Cow::Borrowed(limit)),
            Some(applied) => applied.limits.into_iter().next().map(Cow::Owned),
        }
    }

    /// Decides with the store, the hot-key caches, the breaker and the failure policy.
    async fn enforce(
        &self,
        key: &Key,
        limits: &[Limit],
        policy: Option<FailurePolicy>,
    ) -> Decision {
        let plan = self.plan(key, limits);
        let inner = &self.inner;
        if !inner.store.is_remote() {
            return self.local(key, limits, &plan, None, Source::Backend);
        }
        let policy = policy.unwrap_or(inner.policy);
        if policy == FailurePolicy::Local {
            // Only checks that may fall back to `local` need the fleet's count.
            inner.store.ensure_heartbeat(&inner.fleet, &inner.prefix);
        }
        // Leased tokens first: they are out of the bucket already, outage or not.
        let want = lease::want(limits);
        let refill = if want > 1 {
            match inner.leases.spend_or_refill(&plan.id()).await {
                Ok(leased) => return leased,
                Err(refill) => Some(refill),
            }
        } else {
            None
        };
        // The breaker first: during an outage a check costs nothing more than this.
        let ticket = self.pass(key.slot());
        // A denial the store gave moments ago stands, during an outage too (a probe still
        // asks the store). The check's identity is built only while the cache holds anything.
        let cache = inner.deny_cache.as_deref();
        if ticket.is_some_and(|t| t.pass != Pass::Probe)
            && let Some(denied) = cache
                .filter(|c| !c.is_empty())
                .and_then(|c| c.get(&plan.id()))
        {
            return denied;
        }
        // While the breaker skips the store, nothing more is prepared for a call.
        if ticket.is_none_or(|t| t.pass != Pass::Skip) {
            let sent = cache.map_or(0, DenyCache::now);
            let leased_at = refill.as_ref().map(Refill::sent);
            let mut out = Vec::with_capacity(limits.len());
            let call = inner
                .store
                .check(key, &plan.keys, &plan.params, want, None, &mut out);
            if let Some(taken) = self.guarded(ticket, policy, call).await {
                let decision = Decision::summarize(taken > 0, &out, limits, Source::Backend);
                if let (Some(refill), Some(at), true) = (refill, leased_at, taken > 0) {
                    refill.fill(taken, &decision, at);
                }
                if let Some(cache) = cache {
                    let i = decision.index;
                    cache.learn(|| plan.id(), &decision, sent, plan.params[i], &out[i]);
                }
                return decision;
            }
        }
        match policy {
            FailurePolicy::Open => Decision::unchecked(true, Source::FailOpen),
            FailurePolicy::Closed => Decision::unchecked(false, Source::FailClosed),
            FailurePolicy::Local => {
                // This instance's share of each limit: the fleet stays near the limit.
                let plan = Plan {
                    params: fleet::share_all(&plan.params, inner.fleet.size()),
                    keys: plan.keys,
                };
                self.local(key, limits, &plan, None, Source::Local)
            }
        }
    }

    /// Checks without breaker or failure policy: Redis' answer or its error (with the
    /// deadline applied). For callers that want to handle failures themselves.
    pub async fn try_check(&self, key: impl ToKey, limits: &[Limit]) -> Result<Decision, Error> {
        self.decide(key, limits, None).await
    }

    /// [`try_check`](Flux::try_check) at an explicit time, `now_micros` µs, instead of the
    /// backend's clock (Redis' `TIME`, or the in-memory backend's [`Clock`](crate::clock::Clock)): tests compare
    /// the backends, or check exact refill times, on the same arrival times. Times must not
    /// go backwards for one bucket.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), flux::Error> {
    /// use flux::{Flux, Limit, Rate};
    ///
    /// static API: Limit = Limit::new("api", Rate::per_second::<1>());
    /// let flux = Flux::builder().build()?;
    /// let api = std::slice::from_ref(&API);
    /// let t0 = 1_000_000;
    /// assert!(flux.try_check_at("k", api, t0).await?.allowed);
    /// assert!(!flux.try_check_at("k", api, t0 + 999_999).await?.allowed);
    /// assert!(flux.try_check_at("k", api, t0 + 1_000_000).await?.allowed);
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "testing")]
    pub async fn try_check_at(
        &self,
        key: impl ToKey,
        limits: &[Limit],
        now_micros: u64,
    ) -> Result<Decision, Error> {
        self.decide(key, limits, Some(now_micros)).await
    }

    /// [`try_check`](Self::try_check), at `now_micros` (µs on the backend's time line) when
    /// given, instead of the backend's clock.
    pub(crate) async fn decide(
        &self,
        key: impl ToKey,
        limits: &[Limit],
        now_micros: Option<u64>,
    ) -> Result<Decision, Error> {
        if limits.is_empty() {
            return Ok(Decision::unchecked(true, Source::Backend));
        }
        let key = self.inner.store.stored_key(key.to_key());
        // Runtime overrides, as in `check_with`.
        let applied = self.runtime_limits(&key, limits);
        let limits = applied.as_ref().map_or(limits, |a| &a.limits[..]);
        if limits.is_empty() {
            return Ok(Decision::unchecked(true, Source::Exempt));
        }
        let plan = self.plan(&key, limits);
        let mut out = Vec::with_capacity(limits.len());
        let taken = self
            .inner
            .store
            .check(&key, &plan.keys, &plan.params, 1, now_micros, &mut out)
            .await?;
        let mut decision = Decision::summarize(taken > 0, &out, limits, Source::Backend);
        if let Some(a) = &applied {
            decision.index = a.original(decision.index);
        }
        Ok(decision)
    }

    /// The buckets and parameters of a check of `limits` for `key`.
    fn plan(&self, key: &Key, limits: &[Limit]) -> Plan {
        Plan {
            keys: limits
                .iter()
                .map(|l| key.bucket(&self.inner.prefix, l.name()))
                .collect(),
            params: limits.iter().map(Limit::params).collect(),
        }
    }

    /// Decides with this process' buckets.
    fn local(
        &self,
        key: &Key,
        limits: &[Limit],
        plan: &Plan,
        at: Option<u64>,
        source: Source,
    ) -> Decision {
        let mut out = Vec::with_capacity(limits.len());
        let allowed = self
            .inner
            .local
            .check(key, &plan.keys, &plan.params, at, &mut out);
        Decision::summarize(allowed, &out, limits, source)
    }
}

/// A check's storage keys (one bucket per limit) and GCRA parameters.
struct Plan {
    keys: Vec<String>,
    params: Vec<Params>,
}

impl Plan {
    /// What identifies this check for the deny cache and the leases: its buckets and what
    /// each request takes from them (a denial of cost 3 says nothing about cost 1).
    fn id(&self) -> String {
        use std::fmt::Write as _;
        let mut id = String::with_capacity(self.keys.iter().map(|k| k.len() + 22).sum());
        for (key, p) in self.keys.iter().zip(&self.params) {
            // Writing to a String cannot fail.
            let _ = write!(id, "{key}\n{}\n", p.increment);
        }
        id
    }
}

/// The denial log: one DEBUG event per denied request, with a digest of the key, never the
/// key itself (it may be an address or a user id).
fn log_denial(key: &Key, limits: &[Limit], decision: &Decision, shadow: bool) {
    if !tracing::enabled!(target: "flux", tracing::Level::DEBUG) {
        return;
    }
    let Some(limit) = limits.get(decision.index) else {
        return;
    };
    tracing::debug!(
        target: "flux",
        limit = limit.name(),
        key = %key.digest_hex(),
        cost = limit.cost(),
        retry_after_ms = decision.retry_after.as_millis() as u64,
        shadow,
        "rate limit denied a request"
    );
}
