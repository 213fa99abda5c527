//! REST model ⇄ proto, in one place and both directions. No I/O.
//!
//! Upstream → proto: strings become enums (an unknown value becomes `_UNSPECIFIED`, never an
//! error, and is reported as drift: counted by its field's path, logged once, never shown; the
//! same for a value outside the schema's enums that the proto carries as a string), RFC 3339
//! strings become `Timestamp`s, the documentation's two spellings have already been folded by the
//! serde model. A value that cannot be represented (an unparseable timestamp, a missing id) is a
//! [`DecodeError`], reported to the caller as UPSTREAM_BAD_RESPONSE.
//! Proto → upstream: the create request is encoded as the guide's request example does.

mod delivery;

pub use delivery::delivery;

use crate::proto::v1 as pb;
use oms_rest::drift::Drift;
use oms_rest::model::{
    self, CashInDto, CashLocationDto, CreateCashBody, CreateCashInBody, CreateDestinationBody,
    CreateSourceBody, CreateWalletBody, DeveloperFeeBody,
};
use prost_types::Timestamp;
use std::str::FromStr;

/// An upstream value that does not fit the contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct DecodeError {
    /// The REST field path.
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

fn timestamp(field: &str, value: Option<String>) -> Result<Option<Timestamp>, DecodeError> {
    value
        .map(|text| {
            // The text is not quoted: it is OMS's, and an error reaches callers and logs.
            Timestamp::from_str(text.trim()).map_err(|_| DecodeError {
                field: field.to_owned(),
                problem: "is not an RFC 3339 timestamp".to_owned(),
            })
        })
        .transpose()
}

/// Maps an upstream enum string at `path` (e.g. `cashIn.subStatus`); an unknown value is
/// UNSPECIFIED and reported to `drift` by its path (the value itself is never logged: it may be
/// data in the wrong field).
fn enum_value<E: Copy + Into<i32>>(
    drift: &Drift,
    path: &'static str,
    value: &str,
    table: &[(&str, E)],
) -> i32 {
    match table
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(value))
    {
        Some((_, known)) => (*known).into(),
        None => {
            drift.unknown_enum_value(path);
            // Every proto enum's UNSPECIFIED.
            0
        }
    }
}

/// Reports to `drift` a value at `path` outside `known`, the values the schema enumerates for a
/// field the proto carries as a string (passed on as it came).
fn enumerated_string(drift: &Drift, path: &str, value: Option<&str>, known: &[&str]) {
    if let Some(value) = value
        && !known.iter().any(|name| name.eq_ignore_ascii_case(value))
    {
        drift.unknown_enum_value(path);
    }
}

/// The schema's `CashIn.object`.
const OBJECT_NAMES: &[&str] = &["cashIn"];
/// The schema's `FeeEntry.payoutAsset`.
const PAYOUT_ASSET_NAMES: &[&str] = &["usdc", "usdt"];

/// OMS's `status` strings and the proto values.
pub const STATUS_NAMES: &[(&str, pb::CashInStatus)] = &[
    ("pending", pb::CashInStatus::Pending),
    ("processing", pb::CashInStatus::Processing),
    ("completed", pb::CashInStatus::Completed),
    ("failed", pb::CashInStatus::Failed),
    ("expired", pb::CashInStatus::Expired),
];

const SUB_STATUS_NAMES: &[(&str, pb::CashInSubStatus)] = &[
    ("order_reserved", pb::CashInSubStatus::OrderReserved),
    ("settled", pb::CashInSubStatus::Settled),
    (
        "cash_deposit_expired",
        pb::CashInSubStatus::CashDepositExpired,
    ),
    (
        "cash_deposit_failed",
        pb::CashInSubStatus::CashDepositFailed,
    ),
    (
        "provider_order_failed",
        pb::CashInSubStatus::ProviderOrderFailed,
    ),
    (
        "provider_order_template_error",
        pb::CashInSubStatus::ProviderOrderTemplateError,
    ),
];

