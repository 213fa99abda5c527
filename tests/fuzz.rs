//! Fuzzing on stable Rust, with proptest: the decoders of upstream JSON and request validation
//! must never panic, whatever they are given; every status the gateway can answer with stays
//! within its bounds (under 8 KiB as sent, at most 20 violations listed, the rest counted),
//! whatever the request or OMS's answer; and the bounds read off the wire (message sizes,
//! repeated fields' counts) hold for any bytes.
//!
//! `cargo test --test fuzz` runs a short pass (256 cases per target, as CI does; 48 for the
//! targets whose inputs run to tens of kilobytes, see [`wide_inputs`]). For a long run (every
//! target then takes `PROPTEST_CASES`): `PROPTEST_CASES=200000 cargo test --release --test fuzz`. A failure is shrunk and saved
//! under `proptest-regressions/`; commit that file, and it is replayed first on every run, so each
//! crash found becomes a regression test.

#[path = "common/mod.rs"]
mod common;

use oms_gateway::fuzzing::convert;
use oms_gateway::fuzzing::security::Policy;
use oms_gateway::fuzzing::status::{self as statuses, Answer};
use oms_gateway::fuzzing::{CashInDto, CashInPageDto, CashLocationListDto, TransactionDto};
use oms_gateway::fuzzing::{MAX_LISTED_VIOLATIONS, MAX_REQUEST_MESSAGE_BYTES, MAX_STATUS_BYTES};
use oms_gateway::fuzzing::{Violations, validate, wire};
use oms_gateway::proto::v1 as pb;
use oms_rest::drift::Drift;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{Value, json};
use tonic_types::{ErrorDetail, StatusExt};

/// A valid cash-in in the OpenAPI spelling, the seed the mutations start from.
fn valid_cash_in() -> Value {
    json!({
        "id": "ci_01H9XY", "object": "cashIn", "type": "fiatToCrypto", "status": "pending",
        "subStatus": "order_reserved", "customerId": "cst_1",
        "source": {"asset": "usd", "network": "cash", "indicatedAmount": "200.00", "amount": null,
                   "amountGross": "200.00", "amountNet": "192.00",
                   "feesDeducted": {"total": "8.00", "developer": "3.00", "oms": "5.00", "gas": "0.00"}},
        "destination": {"asset": "usdc", "network": "polygon", "wallet": {"id": "wlt_1"},
                        "amountGross": "192.00", "amountNet": "192.00"},
        "cash": {"locationId": "loc_1", "locationReference": "UkVG"},
        "location": {"name": "CVS", "address": "1 Main St"},
        "depositInstructions": {"code": "483 291", "expiresAt": "2026-03-16T19:30:00Z"},
        "developerFees": [{"type": "percentage", "rate": "0.01"}, {"flatFee": "1.00", "amount": "1.00"}],
        "omsFeeSchedule": {"feeCurrency": "usd", "entries": [{"type": "percentage", "rate": "0.02"}]},
        "rates": {"pair": "usd/usdc", "exchangeRate": "1.0000", "effectiveRate": "0.9600"},
        "fixedAmountSide": "source", "sponsorGas": false, "sponsorGasCost": null, "transaction": null,
        "metadata": {"order_id": "ord_789", "gone": null},
        "createdAt": "2026-03-16T18:30:00Z", "updatedAt": "2026-03-16T18:30:00.123Z", "completedAt": null
    })
}

