//! The embedded OMS sandbox: an in-process, in-memory simulator of the Polygon OMS REST API
//! (auth tokens, cash-ins, cash locations, and the sandbox-only deposit simulation), served over
//! HTTP/1.1 on loopback.
//!
//! It is a separate "server" on purpose, in a crate of its own that depends on nothing of the
//! gateway: it shares no types with the gateway's REST client, so a misreading of the API in one
//! cannot hide in the other. It follows the published docs where
//! they agree, can speak either side where they contradict each other ([`Spelling`]), and lets
//! tests see and script what happens on the wire ([`SandboxHandle::journal`],
//! [`SandboxHandle::inject`], a request held at a [`Gate`]), or inject seeded random faults,
//! connection resets included ([`FaultPlan`], settable at start, through the handle, or with
//! `PUT /sandbox/faults`). Its own Idempotency-Key deduplication can be switched off
//! ([`SandboxHandle::set_idempotency`]), so that a client's idempotency is tested on its own.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use oms_sandbox::SandboxSettings;
//! let sandbox = oms_sandbox::start(SandboxSettings::default()).await?;
//! let base_url = sandbox.base_url(); // e.g. http://127.0.0.1:43121, routes directly under it
//! # let _ = base_url;
//! sandbox.shutdown().await;
//! # Ok(()) }
//! ```

mod auth;
mod clock;
mod conn;
mod error;
mod fault_plan;
mod faults;
mod handlers;
mod idempotency;
mod journal;
mod locations;
mod model;
mod pricing;
mod requests;
mod server;
mod state;
mod store;
mod webhooks;

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use fault_plan::{FaultPlan, FaultPlanError, FaultStats};
pub use faults::{Fault, FaultAction, Gate};
pub use journal::{CONNECTION_RESET, RecordedRequest};
pub use webhooks::{WebhookFaults, WebhookStats, WebhookTarget};

use state::{Sandbox, lock};

/// How often pending cash-ins are checked for lapsed codes (reads also check, lazily).
const SWEEP_INTERVAL: Duration = Duration::from_millis(250);
/// How long `shutdown` lets in-flight requests finish before cutting them off.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Which of the documentation's two spellings the sandbox answers in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Spelling {
    /// The OpenAPI schema: `cash.locationId`, `destination.wallet.id`, `transactionId`,
    /// `FeeEntry` developer fees; absent optional fields are omitted.
    #[default]
    OpenApi,
    /// The cash-in guide: `cash.cashLocationId`, `destination.wallet.wallet`, `transaction`,
    /// typed developer fees; nullable fields are present as `null`.
    Guide,
}

/// How to run a sandbox.
#[derive(Clone)]
pub struct SandboxSettings {
    /// Where to listen; port 0 picks a free one. Default `127.0.0.1:0`.
    pub listen: SocketAddr,
    /// The one API key the sandbox accepts. Default `sk_sdbx_local`.
    pub api_key: String,
    /// Its secret. Default: random per config.
    pub api_secret: String,
    /// Lifetime of bearer tokens. Default 3600 s.
    pub token_ttl: Duration,
    /// Lifetime of a deposit code. Default 3600 s.
    pub code_ttl: Duration,
    /// Response spelling at start; switchable at run time.
    pub spelling: Spelling,
    /// Seeds the generator of cash-in ids and deposit codes. Default: random.
    pub seed: u64,
    /// Random faults from the first request on (it has its own seed); replaceable at run time.
    /// Default: none.
    pub faults: FaultPlan,
}

impl Default for SandboxSettings {
    fn default() -> Self {
        SandboxSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            api_key: "sk_sdbx_local".to_owned(),
            api_secret: uuid::Uuid::new_v4().simple().to_string(),
            token_ttl: Duration::from_secs(3600),
            code_ttl: Duration::from_secs(3600),
            spelling: Spelling::default(),
            seed: fastrand::u64(..),
            faults: FaultPlan::default(),
        }
    }
}

