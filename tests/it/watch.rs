//! Watch streams as a caller sees them: `WatchCashIn` and `WatchCashIns` over real tonic clients
//! against the gateway and its embedded sandbox. Upstream polls are counted where they land, in
//! the sandbox's request journal, never through the gateway's own counters.

use crate::common;

use crate::common::{TestGateway, ms};
use oms_gateway::config::GatewaySettings;
use oms_gateway::proto::v1 as pb;
use oms_sandbox::Fault;
use pb::{CashInEventType as Kind, CashInStatus as St};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

// === harness ===

/// The test config with watch settings short enough for tests.
fn config(poll: Duration, heartbeat: Duration) -> GatewaySettings {
    let mut config = common::test_config();
    config.watch.poll_interval = poll;
    config.watch.heartbeat_interval = heartbeat;
    config
}

/// A heartbeat interval long enough never to fire in a test.
const NO_HEARTBEAT: Duration = Duration::from_secs(60);

/// What a watcher received: an event, or the end of the stream with its status.
#[derive(Debug)]
enum Item {
    Event(Box<pb::CashInEvent>),
    End(Code, String),
}

/// A watch stream read by a background task as fast as it can, so tests can wait on it with
/// bounds. Dropping it drops the stream (the caller going away).
struct Watcher {
    rx: mpsc::UnboundedReceiver<(Instant, Item)>,
    task: JoinHandle<()>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Watcher {
    fn spawn<F>(call: F) -> Watcher
    where
        F: Future<
                Output = Result<tonic::Response<tonic::Streaming<pb::CashInEvent>>, tonic::Status>,
            > + Send
            + 'static,
    {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut stream = match call.await {
                Ok(response) => response.into_inner(),
                Err(status) => {
                    let end = Item::End(status.code(), status.message().to_owned());
                    let _ = tx.send((Instant::now(), end));
                    return;
                }
            };
            loop {
                let item = match stream.message().await {
                    Ok(Some(event)) => Item::Event(Box::new(event)),
                    Ok(None) => Item::End(Code::Ok, String::new()),
                    Err(status) => Item::End(status.code(), status.message().to_owned()),
                };
                let end = matches!(item, Item::End(..));
                if tx.send((Instant::now(), item)).is_err() || end {
                    return;
                }
            }
        });
        Watcher { rx, task }
    }

    /// The next item, panicking if none arrives within `within`.
    async fn next(&mut self, within: Duration) -> (Instant, Item) {
        timeout(within, self.rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no watch item within {within:?}"))
            .expect("the watcher task ended without reporting the end")
    }

    /// The next non-heartbeat event, panicking on the end of the stream.
    async fn event(&mut self, within: Duration) -> pb::CashInEvent {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await.1 {
                Item::Event(e) if e.r#type == Kind::Heartbeat as i32 => continue,
                Item::Event(e) => return *e,
                Item::End(code, message) => {
                    panic!("stream ended with {code:?} ({message}) while an event was expected")
                }
            }
        }
    }

    /// Skips events until one whose cash-in has `status`.
    async fn event_with_status(&mut self, status: St, within: Duration) -> pb::CashInEvent {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = self.event(left).await;
            if cash_in(&event).status == status as i32 {
                return event;
            }
        }
    }

    /// How the stream ended, skipping heartbeats; panics on any other event.
    async fn end(&mut self, within: Duration) -> (Code, String) {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await.1 {
                Item::Event(e) if e.r#type == Kind::Heartbeat as i32 => continue,
                Item::Event(e) => panic!("expected the end of the stream, got {e:?}"),
                Item::End(code, message) => return (code, message),
            }
        }
    }
}

fn watch(gateway: &TestGateway, id: &str) -> Watcher {
    watch_on(gateway.channel.clone(), id, None)
}

/// A watch of the cash-in layer (`cash_in_only`): these tests are about it, and the sandbox's
/// deliveries, followed through its transaction read, would keep a completed cash-in's stream
/// open for a couple of seconds more (`deliveries.rs` and `delivery_paths.rs` follow both).
fn watch_on(channel: Channel, id: &str, deadline: Option<Duration>) -> Watcher {
    let mut request = tonic::Request::new(pb::WatchCashInRequest {
        cash_in_id: id.to_owned(),
        cash_in_only: true,
    });
    if let Some(deadline) = deadline {
        request.set_timeout(deadline);
    }
    let mut client = pb::cash_in_service_client::CashInServiceClient::new(channel);
    Watcher::spawn(async move { client.watch_cash_in(request).await })
}

/// A customer's watch of the cash-in layer (as [`watch_on`]).
fn watch_customer(gateway: &TestGateway, customer: &str, statuses: &[St]) -> Watcher {
    let request = pb::WatchCashInsRequest {
        customer_id: customer.to_owned(),
        statuses: statuses.iter().map(|s| *s as i32).collect(),
        cash_in_only: true,
    };
    let mut client = gateway.cash_ins();
    Watcher::spawn(async move { client.watch_cash_ins(request).await })
}

/// A second connection to the gateway, whose streams accept at most `window` unread bytes
/// (hyper's client default is megabytes, which no test fills).
async fn small_window_channel(gateway: &TestGateway, window: u32) -> Channel {
    Endpoint::from_shared(format!("http://{}", gateway.gateway.addr()))
        .expect("endpoint")
        .initial_stream_window_size(window)
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect to the gateway")
}

fn cash_in(event: &pb::CashInEvent) -> &pb::CashIn {
    event
        .cash_in
        .as_ref()
        .expect("the event carries the cash-in")
}

fn status_of(event: &pb::CashInEvent) -> St {
    St::try_from(cash_in(event).status).expect("a known status")
}

fn kind(event: &pb::CashInEvent) -> Kind {
    Kind::try_from(event.r#type).expect("a known event type")
}

fn code_of(cash_in: &pb::CashIn) -> String {
    cash_in
        .deposit_instructions
        .as_ref()
        .map(|d| d.code.clone())
        .unwrap_or_default()
}

async fn simulate_deposit(
    gateway: &TestGateway,
    id: &str,
    amount: &str,
    authorize_only: bool,
) -> pb::SimulateDepositResponse {
    gateway
        .simulator()
        .simulate_deposit(pb::SimulateDepositRequest {
            cash_in_id: id.to_owned(),
            amount: amount.to_owned(),
            authorize_only,
        })
        .await
        .expect("SimulateDeposit")
        .into_inner()
}

async fn refresh(gateway: &TestGateway, id: &str) -> pb::CashIn {
    gateway
        .cash_ins()
        .refresh_cash_in(pb::RefreshCashInRequest {
            cash_in_id: id.to_owned(),
            idempotency_key: format!("watch-refresh-{}", uuid::Uuid::new_v4()),
        })
        .await
        .expect("RefreshCashIn")
        .into_inner()
        .cash_in
        .expect("cash_in")
}

/// Commits an authorized deposit with the sandbox's REST endpoint directly (the gateway's
/// SimulateDeposit only commits together with the authorization), so the gateway learns of
/// the completion only by polling.
async fn commit_deposit_upstream(
    gateway: &TestGateway,
    cash_in: &pb::CashIn,
    amount: &str,
    confirmation_id: &str,
) {
    let body = serde_json::json!({
        "accountNumber": code_of(cash_in),
        "accountReferenceNumber": cash_in.id,
        "amount": amount,
        "originalConfirmationId": confirmation_id,
    });
    common::sandbox_rest::SandboxRest::new(gateway.sandbox())
        .await
        .post("/cash-ins/simulate/auth-commit", Some(body))
        .await;
}

/// Waits into the next whole second. OMS's timestamps are whole seconds (as its docs show them,
/// and so the sandbox's), so two states or two expiries a test tells apart by time must lie a
/// second boundary apart.
async fn next_whole_second() {
    let into = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_millis());
    tokio::time::sleep(Duration::from_millis(u64::from(1_000 - into) + 20)).await;
}

