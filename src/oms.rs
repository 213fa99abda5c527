//! The OMS operations layer: what the gRPC services and the watch hub ask of OMS, as typed
//! calls with proto-side inputs and proto (or [`GatewayError`]) outputs, built on
//! [`OmsClient`] (HTTP, token, retries, deadline) and [`convert`] (REST ⇄ proto).
//!
//! Both `service/*` and `watch/*` use it, so neither imports the other, and neither builds a REST
//! request or names a REST operation: the operation names live in `oms_rest::ops`, and every
//! upstream failure carries its own. This layer knows nothing of gRPC metadata or callers: the
//! idempotency key a write sends is decided before it is called.

use crate::convert;
use crate::digest;
use crate::error::{GatewayError, ResourceRef};
use crate::proto::v1 as pb;
use oms_rest::model::{
    AuthCommitBody, BarcodeAuthBody, CashInDto, CreateCashInBody, DeliveryFailureBody, FailBody,
};
use oms_rest::{ListCashInsQuery, ListCashLocationsQuery, OmsClient, ops};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use tokio::time::Instant;

pub use oms_rest::WriteKey;

/// The longest `nextCursor` of OMS's that is sent back (by a poller, or in a page token), in
/// bytes: OMS's cursors are cash-in ids, of a few dozen; this leaves room for opaque ones. A
/// longer one is an answer the contract cannot hold (UPSTREAM_BAD_RESPONSE).
pub const MAX_CURSOR_BYTES: usize = 1024;

/// The OMS operations. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Oms {
    client: OmsClient,
    /// What the probe of `GET /transactions/{id}` found (see [`TransactionReads`]).
    reads: Arc<AtomicU8>,
}

/// Whether OMS serves `GET /transactions/{id}`, which its documentation does not show (the
/// transaction object appears only in webhooks): learned from the first read of a real
/// transaction id, then kept for the life of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionReads {
    /// Not tried yet, or only answered by faults so far.
    Unknown,
    /// It answered a transaction id with the transaction object: deliveries are reconciled.
    Served,
    /// It answered 404, 405 or 501, or with something that is not a transaction: deliveries
    /// come from webhooks only.
    NotServed,
}

/// A CreateCashIn request as the REST body it sends, built once: its fingerprint binds the
/// request to its idempotency key, and the same bytes' meaning goes upstream on every attempt.
pub struct NewCashIn {
    body: CreateCashInBody,
}

/// What ListCashIns and a customer's poller ask for, in proto terms.
#[derive(Debug, Clone, Default)]
pub struct CashInQuery {
    /// Only this customer's cash-ins (`cst_...`); empty: everyone's.
    pub customer_id: String,
    /// Only cash-ins in this status; `Unspecified`: any.
    pub status: pb::CashInStatus,
    /// Only cash-ins created at or after this time.
    pub created_after: Option<prost_types::Timestamp>,
    /// Only cash-ins created before this time.
    pub created_before: Option<prost_types::Timestamp>,
    /// Page size, 1 to 100.
    pub limit: u32,
    /// The cursor of the page before (OMS's `nextCursor`).
    pub starting_after: Option<String>,
}

/// One page of cash-ins, newest first.
#[derive(Debug)]
pub struct CashInPage {
    /// The cash-ins.
    pub cash_ins: Vec<pb::CashIn>,
    /// The cursor of the next page, if there is one.
    pub next_cursor: Option<String>,
}

/// What SimulateDeposit does at the counter (OMS's sandbox-only simulation endpoints).
pub struct Deposit<'a> {
    /// The cash-in, pending, as just read.
    pub cash_in: &'a pb::CashIn,
    /// The cash handed over.
    pub amount: &'a str,
    /// Stop after the barcode authorization (the cash-in stays processing).
    pub authorize_only: bool,
}

// === impl NewCashIn ===

impl NewCashIn {
    /// The REST body of a validated request.
    pub fn new(request: &pb::CreateCashInRequest) -> Self {
        Self {
            body: convert::create_body(request),
        }
    }

    /// The request's fingerprint: the REST body is what OMS fingerprints too (its metadata is a
    /// BTreeMap, so the encoding is stable).
    pub fn fingerprint(&self) -> u64 {
        digest::fingerprint(&[serde_json::to_vec(&self.body).unwrap_or_default()])
    }
}

// === impl Oms ===