impl fmt::Debug for SandboxSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SandboxSettings")
            .field("listen", &self.listen)
            .field("api_key", &self.api_key)
            .field("api_secret", &"[redacted]")
            .field("token_ttl", &self.token_ttl)
            .field("code_ttl", &self.code_ttl)
            .field("spelling", &self.spelling)
            .field("seed", &self.seed)
            .field("faults", &self.faults)
            .finish()
    }
}

/// Binds `config.listen`, spawns the server (and its expiry sweep) on the current tokio
/// runtime, and returns once it accepts connections. It runs until [`SandboxHandle::shutdown`]
/// or the runtime ends; dropping the handles does not stop it.
pub async fn start(config: SandboxSettings) -> std::io::Result<SandboxHandle> {
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    // Its connections carry a kill switch, which is how faults reset a connection.
    let listener = conn::ResettableListener::new(listener);
    let sandbox = Arc::new(Sandbox::new(config));
    let app = server::router(Arc::clone(&sandbox))
        .into_make_service_with_connect_info::<conn::Connection>();
    let (shutdown, mut stop) = watch::channel(false);

    let sender = webhooks::run(Arc::clone(&sandbox));
    let sweeper = Arc::clone(&sandbox);
    let task = tokio::spawn(async move {
        let signal = async move {
            // If every handle is gone the sender is dropped; keep serving (see `start` docs).
            if stop.wait_for(|stop| *stop).await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        let serve = axum::serve(listener, app).with_graceful_shutdown(signal);
        let sweep = async move {
            let mut ticks = tokio::time::interval(SWEEP_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                ticks.tick().await;
                sweeper.sweep();
            }
        };
        tokio::select! {
            result = serve.into_future() => {
                if let Err(error) = result {
                    tracing::warn!(%error, "sandbox server stopped with an error");
                }
            }
            () = sweep => {}
            () = sender => {}
        }
    });
    tracing::info!(%addr, "OMS sandbox listening");
    Ok(SandboxHandle {
        inner: Arc::new(Inner {
            sandbox,
            addr,
            shutdown,
            task: Mutex::new(Some(task)),
        }),
    })
}

/// Control of a running sandbox; cheap to clone.
#[derive(Clone)]
pub struct SandboxHandle {
    inner: Arc<Inner>,
}

struct Inner {
    sandbox: Arc<Sandbox>,
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for SandboxHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SandboxHandle")
            .field("addr", &self.inner.addr)
            .finish_non_exhaustive()
    }
}

// === impl SandboxHandle ===

