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
//! ## The guide's lifecycle, and the controls that drive it
//!
//! - **Expiry.** A deposit code lives [`SandboxSettings::code_ttl`]; once it lapses it is dead at
//!   the counter, but the cash-in stays `pending` for a refresh window
//!   ([`SandboxSettings::refresh_window`]) in which `POST /cash-ins/{id}/refresh` issues a new
//!   code and a new expiry. Past the window it is `expired` (terminal: a refresh is 422).
//!   Control: `POST /sandbox/cash-ins/{id}/expire` ([`SandboxHandle::expire_cash_in`]) expires
//!   it now; `POST /sandbox/cash-ins/{id}/fail` fails it.
//! - **Deposit.** `POST /cash-ins/simulate/barcode-auth` deposits the cash: the cash-in is
//!   `processing` and repriced on the amount deposited (the create response's pricing was an
//!   estimate from `indicatedAmount`). `POST /cash-ins/simulate/auth-commit` completes it and
//!   creates its fiat-to-crypto transaction (`transactionId`, `txn_…`).
//! - **Delivery** (the transaction): it starts at `processing` / `processing.fundsPulled` and,
//!   left alone, completes after [`SandboxSettings::delivery_delay`]. The controls, each
//!   `POST /sandbox/cash-ins/{id}/delivery/<action>` (an Idempotency-Key, as for every POST) and a
//!   [`SandboxHandle`] method, answer the transaction object and send its webhook:
//!
//!   | action | from | to | handle |
//!   | --- | --- | --- | --- |
//!   | `under-review` | `processing.fundsPulled` | `processing` / `processing.underReview` | [`SandboxHandle::delivery_under_review`] |
//!   | `complete` | `processing.*` | `completed`, `destination.txHash` set | [`SandboxHandle::complete_delivery`] |
//!   | `fail` (body `{"code", "message"}`, both optional) | `processing.*` | `failed` / `failed.refundPending`, `error` | [`SandboxHandle::fail_delivery`] |
//!   | `refund` | `failed.refundPending` | `failed` / `failed.refundCompleted` | [`SandboxHandle::complete_refund`] |
//!
//!   Any other move is 422 (`invalid_state`). `GET /sandbox/cash-ins/{id}/delivery`
//!   ([`SandboxHandle::delivery_json`]) shows the transaction. A transaction under review waits
//!   for `complete` or `fail`; [`SandboxHandle::set_delivery_delay`] (`None`) makes every
//!   transaction wait for a control. `GET /transactions/{id}` answers the same object (exactly
//!   the latest webhook's `data`), unless [`SandboxSettings::transaction_reads`] is off: OMS
//!   documents the object and `GET /transactions` but not this read, so it is the sandbox's
//!   assumption, and the gateway probes for it rather than relying on it.
//! - **Webhooks** ([`SandboxHandle::set_webhooks`]): only the documented events, with the guide's
//!   payloads: `cash_in.completed`, `cash_in.expired` (`cashIn.*` in [`Spelling::OpenApi`]) and
//!   `transaction.fiatToCrypto.{processing,underReview,completed,failed,refundCompleted}`.
//! - **Money and time.** Amounts (`indicatedAmount`, the cash at the counter) are above 0.00
//!   and at most 500.00: the `max_transaction` the guide documents for the provider of its
//!   example, the one modelled here. No page states a minimum (an amount too small to carry its
//!   fees is refused as such), and no larger retailer limit is modelled or configurable: a test
//!   of one answers with a fixed body ([`SandboxHandle::inject`]). Per-entry developer fee
//!   amounts add up to `feesDeducted.developer` (rounding is allocated by largest remainder);
//!   timestamps are whole seconds, as the docs show them.
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
mod routes;
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

use store::{DeliveryAction, DeliveryError, Refusal};

use state::{Sandbox, lock};

