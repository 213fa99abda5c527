//! Garbage in, errors out, as tests that print their figures (run
//! with `--nocapture`):
//!
//! (e) a generated corpus of malformed requests — raw protobuf bytes that do not decode (wrong
//! wire types, invalid UTF-8, truncated varints and lengths, bad tags) sent with a raw-bytes
//! codec, and well-typed requests with bad fields (ids, decimals, NaN and infinite coordinates,
//! huge strings, oversize metadata, non-ASCII idempotency keys), crossed with each other — is
//! INVALID_ARGUMENT every time, never INTERNAL, never a panic, and never reaches OMS (the journal
//! holds nothing but the token exchange).
//!
//! (f) an OMS that answers 2xx with malformed, truncated, huge (> 4 MiB) or wrongly typed JSON is
//! INTERNAL with reason UPSTREAM_BAD_RESPONSE every time, never a panic.
//!
//! A panic anywhere in the gateway's tasks (tokio worker threads) is counted by a panic hook.
//!
//! The client side builds a few statuses of its own (a call that never answered within the
//! test's bound); clippy's rule that statuses come from `src/error.rs` is for the gateway.
#![allow(clippy::disallowed_methods)]

use crate::common;

use oms_gateway::proto::v1 as pb;
use oms_sandbox::Fault;
use pb::create_cash_in_request::{self as create, wallet::Kind};
use prost::bytes::{Buf, BufMut};
use std::collections::{BTreeMap, HashMap};
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::Channel;
use tonic::{Request, Status};

// === panics ===

static WORKER_PANICS: AtomicUsize = AtomicUsize::new(0);
static HOOK: Once = Once::new();

/// Counts panics on tokio worker threads (where the gateway's tasks run in a multi-thread test
/// runtime); a test's own assertion failures happen on the test thread and are not counted.
fn count_worker_panics() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current()
                .name()
                .is_some_and(|name| name.starts_with("tokio-runtime-worker"))
            {
                WORKER_PANICS.fetch_add(1, Ordering::SeqCst);
            }
            previous(info);
        }));
    });
}

// === a raw-bytes client ===

/// Sends `Vec<u8>` as the message as is, and reads the answer back as bytes.
#[derive(Debug, Clone, Default)]
struct RawCodec;

#[derive(Debug)]
struct RawEncoder;

#[derive(Debug)]
struct RawDecoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut bytes = vec![0; src.remaining()];
        src.copy_to_slice(&mut bytes);
        Ok(Some(bytes))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

/// Sends `bytes` as the request message of `path`; for a streaming method, reads the first
/// message too. Returns the status the call ended with, if it failed.
async fn raw_call(
    channel: &Channel,
    path: &'static str,
    streaming: bool,
    bytes: Vec<u8>,
) -> Result<(), Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| Status::unknown(format!("channel not ready: {e}")))?;
    let path = http::uri::PathAndQuery::from_static(path);
    let mut request = Request::new(bytes);
    request.set_timeout(Duration::from_secs(5));
    if streaming {
        let mut stream = grpc
            .server_streaming(request, path, RawCodec)
            .await?
            .into_inner();
        stream.message().await.map(|_| ())
    } else {
        grpc.unary(request, path, RawCodec).await.map(|_| ())
    }
}

// === the corpus ===

/// One malformed request.
enum Case {
    Create(Box<pb::CreateCashInRequest>, Option<AsciiMetadataValue>),
    Get(pb::GetCashInRequest),
    Refresh(pb::RefreshCashInRequest, Option<AsciiMetadataValue>),
    List(pb::ListCashInsRequest),
    Locations(pb::ListCashLocationsRequest),
    Watch(pb::WatchCashInRequest),
    Raw {
        path: &'static str,
        streaming: bool,
        bytes: Vec<u8>,
    },
}

type Mutation = (String, Box<dyn Fn(&mut pb::CreateCashInRequest)>);

fn m(label: impl Into<String>, f: impl Fn(&mut pb::CreateCashInRequest) + 'static) -> Mutation {
    (label.into(), Box::new(f))
}

fn valid_create() -> pb::CreateCashInRequest {
    let location = pb::CashLocation {
        id: "loc_rel0123456789".into(),
        loc_reference: "UkVMLUxPQy0x".into(),
        ..Default::default()
    };
    common::create_request(&location, "cst_rele")
}