/// Any JSON value, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,40}".prop_map(Value::String),
        "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]{0,15}Z?".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z]{1,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every path (as JSON pointer segments) to a value inside `value`.
fn paths(value: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                prefix.push(k.clone());
                out.push(prefix.clone());
                paths(v, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                prefix.push(i.to_string());
                out.push(prefix.clone());
                paths(v, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

fn pointer(path: &[String]) -> String {
    path.iter().map(|p| format!("/{p}")).collect()
}

/// The guide's failed transaction (a `transaction.fiatToCrypto.failed` webhook's `data`, the
/// shape `GET /transactions/{id}` is read in), the seed of the transaction mutations.
fn valid_transaction() -> Value {
    json!({
        "id": "txn_01H9Xz", "object": "transaction", "type": "fiatToCrypto",
        "status": "failed", "subStatus": "failed.refundPending", "customerId": "cst_01H9Xa",
        "quoteId": null, "depositAddress": null, "virtualAccount": null, "cashIn": "ci_01H9Xy",
        "source": {"asset": "usd", "network": "cash", "amountGross": "200.00", "amountNet": "192.00",
            "feesDeducted": {"total": "8.00", "developer": "3.00", "oms": "5.00", "gas": "0.00"},
            "txHash": null},
        "destination": {"wallet": {"wallet": "wlt_01H9Xb"}, "asset": "usdc", "network": "polygon",
            "amountGross": "192.00", "amountNet": "192.00", "txHash": null},
        "fixedAmountSide": "source", "sponsorGasCost": null, "sponsorGas": false,
        "rates": {"pair": "usd/usdc", "exchangeRate": "1.0000", "effectiveRate": "0.9600"},
        "estimatedArrival": null,
        "error": {"code": "on_chain_revert", "message": "Delivery transaction reverted onchain"},
        "metadata": {"order_id": "ord_789"},
        "createdAt": "2026-03-16T18:47:05Z", "updatedAt": "2026-03-16T18:50:00Z"
    })
}

/// Decodes a transaction as a webhook or the transaction read does, then converts it to the
/// delivery: Ok or Err, never a panic.
fn decode_and_convert_transaction(bytes: &[u8], event: Option<&str>) {
    if let Ok(dto) = serde_json::from_slice::<TransactionDto>(bytes) {
        let _ = convert::delivery(dto, event);
    }
}

/// Decodes like the client does, then converts like the services do: Ok or Err, never a panic.
fn decode_and_convert(bytes: &[u8]) {
    if let Ok(dto) = serde_json::from_slice::<CashInDto>(bytes) {
        let _ = convert::cash_in(dto, &Drift::default());
    }
    if let Ok(page) = serde_json::from_slice::<CashInPageDto>(bytes) {
        for dto in page.data {
            let _ = convert::cash_in(dto, &Drift::default());
        }
    }
    if let Ok(list) = serde_json::from_slice::<CashLocationListDto>(bytes) {
        for dto in list.into_vec() {
            let _ = convert::cash_location(dto);
        }
    }
}

proptest! {
    /// Replacing any field of a valid cash-in with any JSON value never panics the decoder.
    #[test]
    fn a_cash_in_with_any_field_replaced_decodes_or_errs(choice in any::<prop::sample::Index>(), replacement in any_json()) {
        let mut value = valid_cash_in();
        let mut all = Vec::new();
        paths(&value, &mut Vec::new(), &mut all);
        let path = &all[choice.index(all.len())];
        if let Some(slot) = value.pointer_mut(&pointer(path)) {
            *slot = replacement;
        }
        decode_and_convert(&serde_json::to_vec(&value).unwrap());
    }

    /// Truncating a valid body anywhere never panics the decoder.
    #[test]
    fn a_truncated_cash_in_decodes_or_errs(cut in any::<prop::sample::Index>()) {
        let bytes = serde_json::to_vec(&valid_cash_in()).unwrap();
        decode_and_convert(&bytes[..cut.index(bytes.len())]);
    }

    /// Arbitrary JSON and arbitrary bytes never panic the decoder.
    #[test]
    fn arbitrary_json_and_bytes_decode_or_err(value in any_json(), bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        decode_and_convert(&serde_json::to_vec(&value).unwrap());
        decode_and_convert(&bytes);
    }

    /// Replacing any field of the guide's transaction with any JSON value, under any event
    /// name, never panics its decoder or its conversion to the delivery.
    #[test]
    fn a_transaction_with_any_field_replaced_decodes_or_errs(
        choice in any::<prop::sample::Index>(),
        replacement in any_json(),
        event in prop::option::of("[a-zA-Z_.]{0,40}"),
    ) {
        let mut value = valid_transaction();
        let mut all = Vec::new();
        paths(&value, &mut Vec::new(), &mut all);
        let path = &all[choice.index(all.len())];
        if let Some(slot) = value.pointer_mut(&pointer(path)) {
            *slot = replacement;
        }
        let bytes = serde_json::to_vec(&value).unwrap();
        decode_and_convert_transaction(&bytes, event.as_deref());
        decode_and_convert_transaction(&bytes[..bytes.len() / 2], event.as_deref());
    }
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "(ci|cst|loc|wlt|cpBcAddr)_[A-Za-z0-9_-]{0,70}",
        "[0-9]{0,14}(\\.[0-9]{0,8})?",
        "0x[0-9a-fA-F]{0,44}",
        ".{0,80}",
        "\\PC{0,20}",
        prop::collection::vec(any::<char>(), 0..600).prop_map(|c| c.into_iter().collect()),
    ]
}

fn opt_text() -> impl Strategy<Value = Option<String>> {
    prop::option::of(text())
}

fn coordinate() -> impl Strategy<Value = Option<f64>> {
    prop::option::of(prop_oneof![
        any::<f64>(),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        -200.0..200.0f64
    ])
}

prop_compose! {
    fn create_request()(
        customer_id in text(),
        source in prop::option::of((text(), opt_text())),
        destination in prop::option::of((text(), text(), prop::option::of((0..4u8, text())))),
        cash in prop::option::of((text(), text())),
        fees in prop::collection::vec((opt_text(), opt_text(), opt_text(), opt_text()), 0..12),
        metadata in prop::collection::hash_map(text(), text(), 0..55),
        idempotency_key in text(),
    ) -> pb::CreateCashInRequest {
        use pb::create_cash_in_request::{Cash, DeveloperFee, Destination, Source, Wallet, wallet::Kind};
        pb::CreateCashInRequest {
            customer_id,
            source: source.map(|(asset, indicated_amount)| Source { asset, indicated_amount }),
            destination: destination.map(|(asset, network, wallet)| Destination {
                asset,
                network,
                wallet: wallet.map(|(kind, value)| Wallet {
                    kind: match kind {
                        0 => None,
                        1 => Some(Kind::Wallet(value)),
                        2 => Some(Kind::BlockchainAddress(value)),
                        _ => Some(Kind::ExternalAccount(value)),
                    },
                }),
            }),
            cash: cash.map(|(cash_location_id, cash_location_reference)| Cash { cash_location_id, cash_location_reference }),
            sponsor_gas: None,
            developer_fees: fees
                .into_iter()
                .map(|(percentage, flat_fee, wallet, payout_asset)| DeveloperFee { percentage, flat_fee, wallet, payout_asset })
                .collect(),
            metadata,
            idempotency_key,
        }
    }
}

proptest! {
    /// Validation of any create request never panics, and a request it accepts encodes to a
    /// REST body with every required part.
    #[test]
    fn create_validation_never_panics_and_accepted_requests_encode(request in create_request()) {
        let mut v = Violations::default();
        validate::create_cash_in(&request, &mut v);
        if v.finish().is_ok() {
            let body = serde_json::to_value(convert::create_body(&request)).unwrap();
            prop_assert!(body["customerId"].as_str().is_some_and(|c| c.starts_with("cst_")));
            prop_assert_eq!(body["source"]["asset"].as_str(), Some("usd"));
            prop_assert!(body["cash"]["cashLocationId"].as_str().is_some_and(|c| c.starts_with("loc_")));
            prop_assert!(body["destination"]["wallet"].as_object().is_some_and(|w| w.len() == 1));
        }
    }

    /// Validation of any location search never panics, and accepts only finite, in-range points.
    #[test]
    fn location_validation_never_panics(provider in text(), latitude in coordinate(), longitude in coordinate(), flow in opt_text()) {
        let request = pb::ListCashLocationsRequest { provider, latitude, longitude, flow };
        let mut v = Violations::default();
        validate::list_cash_locations(&request, &mut v);
        if v.finish().is_ok() {
            let (lat, lng) = (request.latitude.unwrap(), request.longitude.unwrap());
            prop_assert!(lat.is_finite() && (-90.0..=90.0).contains(&lat));
            prop_assert!(lng.is_finite() && (-180.0..=180.0).contains(&lng));
        }
    }

    /// Any plain decimal amount and flat fee (up to the 12 whole digits the gateway reads), with
    /// as many fees as the gateway's bound, passes validation: limits on them are OMS's.
    #[test]
    fn well_formed_amounts_and_fees_are_left_to_oms(
        amount in "[0-9]{1,12}(\\.[0-9]{1,2})?",
        flat_fee in "[0-9]{1,12}(\\.[0-9]{1,2})?",
        fees in 0..=50usize,
    ) {
        use pb::create_cash_in_request::DeveloperFee;
        let location = pb::CashLocation { id: "loc_1".into(), loc_reference: "ref".into(), ..Default::default() };
        let mut request = common::create_request(&location, "cst_1");
        request.source.as_mut().expect("source").indicated_amount = Some(amount);
        request.developer_fees = vec![DeveloperFee { flat_fee: Some(flat_fee), wallet: Some("wlt_1".into()), ..Default::default() }; fees];
        let mut v = Violations::default();
        validate::create_cash_in(&request, &mut v);
        prop_assert!(v.finish().is_ok());
    }

    /// Decimal parsing accepts exactly plain decimals.
    #[test]
    fn decimals_parse_or_refuse_without_panicking(text in text()) {
        if let Some(units) = validate::parse_decimal(&text, 2) {
            prop_assert!(text.bytes().all(|b| b.is_ascii_digit() || b == b'.'));
            prop_assert_eq!(validate::parse_decimal(&format!("{}.{:02}", units / 100, units % 100), 2), Some(units));
        }
    }
}

// === x-forwarded-client-cert: whatever a caller prefixes, the sidecar's element decides ===

mod xfcc {
    use oms_gateway::fuzzing::security::{IdentityHeader, identity_from_header};
    use proptest::prelude::*;

    /// A quoted XFCC value as a sidecar writes it: `"` and `\` escaped.
    fn quoted(text: &str) -> String {
        format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
    }

    /// A SPIFFE ID.
    fn spiffe() -> impl Strategy<Value = String> {
        "[a-z]{1,8}(/[a-z0-9.-]{1,8}){1,4}".prop_map(|path| format!("spiffe://{path}"))
    }

    /// An element a sidecar appends for a verified peer, and that peer's URI.
    fn sidecar_element() -> impl Strategy<Value = (String, String)> {
        (
            spiffe(),
            spiffe(),
            "[0-9a-f]{8,64}",
            proptest::option::of("[ -~]{0,40}"),
            proptest::collection::vec("[a-z0-9.-]{1,20}", 0..3),
            any::<bool>(),
        )
            .prop_map(|(by, uri, hash, subject, dns, quote_uri)| {
                let mut element = format!("By={by};Hash={hash}");
                if let Some(subject) = subject {
                    element.push_str(&format!(";Subject={}", quoted(&subject)));
                }
                if quote_uri {
                    element.push_str(&format!(";URI={}", quoted(&uri)));
                } else {
                    element.push_str(&format!(";URI={uri}"));
                }
                for name in dns {
                    element.push_str(&format!(";DNS={name}"));
                }
                (element, uri)
            })
    }

    /// Anything a caller might send as its own header value, rich in the grammar's characters.
    fn caller_prefix() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z=;,\"\\\\ :/.]{0,60}",
            spiffe().prop_map(|uri| format!("URI={uri};Subject=\"")),
            spiffe().prop_map(|uri| format!("URI={uri};Subject=\"x\\")),
            (spiffe(), "[ -~]{0,30}").prop_map(|(uri, tail)| format!("URI={uri}{tail}")),
        ]
    }

    fn identity(value: &str) -> Option<String> {
        identity_from_header(IdentityHeader::ForwardedClientCert, value)
    }

    proptest! {
        /// The sidecar's element alone names its peer.
        #[test]
        fn the_sidecars_element_names_its_peer((element, uri) in sidecar_element()) {
            prop_assert_eq!(identity(&element), Some(uri));
        }

        /// For any prefix a caller controls, the caller is the sidecar's URI or no one.
        #[test]
        fn no_prefix_names_anyone_but_the_sidecars_peer(
            prefix in caller_prefix(),
            (element, uri) in sidecar_element(),
        ) {
            let header = format!("{prefix},{element}");
            let seen = identity(&header);
            prop_assert!(seen.is_none() || seen.as_deref() == Some(uri.as_str()),
                "{header:?} gave {seen:?}");
        }

        /// A prefix of well-formed elements is passed over.
        #[test]
        fn well_formed_earlier_elements_are_passed_over(
            earlier in proptest::collection::vec(sidecar_element(), 1..4),
            (element, uri) in sidecar_element(),
        ) {
            let mut header: Vec<String> = earlier.into_iter().map(|(e, _)| e).collect();
            header.push(element);
            prop_assert_eq!(identity(&header.join(",")), Some(uri));
        }

        /// Any text at all: an identity or none, never a panic.
        #[test]
        fn any_header_value_parses_or_is_refused(value in "[ -~]{0,200}") {
            let _ = identity(&value);
            let _ = identity_from_header(IdentityHeader::LinkerdClientId, &value);
        }
    }
}

// === statuses ===

const _: () = assert!(MAX_STATUS_BYTES < 8 * 1024, "a status stays under 8 KiB");

/// The bytes `status` takes as sent: `grpc-message` and `grpc-status-details-bin` as tonic
/// writes them.
fn travelling(status: &tonic::Status) -> usize {
    let mut headers = http::HeaderMap::new();
    status
        .add_header(&mut headers)
        .expect("a status writes its headers");
    ["grpc-message", "grpc-status-details-bin"]
        .iter()
        .filter_map(|name| headers.get(*name))
        .map(|value| value.len())
        .sum()
}

/// What every status keeps to: under 8 KiB as sent (within MAX_STATUS_BYTES), exactly one
/// ErrorInfo, at most 20 violations listed, and, when some were left out, a message that counts
/// them.
fn assert_bounded(status: &tonic::Status) -> Result<(), TestCaseError> {
    let size = travelling(status);
    prop_assert!(size <= MAX_STATUS_BYTES, "{} bytes", size);
    let infos: Vec<_> = status
        .get_error_details_vec()
        .into_iter()
        .filter_map(|d| match d {
            ErrorDetail::ErrorInfo(info) => Some(info),
            _ => None,
        })
        .collect();
    prop_assert_eq!(infos.len(), 1);
    let listed = status
        .get_error_details()
        .bad_request()
        .map_or(0, |b| b.field_violations.len());
    prop_assert!(listed <= MAX_LISTED_VIOLATIONS);
    if infos[0].reason == "INVALID_REQUEST_FIELDS" {
        let total: usize = infos[0].metadata["violations"].parse().unwrap();
        prop_assert!(listed >= 1 && listed <= total);
        if total > listed {
            let more = format!("; and {} more", total - listed);
            prop_assert!(status.message().ends_with(&more), "{}", status.message());
        }
    }
    Ok(())
}

/// Text of any length up to `max` characters, often non-ASCII or control characters (which
/// travel percent-encoded, three bytes each).
fn long_text(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        text(),
        prop::collection::vec(any::<char>(), 0..max).prop_map(|c| c.into_iter().collect()),
        (any::<char>(), 0..max).prop_map(|(c, n)| std::iter::repeat_n(c, n).collect()),
    ]
}

