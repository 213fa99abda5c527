//! The money paths, each tested so that it fails when money is at risk: a key reused with another
//! body while the first call is in flight (on one gateway, and on a replica that has no entry of
//! its own), which upstream answers are stored and replayed and which reach OMS again, and the
//! caller's deadline ending a write and its upstream request.
//!
//! The sandbox's own Idempotency-Key deduplication is off in every test here
//! ([`oms_sandbox::SandboxHandle::set_idempotency`]): each POST that reaches it executes, so what
//! these tests see is the gateway's idempotency, not the sandbox's. What reached OMS is counted
//! in the sandbox's journal, by the customer id each test's requests carry (the exact upstream
//! key is not asserted here).

use crate::common::{self, TestGateway};
use crate::replicas::{RedisServer, redis_missing};

use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use oms_gateway::config::{GatewaySettings, Secret};
use oms_gateway::proto::v1 as pb;
use oms_sandbox::{CONNECTION_RESET, Fault, Gate, SandboxHandle};
use pb::cash_in_service_client::CashInServiceClient;
use std::time::Duration;
use tokio::time::Instant;
use tonic::{Code, Request, Status};

/// Attempts per upstream call in these tests (the default, stated so faults cover them all).
const ATTEMPTS: u32 = 3;
/// How long a gate holds a request if a test never opens it.
const GATE_LIMIT: Duration = Duration::from_secs(60);
/// The second call's deadline in the in-flight tests: a call that waits for the first call's
/// outcome, instead of being refused, ends at this deadline while the first is still held.
const SECOND_CALL_DEADLINE: Duration = Duration::from_secs(5);

/// The test config with the circuit breaker out of the way: these tests fail every attempt of
/// some calls on purpose, and count what reaches OMS, not what the breaker lets through.
fn config() -> GatewaySettings {
    let mut config = common::test_config();
    config.upstream.max_attempts = ATTEMPTS;
    config.upstream.breaker_threshold = 1000;
    config
}

/// A gateway on its embedded sandbox, the sandbox's deduplication off.
async fn gateway_alone(config: GatewaySettings) -> TestGateway {
    let gateway = common::start_with(config).await;
    gateway.sandbox().set_idempotency(false);
    gateway
}

fn keyed(mut request: pb::CreateCashInRequest, key: &str) -> pb::CreateCashInRequest {
    request.idempotency_key = key.to_owned();
    request
}

fn with_deadline<T>(message: T, deadline: Duration) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(deadline);
    request
}

/// The statuses the sandbox answered to the `POST /cash-ins` of `customer`, in order (0 while
/// one is in flight, 499 when the gateway dropped it, [`CONNECTION_RESET`] for a reset).
fn creates_of(sandbox: &SandboxHandle, customer: &str) -> Vec<u16> {
    sandbox
        .journal()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == "/cash-ins")
        .filter(|r| {
            serde_json::from_str::<serde_json::Value>(&r.body)
                .is_ok_and(|body| body["customerId"] == customer)
        })
        .map(|r| r.status)
        .collect()
}

/// The statuses the sandbox answered to the refreshes of cash-in `id`, in order.
fn refreshes_of(sandbox: &SandboxHandle, id: &str) -> Vec<u16> {
    let path = format!("/cash-ins/{id}/refresh");
    sandbox
        .journal()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == path)
        .map(|r| r.status)
        .collect()
}

/// A key reused with another request is refused as the contract says: FAILED_PRECONDITION with
/// reason IDEMPOTENCY_KEY_REUSED, or ABORTED (the key is busy) with a retry hint; never an
/// answer, never a wait for the other request's outcome.
fn assert_refused_for_reuse(status: &Status) {
    match status.code() {
        Code::FailedPrecondition => {
            let info = common::error_info(status);
            assert_eq!(info.reason, "IDEMPOTENCY_KEY_REUSED", "{status:?}");
        }
        Code::Aborted => assert!(common::retry_delay(status).is_some(), "{status:?}"),
        _ => panic!("a reused key must be refused at once, not waited on: {status:?}"),
    }
}

// === A key reused with another body while the first call is in flight ===

