//! Every RPC's happy path, as a user of the README would call it: find a location, create a
//! cash-in, read it, list cash-ins with filters and pages, refresh its code.

use crate::common;

use oms_gateway::proto::v1 as pb;
use prost_types::Timestamp;
use std::time::{Duration, SystemTime};
use tonic::{Code, Request};

/// Seconds from now until `ts` (negative when it is past).
fn seconds_from_now(ts: &Timestamp) -> i64 {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64;
    ts.seconds - now
}

fn ids(cash_ins: &[pb::CashIn]) -> Vec<String> {
    cash_ins.iter().map(|c| c.id.clone()).collect()
}

async fn list(
    gateway: &common::TestGateway,
    request: pb::ListCashInsRequest,
) -> pb::ListCashInsResponse {
    gateway
        .cash_ins()
        .list_cash_ins(request)
        .await
        .expect("ListCashIns")
        .into_inner()
}

/// Creates cash-ins for `customer` one after another, a few milliseconds apart so each has its
/// own creation time; returns them oldest first.
async fn create_several(
    gateway: &common::TestGateway,
    customer: &str,
    n: usize,
) -> Vec<pb::CashIn> {
    let mut created = Vec::new();
    for _ in 0..n {
        created.push(common::create_cash_in(gateway, customer).await);
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    created
}

/// Waits into the next whole second. OMS's timestamps are whole seconds (as its docs show them,
/// and so the sandbox's), so two states or two expiries a test tells apart by time must lie a
/// second boundary apart.
async fn next_whole_second() {
    let into = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_millis());
    tokio::time::sleep(Duration::from_millis(u64::from(1_000 - into) + 20)).await;
}

