//! The Redis connection the replicas of a fleet share (`--redis-url`): one Redis or a Redis
//! Cluster, every command bounded by `--redis-timeout`, the key prefix, pub/sub wake-ups, and
//! whether Redis is reachable right now ([`SharedState`]).
//!
//! The first failed command marks Redis down (one warning; counted in `oms_gateway_redis_errors_total` and `…_fallbacks_total`) and every caller falls back
//! to its replica's own state until a background PING succeeds again (one info line). So Redis
//! failures cost sharing, never a call or a stream. Pub/sub carries only wake-ups (the state
//! itself is read from keys), so a lost message delays a waiter by one bounded poll, and nothing
//! else. A leaf: the features that share state through it (idempotency, the watch hub's pollers
//! and poll budget, webhook ids) own their keys and scripts; this knows none of them, and no
//! gRPC and no HTTP.

use crate::config::RedisSettings;
use futures_util::StreamExt;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, FromRedisValue, Pipeline, RedisFuture, ScriptInvocation, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

/// Every key and channel of the gateway starts with this.
pub const PREFIX: &str = "oms-gateway:";

/// The start of a token bucket's Lua script (the fleet's poll budget, a caller's quota): with
/// `rate` (per second) and `burst` defined, reads Redis's clock into `now` and the bucket hash
/// `KEYS[1]` (`tokens`, `at`; a new bucket is full) and refills it, into `tokens`. No replica's
/// clock matters.
pub const BUCKET_REFILL_LUA: &str = r"local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(b[1])
local at = tonumber(b[2])
if tokens == nil or at == nil then tokens = burst; at = now end
tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 1000)
";
/// How often the background task checks Redis (PING), up or down.
const CHECK_INTERVAL: Duration = Duration::from_millis(500);
/// How many clean-up commands wait for Redis to answer again, at most (the oldest beyond go:
/// what they would delete expires by its own TTL).
const MAX_DEBRIS: usize = 4096;

/// A connection to one Redis or to a Redis Cluster; both reconnect by themselves.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// The fleet's shared state. Cheap to clone; dropping the last clone stops its tasks.
#[derive(Clone)]
pub struct SharedState {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SharedState {
    // Never the URL: it may carry a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedState")
            .field("up", &self.is_up())
            .field("replica", &self.inner.replica)
            .finish_non_exhaustive()
    }
}

struct Inner {
    conn: Mutex<Option<Conn>>,
    /// Seed nodes of a cluster, connected (again) by the background task.
    cluster: Option<redis::cluster::ClusterClient>,
    /// Where pub/sub connects (the first node of a cluster: PUBLISH reaches every node).
    pubsub: redis::Client,
    up: AtomicBool,
    timeout: Duration,
    lease_ttl: Duration,
    /// Names this replica's leases.
    replica: String,
    /// Waiters on a channel, woken by a pub/sub message on it.
    wakers: Mutex<HashMap<String, Weak<Notify>>>,
    /// Commands that failed (each marks Redis down).
    errors: AtomicU64,
    /// Calls and polls served from this replica's own state because Redis was down.
    fallbacks: AtomicU64,
    /// Clean-ups of commands that may have run although they failed (a time-out is no proof
    /// that Redis did not execute them): run, oldest first, once Redis answers again.
    debris: Mutex<VecDeque<Cmd>>,
    tasks: Mutex<Vec<AbortHandle>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in self
            .tasks
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            task.abort();
        }
    }
}

// === impl SharedState ===

