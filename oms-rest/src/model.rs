//! Serde types of the OMS JSON: what the gateway sends and what it reads back.
//!
//! Decoding is lenient exactly where the OMS documentation contradicts itself: both spellings of
//! the cash location, the destination wallet and the linked transaction, one or the other or
//! both at once (the non-null one wins, the schema's when both are set); both forms of a
//! developer fee entry; `null` and absent alike (every optional field is an `Option`, and serde
//! maps `null` to `None`); unknown fields ignored (and, in a 2xx answer, counted as drift by
//! `crate::observe`). Everywhere else types are strict: a string where an object belongs is a
//! decode error, which the client reports as [`crate::UpstreamError::BadResponse`]. These types
//! know nothing of protobuf (nor can they: this crate depends on no protobuf crate).

use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;

mod spelling;
mod transaction;
pub use transaction::{CashInLink, TransactionDto, TransactionErrorDto, TransactionSideDto};

// === response types ===

/// `CashIn`, as either spelling of the documentation renders it, or both at once (the
/// `spelling` module folds them).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(from = "spelling::CashInWire")]
pub struct CashInDto {
    pub id: String,
    pub status: String,
    pub object: Option<String>,
    /// `type`.
    pub kind: Option<String>,
    pub sub_status: Option<String>,
    pub customer_id: Option<String>,
    pub source: Option<SourceDto>,
    pub destination: Option<DestinationDto>,
    pub cash: Option<CashDto>,
    pub location: Option<LocationDto>,
    pub deposit_instructions: Option<DepositInstructionsDto>,
    pub developer_fees: Option<Vec<FeeEntryDto>>,
    pub oms_fee_schedule: Option<OmsFeeScheduleDto>,
    pub rates: Option<RatesDto>,
    pub fixed_amount_side: Option<String>,
    pub sponsor_gas: Option<bool>,
    pub sponsor_gas_cost: Option<String>,
    /// `transactionId` in the schema, `transaction` in the guide.
    pub transaction_id: Option<String>,
    /// Values are strings; a `null` value is dropped rather than failing the whole cash-in.
    pub metadata: Option<BTreeMap<String, Option<String>>>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
    pub completed_at: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SourceDto {
    pub asset: Option<String>,
    pub network: Option<String>,
    pub email: Option<String>,
    pub indicated_amount: Option<String>,
    pub amount: Option<String>,
    pub amount_gross: Option<String>,
    pub amount_net: Option<String>,
    pub fees_deducted: Option<FeesDeductedDto>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DestinationDto {
    pub asset: Option<String>,
    pub network: Option<String>,
    pub wallet: Option<WalletDto>,
    pub amount: Option<String>,
    pub amount_gross: Option<String>,
    pub amount_net: Option<String>,
    pub fees_deducted: Option<FeesDeductedDto>,
}

/// `destination.wallet`: the custodial wallet is `id` in the schema and `wallet` in the guide.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(from = "spelling::WalletWire")]
pub struct WalletDto {
    pub id: Option<String>,
    pub blockchain_address: Option<String>,
    pub external_account: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct FeesDeductedDto {
    pub total: Option<String>,
    pub developer: Option<String>,
    pub oms: Option<String>,
    pub gas: Option<String>,
}

/// `cash`: `locationId`/`locationReference` in the schema, `cashLocationId`/`cashLocationReference`
/// in the guide.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(from = "spelling::CashWire")]
pub struct CashDto {
    pub location_id: Option<String>,
    pub location_reference: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct LocationDto {
    pub name: Option<String>,
    pub address: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DepositInstructionsDto {
    pub code: Option<String>,
    pub expires_at: Option<String>,
    pub location_name: Option<String>,
    pub location_address: Option<String>,
}

/// A developer fee entry in either documented form: the schema's
/// `{percentage | flatFee, amount (computed), wallet, payoutAsset, id}` or the guide's
/// `{type: "percentage", rate}` / `{type: "fixed", amount}`. [`FeeEntryDto::normalized`] folds
/// the guide's form into the schema's.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct FeeEntryDto {
    pub id: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub rate: Option<String>,
    pub percentage: Option<String>,
    pub flat_fee: Option<String>,
    pub amount: Option<String>,
    pub wallet: Option<String>,
    pub payout_asset: Option<String>,
}

/// A developer fee entry in the schema's terms.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NormalizedFee {
    pub id: Option<String>,
    pub percentage: Option<String>,
    pub flat_fee: Option<String>,
    /// The computed amount (only the schema's form carries it).
    pub amount: Option<String>,
    pub wallet: Option<String>,
    pub payout_asset: Option<String>,
}

impl FeeEntryDto {
    /// The entry in the schema's terms. In the guide's `fixed` form `amount` is the flat fee
    /// itself, not a computed amount. An entry in both forms at once folds as the spelled pairs
    /// do: the non-null value, the schema's (`percentage`, `flatFee`) when both are set.
    pub fn normalized(self) -> NormalizedFee {
        let kind = self.kind.as_deref().map(str::to_ascii_lowercase);
        let (percentage, flat_fee, amount) = match kind.as_deref() {
            Some("percentage") => (self.percentage.or(self.rate), self.flat_fee, self.amount),
            Some("fixed" | "flat" | "flatfee") if self.flat_fee.is_none() => {
                (self.percentage, self.amount, None)
            }
            _ => (self.percentage.or(self.rate), self.flat_fee, self.amount),
        };
        NormalizedFee {
            id: self.id,
            percentage,
            flat_fee,
            amount,
            wallet: self.wallet,
            payout_asset: self.payout_asset,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct OmsFeeScheduleDto {
    pub fee_currency: Option<String>,
    pub entries: Option<Vec<OmsFeeEntryDto>>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct OmsFeeEntryDto {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub rate: Option<String>,
    pub amount: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RatesDto {
    pub pair: Option<String>,
    pub exchange_rate: Option<String>,
    pub effective_rate: Option<String>,
}

/// The list envelope `{data, hasMore, nextCursor}`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CashInPageDto {
    pub data: Vec<CashInDto>,
    pub has_more: Option<bool>,
    pub next_cursor: Option<String>,
}

impl CashInPageDto {
    /// The cursor of the next page, if any: `hasMore` decides, and the cursor falls back to the
    /// last id when OMS sends none (the cursor is a cash-in id, as in `GET /transactions`).
    pub fn next_cursor(&self) -> Option<String> {
        match self.has_more {
            Some(true) => self
                .next_cursor
                .clone()
                .or_else(|| self.data.last().map(|c| c.id.clone())),
            _ => None,
        }
    }
}

/// A cash location. Its schema is not published; this follows the cash-pickup location shape
/// elsewhere in the API plus the id, reference and distance the cash-in guide relies on.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CashLocationDto {
    pub id: String,
    pub loc_reference: Option<String>,
    pub name: Option<String>,
    pub address: Option<String>,
    pub city: Option<String>,
    pub state: Option<String>,
    pub zip_code: Option<String>,
    pub country: Option<String>,
    pub provider: Option<String>,
    pub coordinates: Option<CoordinatesDto>,
    #[serde(default, deserialize_with = "number_or_numeric_string")]
    pub distance: Option<f64>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct CoordinatesDto {
    #[serde(default, deserialize_with = "number_or_numeric_string")]
    pub latitude: Option<f64>,
    #[serde(default, deserialize_with = "number_or_numeric_string")]
    pub longitude: Option<f64>,
}

/// `GET /cash-locations` answers: the envelope is unpublished, so a bare array and
/// `{data: [...]}` both decode. Read by its own visitor rather than as an untagged enum, which
/// serde would buffer first: so a decode error still names its path, and the members of either
/// form that the model does not know are seen (`crate::observe`).
#[derive(Debug, Clone, PartialEq)]
pub enum CashLocationListDto {
    Envelope { data: Vec<CashLocationDto> },
    Bare(Vec<CashLocationDto>),
}

impl<'de> Deserialize<'de> for CashLocationListDto {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};

        #[derive(Deserialize)]
        struct Envelope {
            data: Vec<CashLocationDto>,
        }

        struct Either;

        impl<'de> serde::de::Visitor<'de> for Either {
            type Value = CashLocationListDto;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array of cash locations, or an object with one in `data`")
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> Result<Self::Value, A::Error> {
                Vec::deserialize(SeqAccessDeserializer::new(seq)).map(CashLocationListDto::Bare)
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                let Envelope { data } = Envelope::deserialize(MapAccessDeserializer::new(map))?;
                Ok(CashLocationListDto::Envelope { data })
            }
        }

        // As a struct, which JSON reads from an array or an object alike: its keys are then
        // field names, not data.
        de.deserialize_struct("CashLocationList", &["data"], Either)
    }
}

impl CashLocationListDto {
    pub fn into_vec(self) -> Vec<CashLocationDto> {
        match self {
            Self::Envelope { data } | Self::Bare(data) => data,
        }
    }
}

/// Coordinates are numbers in the documented pickup location; the cash-location schema is
/// unpublished, so a numeric string is accepted too.
fn number_or_numeric_string<'de, D: Deserializer<'de>>(de: D) -> Result<Option<f64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumberOrString {
        Number(f64),
        Text(String),
    }
    match Option::<NumberOrString>::deserialize(de)? {
        None => Ok(None),
        Some(NumberOrString::Number(n)) => Ok(Some(n)),
        Some(NumberOrString::Text(s)) => s
            .trim()
            .parse::<f64>()
            .map(Some)
            .map_err(|_| serde::de::Error::custom("a string that is not a number")),
    }
}

/// `POST /auth/token` answer.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenDto {
    pub access_token: String,
    pub expires_in: Option<u64>,
}

impl std::fmt::Debug for TokenDto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenDto")
            .field("access_token", &"[redacted]")
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

// === request types (encoded as the guide's request example does) ===

/// `POST /auth/token` body. Not `Debug`: it carries the secret.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRequestDto<'a> {
    pub api_key: &'a str,
    pub api_secret: &'a str,
}

/// `POST /cash-ins` body.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CreateCashInBody {
    pub customer_id: String,
    pub source: CreateSourceBody,
    pub destination: CreateDestinationBody,
    pub cash: CreateCashBody,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sponsor_gas: Option<bool>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub developer_fees: Vec<DeveloperFeeBody>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CreateSourceBody {
    pub asset: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub indicated_amount: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CreateDestinationBody {
    pub wallet: CreateWalletBody,
    pub asset: String,
    pub network: String,
}

/// Exactly one destination kind, spelled as in the guide's request (`wallet`, not `id`).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub enum CreateWalletBody {
    Wallet(String),
    BlockchainAddress(String),
    ExternalAccount(String),
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CreateCashBody {
    pub cash_location_id: String,
    pub cash_location_reference: String,
}

/// A developer fee in the guide's request form.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum DeveloperFeeBody {
    #[serde(rename_all = "camelCase")]
    Percentage {
        rate: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        wallet: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        payout_asset: Option<String>,
    },
    #[serde(rename = "fixed", rename_all = "camelCase")]
    Fixed {
        amount: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        wallet: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        payout_asset: Option<String>,
    },
}

// === sandbox simulation (sandbox-only endpoints of OMS, and the embedded sandbox's controls) ===

/// `POST /cash-ins/simulate/barcode-auth` body.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BarcodeAuthBody {
    /// The deposit code presented at the counter.
    pub account_number: String,
    /// The cash handed over, a decimal string.
    pub amount: String,
}

/// `POST /cash-ins/simulate/auth-commit` body.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthCommitBody {
    pub account_number: String,
    pub account_reference_number: String,
    pub amount: String,
    pub original_confirmation_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The answer of both simulation endpoints (every member either is known to send, so none is
/// counted as drift).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SimulationResultDto {
    pub confirmation_id: Option<String>,
    pub authorized_amount: Option<String>,
    pub response_code: Option<String>,
    pub response_id: Option<String>,
    pub response_text: Option<String>,
    /// The authorized cash-in (barcode-auth only), which the commit names again.
    pub account_reference_number: Option<String>,
}

/// `POST /sandbox/cash-ins/{id}/delivery/fail` body: the transaction's `error`.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryFailureBody {
    pub code: String,
    pub message: String,
}

