//! The one support module of the gateway's black-box tests (`benches/load.rs` borrows it too).
//! It offers:
//! - a gateway started in-process on a loopback port against its embedded sandbox ([`start`],
//!   [`start_with`], [`start_unchecked`]), or against a separately started sandbox as a
//!   "remote" OMS ([`start_remote_sandbox`], [`remote_config`]), with real tonic clients
//!   ([`TestGateway`], [`connect`]);
//! - valid requests ([`guide_point`], [`first_location`], [`create_request`],
//!   [`create_cash_in`]) and the sandbox fault that answers in OMS's place ([`respond`]);
//! - reading a status the way a client would: its `ErrorInfo`, its BadRequest violations, its
//!   retry hint ([`error_info`], [`error_infos`], [`violations`], [`retry_delay`]);
//! - the sandbox journal without token exchanges ([`api_requests`]), query strings
//!   ([`query_pairs`]), a loopback port nothing listens on ([`free_port`]), and [`ms`];
//! - the one way to wait for a condition without sleeping blindly ([`eventually`]);
//! - [`tls`]: a throwaway CA, client certificates and TLS/mTLS channels to the gateway;
//! - [`logs`]: this test binary's log lines, captured in memory;
//! - [`sandbox_rest`]: the sandbox's REST API with a token, behind the gateway's back.
//!
//! Each test binary declares it once (`mod common;`) and uses a part of it.
#![allow(dead_code)]

use oms_gateway::config::{GatewaySettings, Secret};
use oms_gateway::proto::v1 as pb;
use oms_gateway::server::{self, RunningGateway};
use oms_sandbox::{
    self as sandbox, Fault, FaultAction, RecordedRequest, SandboxHandle, SandboxSettings,
};
use pb::cash_in_service_client::CashInServiceClient;
use pb::cash_location_service_client::CashLocationServiceClient;
use pb::sandbox_service_client::SandboxServiceClient;
use std::net::SocketAddr;
use std::time::Duration;
use tonic::Status;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use tonic_types::{ErrorDetail, ErrorInfo, StatusExt};

/// A running gateway and a channel to it.
pub struct TestGateway {
    pub gateway: RunningGateway,
    pub channel: Channel,
}

impl TestGateway {
    pub fn cash_ins(&self) -> CashInServiceClient<Channel> {
        CashInServiceClient::new(self.channel.clone())
    }
    /// How many `GET /cash-ins/{id}` (reads of one cash-in) the embedded sandbox has received.
    pub fn gets(&self, id: &str) -> usize {
        self.sandbox().count("GET", &format!("/cash-ins/{id}"))
    }

    pub fn locations(&self) -> CashLocationServiceClient<Channel> {
        CashLocationServiceClient::new(self.channel.clone())
    }
    pub fn simulator(&self) -> SandboxServiceClient<Channel> {
        SandboxServiceClient::new(self.channel.clone())
    }
    pub fn health(&self) -> HealthClient<Channel> {
        HealthClient::new(self.channel.clone())
    }
    /// The embedded sandbox (panics if the gateway runs against a remote upstream).
    pub fn sandbox(&self) -> &SandboxHandle {
        self.gateway
            .sandbox()
            .expect("gateway started with its embedded sandbox")
    }
    /// GetCashIn, which must succeed.
    pub async fn get(&self, id: &str) -> pb::CashIn {
        get_cash_in(&self.channel, id).await
    }

    /// SandboxService.ExpireCashIn, which must succeed.
    pub async fn expire(&self, id: &str) -> pb::CashIn {
        self.simulator()
            .expire_cash_in(pb::ExpireCashInRequest {
                cash_in_id: id.to_owned(),
            })
            .await
            .expect("ExpireCashIn")
            .into_inner()
            .cash_in
            .expect("cash_in")
    }

    /// The health status of `service` ("" for the server), as a tonic client sees it.
    pub async fn health_status(&self, service: &str) -> i32 {
        health_check(&self.channel, service)
            .await
            .expect("health check")
    }
}

/// GetCashIn through `channel` (any gateway or replica), which must succeed.
pub async fn get_cash_in(channel: &Channel, id: &str) -> pb::CashIn {
    CashInServiceClient::new(channel.clone())
        .get_cash_in(pb::GetCashInRequest {
            cash_in_id: id.to_owned(),
        })
        .await
        .expect("GetCashIn")
        .into_inner()
        .cash_in
        .expect("cash_in")
}