#[tokio::test]
async fn list_cash_locations_returns_loc_ids_with_references_nearest_first() {
    let gateway = common::start().await;
    let locations = gateway
        .locations()
        .list_cash_locations(pb::ListCashLocationsRequest {
            flow: Some("cash-in".into()),
            ..common::guide_point()
        })
        .await
        .expect("ListCashLocations")
        .into_inner()
        .cash_locations;
    assert!(locations.len() >= 2, "several locations: {locations:?}");
    for location in &locations {
        assert!(location.id.starts_with("loc_"), "{location:?}");
        assert!(!location.loc_reference.is_empty(), "{location:?}");
        assert!(!location.name.is_empty(), "{location:?}");
        assert_eq!(location.provider.as_deref(), Some("greendot"));
        assert!(location.coordinates.is_some(), "{location:?}");
        assert!(location.distance.is_some(), "{location:?}");
    }
    let distances: Vec<f64> = locations
        .iter()
        .map(|l| l.distance.unwrap_or(f64::NAN))
        .collect();
    assert!(
        distances.windows(2).all(|pair| pair[0] <= pair[1]),
        "nearest first: {distances:?}"
    );
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn create_cash_in_prices_the_guides_worked_example_and_echoes_key_and_metadata() {
    let gateway = common::start().await;
    let location = common::first_location(&gateway.channel).await;
    let mut request = Request::new(common::create_request(&location, "cst_01H9Xa"));
    request.get_mut().idempotency_key = "create-worked-example".into();
    let response = gateway
        .cash_ins()
        .create_cash_in(request)
        .await
        .expect("CreateCashIn");
    assert_eq!(
        response
            .metadata()
            .get("idempotency-key")
            .map(|v| v.to_str().ok()),
        Some(Some("create-worked-example"))
    );
    let cash_in = response.into_inner().cash_in.expect("cash_in");

    assert!(cash_in.id.starts_with("ci_"), "{}", cash_in.id);
    assert_eq!(cash_in.status, pb::CashInStatus::Pending as i32);
    assert_eq!(cash_in.r#type, pb::TransferType::FiatToCrypto as i32);
    assert_eq!(cash_in.customer_id, "cst_01H9Xa");
    let instructions = cash_in
        .deposit_instructions
        .clone()
        .expect("depositInstructions");
    assert!(!instructions.code.is_empty());
    let expires_in = seconds_from_now(instructions.expires_at.as_ref().expect("expiresAt"));
    assert!(
        (3500..=3601).contains(&expires_in),
        "code valid for an hour: {expires_in}s"
    );

    // $200 with developer fees 1% + $1.00 and OMS fees 2% + $1.00: $8.00 of fees, 192.00 USDC.
    let source = cash_in.source.clone().expect("source");
    assert_eq!(source.indicated_amount.as_deref(), Some("200.00"));
    assert_eq!(source.amount_net.as_deref(), Some("192.00"));
    let fees = source.fees_deducted.expect("source.feesDeducted");
    assert_eq!(
        (
            fees.total.as_str(),
            fees.developer.as_str(),
            fees.oms.as_str()
        ),
        ("8.00", "3.00", "5.00")
    );
    let destination = cash_in.destination.clone().expect("destination");
    assert_eq!(destination.amount_net.as_deref(), Some("192.00"));
    assert_eq!(destination.asset.as_deref(), Some("usdc"));
    assert_eq!(
        destination.wallet.and_then(|w| w.id).as_deref(),
        Some("wlt_01H9Xb")
    );
    assert_eq!(
        cash_in.rates.clone().expect("rates").effective_rate,
        "0.9600"
    );

    let cash = cash_in.cash.clone().expect("cash");
    assert_eq!(cash.location_id, location.id);
    assert_eq!(cash.location_reference, location.loc_reference);
    let fees = common::fee_forms(&cash_in);
    assert_eq!(
        fees,
        [
            (Some("0.01"), None, Some("2.00")),
            (None, Some("1.00"), Some("1.00"))
        ],
        "each developer fee with its computed amount"
    );
    assert_eq!(
        cash_in.metadata.get("order_id").map(String::as_str),
        Some("ord_789")
    );
    assert_eq!(cash_in.metadata.len(), 1);
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn get_cash_in_returns_the_created_cash_in() {
    let gateway = common::start().await;
    let created = common::create_cash_in(&gateway, "cst_get1").await;
    let fetched = gateway.get(&created.id).await;
    assert_eq!(fetched, created);
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn list_cash_ins_filters_by_customer_newest_first() {
    let gateway = common::start().await;
    let mine = create_several(&gateway, "cst_list_a", 3).await;
    create_several(&gateway, "cst_list_b", 2).await;
    let page = list(
        &gateway,
        pb::ListCashInsRequest {
            customer_id: "cst_list_a".into(),
            ..Default::default()
        },
    )
    .await;
    let newest_first: Vec<String> = ids(&mine).into_iter().rev().collect();
    assert_eq!(ids(&page.cash_ins), newest_first);
    assert!(page.cash_ins.iter().all(|c| c.customer_id == "cst_list_a"));
    assert_eq!(page.next_page_token, "", "one page holds them all");

    let everyone = list(&gateway, pb::ListCashInsRequest::default()).await;
    assert_eq!(everyone.cash_ins.len(), 5);
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn list_cash_ins_filters_by_status() {
    let gateway = common::start().await;
    let created = create_several(&gateway, "cst_status", 3).await;
    gateway.expire(&created[1].id).await;
    let expired = list(
        &gateway,
        pb::ListCashInsRequest {
            customer_id: "cst_status".into(),
            status: pb::CashInStatus::Expired as i32,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(ids(&expired.cash_ins), [created[1].id.clone()]);
    assert_eq!(expired.cash_ins[0].status, pb::CashInStatus::Expired as i32);
    let pending = list(
        &gateway,
        pb::ListCashInsRequest {
            customer_id: "cst_status".into(),
            status: pb::CashInStatus::Pending as i32,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        ids(&pending.cash_ins),
        [created[2].id.clone(), created[0].id.clone()]
    );
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn list_cash_ins_filters_by_creation_time_inclusively() {
    let gateway = common::start().await;
    // A second apart: creation times are whole seconds.
    let mut created = Vec::new();
    for _ in 0..3 {
        next_whole_second().await;
        created.push(common::create_cash_in(&gateway, "cst_times").await);
    }
    let middle = created[1].created_at.expect("createdAt");
    let after = list(
        &gateway,
        pb::ListCashInsRequest {
            created_after: Some(middle),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        ids(&after.cash_ins),
        [created[2].id.clone(), created[1].id.clone()]
    );
    let before = list(
        &gateway,
        pb::ListCashInsRequest {
            created_before: Some(middle),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        ids(&before.cash_ins),
        [created[1].id.clone(), created[0].id.clone()]
    );
    let exactly = list(
        &gateway,
        pb::ListCashInsRequest {
            created_after: Some(middle),
            created_before: Some(middle),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(ids(&exactly.cash_ins), [created[1].id.clone()]);
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn list_cash_ins_pages_through_five_cash_ins_two_at_a_time() {
    let gateway = common::start().await;
    let created = create_several(&gateway, "cst_pages", 5).await;
    let mut pages = Vec::new();
    let mut token = String::new();
    loop {
        let page = list(
            &gateway,
            pb::ListCashInsRequest {
                customer_id: "cst_pages".into(),
                page_size: 2,
                page_token: token.clone(),
                ..Default::default()
            },
        )
        .await;
        pages.push(ids(&page.cash_ins));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
        assert!(pages.len() < 5, "paging does not end: {pages:?}");
    }
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 1]);
    let all: Vec<String> = pages.concat();
    let newest_first: Vec<String> = ids(&created).into_iter().rev().collect();
    assert_eq!(all, newest_first);
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn a_page_token_reused_with_other_filters_is_invalid_argument() {
    let gateway = common::start().await;
    create_several(&gateway, "cst_token", 3).await;
    let first = list(
        &gateway,
        pb::ListCashInsRequest {
            customer_id: "cst_token".into(),
            page_size: 2,
            ..Default::default()
        },
    )
    .await;
    assert!(!first.next_page_token.is_empty());
    let status = gateway
        .cash_ins()
        .list_cash_ins(pb::ListCashInsRequest {
            customer_id: "cst_someone_else".into(),
            page_size: 2,
            page_token: first.next_page_token.clone(),
            ..Default::default()
        })
        .await
        .expect_err("a token bound to other filters");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(common::violation_fields(&status), ["page_token"]);
    assert_eq!(common::error_info(&status).domain, "oms-gateway");

    let status = gateway
        .cash_ins()
        .list_cash_ins(pb::ListCashInsRequest {
            customer_id: "cst_token".into(),
            status: pb::CashInStatus::Pending as i32,
            page_size: 2,
            page_token: first.next_page_token,
            ..Default::default()
        })
        .await
        .expect_err("a token bound to other filters");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(common::violation_fields(&status), ["page_token"]);
    gateway.gateway.shutdown().await;
}

/// A `GET /cash-ins` answer: `ids` (newest first), more to come, and `cursor` if any.
fn page_body(ids: &[&str], cursor: Option<&str>) -> String {
    let data: Vec<serde_json::Value> = ids
        .iter()
        .map(|id| serde_json::json!({"id": id, "status": "pending", "customerId": "cst_loop"}))
        .collect();
    let mut body = serde_json::json!({"data": data, "hasMore": true});
    if let Some(cursor) = cursor {
        body["nextCursor"] = cursor.into();
    }
    body.to_string()
}

/// Pages ListCashIns for `cst_loop` while OMS (fault injection) answers the first list with
/// `first` and the second with `second`: the first page, then the status of the second.
async fn page_twice(first: String, second: String) -> (pb::ListCashInsResponse, tonic::Status) {
    let gateway = common::start().await;
    for body in [first, second] {
        gateway
            .sandbox()
            .inject(common::respond("GET", "/cash-ins", 1, 200, body, &[]));
    }
    let request = |page_token: String| pb::ListCashInsRequest {
        customer_id: "cst_loop".into(),
        page_size: 2,
        page_token,
        ..Default::default()
    };
    let first = list(&gateway, request(String::new())).await;
    assert!(!first.next_page_token.is_empty(), "OMS says there is more");
    let second = gateway
        .cash_ins()
        .list_cash_ins(request(first.next_page_token.clone()))
        .await
        .expect_err("the same page again ends the listing");
    let lists = common::api_requests(gateway.sandbox())
        .into_iter()
        .filter(|r| r.method == "GET" && r.path == "/cash-ins")
        .count();
    assert_eq!(
        lists, 2,
        "one request per page, none repeated by the gateway"
    );
    gateway.gateway.shutdown().await;
    (first, second)
}

fn assert_cursor_repeated(status: &tonic::Status) {
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    let info = common::error_info(status);
    assert_eq!(info.reason, "UPSTREAM_CURSOR_REPEATED", "{info:?}");
    assert_eq!(info.domain, "oms-gateway", "{info:?}");
    assert_eq!(
        info.metadata.get("operation").map(String::as_str),
        Some("GET /cash-ins")
    );
}

// Before: an OMS that ignores `startingAfter` (undocumented for cash-ins) answered the second
// page with the first, cursor and all, and the gateway handed out a `next_page_token` that
// gave the same page forever.
#[tokio::test]
async fn a_page_that_repeats_the_cursor_sent_ends_the_listing() {
    let body = page_body(&["ci_loop2", "ci_loop1"], Some("ci_loop1"));
    let (first, second) = page_twice(body.clone(), body).await;
    assert_eq!(ids(&first.cash_ins), ["ci_loop2", "ci_loop1"]);
    assert_cursor_repeated(&second);
}

// The same page under a new cursor: the cash-in the token points after (OMS sent no
// `nextCursor`, so the cursor is the page's last id) comes back in the page after it.
#[tokio::test]
async fn a_page_that_holds_the_cash_in_it_starts_after_ends_the_listing() {
    let (_, second) = page_twice(
        page_body(&["ci_loop2", "ci_loop1"], None),
        page_body(&["ci_loop2", "ci_loop1"], Some("cur_opaque_2")),
    )
    .await;
    assert_cursor_repeated(&second);
}

#[tokio::test]
async fn refresh_cash_in_issues_a_new_code_with_a_later_expiry() {
    let gateway = common::start().await;
    let created = common::create_cash_in(&gateway, "cst_refresh").await;
    let old = created
        .deposit_instructions
        .clone()
        .expect("depositInstructions");
    // Expiries are whole seconds: refresh in the next one, so the new expiry is later.
    next_whole_second().await;
    let response = gateway
        .cash_ins()
        .refresh_cash_in(pb::RefreshCashInRequest {
            cash_in_id: created.id.clone(),
            idempotency_key: "refresh-1".into(),
        })
        .await
        .expect("RefreshCashIn");
    assert_eq!(
        response
            .metadata()
            .get("idempotency-key")
            .map(|v| v.to_str().ok()),
        Some(Some("refresh-1"))
    );
    let refreshed = response.into_inner().cash_in.expect("cash_in");
    assert_eq!(refreshed.id, created.id);
    assert_eq!(refreshed.status, pb::CashInStatus::Pending as i32);
    let new = refreshed.deposit_instructions.expect("depositInstructions");
    assert_ne!(new.code, old.code, "a new code");
    let (old_expiry, new_expiry) = (
        old.expires_at.expect("old expiry"),
        new.expires_at.expect("new expiry"),
    );
    assert!(
        (new_expiry.seconds, new_expiry.nanos) > (old_expiry.seconds, old_expiry.nanos),
        "{new_expiry} is later than {old_expiry}"
    );
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn refresh_of_an_expired_cash_in_is_failed_precondition() {
    let gateway = common::start().await;
    let created = common::create_cash_in(&gateway, "cst_refresh_expired").await;
    gateway.expire(&created.id).await;
    let status = gateway
        .cash_ins()
        .refresh_cash_in(pb::RefreshCashInRequest {
            cash_in_id: created.id.clone(),
            idempotency_key: "refresh-after-end".into(),
        })
        .await
        .expect_err("only a pending cash-in can be refreshed");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("expired"), "{}", status.message());
    let info = common::error_info(&status);
    assert_eq!(info.domain, "oms.polygon.technology");
    assert_eq!(
        info.metadata.get("httpStatus").map(String::as_str),
        Some("422")
    );
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn refresh_of_a_completed_cash_in_is_failed_precondition() {
    let gateway = common::start().await;
    let created = common::create_cash_in(&gateway, "cst_refresh_done").await;
    let completed = gateway
        .simulator()
        .simulate_deposit(pb::SimulateDepositRequest {
            cash_in_id: created.id.clone(),
            amount: String::new(),
            authorize_only: false,
        })
        .await
        .expect("SimulateDeposit")
        .into_inner()
        .cash_in
        .expect("cash_in");
    assert_eq!(completed.status, pb::CashInStatus::Completed as i32);
    let status = gateway
        .cash_ins()
        .refresh_cash_in(pb::RefreshCashInRequest {
            cash_in_id: created.id.clone(),
            idempotency_key: "refresh-after-end".into(),
        })
        .await
        .expect_err("only a pending cash-in can be refreshed");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    gateway.gateway.shutdown().await;
}