fn assert_changed(event: &pb::CashInEvent, from: St, to: St, fields: &[&str]) {
    assert_eq!(kind(event), Kind::Changed, "{event:?}");
    assert_eq!(event.previous_status, from as i32, "{event:?}");
    assert_eq!(status_of(event), to, "{event:?}");
    for field in fields {
        assert!(
            event.changed_fields.iter().any(|f| f == field),
            "changed_fields {:?} lack {field}",
            event.changed_fields
        );
    }
    assert!(event.observed_at.is_some());
}

// === a single cash-in ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_sees_pending_then_processing_then_completed_with_final_amounts_then_ok() {
    let gateway = common::start_with(config(ms(250), NO_HEARTBEAT)).await;
    let created = common::create_cash_in(&gateway, "cst_watch1").await;
    let mut watcher = watch(&gateway, &created.id);

    let initial = watcher.event(Duration::from_secs(3)).await;
    assert_eq!(kind(&initial), Kind::Initial);
    assert_eq!(status_of(&initial), St::Pending);
    assert_eq!(initial.previous_status, St::Unspecified as i32);
    assert!(initial.changed_fields.is_empty());
    assert_eq!(cash_in(&initial).id, created.id);

    let auth = simulate_deposit(&gateway, &created.id, "150.00", true).await;
    assert_eq!(
        auth.cash_in.as_ref().map(|c| c.status),
        Some(St::Processing as i32)
    );
    let processing = watcher.event(Duration::from_secs(3)).await;
    assert_changed(&processing, St::Pending, St::Processing, &["status"]);

    // Completed upstream behind the gateway's back: only the poller can bring it.
    commit_deposit_upstream(&gateway, &created, "150.00", &auth.confirmation_id).await;
    let completed = watcher.event(Duration::from_secs(3)).await;
    assert_changed(
        &completed,
        St::Processing,
        St::Completed,
        &["status", "transactionId", "completedAt"],
    );
    let done = cash_in(&completed);
    let source = done.source.as_ref().expect("source");
    let destination = done.destination.as_ref().expect("destination");
    assert_eq!(source.amount.as_deref(), Some("150.00"));
    assert!(destination.amount.as_deref().is_some_and(|a| !a.is_empty()));
    assert!(
        done.transaction_id
            .as_deref()
            .is_some_and(|t| t.starts_with("txn_")),
        "{done:?}"
    );
    assert!(done.completed_at.is_some());

    assert_eq!(watcher.end(Duration::from_secs(2)).await.0, Code::Ok);
    drop(watcher);
    gateway.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_simulated_deposit_reaches_the_watcher_as_completed_and_the_stream_ends_ok() {
    let gateway = common::start_with(config(ms(250), NO_HEARTBEAT)).await;
    let created = common::create_cash_in(&gateway, "cst_watch1b").await;
    let mut watcher = watch(&gateway, &created.id);
    assert_eq!(
        kind(&watcher.event(Duration::from_secs(3)).await),
        Kind::Initial
    );

    simulate_deposit(&gateway, &created.id, "", false).await;
    // A poll may catch the short processing step in between; the last event is completed.
    let completed = watcher
        .event_with_status(St::Completed, Duration::from_secs(3))
        .await;
    assert_eq!(kind(&completed), Kind::Changed);
    assert!(
        [St::Pending as i32, St::Processing as i32].contains(&completed.previous_status),
        "{completed:?}"
    );
    let done = cash_in(&completed);
    assert_eq!(
        done.source.as_ref().and_then(|s| s.amount.as_deref()),
        Some("200.00"),
        "the indicated amount is deposited when none is given"
    );
    assert!(done.transaction_id.is_some() && done.completed_at.is_some());
    assert_eq!(watcher.end(Duration::from_secs(2)).await.0, Code::Ok);
    drop(watcher);
    gateway.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_reaches_watchers_at_once_without_waiting_for_a_poll() {
    // A 30 s interval: anything the watcher sees after INITIAL was not polled.
    let gateway = common::start_with(config(Duration::from_secs(30), NO_HEARTBEAT)).await;
    let created = common::create_cash_in(&gateway, "cst_watch2").await;
    let mut watcher = watch(&gateway, &created.id);
    let initial = watcher.event(Duration::from_secs(3)).await;
    assert_eq!(kind(&initial), Kind::Initial);
    let polls_before = gateway.gets(&created.id);
    // Expiries are whole seconds: refresh in the next one, so the expiry changes too.
    next_whole_second().await;

    let started = Instant::now();
    let refreshed = refresh(&gateway, &created.id).await;
    let changed = watcher.event(Duration::from_secs(2)).await;
    let latency = started.elapsed();
    assert_changed(
        &changed,
        St::Pending,
        St::Pending,
        &["depositInstructions.code", "depositInstructions.expiresAt"],
    );
    assert_eq!(code_of(cash_in(&changed)), code_of(&refreshed));
    assert_ne!(code_of(cash_in(&changed)), code_of(&created));
    assert_eq!(
        gateway.gets(&created.id),
        polls_before,
        "no upstream poll was needed"
    );
    println!("refresh reached the watcher {latency:?} after RefreshCashIn was sent (no poll)");
    drop(watcher);
    gateway.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_answered_with_an_older_state_does_not_undo_a_published_refresh() {
    let gateway = common::start_with(config(ms(1000), NO_HEARTBEAT)).await;
    let created = common::create_cash_in(&gateway, "cst_watchstale").await;
    let mut watcher = watch(&gateway, &created.id);
    assert_eq!(
        kind(&watcher.event(Duration::from_secs(3)).await),
        Kind::Initial
    );
    // The next poll is answered with the state as it is now, before the refresh: what a poll
    // that was answered just before the refresh, but arrives just after it, brings back.
    let stale = gateway.sandbox().cash_in_json(&created.id).expect("known");
    // The refresh's `updatedAt` is then later than the stale answer's (OMS's timestamps are
    // whole seconds; within one second the order is decided by when each was learned, see
    // a_poll_answered_before_a_refresh_in_the_same_second_never_brings_the_revoked_code_back).
    next_whole_second().await;
    let refreshed = refresh(&gateway, &created.id).await;
    let changed = watcher.event(Duration::from_secs(2)).await;
    assert_eq!(code_of(cash_in(&changed)), code_of(&refreshed));
    // The next poll, sent after the refresh, is answered with the state before it.
    gateway.sandbox().inject(common::respond(
        "GET",
        &format!("/cash-ins/{}", created.id),
        1,
        200,
        stale.to_string(),
        &[],
    ));
    let polls_before = gateway.gets(&created.id);

    common::eventually(Duration::from_secs(3), "the stale poll", async || {
        gateway.gets(&created.id) > polls_before
    })
    .await;
    let journal = gateway.sandbox().journal();
    let position = |method: &str, path: &str| {
        journal
            .iter()
            .rposition(|r| r.method == method && r.path == path)
            .expect("in the journal")
    };
    assert!(
        position("POST", &format!("/cash-ins/{}/refresh", created.id))
            < position("GET", &format!("/cash-ins/{}", created.id)),
        "the stale answer came after the refresh"
    );
    // Give the stale answer time to reach the stream, if it were going to.
    if let Ok((_, item)) = timeout(ms(500), watcher.rx.recv())
        .await
        .map(|i| i.expect("item"))
    {
        panic!(
            "the watcher was sent the older state back (the revoked code {}): {item:?}",
            code_of(&created)
        );
    }
    drop(watcher);
    gateway.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expire_cash_in_ends_the_stream_with_expired_then_ok() {
    let gateway = common::start_with(config(ms(250), NO_HEARTBEAT)).await;
    let created = common::create_cash_in(&gateway, "cst_watch3").await;
    let mut watcher = watch(&gateway, &created.id);
    assert_eq!(
        kind(&watcher.event(Duration::from_secs(3)).await),
        Kind::Initial
    );

    gateway.expire(&created.id).await;
    let expired = watcher.event(Duration::from_secs(2)).await;
    assert_changed(&expired, St::Pending, St::Expired, &["status"]);
    assert_eq!(watcher.end(Duration::from_secs(2)).await.0, Code::Ok);
    drop(watcher);
    gateway.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lapsed_deposit_code_ends_the_stream_with_expired_then_ok() {
    let mut config = config(ms(250), NO_HEARTBEAT);
    config.sandbox.code_ttl = Duration::from_secs(1);
    let gateway = common::start_with(config).await;
    let created = common::create_cash_in(&gateway, "cst_watch3b").await;
    let started = Instant::now();
    let mut watcher = watch(&gateway, &created.id);
    let initial = watcher.event(Duration::from_secs(3)).await;
    assert_eq!(
        status_of(&initial),
        St::Pending,
        "watched before the code lapsed"
    );

    // The code lapses after 1 s, and the cash-in is expired once the refresh window (one more
    // code lifetime by default) has passed too: 2 s after creation.
    let expired = watcher.event(Duration::from_secs(5)).await;
    assert_changed(&expired, St::Pending, St::Expired, &["status"]);
    assert_eq!(
        cash_in(&expired).sub_status,
        Some(pb::CashInSubStatus::CashDepositExpired as i32)
    );
    assert_eq!(watcher.end(Duration::from_secs(2)).await.0, Code::Ok);
    println!(
        "code_ttl 1 s: the watcher saw expired {:?} after it started watching",
        started.elapsed()
    );
    drop(watcher);
    gateway.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_cash_in_ends_the_watch_with_not_found_at_once() {
    let gateway = common::start_with(config(ms(250), NO_HEARTBEAT)).await;
    let started = Instant::now();
    let mut watcher = watch(&gateway, "ci_doesnotexist0000000000");
    let (code, message) = watcher.end(Duration::from_secs(2)).await;
    assert_eq!(code, Code::NotFound, "{message}");
    // At once: on OMS's first answer, not after a retry or another poll.
    assert_eq!(
        gateway.gets("ci_doesnotexist0000000000"),
        1,
        "ended after {:?}",
        started.elapsed()
    );
    drop(watcher);
    common::eventually(
        Duration::from_secs(2),
        "the poller is released",
        async || gateway.gateway.watch_hub().watched() == 0,
    )
    .await;
    gateway.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_cash_in_id_is_invalid_argument_without_an_upstream_call() {
    let gateway = common::start_with(config(ms(250), NO_HEARTBEAT)).await;
    for bad in ["", "cst_123", "ci_", "ci_has space", "ci_../../etc"] {
        let mut watcher = watch(&gateway, bad);
        let (code, message) = watcher.end(Duration::from_secs(2)).await;
        assert_eq!(code, Code::InvalidArgument, "{bad:?}: {message}");
        assert!(message.contains("cash_in_id"), "{bad:?}: {message}");
    }
    assert_eq!(gateway.sandbox().count("GET", "/cash-ins"), 0);
    assert_eq!(gateway.gateway.watch_hub().watched(), 0);
    gateway.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watching_a_completed_cash_in_reports_it_once_and_ends_ok() {
    let interval = ms(200);
    let gateway = common::start_with(config(interval, NO_HEARTBEAT)).await;
    let created = common::create_cash_in(&gateway, "cst_watchdone").await;
    simulate_deposit(&gateway, &created.id, "", false).await;

    let mut watcher = watch(&gateway, &created.id);
    let initial = watcher.event(Duration::from_secs(3)).await;
    assert_eq!(kind(&initial), Kind::Initial);
    assert_eq!(status_of(&initial), St::Completed);
    assert_eq!(watcher.end(Duration::from_secs(2)).await.0, Code::Ok);
    let polls = gateway.gets(&created.id);
    sleep(interval * 3).await;
    assert_eq!(
        gateway.gets(&created.id),
        polls,
        "nothing to poll after a terminal state"
    );
    assert_eq!(gateway.gateway.watch_hub().watched(), 0);
    drop(watcher);
    gateway.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_shutdown_ends_open_watch_streams_with_unavailable() {
    let gateway = common::start_with(config(ms(250), NO_HEARTBEAT)).await;
    let created = common::create_cash_in(&gateway, "cst_watchstop").await;
    let mut single = watch(&gateway, &created.id);
    let mut customer = watch_customer(&gateway, "cst_watchstop", &[]);
    single.event(Duration::from_secs(3)).await;
    customer.event(Duration::from_secs(3)).await;

    let stopping = tokio::spawn(gateway.gateway.shutdown());
    for watcher in [&mut single, &mut customer] {
        let (code, message) = watcher.end(Duration::from_secs(3)).await;
        assert_eq!(code, Code::Unavailable, "{message}");
    }
    timeout(Duration::from_secs(10), stopping)
        .await
        .expect("shutdown finishes")
        .expect("shutdown task");
}

// === one poller per resource, and the poll budget ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_watchers_of_one_cash_in_cause_one_upstream_get_per_interval() {
    let interval = ms(250);
    let gateway = common::start_with(config(interval, NO_HEARTBEAT)).await;
    let created = common::create_cash_in(&gateway, "cst_watch5").await;
    assert_eq!(gateway.gets(&created.id), 0);

    let started = Instant::now();
    let mut watchers: Vec<Watcher> = (0..100).map(|_| watch(&gateway, &created.id)).collect();
    for watcher in &mut watchers {
        assert_eq!(
            kind(&watcher.event(Duration::from_secs(5)).await),
            Kind::Initial
        );
    }
    // The oracle is what OMS sees: about one GET per interval below, not a hundred.
    let window = Duration::from_millis(2500);
    sleep(window.saturating_sub(started.elapsed())).await;
    let polls = gateway.gets(&created.id);
    let elapsed = started.elapsed().as_secs_f64();
    let expected = 1.0 + elapsed / interval.as_secs_f64();
    println!(
        "100 watchers on 1 id: {polls} upstream GETs in {elapsed:.2} s ({:.1}/s; one per {:?} interval would be {expected:.1})",
        polls as f64 / elapsed,
        interval
    );
    assert!(
        (polls as f64 - expected).abs() <= 2.0 + 0.15 * expected,
        "{polls} GETs, expected about {expected:.1}"
    );
    drop(watchers);
    gateway.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_of_a_hundred_cash_ins_never_poll_faster_than_the_budget() {
    let rate = 50.0;
    let burst = 5.0; // a tenth of a second's worth (see watch::budget)
    let mut config = config(ms(250), NO_HEARTBEAT);
    config.watch.max_polls_per_second = rate;
    let gateway = common::start_with(config).await;
    let location = common::first_location(&gateway.channel).await;
    let mut ids = Vec::new();
    for _ in 0..100 {
        let created = gateway
            .cash_ins()
            .create_cash_in(common::create_request(&location, "cst_watch5b"))
            .await
            .expect("CreateCashIn")
            .into_inner()
            .cash_in
            .expect("cash_in");
        ids.push(created.id);
    }
    let polls = || gateway.sandbox().count("GET", "/cash-ins/");
    assert_eq!(polls(), 0);

    let started = Instant::now();
    let mut watchers: Vec<Watcher> = ids.iter().map(|id| watch(&gateway, id)).collect();
    // Sample the upstream count while 100 pollers (each wanting 4 polls/s) share 50/s.
    let mut samples = vec![(0.0f64, 0usize)];
    while started.elapsed() < Duration::from_secs(3) {
        sleep(ms(50)).await;
        samples.push((started.elapsed().as_secs_f64(), polls()));
    }
    let (elapsed, total) = *samples.last().expect("samples");
    let mut worst_excess = f64::MIN;
    for (i, (t0, n0)) in samples.iter().enumerate() {
        for (t1, n1) in &samples[i + 1..] {
            // Requests seen between two samples, against what the budget allows in between
            // (one sample period of slack for when a request lands relative to a sample).
            let allowed = burst + rate * (t1 - t0 + 0.05);
            worst_excess = worst_excess.max((n1 - n0) as f64 - allowed);
        }
    }
    println!(
        "100 watchers on 100 ids: {total} upstream GETs in {elapsed:.2} s ({:.1}/s; cap {rate}/s, burst {burst}); worst window {worst_excess:+.1} requests against the cap",
        total as f64 / elapsed
    );
    assert!(
        worst_excess <= 0.0,
        "polled faster than {rate}/s + burst {burst}: {worst_excess:+.1}"
    );
    // The cap above is the claim; this only shows the budget is used at all (a quarter of it,
    // whatever else the machine is doing).
    assert!(
        total as f64 >= 0.25 * rate * elapsed,
        "the budget should be used, not starved: {total} in {elapsed:.2} s"
    );
    // Every stream was served its INITIAL state despite the queue at the budget.
    for watcher in &mut watchers {
        assert_eq!(
            kind(&watcher.event(Duration::from_secs(5)).await),
            Kind::Initial
        );
    }
    drop(watchers);
    gateway.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_every_stream_stops_the_upstream_polls() {
    let interval = ms(200);
    let gateway = common::start_with(config(interval, NO_HEARTBEAT)).await;
    let created = common::create_cash_in(&gateway, "cst_watch6").await;
    let mut watchers: Vec<Watcher> = (0..10).map(|_| watch(&gateway, &created.id)).collect();
    for watcher in &mut watchers {
        watcher.event(Duration::from_secs(3)).await;
    }
    // Ten streams, one poller: over five intervals OMS sees about five GETs, not fifty.
    let before = gateway.gets(&created.id);
    sleep(interval * 5).await;
    let polled = gateway.gets(&created.id) - before;
    assert!(
        (2..=8).contains(&polled),
        "one poller for ten streams: {polled} GETs in five intervals"
    );
    let hub = gateway.gateway.watch_hub();

    drop(watchers);
    common::eventually(interval * 3, "the poller is released", async || {
        hub.watched() == 0
    })
    .await;
    common::eventually(interval * 3, "the streams are released", async || {
        hub.streams() == 0
    })
    .await;
    sleep(ms(50)).await; // a poll in flight at the cancel may still land
    let after_cancel = gateway.gets(&created.id);
    sleep(interval * 4).await;
    assert_eq!(
        gateway.gets(&created.id),
        after_cancel,
        "no GET after the last stream went away"
    );
    gateway.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_deadline_ends_the_stream_promptly_and_releases_the_poller() {
    let interval = ms(200);
    let gateway = common::start_with(config(interval, NO_HEARTBEAT)).await;
    let created = common::create_cash_in(&gateway, "cst_watch12").await;
    let started = Instant::now();
    let mut watcher = watch_on(gateway.channel.clone(), &created.id, Some(ms(500)));
    assert_eq!(
        kind(&watcher.event(Duration::from_secs(2)).await),
        Kind::Initial
    );
    let (code, message) = watcher.end(Duration::from_secs(3)).await;
    let ended = started.elapsed();
    assert!(
        matches!(code, Code::DeadlineExceeded | Code::Cancelled),
        "{code:?}: {message}"
    );
    assert!(
        ended >= ms(400) && ended < Duration::from_secs(5),
        "ended after {ended:?}"
    );
    println!("a 500 ms deadline ended the watch with {code:?} after {ended:?}");

    let hub = gateway.gateway.watch_hub();
    common::eventually(interval * 3, "the poller is released", async || {
        hub.watched() == 0
    })
    .await;
    sleep(ms(50)).await;
    let after = gateway.gets(&created.id);
    sleep(interval * 3).await;
    assert_eq!(
        gateway.gets(&created.id),
        after,
        "no polls after the deadline"
    );
    drop(watcher);
    gateway.gateway.shutdown().await;
}

// === upstream trouble and slow callers ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_outage_shorter_than_the_limit_keeps_the_stream_open() {
    let mut config = config(ms(250), ms(300));
    config.watch.unreachable_limit = Duration::from_secs(5);
    let gateway = common::start_with(config).await;
    let created = common::create_cash_in(&gateway, "cst_watch7").await;
    let mut watcher = watch(&gateway, &created.id);
    assert_eq!(
        kind(&watcher.event(Duration::from_secs(3)).await),
        Kind::Initial
    );

    let faults = 6;
    gateway
        .sandbox()
        .inject(Fault::status(Some("GET"), "/cash-ins/", faults, 503));
    let failed = || {
        gateway
            .sandbox()
            .journal()
            .iter()
            .filter(|r| r.method == "GET" && r.path.starts_with("/cash-ins/") && r.status == 503)
            .count()
    };
    let outage = Instant::now();
    let mut heartbeats = 0;
    while failed() < faults {
        assert!(
            outage.elapsed() < Duration::from_secs(8),
            "faults unused: {}",
            failed()
        );
        // Only heartbeats while OMS fails: no error, no end.
        if let Ok(Some((_, item))) = timeout(ms(50), watcher.rx.recv()).await {
            match item {
                Item::Event(e) if e.r#type == Kind::Heartbeat as i32 => heartbeats += 1,
                other => panic!("during the outage the stream sent {other:?}"),
            }
        }
    }
    let outage = outage.elapsed();
    // The poller polls successfully again after the outage.
    let answered = || {
        gateway
            .sandbox()
            .journal()
            .iter()
            .filter(|r| r.method == "GET" && r.path == format!("/cash-ins/{}", created.id))
            .map(|r| r.status)
            .collect::<Vec<_>>()
    };
    common::eventually(
        Duration::from_secs(5),
        "a successful poll after the outage",
        async || answered().last() == Some(&200),
    )
    .await;
    println!(
        "{faults} upstream 503s over {outage:?}: the stream stayed open ({heartbeats} heartbeats)"
    );

    simulate_deposit(&gateway, &created.id, "", false).await;
    let completed = watcher
        .event_with_status(St::Completed, Duration::from_secs(3))
        .await;
    assert_eq!(kind(&completed), Kind::Changed);
    assert_eq!(watcher.end(Duration::from_secs(2)).await.0, Code::Ok);
    drop(watcher);
    gateway.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_outage_longer_than_the_limit_ends_the_stream_with_unavailable() {
    let limit = Duration::from_secs(1);
    let mut config = config(ms(250), ms(300));
    config.watch.unreachable_limit = limit;
    let gateway = common::start_with(config).await;
    let created = common::create_cash_in(&gateway, "cst_watch7b").await;
    let mut watcher = watch(&gateway, &created.id);
    assert_eq!(
        kind(&watcher.event(Duration::from_secs(3)).await),
        Kind::Initial
    );

    gateway
        .sandbox()
        .inject(Fault::status(Some("GET"), "/cash-ins/", 1000, 503));
    let outage = Instant::now();
    let (code, message) = watcher.end(Duration::from_secs(6)).await;
    let ended = outage.elapsed();
    assert_eq!(code, Code::Unavailable, "{message}");
    assert!(ended >= limit, "ended after {ended:?}, before the limit");
    println!(
        "unreachable_limit {limit:?}: the stream ended UNAVAILABLE {ended:?} into the outage ({message})"
    );
    drop(watcher);
    common::eventually(
        Duration::from_secs(2),
        "the poller is released",
        async || gateway.gateway.watch_hub().watched() == 0,
    )
    .await;
    gateway.sandbox().clear_faults();
    gateway.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_does_not_delay_the_others_and_finally_reads_the_terminal_state() {
    let gateway = common::start_with(config(ms(250), NO_HEARTBEAT)).await;
    let created = common::create_cash_in(&gateway, "cst_watch8").await;

    // The stalled caller has its own connection with a small window and never reads, so the
    // gateway soon cannot send it anything more.
    let channel = small_window_channel(&gateway, 4 * 1024).await;
    let mut stalled = pb::cash_in_service_client::CashInServiceClient::new(channel)
        .watch_cash_in(pb::WatchCashInRequest {
            cash_in_id: created.id.clone(),
            cash_in_only: true,
        })
        .await
        .expect("WatchCashIn")
        .into_inner();
    let mut readers: Vec<Watcher> = (0..3).map(|_| watch(&gateway, &created.id)).collect();
    for reader in &mut readers {
        assert_eq!(
            kind(&reader.event(Duration::from_secs(3)).await),
            Kind::Initial
        );
    }

    // Enough changes (each a full cash-in) to fill the stalled stream's HTTP/2 window.
    let refreshes = 40;
    for _ in 0..refreshes {
        refresh(&gateway, &created.id).await;
    }
    let deposited = Instant::now();
    simulate_deposit(&gateway, &created.id, "", false).await;
    let mut slowest = Duration::ZERO;
    for reader in &mut readers {
        reader
            .event_with_status(St::Completed, Duration::from_secs(2))
            .await;
        slowest = slowest.max(deposited.elapsed());
        assert_eq!(reader.end(Duration::from_secs(2)).await.0, Code::Ok);
    }
    println!(
        "{refreshes} refreshes then a deposit: readers saw completed within {slowest:?} while one stream was not read"
    );

    let mut events = Vec::new();
    let end = loop {
        match timeout(Duration::from_secs(5), stalled.message()).await {
            Err(_) => panic!("the stalled stream neither ended nor sent"),
            Ok(Ok(Some(event))) => events.push(event),
            Ok(Ok(None)) => break Code::Ok,
            Ok(Err(status)) => break status.code(),
        }
    };
    let last = events.last().expect("events");
    assert!(
        events.len() < refreshes,
        "a stalled stream is sent the latest state, not every state: {} events",
        events.len()
    );
    println!(
        "the stalled stream, read late, held {} events for {refreshes} refreshes and the deposit; last {:?}",
        events.len(),
        status_of(last)
    );
    assert_eq!(kind(&events[0]), Kind::Initial);
    assert_eq!(kind(last), Kind::Changed);
    assert_eq!(status_of(last), St::Completed);
    assert!(cash_in(last).transaction_id.is_some());
    assert_eq!(end, Code::Ok);
    drop(readers);
    gateway.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_stream_sends_heartbeats() {
    let heartbeat = ms(300);
    let gateway = common::start_with(config(ms(250), heartbeat)).await;
    let created = common::create_cash_in(&gateway, "cst_watch10").await;
    let mut watcher = watch(&gateway, &created.id);
    let (mut last, initial) = watcher.next(Duration::from_secs(3)).await;
    assert!(matches!(initial, Item::Event(e) if e.r#type == Kind::Initial as i32));
    let mut gaps = Vec::new();
    for _ in 0..3 {
        let (at, item) = watcher.next(heartbeat * 3).await;
        let Item::Event(beat) = item else {
            panic!("stream ended: {item:?}")
        };
        assert_eq!(kind(&beat), Kind::Heartbeat, "{beat:?}");
        assert!(beat.cash_in.is_none() && beat.changed_fields.is_empty());
        assert!(beat.observed_at.is_some());
        gaps.push(at - last);
        last = at;
    }
    println!("heartbeat {heartbeat:?}: gaps {gaps:?}");
    for gap in &gaps {
        // Never early; late only by what a loaded machine adds (an order of magnitude apart
        // from a missed beat's absence, which the `next` above would time out on).
        assert!(
            *gap >= ms(250) && *gap <= Duration::from_secs(3),
            "{gaps:?}"
        );
    }
    drop(watcher);
    gateway.gateway.shutdown().await;
}

/// A stream is "quiet" from its last event, not from its last heartbeat: an event part-way
/// through the interval pushes the next HEARTBEAT to a whole interval after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_comes_a_whole_interval_after_the_last_event() {
    let heartbeat = ms(600);
    let gateway = common::start_with(config(ms(100), heartbeat)).await;
    let customer = "cst_watch_beat";
    common::create_cash_in(&gateway, customer).await;
    let mut watcher = watch_customer(&gateway, customer, &[]);
    let (_, initial) = watcher.next(Duration::from_secs(3)).await;
    assert!(
        matches!(&initial, Item::Event(e) if e.r#type == Kind::Initial as i32),
        "{initial:?}"
    );
    // Well inside the first interval, a new cash-in: ADDED.
    tokio::time::sleep(ms(250)).await;
    common::create_cash_in(&gateway, customer).await;
    // (On a slow machine ADDED may come after the first interval, and a heartbeat before it.)
    let added_at = loop {
        let (at, item) = watcher.next(Duration::from_secs(3)).await;
        match &item {
            Item::Event(e) if e.r#type == Kind::Heartbeat as i32 => continue,
            Item::Event(e) if e.r#type == Kind::Added as i32 => break at,
            _ => panic!("expected ADDED, got {item:?}"),
        }
    };
    let (beat_at, beat) = watcher.next(heartbeat * 3).await;
    assert!(
        matches!(&beat, Item::Event(e) if e.r#type == Kind::Heartbeat as i32),
        "{beat:?}"
    );
    // The first interval would have ended ≈ 250-350 ms after ADDED; a whole one is 600 ms (less
    // the ADDED event's own trip to this client).
    let gap = beat_at - added_at;
    println!("ADDED → HEARTBEAT {gap:?} (heartbeat {heartbeat:?})");
    assert!(gap >= ms(500), "the heartbeat came {gap:?} after ADDED");
    drop(watcher);
    gateway.gateway.shutdown().await;
}

// === a customer's cash-ins ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_cash_ins_reports_initial_added_and_changed_for_its_filter() {
    let gateway = common::start_with(config(ms(250), NO_HEARTBEAT)).await;
    let customer = "cst_watch9";
    let existing = common::create_cash_in(&gateway, customer).await;
    let filtered_out = common::create_cash_in(&gateway, customer).await;
    gateway.expire(&filtered_out.id).await;
    common::create_cash_in(&gateway, "cst_someoneelse").await;

    let mut watcher = watch_customer(
        &gateway,
        customer,
        &[St::Pending, St::Processing, St::Completed],
    );
    let initial = watcher.event(Duration::from_secs(3)).await;
    assert_eq!(kind(&initial), Kind::Initial);
    assert_eq!(
        cash_in(&initial).id,
        existing.id,
        "the expired one is filtered out"
    );
    assert_eq!(status_of(&initial), St::Pending);

    let added = common::create_cash_in(&gateway, customer).await;
    let event = watcher.event(Duration::from_secs(3)).await;
    assert_eq!(kind(&event), Kind::Added, "{event:?}");
    assert_eq!(cash_in(&event).id, added.id);
    assert_eq!(event.previous_status, St::Unspecified as i32);

    simulate_deposit(&gateway, &existing.id, "", false).await;
    let mut previous = St::Pending;
    loop {
        let event = watcher.event(Duration::from_secs(3)).await;
        assert_eq!(cash_in(&event).id, existing.id, "{event:?}");
        assert_changed(&event, previous, status_of(&event), &["status"]);
        previous = status_of(&event);
        if previous == St::Completed {
            break;
        }
    }
    // The stream keeps running after a terminal state of one of its cash-ins.
    assert!(
        timeout(ms(600), watcher.rx.recv()).await.is_err(),
        "nothing more to report, and no end"
    );
    drop(watcher);
    gateway.gateway.shutdown().await;
}

// A filter is the set of the statuses it names: naming one several times (up to one entry per
// defined status, five) reports each matching cash-in once, and nothing else.
#[tokio::test]
async fn a_filter_naming_statuses_several_times_reports_each_cash_in_once() {
    let gateway = common::start_with(config(ms(250), NO_HEARTBEAT)).await;
    let customer = "cst_watchrepeats";
    let expired = common::create_cash_in(&gateway, customer).await;
    gateway.expire(&expired.id).await;
    let pending = common::create_cash_in(&gateway, customer).await;
    let statuses = [
        St::Expired,
        St::Pending,
        St::Expired,
        St::Pending,
        St::Expired,
    ];
    let mut both = watch_customer(&gateway, customer, &statuses);
    let mut seen = Vec::new();
    for _ in 0..2 {
        let event = both.event(Duration::from_secs(3)).await;
        assert_eq!(kind(&event), Kind::Initial, "{event:?}");
        seen.push(cash_in(&event).id.clone());
    }
    seen.sort();
    let mut expected = vec![expired.id.clone(), pending.id.clone()];
    expected.sort();
    assert_eq!(seen, expected);
    let mut only_expired = watch_customer(&gateway, customer, &[St::Expired, St::Expired]);
    let event = only_expired.event(Duration::from_secs(3)).await;
    assert_eq!(cash_in(&event).id, expired.id);
    for watcher in [&mut both, &mut only_expired] {
        let more = timeout(ms(600), watcher.rx.recv()).await;
        assert!(more.is_err(), "nothing else: {more:?}");
    }
    gateway.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_cash_ins_streams_on_one_customer_share_one_poller_whatever_their_filters() {
    let interval = ms(250);
    let gateway = common::start_with(config(interval, NO_HEARTBEAT)).await;
    let customer = "cst_watch10";
    let created = common::create_cash_in(&gateway, customer).await;
    let list_polls = || {
        gateway
            .sandbox()
            .journal()
            .iter()
            .filter(|r| r.method == "GET" && r.path == "/cash-ins")
            .filter(|r| r.query.as_deref().is_some_and(|q| q.contains(customer)))
            .count()
    };

    let started = Instant::now();
    let mut pending = watch_customer(&gateway, customer, &[St::Pending]);
    let mut completed = watch_customer(&gateway, customer, &[St::Completed]);
    let mut everything = watch_customer(&gateway, customer, &[]);
    assert_eq!(
        kind(&pending.event(Duration::from_secs(3)).await),
        Kind::Initial
    );
    assert_eq!(
        kind(&everything.event(Duration::from_secs(3)).await),
        Kind::Initial
    );
    // One poller for the three streams: over eight intervals OMS sees about eight lists of
    // this customer, not twenty-four.
    let before = list_polls();
    sleep(interval * 8).await;
    let polled = list_polls() - before;
    assert!(
        (3..=12).contains(&polled),
        "one poller for the customer: {polled} lists in eight intervals"
    );

    // Each stream still applies its own filter: the completion reaches the `completed` stream
    // as the cash-in entering its filter, and the `pending` stream as it leaving.
    simulate_deposit(&gateway, &created.id, "", false).await;
    let entered = completed.event(Duration::from_secs(3)).await;
    assert_eq!(kind(&entered), Kind::Added, "{entered:?}");
    assert_eq!(status_of(&entered), St::Completed);
    // It leaves the PENDING filter at its next state: COMPLETED, or PROCESSING when a poll
    // caught the deposit between its authorization and its commit (a true state, in order).
    let left = pending.event(Duration::from_secs(3)).await;
    assert_eq!(kind(&left), Kind::Changed);
    assert!(
        matches!(status_of(&left), St::Processing | St::Completed),
        "{left:?}"
    );

    let window = Duration::from_millis(2000);
    sleep(window.saturating_sub(started.elapsed())).await;
    let polls = list_polls();
    let elapsed = started.elapsed().as_secs_f64();
    let expected = 1.0 + elapsed / interval.as_secs_f64();
    println!(
        "3 WatchCashIns streams on 1 customer: {polls} upstream list requests in {elapsed:.2} s (one poller would make about {expected:.1})"
    );
    assert!(
        (polls as f64) <= expected + 2.0 + 0.15 * expected,
        "{polls} list requests: more than one poller's worth ({expected:.1})"
    );
    drop((pending, completed, everything));
    gateway.gateway.shutdown().await;
}

// === limits ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_beyond_max_streams_is_resource_exhausted() {
    let mut config = config(ms(250), NO_HEARTBEAT);
    config.watch.max_streams = 2;
    let gateway = common::start_with(config).await;
    let created = common::create_cash_in(&gateway, "cst_watch11").await;
    let mut open: Vec<Watcher> = (0..2).map(|_| watch(&gateway, &created.id)).collect();
    for watcher in &mut open {
        assert_eq!(
            kind(&watcher.event(Duration::from_secs(3)).await),
            Kind::Initial
        );
    }
    let (code, message) = watch(&gateway, &created.id)
        .end(Duration::from_secs(2))
        .await;
    assert_eq!(code, Code::ResourceExhausted, "{message}");
    assert!(
        message.contains("maximum of 2 watch streams"),
        "the message names the limit: {message}"
    );

    // Closing one frees its slot.
    open.pop();
    common::eventually(Duration::from_secs(2), "the slot is released", async || {
        gateway.gateway.watch_hub().streams() == 1
    })
    .await;
    let mut again = watch(&gateway, &created.id);
    assert_eq!(
        kind(&again.event(Duration::from_secs(3)).await),
        Kind::Initial
    );
    drop((open, again));
    gateway.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watching_more_cash_ins_than_max_watched_is_resource_exhausted() {
    let mut config = config(ms(250), NO_HEARTBEAT);
    config.watch.max_watched = 1;
    let gateway = common::start_with(config).await;
    let first = common::create_cash_in(&gateway, "cst_watch11b").await;
    let second = common::create_cash_in(&gateway, "cst_watch11b").await;
    let mut watching = watch(&gateway, &first.id);
    assert_eq!(
        kind(&watching.event(Duration::from_secs(3)).await),
        Kind::Initial
    );

    let (code, message) = watch(&gateway, &second.id)
        .end(Duration::from_secs(2))
        .await;
    assert_eq!(code, Code::ResourceExhausted, "{message}");
    assert!(message.contains("maximum of 1"), "{message}");
    assert_eq!(gateway.gets(&second.id), 0, "no poller was started for it");

    // Another stream on the already watched cash-in shares its poller and is allowed.
    let mut same = watch(&gateway, &first.id);
    assert_eq!(
        kind(&same.event(Duration::from_secs(3)).await),
        Kind::Initial
    );
    drop((watching, same));
    gateway.gateway.shutdown().await;
}

// === Budgets, dead pollers, bounded memory ===

// Before: a poll's deadline started before it waited for its permit, so with more watched
// resources than the poll budget serves within one upstream timeout, polls timed out unsent and
// streams ended UNAVAILABLE while OMS was healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_queue_for_poll_permits_never_ends_a_stream() {
    let mut config = config(ms(100), NO_HEARTBEAT);
    config.watch.max_polls_per_second = 2.0;
    config.watch.unreachable_limit = Duration::from_secs(2);
    config.upstream.request_timeout = Duration::from_secs(1);
    let gateway = common::start_with(config).await;
    let customers: Vec<String> = (0..8).map(|i| format!("cst_queue{i}")).collect();
    for customer in &customers {
        common::create_cash_in(&gateway, customer).await;
    }
    let mut watchers: Vec<Watcher> = customers
        .iter()
        .map(|c| watch_customer(&gateway, c, &[]))
        .collect();
    // 8 pollers share 2 polls/s: each waits ~4 s for its turn, four times the upstream timeout.
    for watcher in &mut watchers {
        assert_eq!(
            kind(&watcher.event(Duration::from_secs(8)).await),
            Kind::Initial
        );
    }
    sleep(Duration::from_secs(3)).await;
    for (i, watcher) in watchers.iter_mut().enumerate() {
        if let Ok(Some((_, Item::End(code, message)))) = timeout(ms(1), watcher.rx.recv()).await {
            panic!("stream {i} ended {code:?} while OMS was healthy: {message}");
        }
    }
    drop(watchers);
    gateway.gateway.shutdown().await;
}

// Before: a stream stalled on a reader kept its poller alive after the poller had ended (an
// outage past the limit), and every new stream joined that dead poller and ended at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_stream_never_joins_a_poller_that_has_ended() {
    let mut config = config(ms(100), ms(20));
    config.watch.unreachable_limit = ms(500);
    config.upstream.breaker_threshold = 1_000_000;
    let gateway = common::start_with(config).await;
    let created = common::create_cash_in(&gateway, "cst_deadpoller").await;
    // A reader that never reads, on a window smaller than one event: its stream blocks.
    let channel = small_window_channel(&gateway, 256).await;
    let _stalled = pb::cash_in_service_client::CashInServiceClient::new(channel)
        .watch_cash_in(pb::WatchCashInRequest {
            cash_in_id: created.id.clone(),
            cash_in_only: true,
        })
        .await
        .expect("WatchCashIn")
        .into_inner();
    sleep(ms(300)).await;
    // An outage past the limit ends the poller; the stalled stream cannot be told.
    gateway
        .sandbox()
        .inject(Fault::status(Some("GET"), "/cash-ins/", 1_000_000, 503));
    sleep(ms(1200)).await;
    gateway.sandbox().clear_faults();

    let mut fresh = watch(&gateway, &created.id);
    match fresh.next(Duration::from_secs(3)).await.1 {
        Item::Event(event) => assert_eq!(kind(&event), Kind::Initial, "{event:?}"),
        Item::End(code, message) => {
            panic!("a new stream joined the ended poller: {code:?} {message}")
        }
    }
    drop(fresh);
    gateway.gateway.shutdown().await;
}

// Before: every made-up customer id was polled at the full cadence forever, so such ids could
// take the whole poll budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_with_no_cash_ins_is_polled_ever_less_often_until_one_is_created() {
    let interval = ms(100);
    let gateway = common::start_with(config(interval, NO_HEARTBEAT)).await;
    let customer = "cst_nobody_yet";
    let polls = || {
        gateway
            .sandbox()
            .journal()
            .iter()
            .filter(|r| r.method == "GET" && r.path == "/cash-ins")
            .filter(|r| r.query.as_deref().is_some_and(|q| q.contains(customer)))
            .count()
    };
    let mut watcher = watch_customer(&gateway, customer, &[]);
    sleep(Duration::from_secs(3)).await;
    let idle = polls();
    println!(
        "a customer with no cash-ins, 3 s at a {interval:?} interval: {idle} polls (30 at full cadence)"
    );
    assert!(idle <= 10, "{idle} polls in 3 s");
    // A cash-in created through the gateway wakes the poller at once.
    let created = Instant::now();
    let new = common::create_cash_in(&gateway, customer).await;
    let event = watcher.event(Duration::from_secs(5)).await;
    let delay = created.elapsed();
    assert_eq!(cash_in(&event).id, new.id);
    assert!(delay < ms(1000), "the new cash-in arrived after {delay:?}");
    drop(watcher);
    gateway.gateway.shutdown().await;
}

// Before: a WatchCashIns stream remembered every cash-in it ever reported, so on a busy customer
// its memory grew without bound. Now it remembers at most what one poll reads (500).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_stream_remembers_no_more_than_one_poll_can_read() {
    let gateway = common::start_with(config(ms(100), NO_HEARTBEAT)).await;
    let customer = "cst_busy";
    let location = common::first_location(&gateway.channel).await;
    let create_many = |n: usize| {
        let location = location.clone();
        let channel = gateway.channel.clone();
        async move {
            let mut tasks = Vec::new();
            for chunk in 0..8 {
                let (location, channel) = (location.clone(), channel.clone());
                tasks.push(tokio::spawn(async move {
                    let mut client = pb::cash_in_service_client::CashInServiceClient::new(channel);
                    for _ in (chunk..n).step_by(8) {
                        client
                            .create_cash_in(common::create_request(&location, customer))
                            .await
                            .expect("CreateCashIn");
                    }
                }));
            }
            for task in tasks {
                task.await.expect("creator");
            }
        }
    };
    create_many(500).await;
    let mut watcher = watch_customer(&gateway, customer, &[]);
    for _ in 0..500 {
        watcher.event(Duration::from_secs(10)).await;
    }
    common::eventually(
        Duration::from_secs(5),
        "the stream remembers 500",
        async || gateway.gateway.watch_hub().tracked_cash_ins() == 500,
    )
    .await;
    // 40 more: the newest 500 are all a poll reads; the 40 oldest fall out of view.
    create_many(40).await;
    for _ in 0..40 {
        let event = watcher.event(Duration::from_secs(10)).await;
        assert_eq!(kind(&event), Kind::Added);
    }
    // The creates reached the stream at once (published by the create); the next poll that
    // lists the newest 500 lets the 40 oldest go. Until then the observation holds at most 600.
    let tracked = gateway.gateway.watch_hub().tracked_cash_ins();
    assert!(tracked <= 600, "{tracked}");
    common::eventually(
        Duration::from_secs(10),
        "the stream remembers no more than one poll reads",
        async || gateway.gateway.watch_hub().tracked_cash_ins() <= 500,
    )
    .await;
    let tracked = gateway.gateway.watch_hub().tracked_cash_ins();
    println!("a stream on a customer with 540 cash-ins remembers {tracked}");
    drop(watcher);
    gateway.gateway.shutdown().await;
}

// Before: a poll of a customer whose list answer repeats its cursor (OMS ignoring
// `startingAfter`) failed as a whole, page 0's cash-ins thrown away, and counted as an outage:
// the stream ended UNAVAILABLE after `--watch-unreachable-limit` though OMS answered every poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_whose_list_repeats_its_cursor_is_still_watched() {
    let mut config = config(ms(100), NO_HEARTBEAT);
    config.watch.unreachable_limit = Duration::from_secs(1);
    let gateway = common::start_with(config).await;
    let page = serde_json::json!({
        "data": [{"id": "ci_pages1", "status": "pending", "customerId": "cst_pages"}],
        "hasMore": true,
        "nextCursor": "ci_pages1",
    });
    let answer = common::respond("GET", "/cash-ins", 100_000, 200, page.to_string(), &[]);
    gateway.sandbox().inject(answer);
    let lists = || {
        common::api_requests(gateway.sandbox())
            .iter()
            .filter(|r| r.method == "GET" && r.path == "/cash-ins")
            .count()
    };
    let mut watcher = watch_customer(&gateway, "cst_pages", &[]);
    let initial = watcher.event(Duration::from_secs(5)).await;
    assert_eq!(kind(&initial), Kind::Initial);
    assert_eq!(cash_in(&initial).id, "ci_pages1");
    // Polls go on well past the unreachable limit, and the stream with them.
    let started = Instant::now();
    common::eventually(
        Duration::from_secs(20),
        "polls past the limit",
        async || started.elapsed() > Duration::from_secs(3) && lists() >= 10,
    )
    .await;
    assert!(
        matches!(watcher.rx.try_recv(), Err(mpsc::error::TryRecvError::Empty)),
        "the stream is still open, with nothing new to say"
    );
    gateway.gateway.shutdown().await;
}

// Before: a poll answered before a RefreshCashIn but arriving after it, in the same second
// (OMS's `updatedAt` is whole seconds), was "not older" (`<` on equal stamps) and sent the
// watcher the revoked code back. Now a tie on `updatedAt` and status is decided by when the
// gateway learned each state: the poll was sent before the refresh was answered, so it loses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_answered_before_a_refresh_in_the_same_second_never_brings_the_revoked_code_back() {
    let gateway = common::start_with(config(ms(100), NO_HEARTBEAT)).await;
    let mut same_second = 0;
    for attempt in 0..4 {
        let created = common::create_cash_in(&gateway, "cst_watchtie").await;
        let mut watcher = watch(&gateway, &created.id);
        assert_eq!(
            kind(&watcher.event(Duration::from_secs(3)).await),
            Kind::Initial
        );
        // Early in a second: a first refresh, then a poll OMS answers at once but whose answer
        // is held on its way back, then a second refresh, all within that second.
        next_whole_second().await;
        let first = refresh(&gateway, &created.id).await;
        watcher.event(Duration::from_secs(2)).await;
        let gate = oms_sandbox::Gate::new(Duration::from_secs(10));
        let path = format!("/cash-ins/{}", created.id);
        let polls = gateway.gets(&created.id);
        gateway
            .sandbox()
            .inject(Fault::hold_answer(Some("GET"), &path, 1, &gate));
        common::eventually(Duration::from_secs(3), "a poll answered", async || {
            gateway.gets(&created.id) > polls
        })
        .await;
        let second = refresh(&gateway, &created.id).await;
        let changed = watcher.event(Duration::from_secs(2)).await;
        assert_eq!(code_of(cash_in(&changed)), code_of(&second));
        gate.open();
        // The held answer (the first refresh's code) arrives now; give it time to reach the
        // stream if it were going to.
        if let Ok((_, item)) = timeout(ms(600), watcher.rx.recv())
            .await
            .map(|i| i.expect("item"))
        {
            panic!(
                "the watcher was sent the revoked code {} back: {item:?}",
                code_of(&first)
            );
        }
        drop(watcher);
        if first.updated_at.map(|t| t.seconds) == second.updated_at.map(|t| t.seconds) {
            same_second += 1;
            break;
        }
        println!("attempt {attempt}: the two refreshes fell in two seconds; again");
    }
    assert_eq!(same_second, 1, "the scenario never fit into one second");
    gateway.gateway.shutdown().await;
}

// Before: a replayed CreateCashIn published its stored outcome (the cash-in as created) to the
// watchers as news: a new WatchCashIn on a cash-in that had expired meanwhile got INITIAL
// PENDING with the dead code, then PENDING→EXPIRED. Replays are no news now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_create_never_rewinds_a_watcher() {
    let gateway = common::start_with(config(ms(100), NO_HEARTBEAT)).await;
    let location = common::first_location(&gateway.channel).await;
    let request = pb::CreateCashInRequest {
        idempotency_key: "watch-replay-1".into(),
        ..common::create_request(&location, "cst_watchreplay")
    };
    let created = gateway
        .cash_ins()
        .create_cash_in(request.clone())
        .await
        .expect("CreateCashIn")
        .into_inner()
        .cash_in
        .expect("cash_in");
    gateway
        .sandbox()
        .expire_cash_in(&created.id)
        .expect("expire");
    // The watch's first poll is held at OMS; the replay is answered meanwhile.
    let gate = oms_sandbox::Gate::new(Duration::from_secs(10));
    let path = format!("/cash-ins/{}", created.id);
    gateway
        .sandbox()
        .inject(Fault::hold(Some("GET"), &path, 1, &gate));
    let polls = gateway.gets(&created.id);
    let mut watcher = watch(&gateway, &created.id);
    common::eventually(Duration::from_secs(3), "the first poll sent", async || {
        gateway.gets(&created.id) > polls
    })
    .await;
    let replayed = gateway
        .cash_ins()
        .create_cash_in(request)
        .await
        .expect("the replay")
        .into_inner()
        .cash_in
        .expect("cash_in");
    assert_eq!(replayed.status, St::Pending as i32, "the stored outcome");
    gate.open();
    let first = watcher.event(Duration::from_secs(3)).await;
    assert_eq!(kind(&first), Kind::Initial, "{first:?}");
    assert_eq!(
        status_of(&first),
        St::Expired,
        "the watcher was shown the replayed PENDING state (code {})",
        code_of(&replayed)
    );
    assert_eq!(watcher.end(Duration::from_secs(3)).await.0, Code::Ok);
    gateway.gateway.shutdown().await;
}

// What a GetCashIn learns is news to the watchers: before, only the mutations and the sandbox
// RPCs published their answers, so a change OMS made on its own (here: the sandbox expiring a
// cash-in behind the gateway's back) reached a customer's stream only at its next poll, though
// a caller had just read it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_cash_in_answer_reaches_the_customers_stream_before_any_poll() {
    let gateway = common::start_with(config(Duration::from_secs(30), NO_HEARTBEAT)).await;
    let created = common::create_cash_in(&gateway, "cst_watchget").await;
    let mut watcher = watch_customer(&gateway, "cst_watchget", &[]);
    assert_eq!(
        kind(&watcher.event(Duration::from_secs(3)).await),
        Kind::Initial
    );
    common::sandbox_rest::SandboxRest::new(gateway.sandbox())
        .await
        .post(&format!("/sandbox/cash-ins/{}/expire", created.id), None)
        .await;
    let list_polls = || {
        common::api_requests(gateway.sandbox())
            .iter()
            .filter(|r| r.method == "GET" && r.path == "/cash-ins")
            .count()
    };
    let polls = list_polls();
    assert!(polls >= 1, "the customer's first poll");
    let read = gateway
        .cash_ins()
        .get_cash_in(pb::GetCashInRequest {
            cash_in_id: created.id.clone(),
        })
        .await
        .expect("GetCashIn")
        .into_inner()
        .cash_in
        .expect("cash_in");
    assert_eq!(read.status, St::Expired as i32);
    let changed = watcher.event(Duration::from_secs(2)).await;
    assert_changed(&changed, St::Pending, St::Expired, &["status"]);
    assert_eq!(list_polls(), polls, "no customer poll brought it");
    drop(watcher);
    gateway.gateway.shutdown().await;
}

// The same for a ListCashIns answer (a page of the customer's cash-ins, read by another caller).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_cash_ins_answer_reaches_the_cash_ins_stream_before_any_poll() {
    let gateway = common::start_with(config(Duration::from_secs(30), NO_HEARTBEAT)).await;
    let created = common::create_cash_in(&gateway, "cst_watchlist").await;
    let mut watcher = watch(&gateway, &created.id);
    assert_eq!(
        kind(&watcher.event(Duration::from_secs(3)).await),
        Kind::Initial
    );
    common::sandbox_rest::SandboxRest::new(gateway.sandbox())
        .await
        .post(&format!("/sandbox/cash-ins/{}/expire", created.id), None)
        .await;
    let polls = gateway.gets(&created.id);
    let page = gateway
        .cash_ins()
        .list_cash_ins(pb::ListCashInsRequest {
            customer_id: "cst_watchlist".into(),
            ..Default::default()
        })
        .await
        .expect("ListCashIns")
        .into_inner();
    assert_eq!(page.cash_ins[0].status, St::Expired as i32);
    let changed = watcher.event(Duration::from_secs(2)).await;
    assert_changed(&changed, St::Pending, St::Expired, &["status"]);
    assert_eq!(gateway.gets(&created.id), polls, "no poll brought it");
    gateway.gateway.shutdown().await;
}