// Removing the fingerprint check of an in-flight entry in the gateway's idempotency layer makes
// the second call join the first and, once it ends, receive the first call's cash-in.
#[tokio::test]
async fn a_create_reusing_a_key_in_flight_with_another_body_is_refused_and_gets_no_cash_in() {
    let gateway = gateway_alone(config()).await;
    let location = common::first_location(&gateway.channel).await;
    let first = keyed(
        common::create_request(&location, "cst_inflight"),
        "in-flight",
    );
    let mut second = first.clone();
    second.source.as_mut().expect("source").indicated_amount = Some("300.00".into());
    let gate = Gate::new(GATE_LIMIT);
    gateway
        .sandbox()
        .inject(Fault::hold(Some("POST"), "/cash-ins", 1, &gate));
    let mut client = gateway.cash_ins();
    let first_call = tokio::spawn(async move {
        client
            .create_cash_in(with_deadline(first, GATE_LIMIT))
            .await
    });
    common::eventually(
        Duration::from_secs(10),
        "the first create held upstream",
        async || creates_of(gateway.sandbox(), "cst_inflight") == [0],
    )
    .await;

    let status = gateway
        .cash_ins()
        .create_cash_in(with_deadline(second, SECOND_CALL_DEADLINE))
        .await
        .map(|r| r.into_inner().cash_in.map(|c| c.id))
        .expect_err("the second body must not get the first body's cash-in");
    assert_refused_for_reuse(&status);
    assert_eq!(
        creates_of(gateway.sandbox(), "cst_inflight"),
        [0],
        "the reused key never reached OMS"
    );

    gate.open();
    let cash_in = first_call
        .await
        .expect("task")
        .expect("the first create, released")
        .into_inner()
        .cash_in
        .expect("cash_in");
    let amount = cash_in
        .source
        .as_ref()
        .and_then(|s| s.indicated_amount.clone());
    assert_eq!(amount.as_deref(), Some("200.00"));
    assert_eq!(creates_of(gateway.sandbox(), "cst_inflight"), [201]);
    assert_eq!(gateway.sandbox().cash_in_count(), 1);
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn a_refresh_reusing_a_key_in_flight_for_another_cash_in_is_refused_and_refreshes_nothing() {
    let gateway = gateway_alone(config()).await;
    let held = common::create_cash_in(&gateway, "cst_inflight_r").await;
    let other = common::create_cash_in(&gateway, "cst_inflight_r").await;
    let refresh = |id: &str| pb::RefreshCashInRequest {
        cash_in_id: id.to_owned(),
        idempotency_key: "refresh-in-flight".into(),
    };
    let gate = Gate::new(GATE_LIMIT);
    let held_path = format!("/cash-ins/{}/refresh", held.id);
    gateway
        .sandbox()
        .inject(Fault::hold(Some("POST"), &held_path, 1, &gate));
    let mut client = gateway.cash_ins();
    let first = with_deadline(refresh(&held.id), GATE_LIMIT);
    let first_call = tokio::spawn(async move { client.refresh_cash_in(first).await });
    common::eventually(
        Duration::from_secs(10),
        "the first refresh held upstream",
        async || refreshes_of(gateway.sandbox(), &held.id) == [0],
    )
    .await;

    let status = gateway
        .cash_ins()
        .refresh_cash_in(with_deadline(refresh(&other.id), SECOND_CALL_DEADLINE))
        .await
        .map(|r| r.into_inner().cash_in.map(|c| c.id))
        .expect_err("a refresh of another cash-in must not get the held one");
    assert_refused_for_reuse(&status);
    assert!(refreshes_of(gateway.sandbox(), &other.id).is_empty());

    gate.open();
    let refreshed = first_call
        .await
        .expect("task")
        .expect("the first refresh, released")
        .into_inner()
        .cash_in
        .expect("cash_in");
    assert_eq!(refreshed.id, held.id);
    assert_eq!(
        gateway.get(&other.id).await.deposit_instructions,
        other.deposit_instructions,
        "the other cash-in's code still works"
    );
    gateway.gateway.shutdown().await;
}

const FLEET_SECRET: &str = "money-paths-fleet-secret";

/// A gateway of a fleet: the remote `sandbox` as OMS, sharing `redis`.
async fn replica(sandbox: &SandboxHandle, redis: &RedisServer) -> TestGateway {
    let mut config =
        common::remote_config(&sandbox.base_url(), common::REMOTE_API_KEY, FLEET_SECRET);
    config.upstream.breaker_threshold = 1000;
    config.redis.url = Some(Secret::new(redis.url()));
    common::start_with(config).await
}

/// Waits until `a` and `b` share through Redis: a key `a` used is refused on `b` for another
/// request. (Each probe `b` answers alone creates a cash-in of the probe customer; no test
/// counts those.)
async fn until_sharing(a: &TestGateway, b: &TestGateway, location: &pb::CashLocation) {
    let mut probe = 0;
    common::eventually(
        Duration::from_secs(20),
        "both gateways sharing through Redis",
        async || {
            probe += 1;
            let key = format!("sharing-probe-{probe}");
            let request = keyed(common::create_request(location, "cst_probe"), &key);
            if a.cash_ins().create_cash_in(request).await.is_err() {
                return false;
            }
            let other = keyed(common::create_request(location, "cst_probe_b"), &key);
            matches!(
                b.cash_ins().create_cash_in(other).await,
                Err(status) if status.code() == Code::FailedPrecondition
            )
        },
    )
    .await;
}

// Removing the fingerprint check of a lease held in Redis makes the replica wait for the other
// replica's call instead of refusing (and, were that call's outcome not stored, send the other
// body upstream under the same key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_replica_without_the_key_a_reuse_while_another_replica_holds_it_is_refused() {
    if redis_missing("on_a_replica_without_the_key") {
        return;
    }
    let redis = RedisServer::start().await;
    let sandbox = common::start_remote_sandbox(FLEET_SECRET).await;
    sandbox.set_idempotency(false);
    let a = replica(&sandbox, &redis).await;
    let b = replica(&sandbox, &redis).await;
    let location = common::first_location(&a.channel).await;
    until_sharing(&a, &b, &location).await;

    let first = keyed(common::create_request(&location, "cst_fleet"), "fleet-key");
    let mut second = first.clone();
    second.source.as_mut().expect("source").indicated_amount = Some("300.00".into());
    let gate = Gate::new(GATE_LIMIT);
    sandbox.inject(Fault::hold(Some("POST"), "/cash-ins", 1, &gate));
    let mut client = a.cash_ins();
    let held = first.clone();
    let first_call =
        tokio::spawn(async move { client.create_cash_in(with_deadline(held, GATE_LIMIT)).await });
    common::eventually(
        Duration::from_secs(10),
        "the first create held upstream",
        async || creates_of(&sandbox, "cst_fleet") == [0],
    )
    .await;

    let status = b
        .cash_ins()
        .create_cash_in(with_deadline(second.clone(), SECOND_CALL_DEADLINE))
        .await
        .map(|r| r.into_inner().cash_in.map(|c| c.id))
        .expect_err("the other body must be refused on the other replica too");
    assert_refused_for_reuse(&status);
    assert_eq!(creates_of(&sandbox, "cst_fleet"), [0], "never reached OMS");

    gate.open();
    let cash_in = first_call
        .await
        .expect("task")
        .expect("the first create, released")
        .into_inner()
        .cash_in
        .expect("cash_in");
    // Done now: the other body is still refused on b, and the first body replays there.
    let status = b
        .cash_ins()
        .create_cash_in(second)
        .await
        .expect_err("the other body, once the first call is done");
    assert_refused_for_reuse(&status);
    let replayed = b
        .cash_ins()
        .create_cash_in(first)
        .await
        .expect("the first body again, on b")
        .into_inner()
        .cash_in
        .expect("cash_in");
    assert_eq!(replayed.id, cash_in.id);
    assert_eq!(
        creates_of(&sandbox, "cst_fleet"),
        [201],
        "one POST, one cash-in"
    );
    a.gateway.shutdown().await;
    b.gateway.shutdown().await;
}

