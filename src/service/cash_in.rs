//! `polygon.oms.v1.CashInService`: create, get, list and refresh cash-ins over the OMS REST API.

use super::{
    KeyedOperation, deadline, echo_idempotency_keys, grpc_timeout, idempotency_key, page_token,
    status_with_keys, upstream_idempotency_key,
};
use crate::audit;
use crate::error::GatewayError;
use crate::idempotency::IdempotencyLayer;
use crate::oms::{CashInQuery, NewCashIn, Oms, WriteKey};
use crate::proto::v1::{self as pb, cash_in_service_server::CashInService};
use crate::security::Caller;
use crate::telemetry::rpc_span;
use crate::validate::{self, Violations};
use crate::watch::{
    WatchHub, WatchKey,
    stream::{self, EventStream, Mode},
};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tonic::{Request, Response, Status};
use tracing::Instrument;

/// The default and largest page sizes of `GET /cash-ins`.
const DEFAULT_PAGE_SIZE: u32 = 50;
const MAX_PAGE_SIZE: u32 = 100;

/// The CashInService implementation.
#[derive(Clone, Debug)]
pub struct CashIns {
    oms: Oms,
    default_deadline: Duration,
    hub: WatchHub,
    /// Shares and replays mutations per (caller, key): see `idempotency.rs`.
    idempotency: Arc<IdempotencyLayer<pb::CashIn>>,
}

// === impl CashIns ===

impl CashIns {
    /// A service calling OMS through `oms` and watching through `hub`.
    pub fn new(
        oms: Oms,
        default_deadline: Duration,
        hub: WatchHub,
        idempotency: Arc<IdempotencyLayer<pb::CashIn>>,
    ) -> Self {
        Self {
            oms,
            default_deadline,
            hub,
            idempotency,
        }
    }

    fn watch(
        &self,
        key: WatchKey,
        mode: Mode,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<EventStream, GatewayError> {
        let subscription = self.hub.subscribe(key)?;
        let deadline = grpc_timeout(metadata).map(|t| Instant::now() + t);
        Ok(stream::events(
            subscription,
            mode,
            deadline,
            self.hub.config().heartbeat_interval,
        ))
    }
}

/// What every mutating call carries, read before validation so errors can echo the key.
struct Mutation {
    deadline: Instant,
    key: String,
    /// The authenticated caller (see `security::CallerLayer`); empty when anonymous.
    caller: String,
    /// The key sent to OMS: `key` scoped to `caller` and the operation (see
    /// `upstream_idempotency_key`).
    upstream_key: String,
}

impl Mutation {
    /// The caller's key for a log line: itself if valid, else a placeholder.
    fn loggable_key(&self) -> &str {
        match self.key.as_str() {
            "" => "",
            key if validate::is_idempotency_key(key) => key,
            _ => "<invalid>",
        }
    }

    /// The key to send upstream; `resumes`: see [`WriteKey::resumes`].
    fn write_key(&self, resumes: bool) -> WriteKey<'_> {
        WriteKey {
            key: &self.upstream_key,
            resumes,
        }
    }

    /// The call's audit line.
    fn audit(
        &self,
        method: &str,
        cash_in_id: &str,
        customer_id: &str,
        result: Result<(), &GatewayError>,
        upstream_request_id: &str,
    ) {
        audit::mutation(
            &audit::Mutation {
                caller: &self.caller,
                method,
                idempotency_key: self.loggable_key(),
                oms_idempotency_key: if self.loggable_key() == self.key {
                    &self.upstream_key
                } else {
                    ""
                },
                cash_in_id: validate::loggable(cash_in_id),
                customer_id: validate::loggable(customer_id),
            },
            result,
            upstream_request_id,
        );
    }
}

impl CashIns {
    fn mutation<T>(
        &self,
        operation: KeyedOperation,
        request: &Request<T>,
        field_key: &str,
        violations: &mut Violations,
    ) -> Mutation {
        let key = idempotency_key(field_key, request.metadata(), violations);
        let caller = Caller::of(request);
        Mutation {
            deadline: deadline(request, self.default_deadline),
            upstream_key: upstream_idempotency_key(operation, &caller, &key),
            key,
            caller,
        }
    }

    /// Runs `call` through the idempotency layer (share, replay or refuse; see idempotency.rs);
    /// `call` is told whether it resumes an abandoned call with the same key.
    async fn run_idempotently<F, Fut>(
        &self,
        mutation: &Mutation,
        operation: &'static str,
        fingerprint: u64,
        call: F,
    ) -> Result<pb::CashIn, GatewayError>
    where
        F: FnOnce(bool) -> Fut,
        Fut: std::future::Future<Output = Result<pb::CashIn, GatewayError>>,
    {
        self.idempotency
            .run(
                &mutation.caller,
                operation,
                &mutation.key,
                fingerprint,
                mutation.deadline,
                call,
            )
            .await
    }
}