/// `GET http://127.0.0.1:{port}{path}` of a built binary's admin listener, bounded at 5 s: the
/// status and the body, or `(0, "")` while nothing answers there.
pub async fn admin_text(port: u16, path: &str) -> (u16, String) {
    let url = format!("http://127.0.0.1:{port}{path}");
    let answer = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    match answer {
        Ok(response) => (
            response.status().as_u16(),
            response.text().await.unwrap_or_default(),
        ),
        Err(_) => (0, String::new()),
    }
}

/// Waits (at most `limit`) until a built binary's `/readyz` on admin port `port` says 200.
pub async fn await_ready(port: u16, limit: Duration) {
    eventually(limit, "/readyz to say 200", async || {
        admin_text(port, "/readyz").await.0 == 200
    })
    .await;
}

/// A child process (the built binary, a server) killed when the test ends, however it ends.
pub struct Running(pub std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// grpc.health.v1 `Check` of `service` ("" for the server) over `channel`, bounded at 2 s: the
/// status, or the error a client sees. Every test's health probe.
pub async fn health_check(channel: &Channel, service: &str) -> Result<i32, tonic::Status> {
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: service.to_owned(),
    });
    request.set_timeout(Duration::from_secs(2));
    HealthClient::new(channel.clone())
        .check(request)
        .await
        .map(|answer| answer.into_inner().status)
}

/// A config for tests: ephemeral port, embedded sandbox, short timeouts.
pub fn test_config() -> GatewaySettings {
    let mut config = GatewaySettings::for_tests();
    config.upstream.request_timeout = Duration::from_secs(5);
    config.upstream.default_deadline = Duration::from_secs(10);
    config
}

/// Starts a gateway with the test config.
pub async fn start() -> TestGateway {
    start_with(test_config()).await
}

/// Starts a gateway and connects to it; does not wait for health.
pub async fn start_unchecked(config: GatewaySettings) -> TestGateway {
    let gateway = server::start(config).await.expect("gateway starts");
    let channel = connect(gateway.addr()).await;
    TestGateway { gateway, channel }
}

/// A new plaintext connection to the gateway listening at `addr`, which must succeed.
pub async fn connect(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect to the gateway")
}

/// Starts a gateway and waits (at most 10 s) until its health is SERVING.
pub async fn start_with(config: GatewaySettings) -> TestGateway {
    let gateway = start_unchecked(config).await;
    let serving = tonic_health::ServingStatus::Serving as i32;
    eventually(
        Duration::from_secs(10),
        "the gateway to be SERVING",
        async || gateway.health_status("").await == serving,
    )
    .await;
    gateway
}

/// A location search around the cash-in guide's example point.
pub fn guide_point() -> pb::ListCashLocationsRequest {
    pb::ListCashLocationsRequest {
        provider: "greendot".into(),
        latitude: Some(38.495133),
        longitude: Some(-121.505336),
        flow: None,
    }
}

/// The first cash location near the guide's example point, over any channel to a gateway.
pub async fn first_location(channel: &Channel) -> pb::CashLocation {
    CashLocationServiceClient::new(channel.clone())
        .list_cash_locations(guide_point())
        .await
        .expect("ListCashLocations")
        .into_inner()
        .cash_locations
        .into_iter()
        .next()
        .expect("at least one location")
}

/// A loopback port nothing listens on (bound, then released): for a server to take, or for a
/// client to find nothing at (`http://127.0.0.1:{free_port()}`).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A valid create request: the guide's example ($200, developer fees 1% + $1.00).
pub fn create_request(location: &pb::CashLocation, customer: &str) -> pb::CreateCashInRequest {
    use pb::create_cash_in_request::{
        Cash, Destination, DeveloperFee, Source, Wallet, wallet::Kind,
    };
    pb::CreateCashInRequest {
        customer_id: customer.to_owned(),
        source: Some(Source {
            asset: "usd".into(),
            indicated_amount: Some("200.00".into()),
        }),
        destination: Some(Destination {
            asset: "usdc".into(),
            network: "polygon".into(),
            wallet: Some(Wallet {
                kind: Some(Kind::Wallet("wlt_01H9Xb".into())),
            }),
        }),
        cash: Some(Cash {
            cash_location_id: location.id.clone(),
            cash_location_reference: location.loc_reference.clone(),
        }),
        sponsor_gas: Some(false),
        developer_fees: vec![
            DeveloperFee {
                percentage: Some("0.01".into()),
                wallet: Some("wlt_01H9Xf".into()),
                ..Default::default()
            },
            DeveloperFee {
                flat_fee: Some("1.00".into()),
                wallet: Some("wlt_01H9Xf".into()),
                ..Default::default()
            },
        ],
        metadata: [("order_id".to_owned(), "ord_789".to_owned())].into(),
        // Required on every create; unique, so each request is a new cash-in.
        idempotency_key: format!("test-{}", uuid::Uuid::new_v4()),
    }
}

