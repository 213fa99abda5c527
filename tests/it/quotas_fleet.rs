//! Per-caller quotas on the built binary with a real `redis-server` (see `replicas.rs`): a caller
//! flooding ten times its rate is refused with QuotaFailure and RetryInfo while another caller's
//! calls at the same time all succeed, their p99 latency measured alone and beside the flood;
//! spreading calls, calls in flight and watch streams over three replicas does not raise a
//! caller's quota.
//! Skipped, saying why, without `redis-server` (a failure under `CI=true`).

use crate::common;
use crate::quotas::{BATCH, CHECKOUT, as_caller, assert_refused, created, policy};
use crate::replicas::{RedisServer, Replica, all_share, redis_missing, say};
use oms_gateway::proto::v1 as pb;
use oms_sandbox::Fault;
use pb::cash_in_service_client::CashInServiceClient;
use std::path::Path;
use std::time::Duration;
use tokio::time::{Instant, sleep};
use tonic::transport::Channel;
use tonic::{Code, Status};

/// `count` replicas on one Redis and one sandbox, enforcing `quotas`.
async fn fleet(
    dir: &Path,
    quotas: &str,
    count: usize,
) -> (RedisServer, oms_sandbox::SandboxHandle, Vec<Replica>) {
    let redis = RedisServer::start().await;
    let sandbox = common::start_remote_sandbox(crate::replicas::SECRET).await;
    let path = common::tls::write(dir, "policy.toml", &policy(quotas));
    let path = path.to_str().expect("a UTF-8 path").to_owned();
    let extra = [
        "--authz-policy",
        &path,
        "--caller-identity-header",
        "l5d-client-id",
    ];
    let mut replicas = Vec::new();
    for _ in 0..count {
        let replica = Replica::launch(
            &sandbox,
            &redis,
            Duration::from_secs(1),
            Duration::from_millis(300),
            &extra,
        )
        .await;
        replicas.push(replica);
    }
    all_share(&replicas).await;
    (redis, sandbox, replicas)
}

async fn get(channel: &Channel, caller: &str, id: &str) -> Result<Duration, Status> {
    let request = pb::GetCashInRequest {
        cash_in_id: id.to_owned(),
    };
    let started = Instant::now();
    let mut client = CashInServiceClient::new(channel.clone());
    client.get_cash_in(as_caller(request, caller)).await?;
    Ok(started.elapsed())
}

/// `calls` GetCashIns of checkout's, one every 20 ms: their latencies, sorted (all must pass).
async fn checkout_calls(channel: &Channel, id: &str, calls: usize) -> Vec<Duration> {
    let mut latencies = Vec::with_capacity(calls);
    for _ in 0..calls {
        let latency = get(channel, CHECKOUT, id).await;
        latencies.push(latency.expect("checkout's call succeeds"));
        sleep(Duration::from_millis(20)).await;
    }
    latencies.sort();
    latencies
}