impl Oms {
    /// The operations over `client`.
    pub fn new(client: OmsClient) -> Self {
        Self {
            client,
            reads: Arc::default(),
        }
    }

    /// What the gateway knows of `GET /transactions/{id}` so far.
    pub fn transaction_reads(&self) -> TransactionReads {
        match self.reads.load(Ordering::Relaxed) {
            1 => TransactionReads::Served,
            2 => TransactionReads::NotServed,
            _ => TransactionReads::Unknown,
        }
    }

    /// The delivery of cash-in `cash_in` read from OMS (`GET /transactions/{transaction}`), if
    /// OMS serves that read: `Ok(None)` when it does not (learned at the first answer, said once
    /// at INFO), when the id is not one the gateway sends in a path (over 256 characters or not
    /// `[A-Za-z0-9_-]`), or when the answer is another cash-in's transaction.
    pub async fn read_delivery(
        &self,
        transaction: &str,
        cash_in: &str,
        deadline: Instant,
    ) -> Result<Option<pb::Delivery>, GatewayError> {
        let reads = self.transaction_reads();
        if reads == TransactionReads::NotServed
            || crate::validate::loggable(transaction) != transaction
            || transaction.is_empty()
        {
            return Ok(None);
        }
        let answer = self.client.get_transaction(transaction, deadline).await;
        let dto = match answer {
            Ok(dto) => dto,
            Err(failure) => {
                let status = match &failure.error {
                    oms_rest::UpstreamError::Http(http) => Some(http.status),
                    oms_rest::UpstreamError::BadResponse(_) => Some(200),
                    _ => None,
                };
                return match status {
                    Some(404) if reads == TransactionReads::Served => Ok(None),
                    Some(200 | 404 | 405 | 501) => {
                        self.learned_reads(TransactionReads::NotServed);
                        Ok(None)
                    }
                    _ => Err(GatewayError::upstream(None)(failure)),
                };
            }
        };
        let linked = dto.cash_in.as_ref().is_none_or(|l| l.id() == cash_in);
        let delivery = convert::delivery(dto, None);
        match delivery {
            Ok(delivery) if delivery.transaction_id == transaction && linked => {
                self.learned_reads(TransactionReads::Served);
                Ok(Some(delivery))
            }
            _ if reads == TransactionReads::Served => Ok(None),
            _ => {
                self.learned_reads(TransactionReads::NotServed);
                Ok(None)
            }
        }
    }

    /// Notes what the probe found, and says so once.
    fn learned_reads(&self, reads: TransactionReads) {
        let value = if reads == TransactionReads::Served {
            1
        } else {
            2
        };
        if self.reads.swap(value, Ordering::Relaxed) != value {
            match reads {
                TransactionReads::Served => tracing::info!(
                    "OMS serves GET /transactions/{{id}}: deliveries are read back as well as \
                     taken from webhooks"
                ),
                _ => tracing::info!(
                    "OMS does not serve GET /transactions/{{id}}: deliveries come from its \
                     webhooks only"
                ),
            }
        }
    }

