//! Sandbox ⇔ schema: every `CashIn` the embedded sandbox renders, in every status, for each
//! kind of destination wallet and of developer fee, with and without gas sponsorship and
//! metadata, as created, refreshed, read, listed and kept, validates against the schema's
//! `CashIn` in both of the sandbox's spellings.
//!
//! The schema's spelling must validate as is. The guide's spelling differs from the schema
//! exactly where the documentation contradicts itself (`cash.cashLocationId`,
//! `destination.wallet.wallet`, `transaction`, typed fee rows, absent values as `null`); it is
//! mapped back by that list alone and must then validate too, so the guide's spelling can carry
//! nothing else.

use std::collections::BTreeMap;

use oms_sandbox::{SandboxSettings, Spelling};
use serde_json::{Map, Value, json};

use super::schema::{self, Spec};
use crate::common::sandbox_rest::SandboxRest;

/// The create bodies: each wallet kind, each fee form, gas sponsorship and metadata on and off.
fn bodies(location: &Value) -> Vec<Value> {
    let cash = json!({"cashLocationId": location["id"], "cashLocationReference": location["locReference"]});
    let wallets = [
        json!({"wallet": "wlt_01H9Xb"}),
        json!({"blockchainAddress": "0x8ba1f109551bD432803012645Ac136ddd64DBA72"}),
        json!({"externalAccount": "cpBcAddr_01H9Xc"}),
    ];
    let fees = [
        json!([]),
        json!([
            {"type": "percentage", "rate": "0.01", "wallet": "wlt_01H9Xf"},
            {"type": "fixed", "amount": "1.00", "wallet": "wlt_01H9Xf"}
        ]),
        json!([{"percentage": "0.0025", "flatFee": "0.50", "wallet": "wlt_01H9Xf", "payoutAsset": "usdt"},
               {"percentage": "0.0025"}]),
    ];
    let mut out = Vec::new();
    for (i, wallet) in wallets.iter().enumerate() {
        for (j, fee) in fees.iter().enumerate() {
            let mut body = json!({
                "customerId": format!("cst_fidelity{i}{j}"),
                "source": {"asset": "usd", "indicatedAmount": "200.00"},
                "destination": {"wallet": wallet, "asset": "usdc", "network": "polygon"},
                "cash": cash,
                "sponsorGas": (i + j) % 2 == 0,
                "developerFees": fee,
            });
            if j != 1 {
                body["metadata"] = json!({"order_id": format!("ord_{i}{j}")});
            }
            out.push(body);
        }
    }
    out
}

/// Every rendering of every cash-in as the sandbox walks each through a lifecycle: (where it
/// was seen, the JSON).
async fn renderings(spelling: Spelling) -> Vec<(String, Value)> {
    let sandbox = oms_sandbox::start(SandboxSettings {
        spelling,
        seed: 21,
        ..SandboxSettings::default()
    })
    .await
    .expect("sandbox");
    let client = SandboxRest::new(&sandbox).await;
    let locations = client
        .get("/cash-locations?provider=greendot&latitude=38.495133&longitude=-121.505336")
        .await;
    let mut seen = Vec::new();
    for (n, body) in bodies(&locations["data"][0]).into_iter().enumerate() {
        let created = client.post("/cash-ins", Some(body)).await;
        let id = created["id"].as_str().expect("id").to_owned();
        seen.push((format!("{id} created"), created.clone()));
        let refreshed = client.post(&format!("/cash-ins/{id}/refresh"), None).await;
        seen.push((format!("{id} refreshed"), refreshed.clone()));
        let code = refreshed["depositInstructions"]["code"].clone();
        // Each cash-in ends in another state: completed, failed (pending or processing), expired.
        match n % 4 {
            0 | 1 => {
                let auth = client
                    .post(
                        "/cash-ins/simulate/barcode-auth",
                        Some(json!({"accountNumber": code, "amount": "150.00"})),
                    )
                    .await;
                seen.push((
                    format!("{id} processing"),
                    client.get(&format!("/cash-ins/{id}")).await,
                ));
                if n % 4 == 0 {
                    let commit = json!({
                        "accountNumber": code, "accountReferenceNumber": id, "amount": "150.00",
                        "originalConfirmationId": auth["confirmationId"],
                    });
                    client
                        .post("/cash-ins/simulate/auth-commit", Some(commit))
                        .await;
                } else {
                    let failure = json!({"subStatus": "provider_order_failed"});
                    client
                        .post(&format!("/sandbox/cash-ins/{id}/fail"), Some(failure))
                        .await;
                }
            }
            2 => {
                client
                    .post(&format!("/sandbox/cash-ins/{id}/fail"), None)
                    .await;
            }
            _ => {
                client
                    .post(&format!("/sandbox/cash-ins/{id}/expire"), None)
                    .await;
            }
        }
        seen.push((
            format!("{id} final"),
            client.get(&format!("/cash-ins/{id}")).await,
        ));
        seen.push((
            format!("{id} kept"),
            sandbox.cash_in_json(&id).expect("kept"),
        ));
    }
    let listed = client.get("/cash-ins?limit=100").await;
    for item in listed["data"].as_array().expect("data") {
        seen.push((format!("{} listed", item["id"]), item.clone()));
    }
    sandbox.shutdown().await;
    seen
}

