//! `polygon.oms.v1.SandboxService`: drive the embedded sandbox from gRPC (simulate a deposit,
//! expire or fail a cash-in, move its delivery through review, completion, failure and refund). Registered only when the upstream is the embedded sandbox. Each
//! call goes through the same REST client as everything else (OMS's sandbox-only simulation
//! endpoints and the embedded sandbox's control endpoints), and publishes the resulting state to
//! watchers at once.

use super::mutation::{Mutation, Subject};
use crate::convert;
use crate::error::GatewayError;
use crate::oms::{Deposit, Oms};
use crate::proto::v1::sandbox_service_server::{self, SandboxService, SandboxServiceServer};
use crate::proto::v1::{self as pb};
use crate::telemetry::rpc_span;
use crate::validate::{self, Violations};
use crate::watch::WatchHub;
use std::time::Duration;
use tokio::time::Instant;
use tonic::{Request, Response, Status};

/// The SandboxService implementation.
#[derive(Clone, Debug)]
pub struct SandboxSimulator {
    oms: Oms,
    hub: WatchHub,
    default_deadline: Duration,
}

// === impl SandboxSimulator ===

impl SandboxSimulator {
    /// A service driving the sandbox behind `oms`.
    pub fn new(oms: Oms, hub: WatchHub, default_deadline: Duration) -> Self {
        Self {
            oms,
            hub,
            default_deadline,
        }
    }

    /// The service as the server registers it, with messages up to `max_message` bytes either
    /// way.
    pub fn server(self, max_message: usize) -> SandboxServiceServer<Self> {
        SandboxServiceServer::new(self)
            .max_decoding_message_size(max_message)
            .max_encoding_message_size(max_message)
    }

    /// The cash-in now, published to its watchers (the sandbox may have moved it on its own).
    async fn get(&self, id: &str, deadline: Instant) -> Result<pb::CashIn, GatewayError> {
        let learned = crate::watch::stamp();
        let cash_in = self.oms.get_cash_in(id, deadline).await?;
        self.hub.learned(&cash_in, learned, false).await;
        Ok(cash_in)
    }

    /// A sandbox call's answer: published to its watchers as the state it made.
    async fn answered(&self, cash_in: pb::CashIn) -> pb::CashIn {
        self.hub
            .learned(&cash_in, crate::watch::stamp(), false)
            .await;
        cash_in
    }

    /// Moves the delivery of cash-in `id` (`action`: the sandbox control's), records and
    /// publishes it as a webhook's would be, and answers the cash-in with it.
    async fn drive(
        &self,
        id: &str,
        action: &str,
        failure: Option<(&str, &str)>,
        deadline: Instant,
    ) -> Result<pb::CashIn, GatewayError> {
        let mut violations = Violations::default();
        validate::cash_in_id(&mut violations, id);
        if let Some((code, message)) = failure {
            delivery_error(&mut violations, code, message);
        }
        violations.finish()?;
        let failure = failure.map(|(code, message)| {
            (
                Some(code)
                    .filter(|c| !c.is_empty())
                    .unwrap_or(DEFAULT_ERROR.0),
                Some(message)
                    .filter(|m| !m.is_empty())
                    .unwrap_or(DEFAULT_ERROR.1),
            )
        });
        let delivery = self
            .oms
            .drive_delivery(id, action, failure, deadline)
            .await?;
        let learned = crate::watch::stamp();
        let mut cash_in = self.oms.get_cash_in(id, deadline).await?;
        let customer = Some(cash_in.customer_id.as_str()).filter(|c| !c.is_empty());
        self.hub
            .learned_delivery(id, customer, &delivery, "sandbox control")
            .await;
        self.hub
            .attach_deliveries(std::slice::from_mut(&mut cash_in))
            .await;
        self.hub.learned(&cash_in, learned, false).await;
        Ok(cash_in)
    }