/// Bad values of one part of CreateCashInRequest, each making the request invalid on its own.
fn create_groups() -> Vec<Vec<Mutation>> {
    // Huge, but two of them crossed stay under the 128 KiB request message bound (past it, a
    // request is RESOURCE_EXHAUSTED before it is decoded: tests/it/limits.rs).
    let huge = "x".repeat(60_000);
    let customers = {
        let huge = huge.clone();
        vec![
            m("customer empty", |r| r.customer_id.clear()),
            m("customer prefix only", |r| r.customer_id = "cst_".into()),
            m("customer wrong prefix", |r| r.customer_id = "ci_123".into()),
            m("customer space", |r| r.customer_id = "cst_a b".into()),
            m("customer non-ASCII", |r| r.customer_id = "cst_é".into()),
            m("customer NUL", |r| r.customer_id = "cst_\0".into()),
            m("customer huge", move |r| {
                r.customer_id = format!("cst_{huge}")
            }),
        ]
    };
    let amounts: Vec<Mutation> = [
        "abc",
        "1e3",
        "-50.00",
        "+50",
        "20.001",
        "1000000000000.00",
        "NaN",
        "inf",
        "",
        " 200",
        "２００",
        "200.",
        ".5",
        "1,000",
        &"9".repeat(60_000),
    ]
    .into_iter()
    .map(|bad| {
        let bad = bad.to_owned();
        let label = format!("amount {:?}", bad.chars().take(12).collect::<String>());
        m(label, move |r| {
            r.source.as_mut().expect("source").indicated_amount = Some(bad.clone())
        })
    })
    .collect();
    let wallet = |kind: Option<Kind>| {
        move |r: &mut pb::CreateCashInRequest| {
            r.destination.as_mut().expect("destination").wallet =
                Some(create::Wallet { kind: kind.clone() })
        }
    };
    let wallets = vec![
        m("wallet absent", |r| {
            r.destination.as_mut().expect("destination").wallet = None
        }),
        m("wallet kind absent", wallet(None)),
        m(
            "wallet wrong prefix",
            wallet(Some(Kind::Wallet("ci_x".into()))),
        ),
        m(
            "address short",
            wallet(Some(Kind::BlockchainAddress("0x123".into()))),
        ),
        m(
            "address not hex",
            wallet(Some(Kind::BlockchainAddress(format!(
                "0x{}",
                "g".repeat(40)
            )))),
        ),
        m(
            "external account wrong prefix",
            wallet(Some(Kind::ExternalAccount("cst_1".into()))),
        ),
    ];
    let cash = vec![
        m("cash absent", |r| r.cash = None),
        m("location prefix only", |r| {
            r.cash.as_mut().expect("cash").cash_location_id = "loc_".into()
        }),
        m("location not an id", |r| {
            r.cash.as_mut().expect("cash").cash_location_id = "x".into()
        }),
        m("reference empty", |r| {
            r.cash
                .as_mut()
                .expect("cash")
                .cash_location_reference
                .clear()
        }),
        m("reference huge", |r| {
            r.cash.as_mut().expect("cash").cash_location_reference = "R".repeat(2000)
        }),
    ];
    let metadata = vec![
        m("metadata 51 keys", |r| {
            r.metadata = (0..51).map(|i| (format!("k{i}"), "v".into())).collect()
        }),
        m("metadata key 41 chars", |r| {
            r.metadata = [("k".repeat(41), "v".into())].into()
        }),
        m("metadata value 501 chars", |r| {
            r.metadata = [("k".into(), "v".repeat(501))].into()
        }),
        m("metadata empty key", |r| {
            r.metadata = [(String::new(), "v".into())].into()
        }),
        m("metadata huge key", |r| {
            r.metadata = [("k".repeat(10_000), "v".into())].into()
        }),
    ];
    let keys: Vec<Mutation> = [
        "ключ-1".to_owned(),
        "emoji-🔑".to_owned(),
        "key\n".to_owned(),
        " leading-space".to_owned(),
        "tab\tkey".to_owned(),
        "k".repeat(256),
    ]
    .into_iter()
    .map(|key| {
        let label = format!("key {:?}", key.chars().take(12).collect::<String>());
        m(label, move |r| r.idempotency_key = key.clone())
    })
    .collect();
    let fee = |f: create::DeveloperFee| {
        move |r: &mut pb::CreateCashInRequest| r.developer_fees = vec![f.clone()]
    };
    let percentage = |p: &str| create::DeveloperFee {
        percentage: Some(p.into()),
        wallet: Some("wlt_fee1".into()),
        ..Default::default()
    };
    let flat = |a: &str| create::DeveloperFee {
        flat_fee: Some(a.into()),
        wallet: Some("wlt_fee1".into()),
        ..Default::default()
    };
    let fees = vec![
        m("fee percentage 1.5", fee(percentage("1.5"))),
        m("fee percentage NaN", fee(percentage("NaN"))),
        m("fee flat negative", fee(flat("-1"))),
        m("fee flat three fraction digits", fee(flat("500.001"))),
        m("fee with neither", fee(create::DeveloperFee::default())),
        m(
            "fee wallet prefix only",
            fee(create::DeveloperFee {
                wallet: Some("wlt_".into()),
                ..flat("1.00")
            }),
        ),
        m(
            "fee payout btc",
            fee(create::DeveloperFee {
                payout_asset: Some("btc".into()),
                ..flat("1.00")
            }),
        ),
        m("fees 51", move |r| {
            r.developer_fees = vec![flat("1.00"); 51]
        }),
    ];
    let sides = vec![
        m("source absent", |r| r.source = None),
        m("source asset eur", |r| {
            r.source.as_mut().expect("source").asset = "eur".into()
        }),
        m("destination absent", |r| r.destination = None),
        m("destination asset empty", |r| {
            r.destination.as_mut().expect("destination").asset.clear()
        }),
        m("destination network space", |r| {
            r.destination.as_mut().expect("destination").network = "poly gon".into()
        }),
    ];
    vec![
        customers, amounts, wallets, cash, metadata, keys, fees, sides,
    ]
}

