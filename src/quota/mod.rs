//! Per-caller quotas, from the authorization policy (`[[quota]]`, `[default_quota]`: see
//! `security::quotas`), so one noisy or compromised service cannot starve the others. Each
//! identity a quota covers gets its own allowance: unary calls per second (a token bucket), unary
//! calls in flight, open watch streams and distinct watched resources. [`QuotaLayer`], inside
//! the caller layer, admits every call but the two watch RPCs (and health, never limited)
//! against the caller's bucket and count of calls in flight before any upstream call, and then
//! charges the caller one token per upstream request the call made beyond its first (the REST
//! client's retries, a re-send after a 401): retries spent for a caller come out of that
//! caller's allowance, and it waits for them before its next calls. Watch RPCs get the caller's
//! [`CallerQuota`] as a request extension; the service takes a [`StreamGuard`] from it where it
//! opens a stream, held by the stream, so the quota refuses a new stream and never ends an open
//! one.
//!
//! A refusal is RESOURCE_EXHAUSTED with a QuotaFailure (the caller, the limit) and a RetryInfo
//! when waiting is enough (the token bucket), an audit line and the access line's
//! `quota_refused`, and `oms_gateway_quota_refused_total{quota,limit}` (label values are the
//! policy's names and the four limits; identities never become labels). The policy is read at
//! each call, so an edit takes effect at its reload. With Redis, the fleet shares every count
//! ([`fleet`]); without it, or while it is down, each replica counts alone ([`local`]).

mod fleet;
mod local;
mod metrics;

use crate::error::GatewayError;
use crate::redis::SharedState;
use crate::security::quotas::Quota;
use crate::security::{Caller, SharedPolicy};
use fleet::{Answer, Fleet, Kind, Lease};
use local::{Counted, Local, Subject};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tower::{Layer, Service};

/// The watch RPCs, whose quotas are taken where their streams open.
const WATCH_PATHS: [&str; 2] = [
    "/polygon.oms.v1.CashInService/WatchCashIn",
    "/polygon.oms.v1.CashInService/WatchCashIns",
];

/// The gateway's quotas: the policy they are read from, this replica's usage, the fleet's.
#[derive(Clone, Debug)]
pub struct Quotas {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    policy: SharedPolicy,
    local: Local,
    fleet: Option<Arc<Fleet>>,
    /// Refusals by (quota, limit).
    refused: Mutex<HashMap<(Arc<str>, &'static str), u64>>,
}

impl Quotas {
    /// The layer enforcing `policy`'s quotas (none without a policy), shared through `shared`
    /// when the fleet has Redis; its metrics registered with `registry`.
    pub fn layer(
        policy: Option<&SharedPolicy>,
        shared: Option<&SharedState>,
        registry: &mut prometheus_client::registry::Registry,
    ) -> QuotaLayer {
        let quotas = policy.map(|policy| Self {
            inner: Arc::new(Inner {
                policy: policy.clone(),
                local: Local::default(),
                fleet: shared.cloned().map(Fleet::start),
                refused: Mutex::default(),
            }),
        });
        if let Some(quotas) = &quotas {
            metrics::register(quotas, registry);
        }
        QuotaLayer { quotas }
    }

    /// The quota of `caller` under the current policy, as a handle for the call.
    fn of(&self, caller: &Arc<str>, method: &str) -> Option<CallerQuota> {
        let policy = self
            .inner
            .policy
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let quota = policy.quota_of(caller)?;
        let digest = crate::digest::sha256_hex(format!("{}\0{caller}", quota.name).as_bytes());
        let key = digest.get(..32).unwrap_or(&digest).into();
        let subject = self.inner.local.subject(&quota.name, key);
        Some(CallerQuota {
            quotas: self.clone(),
            quota,
            caller: caller.clone(),
            subject,
            method: method.into(),
        })
    }
}

/// One caller's quota, for one call.
#[derive(Clone, Debug)]
pub struct CallerQuota {
    quotas: Quotas,
    quota: Arc<Quota>,
    caller: Arc<str>,
    subject: Subject,
    method: Arc<str>,
}

/// A count held for a call or a stream, given back when dropped.
#[derive(Debug)]
struct Held {
    quotas: Quotas,
    subject: Subject,
    what: Holding,
    lease: Option<Lease>,
}

#[derive(Debug)]
enum Holding {
    Count(Counted),
    Resource(Arc<str>),
}

impl Drop for Held {
    fn drop(&mut self) {
        let local = &self.quotas.inner.local;
        match &self.what {
            Holding::Count(kind) => local.remove(&self.subject, *kind),
            Holding::Resource(resource) => {
                local.remove_resource(&self.subject, resource);
            }
        }
        if let (Some(lease), Some(fleet)) = (self.lease.take(), &self.quotas.inner.fleet) {
            fleet.release(lease);
        }
    }
}

/// What a watch stream holds of its caller's quota: its place among the caller's streams and
/// its resource among the caller's watched ones. Dropped with the stream.
#[derive(Debug)]
pub struct StreamGuard {
    _held: Vec<Held>,
}

impl CallerQuota {
    /// The refusal of `limit`: counted, audited, noted for the access line.
    fn refuse(
        &self,
        limit: &'static str,
        description: String,
        retry: Option<Duration>,
    ) -> GatewayError {
        let name = &self.quota.name;
        *self
            .quotas
            .inner
            .refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((name.clone(), limit))
            .or_default() += 1;
        crate::audit::quota_refused(&self.caller, &self.method, name, limit);
        crate::access::note_quota_refused(name, limit);
        GatewayError::QuotaExceeded {
            caller: self.caller.to_string(),
            quota: name.to_string(),
            limit,
            description,
            retry,
        }
    }