impl SandboxHandle {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// `http://127.0.0.1:PORT`, no trailing slash: `/auth/token`, `/cash-ins`, … sit directly
    /// under it.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    pub fn api_key(&self) -> &str {
        &self.inner.sandbox.api_key
    }

    pub fn api_secret(&self) -> &str {
        &self.inner.sandbox.api_secret
    }

    /// Switches the response spelling from the next response on (replays stay verbatim).
    pub fn set_spelling(&self, spelling: Spelling) {
        self.inner.sandbox.set_spelling(spelling);
    }

    /// Invalidates every token issued so far: their next use gets 401.
    pub fn revoke_tokens(&self) {
        lock(&self.inner.sandbox.tokens).revoke_all();
    }

    /// Successful `POST /auth/token` exchanges so far.
    pub fn token_exchanges(&self) -> usize {
        lock(&self.inner.sandbox.tokens).exchanges()
    }

    /// Every request received, in arrival order, with the status answered.
    pub fn journal(&self) -> Vec<RecordedRequest> {
        lock(&self.inner.sandbox.journal).snapshot()
    }

    pub fn clear_journal(&self) {
        lock(&self.inner.sandbox.journal).clear();
    }

    /// Journal entries with this method (case-insensitive; `""` or `"*"` for any) whose path
    /// starts with `path_prefix`.
    pub fn count(&self, method: &str, path_prefix: &str) -> usize {
        lock(&self.inner.sandbox.journal).count(method, path_prefix)
    }

    /// Replaces the random fault plan (see [`FaultPlan`]), from the next request on. Its
    /// generator restarts from the plan's seed and its [`fault_stats`](Self::fault_stats) from
    /// zero, even if the plan is the same as before. Also `PUT /sandbox/faults`.
    pub fn set_fault_plan(&self, plan: FaultPlan) {
        tracing::info!(plan = %plan, "sandbox: fault plan set");
        lock(&self.inner.sandbox.plan).set(plan);
    }

    /// The random fault plan in force.
    pub fn fault_plan(&self) -> FaultPlan {
        lock(&self.inner.sandbox.plan).plan().clone()
    }

    /// What the plan in force has done so far.
    pub fn fault_stats(&self) -> FaultStats {
        lock(&self.inner.sandbox.plan).stats()
    }

    /// Switches the sandbox's own Idempotency-Key deduplication off (`false`) or back on
    /// (`true`, the default), from the next request on.
    ///
    /// A test aid. Off, every POST executes, as if OMS ignored the key: no replay of an earlier
    /// answer, no 409 while a request with the key is in flight, no 422 for the key reused with
    /// another body. A client's own idempotency (a gateway's store of outcomes, its sharing of
    /// concurrent calls) is then all that stands between a retry and a second cash-in, so a test
    /// sees that, and not the sandbox doing the work for it. The header is still required and
    /// checked, and journalled. Nothing is recorded while off; what was recorded before applies
    /// again once it is back on.
    pub fn set_idempotency(&self, on: bool) {
        tracing::info!(on, "sandbox: Idempotency-Key deduplication");
        lock(&self.inner.sandbox.idempotency).set_enabled(on);
    }

    /// Queues a scripted fault (see [`Fault`]).
    pub fn inject(&self, fault: Fault) {
        lock(&self.inner.sandbox.faults).push(fault);
    }

    pub fn clear_faults(&self) {
        lock(&self.inner.sandbox.faults).clear();
    }

    /// Delivers signed webhooks of every later state change to `target` (none: stop).
    pub fn set_webhooks(&self, target: Option<WebhookTarget>) {
        self.inner.sandbox.webhooks.set(target);
    }

    /// What the webhook sender has done so far.
    pub fn webhook_stats(&self) -> WebhookStats {
        self.inner.sandbox.webhooks.stats()
    }

    /// How many cash-ins exist (in any state).
    pub fn cash_in_count(&self) -> usize {
        lock(&self.inner.sandbox.store).len()
    }

    /// A cash-in as `GET /cash-ins/{id}` would show it now, in the current spelling.
    pub fn cash_in_json(&self, id: &str) -> Option<serde_json::Value> {
        let spelling = self.inner.sandbox.spelling();
        let mut store = lock(&self.inner.sandbox.store);
        store
            .get(id, clock::now_ms())
            .map(|ci| model::render_cash_in(ci, &spelling))
    }

    /// A cash-in's status as stored (`pending`, `expired`, ...), without the lazy expiry that
    /// every read applies: shows what the background sweep has done.
    pub fn stored_status(&self, id: &str) -> Option<&'static str> {
        lock(&self.inner.sandbox.store)
            .stored_status(id)
            .map(store::Status::as_str)
    }

    /// Stops accepting connections, lets in-flight requests finish (up to a few seconds), and
    /// waits for the server to stop. Other clones of the handle see a stopped server.
    pub async fn shutdown(self) {
        // `send_replace` works even when no receiver is listening any more.
        self.inner.shutdown.send_replace(true);
        let task = lock(&self.inner.task).take();
        if let Some(mut task) = task
            && tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
        {
            tracing::warn!("sandbox did not stop within the grace period; aborting it");
            task.abort();
        }
    }
}