/// Creates a cash-in for `customer` and returns it.
pub async fn create_cash_in(gateway: &TestGateway, customer: &str) -> pb::CashIn {
    let location = first_location(&gateway.channel).await;
    gateway
        .cash_ins()
        .create_cash_in(create_request(&location, customer))
        .await
        .expect("CreateCashIn")
        .into_inner()
        .cash_in
        .expect("cash_in")
}

/// The API key of sandboxes started by [`start_remote_sandbox`].
pub const REMOTE_API_KEY: &str = "sk_sdbx_remote_tests";

/// Each developer fee's (percentage, flat fee, amount), in order: which form it has and what it
/// came to.
pub fn fee_forms(cash_in: &pb::CashIn) -> Vec<(Option<&str>, Option<&str>, Option<&str>)> {
    cash_in
        .developer_fees
        .iter()
        .map(|f| {
            (
                f.percentage.as_deref(),
                f.flat_fee.as_deref(),
                f.amount.as_deref(),
            )
        })
        .collect()
}

/// The status's `ErrorInfo` details, however many it has.
pub fn error_infos(status: &Status) -> Vec<ErrorInfo> {
    status
        .get_error_details_vec()
        .into_iter()
        .filter_map(|detail| match detail {
            ErrorDetail::ErrorInfo(info) => Some(info),
            _ => None,
        })
        .collect()
}

/// The status's one `ErrorInfo`; fails the test if there is none or more than one.
pub fn error_info(status: &Status) -> ErrorInfo {
    let infos = error_infos(status);
    assert_eq!(
        infos.len(),
        1,
        "exactly one ErrorInfo expected in {status:?}"
    );
    infos.into_iter().next().expect("one ErrorInfo")
}

