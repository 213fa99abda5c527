//! `POST /cash-ins`: the create body, read part by part (customer, source, destination, cash
//! location, sponsored gas, developer fees, metadata). Each part records its own problems and
//! the next part is read regardless, so one 400 lists everything wrong with the body, in body
//! order.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::locations::{self, ResolvedLocation};
use crate::pricing::{self, Cents};
use crate::store::{Asset, DevFee, NewCashIn, WalletRef, fees_leave_nothing};

use super::fields::{
    Problems, aliased, cash_amount, has_prefix_and_more, is_evm_address, member, money_problem,
    object_member, optional_str, parse_object, path, required_str, string_value,
};

const METADATA_MAX_KEYS: usize = 50;
const METADATA_MAX_KEY_CHARS: usize = 40;
const METADATA_MAX_VALUE_CHARS: usize = 500;

/// `destination`, once all three of its parts are valid.
struct Destination {
    asset: Asset,
    network: String,
    wallet: WalletRef,
}

/// `cash`: the location id and reference as sent, and what the reference stands for.
struct Location {
    id: String,
    reference: String,
    resolved: ResolvedLocation,
}

/// Validates a create request completely, resolving its location reference on the way.
pub(crate) fn parse_create(body: &[u8]) -> Result<NewCashIn, ApiError> {
    let root = parse_object(body)?;
    let mut p = Problems::default();

    let customer_id = parse_customer(&root, &mut p);
    let indicated = parse_source(&root, &mut p);
    let destination = parse_destination(&root, &mut p);
    let location = parse_cash(&root, &mut p);
    let sponsor_gas = parse_sponsor_gas(&root, &mut p);
    let developer_fees = parse_developer_fees(&root, &mut p);
    let metadata = parse_metadata(member(Some(&root), "metadata"), &mut p);

    // Fees may only be judged against the amount once both are known to be valid.
    if p.is_empty()
        && let Some(amount) = indicated
        && let Some(message) = fees_leave_nothing(amount, &developer_fees)
    {
        p.add("developerFees", message);
    }

    match (customer_id, indicated, destination, location) {
        (Some(customer_id), Some(indicated), Some(destination), Some(location)) if p.is_empty() => {
            Ok(NewCashIn {
                customer_id: customer_id.to_owned(),
                indicated,
                dest_asset: destination.asset,
                network: destination.network,
                wallet: destination.wallet,
                location_id: location.id,
                location_reference: location.reference,
                location_name: location.resolved.name,
                location_address: location.resolved.address,
                sponsor_gas,
                developer_fees,
                metadata,
            })
        }
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

/// `customerId`: required, a `cst_…` id.
fn parse_customer<'a>(root: &'a Map<String, Value>, p: &mut Problems) -> Option<&'a str> {
    let customer_id = required_str(Some(root), "", "customerId", p);
    if let Some(c) = customer_id
        && !has_prefix_and_more(c, "cst_")
    {
        p.add("customerId", "must be a customer id (cst_…)");
    }
    customer_id
}

/// `source`: the asset must be `usd`; the indicated amount defaults when absent, and is `None`
/// when present but invalid.
fn parse_source(root: &Map<String, Value>, p: &mut Problems) -> Option<Cents> {
    let mut indicated = Some(pricing::DEFAULT_INDICATED);
    // A `source` of the wrong type is already reported, and the default amount then never
    // reaches a cash-in.
    if let Ok(source) = object_member(root, "source", p) {
        if let Some(asset) = required_str(source, "source", "asset", p)
            && asset != "usd"
        {
            p.add("source.asset", "must be \"usd\"");
        }
        if let Some(s) = optional_str(source, "source", "indicatedAmount", p) {
            indicated = cash_amount(s, "source.indicatedAmount", p);
        } else if member(source, "indicatedAmount").is_some() {
            indicated = None;
        }
    }
    indicated
}