    async fn simulate(
        &self,
        request: &pb::SimulateDepositRequest,
        deadline: Instant,
    ) -> Result<pb::SimulateDepositResponse, GatewayError> {
        let mut violations = Violations::default();
        validate::cash_in_id(&mut violations, &request.cash_in_id);
        if !request.amount.is_empty() {
            validate::indicated_amount(&mut violations, "amount", &request.amount);
        }
        violations.finish()?;
        let id = &request.cash_in_id;
        let current = self.get(id, deadline).await?;
        if current.status != pb::CashInStatus::Pending as i32 {
            return Err(GatewayError::Precondition(format!(
                "{id} is not pending, so no deposit can be made with its code"
            )));
        }
        let amount = if request.amount.is_empty() {
            current
                .source
                .as_ref()
                .and_then(|s| s.indicated_amount.clone())
                .unwrap_or_else(|| "100.00".to_owned())
        } else {
            request.amount.clone()
        };
        let deposit = Deposit {
            cash_in: &current,
            amount: &amount,
            authorize_only: request.authorize_only,
        };
        let confirmation_id = self.oms.simulate_deposit(deposit, deadline).await?;
        let cash_in = self.get(id, deadline).await?;
        Ok(pb::SimulateDepositResponse {
            cash_in: Some(cash_in),
            confirmation_id,
        })
    }
}

/// A SandboxService mutation (see [`Mutation::unkeyed`]).
fn mutation<T>(request: &Request<T>, rpc: &'static str, default_deadline: Duration) -> Mutation {
    let service = sandbox_service_server::SERVICE_NAME;
    Mutation::unkeyed(request, service, rpc, default_deadline)
}

#[tonic::async_trait]
impl SandboxService for SandboxSimulator {
    async fn simulate_deposit(
        &self,
        request: Request<pb::SimulateDepositRequest>,
    ) -> Result<Response<pb::SimulateDepositResponse>, Status> {
        let mutation = mutation(&request, "SimulateDeposit", self.default_deadline);
        let request = request.into_inner();
        let id = &request.cash_in_id;
        let span = rpc_span!("SimulateDeposit", caller = %mutation.caller(), cash_in_id = %validate::loggable(id));
        let call = self.simulate(&request, mutation.deadline());
        mutation
            .run(span, Subject::cash_in(id), call, |r| r.cash_in.as_ref())
            .await
    }

    async fn expire_cash_in(
        &self,
        request: Request<pb::ExpireCashInRequest>,
    ) -> Result<Response<pb::ExpireCashInResponse>, Status> {
        let mutation = mutation(&request, "ExpireCashIn", self.default_deadline);
        let id = &request.get_ref().cash_in_id;
        let span = rpc_span!("ExpireCashIn", caller = %mutation.caller(), cash_in_id = %validate::loggable(id));
        let call = async {
            let mut violations = Violations::default();
            validate::cash_in_id(&mut violations, id);
            violations.finish()?;
            let expired = self.oms.expire_cash_in(id, mutation.deadline()).await?;
            let cash_in = self.answered(expired).await;
            Ok(pb::ExpireCashInResponse {
                cash_in: Some(cash_in),
            })
        };
        mutation
            .run(span, Subject::cash_in(id), call, |r| r.cash_in.as_ref())
            .await
    }

    async fn fail_cash_in(
        &self,
        request: Request<pb::FailCashInRequest>,
    ) -> Result<Response<pb::FailCashInResponse>, Status> {
        let mutation = mutation(&request, "FailCashIn", self.default_deadline);
        let request = request.get_ref();
        let id = &request.cash_in_id;
        let span = rpc_span!("FailCashIn", caller = %mutation.caller(), cash_in_id = %validate::loggable(id));
        let call = async {
            let mut violations = Violations::default();
            validate::cash_in_id(&mut violations, id);
            let sub_status = failure_sub_status(&mut violations, request.sub_status);
            violations.finish()?;
            let sub_status = sub_status
                .and_then(convert::sub_status_name)
                .unwrap_or_default();
            let failed = self
                .oms
                .fail_cash_in(id, sub_status, mutation.deadline())
                .await?;
            let cash_in = self.answered(failed).await;
            Ok(pb::FailCashInResponse {
                cash_in: Some(cash_in),
            })
        };
        mutation
            .run(span, Subject::cash_in(id), call, |r| r.cash_in.as_ref())
            .await
    }

    async fn review_delivery(
        &self,
        request: Request<pb::ReviewDeliveryRequest>,
    ) -> Result<Response<pb::ReviewDeliveryResponse>, Status> {
        let mutation = mutation(&request, "ReviewDelivery", self.default_deadline);
        let id = &request.get_ref().cash_in_id;
        let span = rpc_span!("ReviewDelivery", caller = %mutation.caller(), cash_in_id = %validate::loggable(id));
        let call = async {
            let cash_in = self
                .drive(id, "under-review", None, mutation.deadline())
                .await?;
            Ok(pb::ReviewDeliveryResponse {
                cash_in: Some(cash_in),
            })
        };
        mutation
            .run(span, Subject::cash_in(id), call, |r| r.cash_in.as_ref())
            .await
    }

