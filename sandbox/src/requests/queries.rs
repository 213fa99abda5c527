//! The query strings: `GET /cash-ins` (filters, page size, paging cursors) and
//! `GET /cash-locations` (provider, point, flow). A repeated parameter counts by its last value.

use crate::error::ApiError;
use crate::model::FieldProblem;
use crate::store::{Cursor, ListQuery, Status};

use super::fields::Problems;

const LIST_DEFAULT_LIMIT: usize = 50;
const LIST_MAX_LIMIT: usize = 100;

// === GET /cash-ins ===

/// Parses the list query; an empty value counts as absent.
pub(crate) fn parse_list_query(params: &[(String, String)]) -> Result<ListQuery, ApiError> {
    let get = |name: &str| {
        params
            .iter()
            .rev()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    };
    let mut p = Problems::default();
    let mut q = ListQuery {
        customer: get("customer").map(str::to_owned),
        limit: LIST_DEFAULT_LIMIT,
        ..ListQuery::default()
    };
    if let Some(s) = get("status") {
        q.status = Status::parse(s);
        if q.status.is_none() {
            p.add(
                "status",
                "must be one of pending, processing, completed, failed, expired",
            );
        }
    }
    for (name, slot) in [
        ("createdAfter", &mut q.created_after),
        ("createdBefore", &mut q.created_before),
    ] {
        if let Some(s) = get(name) {
            *slot = crate::clock::parse_rfc3339_nanos(s);
            if slot.is_none() {
                p.add(
                    name,
                    "must be an RFC 3339 date-time, e.g. 2026-03-16T18:30:00Z",
                );
            }
        }
    }
    if let Some(s) = get("limit") {
        match s.parse::<usize>() {
            Ok(n) if (1..=LIST_MAX_LIMIT).contains(&n) => q.limit = n,
            _ => p.add(
                "limit",
                format!("must be an integer from 1 to {LIST_MAX_LIMIT}"),
            ),
        }
    }
    match (get("startingAfter"), get("endingBefore")) {
        (Some(_), Some(_)) => p.add("endingBefore", "cannot be combined with startingAfter"),
        (Some(id), None) => q.cursor = Some(Cursor::StartingAfter(id.to_owned())),
        (None, Some(id)) => q.cursor = Some(Cursor::EndingBefore(id.to_owned())),
        (None, None) => {}
    }
    if p.is_empty() {
        Ok(q)
    } else {
        Err(p.into_error())
    }
}

// === GET /cash-locations ===

/// The point to search around, after checking every parameter.
pub(crate) fn parse_locations_query(params: &[(String, String)]) -> Result<(f64, f64), ApiError> {
    let get = |name: &str| {
        params
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let mut p = Problems::default();
    let mut unsupported = None;
    match get("provider").filter(|s| !s.is_empty()) {
        None => p.add("provider", "is required"),
        Some(s) if s.eq_ignore_ascii_case("greendot") => {}
        Some(s) => unsupported = Some(s.to_owned()),
    }
    let mut coordinate = |name: &str, limit: f64| {
        let s = get(name).filter(|s| !s.is_empty());
        let Some(s) = s else {
            p.add(name, "is required");
            return None;
        };
        match parse_plain_number(s) {
            Some(v) if v.abs() <= limit => Some(v),
            _ => {
                p.add(
                    name,
                    format!("must be a decimal number from -{limit} to {limit}"),
                );
                None
            }
        }
    };
    let lat = coordinate("latitude", 90.0);
    let lng = coordinate("longitude", 180.0);
    if let Some(flow) = get("flow").filter(|s| !s.is_empty())
        && flow != "cash-in"
        && flow != "cash-out"
    {
        p.add("flow", "must be cash-in or cash-out");
    }
    if !p.is_empty() {
        if let Some(provider) = unsupported {
            p.add(
                "provider",
                format!("{provider:?} is not supported; use greendot"),
            );
        }
        return Err(p.into_error());
    }
    if let Some(provider) = unsupported {
        return Err(ApiError {
            details: vec![FieldProblem::new("provider", "must be greendot")],
            ..ApiError::new(
                http::StatusCode::BAD_REQUEST,
                "unsupported_provider",
                format!("provider {provider:?} is not supported; the sandbox serves greendot"),
            )
        });
    }
    match (lat, lng) {
        (Some(lat), Some(lng)) => Ok((lat, lng)),
        _ => Err(ApiError::validation(vec![FieldProblem::new(
            "latitude",
            "is invalid",
        )])),
    }
}

/// `-12.5`, `38`, `+4.25`: a plain decimal; no exponents, `inf` or `NaN`.
fn parse_plain_number(s: &str) -> Option<f64> {
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let plain = !int.is_empty()
        && int.len() <= 3
        && frac.len() <= 15
        && !(digits.contains('.') && frac.is_empty())
        && int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit());
    if !plain {
        return None;
    }
    s.parse::<f64>().ok().filter(|v| v.is_finite())
}

#[cfg(test)]
mod tests {
    use super::super::problem_fields as fields;
    use super::*;

    #[test]
    fn list_query_problems_are_all_reported() {
        let params = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        let e = parse_list_query(&params(&[
            ("status", "done"),
            ("createdAfter", "nope"),
            ("limit", "0"),
        ]))
        .expect_err("invalid");
        assert_eq!(fields(&e), vec!["status", "createdAfter", "limit"]);
        let q = parse_list_query(&params(&[("customer", "cst_1"), ("limit", "100")])).expect("ok");
        assert_eq!(q.limit, 100);
        assert_eq!(parse_list_query(&[]).map(|q| q.limit).ok(), Some(50));
    }

    #[test]
    fn location_query_checks() {
        let params = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        let e = parse_locations_query(&params(&[("latitude", "91"), ("longitude", "1e3")]))
            .expect_err("invalid");
        assert_eq!(fields(&e), vec!["provider", "latitude", "longitude"]);
        let e = parse_locations_query(&params(&[
            ("provider", "moneygram"),
            ("latitude", "38.5"),
            ("longitude", "-121.5"),
        ]))
        .expect_err("unsupported");
        assert_eq!(e.code, "unsupported_provider");
        let ok = parse_locations_query(&params(&[
            ("provider", "greendot"),
            ("latitude", "38.495133"),
            ("longitude", "-121.505336"),
            ("flow", "cash-in"),
        ]));
        assert_eq!(ok.ok(), Some((38.495133, -121.505336)));
        assert_eq!(parse_plain_number("NaN"), None);
        assert_eq!(parse_plain_number("inf"), None);
        assert_eq!(parse_plain_number("5."), None);
    }
}
