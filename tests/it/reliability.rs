//! The reliability proof, as tests that print their figures: run with
//! `cargo test --test reliability -- --nocapture` to see them.
//!
//! (a) 1,000 creates under 30% injected faults (resets after commit included) make exactly 1,000
//! cash-ins; (b) a token revoked mid-load is invisible to callers; (c) a 10-second outage stays
//! within the retry budget, trips the circuit (health NOT_SERVING) and recovers within one
//! cool-down; (g) the gateway's idempotency layer; (h) load shedding; (i) the retry budget alone.
//! (d) is in `tests/shutdown.rs`, (e) and (f) in `tests/reliability_malformed.rs`.
//!
//! Every figure is counted where it lands: upstream requests in the sandbox's journal, faults in
//! its fault-plan statistics, outcomes as the tonic clients saw them. The tests here run one at a
//! time (they measure time and load on a small machine), each bounded in time.

use crate::common;

use crate::common::ms;
use oms_gateway::proto::v1 as pb;
use oms_sandbox::{Fault, FaultPlan, RecordedRequest};
use pb::cash_in_service_client::CashInServiceClient;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::time::{Instant, sleep, timeout};
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_health::ServingStatus;
use tonic_types::StatusExt;

/// The tests of this file measure load and time: they take turns.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const CASH_IN_SERVICE: &str = pb::cash_in_service_server::SERVICE_NAME;

/// The status's ErrorInfo reason, or "" (a transport error may carry none).
fn reason(status: &Status) -> String {
    status
        .get_error_details()
        .error_info()
        .map(|info| info.reason.clone())
        .unwrap_or_default()
}

/// The `httpStatus` OMS answered, from the status's ErrorInfo.
fn http_status(status: &Status) -> Option<String> {
    status
        .get_error_details()
        .error_info()
        .and_then(|info| info.metadata.get("httpStatus").cloned())
}

/// What a caller following the docs retries with the same key: the retryable codes, and the
/// INTERNAL of an upstream 500 (`docs/idempotency-and-guarantees.md`, "Guarantees": a transient failure that a retry with the
/// same key settles; the gateway itself does not retry a 500).
fn caller_retries(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Aborted | Code::DeadlineExceeded | Code::ResourceExhausted
    ) || (status.code() == Code::Internal && http_status(status).as_deref() == Some("500"))
}

/// How long a caller waits before retrying: the RetryInfo hint, loosely (capped), plus jitter.
fn caller_backoff(status: &Status) -> Duration {
    common::retry_delay(status)
        .unwrap_or(ms(50))
        .min(ms(200))
        .saturating_add(ms(fastrand::u64(0..50)))
}

/// Upstream API requests (token exchanges left out) in a slice of the journal.
fn api(requests: &[RecordedRequest]) -> Vec<&RecordedRequest> {
    requests
        .iter()
        .filter(|r| r.path != "/auth/token")
        .collect()
}

fn create_posts(gateway: &common::TestGateway) -> usize {
    gateway
        .sandbox()
        .journal()
        .iter()
        .filter(|r| r.method == "POST" && r.path == "/cash-ins")
        .count()
}

fn histogram(codes: impl IntoIterator<Item = String>) -> BTreeMap<String, usize> {
    let mut histogram = BTreeMap::new();
    for code in codes {
        *histogram.entry(code).or_default() += 1;
    }
    histogram
}

// === (a) no duplicates, nothing lost ===

const CREATES: usize = 1000;
const CLIENTS: usize = 50;
/// Attempts a client makes per create before it gives up (a bound, never reached in practice).
const MAX_CLIENT_ATTEMPTS: u32 = 50;

/// One key's fate, as its client saw it.
struct Created {
    key: String,
    id: Result<String, String>,
    attempts: u32,
    /// The codes (and reasons) of the failed attempts that were retried.
    retried: Vec<String>,
}

