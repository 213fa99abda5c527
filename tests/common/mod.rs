//! Shared test harness: start the gateway in-process on a loopback port (against its embedded
//! sandbox unless told otherwise), connect real tonic clients, and build valid requests.
#![allow(dead_code)]

use oms_gateway::config::GatewaySettings;
use oms_gateway::proto::v1 as pb;
use oms_gateway::server::{self, RunningGateway};
use oms_sandbox::SandboxHandle;
use pb::cash_in_service_client::CashInServiceClient;
use pb::cash_location_service_client::CashLocationServiceClient;
use pb::sandbox_service_client::SandboxServiceClient;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// A running gateway and a channel to it.
pub struct TestGateway {
    pub gateway: RunningGateway,
    pub channel: Channel,
}

impl TestGateway {
    pub fn cash_ins(&self) -> CashInServiceClient<Channel> {
        CashInServiceClient::new(self.channel.clone())
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
        self.cash_ins()
            .get_cash_in(pb::GetCashInRequest {
                cash_in_id: id.to_owned(),
            })
            .await
            .expect("GetCashIn")
            .into_inner()
            .cash_in
            .expect("cash_in")
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
        self.health()
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .expect("health check")
            .into_inner()
            .status
    }
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
    let channel = Endpoint::from_shared(format!("http://{}", gateway.addr()))
        .expect("endpoint")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect to the gateway");
    TestGateway { gateway, channel }
}

/// Starts a gateway and waits (at most 10 s) until its health is SERVING.
pub async fn start_with(config: GatewaySettings) -> TestGateway {
    let gateway = start_unchecked(config).await;
    let serving = tonic_health::ServingStatus::Serving as i32;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while gateway.health_status("").await != serving {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gateway never became SERVING"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
pub async fn first_location(channel: Channel) -> pb::CashLocation {
    CashLocationServiceClient::new(channel)
        .list_cash_locations(guide_point())
        .await
        .expect("ListCashLocations")
        .into_inner()
        .cash_locations
        .into_iter()
        .next()
        .expect("at least one location")
}

/// The first cash location near the guide's example point.
pub async fn a_location(gateway: &TestGateway) -> pb::CashLocation {
    first_location(gateway.channel.clone()).await
}

/// A loopback port nothing listens on (for a server to take, or to find nothing at).
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
    let location = a_location(gateway).await;
    gateway
        .cash_ins()
        .create_cash_in(create_request(&location, customer))
        .await
        .expect("CreateCashIn")
        .into_inner()
        .cash_in
        .expect("cash_in")
}