/// How often pending cash-ins are checked for lapsed codes (reads also check, lazily).
const SWEEP_INTERVAL: Duration = Duration::from_millis(250);
/// How long `shutdown` lets in-flight requests finish before cutting them off.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long a transaction left alone takes to deliver, by default.
const DEFAULT_DELIVERY_DELAY: Duration = Duration::from_secs(2);

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
    /// How long a cash-in stays `pending` (its lapsed code refreshable) after its code lapses,
    /// before it is `expired`. The docs give no length; `None` (the default) is one more
    /// `code_ttl`, so a shortened code lifetime shortens the window with it.
    pub refresh_window: Option<Duration>,
    /// How long a transaction stays at `processing.fundsPulled` before it completes by itself;
    /// `None`: until a control moves it. Default 2 s (the guide's example takes 85 s).
    pub delivery_delay: Option<Duration>,
    /// Whether `GET /transactions/{id}` answers with the transaction as its webhooks show it.
    /// OMS documents `GET /transactions` (its paging) and the transaction object, but not the
    /// single read, so the gateway probes for it; `false` plays an OMS without it. Default
    /// `true`; switchable at run time.
    pub transaction_reads: bool,
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
            refresh_window: None,
            delivery_delay: Some(DEFAULT_DELIVERY_DELAY),
            transaction_reads: true,
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
            .field("refresh_window", &self.refresh_window)
            .field("delivery_delay", &self.delivery_delay)
            .field("transaction_reads", &self.transaction_reads)
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

    /// Sandbox control: expires a pending cash-in now, refresh window or not (as
    /// `POST /sandbox/cash-ins/{id}/expire`); answers the cash-in as the API shows it.
    pub fn expire_cash_in(&self, id: &str) -> Result<serde_json::Value, ControlError> {
        let spelling = self.inner.sandbox.spelling();
        let mut store = lock(&self.inner.sandbox.store);
        store
            .force_expire(id, clock::now_ms())
            .map(|ci| model::render_cash_in(ci, &spelling))
            .map_err(ControlError::from)
    }

    /// The transaction of a committed cash-in, as its webhooks show it (none before the commit).
    pub fn delivery_json(&self, cash_in_id: &str) -> Option<serde_json::Value> {
        let spelling = self.inner.sandbox.spelling();
        let mut store = lock(&self.inner.sandbox.store);
        store
            .get(cash_in_id, clock::now_ms())
            .and_then(|ci| model::render_transaction(ci, &spelling))
    }

    /// Holds the transaction for compliance review (`processing.underReview`): it then waits
    /// for [`complete_delivery`](Self::complete_delivery) or [`fail_delivery`](Self::fail_delivery).
    pub fn delivery_under_review(
        &self,
        cash_in_id: &str,
    ) -> Result<serde_json::Value, ControlError> {
        self.drive(cash_in_id, DeliveryAction::Review)
    }

    /// Delivers: the transaction is `completed`, with the destination's `txHash`.
    pub fn complete_delivery(&self, cash_in_id: &str) -> Result<serde_json::Value, ControlError> {
        self.drive(cash_in_id, DeliveryAction::Complete)
    }

    /// Fails the delivery: `failed` / `failed.refundPending` with `error` `{code, message}`
    /// (the guide's example: `on_chain_revert`, "Delivery transaction reverted onchain").
    pub fn fail_delivery(
        &self,
        cash_in_id: &str,
        code: &str,
        message: &str,
    ) -> Result<serde_json::Value, ControlError> {
        let error = DeliveryError {
            code: code.to_owned(),
            message: message.to_owned(),
        };
        self.drive(cash_in_id, DeliveryAction::Fail(error))
    }

    /// The refund of a failed delivery is done: `failed` / `failed.refundCompleted`.
    pub fn complete_refund(&self, cash_in_id: &str) -> Result<serde_json::Value, ControlError> {
        self.drive(cash_in_id, DeliveryAction::Refund)
    }

    /// How long a transaction left alone takes to complete, for transactions created from now
    /// on and those still waiting; `None`: every transaction waits for a control.
    pub fn set_delivery_delay(&self, delay: Option<Duration>) {
        lock(&self.inner.sandbox.store).set_delivery_delay(delay.map(clock::duration_ms));
    }

    /// Serve `GET /transactions/{id}` or not (404, as an OMS without that read).
    pub fn set_transaction_reads(&self, on: bool) {
        self.inner.sandbox.set_transaction_reads(on);
    }

    fn drive(&self, id: &str, action: DeliveryAction) -> Result<serde_json::Value, ControlError> {
        let spelling = self.inner.sandbox.spelling();
        let mut store = lock(&self.inner.sandbox.store);
        let ci = store
            .drive_delivery(id, action, clock::now_ms())
            .map_err(ControlError::from)?;
        model::render_transaction(ci, &spelling).ok_or(ControlError::NotFound)
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

/// Why a sandbox control refused: what its HTTP twin answers with 404 or 422.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlError {
    /// No cash-in with this id.
    NotFound,
    /// Not allowed in the cash-in's (or its transaction's) current state; says why.
    InvalidState(String),
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlError::NotFound => f.write_str("no such cash-in"),
            ControlError::InvalidState(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for ControlError {}

impl From<Refusal> for ControlError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::NotFound => ControlError::NotFound,
            other => ControlError::InvalidState(error::ApiError::from(other).message),
        }
    }
}