/// Short text, cheap to generate in bulk: empty, id-like, or any characters.
fn short_text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "(wlt|cst)_[a-z0-9]{0,8}",
        prop::collection::vec(any::<char>(), 0..48).prop_map(|c| c.into_iter().collect()),
    ]
}

fn opt_short_text() -> impl Strategy<Value = Option<String>> {
    prop::option::of(short_text())
}

prop_compose! {
    /// A create request with up to 4 times as many fees as allowed (past that, the decoder
    /// refuses it from its counts before validation sees it) and a little over the metadata
    /// bound: up to about 450 violations.
    fn wide_create_request()(
        request in create_request(),
        fees in prop::collection::vec((opt_short_text(), opt_short_text(), opt_short_text(), opt_short_text()), 0..200),
        metadata in prop::collection::hash_map(short_text(), short_text(), 0..60),
    ) -> pb::CreateCashInRequest {
        use pb::create_cash_in_request::DeveloperFee;
        pb::CreateCashInRequest {
            developer_fees: fees
                .into_iter()
                .map(|(percentage, flat_fee, wallet, payout_asset)| DeveloperFee { percentage, flat_fee, wallet, payout_asset })
                .collect(),
            metadata,
            ..request
        }
    }
}

/// The short pass's setting for targets whose every case builds tens of kilobytes of input (the
/// bounded-status ones): 48 cases, unless `PROPTEST_CASES` asks for a run of its own.
fn wide_inputs() -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 48;
    }
    config
}

