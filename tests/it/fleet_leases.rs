//! What a replica leaves behind in Redis when it stops or when Redis stalls: leases that move on
//! at once, no lease or claim left by a command that timed out, and callers waiting on another
//! replica's call answered before their deadline with the details to retry. Three built replicas
//! on one real `redis-server` (see `replicas.rs`), each test bounded well under the lease TTL it
//! sets, so only the behaviour under test can explain a pass.

use crate::common;
use crate::replicas::{create, fleet, redis_missing};
use oms_gateway::proto::v1 as pb;
use oms_sandbox::{Fault, Gate};
use std::time::Duration;
use tonic::Code;
use tonic_types::StatusExt;

/// Long enough that a lease left to its TTL fails every bound below.
const LONG_LEASE: &str = "30s";

async fn lease_of(redis: &crate::replicas::RedisServer, id: &str) -> Option<String> {
    redis::cmd("GET")
        .arg(format!("oms-gateway:watch:{{cash-in:{id}}}:lease"))
        .query_async(&mut redis.conn().await)
        .await
        .expect("GET")
}

async fn idempotency_leases(redis: &crate::replicas::RedisServer) -> Vec<String> {
    redis::cmd("KEYS")
        .arg("oms-gateway:idem:*:lease")
        .query_async(&mut redis.conn().await)
        .await
        .expect("KEYS")
}

// Before: a stopping replica kept its pollers' leases until their TTL (60 s while reconciling),
// so the streams that reconnected to another replica saw nothing for that long.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_stops_hands_its_watch_leases_over_at_once() {
    if redis_missing("a_replica_that_stops_hands_its_watch_leases_over_at_once") {
        return;
    }
    let (redis, sandbox, replicas) = fleet(&["--redis-lease-ttl", LONG_LEASE]).await;
    let location = common::first_location(&replicas[0].channel).await;
    let id = replicas[0].created(&location, "lease-handover").await;
    let _first = watch_status(&replicas[0], &id);
    let holder = replicas[0].replica_id().expect("replica id");
    common::eventually(
        Duration::from_secs(5),
        "replica 0 holds the lease",
        async || {
            lease_of(&redis, &id)
                .await
                .is_some_and(|l| l.starts_with(&holder))
        },
    )
    .await;
    let mut survivor = watch_status(&replicas[1], &id);
    assert_eq!(
        survivor.recv().await,
        Some(pb::CashInStatus::Pending as i32)
    );
    replicas[0].signal("TERM");
    let next = replicas[1].replica_id().expect("replica id");
    common::eventually(
        Duration::from_secs(5),
        "the lease released at SIGTERM and taken by the other watching replica",
        async || {
            lease_of(&redis, &id)
                .await
                .is_some_and(|l| l.starts_with(&next))
        },
    )
    .await;
    common::sandbox_rest::SandboxRest::new(&sandbox)
        .await
        .post(&format!("/sandbox/cash-ins/{id}/expire"), None)
        .await;
    let seen = tokio::time::timeout(Duration::from_secs(5), survivor.recv()).await;
    assert_eq!(
        seen,
        Ok(Some(pb::CashInStatus::Expired as i32)),
        "the surviving replica's stream saw the change by its own polls"
    );
}

/// The statuses a WatchCashIn stream of `id` on `replica` reports, as they come.
fn watch_status(
    replica: &crate::replicas::Replica,
    id: &str,
) -> tokio::sync::mpsc::UnboundedReceiver<i32> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut client = replica.cash_ins();
    let request = pb::WatchCashInRequest {
        cash_in_id: id.to_owned(),
        ..Default::default()
    };
    tokio::spawn(async move {
        let Ok(stream) = client.watch_cash_in(request).await else {
            return;
        };
        let mut stream = stream.into_inner();
        while let Ok(Some(event)) = stream.message().await {
            if let Some(cash_in) = event.cash_in
                && tx.send(cash_in.status).is_err()
            {
                return;
            }
        }
    });
    rx
}

// Before: a CLAIM that timed out during a Redis stall ran when Redis resumed and left a lease
// nobody held: a caller on another replica with the same key waited for it until its deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_that_timed_out_in_a_redis_stall_leaves_no_lease_behind() {
    if redis_missing("a_claim_that_timed_out_in_a_redis_stall_leaves_no_lease_behind") {
        return;
    }
    let (redis, _sandbox, replicas) =
        fleet(&["--redis-lease-ttl", LONG_LEASE, "--redis-timeout", "300ms"]).await;
    let location = common::first_location(&replicas[0].channel).await;
    // One call first, so Redis knows the claim script: a stalled EVALSHA of an unknown script
    // would fail on its own (NOSCRIPT) when Redis resumes, and prove nothing.
    replicas[0].created(&location, "warm-up").await;
    redis.signal("STOP");
    // Redis does not answer: the claim times out and the call goes upstream from this replica.
    let first = replicas[0].created(&location, "stalled-claim").await;
    redis.signal("CONT");
    common::eventually(
        Duration::from_secs(10),
        "no idempotency lease once Redis answers again",
        async || idempotency_leases(&redis).await.is_empty(),
    )
    .await;
    let mut request = tonic::Request::new(create(&location, "stalled-claim"));
    request.set_timeout(Duration::from_secs(5));
    let again = replicas[1]
        .cash_ins()
        .create_cash_in(request)
        .await
        .expect("the same key on another replica, within 5 s")
        .into_inner()
        .cash_in
        .expect("cash_in");
    assert_eq!(again.id, first, "one cash-in for one key");
}

