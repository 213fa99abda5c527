//! Request validation: raw JSON bodies and query strings in, validated inputs out, or a 400 that
//! lists every problem found (with the REST field path as the caller spelled it).
//!
//! Bodies are walked as `serde_json::Value` rather than derived into structs because serde stops
//! at the first error, and OMS-style validation reports all of them. A wrong JSON type is a
//! validation problem like any other (400), never a panic or a 422. Unknown fields are ignored.
//! JSON `null` counts as "absent" for optional fields and as "missing" for required ones.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::error::ApiError;
use super::locations;
use super::model::FieldProblem;
use super::pricing::{self, Cents, DecimalError, FeeTerms};
use super::store::{
    Asset, Commit, Cursor, DevFee, ListQuery, NewCashIn, Status, SubStatus, WalletRef,
    normalize_code,
};

const METADATA_MAX_KEYS: usize = 50;
const METADATA_MAX_KEY_CHARS: usize = 40;
const METADATA_MAX_VALUE_CHARS: usize = 500;
const LIST_DEFAULT_LIMIT: usize = 50;
const LIST_MAX_LIMIT: usize = 100;

/// Problems found so far.
#[derive(Default)]
struct Problems(Vec<FieldProblem>);

impl Problems {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldProblem::new(field, message));
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn into_error(self) -> ApiError {
        ApiError::validation(self.0)
    }
}

/// The body as a JSON object, or a 400 saying why not.
pub(crate) fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid_json(
            "the request body must be a JSON object",
        ));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::invalid_json(
            "the request body must be a JSON object",
        )),
        Err(e) => Err(ApiError::invalid_json(format!(
            "the request body is not valid JSON: {e}"
        ))),
    }
}

/// A present, non-null member.
fn member<'a>(obj: Option<&'a Map<String, Value>>, key: &str) -> Option<&'a Value> {
    obj?.get(key).filter(|v| !v.is_null())
}

fn path(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

/// A required string member; records "is required" or "must be a string".
fn required_str<'a>(
    obj: Option<&'a Map<String, Value>>,
    prefix: &str,
    key: &str,
    p: &mut Problems,
) -> Option<&'a str> {
    match member(obj, key) {
        None => {
            p.add(path(prefix, key), "is required");
            None
        }
        Some(v) => string_value(v, &path(prefix, key), p),
    }
}

/// An optional string member.
fn optional_str<'a>(
    obj: Option<&'a Map<String, Value>>,
    prefix: &str,
    key: &str,
    p: &mut Problems,
) -> Option<&'a str> {
    member(obj, key).and_then(|v| string_value(v, &path(prefix, key), p))
}

fn string_value<'a>(v: &'a Value, field: &str, p: &mut Problems) -> Option<&'a str> {
    match v {
        Value::String(s) => Some(s),
        _ => {
            p.add(field, "must be a string");
            None
        }
    }
}

/// An object member: `Ok(None)` when absent (its required children then report themselves,
/// which names the actual fields), `Err` (already reported) when it is not an object.
fn object_member<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    p: &mut Problems,
) -> Result<Option<&'a Map<String, Value>>, ()> {
    match member(Some(obj), key) {
        None => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => {
            p.add(key, "must be an object");
            Err(())
        }
    }
}

/// One of two accepted names for the same field: the value and the name it was sent under.
fn aliased<'a>(
    obj: Option<&'a Map<String, Value>>,
    prefix: &str,
    names: [&'static str; 2],
    p: &mut Problems,
) -> Option<(&'a str, String)> {
    let [primary, alias] = names;
    let a = member(obj, primary).map(|v| (v, path(prefix, primary)));
    let b = member(obj, alias).map(|v| (v, path(prefix, alias)));
    match (a, b) {
        (None, None) => {
            p.add(path(prefix, primary), "is required");
            None
        }
        (Some((v, f)), None) | (None, Some((v, f))) => string_value(v, &f, p).map(|s| (s, f)),
        (Some((va, fa)), Some((vb, fb))) => {
            let sa = string_value(va, &fa, p)?;
            let sb = string_value(vb, &fb, p)?;
            if sa == sb {
                Some((sa, fa))
            } else {
                p.add(fa, format!("conflicts with {fb}; send one of them"));
                None
            }
        }
    }
}

fn money_problem(e: DecimalError) -> &'static str {
    match e {
        DecimalError::Format => {
            "must be a decimal string with at most 2 fraction digits, e.g. \"200.00\""
        }
        DecimalError::TooLarge => "is too large",
    }
}