/// Sends one create until OK, retrying what a caller retries, always with the same key.
async fn create_until_ok(
    client: &mut CashInServiceClient<Channel>,
    request: pb::CreateCashInRequest,
) -> Created {
    let key = request.idempotency_key.clone();
    let mut retried = Vec::new();
    for attempt in 1..=MAX_CLIENT_ATTEMPTS {
        let mut call = Request::new(request.clone());
        call.set_timeout(Duration::from_secs(5));
        match client.create_cash_in(call).await {
            Ok(response) => {
                let id = response
                    .into_inner()
                    .cash_in
                    .map(|c| c.id)
                    .unwrap_or_default();
                return Created {
                    key,
                    id: Ok(id),
                    attempts: attempt,
                    retried,
                };
            }
            Err(status) if caller_retries(&status) && attempt < MAX_CLIENT_ATTEMPTS => {
                retried.push(format!("{:?}/{}", status.code(), reason(&status)));
                sleep(caller_backoff(&status)).await;
            }
            Err(status) => {
                return Created {
                    key,
                    id: Err(format!("{status:?}")),
                    attempts: attempt,
                    retried,
                };
            }
        }
    }
    unreachable!("the last attempt returns")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_creates_under_thirty_percent_faults_make_exactly_a_thousand_cash_ins() {
    let _serial = SERIAL.lock().await;
    let mut config = common::test_config();
    // Short cool-downs: the breaker may open under this fault rate, and callers just retry.
    config.upstream.breaker_cooldown = ms(100);
    config.upstream.breaker_max_cooldown = ms(400);
    let gateway = common::start_with(config).await;
    let location = common::first_location(&gateway.channel).await;
    let plan: FaultPlan = "seed=20261122,500=0.04,502=0.04,503=0.06,504=0.04,429=0.04,\
        retry_after=0,reset_before=0.04,reset_after=0.04"
        .parse()
        .expect("fault plan");
    gateway.sandbox().set_fault_plan(plan);

    let started = Instant::now();
    let mut clients = Vec::new();
    for client_no in 0..CLIENTS {
        let channel = common::connect(gateway.gateway.addr()).await;
        let location = location.clone();
        clients.push(tokio::spawn(async move {
            let mut client = CashInServiceClient::new(channel);
            let mut created = Vec::new();
            for n in (client_no..CREATES).step_by(CLIENTS) {
                let key = format!("rel-a-{n:04}");
                let mut request =
                    common::create_request(&location, &format!("cst_rela{client_no}"));
                request.idempotency_key = key.clone();
                request.metadata = [("order_id".to_owned(), key)].into();
                created.push(create_until_ok(&mut client, request).await);
            }
            created
        }));
    }
    let all = timeout(
        Duration::from_secs(45),
        futures_util::future::join_all(clients),
    )
    .await
    .expect("1000 creates finish within 45 s");
    let elapsed = started.elapsed();
    let created: Vec<Created> = all
        .into_iter()
        .flat_map(|r| r.expect("client task"))
        .collect();
    let sandbox = gateway.sandbox();
    let stats = sandbox.fault_stats();
    sandbox.set_fault_plan(FaultPlan::none());

    let journal = sandbox.journal();
    let posts: Vec<&RecordedRequest> = journal
        .iter()
        .filter(|r| r.method == "POST" && r.path == "/cash-ins")
        .collect();
    let attempts: u32 = created.iter().map(|c| c.attempts).sum();
    let retried = histogram(created.iter().flat_map(|c| c.retried.iter().cloned()));
    let injected = stats.status_500
        + stats.status_502
        + stats.status_503
        + stats.status_504
        + stats.status_429
        + stats.reset_before
        + stats.reset_after;
    println!(
        "(a) {CREATES} creates from {CLIENTS} clients: {attempts} client attempts ({} retried: {retried:?}), \
         {} upstream POSTs, {injected} faults injected on {} requests \
         (500: {}, 502: {}, 503: {}, 504: {}, 429: {}, reset_before: {}, reset_after: {}), \
         {} cash-ins in the sandbox, {:.1} s",
        attempts as usize - created.len(),
        posts.len(),
        stats.requests_seen,
        stats.status_500,
        stats.status_502,
        stats.status_503,
        stats.status_504,
        stats.status_429,
        stats.reset_before,
        stats.reset_after,
        sandbox.cash_in_count(),
        elapsed.as_secs_f64(),
    );

    let failed: Vec<(&str, &str)> = created
        .iter()
        .filter_map(|c| c.id.as_ref().err().map(|e| (c.key.as_str(), e.as_str())))
        .collect();
    assert!(failed.is_empty(), "every call finally OK: {failed:?}");
    assert_eq!(created.len(), CREATES);
    let ids: HashSet<&str> = created
        .iter()
        .filter_map(|c| c.id.as_deref().ok())
        .collect();
    assert_eq!(ids.len(), CREATES, "each key got its own cash-in id");
    assert_eq!(
        sandbox.cash_in_count(),
        CREATES,
        "exactly one cash-in per key exists upstream: none duplicated, none missing"
    );
    // Each returned id exists and carries its own key, so the 1000 cash-ins upstream are exactly
    // the 1000 returned, one per key.
    for c in &created {
        let id = c.id.as_deref().expect("ok");
        let json = sandbox
            .cash_in_json(id)
            .unwrap_or_else(|| panic!("{id} (key {}) exists upstream", c.key));
        assert_eq!(
            json.pointer("/metadata/order_id").and_then(|v| v.as_str()),
            Some(c.key.as_str()),
            "{id} was created for key {}",
            c.key
        );
    }
    // Every attempt upstream carried one of the callers' keys; the faults really hit creates,
    // commits lost to a reset included.
    let keys: HashSet<String> = created.iter().map(|c| format!("0::{}", c.key)).collect();
    assert!(
        posts.iter().all(|p| p
            .idempotency_key
            .as_deref()
            .is_some_and(|k| keys.contains(k))),
        "every POST carried a caller's key"
    );
    assert!(stats.reset_after > 0 && stats.reset_before > 0 && injected > 200);
    assert!(
        posts.len() > CREATES,
        "faulted attempts were retried upstream"
    );
    gateway.gateway.shutdown().await;
}

// === (b) a revoked token is invisible to callers ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_mid_load_costs_callers_nothing_and_one_exchange() {
    let _serial = SERIAL.lock().await;
    let gateway = common::start().await;
    let cash_in = common::create_cash_in(&gateway, "cst_relb").await;
    let sandbox = gateway.sandbox().clone();
    let exchanges_before = sandbox.token_exchanges();
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..20 {
        let channel = common::connect(gateway.gateway.addr()).await;
        let (stop, id) = (stop.clone(), cash_in.id.clone());
        readers.push(tokio::spawn(async move {
            let mut client = CashInServiceClient::new(channel);
            let mut outcomes = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let mut call = Request::new(pb::GetCashInRequest {
                    cash_in_id: id.clone(),
                });
                call.set_timeout(Duration::from_secs(5));
                outcomes.push(client.get_cash_in(call).await.map(|_| ()));
            }
            outcomes
        }));
    }
    sleep(ms(400)).await;
    let revoked_at = sandbox.journal().len();
    sandbox.revoke_tokens();
    sleep(ms(800)).await;
    stop.store(true, Ordering::SeqCst);
    let outcomes: Vec<Result<(), Status>> = timeout(
        Duration::from_secs(10),
        futures_util::future::join_all(readers),
    )
    .await
    .expect("readers stop")
    .into_iter()
    .flat_map(|r| r.expect("reader task"))
    .collect();
    let after = &sandbox.journal()[revoked_at..];
    let rejected = after.iter().filter(|r| r.status == 401).count();
    let new_exchanges = sandbox.token_exchanges() - exchanges_before;
    let errors: Vec<&Status> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    let unauthenticated = errors
        .iter()
        .filter(|s| s.code() == Code::Unauthenticated)
        .count();
    println!(
        "(b) {} reads from 20 clients, all tokens revoked after 0.4 s: {rejected} upstream 401s, \
         {} errors ({unauthenticated} UNAUTHENTICATED) seen by callers, {new_exchanges} new token exchange(s)",
        outcomes.len(),
        errors.len(),
    );
    assert!(rejected > 0, "the revocation hit requests in flight");
    assert_eq!(unauthenticated, 0);
    assert!(errors.is_empty(), "no caller saw an error: {errors:?}");
    assert_eq!(new_exchanges, 1, "exactly one fresh token exchange");
    gateway.gateway.shutdown().await;
}