    /// Takes `cost` tokens of the caller's bucket; `force`: whatever is left (retries spent).
    async fn take_tokens(&self, rate: f64, cost: u32, force: bool) -> Result<(), Duration> {
        let inner = &self.quotas.inner;
        if let Some(fleet) = &inner.fleet {
            if !force && let Some(wait) = inner.local.fleet_wait(&self.subject) {
                return Err(wait);
            }
            if let Some(answer) = fleet.take(&self.subject.key, rate, cost, force).await {
                if let Err(wait) = answer {
                    inner.local.fleet_empty(&self.subject, wait);
                }
                return answer;
            }
        }
        if force {
            inner.local.debit(&self.subject, rate, cost);
            return Ok(());
        }
        inner.local.take_token(&self.subject, rate)
    }

    /// Holds one more of `kind` within `limit` (this replica's count, or the fleet's).
    async fn hold(&self, kind: Counted, limit: Option<u32>) -> Option<Held> {
        let inner = &self.quotas.inner;
        let held = |lease| Held {
            quotas: self.quotas.clone(),
            subject: self.subject.clone(),
            what: Holding::Count(kind),
            lease,
        };
        let Some(fleet) = inner.fleet.as_ref().filter(|_| limit.is_some()) else {
            return inner
                .local
                .add(&self.subject, kind, limit)
                .then(|| held(None));
        };
        inner.local.add(&self.subject, kind, None);
        let fleet_kind = match kind {
            Counted::Calls => Kind::Calls,
            Counted::Streams => Kind::Streams,
        };
        let unit = uuid::Uuid::new_v4().simple().to_string();
        let held = match fleet
            .acquire(&self.subject.key, fleet_kind, &unit, limit)
            .await
        {
            Answer::Admitted(lease) => held(Some(lease)),
            Answer::Unknown(lease) => {
                let held = held(Some(lease));
                let over = limit.is_some_and(|l| inner.local.count(&self.subject, kind) > l);
                return (!over).then_some(held);
            }
            Answer::Refused => {
                inner.local.remove(&self.subject, kind);
                return None;
            }
        };
        Some(held)
    }

    /// Admits a unary call: a token of `calls_per_second`, a place among `concurrent_calls`.
    async fn admit_call(&self) -> Result<Held, GatewayError> {
        let (name, limits) = (&self.quota.name, self.quota.limits);
        let held = self.hold(Counted::Calls, limits.concurrent_calls).await;
        let Some(held) = held else {
            let n = limits.concurrent_calls.unwrap_or_default();
            return Err(self.refuse(
                "concurrent_calls",
                format!(
                    "concurrent_calls: quota `{name}` allows each of its callers {n} unary \
                     calls in flight at once; wait for one to finish"
                ),
                None,
            ));
        };
        if let Some(rate) = limits.calls_per_second
            && let Err(wait) = self.take_tokens(rate, 1, false).await
        {
            return Err(self.refuse(
                "calls_per_second",
                format!(
                    "calls_per_second: quota `{name}` allows each of its callers {rate} unary \
                     calls per second (a burst of {}); retry after the RetryInfo's delay",
                    local::burst(rate)
                ),
                Some(wait.max(Duration::from_millis(1))),
            ));
        }
        Ok(held)
    }