    async fn complete_delivery(
        &self,
        request: Request<pb::CompleteDeliveryRequest>,
    ) -> Result<Response<pb::CompleteDeliveryResponse>, Status> {
        let mutation = mutation(&request, "CompleteDelivery", self.default_deadline);
        let id = &request.get_ref().cash_in_id;
        let span = rpc_span!("CompleteDelivery", caller = %mutation.caller(), cash_in_id = %validate::loggable(id));
        let call = async {
            let cash_in = self
                .drive(id, "complete", None, mutation.deadline())
                .await?;
            Ok(pb::CompleteDeliveryResponse {
                cash_in: Some(cash_in),
            })
        };
        mutation
            .run(span, Subject::cash_in(id), call, |r| r.cash_in.as_ref())
            .await
    }

    async fn fail_delivery(
        &self,
        request: Request<pb::FailDeliveryRequest>,
    ) -> Result<Response<pb::FailDeliveryResponse>, Status> {
        let mutation = mutation(&request, "FailDelivery", self.default_deadline);
        let request = request.get_ref();
        let id = &request.cash_in_id;
        let span = rpc_span!("FailDelivery", caller = %mutation.caller(), cash_in_id = %validate::loggable(id));
        let failure = (request.error_code.as_str(), request.error_message.as_str());
        let call = async {
            let cash_in = self
                .drive(id, "fail", Some(failure), mutation.deadline())
                .await?;
            Ok(pb::FailDeliveryResponse {
                cash_in: Some(cash_in),
            })
        };
        mutation
            .run(span, Subject::cash_in(id), call, |r| r.cash_in.as_ref())
            .await
    }

    async fn complete_refund(
        &self,
        request: Request<pb::CompleteRefundRequest>,
    ) -> Result<Response<pb::CompleteRefundResponse>, Status> {
        let mutation = mutation(&request, "CompleteRefund", self.default_deadline);
        let id = &request.get_ref().cash_in_id;
        let span = rpc_span!("CompleteRefund", caller = %mutation.caller(), cash_in_id = %validate::loggable(id));
        let call = async {
            let cash_in = self.drive(id, "refund", None, mutation.deadline()).await?;
            Ok(pb::CompleteRefundResponse {
                cash_in: Some(cash_in),
            })
        };
        mutation
            .run(span, Subject::cash_in(id), call, |r| r.cash_in.as_ref())
            .await
    }
}

/// The sandbox's default delivery failure: the guide's example.
const DEFAULT_ERROR: (&str, &str) = ("on_chain_revert", "Delivery transaction reverted onchain");
/// The longest error code FailDelivery takes.
const MAX_ERROR_CODE: usize = 64;
/// The longest error message FailDelivery takes, in characters.
const MAX_ERROR_MESSAGE: usize = 200;

/// FailDelivery's error: a code of `[a-z0-9_]` and a printable message, both bounded (empty:
/// the defaults).
fn delivery_error(violations: &mut Violations, code: &str, message: &str) {
    let code_ok = code.len() <= MAX_ERROR_CODE
        && code
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !code_ok {
        violations.add(
            "error_code",
            format!("must be at most {MAX_ERROR_CODE} of [a-z0-9_], e.g. on_chain_revert"),
        );
    }
    if message.chars().count() > MAX_ERROR_MESSAGE || message.chars().any(char::is_control) {
        violations.add(
            "error_message",
            format!("must be at most {MAX_ERROR_MESSAGE} printable characters"),
        );
    }
}

/// FailCashIn's sub-status: a failure's; unset means the cash never arrived.
fn failure_sub_status(violations: &mut Violations, sub_status: i32) -> Option<pb::CashInSubStatus> {
    match pb::CashInSubStatus::try_from(sub_status) {
        Ok(pb::CashInSubStatus::Unspecified) => Some(pb::CashInSubStatus::CashDepositFailed),
        Ok(
            failed @ (pb::CashInSubStatus::CashDepositFailed
            | pb::CashInSubStatus::ProviderOrderFailed
            | pb::CashInSubStatus::ProviderOrderTemplateError),
        ) => Some(failed),
        _ => {
            violations.add(
                "sub_status",
                "must be CASH_DEPOSIT_FAILED, PROVIDER_ORDER_FAILED or PROVIDER_ORDER_TEMPLATE_ERROR",
            );
            None
        }
    }
}