/// A cash amount the provider accepts: a decimal string within 20.00–500.00.
fn cash_amount(s: &str, field: &str, p: &mut Problems) -> Option<Cents> {
    match pricing::parse_money(s) {
        Ok(c) if (pricing::MIN_AMOUNT..=pricing::MAX_AMOUNT).contains(&c) => Some(c),
        Ok(_) => {
            p.add(
                field,
                format!(
                    "must be between {} and {}",
                    pricing::format_cents(pricing::MIN_AMOUNT),
                    pricing::format_cents(pricing::MAX_AMOUNT)
                ),
            );
            None
        }
        Err(e) => {
            p.add(field, money_problem(e));
            None
        }
    }
}

fn has_prefix_and_more(s: &str, prefix: &str) -> bool {
    s.len() > prefix.len() && s.starts_with(prefix)
}

fn is_evm_address(s: &str) -> bool {
    s.len() == 42
        && s.starts_with("0x")
        && s.get(2..)
            .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
}

// === POST /cash-ins ===

/// Validates a create request completely, resolving its location reference on the way.
pub(crate) fn parse_create(body: &[u8]) -> Result<NewCashIn, ApiError> {
    let root = parse_object(body)?;
    let mut p = Problems::default();

    let customer_id = required_str(Some(&root), "", "customerId", &mut p);
    if let Some(c) = customer_id
        && !has_prefix_and_more(c, "cst_")
    {
        p.add("customerId", "must be a customer id (cst_…)");
    }

    // source
    let source = object_member(&root, "source", &mut p);
    let mut indicated = Some(pricing::DEFAULT_INDICATED);
    if let Ok(source) = source {
        if let Some(asset) = required_str(source, "source", "asset", &mut p)
            && asset != "usd"
        {
            p.add("source.asset", "must be \"usd\"");
        }
        if let Some(s) = optional_str(source, "source", "indicatedAmount", &mut p) {
            indicated = cash_amount(s, "source.indicatedAmount", &mut p);
        } else if member(source, "indicatedAmount").is_some() {
            indicated = None;
        }
    }

    // destination
    let mut dest_asset = None;
    let mut network = None;
    let mut wallet = None;
    if let Ok(dest) = object_member(&root, "destination", &mut p) {
        if let Some(a) = required_str(dest, "destination", "asset", &mut p) {
            dest_asset = Asset::parse(a);
            if dest_asset.is_none() {
                p.add("destination.asset", "must be \"usdc\" or \"usdt\"");
            }
        }
        if let Some(n) = required_str(dest, "destination", "network", &mut p) {
            if n.trim().is_empty() {
                p.add("destination.network", "must not be empty");
            } else {
                network = Some(n.to_owned());
            }
        }
        wallet = parse_wallet(dest, &mut p);
    }

    // cash
    let mut location = None;
    if let Ok(cash) = object_member(&root, "cash", &mut p) {
        let mut id = aliased(cash, "cash", ["cashLocationId", "locationId"], &mut p);
        if let Some((value, field)) = &id
            && !has_prefix_and_more(value, "loc_")
        {
            p.add(field.clone(), "must be a cash location id (loc_…)");
            // Already reported; a "does not match" on top would say the same thing twice.
            id = None;
        }
        let reference = aliased(
            cash,
            "cash",
            ["cashLocationReference", "locationReference"],
            &mut p,
        );
        if let Some((reference, ref_field)) = reference {
            match locations::resolve(reference) {
                None => p.add(
                    ref_field,
                    "is not a locReference returned by GET /cash-locations",
                ),
                Some(resolved) => match id {
                    Some((id, _)) if id == resolved.id => {
                        location = Some((id.to_owned(), reference.to_owned(), resolved));
                    }
                    Some((_, id_field)) => {
                        p.add(id_field, format!("does not match {ref_field}"));
                    }
                    // The id's own problem is already recorded.
                    None => {}
                },
            }
        }
    }

    let sponsor_gas = match member(Some(&root), "sponsorGas") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            p.add("sponsorGas", "must be a boolean");
            false
        }
    };

    let developer_fees = match member(Some(&root), "developerFees") {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .filter_map(|(i, v)| parse_fee(v, i, &mut p))
            .collect(),
        Some(_) => {
            p.add("developerFees", "must be an array");
            Vec::new()
        }
    };

    let metadata = parse_metadata(member(Some(&root), "metadata"), &mut p);

    // Fees may only be judged against the amount once both are known to be valid.
    if p.is_empty()
        && let Some(amount) = indicated
    {
        let terms: Vec<FeeTerms> = developer_fees.iter().map(DevFee::terms).collect();
        let q = pricing::quote(amount, &terms);
        if q.net <= 0 {
            p.add(
                "developerFees",
                format!(
                    "fees of {} leave nothing to deliver from {}",
                    pricing::format_cents(q.total),
                    pricing::format_cents(amount)
                ),
            );
        }
    }

    match (
        customer_id,
        indicated,
        dest_asset,
        network,
        wallet,
        location,
    ) {
        (
            Some(customer_id),
            Some(indicated),
            Some(dest_asset),
            Some(network),
            Some(wallet),
            Some((location_id, location_reference, resolved)),
        ) if p.is_empty() => Ok(NewCashIn {
            customer_id: customer_id.to_owned(),
            indicated,
            dest_asset,
            network,
            wallet,
            location_id,
            location_reference,
            location_name: resolved.name,
            location_address: resolved.address,
            sponsor_gas,
            developer_fees,
            metadata,
        }),
        _ => {
            if p.is_empty() {
                // Unreachable in practice: every None above recorded a problem. Kept so that a
                // future edit that forgets one still answers 400 instead of creating garbage.
                p.add("", "is invalid");
            }
            Err(p.into_error())
        }
    }
}