#[tonic::async_trait]
impl CashInService for CashIns {
    async fn create_cash_in(
        &self,
        request: Request<pb::CreateCashInRequest>,
    ) -> Result<Response<pb::CreateCashInResponse>, Status> {
        let mut violations = Violations::default();
        let mutation = self.mutation(
            KeyedOperation::CreateCashIn,
            &request,
            &request.get_ref().idempotency_key,
            &mut violations,
        );
        let span = rpc_span!("CreateCashIn", idempotency_key = %mutation.loggable_key(), caller = %mutation.caller, cash_in_id = tracing::field::Empty);
        let request = request.into_inner();
        let customer_id = request.customer_id.clone();
        let call = async {
            validate::create_cash_in(&request, &mut violations);
            violations.finish()?;
            let new = NewCashIn::new(&request);
            let fingerprint = new.fingerprint();
            let (mutation, new) = (&mutation, &new);
            let cash_in = self
                .run_idempotently(
                    mutation,
                    "CreateCashIn",
                    fingerprint,
                    |resumes| async move {
                        let key = mutation.write_key(resumes);
                        self.oms.create_cash_in(new, key, mutation.deadline).await
                    },
                )
                .await?;
            tracing::Span::current().record("cash_in_id", cash_in.id.as_str());
            tracing::info!(status = cash_in.status, "cash-in created");
            // Its customer's watchers hear of it now, not at their poller's next turn.
            self.hub.publish(&cash_in);
            let mut response = Response::new(pb::CreateCashInResponse {
                cash_in: Some(cash_in),
            });
            echo_idempotency_keys(
                response.metadata_mut(),
                &mutation.key,
                &mutation.upstream_key,
            );
            Ok(response)
        }
        .instrument(span);
        let recorded = audit::recording_request_id(call).await;
        let (result, upstream_request_id): (
            Result<Response<pb::CreateCashInResponse>, GatewayError>,
            String,
        ) = recorded;
        let cash_in_id = match &result {
            Ok(response) => response.get_ref().cash_in.as_ref().map(|c| c.id.clone()),
            Err(_) => None,
        };
        mutation.audit(
            "polygon.oms.v1.CashInService/CreateCashIn",
            cash_in_id.as_deref().unwrap_or(""),
            &customer_id,
            result.as_ref().map(|_| ()),
            &upstream_request_id,
        );
        result.map_err(|err| status_with_keys(err, &mutation.key, &mutation.upstream_key))
    }

    async fn get_cash_in(
        &self,
        request: Request<pb::GetCashInRequest>,
    ) -> Result<Response<pb::GetCashInResponse>, Status> {
        let deadline = deadline(&request, self.default_deadline);
        let caller = Caller::of(&request);
        let id = request.into_inner().cash_in_id;
        let span = rpc_span!("GetCashIn", caller = %caller, cash_in_id = %validate::loggable(&id));
        async {
            let mut violations = Violations::default();
            validate::cash_in_id(&mut violations, &id);
            violations.finish()?;
            let cash_in = self.oms.get_cash_in(&id, deadline).await?;
            Ok(Response::new(pb::GetCashInResponse {
                cash_in: Some(cash_in),
            }))
        }
        .instrument(span)
        .await
        .map_err(|err: GatewayError| err.into())
    }

    async fn list_cash_ins(
        &self,
        request: Request<pb::ListCashInsRequest>,
    ) -> Result<Response<pb::ListCashInsResponse>, Status> {
        let deadline = deadline(&request, self.default_deadline);
        let caller = Caller::of(&request);
        let request = request.into_inner();
        let span = rpc_span!("ListCashIns", caller = %caller, customer_id = %validate::loggable(&request.customer_id), page_size = request.page_size);
        async {
            let (query, filters) = list_query(&request)?;
            let page = self.oms.list_cash_ins(&query, deadline).await?;
            Ok(Response::new(pb::ListCashInsResponse {
                cash_ins: page.cash_ins,
                next_page_token: page
                    .next_cursor
                    .map(|cursor| page_token::encode(filters, &cursor))
                    .unwrap_or_default(),
            }))
        }
        .instrument(span)
        .await
        .map_err(|err: GatewayError| err.into())
    }

