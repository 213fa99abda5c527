//! `polygon.oms.v1.CashLocationService`: retail locations near a point, over `GET /cash-locations`.

use super::deadline;
use crate::convert;
use crate::error::GatewayError;
use crate::proto::v1::{self as pb, cash_location_service_server::CashLocationService};
use crate::upstream::{ListCashLocationsQuery, OmsClient};
use crate::validate::{self, Violations};
use std::time::Duration;
use tonic::{Request, Response, Status};
use tracing::Instrument;

/// The CashLocationService implementation.
#[derive(Clone, Debug)]
pub struct CashLocations {
    client: OmsClient,
    default_deadline: Duration,
}

// === impl CashLocations ===

impl CashLocations {
    /// A service calling OMS through `client`.
    pub fn new(client: OmsClient, default_deadline: Duration) -> Self {
        Self {
            client,
            default_deadline,
        }
    }
}

#[tonic::async_trait]
impl CashLocationService for CashLocations {
    async fn list_cash_locations(
        &self,
        request: Request<pb::ListCashLocationsRequest>,
    ) -> Result<Response<pb::ListCashLocationsResponse>, Status> {
        let deadline = deadline(request.metadata(), self.default_deadline);
        let request = request.into_inner();
        let span = tracing::info_span!("ListCashLocations", provider = %request.provider);
        async {
            let mut violations = Violations::default();
            validate::list_cash_locations(&request, &mut violations);
            violations.finish()?;
            let query = ListCashLocationsQuery {
                provider: request.provider,
                latitude: request.latitude.unwrap_or_default(),
                longitude: request.longitude.unwrap_or_default(),
                flow: request.flow,
            };
            let locations = self
                .client
                .list_cash_locations(&query, deadline)
                .await
                .map_err(GatewayError::upstream("GET /cash-locations", None))?;
            Ok(Response::new(pb::ListCashLocationsResponse {
                cash_locations: locations.into_iter().map(convert::cash_location).collect(),
            }))
        }
        .instrument(span)
        .await
        .map_err(|err: GatewayError| err.into())
    }
}