/// `destination.wallet`: exactly one of `wallet` (or `id`), `blockchainAddress`,
/// `externalAccount`.
fn parse_wallet(dest: Option<&Map<String, Value>>, p: &mut Problems) -> Option<WalletRef> {
    const FIELD: &str = "destination.wallet";
    let w = match member(dest, "wallet") {
        None => {
            p.add(FIELD, "is required");
            return None;
        }
        Some(Value::Object(w)) => w,
        Some(_) => {
            p.add(FIELD, "must be an object");
            return None;
        }
    };
    let kinds = ["wallet", "id", "blockchainAddress", "externalAccount"];
    let present: Vec<&str> = kinds
        .into_iter()
        .filter(|k| member(Some(w), k).is_some())
        .collect();
    if present.len() != 1 {
        p.add(
            FIELD,
            "must have exactly one of wallet (or id), blockchainAddress, externalAccount",
        );
        return None;
    }
    let kind = present.first().copied().unwrap_or("wallet");
    let field = format!("{FIELD}.{kind}");
    let value = member(Some(w), kind).and_then(|v| string_value(v, &field, p))?;
    let (ok, expected, wallet) = match kind {
        "blockchainAddress" => (
            is_evm_address(value),
            "must be a 0x-prefixed 40-hex-digit address",
            WalletRef::BlockchainAddress(value.to_owned()),
        ),
        "externalAccount" => (
            has_prefix_and_more(value, "cpBcAddr_"),
            "must be a saved blockchain address id (cpBcAddr_…)",
            WalletRef::ExternalAccount(value.to_owned()),
        ),
        _ => (
            has_prefix_and_more(value, "wlt_"),
            "must be a wallet id (wlt_…)",
            WalletRef::Wallet(value.to_owned()),
        ),
    };
    if ok {
        Some(wallet)
    } else {
        p.add(field, expected);
        None
    }
}