/// Ids that are not cash-in ids.
fn bad_cash_in_ids() -> Vec<String> {
    vec![
        String::new(),
        "ci_".into(),
        "cst_1".into(),
        "CI_1".into(),
        "ci_a/b".into(),
        "ci_ space".into(),
        "ci_é".into(),
        "ci_\0".into(),
        "ci_../../etc".into(),
        "ci_%2F".into(),
        "ci_?q=1".into(),
        "ci_#frag".into(),
        format!("ci_{}", "x".repeat(300)),
        format!("ci_{}", "x".repeat(100_000)),
    ]
}

fn bad_keys() -> Vec<String> {
    vec![
        "ключ".into(),
        "key\r\n".into(),
        " padded ".into(),
        "k".repeat(256),
    ]
}

/// Non-ASCII (and over-long) idempotency keys as call metadata.
fn bad_metadata_keys() -> Vec<AsciiMetadataValue> {
    ["ключ-1".as_bytes(), "clé".as_bytes(), "🔑".as_bytes()]
        .into_iter()
        .map(|bytes| AsciiMetadataValue::try_from(bytes).expect("obs-text is a valid header value"))
        .chain([AsciiMetadataValue::try_from("k".repeat(300).as_str()).expect("ASCII")])
        .collect()
}

fn list_cases() -> Vec<pb::ListCashInsRequest> {
    let ts = |seconds: i64, nanos: i32| Some(prost_types::Timestamp { seconds, nanos });
    let mut cases = Vec::new();
    let customers = [
        "ci_1".to_owned(),
        "cst_".into(),
        "cst_a b".into(),
        "cst_é".into(),
        "cst_/".into(),
        format!("cst_{}", "x".repeat(100_000)),
    ];
    let page_sizes = [-1, i32::MIN];
    let tokens = [
        "garbage".to_owned(),
        "!!!".into(),
        "a".repeat(10_000),
        "djE6MDAwMDAwMDAwMDAwMDAwMDpjaV8x".into(), // v1:<wrong filters>:ci_1
    ];
    // Each bad customer with each bad page size.
    for customer in &customers {
        for page_size in page_sizes {
            cases.push(pb::ListCashInsRequest {
                customer_id: customer.clone(),
                page_size,
                ..Default::default()
            });
        }
    }
    // Unknown statuses with each bad token.
    for status in [99, -1, 1000] {
        for token in &tokens {
            cases.push(pb::ListCashInsRequest {
                status,
                page_token: token.clone(),
                ..Default::default()
            });
        }
    }
    // Timestamps out of range, and an empty interval.
    for (after, before) in [
        (ts(0, -1), None),
        (ts(0, 1_000_000_000), None),
        (None, ts(253_402_300_800, 0)),
        (None, ts(-62_135_596_801, 0)),
        (ts(2_000_000_000, 0), ts(1_000_000_000, 0)),
        (ts(i64::MAX, i32::MAX), ts(i64::MIN, i32::MIN)),
    ] {
        cases.push(pb::ListCashInsRequest {
            created_after: after,
            created_before: before,
            ..Default::default()
        });
    }
    cases
}