proptest! {
    #![proptest_config(wide_inputs())]

    /// Whatever a create request holds, its refusal is a bounded status.
    #[test]
    fn a_refused_create_request_is_a_bounded_status(request in wide_create_request()) {
        let mut v = Violations::default();
        validate::create_cash_in(&request, &mut v);
        if let Err(err) = v.finish() {
            assert_bounded(&err.into())?;
        }
    }

    /// Whatever a location search or a watch filter holds, its refusal is a bounded status.
    #[test]
    fn a_refused_search_or_filter_is_a_bounded_status(
        provider in long_text(2000),
        latitude in coordinate(),
        longitude in coordinate(),
        flow in prop::option::of(long_text(2000)),
        statuses in prop::collection::vec(any::<i32>(), 0..400),
    ) {
        let request = pb::ListCashLocationsRequest { provider, latitude, longitude, flow };
        let mut v = Violations::default();
        validate::list_cash_locations(&request, &mut v);
        if let Err(err) = v.finish() {
            assert_bounded(&err.into())?;
        }
        let mut v = Violations::default();
        let named = validate::watch_statuses(&mut v, &statuses);
        prop_assert!(named.len() <= 5);
        if let Err(err) = v.finish() {
            assert_bounded(&err.into())?;
        }
    }

    /// Whatever OMS answers (any message, code, request id, any number of field errors), the
    /// status it becomes is bounded.
    #[test]
    fn any_upstream_answer_is_a_bounded_status(
        status in 400u16..600,
        message in long_text(10_000),
        code in prop::option::of(long_text(500)),
        request_id in prop::option::of(long_text(500)),
        field_errors in prop::collection::vec((long_text(300), long_text(300)), 0..100),
        id in long_text(300),
    ) {
        let answer = Answer { status, message, code, request_id, field_errors };
        assert_bounded(&statuses::of_upstream(&id, answer))?;
    }

    /// Whatever text the gateway's own errors carry, their statuses are bounded.
    #[test]
    fn any_error_of_the_gateway_is_a_bounded_status(kind in any::<u8>(), text in long_text(20_000)) {
        assert_bounded(&statuses::of_own(kind, text))?;
    }
}

