//! The bodies of the deposit simulation (`POST /cash-ins/simulate/…`, what a store counter
//! would send) and of the sandbox-only controls (`POST /sandbox/cash-ins/{id}/fail`,
//! `POST /sandbox/cash-ins/{id}/delivery/fail`).

use crate::error::ApiError;
use crate::pricing::Cents;
use crate::store::{
    Commit, DEFAULT_FAILURE_CODE, DEFAULT_FAILURE_MESSAGE, DeliveryError, SubStatus, normalize_code,
};

use super::fields::{Problems, cash_amount, optional_str, parse_object, required_str};

pub(crate) fn parse_barcode_auth(body: &[u8]) -> Result<(Option<String>, Cents), ApiError> {
    let root = parse_object(body)?;
    let mut p = Problems::default();
    let code = required_str(Some(&root), "", "accountNumber", &mut p).map(normalize_code);
    let amount = required_str(Some(&root), "", "amount", &mut p)
        .and_then(|s| cash_amount(s, "amount", &mut p));
    match (code, amount) {
        (Some(code), Some(amount)) if p.is_empty() => Ok((code, amount)),
        _ => Err(p.into_error()),
    }
}

/// `POST /cash-ins/simulate/auth-commit`. A malformed account number cannot match any code, so
/// it is carried as-is and fails the lookup (404) rather than validation.
pub(crate) fn parse_auth_commit(body: &[u8]) -> Result<Commit, ApiError> {
    let root = parse_object(body)?;
    let obj = Some(&root);
    let mut p = Problems::default();
    let code = required_str(obj, "", "accountNumber", &mut p);
    let cash_in_id = required_str(obj, "", "accountReferenceNumber", &mut p);
    let amount =
        required_str(obj, "", "amount", &mut p).and_then(|s| cash_amount(s, "amount", &mut p));
    let confirmation_id = required_str(obj, "", "originalConfirmationId", &mut p);
    let customer_id = optional_str(obj, "", "customerId", &mut p);
    let _description = optional_str(obj, "", "description", &mut p);
    match (code, cash_in_id, amount, confirmation_id) {
        (Some(code), Some(id), Some(amount), Some(cnf)) if p.is_empty() => Ok(Commit {
            code: normalize_code(code).unwrap_or_else(|| code.to_owned()),
            cash_in_id: id.to_owned(),
            amount,
            confirmation_id: cnf.to_owned(),
            customer_id: customer_id.map(str::to_owned),
        }),
        _ => Err(p.into_error()),
    }
}

/// `POST /sandbox/cash-ins/{id}/fail`: an optional `subStatus` (an empty body is fine).
pub(crate) fn parse_fail(body: &[u8]) -> Result<SubStatus, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(SubStatus::CashDepositFailed);
    }
    let root = parse_object(body)?;
    let mut p = Problems::default();
    let sub = match optional_str(Some(&root), "", "subStatus", &mut p) {
        None => Some(SubStatus::CashDepositFailed),
        Some(s) => SubStatus::parse_failure(s),
    };
    match sub {
        Some(sub) if p.is_empty() => Ok(sub),
        _ => {
            if p.is_empty() {
                p.add(
                    "subStatus",
                    "must be cash_deposit_failed, provider_order_failed or provider_order_template_error",
                );
            }
            Err(p.into_error())
        }
    }
}

/// `POST /sandbox/cash-ins/{id}/delivery/fail`: an optional `code` and `message` (an empty body
/// is fine): the guide's `on_chain_revert` example by default.
pub(crate) fn parse_delivery_failure(body: &[u8]) -> Result<DeliveryError, ApiError> {
    let mut error = DeliveryError {
        code: DEFAULT_FAILURE_CODE.to_owned(),
        message: DEFAULT_FAILURE_MESSAGE.to_owned(),
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(error);
    }
    let root = parse_object(body)?;
    let mut p = Problems::default();
    if let Some(code) = optional_str(Some(&root), "", "code", &mut p) {
        error.code = code.to_owned();
    }
    if let Some(message) = optional_str(Some(&root), "", "message", &mut p) {
        error.message = message.to_owned();
    }
    if p.is_empty() {
        Ok(error)
    } else {
        Err(p.into_error())
    }
}
