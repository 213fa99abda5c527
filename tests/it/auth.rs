//! The gateway's OMS access token as callers experience it: never. Tokens that expire while the
//! gateway runs, and tokens OMS revokes, are replaced behind the callers' backs; no call fails and
//! no caller ever sees UNAUTHENTICATED.

use crate::common;

use oms_gateway::proto::v1 as pb;
use std::time::Duration;
use tokio::time::Instant;

#[tokio::test]
async fn tokens_expiring_every_second_never_reach_a_caller() {
    let mut config = common::test_config();
    config.sandbox.token_ttl = Duration::from_secs(1);
    let gateway = common::start_with(config).await;
    let created = common::create_cash_in(&gateway, "cst_ttl").await;

    // Four callers, each calling back to back for three seconds: three token lifetimes.
    let until = Instant::now() + Duration::from_secs(3);
    let mut callers = Vec::new();
    for caller in 0..4 {
        let mut cash_ins = gateway.cash_ins();
        let id = created.id.clone();
        callers.push(tokio::spawn(async move {
            let mut calls = 0u32;
            while Instant::now() < until {
                let result = if caller % 2 == 0 {
                    cash_ins
                        .get_cash_in(pb::GetCashInRequest {
                            cash_in_id: id.clone(),
                        })
                        .await
                        .map(drop)
                } else {
                    cash_ins
                        .list_cash_ins(pb::ListCashInsRequest {
                            customer_id: "cst_ttl".into(),
                            ..Default::default()
                        })
                        .await
                        .map(drop)
                };
                if let Err(status) = result {
                    panic!("caller {caller} saw an error after {calls} calls: {status:?}");
                }
                calls += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            calls
        }));
    }
    for caller in callers {
        let calls = caller.await.expect("no caller saw an error");
        assert!(calls > 10, "each caller kept calling: {calls}");
    }
    let exchanges = gateway.sandbox().token_exchanges();
    assert!(
        exchanges >= 3,
        "tokens were replaced as they expired: {exchanges} exchanges"
    );
    assert_eq!(gateway.gateway.token_exchanges() as usize, exchanges);
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn a_revoked_token_costs_one_exchange_and_one_retry() {
    let gateway = common::start().await;
    let created = common::create_cash_in(&gateway, "cst_revoke").await;
    let exchanges = gateway.sandbox().token_exchanges();
    gateway.sandbox().revoke_tokens();
    gateway.sandbox().clear_journal();

    let fetched = gateway
        .cash_ins()
        .get_cash_in(pb::GetCashInRequest {
            cash_in_id: created.id.clone(),
        })
        .await
        .expect("the call succeeds despite the revocation")
        .into_inner()
        .cash_in
        .expect("cash_in");
    assert_eq!(fetched.id, created.id);
    assert_eq!(gateway.sandbox().token_exchanges(), exchanges + 1);
    let sent: Vec<(String, u16)> = gateway
        .sandbox()
        .journal()
        .into_iter()
        .map(|r| (r.path, r.status))
        .collect();
    let get = format!("/cash-ins/{}", created.id);
    assert_eq!(
        sent,
        [
            (get.clone(), 401),
            ("/auth/token".to_owned(), 200),
            (get, 200)
        ]
    );
    let bearers: Vec<Option<String>> = common::api_requests(gateway.sandbox())
        .into_iter()
        .map(|r| r.authorization)
        .collect();
    assert_ne!(bearers[0], bearers[1], "the retry carries the new token");
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn a_revocation_under_concurrent_calls_costs_one_exchange_and_fails_no_caller() {
    let gateway = common::start().await;
    let created = common::create_cash_in(&gateway, "cst_revoke_many").await;
    let exchanges = gateway.sandbox().token_exchanges();
    gateway.sandbox().revoke_tokens();

    let mut calls = Vec::new();
    for _ in 0..8 {
        let mut cash_ins = gateway.cash_ins();
        let id = created.id.clone();
        calls.push(tokio::spawn(async move {
            cash_ins
                .get_cash_in(pb::GetCashInRequest { cash_in_id: id })
                .await
        }));
    }
    for call in calls {
        let result = call.await.expect("task");
        if let Err(status) = result {
            panic!("a caller saw {status:?}");
        }
    }
    assert_eq!(
        gateway.sandbox().token_exchanges(),
        exchanges + 1,
        "one exchange for the whole storm of 401s"
    );
    gateway.gateway.shutdown().await;
}

// === Health follows reality after a 401 ===

fn serving() -> i32 {
    tonic_health::ServingStatus::Serving as i32
}

// Before: after one call met two 401s, health stayed NOT_SERVING until the next scheduled
// renewal (~59 min) although the next calls succeeded, so a mesh drained a healthy fleet.
#[tokio::test]
async fn health_is_serving_again_once_calls_succeed_after_a_rejected_token() {
    let gateway = common::start().await;
    let created = common::create_cash_in(&gateway, "cst_health401").await;
    gateway
        .sandbox()
        .inject(oms_sandbox::Fault::status(Some("GET"), "/cash-ins", 2, 401));
    let status = gateway
        .cash_ins()
        .get_cash_in(pb::GetCashInRequest {
            cash_in_id: created.id.clone(),
        })
        .await
        .expect_err("two 401s");
    assert_eq!(status.code(), tonic::Code::Internal, "{status:?}");
    assert_eq!(gateway.get(&created.id).await.id, created.id);
    let deadline = Instant::now() + Duration::from_secs(2);
    while gateway.health_status("").await != serving() {
        assert!(
            Instant::now() < deadline,
            "health stayed NOT_SERVING although calls succeed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gateway.gateway.shutdown().await;
}

// Before: an exchange cut short by one caller's short deadline set health NOT_SERVING. (An
// exchange is no longer cut short by a caller: it outlives the caller, ends with OMS's answer and
// leaves the token for the next call.)
#[tokio::test]
async fn an_exchange_that_outlives_a_callers_deadline_leaves_health_serving() {
    let gateway = common::start().await;
    let created = common::create_cash_in(&gateway, "cst_health_deadline").await;
    gateway.sandbox().revoke_tokens();
    gateway.sandbox().inject(oms_sandbox::Fault::delay(
        Some("POST"),
        "/auth/token",
        1,
        Duration::from_secs(2),
    ));
    let mut request = tonic::Request::new(pb::GetCashInRequest {
        cash_in_id: created.id.clone(),
    });
    request.set_timeout(Duration::from_millis(300));
    let status = gateway
        .cash_ins()
        .get_cash_in(request)
        .await
        .expect_err("the exchange outlives the caller's deadline");
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    for _ in 0..5 {
        assert_eq!(
            gateway.health_status("").await,
            serving(),
            "one caller's deadline says nothing about OMS"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(gateway.get(&created.id).await.id, created.id);
    gateway.gateway.shutdown().await;
}

// === OMS's token lifetime is clamped ===

// Before: `expiresIn: 0` made every token stale at once, so every call (and the refresher, in a
// loop) exchanged a new one.
#[tokio::test]
async fn a_token_lifetime_of_zero_does_not_make_every_call_exchange() {
    let mut config = common::test_config();
    // The sandbox says `expiresIn: 0` (whole seconds) for tokens that live 900 ms.
    config.sandbox.token_ttl = Duration::from_millis(900);
    let gateway = common::start_with(config).await;
    let created = common::create_cash_in(&gateway, "cst_ttl0").await;
    let exchanges = gateway.sandbox().token_exchanges();
    let until = Instant::now() + Duration::from_secs(2);
    let mut calls = 0;
    while Instant::now() < until {
        assert_eq!(gateway.get(&created.id).await.id, created.id);
        calls += 1;
    }
    let made = gateway.sandbox().token_exchanges() - exchanges;
    println!("expiresIn 0: {calls} calls in 2 s took {made} token exchanges");
    assert!(calls > 20, "{calls}");
    assert!(made <= 10, "{made} exchanges for {calls} calls");
    gateway.gateway.shutdown().await;
}

// Before: `expiresIn` near u64::MAX overflowed the clock and panicked the exchange.
#[tokio::test]
async fn a_token_lifetime_near_u64_max_does_not_panic() {
    let mut config = common::test_config();
    config.sandbox.token_ttl = Duration::from_secs(u64::MAX);
    let gateway = common::start_with(config).await;
    let created = common::create_cash_in(&gateway, "cst_ttlmax").await;
    assert_eq!(gateway.get(&created.id).await.id, created.id);
    gateway.gateway.shutdown().await;
}
