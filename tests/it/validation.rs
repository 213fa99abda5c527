//! The gateway's own validation: INVALID_ARGUMENT with a BadRequest that lists every problem of
//! the request at once, by proto field path, and no upstream call (the sandbox's journal holds
//! nothing but the gateway's token exchange).

use crate::common;

use oms_gateway::proto::v1 as pb;
use pb::create_cash_in_request::{Cash, Destination, DeveloperFee, Source, Wallet, wallet::Kind};
use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Status};

/// Asserts a validation failure decided by the gateway, with nothing sent upstream; returns
/// the violated fields.
fn rejected(gateway: &common::TestGateway, status: &Status) -> Vec<String> {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let info = common::error_info(status);
    assert_eq!(info.domain, "oms-gateway");
    assert_eq!(info.reason, "INVALID_REQUEST_FIELDS");
    let fields = common::violation_fields(status);
    assert_eq!(
        info.metadata.get("violations"),
        Some(&fields.len().to_string())
    );
    for field in &fields {
        assert!(
            status.message().contains(field.as_str()),
            "{field} in {}",
            status.message()
        );
    }
    let sent = common::api_requests(gateway.sandbox());
    assert!(sent.is_empty(), "no upstream call: {sent:?}");
    fields
}

async fn create_error(
    gateway: &common::TestGateway,
    request: impl tonic::IntoRequest<pb::CreateCashInRequest>,
) -> Status {
    gateway
        .cash_ins()
        .create_cash_in(request)
        .await
        .expect_err("CreateCashIn is refused")
}

async fn locations_error(
    gateway: &common::TestGateway,
    latitude: Option<f64>,
    longitude: Option<f64>,
) -> Status {
    gateway
        .locations()
        .list_cash_locations(pb::ListCashLocationsRequest {
            provider: "greendot".into(),
            latitude,
            longitude,
            flow: None,
        })
        .await
        .expect_err("ListCashLocations is refused")
}

