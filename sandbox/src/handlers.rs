//! One function per endpoint: validated input in, `(status, JSON)` or an `ApiError` out.
//!
//! Handlers are synchronous and run after the server has journaled the request, applied faults,
//! checked the bearer token and reserved the Idempotency-Key (POST only), so none of that
//! appears here.
//! Each takes the store lock once, which makes every mutation atomic with respect to others.

use http::{StatusCode, Uri};
use serde::Serialize;
use serde_json::Value;

use super::auth::constant_time_eq;
use super::clock::{duration_ms, format_ms, now_ms};
use super::error::ApiError;
use super::fault_plan::FaultPlan;
use super::locations;
use super::model::{
    AuthCommitResponse, BarcodeAuthResponse, CashLocationDto, FieldProblem, ListEnvelope,
    LocationsEnvelope, TokenResponse, render_cash_in, render_transaction,
};
use super::pricing::format_cents;
use super::requests;
use super::routes::Route;
use super::state::{Sandbox, lock};
use super::store::{DeliveryAction, Refusal};

pub(crate) type Outcome = Result<(StatusCode, Value), ApiError>;

pub(crate) fn handle(sb: &Sandbox, route: &Route, uri: &Uri, body: &[u8]) -> Outcome {
    match route {
        Route::Token => token(sb, body),
        Route::CreateCashIn => create(sb, body),
        Route::ListCashIns => list(sb, uri),
        Route::GetCashIn(id) => get(sb, id),
        Route::RefreshCashIn(id) => refresh(sb, id),
        Route::BarcodeAuth => barcode_auth(sb, body),
        Route::AuthCommit => auth_commit(sb, body),
        Route::CashLocations => cash_locations(uri),
        Route::ExpireCashIn(id) => expire(sb, id),
        Route::FailCashIn(id) => fail(sb, id, body),
        Route::Delivery(id) => delivery(sb, id),
        Route::DriveDelivery(id, action) => drive_delivery(sb, id, action, body),
        Route::Transaction(id) => transaction(sb, id),
        Route::GetFaults => faults(sb),
        Route::SetFaults => set_faults(sb, body),
    }
}

fn to_json<T: Serialize>(status: StatusCode, value: &T) -> Outcome {
    serde_json::to_value(value)
        .map(|v| (status, v))
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                format!("could not encode the response: {e}"),
            )
        })
}

fn query_params(uri: &Uri) -> Result<Vec<(String, String)>, ApiError> {
    axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|e| ApiError::invalid_json(format!("the query string is malformed: {e}")))
}

fn unknown_cash_in(id: &str) -> ApiError {
    ApiError::not_found(format!("no cash-in with id {id:?}"))
}

/// Maps a refusal, naming the cash-in when it is the thing that was not found.
fn refused(id: &str) -> impl Fn(Refusal) -> ApiError + '_ {
    move |r| match r {
        Refusal::NotFound => unknown_cash_in(id),
        other => other.into(),
    }
}

// === auth ===

fn token(sb: &Sandbox, body: &[u8]) -> Outcome {
    let creds = requests::parse_object(body)?;
    let key = creds.get("apiKey").and_then(Value::as_str);
    let secret = creds.get("apiSecret").and_then(Value::as_str);
    let valid = match (key, secret) {
        // `&`, not `&&`: both comparisons always run, so timing does not reveal which failed.
        (Some(k), Some(s)) => {
            constant_time_eq(k, &sb.api_key) & constant_time_eq(s, &sb.api_secret)
        }
        _ => false,
    };
    if !valid {
        return Err(ApiError::invalid_credentials());
    }
    let now = now_ms();
    let expires_at = now.saturating_add(duration_ms(sb.token_ttl));
    let access_token = lock(&sb.tokens).issue(&sb.api_key, now, expires_at);
    to_json(
        StatusCode::OK,
        &TokenResponse {
            access_token,
            token_type: "bearer",
            expires_in: sb.token_ttl.as_secs(),
            expires_at: format_ms(expires_at),
        },
    )
}