impl SharedState {
    /// The shared state of `settings`, or `None` when `--redis-url` is unset. An URL that does
    /// not parse is an error (at startup); an unreachable Redis is not: the replica starts in
    /// local mode and turns shared once Redis answers. Its metrics are registered with
    /// `registry` ([`Self::register_metrics`]).
    pub fn connect(
        settings: &RedisSettings,
        registry: &mut prometheus_client::registry::Registry,
    ) -> Result<Option<Self>, String> {
        let Some(url) = &settings.url else {
            return Ok(None);
        };
        let urls: Vec<&str> = url.expose().split(',').map(str::trim).collect();
        // The redis crate's own messages do not quote the URL, so its password stays out.
        let bad = |e: redis::RedisError| format!("--redis-url: {e}");
        let pubsub = redis::Client::open(urls[0]).map_err(bad)?;
        let (conn, cluster) = if settings.cluster {
            let client = redis::cluster::ClusterClient::builder(urls.iter().copied())
                .connection_timeout(settings.timeout)
                .response_timeout(settings.timeout)
                .retries(1)
                .build()
                .map_err(bad)?;
            (None, Some(client))
        } else {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(settings.timeout))
                .set_response_timeout(Some(settings.timeout))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(500));
            let manager =
                ConnectionManager::new_lazy_with_config(pubsub.clone(), config).map_err(bad)?;
            (Some(Conn::Single(manager)), None)
        };
        let state = Self {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                cluster,
                pubsub,
                up: AtomicBool::new(false),
                timeout: settings.timeout,
                lease_ttl: settings.lease_ttl.max(Duration::from_millis(100)),
                replica: uuid::Uuid::new_v4().simple().to_string(),
                wakers: Mutex::new(HashMap::new()),
                errors: AtomicU64::new(0),
                fallbacks: AtomicU64::new(0),
                debris: Mutex::new(VecDeque::new()),
                tasks: Mutex::new(Vec::new()),
            }),
        };
        let weak = Arc::downgrade(&state.inner);
        let check = tokio::spawn(check_loop(weak.clone())).abort_handle();
        let listen = tokio::spawn(listen_loop(weak)).abort_handle();
        state.lock_tasks().extend([check, listen]);
        tracing::info!(
            redis = %crate::config::redact::url(url.expose()),
            replica = %state.inner.replica,
            cluster = settings.cluster,
            lease_ttl_ms = settings.lease_ttl.as_millis() as u64,
            "sharing idempotency, pollers and the poll budget with the fleet through Redis (local until it answers)"
        );
        state.register_metrics(registry);
        Ok(Some(state))
    }

    fn lock_tasks(&self) -> std::sync::MutexGuard<'_, Vec<AbortHandle>> {
        self.inner.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether Redis answered the last command (shared mode).
    pub fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::Relaxed)
    }

    /// The lifetime of a lease.
    pub fn lease_ttl(&self) -> Duration {
        self.inner.lease_ttl
    }

    /// A new lease token of this replica.
    pub fn token(&self) -> String {
        format!(
            "{}.{}",
            self.inner.replica,
            uuid::Uuid::new_v4()
                .simple()
                .to_string()
                .get(..12)
                .unwrap_or("0")
        )
    }

    /// Counts a call or a poll served locally because Redis was down.
    pub fn fell_back(&self, what: &'static str) {
        let n = self.inner.fallbacks.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::debug!(
            what,
            fallbacks = n,
            "Redis down: served from this replica's state"
        );
    }

    /// Registers Redis's metrics with `registry`, read at each scrape: whether it answers, the
    /// commands that failed and the calls and polls served alone. Holds no clone, so the
    /// registry keeps none of the connection's tasks alive.
    fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register_collector(Box::new(RedisMetrics(Arc::downgrade(&self.inner))));
    }

    /// Runs a script; `None` when Redis is down or the command fails (then marked down).
    pub async fn invoke<T: FromRedisValue>(&self, invocation: &ScriptInvocation<'_>) -> Option<T> {
        let mut conn = self.conn()?;
        let result =
            tokio::time::timeout(self.inner.timeout, invocation.invoke_async(&mut conn)).await;
        self.settle(result)
    }

    /// Runs a command; `None` when Redis is down or the command fails (then marked down).
    pub async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Option<T> {
        let mut conn = self.conn()?;
        let result = tokio::time::timeout(self.inner.timeout, cmd.query_async(&mut conn)).await;
        self.settle(result)
    }

    /// Runs a script; when it was sent but failed or timed out (so it may still run, or have
    /// run), `undo` is kept and run once Redis answers again ([`Self::later`]).
    pub async fn invoke_or_undo<T: FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
        undo: impl FnOnce() -> Cmd,
    ) -> Option<T> {
        let mut conn = self.conn()?;
        let result =
            tokio::time::timeout(self.inner.timeout, invocation.invoke_async(&mut conn)).await;
        let answer = self.settle(result);
        if answer.is_none() {
            self.later(undo());
        }
        answer
    }

    /// Runs `cmd` (a clean-up: a release, a compare-and-delete) now, or once Redis answers
    /// again if it is down or the command fails.
    pub async fn now_or_later(&self, cmd: Cmd) {
        if self.query::<Value>(&cmd).await.is_none() {
            self.later(cmd);
        }
    }

    /// Keeps `cmd` for when Redis answers again.
    fn later(&self, cmd: Cmd) {
        let mut debris = self.inner.debris.lock().unwrap_or_else(|e| e.into_inner());
        if debris.len() >= MAX_DEBRIS {
            debris.pop_front();
        }
        debris.push_back(cmd);
    }

    /// Runs the kept clean-ups while Redis answers; one that fails waits for the next time.
    async fn clear_debris(&self) {
        loop {
            let Some(cmd) = self
                .inner
                .debris
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop_front()
            else {
                return;
            };
            if self.query::<Value>(&cmd).await.is_none() {
                self.later(cmd);
                return;
            }
        }
    }

    fn conn(&self) -> Option<Conn> {
        if !self.is_up() {
            return None;
        }
        self.inner
            .conn
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn settle<T>(
        &self,
        result: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>,
    ) -> Option<T> {
        match result {
            Ok(Ok(value)) => Some(value),
            Ok(Err(err)) => {
                self.mark_down(&err.to_string());
                None
            }
            Err(_) => {
                self.mark_down("no answer within --redis-timeout");
                None
            }
        }
    }

    fn mark_down(&self, error: &str) {
        let first = self.inner.errors.fetch_add(1, Ordering::Relaxed) == 0;
        // Said when shared mode ends, and when it never began (Redis down at start).
        if self.inner.up.swap(false, Ordering::Relaxed) || first {
            tracing::warn!(
                error,
                "Redis unreachable: this replica falls back to its own idempotency store, pollers and poll budget until it answers again"
            );
        }
    }

    /// The waker of `channel`: notified whenever a message arrives on it. Hold the `Arc` while
    /// waiting.
    pub fn waker(&self, channel: &str) -> Arc<Notify> {
        let mut wakers = self.inner.wakers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(notify) = wakers.get(channel).and_then(Weak::upgrade) {
            return notify;
        }
        wakers.retain(|_, w| w.strong_count() > 0);
        let notify = Arc::new(Notify::new());
        wakers.insert(channel.to_owned(), Arc::downgrade(&notify));
        notify
    }
}