// === bounds read off the wire ===

/// A request body: messages of these lengths (contents arbitrary), framed, cut into chunks at
/// `cuts` (fractions of the body).
fn body(lengths: &[usize], cuts: &[prop::sample::Index]) -> Vec<Vec<u8>> {
    let mut bytes = Vec::new();
    for (i, len) in lengths.iter().enumerate() {
        bytes.push(0);
        bytes.extend_from_slice(&(*len as u32).to_be_bytes());
        // Only the last message needs its bytes: the bound is read from the prefix.
        if i + 1 < lengths.len() {
            bytes.extend(std::iter::repeat_n(0xff, *len));
        }
    }
    let mut at: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
    at.sort();
    let mut chunks = Vec::new();
    let mut from = 0;
    for to in at.into_iter().chain([bytes.len()]) {
        chunks.push(bytes[from..to].to_vec());
        from = to;
    }
    chunks
}

proptest! {
    /// Any bytes as a request body: never a panic.
    #[test]
    fn any_request_body_is_read_without_panicking(chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..20)) {
        let _ = wire::oversized_message(&chunks);
    }

    /// A message over the bound is found from its prefix wherever the body is cut, and no other.
    #[test]
    fn an_oversized_message_is_found_wherever_the_body_is_cut(
        lengths in prop::collection::vec(prop_oneof![0usize..64, Just(MAX_REQUEST_MESSAGE_BYTES), Just(MAX_REQUEST_MESSAGE_BYTES + 1), (MAX_REQUEST_MESSAGE_BYTES + 1)..(1 << 31)], 1..4),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let small: Vec<usize> = lengths.iter().map(|l| (*l).min(64)).collect();
        let mut sent = small[..small.len() - 1].to_vec();
        sent.push(*lengths.last().unwrap());
        let expected = (*lengths.last().unwrap() > MAX_REQUEST_MESSAGE_BYTES).then(|| *lengths.last().unwrap() as u64);
        prop_assert_eq!(wire::oversized_message(&body(&sent, &cuts)), expected);
    }

    /// Any bytes as a CreateCashInRequest: the entry count check never panics, and refuses
    /// exactly the requests far over a bound.
    #[test]
    fn entry_counts_are_read_from_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512), fees in 0usize..400) {
        let _ = wire::create_request_entries(&bytes);
        let request = pb::CreateCashInRequest {
            developer_fees: vec![Default::default(); fees],
            ..Default::default()
        };
        let refused = wire::create_request_entries(&prost::Message::encode_to_vec(&request)).is_err();
        // 4 × validate's bound of 50 developer fees.
        prop_assert_eq!(refused, fees > 200);
    }
}

