//! The wire forms of the types whose fields OMS spells two ways, and how the two spellings
//! become one field. An answer may carry both (an API moving from one spelling to the other
//! sends both for a while), so each spelling is its own field here, where a serde `alias` would
//! refuse the second as a duplicate; the pair then folds into the one field the model exposes.
//!
//! The rule, the same for every pair: the non-null value wins; when both are non-null (and
//! differ), the OpenAPI schema's spelling wins, because the schema is what every reference
//! response of OMS renders, and the guide's spelling is the one a migration would retire.
//! Decode errors still name the JSON path as sent (`cash.cashLocationId`), since these types
//! are read by the same deserializer as the rest of the model.

use super::{
    CashDto, CashInDto, DepositInstructionsDto, DestinationDto, FeeEntryDto, LocationDto,
    OmsFeeScheduleDto, RatesDto, SourceDto, WalletDto,
};
use serde::Deserialize;
use std::collections::BTreeMap;

/// One value out of a field spelled two ways: the schema's unless it is null.
fn either(schema: Option<String>, guide: Option<String>) -> Option<String> {
    schema.or(guide)
}

/// `CashIn` as sent, with the linked transaction in both spellings.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct CashInWire {
    id: String,
    status: String,
    object: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    sub_status: Option<String>,
    customer_id: Option<String>,
    source: Option<SourceDto>,
    destination: Option<DestinationDto>,
    cash: Option<CashDto>,
    location: Option<LocationDto>,
    deposit_instructions: Option<DepositInstructionsDto>,
    developer_fees: Option<Vec<FeeEntryDto>>,
    oms_fee_schedule: Option<OmsFeeScheduleDto>,
    rates: Option<RatesDto>,
    fixed_amount_side: Option<String>,
    sponsor_gas: Option<bool>,
    sponsor_gas_cost: Option<String>,
    /// The schema's spelling.
    transaction_id: Option<String>,
    /// The guide's spelling.
    transaction: Option<String>,
    metadata: Option<BTreeMap<String, Option<String>>>,
    created_at: Option<String>,
    updated_at: Option<String>,
    completed_at: Option<String>,
}

impl From<CashInWire> for CashInDto {
    fn from(wire: CashInWire) -> Self {
        Self {
            id: wire.id,
            status: wire.status,
            object: wire.object,
            kind: wire.kind,
            sub_status: wire.sub_status,
            customer_id: wire.customer_id,
            source: wire.source,
            destination: wire.destination,
            cash: wire.cash,
            location: wire.location,
            deposit_instructions: wire.deposit_instructions,
            developer_fees: wire.developer_fees,
            oms_fee_schedule: wire.oms_fee_schedule,
            rates: wire.rates,
            fixed_amount_side: wire.fixed_amount_side,
            sponsor_gas: wire.sponsor_gas,
            sponsor_gas_cost: wire.sponsor_gas_cost,
            transaction_id: either(wire.transaction_id, wire.transaction),
            metadata: wire.metadata,
            created_at: wire.created_at,
            updated_at: wire.updated_at,
            completed_at: wire.completed_at,
        }
    }
}

/// `destination.wallet` as sent: the custodial wallet as `id` (schema) and `wallet` (guide).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct WalletWire {
    id: Option<String>,
    wallet: Option<String>,
    blockchain_address: Option<String>,
    external_account: Option<String>,
}

impl From<WalletWire> for WalletDto {
    fn from(wire: WalletWire) -> Self {
        Self {
            id: either(wire.id, wire.wallet),
            blockchain_address: wire.blockchain_address,
            external_account: wire.external_account,
        }
    }
}

/// `cash` as sent: `locationId`/`locationReference` (schema) and
/// `cashLocationId`/`cashLocationReference` (guide).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct CashWire {
    location_id: Option<String>,
    cash_location_id: Option<String>,
    location_reference: Option<String>,
    cash_location_reference: Option<String>,
}

impl From<CashWire> for CashDto {
    fn from(wire: CashWire) -> Self {
        Self {
            location_id: either(wire.location_id, wire.cash_location_id),
            location_reference: either(wire.location_reference, wire.cash_location_reference),
        }
    }
}