// === cash-ins ===

fn create(sb: &Sandbox, body: &[u8]) -> Outcome {
    let spec = requests::parse_create(body)?;
    let spelling = sb.spelling();
    let mut store = lock(&sb.store);
    let ci = store.create(spec, now_ms(), sb.code_ttl_ms());
    Ok((StatusCode::CREATED, render_cash_in(ci, &spelling)))
}

fn get(sb: &Sandbox, id: &str) -> Outcome {
    let spelling = sb.spelling();
    let mut store = lock(&sb.store);
    let ci = store.get(id, now_ms()).ok_or_else(|| unknown_cash_in(id))?;
    Ok((StatusCode::OK, render_cash_in(ci, &spelling)))
}

fn list(sb: &Sandbox, uri: &Uri) -> Outcome {
    let query = requests::parse_list_query(&query_params(uri)?)?;
    let spelling = sb.spelling();
    let mut store = lock(&sb.store);
    let page = store.list(&query, now_ms())?;
    let envelope = ListEnvelope {
        data: page
            .items
            .iter()
            .map(|ci| render_cash_in(ci, &spelling))
            .collect(),
        has_more: page.has_more,
        next_cursor: page.next_cursor,
    };
    to_json(StatusCode::OK, &envelope)
}

fn refresh(sb: &Sandbox, id: &str) -> Outcome {
    let spelling = sb.spelling();
    let mut store = lock(&sb.store);
    let ci = store
        .refresh(id, now_ms(), sb.code_ttl_ms())
        .map_err(refused(id))?;
    Ok((StatusCode::OK, render_cash_in(ci, &spelling)))
}

// === simulation ===

fn barcode_auth(sb: &Sandbox, body: &[u8]) -> Outcome {
    let (code, amount) = requests::parse_barcode_auth(body)?;
    let not_found = || ApiError::not_found("no pending cash-in has this deposit code");
    let code = code.ok_or_else(not_found)?;
    let now = now_ms();
    let mut store = lock(&sb.store);
    let (id, auth) = store
        .barcode_auth(&code, amount, now)
        .map_err(|r| match r {
            Refusal::NotFound => not_found(),
            other => other.into(),
        })?;
    let response_id = store.new_id("rsp_", now);
    to_json(
        StatusCode::OK,
        &BarcodeAuthResponse {
            authorized_amount: format_cents(auth.amount),
            confirmation_id: auth.confirmation_id,
            response_code: "00",
            response_id,
            response_text: "Approved",
            account_reference_number: id,
        },
    )
}

fn auth_commit(sb: &Sandbox, body: &[u8]) -> Outcome {
    let commit = requests::parse_auth_commit(body)?;
    let now = now_ms();
    let mut store = lock(&sb.store);
    let authorized = store.auth_commit(&commit, now).map_err(|r| match r {
        Refusal::NotFound => ApiError::not_found(
            "no cash-in was authorized with this originalConfirmationId, accountNumber and accountReferenceNumber",
        ),
        other => other.into(),
    })?;
    let confirmation_id = store.new_id("cnf_", now);
    let response_id = store.new_id("rsp_", now);
    to_json(
        StatusCode::OK,
        &AuthCommitResponse {
            authorized_amount: format_cents(authorized),
            confirmation_id,
            response_code: "00",
            response_id,
            response_text: "Committed",
        },
    )
}

// === cash locations ===

fn cash_locations(uri: &Uri) -> Outcome {
    let (lat, lng) = requests::parse_locations_query(&query_params(uri)?)?;
    let data = locations::search(lat, lng)
        .into_iter()
        .map(CashLocationDto::from)
        .collect();
    to_json(StatusCode::OK, &LocationsEnvelope { data })
}

// === sandbox control ===

fn expire(sb: &Sandbox, id: &str) -> Outcome {
    let spelling = sb.spelling();
    let mut store = lock(&sb.store);
    let ci = store.force_expire(id, now_ms()).map_err(refused(id))?;
    Ok((StatusCode::OK, render_cash_in(ci, &spelling)))
}

