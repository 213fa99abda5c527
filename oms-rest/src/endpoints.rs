//! The OMS REST operations the gateway uses, one method each: the method, path, query and body
//! of each, and its operation name ([`ops`]), which every failure carries (and the operations
//! layer names in decode errors). Sending, retrying and decoding the answer is `send.rs`'s job.

use crate::WriteKey;
use crate::model::{
    self, CashInDto, CashInPageDto, CashLocationDto, CashLocationListDto, CreateCashInBody,
    TransactionDto,
};
use crate::observe::Answer;
use crate::send::Call;
use crate::{ListCashInsQuery, ListCashLocationsQuery, OmsClient, UpstreamError, UpstreamFailure};
use http::Method;
use tokio::time::Instant;

/// The name of each REST operation, as failures, logs and ErrorInfo report it.
pub mod ops {
    #[allow(missing_docs)]
    pub const CREATE_CASH_IN: &str = "POST /cash-ins";
    #[allow(missing_docs)]
    pub const GET_CASH_IN: &str = "GET /cash-ins/{id}";
    #[allow(missing_docs)]
    pub const LIST_CASH_INS: &str = "GET /cash-ins";
    #[allow(missing_docs)]
    pub const REFRESH_CASH_IN: &str = "POST /cash-ins/{id}/refresh";
    #[allow(missing_docs)]
    pub const LIST_CASH_LOCATIONS: &str = "GET /cash-locations";
    #[allow(missing_docs)]
    pub const SIMULATE_BARCODE_AUTH: &str = "POST /cash-ins/simulate/barcode-auth";
    #[allow(missing_docs)]
    pub const SIMULATE_AUTH_COMMIT: &str = "POST /cash-ins/simulate/auth-commit";
    #[allow(missing_docs)]
    pub const SANDBOX_EXPIRE: &str = "POST /sandbox/cash-ins/{id}/expire";
    #[allow(missing_docs)]
    pub const SANDBOX_FAIL: &str = "POST /sandbox/cash-ins/{id}/fail";
    #[allow(missing_docs)]
    pub const GET_TRANSACTION: &str = "GET /transactions/{id}";
    #[allow(missing_docs)]
    pub const SANDBOX_DELIVERY: &str = "POST /sandbox/cash-ins/{id}/delivery/{action}";

    /// Every operation above: a name read back (an outcome stored in Redis) becomes its
    /// `&'static str` again through [`named`].
    const ALL: &[&str] = &[
        CREATE_CASH_IN,
        GET_CASH_IN,
        LIST_CASH_INS,
        REFRESH_CASH_IN,
        LIST_CASH_LOCATIONS,
        SIMULATE_BARCODE_AUTH,
        SIMULATE_AUTH_COMMIT,
        SANDBOX_EXPIRE,
        SANDBOX_FAIL,
        GET_TRANSACTION,
        SANDBOX_DELIVERY,
    ];

    /// The operation called `name`, if there is one.
    pub fn named(name: &str) -> Option<&'static str> {
        ALL.iter().copied().find(|op| *op == name)
    }
}

// === impl OmsClient ===

impl OmsClient {
    /// `POST /cash-ins`.
    pub async fn create_cash_in(
        &self,
        body: &CreateCashInBody,
        idempotency_key: WriteKey<'_>,
        deadline: Instant,
    ) -> Result<CashInDto, UpstreamFailure> {
        self.post(
            ops::CREATE_CASH_IN,
            &["cash-ins"],
            Some(body),
            idempotency_key,
            deadline,
        )
        .await
    }

    /// `GET /cash-ins/{id}`.
    pub async fn get_cash_in(
        &self,
        id: &str,
        deadline: Instant,
    ) -> Result<CashInDto, UpstreamFailure> {
        self.send(Call {
            operation: ops::GET_CASH_IN,
            method: Method::GET,
            url: self.url(&["cash-ins", id]),
            body: None,
            idempotency_key: None,
            resumes: false,
            deadline,
        })
        .await
    }

    /// `GET /transactions/{id}`: not in OMS's documentation (the gateway probes for it).
    pub async fn get_transaction(
        &self,
        id: &str,
        deadline: Instant,
    ) -> Result<TransactionDto, UpstreamFailure> {
        self.send(Call {
            operation: ops::GET_TRANSACTION,
            method: Method::GET,
            url: self.url(&["transactions", id]),
            body: None,
            idempotency_key: None,
            resumes: false,
            deadline,
        })
        .await
    }

    /// `GET /cash-ins`.
    pub async fn list_cash_ins(
        &self,
        query: &ListCashInsQuery,
        deadline: Instant,
    ) -> Result<CashInPageDto, UpstreamFailure> {
        let mut url = self.url(&["cash-ins"]);
        {
            let mut pairs = url.query_pairs_mut();
            let optional = [
                ("customer", &query.customer),
                ("status", &query.status),
                ("createdAfter", &query.created_after),
                ("createdBefore", &query.created_before),
                ("startingAfter", &query.starting_after),
            ];
            for (name, value) in optional {
                if let Some(value) = value {
                    pairs.append_pair(name, value);
                }
            }
            pairs.append_pair("limit", &query.limit.to_string());
        }
        self.send(Call {
            operation: ops::LIST_CASH_INS,
            method: Method::GET,
            url,
            body: None,
            idempotency_key: None,
            resumes: false,
            deadline,
        })
        .await
    }