fn locations_cases() -> Vec<pb::ListCashLocationsRequest> {
    let bad_coordinates = [
        None,
        Some(f64::NAN),
        Some(f64::INFINITY),
        Some(f64::NEG_INFINITY),
        Some(180.5),
        Some(-1e300),
        Some(f64::MAX),
    ];
    let request =
        |provider: &str, latitude, longitude, flow: Option<&str>| pb::ListCashLocationsRequest {
            provider: provider.to_owned(),
            latitude,
            longitude,
            flow: flow.map(str::to_owned),
        };
    let mut cases = Vec::new();
    // Every pair of bad coordinates (a valid provider).
    for latitude in bad_coordinates {
        for longitude in bad_coordinates {
            cases.push(request("greendot", latitude, longitude, None));
        }
    }
    // Bad providers and flows at a valid point.
    let huge = "p".repeat(100_000);
    for provider in ["", "green dot", &"p".repeat(40), "gréendot", &huge] {
        cases.push(request(provider, Some(38.5), Some(-121.5), None));
    }
    for flow in ["", "cash in", "ü"] {
        cases.push(request("greendot", Some(38.5), Some(-121.5), Some(flow)));
    }
    // Latitude that is in range for a longitude but not for a latitude.
    cases.push(request("greendot", Some(90.0001), Some(0.0), None));
    cases
}

/// Byte strings that are not a valid protobuf encoding of any of the gateway's request types
/// (each has a string as field 1).
fn generic_wire_garbage() -> Vec<(&'static str, Vec<u8>)> {
    let mut overflow = vec![0xff; 10];
    overflow.push(0x01);
    vec![
        ("truncated length-delimited", vec![0x0a, 0x05, b'a']),
        ("truncated tag varint", vec![0x80]),
        ("truncated value varint", vec![0x08, 0xff]),
        ("field 1 as varint", vec![0x08, 0x01]),
        ("field 1 as fixed32", vec![0x0d, 1, 2, 3, 4]),
        ("field 1 as fixed64", vec![0x09, 1, 2, 3, 4, 5, 6, 7, 8]),
        ("field 1 as group start", vec![0x0b]),
        ("field 1 as group end", vec![0x0c]),
        ("invalid UTF-8", vec![0x0a, 0x02, 0xff, 0xfe]),
        ("overlong UTF-8", vec![0x0a, 0x02, 0xc0, 0x80]),
        ("UTF-16 surrogate", vec![0x0a, 0x03, 0xed, 0xa0, 0x80]),
        ("truncated UTF-8 sequence", vec![0x0a, 0x01, 0xe2]),
        ("field number 0", vec![0x00]),
        ("wire type 6", vec![0x0e]),
        ("wire type 7", vec![0x0f]),
        ("tag varint overflow", overflow),
        ("unterminated unknown group", vec![0x7b]),
        ("4 GiB length", vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]),
        (
            "valid field then truncated unknown field",
            vec![0x0a, 0x03, b'c', b'i', b'_', 0x7a, 0x80],
        ),
    ]
}

const CASH_IN_PATHS: &[(&str, &str, bool)] = &[
    (
        "CreateCashIn",
        "/polygon.oms.v1.CashInService/CreateCashIn",
        false,
    ),
    (
        "GetCashIn",
        "/polygon.oms.v1.CashInService/GetCashIn",
        false,
    ),
    (
        "RefreshCashIn",
        "/polygon.oms.v1.CashInService/RefreshCashIn",
        false,
    ),
    (
        "ListCashIns",
        "/polygon.oms.v1.CashInService/ListCashIns",
        false,
    ),
    (
        "ListCashLocations",
        "/polygon.oms.v1.CashLocationService/ListCashLocations",
        false,
    ),
    (
        "WatchCashIn",
        "/polygon.oms.v1.CashInService/WatchCashIn",
        true,
    ),
];

/// Garbage that only the schema of one method makes wrong (nested messages, maps, scalars).
fn specific_wire_garbage() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let create = "/polygon.oms.v1.CashInService/CreateCashIn";
    let list = "/polygon.oms.v1.CashInService/ListCashIns";
    let locations = "/polygon.oms.v1.CashLocationService/ListCashLocations";
    let refresh = "/polygon.oms.v1.CashInService/RefreshCashIn";
    vec![
        (
            create,
            "source with invalid UTF-8 asset",
            vec![0x12, 0x04, 0x0a, 0x02, 0xff, 0xfe],
        ),
        (
            create,
            "source truncated inside",
            vec![0x12, 0x03, 0x0a, 0x05, b'x'],
        ),
        (create, "source as varint", vec![0x10, 0x01]),
        (
            create,
            "metadata key invalid UTF-8",
            vec![0x3a, 0x04, 0x0a, 0x02, 0xc3, 0x28],
        ),
        (create, "sponsor_gas as bytes", vec![0x2a, 0x01, 0x01]),
        (
            create,
            "wallet oneof invalid UTF-8",
            vec![0x1a, 0x06, 0x1a, 0x04, 0x0a, 0x02, 0xff, 0xff],
        ),
        (list, "status as bytes", vec![0x12, 0x01, 0x01]),
        (
            list,
            "timestamp seconds as bytes",
            vec![0x1a, 0x03, 0x0a, 0x01, 0x01],
        ),
        (list, "page_size as fixed64", {
            let mut bytes = vec![0x29];
            bytes.extend([0u8; 8]);
            bytes
        }),
        (list, "page_token invalid UTF-8", vec![0x32, 0x01, 0x80]),
        (locations, "latitude as varint", vec![0x10, 0x01]),
        (locations, "longitude as bytes", vec![0x1a, 0x01, 0x00]),
        (locations, "latitude truncated", vec![0x11, 1, 2, 3]),
        (refresh, "key invalid UTF-8", vec![0x12, 0x02, 0xff, 0xfe]),
    ]
}