const TRANSFER_TYPE_NAMES: &[(&str, pb::TransferType)] = &[
    ("cryptoToCrypto", pb::TransferType::CryptoToCrypto),
    ("fiatToCrypto", pb::TransferType::FiatToCrypto),
    ("cryptoToFiat", pb::TransferType::CryptoToFiat),
];

const FIXED_SIDE_NAMES: &[(&str, pb::FixedAmountSide)] = &[
    ("source", pb::FixedAmountSide::Source),
    ("destination", pb::FixedAmountSide::Destination),
];

/// OMS's spelling of a sub-status.
pub fn sub_status_name(sub_status: pb::CashInSubStatus) -> Option<&'static str> {
    SUB_STATUS_NAMES
        .iter()
        .find(|(_, s)| *s == sub_status)
        .map(|(name, _)| *name)
}

/// OMS's spelling of a status, for list filters.
pub fn status_name(status: pb::CashInStatus) -> Option<&'static str> {
    STATUS_NAMES
        .iter()
        .find(|(_, s)| *s == status)
        .map(|(name, _)| *name)
}

fn fees(dto: Option<model::FeesDeductedDto>) -> Option<pb::FeesDeducted> {
    dto.map(|f| pb::FeesDeducted {
        total: f.total.unwrap_or_default(),
        developer: f.developer.unwrap_or_default(),
        oms: f.oms.unwrap_or_default(),
        gas: f.gas.unwrap_or_default(),
    })
}

/// An upstream cash-in as the proto message; enum values the gateway does not know are reported
/// to `drift`.
pub fn cash_in(dto: CashInDto, drift: &Drift) -> Result<pb::CashIn, DecodeError> {
    if dto.id.trim().is_empty() {
        return Err(DecodeError {
            field: "id".into(),
            problem: "is empty".into(),
        });
    }
    let status = enum_value(drift, "cashIn.status", &dto.status, STATUS_NAMES);
    let kind = |v: &str| enum_value(drift, "cashIn.type", v, TRANSFER_TYPE_NAMES);
    let sub_status = |v: &str| enum_value(drift, "cashIn.subStatus", v, SUB_STATUS_NAMES);
    let side = |v: &str| enum_value(drift, "cashIn.fixedAmountSide", v, FIXED_SIDE_NAMES);
    enumerated_string(drift, "cashIn.object", dto.object.as_deref(), OBJECT_NAMES);
    let source = dto.source.map(source);
    let destination = dto.destination.map(destination);
    let deposit_instructions = dto
        .deposit_instructions
        .map(deposit_instructions)
        .transpose()?;
    let developer_fees = dto
        .developer_fees
        .unwrap_or_default()
        .into_iter()
        .map(|entry| developer_fee(entry, drift))
        .collect();
    Ok(pb::CashIn {
        id: dto.id,
        object: dto.object,
        r#type: dto.kind.as_deref().map_or(0, kind),
        status,
        sub_status: dto.sub_status.as_deref().map(sub_status),
        customer_id: dto.customer_id.unwrap_or_default(),
        source,
        destination,
        cash: dto.cash.map(|c| pb::CashInfo {
            location_id: c.location_id.unwrap_or_default(),
            location_reference: c.location_reference.unwrap_or_default(),
        }),
        location: dto.location.map(|l| pb::CashInLocation {
            name: l.name,
            address: l.address,
        }),
        deposit_instructions,
        developer_fees,
        oms_fee_schedule: dto.oms_fee_schedule.map(oms_fee_schedule),
        rates: dto.rates.map(|r| pb::Rates {
            pair: r.pair.unwrap_or_default(),
            exchange_rate: r.exchange_rate.unwrap_or_default(),
            effective_rate: r.effective_rate.unwrap_or_default(),
        }),
        fixed_amount_side: dto.fixed_amount_side.as_deref().map(side),
        sponsor_gas: dto.sponsor_gas,
        sponsor_gas_cost: dto.sponsor_gas_cost,
        transaction_id: dto.transaction_id,
        metadata: dto
            .metadata
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect(),
        created_at: timestamp("createdAt", dto.created_at)?,
        updated_at: timestamp("updatedAt", dto.updated_at)?,
        completed_at: timestamp("completedAt", dto.completed_at)?,
        delivery: None,
    })
}