    /// Registers the state of the client's circuit breaker with `registry`, read at each scrape.
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        use oms_rest::breaker::CircuitState;
        let circuit = self.client.circuit();
        registry.register_collector(Box::new(crate::metrics::scrape::GaugeFn::new(
            "oms_upstream_circuit_state",
            "The circuit breaker in front of OMS: 0 closed (calls flow), 1 open (calls fail fast).",
            move || match *circuit.borrow() {
                CircuitState::Closed => 0,
                CircuitState::Open => 1,
            },
        )));
    }

    /// `GetCashIn`: NOT_FOUND (with ResourceInfo) when OMS does not know it.
    pub async fn get_cash_in(
        &self,
        id: &str,
        deadline: Instant,
    ) -> Result<pb::CashIn, GatewayError> {
        let dto = self
            .client
            .get_cash_in(id, deadline)
            .await
            .map_err(GatewayError::upstream(Some(ResourceRef::cash_in(id))))?;
        decode(&self.client, ops::GET_CASH_IN, dto)
    }

    /// One page of `ListCashIns`.
    pub async fn list_cash_ins(
        &self,
        query: &CashInQuery,
        deadline: Instant,
    ) -> Result<CashInPage, GatewayError> {
        let rest = ListCashInsQuery {
            customer: (!query.customer_id.is_empty()).then(|| query.customer_id.clone()),
            status: convert::status_name(query.status).map(str::to_owned),
            created_after: query.created_after.as_ref().map(convert::rfc3339),
            created_before: query.created_before.as_ref().map(convert::rfc3339),
            limit: query.limit,
            starting_after: query.starting_after.clone(),
        };
        let page = self
            .client
            .list_cash_ins(&rest, deadline)
            .await
            .map_err(GatewayError::upstream(None))?;
        let next_cursor = page.next_cursor();
        if let Some(sent) = &query.starting_after
            && repeats(sent, next_cursor.as_deref(), &page.data)
        {
            return Err(GatewayError::UpstreamCursorRepeated {
                operation: ops::LIST_CASH_INS,
            });
        }
        if next_cursor
            .as_ref()
            .is_some_and(|cursor| cursor.len() > MAX_CURSOR_BYTES)
        {
            return Err(GatewayError::bad_response(
                ops::LIST_CASH_INS,
                format_args!("nextCursor is longer than {MAX_CURSOR_BYTES} bytes"),
            ));
        }
        let cash_ins = page
            .data
            .into_iter()
            .map(|dto| decode(&self.client, ops::LIST_CASH_INS, dto))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CashInPage {
            cash_ins,
            next_cursor,
        })
    }

    /// `CreateCashIn`, sending `key`.
    pub async fn create_cash_in(
        &self,
        new: &NewCashIn,
        key: WriteKey<'_>,
        deadline: Instant,
    ) -> Result<pb::CashIn, GatewayError> {
        let dto = self
            .client
            .create_cash_in(&new.body, key, deadline)
            .await
            .map_err(GatewayError::upstream(None))?;
        decode(&self.client, ops::CREATE_CASH_IN, dto)
    }

    /// `RefreshCashIn`, sending `key`.
    pub async fn refresh_cash_in(
        &self,
        id: &str,
        key: WriteKey<'_>,
        deadline: Instant,
    ) -> Result<pb::CashIn, GatewayError> {
        let dto = self
            .client
            .refresh_cash_in(id, key, deadline)
            .await
            .map_err(GatewayError::upstream(Some(ResourceRef::cash_in(id))))?;
        decode(&self.client, ops::REFRESH_CASH_IN, dto)
    }

    /// `ListCashLocations` for a validated request.
    pub async fn list_cash_locations(
        &self,
        request: &pb::ListCashLocationsRequest,
        deadline: Instant,
    ) -> Result<Vec<pb::CashLocation>, GatewayError> {
        let query = ListCashLocationsQuery {
            provider: request.provider.clone(),
            latitude: request.latitude.unwrap_or_default(),
            longitude: request.longitude.unwrap_or_default(),
            flow: request.flow.clone(),
        };
        let locations = self
            .client
            .list_cash_locations(&query, deadline)
            .await
            .map_err(GatewayError::upstream(None))?;
        Ok(locations.into_iter().map(convert::cash_location).collect())
    }

    /// A deposit at the counter with the cash-in's code (barcode authorization, then the
    /// commit unless `authorize_only`). Returns the confirmation id. Each simulation call sends
    /// a key of its own (sandbox only: nothing to deduplicate across retries of the RPC).
    pub async fn simulate_deposit(
        &self,
        deposit: Deposit<'_>,
        deadline: Instant,
    ) -> Result<String, GatewayError> {
        let cash_in = deposit.cash_in;
        let resource = || Some(ResourceRef::cash_in(&cash_in.id));
        let code = cash_in
            .deposit_instructions
            .as_ref()
            .map(|d| d.code.clone())
            .unwrap_or_default();
        let authorization = BarcodeAuthBody {
            account_number: code.clone(),
            amount: deposit.amount.to_owned(),
        };
        let auth = self
            .client
            .simulate_barcode_auth(&authorization, &fresh_key(), deadline)
            .await
            .map_err(GatewayError::upstream(resource()))?;
        let mut confirmation_id = auth.confirmation_id.unwrap_or_default();
        if deposit.authorize_only {
            return Ok(confirmation_id);
        }
        let commit = AuthCommitBody {
            account_number: code,
            account_reference_number: cash_in.id.clone(),
            amount: deposit.amount.to_owned(),
            original_confirmation_id: confirmation_id.clone(),
            customer_id: Some(cash_in.customer_id.clone()).filter(|c| !c.is_empty()),
            description: Some("oms-gateway SandboxService.SimulateDeposit".to_owned()),
        };
        let committed = self
            .client
            .simulate_auth_commit(&commit, &fresh_key(), deadline)
            .await
            .map_err(GatewayError::upstream(resource()))?;
        if let Some(id) = committed.confirmation_id {
            confirmation_id = id;
        }
        Ok(confirmation_id)
    }

    /// The embedded sandbox's control: the code lapses now.
    pub async fn expire_cash_in(
        &self,
        id: &str,
        deadline: Instant,
    ) -> Result<pb::CashIn, GatewayError> {
        let dto = self
            .client
            .sandbox_expire(id, &fresh_key(), deadline)
            .await
            .map_err(GatewayError::upstream(Some(ResourceRef::cash_in(id))))?;
        decode(&self.client, ops::SANDBOX_EXPIRE, dto)
    }

    /// The embedded sandbox's control: the cash-in fails with `sub_status` (one that
    /// [`convert::sub_status_name`] names).
    pub async fn fail_cash_in(
        &self,
        id: &str,
        sub_status: &str,
        deadline: Instant,
    ) -> Result<pb::CashIn, GatewayError> {
        let body = FailBody {
            sub_status: sub_status.to_owned(),
        };
        let dto = self
            .client
            .sandbox_fail(id, &body, &fresh_key(), deadline)
            .await
            .map_err(GatewayError::upstream(Some(ResourceRef::cash_in(id))))?;
        decode(&self.client, ops::SANDBOX_FAIL, dto)
    }

    /// The embedded sandbox's control of a cash-in's delivery: `action` is `under-review`,
    /// `complete`, `fail` (with `failure`: code and message) or `refund`; answers the delivery.
    pub async fn drive_delivery(
        &self,
        id: &str,
        action: &str,
        failure: Option<(&str, &str)>,
        deadline: Instant,
    ) -> Result<pb::Delivery, GatewayError> {
        let body = failure.map(|(code, message)| DeliveryFailureBody {
            code: code.to_owned(),
            message: message.to_owned(),
        });
        let dto = self
            .client
            .sandbox_delivery(id, action, body.as_ref(), &fresh_key(), deadline)
            .await
            .map_err(GatewayError::upstream(Some(ResourceRef::cash_in(id))))?;
        convert::delivery(dto, None)
            .map_err(|e| GatewayError::bad_response(ops::SANDBOX_DELIVERY, e))
    }
}

