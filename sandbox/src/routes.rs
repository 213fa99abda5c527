//! The endpoints the sandbox serves ([`Route`]) and how a method and path resolve to one, or to
//! the 404/405 to answer: a leaf, so the request pipeline (`server`) and the handlers both name
//! routes without importing each other.

use http::Method;

use super::error::ApiError;

/// The moves `POST /sandbox/cash-ins/{id}/delivery/{action}` knows.
pub(crate) const DELIVERY_ACTIONS: [&str; 4] = ["under-review", "complete", "fail", "refund"];
/// The fault plan's control endpoint, exempt from every fault.
pub(crate) const FAULTS_PATH: &str = "/sandbox/faults";

/// An endpoint the sandbox serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    Token,
    CreateCashIn,
    ListCashIns,
    GetCashIn(String),
    RefreshCashIn(String),
    BarcodeAuth,
    AuthCommit,
    CashLocations,
    ExpireCashIn(String),
    FailCashIn(String),
    /// `GET /sandbox/cash-ins/{id}/delivery`.
    Delivery(String),
    /// `POST /sandbox/cash-ins/{id}/delivery/{action}`, one of [`DELIVERY_ACTIONS`].
    DriveDelivery(String, &'static str),
    /// `GET /transactions/{id}`: a transaction, as its webhooks show it (see the crate docs).
    Transaction(String),
    GetFaults,
    SetFaults,
}

/// Maps a method and path to a route, or to the 404/405 to answer.
pub(crate) fn resolve(method: &Method, path: &str) -> Result<Route, ApiError> {
    let not_found = || ApiError::not_found(format!("no route for {path}"));
    let segments: Vec<&str> = path
        .strip_prefix('/')
        .ok_or_else(not_found)?
        .split('/')
        .collect();
    let get = method == Method::GET;
    let post = method == Method::POST;
    let only = |allowed: bool, allow: &'static str, route: Route| {
        if allowed {
            Ok(route)
        } else {
            Err(ApiError::method_not_allowed(allow))
        }
    };
    let id = |s: &str| s.to_owned();
    match segments.as_slice() {
        ["auth", "token"] => only(post, "POST", Route::Token),
        ["cash-ins"] if get => Ok(Route::ListCashIns),
        ["cash-ins"] => only(post, "GET, POST", Route::CreateCashIn),
        ["cash-ins", "simulate", "barcode-auth"] => only(post, "POST", Route::BarcodeAuth),
        ["cash-ins", "simulate", "auth-commit"] => only(post, "POST", Route::AuthCommit),
        ["cash-ins", ci] => only(get, "GET", Route::GetCashIn(id(ci))),
        ["cash-ins", ci, "refresh"] => only(post, "POST", Route::RefreshCashIn(id(ci))),
        ["cash-locations"] => only(get, "GET", Route::CashLocations),
        ["transactions", txn] => only(get, "GET", Route::Transaction(id(txn))),
        ["sandbox", "cash-ins", ci, "expire"] => only(post, "POST", Route::ExpireCashIn(id(ci))),
        ["sandbox", "cash-ins", ci, "fail"] => only(post, "POST", Route::FailCashIn(id(ci))),
        ["sandbox", "cash-ins", ci, "delivery"] => only(get, "GET", Route::Delivery(id(ci))),
        ["sandbox", "cash-ins", ci, "delivery", action] => {
            let action = DELIVERY_ACTIONS
                .into_iter()
                .find(|a| a == action)
                .ok_or_else(not_found)?;
            only(post, "POST", Route::DriveDelivery(id(ci), action))
        }
        ["sandbox", "faults"] if get => Ok(Route::GetFaults),
        ["sandbox", "faults"] => only(method == Method::PUT, "GET, PUT", Route::SetFaults),
        _ => Err(not_found()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_resolve_with_404_and_405() {
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(resolve(&post, "/auth/token").ok(), Some(Route::Token));
        assert_eq!(resolve(&get, "/cash-ins").ok(), Some(Route::ListCashIns));
        assert_eq!(resolve(&post, "/cash-ins").ok(), Some(Route::CreateCashIn));
        assert_eq!(
            resolve(&get, "/cash-ins/ci_1").ok(),
            Some(Route::GetCashIn("ci_1".into()))
        );
        assert_eq!(
            resolve(&post, "/cash-ins/simulate/auth-commit").ok(),
            Some(Route::AuthCommit)
        );
        assert_eq!(
            resolve(&post, "/sandbox/cash-ins/ci_1/fail").ok(),
            Some(Route::FailCashIn("ci_1".into()))
        );
        let status = |m: &Method, p: &str| resolve(m, p).err().map(|e| e.status.as_u16());
        assert_eq!(status(&get, "/auth/token"), Some(405));
        assert_eq!(status(&Method::DELETE, "/cash-ins"), Some(405));
        assert_eq!(status(&post, "/cash-ins/ci_1"), Some(405));
        assert_eq!(status(&get, "/v0.9/cash-ins"), Some(404));
        assert_eq!(status(&get, "/cash-ins/ci_1/refresh/x"), Some(404));
        assert_eq!(status(&get, ""), Some(404));
        assert_eq!(
            resolve(&get, "/sandbox/faults").ok(),
            Some(Route::GetFaults)
        );
        assert_eq!(
            resolve(&Method::PUT, "/sandbox/faults").ok(),
            Some(Route::SetFaults)
        );
        assert_eq!(status(&post, "/sandbox/faults"), Some(405));
        assert_eq!(
            resolve(&post, "/sandbox/cash-ins/ci_1/delivery/under-review").ok(),
            Some(Route::DriveDelivery("ci_1".into(), "under-review"))
        );
        assert_eq!(
            resolve(&get, "/sandbox/cash-ins/ci_1/delivery").ok(),
            Some(Route::Delivery("ci_1".into()))
        );
        assert_eq!(
            resolve(&get, "/transactions/txn_1").ok(),
            Some(Route::Transaction("txn_1".into()))
        );
        assert_eq!(status(&post, "/transactions/txn_1"), Some(405));
        assert_eq!(
            status(&post, "/sandbox/cash-ins/ci_1/delivery/explode"),
            Some(404)
        );
        assert_eq!(
            status(&get, "/sandbox/cash-ins/ci_1/delivery/complete"),
            Some(405)
        );
    }
}