fn source(s: model::SourceDto) -> pb::CashInSource {
    pb::CashInSource {
        asset: s.asset.unwrap_or_default(),
        network: s.network,
        email: s.email,
        indicated_amount: s.indicated_amount,
        amount: s.amount,
        amount_gross: s.amount_gross,
        amount_net: s.amount_net,
        fees_deducted: fees(s.fees_deducted),
    }
}

fn destination(d: model::DestinationDto) -> pb::CashInDestination {
    pb::CashInDestination {
        asset: d.asset,
        network: d.network,
        wallet: d.wallet.map(|w| pb::CashInDestinationWallet {
            id: w.id,
            blockchain_address: w.blockchain_address,
            external_account: w.external_account,
        }),
        amount: d.amount,
        amount_gross: d.amount_gross,
        amount_net: d.amount_net,
        fees_deducted: fees(d.fees_deducted),
    }
}

fn deposit_instructions(
    d: model::DepositInstructionsDto,
) -> Result<pb::CashInDepositInstructions, DecodeError> {
    Ok(pb::CashInDepositInstructions {
        code: d.code.unwrap_or_default(),
        expires_at: timestamp("depositInstructions.expiresAt", d.expires_at)?,
        location_name: d.location_name,
        location_address: d.location_address,
    })
}

/// A developer fee in either documented form, normalized.
fn developer_fee(entry: model::FeeEntryDto, drift: &Drift) -> pb::FeeEntry {
    let fee = entry.normalized();
    let payout_asset = fee.payout_asset.as_deref();
    let path = "cashIn.developerFees[].payoutAsset";
    enumerated_string(drift, path, payout_asset, PAYOUT_ASSET_NAMES);
    pb::FeeEntry {
        id: fee.id,
        percentage: fee.percentage,
        flat_fee: fee.flat_fee,
        amount: fee.amount,
        wallet: fee.wallet,
        payout_asset: fee.payout_asset,
    }
}

fn oms_fee_schedule(s: model::OmsFeeScheduleDto) -> pb::OmsFeeSchedule {
    pb::OmsFeeSchedule {
        fee_currency: s.fee_currency.unwrap_or_default(),
        entries: s
            .entries
            .unwrap_or_default()
            .into_iter()
            .map(|e| pb::OmsFeeEntry {
                r#type: e.kind.unwrap_or_default(),
                rate: e.rate,
                amount: e.amount,
            })
            .collect(),
    }
}

/// An upstream cash location as the proto message.
pub fn cash_location(dto: CashLocationDto) -> pb::CashLocation {
    pb::CashLocation {
        id: dto.id,
        loc_reference: dto.loc_reference.unwrap_or_default(),
        name: dto.name.unwrap_or_default(),
        address: dto.address,
        city: dto.city,
        state: dto.state,
        zip_code: dto.zip_code,
        country: dto.country,
        provider: dto.provider,
        coordinates: dto.coordinates.map(|c| pb::Coordinates {
            latitude: c.latitude.unwrap_or_default(),
            longitude: c.longitude.unwrap_or_default(),
        }),
        distance: dto.distance,
    }
}