    /// `POST /cash-ins/{id}/refresh` (no body).
    pub async fn refresh_cash_in(
        &self,
        id: &str,
        idempotency_key: WriteKey<'_>,
        deadline: Instant,
    ) -> Result<CashInDto, UpstreamFailure> {
        let segments = ["cash-ins", id, "refresh"];
        self.post(
            ops::REFRESH_CASH_IN,
            &segments,
            None::<&()>,
            idempotency_key,
            deadline,
        )
        .await
    }

    /// `GET /cash-locations`.
    pub async fn list_cash_locations(
        &self,
        query: &ListCashLocationsQuery,
        deadline: Instant,
    ) -> Result<Vec<CashLocationDto>, UpstreamFailure> {
        let mut url = self.url(&["cash-locations"]);
        {
            let mut pairs = url.query_pairs_mut();
            pairs.append_pair("provider", &query.provider);
            pairs.append_pair("latitude", &query.latitude.to_string());
            pairs.append_pair("longitude", &query.longitude.to_string());
            if let Some(flow) = &query.flow {
                pairs.append_pair("flow", flow);
            }
        }
        let list: CashLocationListDto = self
            .send(Call {
                operation: ops::LIST_CASH_LOCATIONS,
                method: Method::GET,
                url,
                body: None,
                idempotency_key: None,
                resumes: false,
                deadline,
            })
            .await?;
        Ok(list.into_vec())
    }

    /// A POST with a JSON body (or none) and an idempotency key, for the sandbox endpoints.
    async fn post<T: Answer>(
        &self,
        operation: &'static str,
        segments: &[&str],
        body: Option<&impl serde::Serialize>,
        idempotency_key: impl Into<WriteKey<'_>>,
        deadline: Instant,
    ) -> Result<T, UpstreamFailure> {
        let key = idempotency_key.into();
        let body = body
            .map(|body| serde_json::to_vec(body).map(bytes::Bytes::from))
            .transpose()
            .map_err(|e| UpstreamFailure {
                operation,
                error: UpstreamError::BadResponse(format!("cannot encode the request: {e}")),
            })?;
        self.send(Call {
            operation,
            method: Method::POST,
            url: self.url(segments),
            body,
            idempotency_key: Some(key.key),
            resumes: key.resumes,
            deadline,
        })
        .await
    }

    /// `POST /cash-ins/simulate/barcode-auth` (OMS sandbox only).
    pub async fn simulate_barcode_auth(
        &self,
        body: &model::BarcodeAuthBody,
        idempotency_key: &str,
        deadline: Instant,
    ) -> Result<model::SimulationResultDto, UpstreamFailure> {
        let segments = ["cash-ins", "simulate", "barcode-auth"];
        self.post(
            ops::SIMULATE_BARCODE_AUTH,
            &segments,
            Some(body),
            idempotency_key,
            deadline,
        )
        .await
    }

    /// `POST /cash-ins/simulate/auth-commit` (OMS sandbox only).
    pub async fn simulate_auth_commit(
        &self,
        body: &model::AuthCommitBody,
        idempotency_key: &str,
        deadline: Instant,
    ) -> Result<model::SimulationResultDto, UpstreamFailure> {
        let segments = ["cash-ins", "simulate", "auth-commit"];
        self.post(
            ops::SIMULATE_AUTH_COMMIT,
            &segments,
            Some(body),
            idempotency_key,
            deadline,
        )
        .await
    }

    /// `POST /sandbox/cash-ins/{id}/expire` (embedded sandbox only).
    pub async fn sandbox_expire(
        &self,
        id: &str,
        idempotency_key: &str,
        deadline: Instant,
    ) -> Result<CashInDto, UpstreamFailure> {
        let segments = ["sandbox", "cash-ins", id, "expire"];
        self.post(
            ops::SANDBOX_EXPIRE,
            &segments,
            None::<&()>,
            idempotency_key,
            deadline,
        )
        .await
    }

    /// `POST /sandbox/cash-ins/{id}/fail` (embedded sandbox only).
    pub async fn sandbox_fail(
        &self,
        id: &str,
        body: &model::FailBody,
        idempotency_key: &str,
        deadline: Instant,
    ) -> Result<CashInDto, UpstreamFailure> {
        let segments = ["sandbox", "cash-ins", id, "fail"];
        self.post(
            ops::SANDBOX_FAIL,
            &segments,
            Some(body),
            idempotency_key,
            deadline,
        )
        .await
    }

    /// `POST /sandbox/cash-ins/{id}/delivery/{action}` (embedded sandbox only): `action` one of
    /// `under-review`, `complete`, `fail` (with `body`) or `refund`; answers the transaction.
    pub async fn sandbox_delivery(
        &self,
        id: &str,
        action: &str,
        body: Option<&model::DeliveryFailureBody>,
        idempotency_key: &str,
        deadline: Instant,
    ) -> Result<TransactionDto, UpstreamFailure> {
        let segments = ["sandbox", "cash-ins", id, "delivery", action];
        self.post(
            ops::SANDBOX_DELIVERY,
            &segments,
            body,
            idempotency_key,
            deadline,
        )
        .await
    }
}
