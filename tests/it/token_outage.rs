//! OMS's token endpoint hanging, as callers, grpc.health and `/readyz` see it: the gateway
//! in-process, its sandbox's `POST /auth/token` held open (a delay fault of an hour), real tonic
//! and HTTP clients, and callers whose deadlines are shorter than the exchange's timeout.

use crate::common::{self, TestGateway, ms};
use oms_gateway::proto::v1 as pb;
use oms_sandbox::Fault;
use std::time::Duration;
use tokio::time::Instant;
use tonic::Code;
use tonic_health::ServingStatus;

/// `--upstream-timeout`, which bounds a token exchange too.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(2);
/// The callers' deadline: shorter than an exchange may take.
const CALL_DEADLINE: Duration = Duration::from_millis(500);

/// What one GetCashIn with [`CALL_DEADLINE`] ended with: OK, or the code, the ErrorInfo reason
/// and whether a RetryInfo came with it.
async fn call(gateway: &TestGateway, id: &str) -> Result<(), (Code, String, bool)> {
    let mut request = tonic::Request::new(pb::GetCashInRequest {
        cash_in_id: id.to_owned(),
    });
    request.set_timeout(CALL_DEADLINE);
    match gateway.cash_ins().get_cash_in(request).await {
        Ok(_) => Ok(()),
        Err(status) => {
            let reason = common::error_infos(&status)
                .first()
                .map(|info| info.reason.clone())
                .unwrap_or_default();
            let retry = common::retry_delay(&status).is_some();
            Err((status.code(), reason, retry))
        }
    }
}

/// The gateway's `/readyz` status code.
async fn readyz(gateway: &TestGateway) -> u16 {
    let addr = gateway.gateway.admin_addr().expect("an admin listener");
    reqwest::Client::new()
        .get(format!("http://{addr}/readyz"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

fn is_fast_refusal(outcome: &Result<(), (Code, String, bool)>) -> bool {
    matches!(outcome, Err((Code::Unavailable, reason, true)) if reason == "UPSTREAM_CIRCUIT_OPEN")
}

// Before: every exchange ended at a deadline (the refresher's own deadline was the exchange's
// timeout; a caller's was shorter), which counts as "the caller gave up": health stayed SERVING,
// `/readyz` 200, the circuit closed, and every call waited out its deadline for as long as the
// endpoint hung (still SERVING 30 s after the first failed call). Now: NOT_SERVING about one
// exchange timeout after the first failed call, then fast UNAVAILABLE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_token_endpoint_turns_health_not_serving_fails_calls_fast_and_recovers() {
    let mut config = common::test_config();
    // OMS says `expiresIn: 3`: the token in use is renewed before it runs out, about 2.4 s
    // after it was issued.
    config.sandbox.token_ttl = Duration::from_secs(3);
    config.upstream.request_timeout = EXCHANGE_TIMEOUT;
    config.upstream.breaker_cooldown = ms(200);
    config.upstream.breaker_max_cooldown = Duration::from_secs(1);
    let gateway = common::start_with(config).await;
    let id = common::create_cash_in(&gateway, "cst_token_hang").await.id;
    let serving = ServingStatus::Serving as i32;
    let not_serving = ServingStatus::NotServing as i32;

    // From now on the token endpoint accepts requests and never answers.
    gateway.sandbox().inject(Fault::delay(
        Some("POST"),
        "/auth/token",
        1_000_000,
        Duration::from_secs(3600),
    ));
    // Callers keep calling; the first to fail met the token's renewal.
    let mut first_failure = None;
    let limit = Instant::now() + Duration::from_secs(15);
    while first_failure.is_none() {
        assert!(
            Instant::now() < limit,
            "no call failed: the token was never renewed"
        );
        if let Err(failure) = call(&gateway, &id).await {
            first_failure = Some((Instant::now(), failure));
        }
    }
    let (failed_at, failure) = first_failure.expect("a failed call");

    // Health turns NOT_SERVING within one exchange timeout and a margin, while callers call.
    let mut seen = vec![Err(failure)];
    let limit = failed_at + EXCHANGE_TIMEOUT + Duration::from_secs(3);
    loop {
        if gateway.health_status("").await == not_serving {
            break;
        }
        assert!(
            Instant::now() < limit,
            "health still SERVING {:?} after the first failed call (calls saw {seen:?})",
            failed_at.elapsed()
        );
        seen.push(call(&gateway, &id).await);
    }
    let turned = failed_at.elapsed();
    assert_eq!(readyz(&gateway).await, 503, "/readyz follows");

    // Calls fail fast: UNAVAILABLE with a retry hint, not their deadline.
    let mut refusals = Vec::new();
    for _ in 0..10 {
        refusals.push(call(&gateway, &id).await);
    }
    let fast = refusals.iter().filter(|o| is_fast_refusal(o)).count();
    println!(
        "token endpoint hanging: NOT_SERVING {turned:?} after the first failed call; then {fast} of 10 calls UNAVAILABLE with RetryInfo: {refusals:?}"
    );
    assert!(fast >= 8, "{refusals:?}");
    assert!(refusals.iter().all(Result::is_err), "{refusals:?}");

    // The endpoint answers again: calls succeed and health is SERVING, by themselves.
    gateway.sandbox().clear_faults();
    let recovering = Instant::now();
    common::eventually(
        Duration::from_secs(10),
        "calls to succeed again",
        async || call(&gateway, &id).await.is_ok(),
    )
    .await;
    common::eventually(Duration::from_secs(5), "health SERVING again", async || {
        gateway.health_status("").await == serving
    })
    .await;
    assert_eq!(readyz(&gateway).await, 200);
    println!(
        "the token endpoint answers again: calls succeed and health is SERVING after {:?}",
        recovering.elapsed()
    );
    gateway.gateway.shutdown().await;
}