    /// Charges `retries` upstream requests the call spent beyond its first.
    async fn charge_retries(&self, retries: u32) {
        if let Some(rate) = self.quota.limits.calls_per_second {
            let _ = self.take_tokens(rate, retries, true).await;
        }
    }

    /// Admits a new watch stream on `resource` (a cash-in's or a customer's key): a place among
    /// the caller's `watch_streams`, and `resource` among its `watched_resources` (free when
    /// another of its streams watches it already).
    pub async fn open_stream(&self, resource: &str) -> Result<StreamGuard, GatewayError> {
        let (name, limits) = (&self.quota.name, self.quota.limits);
        let Some(stream) = self.hold(Counted::Streams, limits.watch_streams).await else {
            let n = limits.watch_streams.unwrap_or_default();
            return Err(self.refuse(
                "watch_streams",
                format!(
                    "watch_streams: quota `{name}` allows each of its callers {n} open watch \
                     streams; close one first (open streams are not affected)"
                ),
                None,
            ));
        };
        let digest = crate::digest::sha256_hex(resource.as_bytes());
        let unit: Arc<str> = digest.get(..24).unwrap_or(&digest).into();
        let Some(watched) = self.hold_resource(&unit, limits.watched_resources).await else {
            let n = limits.watched_resources.unwrap_or_default();
            return Err(self.refuse(
                "watched_resources",
                format!(
                    "watched_resources: quota `{name}` allows each of its callers to watch {n} \
                     distinct cash-ins and customers at once; close a stream on another one \
                     first (open streams are not affected)"
                ),
                None,
            ));
        };
        Ok(StreamGuard {
            _held: vec![stream, watched],
        })
    }

    /// Holds `unit` among the caller's watched resources within `limit`.
    async fn hold_resource(&self, unit: &Arc<str>, limit: Option<u32>) -> Option<Held> {
        let inner = &self.quotas.inner;
        let held = |lease| Held {
            quotas: self.quotas.clone(),
            subject: self.subject.clone(),
            what: Holding::Resource(unit.clone()),
            lease,
        };
        let Some(fleet) = inner.fleet.as_ref().filter(|_| limit.is_some()) else {
            return inner
                .local
                .add_resource(&self.subject, unit, limit)
                .map(|_| held(None));
        };
        let first = inner.local.add_resource(&self.subject, unit, None) == Some(true);
        // A resource this replica counts already is counted by the fleet too.
        let limit = limit.filter(|_| first);
        match fleet
            .acquire(&self.subject.key, Kind::Watched, unit, limit)
            .await
        {
            Answer::Admitted(lease) => Some(held(Some(lease))),
            Answer::Unknown(lease) => {
                let held = held(Some(lease));
                let over = limit.is_some_and(|l| inner.local.watched(&self.subject) > l as usize);
                (!over).then_some(held)
            }
            Answer::Refused => {
                inner.local.remove_resource(&self.subject, unit);
                None
            }
        }
    }
}

/// Applies the callers' quotas around the gRPC router, inside the caller layer.
#[derive(Clone, Debug)]
pub struct QuotaLayer {
    quotas: Option<Quotas>,
}

impl<S> Layer<S> for QuotaLayer {
    type Service = QuotaService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        QuotaService {
            inner,
            quotas: self.quotas.clone(),
        }
    }
}

/// The service [`QuotaLayer`] wraps around the gRPC router.
#[derive(Clone, Debug)]
pub struct QuotaService<S> {
    inner: S,
    quotas: Option<Quotas>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for QuotaService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let caller = request.extensions().get::<Caller>().map(|c| c.0.clone());
        let path = request.uri().path();
        let quota = match (&self.quotas, caller) {
            (Some(quotas), Some(caller)) => quotas.of(&caller, path.trim_start_matches('/')),
            _ => None,
        };
        let Some(quota) = quota else {
            return Box::pin(self.inner.call(request));
        };
        if WATCH_PATHS.contains(&path) {
            request.extensions_mut().insert(quota);
            return Box::pin(self.inner.call(request));
        }
        let ready = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, ready);
        Box::pin(async move {
            let held = match quota.admit_call().await {
                Ok(held) => held,
                Err(refusal) => return Ok(tonic::Status::from(refusal).into_http()),
            };
            let before = crate::access::upstream_requests();
            let response = inner.call(request).await;
            let spent = crate::access::upstream_requests().saturating_sub(before);
            if spent > 1 {
                quota.charge_retries(spent - 1).await;
            }
            drop(held);
            response
        })
    }
}