/// `destination`: asset, network and wallet, each checked even when another is wrong.
fn parse_destination(root: &Map<String, Value>, p: &mut Problems) -> Option<Destination> {
    let dest = object_member(root, "destination", p).ok()?;
    let mut asset = None;
    if let Some(a) = required_str(dest, "destination", "asset", p) {
        asset = Asset::parse(a);
        if asset.is_none() {
            p.add("destination.asset", "must be \"usdc\" or \"usdt\"");
        }
    }
    let mut network = None;
    if let Some(n) = required_str(dest, "destination", "network", p) {
        if n.trim().is_empty() {
            p.add("destination.network", "must not be empty");
        } else {
            network = Some(n.to_owned());
        }
    }
    let wallet = parse_wallet(dest, p);
    Some(Destination {
        asset: asset?,
        network: network?,
        wallet: wallet?,
    })
}

/// `cash`: a location id and the reference `GET /cash-locations` gave for it, in either
/// spelling; the reference must resolve, and to that id.
fn parse_cash(root: &Map<String, Value>, p: &mut Problems) -> Option<Location> {
    let cash = object_member(root, "cash", p).ok()?;
    let mut id = aliased(cash, "cash", ["cashLocationId", "locationId"], p);
    if let Some((value, field)) = &id
        && !has_prefix_and_more(value, "loc_")
    {
        p.add(field.clone(), "must be a cash location id (loc_…)");
        // Already reported; a "does not match" on top would say the same thing twice.
        id = None;
    }
    let (reference, ref_field) = aliased(
        cash,
        "cash",
        ["cashLocationReference", "locationReference"],
        p,
    )?;
    let Some(resolved) = locations::resolve(reference) else {
        p.add(
            ref_field,
            "is not a locReference returned by GET /cash-locations",
        );
        return None;
    };
    match id {
        Some((id, _)) if id == resolved.id => Some(Location {
            id: id.to_owned(),
            reference: reference.to_owned(),
            resolved,
        }),
        Some((_, id_field)) => {
            p.add(id_field, format!("does not match {ref_field}"));
            None
        }
        // The id's own problem is already recorded.
        None => None,
    }
}

/// `sponsorGas`: an optional boolean, false when absent.
fn parse_sponsor_gas(root: &Map<String, Value>, p: &mut Problems) -> bool {
    match member(Some(root), "sponsorGas") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            p.add("sponsorGas", "must be a boolean");
            false
        }
    }
}

/// `developerFees`: an optional array; the valid entries, every bad one reported.
fn parse_developer_fees(root: &Map<String, Value>, p: &mut Problems) -> Vec<DevFee> {
    match member(Some(root), "developerFees") {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .filter_map(|(i, v)| parse_fee(v, i, p))
            .collect(),
        Some(_) => {
            p.add("developerFees", "must be an array");
            Vec::new()
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
    let before = p.len();
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
    (p.len() == before).then_some(DevFee {
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

#[cfg(test)]
#[allow(clippy::inconsistent_digit_grouping)] // cents as dollars_cents: `200_00` is $200.00
mod tests {
    use super::super::problem_fields as fields;
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
            "source": {"asset": "eur", "indicatedAmount": "500.01"},
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

    // Before: anything under 20.00 was refused, a minimum no OMS page states. The provider's
    // documented max_transaction (500.00) stays; an amount too small for its fees is refused by
    // the fee rule below, not by a floor.
    #[test]
    fn amounts_are_bounded_by_the_providers_max_transaction_only() {
        let (id, reference) = valid_location();
        let with = |amount: &str| {
            create(json!({
                "customerId": "cst_1",
                "source": {"asset": "usd", "indicatedAmount": amount},
                "destination": {"wallet": {"id": "wlt_1"}, "asset": "usdc", "network": "polygon"},
                "cash": {"locationId": id, "locationReference": reference}
            }))
        };
        for amount in ["5.00", "19.99", "500.00"] {
            let ci = with(amount).unwrap_or_else(|e| panic!("{amount}: {e:?}"));
            assert_eq!(pricing::format_cents(ci.indicated), amount);
        }
        for amount in ["0.00", "500.01", "1000.00"] {
            let e = with(amount).expect_err(amount);
            assert_eq!(fields(&e), vec!["source.indicatedAmount"], "{amount}");
        }
        // $1.00 cannot carry OMS's own $1.00 fixed fee.
        assert_eq!(
            fields(&with("1.00").expect_err("1.00")),
            vec!["developerFees"]
        );
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
}