// === (c) an outage: bounded upstream load, fail-fast, recovery ===

/// One call of a load run.
#[derive(Debug, Clone)]
struct Call {
    start: Instant,
    end: Instant,
    code: Code,
    reason: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_second_outage_stays_within_the_retry_budget_and_recovers_within_one_cooldown() {
    let _serial = SERIAL.lock().await;
    const RATIO: f64 = 0.2;
    const FLOOR: f64 = 5.0;
    const OUTAGE: Duration = Duration::from_secs(10);
    const MAX_COOLDOWN: Duration = Duration::from_secs(1);
    let mut config = common::test_config();
    config.upstream.retry_budget_ratio = RATIO;
    config.upstream.retry_budget_floor = FLOOR;
    config.upstream.breaker_threshold = 5;
    config.upstream.breaker_cooldown = ms(250);
    config.upstream.breaker_max_cooldown = MAX_COOLDOWN;
    let gateway = common::start_with(config).await;
    let cash_in = common::create_cash_in(&gateway, "cst_relc").await;
    let sandbox = gateway.sandbox().clone();
    let stop = Arc::new(AtomicBool::new(false));

    // 20 calls/s of GetCashIn, each with a 2 s deadline, whatever the previous ones do.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Call>();
    let load = {
        let (stop, client, id) = (stop.clone(), gateway.cash_ins(), cash_in.id.clone());
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(ms(50));
            let mut calls = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                ticker.tick().await;
                let (mut client, id, tx) = (client.clone(), id.clone(), tx.clone());
                calls.push(tokio::spawn(async move {
                    let start = Instant::now();
                    let mut call = Request::new(pb::GetCashInRequest { cash_in_id: id });
                    call.set_timeout(Duration::from_secs(2));
                    let (code, reason) = match client.get_cash_in(call).await {
                        Ok(_) => (Code::Ok, String::new()),
                        Err(status) => (status.code(), reason(&status)),
                    };
                    let _ = tx.send(Call {
                        start,
                        end: Instant::now(),
                        code,
                        reason,
                    });
                }));
            }
            futures_util::future::join_all(calls).await;
        })
    };
    // Per-service health, as the mesh would poll it.
    let health = {
        let (stop, mut client) = (stop.clone(), gateway.health());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let request = tonic_health::pb::HealthCheckRequest {
                    service: CASH_IN_SERVICE.to_owned(),
                };
                if let Ok(response) = client.check(request).await {
                    seen.push((Instant::now(), response.into_inner().status));
                }
                sleep(ms(50)).await;
            }
            seen
        })
    };

    sleep(Duration::from_secs(1)).await;
    let outage_journal_start = sandbox.journal().len();
    let outage_start = Instant::now();
    sandbox.set_fault_plan("503=1".parse().expect("plan"));
    sleep(OUTAGE).await;
    let outage_journal_end = sandbox.journal().len();
    sandbox.set_fault_plan(FaultPlan::none());
    let outage_end = Instant::now();
    sleep(ms(2500)).await;
    stop.store(true, Ordering::SeqCst);
    timeout(Duration::from_secs(5), load)
        .await
        .expect("load stops")
        .expect("load task");
    let health = health.await.expect("health task");
    let mut calls = Vec::new();
    while let Ok(call) = rx.try_recv() {
        calls.push(call);
    }

    let journal = sandbox.journal();
    let upstream = api(&journal[outage_journal_start..outage_journal_end]);
    let probes = upstream
        .iter()
        .filter(|r| r.path == "/cash-ins" && r.query.as_deref() == Some("limit=1"))
        .count();
    let during: Vec<&Call> = calls
        .iter()
        .filter(|c| c.start >= outage_start && c.start < outage_end)
        .collect();
    let fast: Vec<Duration> = {
        let mut fast: Vec<Duration> = during
            .iter()
            .filter(|c| c.reason == "UPSTREAM_CIRCUIT_OPEN")
            .map(|c| c.end - c.start)
            .collect();
        fast.sort();
        fast
    };
    let bound = (1.0 + RATIO) * during.len() as f64 + FLOOR * OUTAGE.as_secs_f64();
    let recovery = calls
        .iter()
        .filter(|c| c.code == Code::Ok && c.end >= outage_end)
        .map(|c| c.end - outage_end)
        .min()
        .expect("a call succeeded after the outage");
    let not_serving: Vec<Instant> = health
        .iter()
        .filter(|(_, s)| *s == ServingStatus::NotServing as i32)
        .map(|(at, _)| *at)
        .collect();
    let serving_again = health
        .iter()
        .find(|(at, s)| *at >= outage_end && *s == ServingStatus::Serving as i32)
        .map(|(at, _)| *at - outage_end);
    println!(
        "(c) {:.0} s outage (503 on every /cash-ins request) under 20 calls/s: {} calls during the outage, \
         {} upstream requests during the outage ({probes} circuit probes) ≤ bound (1+{RATIO})×{} + {FLOOR}/s×{:.0} s = {bound:.0}; \
         {} failed fast with UPSTREAM_CIRCUIT_OPEN (median {:?}); outage codes {:?}; \
         first success {:?} after the outage (max cool-down {MAX_COOLDOWN:?}); \
         health NOT_SERVING in {} checks, SERVING again {serving_again:?} after the outage",
        OUTAGE.as_secs_f64(),
        during.len(),
        upstream.len(),
        during.len(),
        OUTAGE.as_secs_f64(),
        fast.len(),
        fast.get(fast.len() / 2),
        histogram(during.iter().map(|c| format!("{:?}/{}", c.code, c.reason))),
        recovery,
        not_serving.len(),
    );

    let failed_before: Vec<&Call> = calls
        .iter()
        .filter(|c| c.end < outage_start && c.code != Code::Ok)
        .collect();
    assert!(
        failed_before.is_empty(),
        "calls before the outage succeed: {failed_before:?}"
    );
    assert!(during.len() >= 150, "the load kept going: {}", during.len());
    assert!(
        (upstream.len() as f64) <= bound,
        "{} upstream requests exceed the budget bound {bound}",
        upstream.len()
    );
    assert!(
        fast.len() * 2 >= during.len(),
        "most outage calls fail fast on the open circuit"
    );
    assert!(
        fast.get(fast.len() / 2).is_some_and(|d| *d < ms(1000)),
        "failing fast means at once: {:?}",
        fast.get(fast.len() / 2)
    );
    assert!(
        recovery <= MAX_COOLDOWN + ms(500),
        "the first success came {recovery:?} after the outage"
    );
    assert!(
        not_serving
            .iter()
            .any(|at| *at > outage_start && *at < outage_end),
        "CashInService health was NOT_SERVING while the circuit was open"
    );
    assert!(
        serving_again.is_some_and(|d| d <= MAX_COOLDOWN + ms(500)),
        "CashInService health SERVING again after the outage: {serving_again:?}"
    );
    let settled = outage_end + MAX_COOLDOWN + ms(500);
    assert!(
        calls
            .iter()
            .filter(|c| c.start >= settled)
            .all(|c| c.code == Code::Ok),
        "every call after recovery succeeds"
    );
    gateway.gateway.shutdown().await;
}