/// The `(field, description)` pairs of the status's BadRequest, in order (empty without one).
pub fn violations(status: &Status) -> Vec<(String, String)> {
    status
        .get_error_details()
        .bad_request()
        .map(|bad| {
            bad.field_violations
                .iter()
                .map(|v| (v.field.clone(), v.description.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// The fields of the status's BadRequest violations, in order.
pub fn violation_fields(status: &Status) -> Vec<String> {
    violations(status)
        .into_iter()
        .map(|(field, _)| field)
        .collect()
}

/// The status's RetryInfo delay, if it has a RetryInfo.
pub fn retry_delay(status: &Status) -> Option<Duration> {
    status
        .get_error_details()
        .retry_info()
        .map(|info| info.retry_delay.unwrap_or_default())
}

/// Starts a sandbox of its own (not embedded in a gateway) that accepts [`REMOTE_API_KEY`] with
/// `secret`.
pub async fn start_remote_sandbox(secret: &str) -> SandboxHandle {
    sandbox::start(SandboxSettings {
        api_key: REMOTE_API_KEY.to_owned(),
        api_secret: secret.to_owned(),
        ..SandboxSettings::default()
    })
    .await
    .expect("sandbox starts")
}

/// The test config pointed at `base_url` as a remote OMS with these credentials.
pub fn remote_config(base_url: &str, api_key: &str, api_secret: &str) -> GatewaySettings {
    let mut config = test_config();
    config.oms_base_url = Some(base_url.to_owned());
    config.oms_api_key = Some(Secret::new(api_key));
    config.oms_api_secret = Some(Secret::new(api_secret));
    config
}

/// The journal without the token exchanges: the requests the RPCs caused.
pub fn api_requests(sandbox: &SandboxHandle) -> Vec<RecordedRequest> {
    sandbox
        .journal()
        .into_iter()
        .filter(|r| r.path != "/auth/token")
        .collect()
}

/// Polls `condition` every 10 ms until it holds; fails the test after `limit`. The one way the
/// tests wait for something to happen.
pub async fn eventually(limit: Duration, what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The `name=value` pairs of a raw query string, percent-decoded.
pub fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    let url =
        reqwest::Url::parse(&format!("http://x/?{}", query.unwrap_or(""))).expect("query parses");
    url.query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// `n` milliseconds.
pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A sandbox fault: the next `times` requests `method path_prefix…` are answered `status` with
/// `body` and `headers`.
pub fn respond(
    method: &str,
    path_prefix: &str,
    times: usize,
    status: u16,
    body: impl Into<String>,
    headers: &[(&str, &str)],
) -> Fault {
    Fault {
        method: Some(method.into()),
        path_prefix: path_prefix.into(),
        times,
        action: FaultAction::Respond {
            status,
            body: body.into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        },
    }
}

/// TLS and mTLS to the gateway's own listener (a throwaway CA, client certificates, channels).
pub mod tls;

/// This test binary's log lines, captured in memory by one process-wide subscriber.
pub mod logs;
pub mod prometheus;
pub mod sandbox_rest;

/// One gRPC answer as it travels: the response headers and, unless the answer was
/// trailers-only, the trailers. The status is in whichever carries `grpc-status`.
#[derive(Debug)]
pub struct RawAnswer {
    pub headers: http::HeaderMap,
    pub trailers: Option<http::HeaderMap>,
}

impl RawAnswer {
    /// The headers that carry the status (`grpc-status`, `grpc-message`, details, metadata).
    pub fn status_headers(&self) -> &http::HeaderMap {
        match &self.trailers {
            Some(trailers) if trailers.contains_key("grpc-status") => trailers,
            _ => &self.headers,
        }
    }

    /// `grpc-status` as a code.
    pub fn code(&self) -> tonic::Code {
        let value = self.status_headers()["grpc-status"].as_bytes();
        tonic::Code::from_bytes(value)
    }

    /// The bytes `grpc-message` and `grpc-status-details-bin` take as sent (percent-encoded and
    /// base64): the size of the status itself.
    pub fn status_bytes(&self) -> usize {
        let headers = self.status_headers();
        ["grpc-message", "grpc-status-details-bin"]
            .iter()
            .filter_map(|name| headers.get(*name))
            .map(|value| value.len())
            .sum()
    }

    /// The bytes of every header of the status's block, names and values.
    pub fn block_bytes(&self) -> usize {
        self.status_headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len())
            .sum()
    }

    /// The status as a tonic client decodes it.
    pub fn status(&self) -> Status {
        Status::from_header_map(self.status_headers()).expect("a grpc-status")
    }
}

/// Calls `path` (`/package.Service/Method`) over `channel` with `body` as the request's HTTP/2
/// body (framed by the caller: see [`grpc_frame`]), and returns the answer as it travelled,
/// headers and trailers, without a gRPC client decoding (or refusing) it.
pub async fn raw_call<B>(channel: &Channel, path: &str, body: B) -> RawAnswer
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    raw_call_with(channel, path, &[], body).await
}

/// [`raw_call`] with extra request headers (`grpc-timeout`, metadata).
pub async fn raw_call_with<B>(
    channel: &Channel,
    path: &str,
    headers: &[(&str, &str)],
    body: B,
) -> RawAnswer
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let mut request = http::Request::builder()
        .method("POST")
        .uri(path)
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(tonic::body::Body::new(body))
        .expect("a request");
    let response = channel
        .clone()
        .oneshot(request)
        .await
        .expect("an HTTP/2 answer");
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.expect("the answer's body");
    RawAnswer {
        headers: parts.headers,
        trailers: collected.trailers().cloned(),
    }
}

/// `message` framed as one gRPC message (uncompressed, its length first).
pub fn grpc_frame(message: &[u8]) -> bytes::Bytes {
    let mut framed = Vec::with_capacity(message.len() + 5);
    framed.push(0);
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    framed.into()
}

/// Calls `path` with `message` encoded as its one request message (see [`raw_call`]).
pub async fn raw_unary(channel: &Channel, path: &str, message: &impl prost::Message) -> RawAnswer {
    let body = http_body_util::Full::new(grpc_frame(&message.encode_to_vec()));
    raw_call(channel, path, body).await
}
