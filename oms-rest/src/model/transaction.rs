//! OMS's transaction object: the fiat-to-crypto transaction OMS creates when a cash-in's deposit
//! is received, which delivers the crypto. The guide shows it only inside the
//! `transaction.fiatToCrypto.*` webhooks (`data`), linked to its cash-in by `cashIn`; no read
//! endpoint for it is documented. Decoded as leniently as the cash-in: `null` and absent alike,
//! unknown fields ignored, the link as an id or as an object with one.

use super::{FeesDeductedDto, RatesDto, WalletDto};
use serde::Deserialize;
use std::collections::BTreeMap;

/// A transaction, as a `transaction.fiatToCrypto.*` webhook's `data` carries it.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TransactionDto {
    /// `txn_…`.
    pub id: String,
    pub object: Option<String>,
    /// `type`: `fiatToCrypto` for a cash-in's.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub status: String,
    pub sub_status: Option<String>,
    pub customer_id: Option<String>,
    /// The cash-in it delivers: `cashIn` in the guide (an id); an object with an `id` is read too.
    #[serde(alias = "cash_in")]
    pub cash_in: Option<CashInLink>,
    pub source: Option<TransactionSideDto>,
    pub destination: Option<TransactionSideDto>,
    pub error: Option<TransactionErrorDto>,
    pub quote_id: Option<String>,
    /// `depositAddress`, `virtualAccount`, `estimatedArrival`: `null` in every example of the
    /// guide, so of no known shape; kept as they come (any JSON) so that none is drift.
    pub deposit_address: Option<serde_json::Value>,
    pub virtual_account: Option<serde_json::Value>,
    pub estimated_arrival: Option<serde_json::Value>,
    pub fixed_amount_side: Option<String>,
    pub sponsor_gas: Option<bool>,
    pub sponsor_gas_cost: Option<String>,
    pub rates: Option<RatesDto>,
    pub metadata: Option<BTreeMap<String, Option<String>>>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
}

/// A transaction's link to its cash-in.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum CashInLink {
    Id(String),
    Object { id: String },
}

impl CashInLink {
    /// The cash-in's id.
    pub fn id(&self) -> &str {
        match self {
            CashInLink::Id(id) | CashInLink::Object { id } => id,
        }
    }
}

/// `source` or `destination` of a transaction (the destination's wallet is the cash-in's, not
/// read here).
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TransactionSideDto {
    /// The destination's wallet (not read: it is the cash-in's).
    pub wallet: Option<WalletDto>,
    pub asset: Option<String>,
    pub network: Option<String>,
    pub amount_gross: Option<String>,
    pub amount_net: Option<String>,
    pub fees_deducted: Option<FeesDeductedDto>,
    pub tx_hash: Option<String>,
}

/// `error` of a failed transaction.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TransactionErrorDto {
    pub code: Option<String>,
    pub message: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guides_failed_transaction_decodes_with_its_link_error_and_nulls() {
        let data = r#"{"id":"txn_01H9Xz","object":"transaction","type":"fiatToCrypto",
            "status":"failed","subStatus":"failed.refundPending","customerId":"cst_01H9Xa",
            "quoteId":null,"cashIn":"ci_01H9Xy",
            "source":{"asset":"usd","network":"cash","amountGross":"200.00","amountNet":"192.00",
              "feesDeducted":{"total":"8.00","developer":"3.00","oms":"5.00","gas":"0.00"},
              "txHash":null},
            "destination":{"wallet":{"wallet":"wlt_01H9Xb"},"asset":"usdc","network":"polygon",
              "amountGross":"192.00","amountNet":"192.00","txHash":null},
            "sponsorGasCost":null,"sponsorGas":false,
            "error":{"code":"on_chain_revert","message":"Delivery transaction reverted onchain"},
            "metadata":{"order_id":"ord_789"},
            "createdAt":"2026-03-16T18:47:05Z","updatedAt":"2026-03-16T18:50:00Z"}"#;
        let t: TransactionDto = serde_json::from_str(data).unwrap();
        assert_eq!(t.cash_in.as_ref().map(CashInLink::id), Some("ci_01H9Xy"));
        assert_eq!(t.sub_status.as_deref(), Some("failed.refundPending"));
        assert_eq!(
            t.error.and_then(|e| e.code).as_deref(),
            Some("on_chain_revert")
        );
        let source = t.source.unwrap();
        assert_eq!(source.amount_gross.as_deref(), Some("200.00"));
        assert_eq!(source.tx_hash, None);
        let linked: TransactionDto =
            serde_json::from_str(r#"{"id":"txn_1","status":"completed","cashIn":{"id":"ci_2"}}"#)
                .unwrap();
        assert_eq!(linked.cash_in.as_ref().map(CashInLink::id), Some("ci_2"));
    }
}