/// One developer fee, in either spelling: the guide's `{type, rate|amount, wallet}` or the
/// schema's `{percentage?, flatFee?, wallet?, payoutAsset?}`.
fn parse_fee(v: &Value, i: usize, p: &mut Problems) -> Option<DevFee> {
    let prefix = format!("developerFees[{i}]");
    let Value::Object(entry) = v else {
        p.add(prefix, "must be an object");
        return None;
    };
    let entry = Some(entry);
    let before = p.0.len();
    let rate = |s: &str, field: String, p: &mut Problems| match pricing::parse_rate(s) {
        Ok(r) if r < 1_000_000 => Some(r),
        Ok(_) => {
            p.add(field, "must be at least 0 and less than 1");
            None
        }
        Err(_) => {
            p.add(
                field,
                "must be a decimal rate string with at most 6 fraction digits, e.g. \"0.01\"",
            );
            None
        }
    };
    let flat = |s: &str, field: String, p: &mut Problems| match pricing::parse_money(s) {
        Ok(c) => Some(c),
        Err(e) => {
            p.add(field, money_problem(e));
            None
        }
    };

    let (percentage, flat_fee) = match optional_str(entry, &prefix, "type", p) {
        Some("percentage") => {
            let r = required_str(entry, &prefix, "rate", p)
                .and_then(|s| rate(s, path(&prefix, "rate"), p));
            (r, None)
        }
        Some("fixed") => {
            let a = required_str(entry, &prefix, "amount", p)
                .and_then(|s| flat(s, path(&prefix, "amount"), p));
            (None, a)
        }
        Some(_) => {
            p.add(path(&prefix, "type"), "must be \"percentage\" or \"fixed\"");
            (None, None)
        }
        None if member(entry, "type").is_some() => (None, None),
        None => {
            let r = optional_str(entry, &prefix, "percentage", p)
                .and_then(|s| rate(s, path(&prefix, "percentage"), p));
            let a = optional_str(entry, &prefix, "flatFee", p)
                .and_then(|s| flat(s, path(&prefix, "flatFee"), p));
            if member(entry, "percentage").is_none() && member(entry, "flatFee").is_none() {
                p.add(
                    prefix.clone(),
                    "must have a type (percentage or fixed), or percentage and/or flatFee",
                );
            }
            (r, a)
        }
    };
    let wallet = optional_str(entry, &prefix, "wallet", p).map(str::to_owned);
    let payout_asset = match optional_str(entry, &prefix, "payoutAsset", p) {
        None => Asset::Usdc,
        Some(s) => Asset::parse(s).unwrap_or_else(|| {
            p.add(path(&prefix, "payoutAsset"), "must be \"usdc\" or \"usdt\"");
            Asset::Usdc
        }),
    };
    (p.0.len() == before).then_some(DevFee {
        percentage,
        flat: flat_fee,
        wallet,
        payout_asset,
    })
}

fn parse_metadata(v: Option<&Value>, p: &mut Problems) -> Option<BTreeMap<String, String>> {
    let map = match v? {
        Value::Object(m) => m,
        _ => {
            p.add("metadata", "must be an object of string values");
            return None;
        }
    };
    if map.len() > METADATA_MAX_KEYS {
        p.add(
            "metadata",
            format!("must have at most {METADATA_MAX_KEYS} keys"),
        );
    }
    let mut out = BTreeMap::new();
    for (k, v) in map {
        let field = format!("metadata.{k}");
        let chars = k.chars().count();
        if chars == 0 || chars > METADATA_MAX_KEY_CHARS {
            p.add(
                field.clone(),
                format!("key must be 1 to {METADATA_MAX_KEY_CHARS} characters"),
            );
        }
        match v {
            Value::String(s) if s.chars().count() <= METADATA_MAX_VALUE_CHARS => {
                out.insert(k.clone(), s.clone());
            }
            Value::String(_) => p.add(
                field,
                format!("must be at most {METADATA_MAX_VALUE_CHARS} characters"),
            ),
            _ => p.add(field, "must be a string"),
        }
    }
    Some(out)
}

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
            *slot = super::clock::parse_rfc3339_nanos(s);
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

// === simulation and sandbox control ===

/// `POST /cash-ins/simulate/barcode-auth`: the code (digits) and the amount.
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

#[cfg(test)]
#[allow(clippy::inconsistent_digit_grouping)] // cents as dollars_cents: `200_00` is $200.00
mod tests {
    use super::*;
    use base64::Engine as _;
    use serde_json::json;

    fn valid_location() -> (String, String) {
        let l = locations::search(38.495133, -121.505336)
            .into_iter()
            .next()
            .expect("a location");
        (l.id, l.reference)
    }

    fn fields(e: &ApiError) -> Vec<&str> {
        e.details.iter().map(|d| d.field.as_str()).collect()
    }

    fn create(v: Value) -> Result<NewCashIn, ApiError> {
        parse_create(v.to_string().as_bytes())
    }

    #[test]
    fn the_guides_request_is_accepted() {
        let (id, reference) = valid_location();
        let ci = create(json!({
            "customerId": "cst_01H9Xa",
            "source": {"asset": "usd", "indicatedAmount": "200.00"},
            "destination": {"wallet": {"wallet": "wlt_01H9Xb"}, "asset": "usdc", "network": "polygon"},
            "cash": {"cashLocationId": id, "cashLocationReference": reference},
            "sponsorGas": false,
            "developerFees": [
                {"type": "percentage", "rate": "0.01", "wallet": "wlt_01H9Xf"},
                {"type": "fixed", "amount": "1.00", "wallet": "wlt_01H9Xf"}
            ],
            "metadata": {"order_id": "ord_789"},
            "somethingNew": [1, 2, 3]
        }))
        .expect("valid");
        assert_eq!(ci.indicated, 200_00);
        assert_eq!(ci.developer_fees.len(), 2);
        assert_eq!(ci.wallet, WalletRef::Wallet("wlt_01H9Xb".into()));
    }