// Before: a caller waiting for another replica's call with the same key waited until its own
// deadline and got a bare DEADLINE_EXCEEDED from its own client, with no reason and no hint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_waiting_on_another_replicas_call_is_answered_before_its_deadline() {
    if redis_missing("a_caller_waiting_on_another_replicas_call_is_answered_before_its_deadline") {
        return;
    }
    let (_redis, sandbox, replicas) = fleet(&[]).await;
    let location = common::first_location(&replicas[0].channel).await;
    let gate = Gate::new(Duration::from_secs(20));
    sandbox.inject(Fault::hold(Some("POST"), "/cash-ins", 1, &gate));
    let mut leader = replicas[0].cash_ins();
    let request = create(&location, "in-flight");
    let led = tokio::spawn(async move { leader.create_cash_in(request).await });
    common::eventually(
        Duration::from_secs(5),
        "the leader's POST at OMS",
        async || {
            common::api_requests(&sandbox)
                .iter()
                .any(|r| r.method == "POST" && r.path == "/cash-ins")
        },
    )
    .await;
    let mut request = tonic::Request::new(create(&location, "in-flight"));
    request.set_timeout(Duration::from_secs(1));
    let status = replicas[1]
        .cash_ins()
        .create_cash_in(request)
        .await
        .expect_err("the leader is still held");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    let info = common::error_info(&status);
    assert_eq!(info.reason, "IDEMPOTENCY_KEY_IN_FLIGHT", "{status:?}");
    assert!(
        status.get_error_details().retry_info().is_some(),
        "a retry hint: {status:?}"
    );
    assert_eq!(
        status
            .metadata()
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok()),
        Some("in-flight"),
        "the key echoed"
    );
    gate.open();
    let created = led.await.expect("leader").expect("the leader's create");
    let retried = replicas[1]
        .cash_ins()
        .create_cash_in(create(&location, "in-flight"))
        .await
        .expect("the retry replays");
    assert_eq!(
        retried.into_inner().cash_in.map(|c| c.id),
        created.into_inner().cash_in.map(|c| c.id)
    );
}

// Before: a customer's shared observation was read whole (HGETALL) whatever its size, so a
// corrupted or poisoned Redis could make every follower read, and decode, any number of fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_customer_observation_past_any_listing_is_ignored_and_said() {
    if redis_missing("a_shared_customer_observation_past_any_listing_is_ignored_and_said") {
        return;
    }
    let (redis, _sandbox, replicas) = fleet(&[]).await;
    let customer = "cst_poisoned";
    let (obs, lease) = (
        format!("oms-gateway:watch:{{customer:{customer}}}:obs"),
        format!("oms-gateway:watch:{{customer:{customer}}}:lease"),
    );
    // A holder that never polls (so this replica follows and reads the observation), and an
    // observation of 5,000 fields.
    let mut conn = redis.conn().await;
    let mut fill = redis::pipe();
    fill.cmd("SET")
        .arg(&lease)
        .arg("someone-else")
        .arg("PX")
        .arg(60_000);
    for i in 0..5_000 {
        fill.cmd("HSET")
            .arg(&obs)
            .arg(format!("ci_{i}"))
            .arg("x".repeat(100));
    }
    let _: () = fill.query_async(&mut conn).await.expect("the fill");
    let mut stream = replicas[0]
        .cash_ins()
        .watch_cash_ins(pb::WatchCashInsRequest {
            customer_id: customer.to_owned(),
            ..Default::default()
        })
        .await
        .expect("WatchCashIns")
        .into_inner();
    common::eventually(Duration::from_secs(10), "the WARN line", async || {
        replicas[0]
            .log_text()
            .contains("holds more fields than any listing can; ignored")
    })
    .await;
    // The stream is still open, waiting for the (silent) holder: nothing was made of the fields.
    let next = tokio::time::timeout(Duration::from_millis(300), stream.message()).await;
    assert!(
        next.is_err(),
        "no event from the poisoned observation: {next:?}"
    );
}