fn p99(sorted: &[Duration]) -> Duration {
    sorted[(sorted.len() * 99).div_ceil(100).saturating_sub(1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_flooding_ten_times_its_rate_is_refused_and_another_is_unaffected() {
    if redis_missing("quota_flood") {
        return;
    }
    let dir = common::tls::temp_dir("quota-flood");
    let quotas = "[[quota]]\nname = \"batch\"\ncallers = [\"spiffe://td/ns/recon/*\"]\n\
                  calls_per_second = 20\n";
    let (_redis, _sandbox, replicas) = fleet(&dir, quotas, 1).await;
    let channel = replicas[0].channel.clone();
    let id = created(&channel, CHECKOUT, "cst_quota_flood", "quota-flood-1").await;
    let alone = checkout_calls(&channel, &id, 150).await;
    // The flood: 200 calls a second for 3 s, each on its own task.
    const FLOOD: Duration = Duration::from_secs(3);
    let flood = {
        let (channel, id) = (channel.clone(), id.clone());
        tokio::spawn(async move {
            let mut calls = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            let started = Instant::now();
            while started.elapsed() < FLOOD {
                tick.tick().await;
                let (channel, id) = (channel.clone(), id.clone());
                calls.push(tokio::spawn(async move { get(&channel, BATCH, &id).await }));
            }
            let mut outcomes = Vec::new();
            for call in calls {
                outcomes.push(call.await.expect("a flood call"));
            }
            (outcomes, started.elapsed())
        })
    };
    let beside = checkout_calls(&channel, &id, 150).await;
    let (outcomes, took) = flood.await.expect("the flood");
    let passed = outcomes.iter().filter(|o| o.is_ok()).count();
    let refused: Vec<&Status> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    let first = refused.first().expect("the flood is refused");
    assert_refused(first, BATCH, "batch", "calls_per_second");
    let wait = common::retry_delay(first).expect("a RetryInfo");
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_secs(1),
        "{wait:?}"
    );
    assert!(
        refused.iter().all(|s| s.code() == Code::ResourceExhausted),
        "only quota refusals"
    );
    // A burst of 20, then 20 a second while the flood lasted (and the calls it sent last).
    let allowed = 20.0 + 20.0 * took.as_secs_f64() + 5.0;
    assert!(
        (passed as f64) <= allowed,
        "{passed} flood calls passed, at most {allowed:.0} allowed"
    );
    // Operators see it: the access line names the quota and the limit, and so does an audit
    // line; the identity is a field of those lines, never a metric label.
    let log = replicas[0].log_text();
    let access = log
        .lines()
        .find(|l| l.contains("access") && l.contains("RESOURCE_EXHAUSTED"))
        .expect("an access line for a refused call");
    assert!(
        access.contains("batch/calls_per_second") && access.contains(BATCH),
        "{access}"
    );
    let audit = log
        .lines()
        .find(|l| l.contains("call refused by the caller's quota"))
        .expect("an audit line for a refused call");
    assert!(
        audit.contains("calls_per_second") && audit.contains(BATCH),
        "{audit}"
    );
    let metrics = reqwest::get(format!(
        "http://{}/metrics",
        replicas[0].admin_addr().expect("an admin listener")
    ))
    .await
    .expect("GET /metrics")
    .text()
    .await
    .expect("metrics");
    let counted = format!(
        "oms_gateway_quota_refused_total{{quota=\"batch\",limit=\"calls_per_second\"}} {}",
        refused.len()
    );
    assert!(metrics.contains(&counted), "{counted} in:\n{metrics}");
    assert!(!metrics.contains(BATCH), "an identity in the metrics");
    let (before, during) = (p99(&alone), p99(&beside));
    say!(
        "quota flood: {} batch calls in {took:?}: {passed} passed, {} refused; checkout's p99 \
         {before:?} alone, {during:?} beside the flood (max {:?} and {:?})",
        outcomes.len(),
        refused.len(),
        alone.last().expect("calls"),
        beside.last().expect("calls")
    );
    // Unchanged, within what two shared cores allow (the flood's client runs on them too, and
    // under `cargo test` other tests do): never more than 3 times, or 250 ms over. Checkout
    // sharing batch's allowance would show as refusals (above) or waits of seconds.
    assert!(
        during <= (before * 3).max(before + Duration::from_millis(250)),
        "checkout's p99 went from {before:?} to {during:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spreading_over_three_replicas_does_not_raise_a_callers_quota() {
    if redis_missing("quota_spread") {
        return;
    }
    let dir = common::tls::temp_dir("quota-spread");
    let quotas = "[[quota]]\nname = \"batch\"\ncallers = [\"spiffe://td/ns/recon/*\"]\n\
                  calls_per_second = 10\nwatch_streams = 2\n\n\
                  [[quota]]\nname = \"jobs\"\ncallers = [\"spiffe://td/ns/jobs/*\"]\n\
                  concurrent_calls = 2\n\n\
                  [[quota]]\nname = \"retrying\"\ncallers = [\"spiffe://td/ns/retry/*\"]\n\
                  calls_per_second = 2\n";
    let (_redis, sandbox, replicas) = fleet(&dir, quotas, 3).await;
    let id = created(
        &replicas[0].channel,
        CHECKOUT,
        "cst_quota_spread",
        "quota-spread-1",
    )
    .await;
    // 30 calls a second on each replica for 3 s: each replica alone would pass 40.
    let started = Instant::now();
    let mut calls = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(11));
    for n in 0..270 {
        tick.tick().await;
        let (channel, id) = (replicas[n % 3].channel.clone(), id.clone());
        calls.push(tokio::spawn(async move { get(&channel, BATCH, &id).await }));
    }
    let mut passed = 0;
    for call in calls {
        match call.await.expect("a call") {
            Ok(_) => passed += 1,
            Err(status) => assert_refused(&status, BATCH, "batch", "calls_per_second"),
        }
    }
    let took = started.elapsed();
    let allowed = 10.0 + 10.0 * took.as_secs_f64() + 5.0;
    say!("quota spread: 270 calls over 3 replicas in {took:?}: {passed} passed");
    assert!(
        passed > 0 && (passed as f64) <= allowed,
        "{passed} calls passed over three replicas, at most {allowed:.0} allowed"
    );
    // Calls in flight too: two slow calls on two replicas, and the third replica refuses a third.
    const JOB: &str = "spiffe://td/ns/jobs/sa/nightly";
    sandbox.inject(Fault::delay(
        Some("GET"),
        "/cash-ins/",
        2,
        Duration::from_secs(2),
    ));
    let slow: Vec<_> = (0..2)
        .map(|n| {
            let (channel, id) = (replicas[n].channel.clone(), id.clone());
            tokio::spawn(async move { get(&channel, JOB, &id).await })
        })
        .collect();
    sleep(Duration::from_millis(500)).await;
    let refused = get(&replicas[2].channel, JOB, &id)
        .await
        .expect_err("a third call");
    assert_refused(&refused, JOB, "jobs", "concurrent_calls");
    for call in slow {
        call.await
            .expect("a slow call")
            .expect("the slow calls pass");
    }
    get(&replicas[2].channel, JOB, &id)
        .await
        .expect("a call once they are done");
    // Retries too: a call retried after a 503 on one replica takes two of the fleet's tokens
    // (a burst of 2), so the caller's next call, on another replica, is refused for about half a
    // second (it would pass with one token left).
    const RETRYING: &str = "spiffe://td/ns/retry/sa/sync";
    sandbox.inject(Fault::status(Some("GET"), "/cash-ins/", 1, 503));
    let started = Instant::now();
    get(&replicas[0].channel, RETRYING, &id)
        .await
        .expect("a retried call");
    let next = get(&replicas[1].channel, RETRYING, &id).await;
    if started.elapsed() < Duration::from_millis(450) {
        let status = next.expect_err("the retry took the next call's token");
        assert_refused(&status, RETRYING, "retrying", "calls_per_second");
    } else {
        say!(
            "quota spread: the retried call took {:?}, too slow to judge the charge",
            started.elapsed()
        );
    }
    // Streams too: one on each of two replicas, and the third replica refuses a third.
    let open = |n: usize| {
        let channel = replicas[n].channel.clone();
        let id = id.clone();
        async move {
            let request = pb::WatchCashInRequest {
                cash_in_id: id,
                ..Default::default()
            };
            let mut client = CashInServiceClient::new(channel);
            client.watch_cash_in(as_caller(request, BATCH)).await
        }
    };
    let _one = open(0).await.expect("a stream on the first replica");
    let _two = open(1).await.expect("a stream on the second replica");
    let refused = open(2)
        .await
        .expect_err("a third stream, on the third replica");
    assert_refused(&refused, BATCH, "batch", "watch_streams");
    let _ = std::fs::remove_dir_all(dir);
}

// Redis down: each replica enforces the quota from its own counts, answering at once (no call
// waits for Redis beyond --redis-timeout); once Redis answers again, what was admitted meanwhile
// joins the shared count, and no open stream is ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_down_each_replica_enforces_quotas_alone_then_shares_again() {
    if redis_missing("quota_redis_down") {
        return;
    }
    let dir = common::tls::temp_dir("quota-redis-down");
    let quotas = "[[quota]]\nname = \"batch\"\ncallers = [\"spiffe://td/ns/recon/*\"]\n\
                  calls_per_second = 5\nwatch_streams = 1\n";
    let (redis, _sandbox, replicas) = fleet(&dir, quotas, 2).await;
    let id = created(
        &replicas[0].channel,
        CHECKOUT,
        "cst_quota_down",
        "quota-down-1",
    )
    .await;
    let open = |n: usize| {
        let (channel, id) = (replicas[n].channel.clone(), id.clone());
        async move {
            let request = pb::WatchCashInRequest {
                cash_in_id: id,
                ..Default::default()
            };
            let mut request = as_caller(request, BATCH);
            request.set_timeout(Duration::from_secs(60));
            let mut client = CashInServiceClient::new(channel);
            client.watch_cash_in(request).await.map(|r| r.into_inner())
        }
    };
    let first = open(0).await.expect("a stream on the first replica");
    let refused = open(1).await.expect_err("the fleet's one stream is taken");
    assert_refused(&refused, BATCH, "batch", "watch_streams");
    redis.pause();
    // The second replica counts alone: its own one stream, and its own bucket of 5.
    let started = Instant::now();
    let mut second = open(1).await.expect("a stream while Redis is down");
    let again = open(1)
        .await
        .expect_err("this replica's one stream is taken");
    assert_refused(&again, BATCH, "batch", "watch_streams");
    let mut passed = 0;
    for _ in 0..10 {
        if get(&replicas[1].channel, BATCH, &id).await.is_ok() {
            passed += 1;
        }
    }
    let took = started.elapsed();
    assert!((5..=7).contains(&passed), "{passed} of 10 calls passed");
    assert!(took < Duration::from_secs(3), "Redis down cost {took:?}");
    redis.resume();
    all_share(&replicas).await;
    // Shared again: the renewal adds the stream admitted while Redis was down, so the fleet
    // counts both; once the first ends, the second still fills the quota.
    let streams = streams_key(BATCH, "batch");
    let mut conn = redis.conn().await;
    let mut count = async || -> usize {
        redis::cmd("ZCARD")
            .arg(&streams)
            .query_async(&mut conn)
            .await
            .expect("ZCARD")
    };
    common::eventually(
        Duration::from_secs(5),
        "both streams in Redis",
        async || count().await == 2,
    )
    .await;
    let event = tokio::time::timeout(Duration::from_millis(100), second.message()).await;
    assert!(
        !matches!(event, Ok(Ok(None)) | Ok(Err(_))),
        "the stream opened while Redis was down was ended: {event:?}"
    );
    drop(first);
    common::eventually(
        Duration::from_secs(5),
        "the first stream's lease gone",
        async || count().await == 1,
    )
    .await;
    let refused = open(0)
        .await
        .expect_err("the second stream fills the quota");
    assert_refused(&refused, BATCH, "batch", "watch_streams");
    let _ = std::fs::remove_dir_all(dir);
}

/// The Redis key of `caller`'s open streams under `quota` (128 bits of the SHA-256 of both).
fn streams_key(caller: &str, quota: &str) -> String {
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        format!("{quota}\0{caller}").as_bytes(),
    );
    let hex: String = digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("oms-gateway:quota:{{{hex}}}:streams")
}
