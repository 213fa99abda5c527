//! The admin listener as Prometheus and a kubelet see it: counters read from `/metrics` after
//! real RPCs (per method and code, upstream requests by operation and status, idempotency
//! outcomes, watch gauges, shed calls), the OpenMetrics format when asked, and `/readyz`
//! following grpc.health.

use crate::common::prometheus::{scrape, value};
use crate::common::{self, TestGateway};
use oms_gateway::proto::v1 as pb;
use oms_sandbox::Fault;
use std::time::Duration;
use tonic::Code;

// === helpers ===

/// GET `path` on the gateway's admin listener: (status, content type, body).
async fn admin_get(
    gateway: &TestGateway,
    path: &str,
    accept: Option<&str>,
) -> (u16, String, String) {
    let addr = gateway.gateway.admin_addr().expect("an admin listener");
    let mut request = reqwest::Client::new()
        .get(format!("http://{addr}{path}"))
        .timeout(Duration::from_secs(5));
    if let Some(accept) = accept {
        request = request.header("accept", accept);
    }
    let response = request.send().await.expect("the admin listener answers");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (status, content_type, response.text().await.expect("a body"))
}

fn method(name: &'static str) -> [(&'static str, &'static str); 2] {
    [
        ("grpc_service", "polygon.oms.v1.CashInService"),
        ("grpc_method", name),
    ]
}

fn handled(text: &str, name: &'static str, code: &str) -> f64 {
    let [service, method] = method(name);
    value(
        text,
        "grpc_server_handled_total",
        &[service, method, ("grpc_code", code)],
    )
}

// === tests ===

