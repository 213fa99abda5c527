//! `polygon.oms.v1.CashLocationService`: retail locations near a point, over `GET /cash-locations`.

use super::deadline;
use crate::error::GatewayError;
use crate::oms::Oms;
use crate::proto::v1::cash_location_service_server::{
    CashLocationService, CashLocationServiceServer,
};
use crate::proto::v1::{self as pb};
use crate::security::Caller;
use crate::telemetry::rpc_span;
use crate::validate::{self, Violations};
use std::time::Duration;
use tonic::{Request, Response, Status};
use tracing::Instrument;

/// The CashLocationService implementation.
#[derive(Clone, Debug)]
pub struct CashLocations {
    oms: Oms,
    default_deadline: Duration,
}

// === impl CashLocations ===

impl CashLocations {
    /// A service calling OMS through `oms`.
    pub fn new(oms: Oms, default_deadline: Duration) -> Self {
        Self {
            oms,
            default_deadline,
        }
    }

    /// The service as the server registers it, with messages up to `max_message` bytes either
    /// way.
    pub fn server(self, max_message: usize) -> CashLocationServiceServer<Self> {
        CashLocationServiceServer::new(self)
            .max_decoding_message_size(max_message)
            .max_encoding_message_size(max_message)
    }
}

#[tonic::async_trait]
impl CashLocationService for CashLocations {
    async fn list_cash_locations(
        &self,
        request: Request<pb::ListCashLocationsRequest>,
    ) -> Result<Response<pb::ListCashLocationsResponse>, Status> {
        let deadline = deadline(&request, self.default_deadline);
        let caller = Caller::of(&request);
        let request = request.into_inner();
        let span = rpc_span!("ListCashLocations", caller = %caller, provider = %validate::loggable(&request.provider));
        async {
            let mut violations = Violations::default();
            validate::list_cash_locations(&request, &mut violations);
            violations.finish()?;
            let cash_locations = self.oms.list_cash_locations(&request, deadline).await?;
            Ok(Response::new(pb::ListCashLocationsResponse {
                cash_locations,
            }))
        }
        .instrument(span)
        .await
        .map_err(|err: GatewayError| err.into())
    }
}