    #[test]
    fn the_schema_spelling_is_accepted_too() {
        let (id, reference) = valid_location();
        let ci = create(json!({
            "customerId": "cst_1",
            "source": {"asset": "usd"},
            "destination": {"wallet": {"id": "wlt_1"}, "asset": "usdt", "network": "polygon"},
            "cash": {"locationId": id, "locationReference": reference},
            "developerFees": [{"percentage": "0.01", "flatFee": "1.00", "payoutAsset": "usdt"}]
        }))
        .expect("valid");
        assert_eq!(ci.indicated, pricing::DEFAULT_INDICATED);
        assert_eq!(ci.developer_fees[0].percentage, Some(10_000));
        assert_eq!(ci.developer_fees[0].flat, Some(1_00));
        assert_eq!(ci.developer_fees[0].payout_asset, Asset::Usdt);
    }

    #[test]
    fn every_problem_is_listed() {
        let e = create(json!({
            "customerId": 5,
            "source": {"asset": "eur", "indicatedAmount": "19.99"},
            "destination": {"wallet": {"wallet": "wlt_1", "blockchainAddress": "0x0"}, "asset": "btc"},
            "cash": {"cashLocationId": "nope", "cashLocationReference": "bad"},
            "sponsorGas": "yes",
            "developerFees": [{"type": "percentage", "rate": "1.5"}, {}, 7],
            "metadata": {"k": 1}
        }))
        .expect_err("invalid");
        assert_eq!(e.status, http::StatusCode::BAD_REQUEST);
        assert_eq!(e.code, "validation_error");
        assert_eq!(
            fields(&e),
            vec![
                "customerId",
                "source.asset",
                "source.indicatedAmount",
                "destination.asset",
                "destination.network",
                "destination.wallet",
                "cash.cashLocationId",
                "cash.cashLocationReference",
                "sponsorGas",
                "developerFees[0].rate",
                "developerFees[1]",
                "developerFees[2]",
                "metadata.k",
            ]
        );
    }

    #[test]
    fn missing_parents_report_their_required_children() {
        let e = create(json!({})).expect_err("invalid");
        assert_eq!(
            fields(&e),
            vec![
                "customerId",
                "source.asset",
                "destination.asset",
                "destination.network",
                "destination.wallet",
                "cash.cashLocationId",
                "cash.cashLocationReference",
            ]
        );
        // A parent of the wrong type is reported once, at the parent.
        let e = create(json!({"source": "usd"})).expect_err("invalid");
        assert!(fields(&e).contains(&"source"));
    }

    #[test]
    fn a_reference_must_match_its_id() {
        let (_, reference) = valid_location();
        let e = create(json!({
            "customerId": "cst_1",
            "source": {"asset": "usd"},
            "destination": {"wallet": {"blockchainAddress": format!("0x{}", "ab".repeat(20))}, "asset": "usdc", "network": "polygon"},
            "cash": {"cashLocationId": "loc_000000000000000000000000", "cashLocationReference": reference}
        }))
        .expect_err("mismatch");
        assert_eq!(fields(&e), vec!["cash.cashLocationId"]);
        let forged = base64::engine::general_purpose::STANDARD.encode("GREENDOT-1:lat=1,lng=2");
        let e = create(json!({
            "customerId": "cst_1",
            "source": {"asset": "usd"},
            "destination": {"wallet": {"externalAccount": "cpBcAddr_1"}, "asset": "usdc", "network": "polygon"},
            "cash": {"locationId": "loc_1", "locationReference": forged}
        }))
        .expect_err("forged");
        assert_eq!(fields(&e), vec!["cash.locationReference"]);
    }

    #[test]
    fn fees_that_eat_the_whole_amount_are_refused() {
        let (id, reference) = valid_location();
        let e = create(json!({
            "customerId": "cst_1",
            "source": {"asset": "usd", "indicatedAmount": "20.00"},
            "destination": {"wallet": {"id": "wlt_1"}, "asset": "usdc", "network": "polygon"},
            "cash": {"locationId": id, "locationReference": reference},
            "developerFees": [{"flatFee": "18.60"}]
        }))
        .expect_err("net <= 0");
        assert_eq!(fields(&e), vec!["developerFees"]);
    }

    #[test]
    fn non_objects_are_invalid_json() {
        for body in [&b""[..], b"[]", b"\"x\"", b"{", b"null"] {
            let e = parse_create(body).expect_err("invalid");
            assert_eq!(e.code, "invalid_json");
        }
    }

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