// === Which upstream answers are stored (replayed) and which reach OMS again ===

/// What every attempt of a first create meets.
#[derive(Clone, Copy, Debug)]
enum Meets {
    Status(u16),
    Reset,
}

impl Meets {
    fn label(self) -> String {
        match self {
            Meets::Status(status) => status.to_string(),
            Meets::Reset => "reset".into(),
        }
    }

    fn inject(self, sandbox: &SandboxHandle) {
        // Enough for every attempt and a 401's one re-exchange; the rest are cleared.
        let times = ATTEMPTS as usize + 1;
        sandbox.inject(match self {
            Meets::Status(status) => Fault::status(Some("POST"), "/cash-ins", times, status),
            Meets::Reset => Fault::reset(Some("POST"), "/cash-ins", times),
        });
    }
}

/// A create whose every attempt meets `meets`, then the same create with the same key: returns
/// the first call's status, the second call's answer (the cash-in id), and the POSTs each made
/// (their statuses).
async fn the_same_key_after(
    gateway: &TestGateway,
    location: &pb::CashLocation,
    meets: Meets,
) -> (Status, Result<String, Status>, Vec<u16>, Vec<u16>) {
    let customer = format!("cst_meets_{}", meets.label());
    let request = keyed(common::create_request(location, &customer), &customer);
    meets.inject(gateway.sandbox());
    let first = gateway
        .cash_ins()
        .create_cash_in(request.clone())
        .await
        .expect_err("every attempt failed");
    gateway.sandbox().clear_faults();
    let posts_first = creates_of(gateway.sandbox(), &customer);
    let second = gateway
        .cash_ins()
        .create_cash_in(request)
        .await
        .map(|r| r.into_inner().cash_in.expect("cash_in").id);
    let posts_second = creates_of(gateway.sandbox(), &customer)[posts_first.len()..].to_vec();
    (first, second, posts_first, posts_second)
}