/// A syntactically valid location, without asking the upstream for one.
fn a_location() -> pb::CashLocation {
    pb::CashLocation {
        id: "loc_01H9XC".into(),
        loc_reference: "R1JFRU5ET1QtMQ==".into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn an_empty_create_request_lists_every_missing_part() {
    let gateway = common::start().await;
    let status = create_error(&gateway, pb::CreateCashInRequest::default()).await;
    assert_eq!(
        rejected(&gateway, &status),
        [
            "idempotency_key",
            "customer_id",
            "source",
            "destination",
            "cash"
        ]
    );
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn a_create_request_with_many_problems_lists_every_one() {
    let gateway = common::start().await;
    let request = pb::CreateCashInRequest {
        customer_id: "cus_123".into(),
        source: Some(Source {
            asset: "usd".into(),
            indicated_amount: Some("5.001".into()),
        }),
        destination: Some(Destination {
            asset: "usdc".into(),
            network: "polygon".into(),
            wallet: Some(Wallet {
                kind: Some(Kind::BlockchainAddress("0x12345".into())),
            }),
        }),
        cash: Some(Cash {
            cash_location_id: "loc_01H9XC".into(),
            cash_location_reference: String::new(),
        }),
        sponsor_gas: None,
        developer_fees: vec![
            DeveloperFee {
                flat_fee: Some("1e3".into()),
                ..Default::default()
            },
            DeveloperFee {
                flat_fee: Some("1.005".into()),
                wallet: Some("wallet_1".into()),
                ..Default::default()
            },
            DeveloperFee {
                percentage: Some("0.01".into()),
                payout_asset: Some("btc".into()),
                ..Default::default()
            },
        ],
        metadata: (0..51)
            .map(|i| (format!("key{i}"), "v".to_owned()))
            .collect(),
        idempotency_key: "k".repeat(256),
    };
    let status = create_error(&gateway, request).await;
    assert_eq!(
        rejected(&gateway, &status),
        [
            "customer_id",
            "source.indicated_amount",
            "destination.wallet.blockchain_address",
            "cash.cash_location_reference",
            "developer_fees[0].flat_fee",
            "developer_fees[1].flat_fee",
            "developer_fees[1].wallet",
            "developer_fees[2].payout_asset",
            "metadata",
            "idempotency_key",
        ]
    );
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn amounts_must_be_plain_decimals_with_two_fraction_digits() {
    let gateway = common::start().await;
    for amount in [
        "1e3",
        "200.001",
        "-20.00",
        "200.",
        "",
        "NaN",
        "1000000000000.00",
    ] {
        let mut request = common::create_request(&a_location(), "cst_amounts");
        request.source.as_mut().expect("source").indicated_amount = Some(amount.into());
        let status = create_error(&gateway, request).await;
        assert_eq!(
            rejected(&gateway, &status),
            ["source.indicated_amount"],
            "{amount:?}"
        );
        let (_, description) = &common::violations(&status)[0];
        assert!(!description.is_empty());
    }
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn wallets_and_addresses_need_their_shapes() {
    let gateway = common::start().await;
    let cases = [
        (Kind::Wallet("wlt_".into()), "destination.wallet.wallet"),
        (Kind::Wallet("acct_1".into()), "destination.wallet.wallet"),
        (
            Kind::BlockchainAddress(format!("0x{}", "g".repeat(40))),
            "destination.wallet.blockchain_address",
        ),
        (
            Kind::ExternalAccount("addr_1".into()),
            "destination.wallet.external_account",
        ),
    ];
    for (kind, field) in cases {
        let mut request = common::create_request(&a_location(), "cst_wallets");
        request.destination.as_mut().expect("destination").wallet = Some(Wallet {
            kind: Some(kind.clone()),
        });
        let status = create_error(&gateway, request).await;
        assert_eq!(rejected(&gateway, &status), [field], "{kind:?}");
    }
    let mut request = common::create_request(&a_location(), "cst_wallets");
    request.destination.as_mut().expect("destination").wallet = None;
    let status = create_error(&gateway, request).await;
    assert_eq!(rejected(&gateway, &status), ["destination.wallet"]);
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn a_non_ascii_idempotency_key_is_refused() {
    let gateway = common::start().await;
    let mut request = common::create_request(&a_location(), "cst_keys");
    request.idempotency_key = "clé-1".into();
    let status = create_error(&gateway, request).await;
    assert_eq!(rejected(&gateway, &status), ["idempotency_key"]);
    assert!(common::violations(&status)[0].1.contains("ASCII"));
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn a_bad_idempotency_key_in_metadata_is_refused() {
    let gateway = common::start().await;
    let mut request = Request::new(common::create_request(&a_location(), "cst_keys"));
    request.get_mut().idempotency_key.clear();
    let long = "m".repeat(256);
    request.metadata_mut().insert(
        "idempotency-key",
        MetadataValue::try_from(long.as_str()).expect("ASCII"),
    );
    let status = create_error(&gateway, request).await;
    assert_eq!(rejected(&gateway, &status), ["idempotency-key (metadata)"]);

    let mut request = Request::new(common::create_request(&a_location(), "cst_keys"));
    request.get_mut().idempotency_key.clear();
    request.metadata_mut().insert(
        "idempotency-key",
        MetadataValue::try_from(&b"cl\xc3\xa9"[..]).expect("obs-text is a valid header value"),
    );
    let status = create_error(&gateway, request).await;
    assert_eq!(rejected(&gateway, &status), ["idempotency-key (metadata)"]);
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn a_metadata_key_or_value_too_long_is_refused() {
    let gateway = common::start().await;
    let mut request = common::create_request(&a_location(), "cst_meta");
    request.metadata = [
        ("k".repeat(41), "v".to_owned()),
        ("fine".to_owned(), "v".repeat(501)),
    ]
    .into();
    let status = create_error(&gateway, request).await;
    let fields = rejected(&gateway, &status);
    assert_eq!(fields.len(), 2, "{fields:?}");
    assert!(
        fields.iter().all(|f| f.starts_with("metadata[")),
        "{fields:?}"
    );
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn coordinates_must_be_finite_and_in_range() {
    let gateway = common::start().await;
    let cases = [
        (Some(f64::NAN), Some(-121.5), vec!["latitude"]),
        (Some(f64::INFINITY), Some(-121.5), vec!["latitude"]),
        (Some(91.0), Some(-121.5), vec!["latitude"]),
        (Some(-90.5), Some(-121.5), vec!["latitude"]),
        (Some(38.5), Some(181.0), vec!["longitude"]),
        (Some(38.5), Some(f64::NEG_INFINITY), vec!["longitude"]),
        (None, Some(-121.5), vec!["latitude"]),
        (Some(38.5), None, vec!["longitude"]),
        (None, None, vec!["latitude", "longitude"]),
        (Some(f64::NAN), Some(181.0), vec!["latitude", "longitude"]),
    ];
    for (latitude, longitude, expected) in cases {
        let status = locations_error(&gateway, latitude, longitude).await;
        assert_eq!(
            rejected(&gateway, &status),
            expected,
            "latitude {latitude:?}, longitude {longitude:?}"
        );
    }
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn a_missing_provider_is_refused() {
    let gateway = common::start().await;
    let status = gateway
        .locations()
        .list_cash_locations(pb::ListCashLocationsRequest {
            provider: String::new(),
            latitude: Some(38.5),
            longitude: Some(-121.5),
            flow: Some("cash in!".into()),
        })
        .await
        .expect_err("no provider");
    assert_eq!(rejected(&gateway, &status), ["provider", "flow"]);
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn a_negative_page_size_is_refused() {
    let gateway = common::start().await;
    let status = gateway
        .cash_ins()
        .list_cash_ins(pb::ListCashInsRequest {
            page_size: -1,
            ..Default::default()
        })
        .await
        .expect_err("page_size -1");
    assert_eq!(rejected(&gateway, &status), ["page_size"]);
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn list_filters_are_checked_together() {
    let gateway = common::start().await;
    let status = gateway
        .cash_ins()
        .list_cash_ins(pb::ListCashInsRequest {
            customer_id: "ci_notacustomer".into(),
            status: 42,
            created_after: Some(prost_types::Timestamp {
                seconds: 200,
                nanos: 0,
            }),
            created_before: Some(prost_types::Timestamp {
                seconds: 100,
                nanos: 0,
            }),
            page_size: -5,
            page_token: "garbage!".into(),
        })
        .await
        .expect_err("everything is wrong");
    assert_eq!(
        rejected(&gateway, &status),
        [
            "customer_id",
            "status",
            "created_before",
            "page_size",
            "page_token"
        ]
    );
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn cash_in_ids_need_the_ci_prefix() {
    let gateway = common::start().await;
    for id in ["", "ci_", "cst_123", "ci_a/b", "ci_../../auth/token"] {
        let status = gateway
            .cash_ins()
            .get_cash_in(pb::GetCashInRequest {
                cash_in_id: id.into(),
            })
            .await
            .expect_err("a bad id");
        assert_eq!(rejected(&gateway, &status), ["cash_in_id"], "{id:?}");
        let status = gateway
            .cash_ins()
            .refresh_cash_in(pb::RefreshCashInRequest {
                cash_in_id: id.into(),
                idempotency_key: "refresh-bad-id".into(),
            })
            .await
            .expect_err("a bad id");
        assert_eq!(rejected(&gateway, &status), ["cash_in_id"], "{id:?}");
    }
    gateway.gateway.shutdown().await;
}

// Before: each of these values came back in the status (`…; got "987.65"`), and in the debug
// line of the refusal. A violation quotes only ids.
#[tokio::test]
async fn values_other_than_ids_are_not_echoed() {
    let gateway = common::start().await;
    let mut request = common::create_request(&a_location(), "cst_echo");
    request.source = Some(Source {
        asset: "usdq7".into(),
        indicated_amount: Some("987.654".into()),
    });
    let destination = request.destination.as_mut().expect("destination");
    destination.network = "net!w0rk".into();
    request.developer_fees = vec![DeveloperFee {
        percentage: Some("7.654321".into()),
        flat_fee: Some("876.543".into()),
        wallet: Some("wlt_fine".into()),
        payout_asset: Some("btcq7".into()),
    }];
    let create = create_error(&gateway, request).await;
    let list = gateway
        .cash_ins()
        .list_cash_ins(pb::ListCashInsRequest {
            status: 4242,
            page_size: -4343,
            ..Default::default()
        })
        .await
        .expect_err("refused");
    let locations = locations_error(&gateway, Some(91.987), Some(-181.123)).await;
    for status in [&create, &list, &locations] {
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        let shown = format!("{} {:?}", status.message(), common::violations(status));
        for value in [
            "usdq7", "987.65", "net!w0rk", "7.654321", "876.54", "btcq7", "4242", "4343", "91.987",
            "181.123",
        ] {
            assert!(!shown.contains(value), "{value} is echoed: {shown}");
        }
    }
    gateway.gateway.shutdown().await;
}

/// A cash-in OMS might answer a create with; the gateway only has to decode it.
const ACCEPTED: &str = r#"{"id":"ci_limits1","object":"cashIn","status":"pending","customerId":"cst_limits","source":{"asset":"usd","indicatedAmount":"2500.00"},"destination":{"asset":"usdc","network":"polygon","wallet":{"id":"wlt_1"}},"createdAt":"2026-03-16T18:30:00Z"}"#;

// Before: the gateway refused this itself (amounts outside 20.00–500.00, more than 10 fees, a
// flat fee over 500, ids over 64 characters): limits no OMS page states. Whether a retailer
// takes $2,500 is OMS's to say; here OMS (a fixed answer) accepts, and so does the gateway.
#[tokio::test]
async fn business_limits_are_left_to_oms() {
    let gateway = common::start().await;
    gateway
        .sandbox()
        .inject(common::respond("POST", "/cash-ins", 1, 201, ACCEPTED, &[]));
    let long = |prefix: &str| format!("{prefix}{}", "x".repeat(200));
    let mut request = common::create_request(&a_location(), &long("cst_"));
    request.source.as_mut().expect("source").indicated_amount = Some("2500.00".into());
    request.developer_fees = vec![
        DeveloperFee {
            flat_fee: Some("750.00".into()),
            wallet: Some(long("wlt_")),
            ..Default::default()
        };
        11
    ];
    let created = gateway
        .cash_ins()
        .create_cash_in(request)
        .await
        .expect("the gateway leaves the limits to OMS")
        .into_inner();
    assert_eq!(created.cash_in.expect("cash_in").id, "ci_limits1");
    let sent = common::api_requests(gateway.sandbox());
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(
        (sent[0].method.as_str(), sent[0].path.as_str()),
        ("POST", "/cash-ins")
    );
    gateway.gateway.shutdown().await;
}

// Before: INVALID_ARGUMENT from the gateway (INVALID_REQUEST_FIELDS), OMS never asked. Now the
// request goes up, and OMS's own 400 (the sandbox's provider limits) comes back mapped as every
// upstream 400 is: INVALID_ARGUMENT in OMS's domain, with its HTTP status.
#[tokio::test]
async fn an_amount_oms_refuses_comes_back_as_its_own_answer() {
    let gateway = common::start().await;
    let location = common::first_location(&gateway.channel).await;
    let mut request = common::create_request(&location, "cst_large");
    // Over the sandbox's provider's max_transaction (500.00).
    request.source.as_mut().expect("source").indicated_amount = Some("500.01".into());
    let status = create_error(&gateway, request).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let info = common::error_info(&status);
    assert_eq!(info.domain, "oms.polygon.technology", "{info:?}");
    assert_eq!(
        info.metadata.get("httpStatus").map(String::as_str),
        Some("400")
    );
    let creates = common::api_requests(gateway.sandbox())
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == "/cash-ins")
        .count();
    assert_eq!(creates, 1, "the request reached OMS");
    gateway.gateway.shutdown().await;
}

// Before: the gateway refused a percentage of 1, and any with more than six fraction digits,
// itself (INVALID_REQUEST_FIELDS, OMS never asked): a cap no schema states. A rate is a fraction
// of the amount the fee is deducted from, so above 1 is malformed and stays refused here; up to
// 1, at any precision the gateway's parser holds, OMS decides (the sandbox, standing in for it,
// refuses both with its own 400).
#[tokio::test]
async fn a_percentage_up_to_1_is_left_to_oms_and_above_1_is_refused() {
    let gateway = common::start().await;
    let with_rate = |location: &pb::CashLocation, rate: &str| {
        let mut request = common::create_request(location, "cst_rate");
        request.developer_fees[0].percentage = Some(rate.into());
        request.idempotency_key = format!("rate-{rate}");
        request
    };
    for rate in ["1.000001", "2"] {
        let status = create_error(&gateway, with_rate(&a_location(), rate)).await;
        // And nothing reached OMS.
        assert_eq!(
            rejected(&gateway, &status),
            ["developer_fees[0].percentage"],
            "{rate}"
        );
    }
    let location = common::first_location(&gateway.channel).await;
    for rate in ["1", "0.000000001"] {
        let status = create_error(&gateway, with_rate(&location, rate)).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{rate}: {status:?}");
        let info = common::error_info(&status);
        assert_eq!(info.domain, "oms.polygon.technology", "{rate}: {info:?}");
    }
    let creates = common::api_requests(gateway.sandbox())
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == "/cash-ins")
        .count();
    assert_eq!(creates, 2, "both went to OMS");
    gateway.gateway.shutdown().await;
}