    async fn refresh_cash_in(
        &self,
        request: Request<pb::RefreshCashInRequest>,
    ) -> Result<Response<pb::RefreshCashInResponse>, Status> {
        let mut violations = Violations::default();
        let mutation = self.mutation(
            KeyedOperation::RefreshCashIn,
            &request,
            &request.get_ref().idempotency_key,
            &mut violations,
        );
        let request = request.into_inner();
        let span = rpc_span!("RefreshCashIn", cash_in_id = %validate::loggable(&request.cash_in_id), idempotency_key = %mutation.loggable_key(), caller = %mutation.caller);
        let call = async {
            validate::cash_in_id(&mut violations, &request.cash_in_id);
            validate::idempotency_key(&mut violations, "idempotency_key", &request.idempotency_key);
            violations.finish()?;
            let id = &request.cash_in_id;
            let fingerprint = crate::digest::fingerprint(&[id]);
            let mutation = &mutation;
            let cash_in = self
                .run_idempotently(
                    mutation,
                    "RefreshCashIn",
                    fingerprint,
                    |resumes| async move {
                        let key = mutation.write_key(resumes);
                        self.oms.refresh_cash_in(id, key, mutation.deadline).await
                    },
                )
                .await?;
            tracing::info!("deposit code refreshed");
            self.hub.publish(&cash_in);
            let mut response = Response::new(pb::RefreshCashInResponse {
                cash_in: Some(cash_in),
            });
            echo_idempotency_keys(
                response.metadata_mut(),
                &mutation.key,
                &mutation.upstream_key,
            );
            Ok(response)
        }
        .instrument(span);
        let recorded = audit::recording_request_id(call).await;
        let (result, upstream_request_id): (
            Result<Response<pb::RefreshCashInResponse>, GatewayError>,
            String,
        ) = recorded;
        let customer_id = match &result {
            Ok(response) => response
                .get_ref()
                .cash_in
                .as_ref()
                .map(|c| c.customer_id.clone()),
            Err(_) => None,
        };
        mutation.audit(
            "polygon.oms.v1.CashInService/RefreshCashIn",
            &request.cash_in_id,
            customer_id.as_deref().unwrap_or(""),
            result.as_ref().map(|_| ()),
            &upstream_request_id,
        );
        result.map_err(|err| status_with_keys(err, &mutation.key, &mutation.upstream_key))
    }
}

// === the watch RPCs, as `watch_route` serves them ===

impl CashIns {
    /// WatchCashIn: the cash-in's state now, then every change, until it is terminal.
    pub async fn watch_one(
        &self,
        request: Request<pb::WatchCashInRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let id = request.get_ref().cash_in_id.clone();
        let caller = Caller::of(&request);
        let _span =
            rpc_span!("WatchCashIn", caller = %caller, cash_in_id = %validate::loggable(&id))
                .entered();
        let mut violations = Violations::default();
        validate::cash_in_id(&mut violations, &id);
        violations.finish()?;
        let stream = self.watch(WatchKey::CashIn(id), Mode::Single, request.metadata())?;
        Ok(Response::new(stream))
    }

    /// WatchCashIns: a customer's cash-ins in the wanted statuses now, then every change.
    pub async fn watch_customer(
        &self,
        request: Request<pb::WatchCashInsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let customer = request.get_ref().customer_id.clone();
        let caller = Caller::of(&request);
        let _span = rpc_span!("WatchCashIns", caller = %caller, customer_id = %validate::loggable(&customer)).entered();
        let mut violations = Violations::default();
        violations.required_id("customer_id", &customer, "cst_");
        let statuses = validate::watch_statuses(&mut violations, &request.get_ref().statuses)
            .into_iter()
            .collect();
        violations.finish()?;
        let stream = self.watch(
            WatchKey::Customer(customer),
            Mode::Filter { statuses },
            request.metadata(),
        )?;
        Ok(Response::new(stream))
    }
}

/// ListCashIns's request as the query to send and the fingerprint its page tokens are bound to,
/// or every problem with it.
fn list_query(request: &pb::ListCashInsRequest) -> Result<(CashInQuery, u64), GatewayError> {
    let mut violations = Violations::default();
    violations.optional_id("customer_id", &request.customer_id, "cst_");
    let status = validate::status_filter(&mut violations, "status", request.status);
    let (after, before) = (request.created_after, request.created_before);
    validate::timestamp(&mut violations, "created_after", after.as_ref());
    validate::timestamp(&mut violations, "created_before", before.as_ref());
    if let (Some(after), Some(before)) = (&after, &before)
        && (after.seconds, after.nanos) > (before.seconds, before.nanos)
    {
        violations.add("created_before", "must not be earlier than created_after");
    }
    if request.page_size < 0 {
        violations.add("page_size", "must not be negative");
    }
    let stamp = |t: Option<prost_types::Timestamp>| {
        t.map(|t| format!("{}.{}", t.seconds, t.nanos))
            .unwrap_or_default()
    };
    let filters = crate::digest::fingerprint(&[
        &request.customer_id,
        &(status as i32).to_string(),
        &stamp(after),
        &stamp(before),
    ]);
    let starting_after = if request.page_token.is_empty() {
        None
    } else {
        page_token::decode(&request.page_token, filters)
            .map_err(|problem| violations.add("page_token", problem))
            .ok()
    };
    violations.finish()?;
    let limit = match u32::try_from(request.page_size).unwrap_or(0) {
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    };
    let query = CashInQuery {
        customer_id: request.customer_id.clone(),
        status,
        created_after: after,
        created_before: before,
        limit,
        starting_after,
    };
    Ok((query, filters))
}