/// The REST body of a validated create request. Validation guarantees the parts this relies on
/// (source, destination with a wallet kind, cash) are present; absent ones encode as empty.
pub fn create_body(request: &pb::CreateCashInRequest) -> CreateCashInBody {
    let source = request.source.clone().unwrap_or_default();
    let destination = request.destination.clone().unwrap_or_default();
    let cash = request.cash.clone().unwrap_or_default();
    let wallet = match destination.wallet.and_then(|w| w.kind) {
        Some(pb::create_cash_in_request::wallet::Kind::BlockchainAddress(a)) => {
            CreateWalletBody::BlockchainAddress(a)
        }
        Some(pb::create_cash_in_request::wallet::Kind::ExternalAccount(a)) => {
            CreateWalletBody::ExternalAccount(a)
        }
        Some(pb::create_cash_in_request::wallet::Kind::Wallet(w)) => CreateWalletBody::Wallet(w),
        None => CreateWalletBody::Wallet(String::new()),
    };
    let mut developer_fees = Vec::new();
    for fee in &request.developer_fees {
        // The guide's request form has one kind per entry: a fee with both becomes two entries.
        if let Some(rate) = &fee.percentage {
            developer_fees.push(DeveloperFeeBody::Percentage {
                rate: rate.clone(),
                wallet: fee.wallet.clone(),
                payout_asset: fee.payout_asset.clone(),
            });
        }
        if let Some(amount) = &fee.flat_fee {
            developer_fees.push(DeveloperFeeBody::Fixed {
                amount: amount.clone(),
                wallet: fee.wallet.clone(),
                payout_asset: fee.payout_asset.clone(),
            });
        }
    }
    CreateCashInBody {
        customer_id: request.customer_id.clone(),
        source: CreateSourceBody {
            asset: source.asset,
            indicated_amount: source.indicated_amount,
        },
        destination: CreateDestinationBody {
            wallet,
            asset: destination.asset,
            network: destination.network,
        },
        cash: CreateCashBody {
            cash_location_id: cash.cash_location_id,
            cash_location_reference: cash.cash_location_reference,
        },
        sponsor_gas: request.sponsor_gas,
        developer_fees,
        metadata: request
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// Formats a proto timestamp as RFC 3339 for a REST query.
pub fn rfc3339(ts: &Timestamp) -> String {
    ts.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(json: &str) -> Result<pb::CashIn, DecodeError> {
        cash_in(serde_json::from_str(json).expect("json"), &Drift::default())
    }

    #[test]
    fn unknown_enum_values_are_unspecified_not_errors_and_are_reported_as_drift() {
        let drift = Drift::default();
        let json = r#"{"id":"ci_1","object":"cashIn","status":"teleported","subStatus":"warp",
            "type":"magic","fixedAmountSide":"SOURCE",
            "developerFees":[{"percentage":"0.01","payoutAsset":"usdc"},{"percentage":"0.01","payoutAsset":"doge"}]}"#;
        let ci = cash_in(serde_json::from_str(json).unwrap(), &drift).unwrap();
        assert_eq!(ci.status, 0);
        assert_eq!(ci.sub_status, Some(0));
        assert_eq!(ci.r#type, 0);
        assert_eq!(ci.developer_fees[1].payout_asset.as_deref(), Some("doge"));
        // status, subStatus, type and a payout asset; `SOURCE` and `cashIn` are known.
        assert_eq!(drift.summary().enum_values, 4, "{:?}", drift.summary());
        let known = Drift::default();
        let json = r#"{"id":"ci_1","object":"cashIn","status":"pending","subStatus":"order_reserved","type":"fiatToCrypto"}"#;
        cash_in(serde_json::from_str(json).unwrap(), &known).unwrap();
        assert_eq!(known.summary(), Default::default());
    }

    #[test]
    fn null_and_absent_both_decode_to_unset() {
        let a = decode(r#"{"id":"ci_1","status":"pending","completedAt":null,"sponsorGasCost":null,"transaction":null}"#).unwrap();
        let b = decode(r#"{"id":"ci_1","status":"pending"}"#).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.completed_at, None);
    }

    #[test]
    fn a_bad_timestamp_is_a_decode_error_naming_the_field() {
        let err =
            decode(r#"{"id":"ci_1","status":"pending","createdAt":"yesterday"}"#).unwrap_err();
        assert_eq!(err.field, "createdAt");
    }
}