// === over a real connection ===

/// One gateway (embedded sandbox) on a runtime of its own, for the black-box properties.
fn gateway() -> &'static (tokio::runtime::Runtime, common::TestGateway) {
    static GATEWAY: std::sync::OnceLock<(tokio::runtime::Runtime, common::TestGateway)> =
        std::sync::OnceLock::new();
    GATEWAY.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let gateway = runtime.block_on(common::start());
        (runtime, gateway)
    })
}

proptest! {
    #![proptest_config(wide_inputs())]

    /// Any create request, sent over HTTP/2 to a running gateway: its answer's status, as sent,
    /// is under 8 KiB, whether the gateway refuses it or OMS does.
    #[test]
    fn any_create_request_over_the_wire_gets_a_small_status(request in wide_create_request()) {
        let (runtime, gateway) = gateway();
        let answer = runtime.block_on(common::raw_unary(
            &gateway.channel,
            "/polygon.oms.v1.CashInService/CreateCashIn",
            &request,
        ));
        if answer.code() != tonic::Code::Ok {
            prop_assert!(answer.block_bytes() < 8 * 1024, "{} bytes", answer.block_bytes());
            assert_bounded(&answer.status())?;
        }
    }
}

/// A TOML value of any kind a policy line might hold: numbers of every sign and size, strings,
/// booleans, arrays.
fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        (0u32..2_000_000).prop_map(|n| n.to_string()),
        (0.0f64..200_000.0).prop_map(|f| format!("{f}")),
        "[a-z0-9_ -]{0,70}".prop_map(|s| format!("{s:?}")),
        any::<bool>().prop_map(|b| b.to_string()),
        Just("[\"spiffe://td/*\"]".to_owned()),
    ]
}