// === (g) the gateway's idempotency layer ===

fn timed<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(Duration::from_secs(10));
    request
}

/// A gateway requiring mTLS, and one channel per caller, each with its own client certificate.
async fn mtls_callers(
    callers: &[&'static str],
) -> (
    common::TestGateway,
    std::collections::HashMap<&'static str, Channel>,
    std::path::PathBuf,
) {
    let ca = common::tls::Ca::new("reliability CA");
    let dir = common::tls::temp_dir("reliability-g");
    let config = common::tls::tls_config(&dir, &ca.server(), Some(&ca.pem));
    let gateway = common::tls::start(config).await;
    let mut channels = std::collections::HashMap::new();
    for caller in callers {
        let pem = ca.client(&common::tls::Name::Cn((*caller).to_owned()));
        let channel = common::tls::channel(&gateway, &ca.pem, Some(&pem))
            .await
            .expect("mTLS connect");
        channels.insert(*caller, channel);
    }
    let channel = channels[callers[0]].clone();
    (common::TestGateway { gateway, channel }, channels, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_idempotency_layer_shares_replays_refuses_reuse_and_scopes_keys_per_caller() {
    let _serial = SERIAL.lock().await;
    // Callers are told apart by their client certificates (the CN here), never by a header.
    let (gateway, channels, dir) = mtls_callers(&["svc-a", "svc-b", "svc-c"]).await;
    let client = |caller: &str| CashInServiceClient::new(channels[caller].clone());
    let location = common::first_location(&gateway.channel).await;
    let sandbox = gateway.sandbox().clone();
    let mut request = common::create_request(&location, "cst_relg");
    request.idempotency_key = "rel-g-order-1".into();

    // 20 concurrent calls; the first holds the key upstream for a while so the rest overlap it.
    sandbox.inject(Fault::delay(Some("POST"), "/cash-ins", 1, ms(300)));
    let mut calls = Vec::new();
    for _ in 0..20 {
        let (mut client, request) = (client("svc-a"), request.clone());
        calls.push(tokio::spawn(async move {
            client.create_cash_in(timed(request)).await
        }));
    }
    let mut ids = HashSet::new();
    for call in calls {
        let response = call.await.expect("task").expect("CreateCashIn");
        ids.insert(response.into_inner().cash_in.expect("cash_in").id);
    }
    assert_eq!(ids.len(), 1, "all 20 got the same cash-in: {ids:?}");
    let id = ids.into_iter().next().expect("one id");
    assert_eq!(create_posts(&gateway), 1, "one upstream POST for 20 calls");

    // A repeat after completion: answered by the gateway, nothing sent upstream.
    let journal_len = sandbox.journal().len();
    let repeat = client("svc-a")
        .create_cash_in(timed(request.clone()))
        .await
        .expect("repeat");
    assert_eq!(repeat.into_inner().cash_in.expect("cash_in").id, id);
    assert_eq!(
        sandbox.journal().len(),
        journal_len,
        "the repeat made no upstream call"
    );

    // The same key with another request: refused by the gateway, nothing sent upstream.
    let mut other = request.clone();
    other.source.as_mut().expect("source").indicated_amount = Some("300.00".into());
    let status = client("svc-a")
        .create_cash_in(timed(other.clone()))
        .await
        .expect_err("key reused with another request");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let info = common::error_info(&status);
    assert_eq!(
        (info.reason.as_str(), info.domain.as_str()),
        ("IDEMPOTENCY_KEY_REUSED", "oms-gateway")
    );
    assert_eq!(
        sandbox.journal().len(),
        journal_len,
        "refused without an upstream call"
    );

    // Another caller's key space: the same key is a new key there, for the same request and for
    // another one alike.
    let b = client("svc-b")
        .create_cash_in(timed(request.clone()))
        .await
        .expect("svc-b's own key");
    let b_id = b.into_inner().cash_in.expect("cash_in").id;
    let c = client("svc-c")
        .create_cash_in(timed(other))
        .await
        .expect("svc-c's own key, another request");
    let c_id = c.into_inner().cash_in.expect("cash_in").id;
    println!(
        "(g) 20 concurrent creates with one key: 1 upstream POST, one id; repeat and reuse answered \
         without upstream calls; callers svc-a/svc-b/svc-c got {id}, {b_id}, {c_id}; {} POSTs in all",
        create_posts(&gateway)
    );
    assert_eq!(
        create_posts(&gateway),
        3,
        "each caller's key went upstream once"
    );
    let distinct: HashSet<&String> = [&id, &b_id, &c_id].into_iter().collect();
    assert_eq!(
        distinct.len(),
        3,
        "separate key spaces make separate cash-ins"
    );
    assert_eq!(sandbox.cash_in_count(), 3);
    gateway.gateway.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

// === (h) load shedding ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_concurrency_cap_calls_are_shed_at_once_while_health_answers() {
    let _serial = SERIAL.lock().await;
    let mut config = common::test_config();
    config.server.max_concurrent_calls = 2;
    let gateway = common::start_with(config).await;
    let sandbox = gateway.sandbox().clone();
    sandbox.inject(Fault::delay(Some("GET"), "/cash-ins/", 2, ms(1500)));
    let get = |id: &str| pb::GetCashInRequest {
        cash_in_id: id.to_owned(),
    };
    let slow: Vec<_> = ["ci_relh1", "ci_relh2"]
        .into_iter()
        .map(|id| {
            let (mut client, request) = (gateway.cash_ins(), get(id));
            tokio::spawn(async move { client.get_cash_in(request).await })
        })
        .collect();
    common::eventually(
        Duration::from_secs(5),
        "two slow calls upstream",
        async || {
            sandbox
                .journal()
                .iter()
                .filter(|r| r.path.starts_with("/cash-ins/") && r.status == 0)
                .count()
                == 2
        },
    )
    .await;

    let started = Instant::now();
    let status = gateway
        .cash_ins()
        .get_cash_in(get("ci_relh3"))
        .await
        .expect_err("a third call is shed");
    let shed_in = started.elapsed();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let info = common::error_info(&status);
    assert_eq!(
        (info.reason.as_str(), info.domain.as_str()),
        ("GATEWAY_OVERLOADED", "oms-gateway")
    );
    assert!(common::retry_delay(&status).is_some(), "with a retry hint");
    let started = Instant::now();
    let health = gateway.health_status("").await;
    let health_in = started.elapsed();
    assert_eq!(health, ServingStatus::Serving as i32);
    println!(
        "(h) max 2 calls in flight, 2 held by a slow upstream: the third shed with RESOURCE_EXHAUSTED/GATEWAY_OVERLOADED \
         in {shed_in:?}; health answered SERVING in {health_in:?}"
    );
    // At once: well before the 1.5 s the slow upstream holds the two calls in flight.
    assert!(shed_in < ms(1000), "shed at once: {shed_in:?}");
    assert!(
        health_in < ms(1000),
        "health answers at once: {health_in:?}"
    );
    assert_eq!(
        sandbox.count("GET", "/cash-ins/"),
        2,
        "the shed call never went upstream"
    );
    for call in slow {
        // The ids do not exist: the slow calls end NOT_FOUND, which is beside the point here.
        let outcome = call.await.expect("task");
        assert_eq!(outcome.err().map(|s| s.code()), Some(Code::NotFound));
    }
    let after = gateway.cash_ins().get_cash_in(get("ci_relh4")).await;
    assert_eq!(
        after.err().map(|s| s.code()),
        Some(Code::NotFound),
        "once the slow calls are done, calls are admitted again"
    );
    gateway.gateway.shutdown().await;
}

// === (i) the retry budget ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_circuit_held_closed_retries_stay_within_the_budget() {
    let _serial = SERIAL.lock().await;
    const RATIO: f64 = 0.2;
    const FLOOR: f64 = 5.0;
    const WINDOW_SECONDS: f64 = 10.0;
    const CALLS: usize = 100;
    let mut config = common::test_config();
    config.upstream.breaker_threshold = 1_000_000;
    config.upstream.retry_budget_ratio = RATIO;
    config.upstream.retry_budget_floor = FLOOR;
    config.upstream.max_attempts = 3;
    let gateway = common::start_with(config).await;
    let sandbox = gateway.sandbox().clone();
    sandbox.set_fault_plan("503=1".parse().expect("plan"));
    let started = Instant::now();
    // 10 callers × 10 calls each.
    let callers: Vec<_> = (0..10)
        .map(|caller| {
            let mut client = gateway.cash_ins();
            tokio::spawn(async move {
                let mut codes = Vec::new();
                for n in 0..CALLS / 10 {
                    let mut call = Request::new(pb::GetCashInRequest {
                        cash_in_id: format!("ci_reli{caller}x{n}"),
                    });
                    call.set_timeout(Duration::from_secs(5));
                    codes.push(client.get_cash_in(call).await.err().map(|s| s.code()));
                }
                codes
            })
        })
        .collect();
    let codes: Vec<Option<Code>> = timeout(
        Duration::from_secs(30),
        futures_util::future::join_all(callers),
    )
    .await
    .expect("calls finish")
    .into_iter()
    .flat_map(|r| r.expect("caller task"))
    .collect();
    let elapsed = started.elapsed();
    let upstream = sandbox.count("GET", "/cash-ins/");
    let bound = CALLS as f64 * (1.0 + RATIO) + FLOOR * WINDOW_SECONDS;
    println!(
        "(i) {CALLS} calls against 100% 503 with the circuit held closed: {upstream} upstream requests \
         ≤ bound {CALLS}×(1+{RATIO}) + {FLOOR}/s×{WINDOW_SECONDS:.0} s = {bound:.0} \
         (without a budget up to {}), {:.1} s",
        CALLS * 3,
        elapsed.as_secs_f64()
    );
    assert!(
        codes.iter().all(|c| *c == Some(Code::Unavailable)),
        "every call ends UNAVAILABLE: {:?}",
        histogram(codes.iter().map(|c| format!("{c:?}")))
    );
    assert!(upstream > CALLS, "some retries were made: {upstream}");
    assert!(
        upstream as f64 <= bound,
        "{upstream} upstream requests exceed the bound {bound}"
    );
    gateway.gateway.shutdown().await;
}

// === The token exchange inside the breaker ===

/// A TCP server that accepts connections and never answers: an OMS that hangs.
async fn hanging_upstream() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/v0.9", listener.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (url, task)
}

// Before: the token was fetched before the breaker was asked, so with no token and a hanging
// OMS every call queued on the exchange until it timed out, exchange failures never opened the
// circuit, and no call ever failed fast.
#[tokio::test]
async fn with_no_token_and_a_hanging_oms_calls_soon_fail_fast() {
    let (url, _upstream) = hanging_upstream().await;
    let mut config = common::remote_config(&url, common::REMOTE_API_KEY, "hang-secret");
    config.upstream.request_timeout = ms(300);
    config.upstream.breaker_threshold = 3;
    config.upstream.breaker_cooldown = Duration::from_secs(10);
    config.upstream.breaker_max_cooldown = Duration::from_secs(10);
    let gateway = common::start_unchecked(config).await;
    let started = Instant::now();
    let mut fast_refusals = 0;
    let mut reasons = Vec::new();
    for _ in 0..10 {
        let call_started = Instant::now();
        let mut request = Request::new(pb::GetCashInRequest {
            cash_in_id: "ci_hanging".into(),
        });
        request.set_timeout(Duration::from_secs(3));
        let status = gateway
            .cash_ins()
            .get_cash_in(request)
            .await
            .expect_err("OMS hangs");
        let took = call_started.elapsed();
        reasons.push(format!("{} in {} ms", reason(&status), took.as_millis()));
        // Fast: well under the 3 s a call that waited for the hanging OMS would take.
        if reason(&status) == "UPSTREAM_CIRCUIT_OPEN" && took < ms(1000) {
            assert_eq!(status.code(), Code::Unavailable);
            assert!(common::retry_delay(&status).is_some());
            fast_refusals += 1;
        }
    }
    let total = started.elapsed();
    println!("10 calls against a hanging OMS with no token: {total:?}: {reasons:?}");
    assert!(fast_refusals >= 7, "{reasons:?}");
    assert!(total < Duration::from_secs(5), "{total:?}: {reasons:?}");
    gateway.gateway.shutdown().await;
}

// Before: a probe whose token exchange failed never reached the breaker, so the circuit's
// cool-down never advanced and the prober retried every 50 ms (~20 exchanges/s).
#[tokio::test]
async fn the_prober_backs_off_while_token_exchanges_fail() {
    let secret = "prober-secret";
    let sandbox = oms_sandbox::start(oms_sandbox::SandboxSettings {
        api_key: common::REMOTE_API_KEY.to_owned(),
        api_secret: secret.to_owned(),
        token_ttl: Duration::from_secs(1),
        ..oms_sandbox::SandboxSettings::default()
    })
    .await
    .expect("sandbox");
    let mut config = common::remote_config(&sandbox.base_url(), common::REMOTE_API_KEY, secret);
    config.upstream.breaker_threshold = 2;
    config.upstream.breaker_cooldown = ms(200);
    config.upstream.breaker_max_cooldown = Duration::from_secs(2);
    let gateway = common::start_with(config).await;
    // OMS fails everything, token exchanges included.
    sandbox.inject(Fault::status(None, "", 1_000_000, 503));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = gateway
            .cash_ins()
            .get_cash_in(pb::GetCashInRequest {
                cash_in_id: "ci_probe".into(),
            })
            .await
            .expect_err("OMS fails");
        if reason(&status) == "UPSTREAM_CIRCUIT_OPEN" {
            break;
        }
        assert!(Instant::now() < deadline, "the circuit never opened");
    }
    // Let the token run out, so every probe needs an exchange.
    sleep(Duration::from_millis(1200)).await;
    sandbox.clear_journal();
    sleep(Duration::from_secs(3)).await;
    let exchanges = sandbox.count("POST", "/auth/token");
    let others = sandbox.journal().len() - exchanges;
    println!(
        "3 s with the circuit open and exchanges failing: {exchanges} token exchanges, {others} other requests"
    );
    assert!(exchanges <= 15, "{exchanges} exchanges in 3 s");
    gateway.gateway.shutdown().await;
    sandbox.shutdown().await;
}