/// The whole corpus, generated, with a label per case.
fn corpus() -> Vec<(String, Case)> {
    let mut cases: Vec<(String, Case)> = Vec::new();
    // CreateCashIn: every bad value alone, then crossed pairwise between groups.
    let groups = create_groups();
    for group in &groups {
        for (label, mutate) in group {
            let mut request = valid_create();
            mutate(&mut request);
            cases.push((
                format!("Create {label}"),
                Case::Create(Box::new(request), None),
            ));
        }
    }
    for (a, b) in [(0, 1), (1, 2), (3, 4), (5, 6), (4, 7), (2, 5)] {
        for (label_a, mutate_a) in &groups[a] {
            for (label_b, mutate_b) in &groups[b] {
                let mut request = valid_create();
                mutate_a(&mut request);
                mutate_b(&mut request);
                cases.push((
                    format!("Create {label_a} + {label_b}"),
                    Case::Create(Box::new(request), None),
                ));
            }
        }
    }
    for key in bad_metadata_keys() {
        cases.push((
            format!("Create metadata key {key:?}"),
            Case::Create(
                // The key travels in metadata only (a field key would win).
                Box::new(pb::CreateCashInRequest {
                    idempotency_key: String::new(),
                    ..valid_create()
                }),
                Some(key.clone()),
            ),
        ));
        cases.push((
            format!("Refresh metadata key {key:?}"),
            Case::Refresh(
                pb::RefreshCashInRequest {
                    cash_in_id: "ci_relevalid".into(),
                    idempotency_key: String::new(),
                },
                Some(key),
            ),
        ));
    }
    for id in bad_cash_in_ids() {
        let short: String = id.chars().take(16).collect();
        cases.push((
            format!("Get {short:?}"),
            Case::Get(pb::GetCashInRequest {
                cash_in_id: id.clone(),
            }),
        ));
        cases.push((
            format!("Watch {short:?}"),
            Case::Watch(pb::WatchCashInRequest {
                cash_in_id: id.clone(),
                ..Default::default()
            }),
        ));
        cases.push((
            format!("Refresh {short:?}"),
            Case::Refresh(
                pb::RefreshCashInRequest {
                    cash_in_id: id,
                    idempotency_key: "rel-e-refresh".into(),
                },
                None,
            ),
        ));
    }
    for key in bad_keys() {
        for id in ["ci_relevalid".to_owned(), "ci_".to_owned()] {
            cases.push((
                format!(
                    "Refresh {id} key {:?}",
                    key.chars().take(12).collect::<String>()
                ),
                Case::Refresh(
                    pb::RefreshCashInRequest {
                        cash_in_id: id,
                        idempotency_key: key.clone(),
                    },
                    None,
                ),
            ));
        }
    }
    for (i, request) in list_cases().into_iter().enumerate() {
        cases.push((format!("List #{i}"), Case::List(request)));
    }
    for (i, request) in locations_cases().into_iter().enumerate() {
        cases.push((format!("Locations #{i}"), Case::Locations(request)));
    }
    for (label, bytes) in generic_wire_garbage() {
        for (method, path, streaming) in CASH_IN_PATHS {
            cases.push((
                format!("raw {method}: {label}"),
                Case::Raw {
                    path,
                    streaming: *streaming,
                    bytes: bytes.clone(),
                },
            ));
        }
    }
    for (path, label, bytes) in specific_wire_garbage() {
        cases.push((
            format!("raw {path}: {label}"),
            Case::Raw {
                path,
                streaming: false,
                bytes,
            },
        ));
    }
    cases
}

fn with_key<T>(message: T, key: Option<AsciiMetadataValue>) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(Duration::from_secs(5));
    if let Some(key) = key {
        request.metadata_mut().insert("idempotency-key", key);
    }
    request
}