// Storing any of these outcomes (the key burnt for the idempotency window) leaves the second
// call answered from the store, with no POST: the create the caller retried never happens.
#[tokio::test]
async fn a_create_whose_every_attempt_meets_a_5xx_or_a_reset_is_not_stored_and_then_creates_once() {
    let gateway = gateway_alone(config()).await;
    let location = common::first_location(&gateway.channel).await;
    for (meets, code) in [
        (Meets::Status(500), Code::Internal),
        (Meets::Status(502), Code::Unavailable),
        (Meets::Status(503), Code::Unavailable),
        (Meets::Status(504), Code::DeadlineExceeded),
        (Meets::Reset, Code::Unavailable),
    ] {
        let before = gateway.sandbox().cash_in_count();
        let (first, second, posts_first, posts_second) =
            the_same_key_after(&gateway, &location, meets).await;
        assert_eq!(first.code(), code, "{meets:?}: {first:?}");
        let failed = match meets {
            Meets::Status(status) => status,
            Meets::Reset => CONNECTION_RESET,
        };
        assert!(
            !posts_first.is_empty() && posts_first.iter().all(|s| *s == failed),
            "{meets:?}: every attempt met it: {posts_first:?}"
        );
        let id = second.unwrap_or_else(|s| panic!("{meets:?}: the key is not burnt: {s:?}"));
        assert_eq!(
            posts_second,
            [201],
            "{meets:?}: the same key reached OMS once more"
        );
        assert_eq!(gateway.sandbox().cash_in_count(), before + 1, "{meets:?}");
        assert_eq!(gateway.get(&id).await.id, id);
    }
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn refusals_that_say_try_again_are_not_stored_and_the_same_key_then_creates_once() {
    let gateway = gateway_alone(config()).await;
    let location = common::first_location(&gateway.channel).await;
    for (status, code) in [
        (401, Code::Internal),
        (408, Code::Unavailable),
        (409, Code::Aborted),
        (421, Code::Unavailable),
        (425, Code::Unavailable),
        (429, Code::ResourceExhausted),
        (499, Code::Unavailable),
    ] {
        let before = gateway.sandbox().cash_in_count();
        let (first, second, _, posts_second) =
            the_same_key_after(&gateway, &location, Meets::Status(status)).await;
        assert_eq!(first.code(), code, "{status}: {first:?}");
        second.unwrap_or_else(|s| panic!("{status}: the key is not burnt: {s:?}"));
        assert_eq!(
            posts_second,
            [201],
            "{status}: the same key reached OMS once more"
        );
        assert_eq!(gateway.sandbox().cash_in_count(), before + 1, "{status}");
    }
    gateway.gateway.shutdown().await;
}

// Not storing these would let a retry reach OMS again, where an OMS that ignored the key (the
// sandbox here) creates what it refused, or a real one answers what it answered.
#[tokio::test]
async fn success_and_omss_final_refusals_are_replayed_without_reaching_oms_again() {
    let gateway = gateway_alone(config()).await;
    let location = common::first_location(&gateway.channel).await;
    for (status, code) in [
        (400, Code::InvalidArgument),
        (403, Code::PermissionDenied),
        (404, Code::NotFound),
        (422, Code::FailedPrecondition),
    ] {
        let (first, second, posts_first, posts_second) =
            the_same_key_after(&gateway, &location, Meets::Status(status)).await;
        assert_eq!(first.code(), code, "{status}: {first:?}");
        let replayed = second.expect_err("the refusal again");
        assert_eq!(
            (replayed.code(), replayed.message()),
            (first.code(), first.message()),
            "{status}"
        );
        let info = |s: &Status| {
            let info = common::error_info(s);
            (info.reason, info.domain, info.metadata)
        };
        assert_eq!(info(&replayed), info(&first), "{status}");
        assert_eq!(posts_first, [status], "{status}: one attempt");
        assert!(
            posts_second.is_empty(),
            "{status}: replayed: {posts_second:?}"
        );
    }
    assert_eq!(gateway.sandbox().cash_in_count(), 0);

    let request = keyed(common::create_request(&location, "cst_success"), "success");
    let created = gateway.cash_ins().create_cash_in(request.clone()).await;
    let again = gateway.cash_ins().create_cash_in(request).await;
    let id = |r: Result<tonic::Response<pb::CreateCashInResponse>, Status>| {
        r.expect("CreateCashIn")
            .into_inner()
            .cash_in
            .expect("cash_in")
            .id
    };
    assert_eq!(id(again), id(created), "the success replayed");
    assert_eq!(creates_of(gateway.sandbox(), "cst_success"), [201]);
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn a_create_whose_every_attempt_times_out_is_not_stored_and_then_creates_once() {
    let mut config = config();
    config.upstream.request_timeout = Duration::from_secs(1);
    let gateway = gateway_alone(config).await;
    let location = common::first_location(&gateway.channel).await;
    let request = keyed(common::create_request(&location, "cst_timeout"), "timeout");
    let gate = Gate::new(GATE_LIMIT);
    let times = ATTEMPTS as usize;
    gateway
        .sandbox()
        .inject(Fault::hold(Some("POST"), "/cash-ins", times, &gate));
    let mut first = Request::new(request.clone());
    first.set_timeout(Duration::from_secs(30));
    let status = gateway
        .cash_ins()
        .create_cash_in(first)
        .await
        .expect_err("every attempt timed out");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(common::error_info(&status).reason, "UPSTREAM_TIMEOUT");
    // Every abandoned attempt is dropped by the sandbox, with no effect.
    common::eventually(
        Duration::from_secs(10),
        "every timed-out attempt dropped",
        async || {
            let posts = creates_of(gateway.sandbox(), "cst_timeout");
            !posts.is_empty() && posts.iter().all(|s| *s == 499)
        },
    )
    .await;
    let attempts = creates_of(gateway.sandbox(), "cst_timeout").len();
    gateway.sandbox().clear_faults();
    gate.open();
    gateway
        .cash_ins()
        .create_cash_in(request)
        .await
        .expect("the key is not burnt");
    let posts = creates_of(gateway.sandbox(), "cst_timeout");
    assert_eq!(
        posts[attempts..],
        [201],
        "the same key reached OMS once more"
    );
    assert_eq!(gateway.sandbox().cash_in_count(), 1);
    gateway.gateway.shutdown().await;
}

// === The caller's deadline ends a write, and its upstream request ===

/// How long OMS takes to answer in the deadline tests: far longer than the caller waits.
const UPSTREAM_HOLD: Duration = Duration::from_secs(20);
/// The caller's deadline in the deadline tests.
const CALLER_DEADLINE: Duration = Duration::from_secs(1);
/// How many times a deadline test lets tonic's own timer win the race (see
/// [`ends_at_the_callers_deadline`]).
const RACES: usize = 5;

/// A client that sends the call's deadline (`grpc-timeout`) but, unlike tonic's `Channel`, does
/// not enforce it itself, so what the test sees is the gateway's answer, not this client's own
/// timer racing it.
type Patient = CashInServiceClient<Client<HttpConnector, tonic::body::Body>>;

fn patient_client(gateway: &TestGateway) -> Patient {
    let http = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let origin = format!("http://{}", gateway.gateway.addr())
        .parse()
        .expect("origin");
    CashInServiceClient::with_origin(http, origin)
}

/// A config in which only the caller's deadline can end the call early.
fn deadline_config() -> GatewaySettings {
    let mut config = config();
    config.upstream.request_timeout = Duration::from_secs(60);
    config.upstream.default_deadline = Duration::from_secs(60);
    config
}

/// Runs `write` (one write against an upstream held for [`UPSTREAM_HOLD`], with the caller's
/// deadline [`CALLER_DEADLINE`], which must end before the hold does) until the gateway answers
/// DEADLINE_EXCEEDED itself, with its ErrorInfo.
///
/// The gateway gives up a little before the caller's deadline so that its answer comes first;
/// tonic's server also ends a call at its `grpc-timeout`, with a bare CANCELLED "Timeout
/// expired". On a machine so loaded that the gateway's handler starts later than tonic's timer
/// by more than that margin, tonic's answer can win, so a lost race is tried again, up to
/// [`RACES`] times. A gateway that ignores the caller's deadline never answers itself: tonic's
/// timer ends every call (and without it, OMS's answer would, after the hold).
async fn ends_at_the_callers_deadline(mut write: impl AsyncFnMut(usize) -> Status) {
    let mut lost = Vec::new();
    for n in 0..RACES {
        let started = Instant::now();
        let status = write(n).await;
        let elapsed = started.elapsed();
        assert!(
            elapsed < UPSTREAM_HOLD / 2,
            "answered at the caller's deadline, not after OMS: {elapsed:?}"
        );
        match status.code() {
            Code::DeadlineExceeded => {
                let info = common::error_info(&status);
                assert!(!info.reason.is_empty(), "{info:?}");
                return;
            }
            Code::Cancelled if status.message() == "Timeout expired" => lost.push(status),
            _ => panic!("DEADLINE_EXCEEDED expected: {status:?}"),
        }
    }
    panic!(
        "the gateway never answered at the caller's deadline itself; tonic's own timer ended \
         every call: {lost:?}"
    );
}

// An upstream deadline that ignores the caller's leaves the gateway waiting on OMS past the
// caller's deadline: tonic's server-side timer then ends the call with a bare CANCELLED, and the
// gateway never answers DEADLINE_EXCEEDED.
#[tokio::test]
async fn refresh_ends_at_the_callers_deadline_and_abandons_its_upstream_request() {
    let gateway = gateway_alone(deadline_config()).await;
    let created = common::create_cash_in(&gateway, "cst_deadline_refresh").await;
    let path = format!("/cash-ins/{}/refresh", created.id);
    ends_at_the_callers_deadline(async |n| {
        gateway
            .sandbox()
            .inject(Fault::delay(Some("POST"), &path, 1, UPSTREAM_HOLD));
        let request = pb::RefreshCashInRequest {
            cash_in_id: created.id.clone(),
            idempotency_key: format!("refresh-deadline-{n}"),
        };
        let status = patient_client(&gateway)
            .refresh_cash_in(with_deadline(request, CALLER_DEADLINE))
            .await
            .map(|r| r.into_inner().cash_in.map(|c| c.id))
            .expect_err("OMS is slower than the caller's deadline");
        common::eventually(
            Duration::from_secs(10),
            "the refresh request abandoned",
            async || refreshes_of(gateway.sandbox(), &created.id) == vec![499; n + 1],
        )
        .await;
        status
    })
    .await;
    assert_eq!(
        gateway.get(&created.id).await.deposit_instructions,
        created.deposit_instructions,
        "no refresh happened"
    );
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn create_ends_at_the_callers_deadline_and_abandons_its_upstream_request() {
    let gateway = gateway_alone(deadline_config()).await;
    let location = common::first_location(&gateway.channel).await;
    ends_at_the_callers_deadline(async |n| {
        gateway
            .sandbox()
            .inject(Fault::delay(Some("POST"), "/cash-ins", 1, UPSTREAM_HOLD));
        let customer = format!("cst_deadline_create_{n}");
        let request = keyed(common::create_request(&location, &customer), &customer);
        let status = patient_client(&gateway)
            .create_cash_in(with_deadline(request, CALLER_DEADLINE))
            .await
            .map(|r| r.into_inner().cash_in.map(|c| c.id))
            .expect_err("OMS is slower than the caller's deadline");
        common::eventually(
            Duration::from_secs(10),
            "the create request abandoned",
            async || creates_of(gateway.sandbox(), &customer) == [499],
        )
        .await;
        status
    })
    .await;
    assert_eq!(gateway.sandbox().cash_in_count(), 0);
    gateway.gateway.shutdown().await;
}