/// PINGs Redis every [`CHECK_INTERVAL`]: marks it up (shared mode again) when it answers.
async fn check_loop(inner: Weak<Inner>) {
    loop {
        tokio::time::sleep(CHECK_INTERVAL).await;
        let Some(inner) = inner.upgrade() else { return };
        let state = SharedState { inner };
        if state
            .inner
            .conn
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
            && let Some(cluster) = &state.inner.cluster
        {
            let connect = cluster.get_async_connection();
            if let Ok(Ok(conn)) = tokio::time::timeout(state.inner.timeout * 4, connect).await {
                *state.inner.conn.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(Conn::Cluster(conn));
            }
        }
        let conn = state
            .inner
            .conn
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some(mut conn) = conn else { continue };
        let ping = redis::cmd("PING");
        let answer =
            tokio::time::timeout(state.inner.timeout, ping.query_async::<String>(&mut conn)).await;
        match answer {
            Ok(Ok(_)) => {
                if !state.inner.up.swap(true, Ordering::Relaxed) {
                    tracing::info!("Redis reachable: shared idempotency, pollers and poll budget");
                }
                state.clear_debris().await;
            }
            Ok(Err(err)) => state.mark_down(&err.to_string()),
            Err(_) => state.mark_down("no answer to PING within --redis-timeout"),
        }
    }
}

/// Listens to every channel of the gateway (one pattern) and wakes the local waiters of each
/// message's channel; reconnects after a failure (a lost message costs a waiter one poll).
async fn listen_loop(inner: Weak<Inner>) {
    loop {
        let (client, timeout) = match inner.upgrade() {
            Some(inner) => (inner.pubsub.clone(), inner.timeout),
            None => return,
        };
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.psubscribe(format!("{PREFIX}*")).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        if let Ok(Ok(pubsub)) = tokio::time::timeout(timeout * 4, subscribed).await {
            let mut messages = pubsub.into_on_message();
            while let Some(message) = messages.next().await {
                let Some(inner) = inner.upgrade() else { return };
                let wakers = inner.wakers.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(notify) = wakers
                    .get(message.get_channel_name())
                    .and_then(Weak::upgrade)
                {
                    notify.notify_waiters();
                }
            }
        }
        tokio::time::sleep(CHECK_INTERVAL).await;
    }
}

/// Redis's metrics, read from the handle at scrape time (nothing once it is gone).
struct RedisMetrics(Weak<Inner>);

impl std::fmt::Debug for RedisMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisMetrics")
    }
}

impl prometheus_client::collector::Collector for RedisMetrics {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> crate::metrics::scrape::Encoded {
        use crate::metrics::scrape::{counter, gauge};
        let Some(inner) = self.0.upgrade() else {
            return Ok(());
        };
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        gauge(
            &mut encoder,
            "oms_gateway_redis_up",
            "1 while Redis answers (state shared with the fleet), 0 while this replica works alone.",
            i64::from(inner.up.load(Ordering::Relaxed)),
        )?;
        counter(
            &mut encoder,
            "oms_gateway_redis_errors",
            "Redis commands that failed or timed out (each marks Redis down until a PING answers).",
            load(&inner.errors),
        )?;
        counter(
            &mut encoder,
            "oms_gateway_redis_fallbacks",
            "Calls and polls served from this replica's own state because Redis was down.",
            load(&inner.fallbacks),
        )
    }
}