/// A `[[quota]]` or `[default_quota]` table: keys the format knows (and one it does not), any
/// value each.
fn quota_table() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("name"),
        Just("callers"),
        Just("calls_per_second"),
        Just("concurrent_calls"),
        Just("watch_streams"),
        Just("watched_resources"),
        Just("burst"),
    ];
    (
        any::<bool>(),
        prop::collection::vec((key, toml_value()), 0..8),
    )
        .prop_map(|(default, lines)| {
            let mut table = if default {
                "[default_quota]\n"
            } else {
                "[[quota]]\n"
            }
            .to_owned();
            for (key, value) in lines {
                table.push_str(&format!("{key} = {value}\n"));
            }
            table
        })
}

proptest! {
    /// Whatever quotas a policy file holds, it loads with every limit inside its documented
    /// range, or is refused naming where (a line, or the rule); never a panic.
    #[test]
    fn a_policy_with_any_quotas_loads_within_bounds_or_is_refused_with_a_line(
        tables in prop::collection::vec(quota_table(), 0..4),
    ) {
        let text = format!(
            "[[allow]]\ncallers = [\"*\"]\nmethods = [\"*\"]\n\n{}",
            tables.join("\n")
        );
        match Policy::parse(&text) {
            Ok(policy) => {
                if let Some(quota) = policy.quota_of("spiffe://td/ns/a/sa/b") {
                    let limits = quota.limits;
                    if let Some(rate) = limits.calls_per_second {
                        prop_assert!((0.01..=100_000.0).contains(&rate), "{rate} from {text}");
                    }
                    for count in [limits.concurrent_calls, limits.watch_streams, limits.watched_resources]
                        .into_iter()
                        .flatten()
                    {
                        prop_assert!((1..=1_000_000).contains(&count), "{count} from {text}");
                    }
                    prop_assert!(quota.name.len() <= 63, "{} from {text}", quota.name);
                }
            }
            // A value or key the TOML reader refuses names its line; a rule's own checks name
            // the rule (as for `[[allow]]`).
            Err(error) => prop_assert!(
                error.contains("line ") || error.contains("[[quota]] rule ") || error.starts_with("[default_quota]"),
                "{error} from {text}"
            ),
        }
    }
}