#[tokio::test]
async fn handled_calls_are_counted_per_method_with_their_code() {
    let gateway = common::start().await;
    let created = common::create_cash_in(&gateway, "cst_metrics1").await;
    gateway.get(&created.id).await;
    let status = gateway
        .cash_ins()
        .get_cash_in(pb::GetCashInRequest {
            cash_in_id: "ci_doesnotexist".into(),
        })
        .await
        .expect_err("no such cash-in");
    assert_eq!(status.code(), Code::NotFound);

    let text = scrape(&gateway).await;
    assert_eq!(handled(&text, "CreateCashIn", "OK"), 1.0, "{text}");
    assert_eq!(handled(&text, "GetCashIn", "OK"), 1.0, "{text}");
    assert_eq!(handled(&text, "GetCashIn", "NotFound"), 1.0, "{text}");
    let get = method("GetCashIn");
    assert_eq!(value(&text, "grpc_server_started_total", &get), 2.0);
    assert_eq!(
        value(&text, "grpc_server_msg_sent_total", &get),
        1.0,
        "an error sends no message"
    );
    assert_eq!(
        value(&text, "grpc_server_msg_received_total", &get),
        2.0,
        "every request is received, the refused one too"
    );
    assert_eq!(
        value(&text, "grpc_server_handling_seconds_count", &get),
        2.0
    );
    let unary = [get[0], get[1], ("grpc_type", "unary")];
    assert_eq!(value(&text, "grpc_server_handled_total", &unary), 2.0);
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn upstream_requests_are_counted_by_operation_and_status_with_retries() {
    let gateway = common::start().await;
    let location = common::first_location(&gateway.channel).await;
    gateway
        .sandbox()
        .inject(Fault::status(Some("POST"), "/cash-ins", 1, 503));
    gateway
        .cash_ins()
        .create_cash_in(common::create_request(&location, "cst_metrics2"))
        .await
        .expect("created after one retry");
    let _ = gateway
        .cash_ins()
        .get_cash_in(pb::GetCashInRequest {
            cash_in_id: "ci_doesnotexist".into(),
        })
        .await;

    let text = scrape(&gateway).await;
    let requests = |operation: &str, status: &str| {
        value(
            &text,
            "oms_upstream_requests_total",
            &[("operation", operation), ("status", status)],
        )
    };
    assert_eq!(requests("POST /cash-ins", "503"), 1.0, "{text}");
    assert_eq!(requests("POST /cash-ins", "2xx"), 1.0, "{text}");
    assert_eq!(requests("GET /cash-ins/{id}", "404"), 1.0, "{text}");
    assert_eq!(requests("GET /cash-locations", "2xx"), 1.0, "{text}");
    assert_eq!(value(&text, "oms_upstream_retries_total", &[]), 1.0);
    assert_eq!(
        value(
            &text,
            "oms_upstream_request_duration_seconds_count",
            &[("operation", "POST /cash-ins")]
        ),
        2.0
    );
    assert!(
        value(
            &text,
            "oms_upstream_token_exchanges_total",
            &[("outcome", "ok")]
        ) >= 1.0,
        "{text}"
    );
    assert_eq!(value(&text, "oms_upstream_circuit_state", &[]), 0.0);
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn idempotency_outcomes_are_counted_led_shared_replayed_and_key_reused() {
    let gateway = common::start().await;
    let location = common::first_location(&gateway.channel).await;
    let mut request = common::create_request(&location, "cst_metrics3");
    request.idempotency_key = "metrics-key".into();
    // The leader's POST waits upstream, so the second call with the key joins it.
    gateway.sandbox().inject(Fault::delay(
        Some("POST"),
        "/cash-ins",
        1,
        Duration::from_millis(500),
    ));
    let (mut first, mut second) = (gateway.cash_ins(), gateway.cash_ins());
    let (a, b) = tokio::join!(first.create_cash_in(request.clone()), async {
        // Once the leader's POST is at OMS (journaled on arrival), the key is in flight.
        common::eventually(
            Duration::from_secs(5),
            "the leader's POST upstream",
            async || gateway.sandbox().count("POST", "/cash-ins") >= 1,
        )
        .await;
        second.create_cash_in(request.clone()).await
    });
    a.expect("the leader");
    b.expect("the call that shared it");
    gateway
        .cash_ins()
        .create_cash_in(request.clone())
        .await
        .expect("a replay");
    request.source.as_mut().expect("source").indicated_amount = Some("300.00".into());
    let status = gateway
        .cash_ins()
        .create_cash_in(request)
        .await
        .expect_err("the key with another request");
    assert_eq!(status.code(), Code::FailedPrecondition);

    let text = scrape(&gateway).await;
    let outcome = |o: &str| value(&text, "oms_gateway_idempotency_total", &[("outcome", o)]);
    assert_eq!(
        (
            outcome("led"),
            outcome("shared"),
            outcome("replayed"),
            outcome("key_reused")
        ),
        (1.0, 1.0, 1.0, 1.0),
        "{text}"
    );
    assert_eq!(handled(&text, "CreateCashIn", "OK"), 3.0);
    assert_eq!(handled(&text, "CreateCashIn", "FailedPrecondition"), 1.0);
    assert_eq!(gateway.sandbox().cash_in_count(), 1);
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn the_watch_gauges_go_up_with_a_stream_and_down_when_it_ends() {
    let mut config = common::test_config();
    config.watch.poll_interval = Duration::from_millis(200);
    let gateway = common::start_with(config).await;
    let created = common::create_cash_in(&gateway, "cst_metrics4").await;
    let mut stream = gateway
        .cash_ins()
        .watch_cash_in(pb::WatchCashInRequest {
            cash_in_id: created.id.clone(),
            ..Default::default()
        })
        .await
        .expect("WatchCashIn")
        .into_inner();
    tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("the initial event in time")
        .expect("an event")
        .expect("not the end");

    let text = scrape(&gateway).await;
    assert_eq!(
        value(&text, "oms_gateway_watch_streams", &[]),
        1.0,
        "{text}"
    );
    assert_eq!(value(&text, "oms_gateway_watch_pollers", &[]), 1.0);
    assert!(value(&text, "oms_gateway_watch_polls_total", &[]) >= 1.0);
    let watch = method("WatchCashIn");
    let streaming = [watch[0], watch[1], ("grpc_type", "server_stream")];
    assert_eq!(value(&text, "grpc_server_started_total", &streaming), 1.0);
    assert!(value(&text, "grpc_server_msg_sent_total", &streaming) >= 1.0);
    assert_eq!(
        value(&text, "grpc_server_handled_total", &streaming),
        0.0,
        "still open"
    );

    // The caller goes away: the stream ends CANCELLED and both gauges fall back to 0.
    drop(stream);
    common::eventually(
        Duration::from_secs(5),
        "the watch gauges back to 0",
        async || {
            let text = scrape(&gateway).await;
            value(&text, "oms_gateway_watch_streams", &[]) == 0.0
                && value(&text, "oms_gateway_watch_pollers", &[]) == 0.0
                && handled(&text, "WatchCashIn", "Canceled") == 1.0
        },
    )
    .await;
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn shed_calls_are_counted_and_calls_in_flight_are_shown() {
    let mut config = common::test_config();
    config.server.max_concurrent_calls = 1;
    let gateway = common::start_with(config).await;
    gateway.sandbox().inject(Fault::delay(
        Some("GET"),
        "/cash-locations",
        1,
        Duration::from_millis(800),
    ));
    let mut slow = gateway.locations();
    let slow_call =
        tokio::spawn(async move { slow.list_cash_locations(common::guide_point()).await });
    common::eventually(Duration::from_secs(5), "one call in flight", async || {
        value(&scrape(&gateway).await, "oms_gateway_calls_in_flight", &[]) == 1.0
    })
    .await;
    let status = gateway
        .locations()
        .list_cash_locations(common::guide_point())
        .await
        .expect_err("over the concurrency limit");
    assert_eq!(status.code(), Code::ResourceExhausted);
    slow_call.await.expect("task").expect("the slow call");

    let text = scrape(&gateway).await;
    assert_eq!(value(&text, "oms_gateway_shed_total", &[]), 1.0, "{text}");
    assert_eq!(value(&text, "oms_gateway_calls_in_flight", &[]), 0.0);
    let locations = [
        ("grpc_service", "polygon.oms.v1.CashLocationService"),
        ("grpc_method", "ListCashLocations"),
    ];
    let code = |c: &str| {
        value(
            &text,
            "grpc_server_handled_total",
            &[locations[0], locations[1], ("grpc_code", c)],
        )
    };
    assert_eq!(
        (code("OK"), code("ResourceExhausted")),
        (1.0, 1.0),
        "{text}"
    );
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn metrics_are_openmetrics_when_asked_and_prometheus_text_otherwise() {
    let gateway = common::start().await;
    gateway
        .get(&common::create_cash_in(&gateway, "cst_metrics5").await.id)
        .await;
    let (status, content_type, body) = admin_get(
        &gateway,
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("application/openmetrics-text; version=1.0.0"),
        "{content_type}"
    );
    assert!(body.ends_with("# EOF\n"), "{body}");
    assert!(
        body.contains("# TYPE grpc_server_handled counter\n"),
        "{body}"
    );
    assert!(body.contains("# UNIT grpc_server_handling_seconds seconds\n"));

    let (_, content_type, body) = admin_get(&gateway, "/metrics", None).await;
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    assert!(
        body.contains("# TYPE grpc_server_handled_total counter\n"),
        "{body}"
    );
    assert!(!body.contains("# EOF"));
    // Every family has its HELP, before its TYPE.
    let helps: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# HELP "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    let types: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    assert_eq!(helps, types);
    for family in [
        "grpc_server_started_total",
        "grpc_server_handled_total",
        "grpc_server_handling_seconds",
        "grpc_server_msg_sent_total",
        "oms_upstream_requests_total",
        "oms_upstream_request_duration_seconds",
        "oms_upstream_retries_total",
        "oms_upstream_retry_budget_exhausted_total",
        "oms_upstream_circuit_state",
        "oms_upstream_token_exchanges_total",
        "oms_gateway_idempotency_total",
        "oms_gateway_watch_streams",
        "oms_gateway_watch_pollers",
        "oms_gateway_watch_polls_total",
        "oms_gateway_calls_in_flight",
        "oms_gateway_shed_total",
    ] {
        assert!(types.contains(&family), "no {family} in {types:?}");
    }
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn readyz_follows_grpc_health_while_healthz_stays_up() {
    let mut config = common::test_config();
    config.server.drain_delay = Duration::from_secs(2);
    let gateway = common::start_with(config).await;
    assert_eq!(admin_get(&gateway, "/readyz", None).await.0, 200);
    assert_eq!(admin_get(&gateway, "/healthz", None).await.0, 200);

    // Draining: health turns NOT_SERVING at once, the listeners still answer.
    let addr = gateway.gateway.admin_addr().expect("an admin listener");
    let TestGateway {
        gateway: running,
        channel,
    } = gateway;
    let stopping = tokio::spawn(running.shutdown());
    let get = |path: &'static str| async move {
        reqwest::get(format!("http://{addr}{path}"))
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    common::eventually(Duration::from_secs(2), "/readyz to say 503", async || {
        get("/readyz").await == 503
    })
    .await;
    let serving = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health answers while draining")
        .into_inner()
        .status;
    assert_eq!(serving, tonic_health::ServingStatus::NotServing as i32);
    assert_eq!(get("/healthz").await, 200, "the process is up");
    stopping.await.expect("shutdown");
    assert_eq!(
        get("/healthz").await,
        0,
        "the admin listener stopped with the gateway"
    );
}

#[tokio::test]
async fn admin_listen_none_starts_no_admin_listener() {
    let mut config = common::test_config();
    config.admin.listen = oms_gateway::config::AdminListen::Off;
    let gateway = common::start_with(config).await;
    assert!(gateway.gateway.admin_addr().is_none());
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn a_retry_the_budget_refuses_is_counted() {
    let mut config = common::test_config();
    config.upstream.retry_budget_ratio = 0.0;
    config.upstream.retry_budget_floor = 0.0;
    let gateway = common::start_with(config).await;
    let location = common::first_location(&gateway.channel).await;
    gateway
        .sandbox()
        .inject(Fault::status(Some("POST"), "/cash-ins", 1, 503));
    let status = gateway
        .cash_ins()
        .create_cash_in(common::create_request(&location, "cst_metrics6"))
        .await
        .expect_err("no budget for the retry");
    assert_eq!(status.code(), Code::Unavailable);
    let text = scrape(&gateway).await;
    assert_eq!(
        value(&text, "oms_upstream_retry_budget_exhausted_total", &[]),
        1.0,
        "{text}"
    );
    assert_eq!(value(&text, "oms_upstream_retries_total", &[]), 0.0);
    assert_eq!(handled(&text, "CreateCashIn", "Unavailable"), 1.0);
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn refused_credentials_count_as_rejected_exchanges_and_keep_readyz_at_503() {
    let sandbox = common::start_remote_sandbox("the-right-secret").await;
    let config = common::remote_config(
        &sandbox.base_url(),
        common::REMOTE_API_KEY,
        "a-wrong-secret",
    );
    let gateway = common::start_unchecked(config).await;
    common::eventually(Duration::from_secs(5), "a rejected exchange", async || {
        value(
            &scrape(&gateway).await,
            "oms_upstream_token_exchanges_total",
            &[("outcome", "rejected")],
        ) >= 1.0
    })
    .await;
    let (status, _, body) = admin_get(&gateway, "/readyz", None).await;
    assert_eq!(status, 503);
    assert_eq!(
        body.lines().collect::<Vec<_>>(),
        [
            "NOT_SERVING",
            "deliveries: GET /transactions/{id} not probed yet (no webhook endpoint: without that read, no delivery is followed)",
        ]
    );
    assert_eq!(admin_get(&gateway, "/healthz", None).await.0, 200);
    gateway.gateway.shutdown().await;
    sandbox.shutdown().await;
}