async fn send(gateway: &common::TestGateway, case: Case) -> Result<(), Status> {
    match case {
        Case::Create(request, key) => gateway
            .cash_ins()
            .create_cash_in(with_key(*request, key))
            .await
            .map(|_| ()),
        Case::Get(request) => gateway
            .cash_ins()
            .get_cash_in(with_key(request, None))
            .await
            .map(|_| ()),
        Case::Refresh(request, key) => gateway
            .cash_ins()
            .refresh_cash_in(with_key(request, key))
            .await
            .map(|_| ()),
        Case::List(request) => gateway
            .cash_ins()
            .list_cash_ins(with_key(request, None))
            .await
            .map(|_| ()),
        Case::Locations(request) => gateway
            .locations()
            .list_cash_locations(with_key(request, None))
            .await
            .map(|_| ()),
        Case::Watch(request) => {
            let mut stream = gateway
                .cash_ins()
                .watch_cash_in(with_key(request, None))
                .await?
                .into_inner();
            stream.message().await.map(|_| ())
        }
        Case::Raw {
            path,
            streaming,
            bytes,
        } => raw_call(&gateway.channel, path, streaming, bytes).await,
    }
}

/// `CODE/REASON`, with the number of ErrorInfo details when it is not exactly one.
fn outcome_label(result: &Result<(), Status>) -> String {
    match result {
        Ok(()) => "OK".into(),
        Err(status) => {
            let infos = common::error_infos(status);
            match infos.as_slice() {
                [info] => format!("{:?}/{}", status.code(), info.reason),
                _ => format!("{:?}/({} ErrorInfo)", status.code(), infos.len()),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corpus_of_malformed_requests_is_invalid_argument_every_time_and_never_reaches_oms() {
    count_worker_panics();
    let gateway = common::start().await;
    let corpus = corpus();
    let size = corpus.len();
    let mut by_code: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_outcome: BTreeMap<String, usize> = BTreeMap::new();
    let mut wrong = Vec::new();
    let started = std::time::Instant::now();
    for (label, case) in corpus {
        let result = tokio::time::timeout(Duration::from_secs(10), send(&gateway, case))
            .await
            .unwrap_or_else(|_| Err(Status::deadline_exceeded("the test's own bound")));
        let outcome = outcome_label(&result);
        let code = result
            .as_ref()
            .err()
            .map_or("Ok".to_owned(), |s| format!("{:?}", s.code()));
        *by_code.entry(code).or_default() += 1;
        *by_outcome.entry(outcome.clone()).or_default() += 1;
        if outcome != "InvalidArgument/INVALID_REQUEST_FIELDS"
            && outcome != "InvalidArgument/MALFORMED_MESSAGE"
        {
            wrong.push(format!("{label}: {outcome} {:?}", result.err()));
        }
    }
    let journal = gateway.sandbox().journal();
    let upstream: Vec<String> = journal
        .iter()
        .filter(|r| r.path != "/auth/token")
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    let panics = WORKER_PANICS.load(Ordering::SeqCst);
    println!(
        "(e) {size} malformed requests in {:.1} s: codes {by_code:?}; outcomes {by_outcome:?}; \
         {} upstream requests besides {} token exchange(s); {panics} panics",
        started.elapsed().as_secs_f64(),
        upstream.len(),
        journal.len() - upstream.len(),
    );
    assert!(size >= 200, "the corpus has {size} requests");
    assert!(
        wrong.is_empty(),
        "{} requests were not INVALID_ARGUMENT with one ErrorInfo:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert!(upstream.is_empty(), "nothing reached OMS: {upstream:?}");
    assert_eq!(panics, 0, "no panic in the gateway");
    // Still serving.
    common::first_location(&gateway.channel).await;
    gateway.gateway.shutdown().await;
}

// === (f) 2xx answers that do not decode ===

/// A valid cash-in as the sandbox renders it, for truncating.
fn valid_cash_in_json() -> String {
    r#"{"id":"ci_relf1","object":"cashIn","status":"pending","customerId":"cst_relf","source":{"asset":"usd","indicatedAmount":"200.00"},"destination":{"asset":"usdc","network":"polygon","wallet":{"id":"wlt_1"}},"depositInstructions":{"code":"483 291","expiresAt":"2026-03-16T19:30:00Z"},"createdAt":"2026-03-16T18:30:00Z"}"#.to_owned()
}

/// Bodies no 2xx answer of any endpoint may have.
fn bad_bodies_for_all() -> Vec<(String, String, Option<&'static str>)> {
    let huge = format!(
        r#"{{"id":"ci_relf1","status":"pending","pad":"{}"}}"#,
        "x".repeat(5 * 1024 * 1024)
    );
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    vec![
        ("empty".into(), String::new(), None),
        ("truncated object".into(), "{".into(), None),
        ("not JSON".into(), "not json".into(), Some("text/plain")),
        (
            "HTML".into(),
            "<html><body>502 Bad Gateway</body></html>".into(),
            Some("text/html"),
        ),
        ("null".into(), "null".into(), None),
        ("number".into(), "42".into(), None),
        ("string".into(), r#""cash-in""#.into(), None),
        ("boolean".into(), "true".into(), None),
        ("10,000 levels deep".into(), deep, None),
        ("huge (5 MiB)".into(), huge, None),
    ]
}

fn bad_cash_in_bodies() -> Vec<(String, String, Option<&'static str>)> {
    let valid = valid_cash_in_json();
    let mut bodies = bad_bodies_for_all();
    bodies.push(("empty array".into(), "[]".into(), None));
    bodies.push((
        "truncated cash-in".into(),
        valid[..valid.len() / 2].to_owned(),
        None,
    ));
    bodies.push((
        "cash-in missing its last brace".into(),
        valid[..valid.len() - 1].to_owned(),
        None,
    ));
    let base = r#""id":"ci_relf1","status":"pending""#;
    for (label, extra) in [
        ("id a number", r#"{"id":5,"status":"pending"}"#.to_owned()),
        ("no id", r#"{"status":"pending"}"#.to_owned()),
        ("empty id", r#"{"id":"","status":"pending"}"#.to_owned()),
        ("no status", r#"{"id":"ci_relf1"}"#.to_owned()),
        (
            "status a number",
            r#"{"id":"ci_relf1","status":7}"#.to_owned(),
        ),
        ("source a string", format!(r#"{{{base},"source":"cash"}}"#)),
        (
            "createdAt not a time",
            format!(r#"{{{base},"createdAt":"yesterday"}}"#),
        ),
        (
            "developerFees an object",
            format!(r#"{{{base},"developerFees":{{"a":1}}}}"#),
        ),
        (
            "metadata value a number",
            format!(r#"{{{base},"metadata":{{"k":5}}}}"#),
        ),
        (
            "sponsorGas a string",
            format!(r#"{{{base},"sponsorGas":"yes"}}"#),
        ),
        (
            "expiresAt not a time",
            format!(r#"{{{base},"depositInstructions":{{"code":"1","expiresAt":17}}}}"#),
        ),
        (
            "wallet an array",
            format!(r#"{{{base},"destination":{{"wallet":[1]}}}}"#),
        ),
    ] {
        bodies.push((label.into(), extra, None));
    }
    bodies
}

fn bad_page_bodies() -> Vec<(String, String, Option<&'static str>)> {
    let mut bodies = bad_bodies_for_all();
    for (label, body) in [
        ("no data", "{}"),
        ("data a number", r#"{"data":5}"#),
        (
            "item id a number",
            r#"{"data":[{"id":5,"status":"pending"}]}"#,
        ),
        (
            "item createdAt not a time",
            r#"{"data":[{"id":"ci_1","status":"pending","createdAt":"x"}],"hasMore":false}"#,
        ),
        ("hasMore a string", r#"{"data":[],"hasMore":"yes"}"#),
        ("truncated page", r#"{"data":[{"id":"ci_1","#),
    ] {
        bodies.push((label.into(), body.into(), None));
    }
    bodies
}

fn bad_location_bodies() -> Vec<(String, String, Option<&'static str>)> {
    let mut bodies = bad_bodies_for_all();
    for (label, body) in [
        ("empty object", "{}"),
        ("data a string", r#"{"data":"x"}"#),
        ("id a number", r#"{"data":[{"id":5}]}"#),
        ("no id", r#"[{"name":"CVS"}]"#),
        (
            "latitude not a number",
            r#"[{"id":"loc_1","coordinates":{"latitude":"north"}}]"#,
        ),
        (
            "distance not a number",
            r#"[{"id":"loc_1","distance":"far"}]"#,
        ),
        (
            "coordinates a number",
            r#"{"data":[{"id":"loc_1","coordinates":7}]}"#,
        ),
        ("truncated list", r#"[{"id":"loc_1""#),
    ] {
        bodies.push((label.into(), body.into(), None));
    }
    bodies
}

/// Which endpoint a scripted answer replaces, and the RPC that reaches it.
#[derive(Clone, Copy, Debug)]
enum Endpoint {
    Get,
    Create,
    Refresh,
    List,
    Locations,
}

fn fault(endpoint: Endpoint, status: u16, body: String, content_type: Option<&str>) -> Fault {
    let (method, path) = match endpoint {
        Endpoint::Get => ("GET", "/cash-ins/"),
        Endpoint::Create => ("POST", "/cash-ins"),
        Endpoint::Refresh => ("POST", "/cash-ins/"),
        Endpoint::List => ("GET", "/cash-ins"),
        Endpoint::Locations => ("GET", "/cash-locations"),
    };
    let headers: Vec<(&str, &str)> = content_type
        .map(|t| ("content-type", t))
        .into_iter()
        .collect();
    common::respond(method, path, 1, status, body, &headers)
}

async fn call(gateway: &common::TestGateway, endpoint: Endpoint, n: usize) -> Result<(), Status> {
    let timeout = Duration::from_secs(10);
    match endpoint {
        Endpoint::Get => {
            let mut request = Request::new(pb::GetCashInRequest {
                cash_in_id: "ci_relf1".into(),
            });
            request.set_timeout(timeout);
            gateway.cash_ins().get_cash_in(request).await.map(|_| ())
        }
        Endpoint::Create => {
            let mut request = valid_create();
            request.idempotency_key = format!("rel-f-{n}");
            let mut request = Request::new(request);
            request.set_timeout(timeout);
            gateway.cash_ins().create_cash_in(request).await.map(|_| ())
        }
        Endpoint::Refresh => {
            let mut request = Request::new(pb::RefreshCashInRequest {
                cash_in_id: "ci_relf1".into(),
                idempotency_key: format!("rel-f-{n}"),
            });
            request.set_timeout(timeout);
            gateway
                .cash_ins()
                .refresh_cash_in(request)
                .await
                .map(|_| ())
        }
        Endpoint::List => {
            let mut request = Request::new(pb::ListCashInsRequest {
                customer_id: "cst_relf".into(),
                ..Default::default()
            });
            request.set_timeout(timeout);
            gateway.cash_ins().list_cash_ins(request).await.map(|_| ())
        }
        Endpoint::Locations => {
            let mut request = Request::new(common::guide_point());
            request.set_timeout(timeout);
            gateway
                .locations()
                .list_cash_locations(request)
                .await
                .map(|_| ())
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_that_do_not_decode_are_internal_upstream_bad_response_never_a_panic() {
    count_worker_panics();
    let gateway = common::start().await;
    let sandbox = gateway.sandbox();
    let mut cases: Vec<(Endpoint, String, String, Option<&'static str>)> = Vec::new();
    for endpoint in [Endpoint::Get, Endpoint::Create, Endpoint::Refresh] {
        for (label, body, content_type) in bad_cash_in_bodies() {
            cases.push((endpoint, label, body, content_type));
        }
    }
    for (label, body, content_type) in bad_page_bodies() {
        cases.push((Endpoint::List, label, body, content_type));
    }
    for (label, body, content_type) in bad_location_bodies() {
        cases.push((Endpoint::Locations, label, body, content_type));
    }
    let size = cases.len();
    let statuses = [200, 201, 202, 203];
    let mut by_outcome: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_endpoint: HashMap<String, usize> = HashMap::new();
    let mut wrong = Vec::new();
    let started = std::time::Instant::now();
    for (n, (endpoint, label, body, content_type)) in cases.into_iter().enumerate() {
        // Empty bodies also as 204, whose body HTTP forbids anyway.
        let status = if body.is_empty() && n % 2 == 0 {
            204
        } else {
            statuses[n % statuses.len()]
        };
        sandbox.clear_faults();
        sandbox.inject(fault(endpoint, status, body, content_type));
        let before = sandbox.journal().len();
        let result = tokio::time::timeout(Duration::from_secs(15), call(&gateway, endpoint, n))
            .await
            .unwrap_or_else(|_| Err(Status::deadline_exceeded("the test's own bound")));
        let outcome = outcome_label(&result);
        *by_outcome.entry(outcome.clone()).or_default() += 1;
        *by_endpoint.entry(format!("{endpoint:?}")).or_default() += 1;
        let scripted = sandbox.journal()[before..]
            .iter()
            .filter(|r| {
                r.fault
                    .as_deref()
                    .is_some_and(|f| f.starts_with("scripted:"))
            })
            .count();
        if outcome != "Internal/UPSTREAM_BAD_RESPONSE" || scripted != 1 {
            wrong.push(format!(
                "{endpoint:?} {status} {label}: {outcome} (scripted answers used: {scripted}) {:?}",
                result.err()
            ));
        }
    }
    let panics = WORKER_PANICS.load(Ordering::SeqCst);
    println!(
        "(f) {size} 2xx answers that do not decode (malformed, truncated, > 4 MiB, wrongly typed) \
         over {by_endpoint:?} in {:.1} s: outcomes {by_outcome:?}; {panics} panics",
        started.elapsed().as_secs_f64()
    );
    assert!(
        wrong.is_empty(),
        "{} answers not reported as INTERNAL/UPSTREAM_BAD_RESPONSE:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert_eq!(panics, 0, "no panic in the gateway");
    // Nothing was created by the scripted creates, and the gateway still serves.
    assert_eq!(sandbox.cash_in_count(), 0);
    common::first_location(&gateway.channel).await;
    gateway.gateway.shutdown().await;
}