/// Converts an upstream cash-in of `operation`; a shape the contract cannot hold is
/// UPSTREAM_BAD_RESPONSE. Enum values the gateway does not know go to `client`'s drift count.
fn decode(
    client: &OmsClient,
    operation: &'static str,
    dto: CashInDto,
) -> Result<pb::CashIn, GatewayError> {
    convert::cash_in(dto, client.drift()).map_err(|e| GatewayError::bad_response(operation, e))
}

/// A key for a sandbox-only write.
fn fresh_key() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Whether a page asked for after cursor `sent` repeats what came before, as far as the cursor
/// can tell: its own cursor is `sent` (paging on would ask for this page again), or it holds
/// the cash-in `sent` names (a page after a cash-in never holds it; OMS's cursors are the last
/// id of a page, as in `GET /transactions`). Either means OMS did not apply `startingAfter`,
/// which its documentation does not promise for cash-ins.
fn repeats(sent: &str, next_cursor: Option<&str>, data: &[CashInDto]) -> bool {
    next_cursor == Some(sent) || data.iter().any(|cash_in| cash_in.id == sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(ids: &[&str]) -> Vec<CashInDto> {
        ids.iter()
            .map(|id| {
                serde_json::from_value(serde_json::json!({"id": id, "status": "pending"}))
                    .expect("a cash-in")
            })
            .collect()
    }

    #[test]
    fn a_page_repeats_when_its_cursor_or_its_ids_meet_the_cursor_sent() {
        let next = page(&["ci_2", "ci_1"]);
        assert!(!repeats("ci_3", Some("ci_1"), &next), "the page after ci_3");
        assert!(!repeats("ci_3", None, &next), "the last page");
        assert!(repeats("ci_1", Some("ci_1"), &next), "the same cursor");
        assert!(
            repeats("ci_1", Some("cur_2"), &next),
            "the cash-in it starts after"
        );
        assert!(
            repeats("cur_1", Some("cur_1"), &[]),
            "an empty page, same cursor"
        );
    }
}
