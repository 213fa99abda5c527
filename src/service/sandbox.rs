//! `polygon.oms.v1.SandboxService`: drive the embedded sandbox from gRPC (simulate a deposit,
//! expire or fail a cash-in). Registered only when the upstream is the embedded sandbox. Each
//! call goes through the same REST client as everything else (OMS's sandbox-only simulation
//! endpoints and the embedded sandbox's control endpoints), and publishes the resulting state to
//! watchers at once.

use super::deadline;
use crate::audit;
use crate::convert;
use crate::error::GatewayError;
use crate::oms::{Deposit, Oms};
use crate::proto::v1::{self as pb, sandbox_service_server::SandboxService};
use crate::security::Caller;
use crate::telemetry::rpc_span;
use crate::validate::{self, Violations};
use crate::watch::WatchHub;
use std::time::Duration;
use tokio::time::Instant;
use tonic::{Request, Response, Status};
use tracing::Instrument;

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

    async fn get(&self, id: &str, deadline: Instant) -> Result<pb::CashIn, GatewayError> {
        let cash_in = self.oms.get_cash_in(id, deadline).await?;
        self.hub.publish(&cash_in);
        Ok(cash_in)
    }

    async fn simulate(
        &self,
        request: pb::SimulateDepositRequest,
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

/// Runs a SandboxService call and writes its audit line (they change a cash-in's state):
/// `cash_in` finds the cash-in in the answer, for the line's customer id.
async fn audited<T>(
    caller: &str,
    rpc: &str,
    cash_in_id: &str,
    call: impl std::future::Future<Output = Result<T, GatewayError>>,
    cash_in: impl Fn(&T) -> Option<&pb::CashIn>,
) -> Result<Response<T>, Status> {
    let (result, upstream_request_id) = audit::recording_request_id(call).await;
    let method = format!("polygon.oms.v1.SandboxService/{rpc}");
    let customer_id = result
        .as_ref()
        .ok()
        .and_then(&cash_in)
        .map_or("", |c| c.customer_id.as_str());
    audit::mutation(
        &audit::Mutation {
            caller,
            method: &method,
            cash_in_id: validate::loggable(cash_in_id),
            customer_id,
            ..Default::default()
        },
        result.as_ref().map(|_| ()),
        &upstream_request_id,
    );
    result.map(Response::new).map_err(Status::from)
}

#[tonic::async_trait]
impl SandboxService for SandboxSimulator {
    async fn simulate_deposit(
        &self,
        request: Request<pb::SimulateDepositRequest>,
    ) -> Result<Response<pb::SimulateDepositResponse>, Status> {
        let deadline = deadline(&request, self.default_deadline);
        let caller = Caller::of(&request);
        let request = request.into_inner();
        let id = request.cash_in_id.clone();
        let span = rpc_span!("SimulateDeposit", caller = %caller, cash_in_id = %validate::loggable(&request.cash_in_id));
        let call = self.simulate(request, deadline).instrument(span);
        audited(&caller, "SimulateDeposit", &id, call, |r| {
            r.cash_in.as_ref()
        })
        .await
    }

    async fn expire_cash_in(
        &self,
        request: Request<pb::ExpireCashInRequest>,
    ) -> Result<Response<pb::ExpireCashInResponse>, Status> {
        let deadline = deadline(&request, self.default_deadline);
        let caller = Caller::of(&request);
        let id = request.into_inner().cash_in_id;
        let span =
            rpc_span!("ExpireCashIn", caller = %caller, cash_in_id = %validate::loggable(&id));
        let call = async {
            let mut violations = Violations::default();
            validate::cash_in_id(&mut violations, &id);
            violations.finish()?;
            let cash_in = self.oms.expire_cash_in(&id, deadline).await?;
            self.hub.publish(&cash_in);
            Ok(pb::ExpireCashInResponse {
                cash_in: Some(cash_in),
            })
        };
        audited(&caller, "ExpireCashIn", &id, call.instrument(span), |r| {
            r.cash_in.as_ref()
        })
        .await
    }

    async fn fail_cash_in(
        &self,
        request: Request<pb::FailCashInRequest>,
    ) -> Result<Response<pb::FailCashInResponse>, Status> {
        let deadline = deadline(&request, self.default_deadline);
        let caller = Caller::of(&request);
        let request = request.into_inner();
        let id = request.cash_in_id;
        let span = rpc_span!("FailCashIn", caller = %caller, cash_in_id = %validate::loggable(&id));
        let call = async {
            let mut violations = Violations::default();
            validate::cash_in_id(&mut violations, &id);
            let sub_status = match pb::CashInSubStatus::try_from(request.sub_status) {
                // A failure's sub-status; unset means the cash never arrived.
                Ok(pb::CashInSubStatus::Unspecified) => {
                    Some(pb::CashInSubStatus::CashDepositFailed)
                }
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
            };
            violations.finish()?;
            let sub_status = sub_status
                .and_then(convert::sub_status_name)
                .unwrap_or_default();
            let cash_in = self.oms.fail_cash_in(&id, sub_status, deadline).await?;
            self.hub.publish(&cash_in);
            Ok(pb::FailCashInResponse {
                cash_in: Some(cash_in),
            })
        };
        audited(&caller, "FailCashIn", &id, call.instrument(span), |r| {
            r.cash_in.as_ref()
        })
        .await
    }
}
