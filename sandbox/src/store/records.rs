//! What the store keeps about a cash-in, and what it answers with: the record, its states,
//! the validated request it was created from, and the refusals. Plain data with the few
//! conversions the wire needs; the table and its operations are in the parent module.

use std::collections::BTreeMap;

use crate::clock::Millis;
use crate::pricing::{self, Cents, FeeTerms, Ppm};

use super::delivery::Delivery;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Pending,
    Processing,
    Completed,
    Failed,
    Expired,
}

impl Status {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Processing => "processing",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Expired => "expired",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Status> {
        [
            Status::Pending,
            Status::Processing,
            Status::Completed,
            Status::Failed,
            Status::Expired,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SubStatus {
    OrderReserved,
    Settled,
    CashDepositExpired,
    CashDepositFailed,
    ProviderOrderFailed,
    ProviderOrderTemplateError,
}

impl SubStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SubStatus::OrderReserved => "order_reserved",
            SubStatus::Settled => "settled",
            SubStatus::CashDepositExpired => "cash_deposit_expired",
            SubStatus::CashDepositFailed => "cash_deposit_failed",
            SubStatus::ProviderOrderFailed => "provider_order_failed",
            SubStatus::ProviderOrderTemplateError => "provider_order_template_error",
        }
    }

    /// The sub-statuses a cash-in can be failed with.
    pub(crate) fn parse_failure(s: &str) -> Option<SubStatus> {
        [
            SubStatus::CashDepositFailed,
            SubStatus::ProviderOrderFailed,
            SubStatus::ProviderOrderTemplateError,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Asset {
    Usdc,
    Usdt,
}

impl Asset {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Asset::Usdc => "usdc",
            Asset::Usdt => "usdt",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Asset> {
        match s {
            "usdc" => Some(Asset::Usdc),
            "usdt" => Some(Asset::Usdt),
            _ => None,
        }
    }
}

/// Where the crypto goes: exactly one of the three kinds of destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WalletRef {
    Wallet(String),
    BlockchainAddress(String),
    ExternalAccount(String),
}

/// One developer fee entry as requested (either spelling parses into this).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DevFee {
    pub(crate) percentage: Option<Ppm>,
    pub(crate) flat: Option<Cents>,
    pub(crate) wallet: Option<String>,
    pub(crate) payout_asset: Asset,
}

impl DevFee {
    pub(crate) fn terms(&self) -> FeeTerms {
        FeeTerms {
            percentage: self.percentage,
            flat: self.flat,
        }
    }
}

/// The pricing of `amount` under these developer fees.
pub(crate) fn quote_with_fees(amount: Cents, fees: &[DevFee]) -> pricing::Quote {
    let terms: Vec<FeeTerms> = fees.iter().map(DevFee::terms).collect();
    pricing::quote(amount, &terms)
}

/// Why `amount` cannot carry these fees, if it cannot. One rule with one wording, because it is
/// checked twice: against the indicated amount at creation, and against the cash at the counter.
pub(crate) fn fees_leave_nothing(amount: Cents, fees: &[DevFee]) -> Option<String> {
    let q = quote_with_fees(amount, fees);
    (q.net <= 0).then(|| {
        format!(
            "fees of {} leave nothing to deliver from {}",
            pricing::format_cents(q.total),
            pricing::format_cents(amount)
        )
    })
}

/// A validated create request, with its location already resolved.
#[derive(Debug, Clone)]
pub(crate) struct NewCashIn {
    pub(crate) customer_id: String,
    pub(crate) indicated: Cents,
    pub(crate) dest_asset: Asset,
    pub(crate) network: String,
    pub(crate) wallet: WalletRef,
    pub(crate) location_id: String,
    pub(crate) location_reference: String,
    pub(crate) location_name: String,
    pub(crate) location_address: String,
    pub(crate) sponsor_gas: bool,
    pub(crate) developer_fees: Vec<DevFee>,
    pub(crate) metadata: Option<BTreeMap<String, String>>,
}

/// The authorization a simulated counter deposit made.
#[derive(Debug, Clone)]
pub(crate) struct Authorization {
    pub(crate) confirmation_id: String,
    pub(crate) amount: Cents,
}

#[derive(Debug, Clone)]
pub(crate) struct CashIn {
    pub(crate) id: String,
    /// Creation order, to break ties between cash-ins created in the same millisecond.
    pub(crate) seq: u64,
    pub(crate) spec: NewCashIn,
    /// `fee_…` ids, parallel to `spec.developer_fees`.
    pub(crate) fee_ids: Vec<String>,
    pub(crate) status: Status,
    pub(crate) sub_status: Option<SubStatus>,
    /// Six digits, shown as `"483 291"`.
    pub(crate) code: String,
    pub(crate) code_expires_at: Millis,
    pub(crate) created_at: Millis,
    pub(crate) updated_at: Millis,
    pub(crate) completed_at: Option<Millis>,
    pub(crate) authorization: Option<Authorization>,
    /// The amount actually deposited, from the moment the counter reports it (`processing`).
    pub(crate) deposited: Option<Cents>,
    /// The fiat-to-crypto transaction OMS creates once the deposit is committed.
    pub(crate) delivery: Option<Delivery>,
}

impl CashIn {
    /// The `txn_` id of its transaction, once there is one.
    pub(crate) fn transaction_id(&self) -> Option<&str> {
        self.delivery.as_ref().map(|d| d.id.as_str())
    }

    /// The pricing to show: repriced on the cash from the moment it is deposited, else the
    /// estimate from `indicatedAmount`.
    pub(crate) fn quote(&self) -> pricing::Quote {
        quote_with_fees(
            self.deposited.unwrap_or(self.spec.indicated),
            &self.spec.developer_fees,
        )
    }

    /// Where it sorts in a listing (newest last).
    pub(super) fn order_key(&self) -> (Millis, u64) {
        (self.created_at, self.seq)
    }
}

/// Why the store refused an operation; the server maps these to HTTP answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    NotFound,
    /// The cash-in is in a state where this action is not allowed.
    InvalidState {
        status: Status,
        action: &'static str,
    },
    /// A paging cursor names no cash-in.
    UnknownCursor {
        param: &'static str,
    },
    /// The cash-in's transaction is at a step where this action is not allowed.
    DeliveryState {
        step: &'static str,
        action: &'static str,
    },
    /// A request field contradicts what the sandbox recorded.
    Mismatch {
        field: &'static str,
        message: String,
    },
}

/// What a simulated commit sends.
#[derive(Debug, Clone)]
pub(crate) struct Commit {
    pub(crate) code: String,
    pub(crate) cash_in_id: String,
    pub(crate) amount: Cents,
    pub(crate) confirmation_id: String,
    pub(crate) customer_id: Option<String>,
}