/// `POST /sandbox/cash-ins/{id}/fail` body.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FailBody {
    pub sub_status: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guide_fee_entries_fold_into_the_schema_form() {
        let fixed: FeeEntryDto =
            serde_json::from_str(r#"{"type":"fixed","amount":"1.00","wallet":"wlt_1"}"#).unwrap();
        let fixed = fixed.normalized();
        assert_eq!(fixed.flat_fee.as_deref(), Some("1.00"));
        assert_eq!(fixed.amount, None);
        let pct: FeeEntryDto =
            serde_json::from_str(r#"{"type":"percentage","rate":"0.01"}"#).unwrap();
        assert_eq!(pct.normalized().percentage.as_deref(), Some("0.01"));
        let schema: FeeEntryDto =
            serde_json::from_str(r#"{"flatFee":"1.00","amount":"1.00","id":"fee_1"}"#).unwrap();
        let schema = schema.normalized();
        assert_eq!(
            (schema.flat_fee.as_deref(), schema.amount.as_deref()),
            (Some("1.00"), Some("1.00"))
        );
    }

    /// A cash-in whose `extra` fields are spliced into a minimal valid body.
    fn cash_in(extra: &str) -> Result<CashInDto, String> {
        let body = format!(r#"{{"id":"ci_1","status":"pending",{extra}}}"#);
        crate::decode::decode::<CashInDto>("GET /x", body.as_bytes()).map_err(|e| e.to_string())
    }

    #[test]
    fn both_transaction_spellings_together_decode_to_the_non_null_one() {
        for extra in [
            r#""transactionId":"txn_1","transaction":null"#,
            r#""transactionId":null,"transaction":"txn_1""#,
            r#""transaction":"txn_1","transactionId":null"#,
            r#""transaction":null,"transactionId":"txn_1""#,
            r#""transactionId":"txn_1","transaction":"txn_1""#,
        ] {
            let dto = cash_in(extra).unwrap_or_else(|e| panic!("{extra}: {e}"));
            assert_eq!(dto.transaction_id.as_deref(), Some("txn_1"), "{extra}");
        }
        let both = cash_in(r#""transaction":"txn_guide","transactionId":"txn_schema""#).unwrap();
        assert_eq!(
            both.transaction_id.as_deref(),
            Some("txn_schema"),
            "the schema's wins"
        );
        let neither = cash_in(r#""transaction":null,"transactionId":null"#).unwrap();
        assert_eq!(neither.transaction_id, None);
    }

    #[test]
    fn both_location_spellings_together_decode_to_the_non_null_ones() {
        for extra in [
            r#""cash":{"locationId":"loc_1","cashLocationId":null,"locationReference":"ref","cashLocationReference":null}"#,
            r#""cash":{"locationId":null,"cashLocationId":"loc_1","locationReference":null,"cashLocationReference":"ref"}"#,
            r#""cash":{"cashLocationId":null,"locationId":"loc_1","cashLocationReference":"ref","locationReference":null}"#,
            r#""cash":{"cashLocationId":"loc_1","locationId":null,"cashLocationReference":null,"locationReference":"ref"}"#,
            r#""cash":{"cashLocationId":"loc_1","locationId":"loc_1","cashLocationReference":"ref","locationReference":"ref"}"#,
        ] {
            let dto = cash_in(extra).unwrap_or_else(|e| panic!("{extra}: {e}"));
            let cash = dto.cash.expect("cash");
            assert_eq!(cash.location_id.as_deref(), Some("loc_1"), "{extra}");
            assert_eq!(cash.location_reference.as_deref(), Some("ref"), "{extra}");
        }
        let both = cash_in(
            r#""cash":{"cashLocationId":"loc_g","locationId":"loc_s","cashLocationReference":"g","locationReference":"s"}"#,
        )
        .unwrap()
        .cash
        .unwrap();
        assert_eq!(
            (
                both.location_id.as_deref(),
                both.location_reference.as_deref()
            ),
            (Some("loc_s"), Some("s")),
            "the schema's wins"
        );
    }

    #[test]
    fn both_wallet_spellings_together_decode_to_the_non_null_one() {
        for wallet in [
            r#"{"id":"wlt_1","wallet":null}"#,
            r#"{"id":null,"wallet":"wlt_1"}"#,
            r#"{"wallet":"wlt_1","id":null}"#,
            r#"{"wallet":null,"id":"wlt_1"}"#,
            r#"{"wallet":"wlt_1","id":"wlt_1"}"#,
        ] {
            let extra = format!(r#""destination":{{"wallet":{wallet}}}"#);
            let dto = cash_in(&extra).unwrap_or_else(|e| panic!("{extra}: {e}"));
            let id = dto.destination.and_then(|d| d.wallet).and_then(|w| w.id);
            assert_eq!(id.as_deref(), Some("wlt_1"), "{extra}");
        }
        let both = cash_in(r#""destination":{"wallet":{"wallet":"wlt_g","id":"wlt_s"}}"#).unwrap();
        let id = both.destination.and_then(|d| d.wallet).and_then(|w| w.id);
        assert_eq!(id.as_deref(), Some("wlt_s"), "the schema's wins");
    }

    #[test]
    fn both_fee_entry_forms_together_decode_to_the_non_null_one() {
        let fee = |entry: &str| {
            let dto = cash_in(&format!(r#""developerFees":[{entry}]"#))
                .unwrap_or_else(|e| panic!("{entry}: {e}"));
            dto.developer_fees.unwrap().remove(0).normalized()
        };
        for entry in [
            r#"{"type":"percentage","rate":"0.01","percentage":null}"#,
            r#"{"type":"percentage","rate":null,"percentage":"0.01"}"#,
            r#"{"percentage":null,"rate":"0.01"}"#,
            r#"{"percentage":"0.01","type":"percentage","rate":"0.01"}"#,
        ] {
            let fee = fee(entry);
            assert_eq!(fee.percentage.as_deref(), Some("0.01"), "{entry}");
            assert_eq!(fee.flat_fee, None, "{entry}");
        }
        for entry in [
            r#"{"type":"fixed","amount":"1.00","flatFee":null}"#,
            r#"{"type":"fixed","amount":null,"flatFee":"1.00"}"#,
            r#"{"flatFee":"1.00","type":"fixed","amount":"1.00"}"#,
        ] {
            let fee = fee(entry);
            assert_eq!(fee.flat_fee.as_deref(), Some("1.00"), "{entry}");
            assert_eq!(fee.percentage, None, "{entry}");
        }
        let both = fee(r#"{"type":"percentage","rate":"0.01","percentage":"0.02"}"#);
        assert_eq!(
            both.percentage.as_deref(),
            Some("0.02"),
            "the schema's wins"
        );
    }

    #[test]
    fn a_bad_value_in_either_spelling_is_named_by_its_path_never_quoted() {
        let said = cash_in(r#""transaction":483291,"transactionId":null"#).unwrap_err();
        assert!(
            said.contains("at transaction: expected a string, found an integer"),
            "{said}"
        );
        assert!(!said.contains("483291"), "{said}");
        let said =
            cash_in(r#""cash":{"cashLocationId":["loc_9x"],"locationId":"loc_1"}"#).unwrap_err();
        assert!(
            said.contains("at cash.cashLocationId: expected a string, found an array"),
            "{said}"
        );
        assert!(!said.contains("loc_9x"), "{said}");
        let said = cash_in(r#""destination":{"wallet":{"id":7,"wallet":"wlt_1"}}"#).unwrap_err();
        assert!(
            said.contains("at destination.wallet.id: expected a string"),
            "{said}"
        );
    }

    #[test]
    fn create_body_uses_the_guide_request_spelling() {
        let body = CreateCashInBody {
            customer_id: "cst_1".into(),
            source: CreateSourceBody {
                asset: "usd".into(),
                indicated_amount: Some("200.00".into()),
            },
            destination: CreateDestinationBody {
                wallet: CreateWalletBody::Wallet("wlt_1".into()),
                asset: "usdc".into(),
                network: "polygon".into(),
            },
            cash: CreateCashBody {
                cash_location_id: "loc_1".into(),
                cash_location_reference: "ref".into(),
            },
            sponsor_gas: None,
            developer_fees: vec![
                DeveloperFeeBody::Percentage {
                    rate: "0.01".into(),
                    wallet: Some("wlt_f".into()),
                    payout_asset: None,
                },
                DeveloperFeeBody::Fixed {
                    amount: "1.00".into(),
                    wallet: None,
                    payout_asset: None,
                },
            ],
            metadata: BTreeMap::new(),
        };
        let json = serde_json::to_value(&body).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "customerId": "cst_1",
                "source": {"asset": "usd", "indicatedAmount": "200.00"},
                "destination": {"wallet": {"wallet": "wlt_1"}, "asset": "usdc", "network": "polygon"},
                "cash": {"cashLocationId": "loc_1", "cashLocationReference": "ref"},
                "developerFees": [
                    {"type": "percentage", "rate": "0.01", "wallet": "wlt_f"},
                    {"type": "fixed", "amount": "1.00"}
                ]
            })
        );
    }

    #[test]
    fn both_location_list_envelopes_decode() {
        let bare: CashLocationListDto = serde_json::from_str(r#"[{"id":"loc_1"}]"#).unwrap();
        let wrapped: CashLocationListDto =
            serde_json::from_str(r#"{"data":[{"id":"loc_1","distance":"1.5"}]}"#).unwrap();
        assert_eq!(bare.into_vec()[0].id, "loc_1");
        assert_eq!(wrapped.into_vec()[0].distance, Some(1.5));
    }
}
