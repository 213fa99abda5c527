//! The sandbox's own wire types: serde DTOs for what it answers, and the rendering of a cash-in
//! in either of the two spellings the OMS documentation uses (its transaction, as webhooks show
//! it, is in `transaction`).
//!
//! These types are deliberately not shared with the gateway's REST client. The cash-in is built
//! as a JSON tree rather than a struct because the two spellings differ in names, in shape
//! (developer fees) and in how absence is written (omitted vs `null`), and one renderer with a
//! switch keeps "same information, different spelling" true by construction.

mod transaction;

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::Spelling;
use super::clock::format_ms;
use super::locations::CashLocation;
use super::pricing::{self, format_cents, format_rate, format_rate4};
use super::store::{CashIn, WalletRef, display_code};

pub(crate) use transaction::render_transaction;

// === errors ===

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct FieldProblem {
    pub(crate) field: String,
    pub(crate) message: String,
}

impl FieldProblem {
    pub(crate) fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldProblem {
            field: field.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct ErrorEnvelope<'a> {
    pub(crate) error: ErrorBody<'a>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ErrorBody<'a> {
    pub(crate) code: &'a str,
    pub(crate) message: &'a str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub(crate) details: &'a [FieldProblem],
}

// === auth ===

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TokenResponse {
    pub(crate) access_token: String,
    pub(crate) token_type: &'static str,
    pub(crate) expires_in: u64,
    pub(crate) expires_at: String,
}

// === cash-ins ===

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ListEnvelope {
    pub(crate) data: Vec<Value>,
    pub(crate) has_more: bool,
    /// `null` (not absent) on the last page, so "no more" is explicit.
    pub(crate) next_cursor: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BarcodeAuthResponse {
    pub(crate) authorized_amount: String,
    pub(crate) confirmation_id: String,
    pub(crate) response_code: &'static str,
    pub(crate) response_id: String,
    pub(crate) response_text: &'static str,
    pub(crate) account_reference_number: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AuthCommitResponse {
    pub(crate) authorized_amount: String,
    pub(crate) confirmation_id: String,
    pub(crate) response_code: &'static str,
    pub(crate) response_id: String,
    pub(crate) response_text: &'static str,
}

// === cash locations ===

#[derive(Debug, Serialize)]
pub(crate) struct LocationsEnvelope {
    pub(crate) data: Vec<CashLocationDto>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CashLocationDto {
    pub(crate) id: String,
    pub(crate) loc_reference: String,
    pub(crate) name: String,
    pub(crate) address: String,
    pub(crate) city: String,
    pub(crate) state: String,
    pub(crate) zip_code: String,
    pub(crate) country: &'static str,
    pub(crate) provider: &'static str,
    pub(crate) coordinates: CoordinatesDto,
    /// Miles from the searched point.
    pub(crate) distance: f64,
}

#[derive(Debug, Serialize)]
pub(crate) struct CoordinatesDto {
    pub(crate) latitude: f64,
    pub(crate) longitude: f64,
}

impl From<CashLocation> for CashLocationDto {
    fn from(l: CashLocation) -> Self {
        CashLocationDto {
            id: l.id,
            loc_reference: l.reference,
            name: l.name,
            address: l.street,
            city: l.city,
            state: l.state,
            zip_code: l.zip_code,
            country: "US",
            provider: "greendot",
            coordinates: CoordinatesDto {
                latitude: l.latitude,
                longitude: l.longitude,
            },
            distance: l.distance_miles,
        }
    }
}

/// A JSON object under construction that writes absent values the way the spelling wants.
struct Obj {
    map: Map<String, Value>,
    nulls: bool,
}

impl Obj {
    fn new(spelling: &Spelling) -> Obj {
        Obj {
            map: Map::new(),
            nulls: *spelling == Spelling::Guide,
        }
    }

    fn put(&mut self, key: &str, value: impl Into<Value>) -> &mut Self {
        self.map.insert(key.to_owned(), value.into());
        self
    }

    /// Present when `Some`; when `None`, `null` in the guide's spelling and omitted otherwise.
    fn opt(&mut self, key: &str, value: Option<impl Into<Value>>) -> &mut Self {
        match value {
            Some(v) => {
                self.map.insert(key.to_owned(), v.into());
            }
            None if self.nulls => {
                self.map.insert(key.to_owned(), Value::Null);
            }
            None => {}
        }
        self
    }

    fn build(&mut self) -> Value {
        Value::Object(std::mem::take(&mut self.map))
    }
}

/// A cash-in as the API shows it, in the given spelling.
pub(crate) fn render_cash_in(ci: &CashIn, spelling: &Spelling) -> Value {
    let guide = *spelling == Spelling::Guide;
    let spec = &ci.spec;
    let q = ci.quote();
    let source = render_source(ci, &q, spelling);
    let destination = render_destination(ci, &q, spelling);
    let cash = render_cash_ref(ci, guide);

    let mut o = Obj::new(spelling);
    o.put("id", ci.id.as_str())
        .put("object", "cashIn")
        .put("type", "fiatToCrypto")
        .put("status", ci.status.as_str())
        .opt("subStatus", ci.sub_status.map(|s| s.as_str()))
        .put("customerId", spec.customer_id.as_str())
        .put("source", source)
        .put("destination", destination)
        .put("fixedAmountSide", "source")
        .put("sponsorGas", spec.sponsor_gas)
        .opt("sponsorGasCost", spec.sponsor_gas.then_some("0.00"))
        .put("rates", render_rates(ci, &q))
        .put("cash", cash)
        .put(
            "location",
            json!({"name": spec.location_name, "address": spec.location_address}),
        )
        .put(
            "depositInstructions",
            json!({
                "code": display_code(&ci.code),
                "expiresAt": format_ms(ci.code_expires_at),
                "locationName": spec.location_name,
                "locationAddress": spec.location_address,
            }),
        );
    if !spec.developer_fees.is_empty() {
        o.put("developerFees", render_fees(ci, &q.per_fee, guide));
    }
    o.put(
        "omsFeeSchedule",
        json!({
            "feeCurrency": "usd",
            "entries": [
                {"type": "percentage", "rate": format_rate(pricing::OMS_PERCENT)},
                {"type": "fixed", "amount": format_cents(pricing::OMS_FIXED)},
            ],
        }),
    )
    .opt(
        if guide {
            "transaction"
        } else {
            "transactionId"
        },
        ci.transaction_id().map(str::to_owned),
    )
    .put("createdAt", format_ms(ci.created_at))
    .put("updatedAt", format_ms(ci.updated_at))
    .opt("completedAt", ci.completed_at.map(format_ms));
    if let Some(metadata) = render_metadata(ci) {
        o.put("metadata", metadata);
    }
    o.build()
}

/// `source`: the cash side, with the fees deducted from it.
fn render_source(ci: &CashIn, q: &pricing::Quote, spelling: &Spelling) -> Value {
    let money = |c| Value::String(format_cents(c));
    Obj::new(spelling)
        .put("asset", "usd")
        .put("network", "cash")
        .put("indicatedAmount", format_cents(ci.spec.indicated))
        .opt("amount", ci.deposited.map(format_cents))
        .put("amountGross", money(q.amount))
        .put("amountNet", money(q.net))
        .put("feesDeducted", fees_deducted(q))
        .build()
}

/// `destination.wallet`: the schema's `id` or the guide's `wallet` for an OMS wallet.
fn render_wallet(wallet: &WalletRef, spelling: &Spelling) -> Value {
    match (wallet, *spelling == Spelling::Guide) {
        (WalletRef::Wallet(w), true) => json!({ "wallet": w }),
        (WalletRef::Wallet(w), false) => json!({ "id": w }),
        (WalletRef::BlockchainAddress(a), _) => json!({ "blockchainAddress": a }),
        (WalletRef::ExternalAccount(a), _) => json!({ "externalAccount": a }),
    }
}

/// The fees deducted on one side, all in that side's asset.
fn fees_deducted(q: &pricing::Quote) -> Value {
    json!({
        "total": format_cents(q.total),
        "developer": format_cents(q.developer),
        "oms": format_cents(q.oms),
        "gas": "0.00",
    })
}

/// Nothing is deducted on the destination side (the fees come out of the cash).
fn zero_fees() -> Value {
    json!({"total": "0.00", "developer": "0.00", "oms": "0.00", "gas": "0.00"})
}

/// `rates`: USD to a USD stablecoin at 1.0000, and what arrives per dollar after fees.
fn render_rates(ci: &CashIn, q: &pricing::Quote) -> Value {
    json!({
        "pair": format!("usd/{}", ci.spec.dest_asset.as_str()),
        "exchangeRate": "1.0000",
        "effectiveRate": format_rate4(q.effective_rate),
    })
}

/// `metadata`, as sent.
fn render_metadata(ci: &CashIn) -> Option<Value> {
    ci.spec.metadata.as_ref().map(|metadata| {
        Value::Object(
            metadata
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
        )
    })
}

/// `destination`: the crypto side and its wallet, which the spelling names differently.
fn render_destination(ci: &CashIn, q: &pricing::Quote, spelling: &Spelling) -> Value {
    let spec = &ci.spec;
    let money = |c| Value::String(format_cents(c));
    let amount_known = ci.deposited.is_some();
    let wallet = render_wallet(&spec.wallet, spelling);
    // The exchange rate is 1.0000, so the destination receives the source's net unchanged.
    Obj::new(spelling)
        .put("asset", spec.dest_asset.as_str())
        .put("network", spec.network.as_str())
        .put("wallet", wallet)
        .opt("amount", amount_known.then(|| format_cents(q.net)))
        .put("amountGross", money(q.net))
        .put("amountNet", money(q.net))
        .put("feesDeducted", zero_fees())
        .build()
}

/// `cash`: the location id and reference, under the names the spelling uses.
fn render_cash_ref(ci: &CashIn, guide: bool) -> Value {
    let spec = &ci.spec;
    if guide {
        json!({
            "cashLocationId": spec.location_id,
            "cashLocationReference": spec.location_reference,
        })
    } else {
        json!({
            "locationId": spec.location_id,
            "locationReference": spec.location_reference,
        })
    }
}

/// Developer fees: the schema's `FeeEntry` (one entry, computed `amount`) or the guide's typed
/// entries (a percentage-and-flat entry becomes two rows sharing the entry's id).
fn render_fees(ci: &CashIn, per_fee: &[pricing::Cents], guide: bool) -> Value {
    let mut rows = Vec::new();
    for (i, fee) in ci.spec.developer_fees.iter().enumerate() {
        let id = ci.fee_ids.get(i).cloned().unwrap_or_default();
        let payout = fee.payout_asset.as_str();
        let wallet = fee.wallet.clone().map_or(Value::Null, Value::String);
        if guide {
            if let Some(rate) = fee.percentage {
                rows.push(json!({
                    "id": id, "type": "percentage", "rate": format_rate(rate),
                    "wallet": wallet, "payoutAsset": payout,
                }));
            }
            if let Some(flat) = fee.flat {
                rows.push(json!({
                    "id": id, "type": "fixed", "amount": format_cents(flat),
                    "wallet": wallet, "payoutAsset": payout,
                }));
            }
        } else {
            let mut row = Map::new();
            row.insert("id".into(), Value::String(id));
            if let Some(rate) = fee.percentage {
                row.insert("percentage".into(), Value::String(format_rate(rate)));
            }
            if let Some(flat) = fee.flat {
                row.insert("flatFee".into(), Value::String(format_cents(flat)));
            }
            let amount = per_fee.get(i).copied().unwrap_or(0);
            row.insert("amount".into(), Value::String(format_cents(amount)));
            if let Some(w) = &fee.wallet {
                row.insert("wallet".into(), Value::String(w.clone()));
            }
            row.insert("payoutAsset".into(), Value::String(payout.into()));
            rows.push(Value::Object(row));
        }
    }
    Value::Array(rows)
}