/// The guide's spelling mapped to the schema's, by the documented differences only.
fn guide_to_schema(mut ci: Value) -> Value {
    drop_nulls(&mut ci);
    let object = ci.as_object_mut().expect("an object");
    rename(object, "transaction", "transactionId");
    if let Some(cash) = object.get_mut("cash").and_then(Value::as_object_mut) {
        rename(cash, "cashLocationId", "locationId");
        rename(cash, "cashLocationReference", "locationReference");
    }
    if let Some(wallet) = object
        .get_mut("destination")
        .and_then(|d| d.get_mut("wallet"))
        .and_then(Value::as_object_mut)
    {
        rename(wallet, "wallet", "id");
    }
    if let Some(fees) = object.get_mut("developerFees") {
        *fees = typed_fees_to_entries(fees);
    }
    ci
}

fn rename(object: &mut Map<String, Value>, from: &str, to: &str) {
    if let Some(value) = object.remove(from) {
        object.insert(to.to_owned(), value);
    }
}

fn drop_nulls(value: &mut Value) {
    match value {
        Value::Object(object) => {
            object.retain(|_, v| !v.is_null());
            object.values_mut().for_each(drop_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// The guide's `{type: percentage, rate}` / `{type: fixed, amount}` rows, one per term, back
/// to one `FeeEntry` per fee (rows share their entry's `id`).
fn typed_fees_to_entries(rows: &Value) -> Value {
    let mut entries: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for row in rows.as_array().into_iter().flatten() {
        let mut row = row.as_object().cloned().unwrap_or_default();
        let id = row
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let kind = row.remove("type");
        let entry = entries.entry(id).or_default();
        match kind.as_ref().and_then(Value::as_str) {
            Some("percentage") => rename(&mut row, "rate", "percentage"),
            Some("fixed") => rename(&mut row, "amount", "flatFee"),
            _ => {}
        }
        entry.extend(row);
    }
    Value::Array(entries.into_values().map(Value::Object).collect())
}

fn invalid(spec: &Spec, seen: &[(String, Value)], map: fn(Value) -> Value) -> Vec<String> {
    let cash_in = spec.schema("CashIn");
    seen.iter()
        .flat_map(|(at, ci)| {
            spec.validate(cash_in, &map(ci.clone()), "CashIn")
                .into_iter()
                .map(move |p| format!("{at}: {p}"))
        })
        .collect()
}

fn statuses(seen: &[(String, Value)]) -> Vec<&str> {
    let mut all: Vec<&str> = seen
        .iter()
        .filter_map(|(_, ci)| ci["status"].as_str())
        .collect();
    all.sort_unstable();
    all.dedup();
    all
}

/// Renders every status in `spelling` and asserts that each rendering, through `map`, validates
/// against the schema; the schema and the renderings, for further checks.
async fn every_rendering_validates(
    spelling: Spelling,
    map: fn(Value) -> Value,
) -> (Spec, Vec<(String, Value)>) {
    let spec = schema::load();
    let seen = renderings(spelling).await;
    assert_eq!(
        statuses(&seen),
        ["completed", "expired", "failed", "pending", "processing"]
    );
    let problems = invalid(&spec, &seen, map);
    assert!(
        problems.is_empty(),
        "{} of {} renderings break the schema:\n{}",
        problems.len(),
        seen.len(),
        problems.join("\n")
    );
    (spec, seen)
}

#[tokio::test]
async fn every_cash_in_the_sandbox_renders_in_the_schemas_spelling_validates() {
    every_rendering_validates(Spelling::OpenApi, |ci| ci).await;
}

#[tokio::test]
async fn every_cash_in_the_sandbox_renders_in_the_guides_spelling_validates_once_mapped() {
    let (spec, seen) = every_rendering_validates(Spelling::Guide, guide_to_schema).await;
    // Unmapped, it does not: the guide's own spelling is what the sandbox spoke.
    assert!(!invalid(&spec, &seen, |ci| ci).is_empty());
}

#[test]
fn the_validator_refuses_what_the_schema_forbids() {
    let spec = schema::load();
    let cash_in = spec.schema("CashIn");
    let broken = json!({
        "id": "ci_1", "type": "fiatToCrypto", "status": "onHold", "customerId": "cst_1",
        "source": {"asset": "usd", "amount": 200},
        "destination": {"wallet": {"id": "wlt_1", "ens": "x.eth"}},
        "cash": {"locationId": "loc_1"},
        "location": {},
        "createdAt": "yesterday", "updatedAt": "2026-03-16T18:30:00Z",
        "completedAt": null,
        "metadata": {"n": 1},
    });
    let mut problems = spec.validate(cash_in, &broken, "CashIn");
    problems.sort();
    assert_eq!(
        problems,
        [
            "CashIn.cash.locationReference: required, and missing",
            "CashIn.completedAt: null, and the schema does not say nullable",
            "CashIn.createdAt: \"yesterday\" is not an RFC 3339 date-time",
            "CashIn.destination.wallet.ens: not a property of the schema",
            "CashIn.metadata.n: 1 is not a string",
            "CashIn.source.amount: 200 is not a string",
            "CashIn.status: \"onHold\" is not one of [String(\"pending\"), String(\"processing\"), String(\"completed\"), String(\"failed\"), String(\"expired\")]",
        ]
    );
}