fn fail(sb: &Sandbox, id: &str, body: &[u8]) -> Outcome {
    let sub_status = requests::parse_fail(body)?;
    let spelling = sb.spelling();
    let mut store = lock(&sb.store);
    let ci = store
        .force_fail(id, sub_status, now_ms())
        .map_err(refused(id))?;
    Ok((StatusCode::OK, render_cash_in(ci, &spelling)))
}

/// `GET /sandbox/cash-ins/{id}/delivery`: the cash-in's transaction, as webhooks show it.
fn delivery(sb: &Sandbox, id: &str) -> Outcome {
    let spelling = sb.spelling();
    let mut store = lock(&sb.store);
    let ci = store.get(id, now_ms()).ok_or_else(|| unknown_cash_in(id))?;
    let status = ci.status;
    render_transaction(ci, &spelling)
        .map(|t| (StatusCode::OK, t))
        .ok_or_else(|| {
            Refusal::InvalidState {
                status,
                action: "show the transaction of",
            }
            .into()
        })
}

/// `POST /sandbox/cash-ins/{id}/delivery/{action}`: moves the transaction, answers it.
fn drive_delivery(sb: &Sandbox, id: &str, action: &str, body: &[u8]) -> Outcome {
    let action = match action {
        "under-review" => DeliveryAction::Review,
        "complete" => DeliveryAction::Complete,
        "refund" => DeliveryAction::Refund,
        _ => DeliveryAction::Fail(requests::parse_delivery_failure(body)?),
    };
    let spelling = sb.spelling();
    let mut store = lock(&sb.store);
    let ci = store
        .drive_delivery(id, action, now_ms())
        .map_err(refused(id))?;
    render_transaction(ci, &spelling)
        .map(|t| (StatusCode::OK, t))
        .ok_or_else(|| unknown_cash_in(id))
}

/// `GET /transactions/{id}`: the transaction as its latest webhook shows it; 404 like any
/// unknown route while the sandbox is set not to serve transaction reads.
fn transaction(sb: &Sandbox, id: &str) -> Outcome {
    if !sb.serves_transaction_reads() {
        return Err(ApiError::not_found(format!(
            "no route for /transactions/{id}"
        )));
    }
    let spelling = sb.spelling();
    let mut store = lock(&sb.store);
    store
        .by_transaction(id, now_ms())
        .and_then(|ci| render_transaction(ci, &spelling))
        .map(|t| (StatusCode::OK, t))
        .ok_or_else(|| ApiError::not_found(format!("no transaction {id}")))
}

/// `GET /sandbox/faults`: the plan in force, as a spec, and what it has done.
fn faults(sb: &Sandbox) -> Outcome {
    let state = lock(&sb.plan);
    Ok((
        StatusCode::OK,
        serde_json::json!({"spec": state.plan().to_string(), "stats": state.stats()}),
    ))
}

/// `PUT /sandbox/faults`: a spec as the whole body (text), or JSON `{"spec": "..."}`.
fn set_faults(sb: &Sandbox, body: &[u8]) -> Outcome {
    let invalid = |message: String| ApiError::validation(vec![FieldProblem::new("spec", message)]);
    let text = std::str::from_utf8(body)
        .map_err(|_| invalid("the fault plan spec must be UTF-8 text".to_owned()))?
        .trim();
    let spec = if text.starts_with('{') {
        let object = requests::parse_object(body)?;
        match object.get("spec") {
            Some(Value::String(spec)) => spec.clone(),
            _ => return Err(invalid("is required: a fault plan spec string".to_owned())),
        }
    } else {
        text.to_owned()
    };
    let plan: FaultPlan = spec
        .parse()
        .map_err(|e: super::FaultPlanError| invalid(e.to_string()))?;
    tracing::info!(plan = %plan, "sandbox: fault plan set");
    lock(&sb.plan).set(plan);
    faults(sb)
}
