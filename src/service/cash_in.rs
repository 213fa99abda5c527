//! `polygon.oms.v1.CashInService`: create, get, list and refresh cash-ins over the OMS REST API.

use super::keys::KeyedOperation;
use super::mutation::{Mutation, Subject};
use super::{deadline, grpc_timeout, page_token};
use crate::error::GatewayError;
use crate::idempotency::IdempotencyLayer;
use crate::oms::{CashInQuery, NewCashIn, Oms};
use crate::proto::v1::{self as pb, cash_in_service_server::CashInService};
use crate::quota::CallerQuota;
use crate::security::Caller;
use crate::telemetry::rpc_span;
use crate::validate::{self, Violations};
use crate::watch::{
    WatchHub, WatchKey,
    stream::{self, EventStream, Mode},
};
use futures_util::StreamExt;
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

    /// A CashInService mutation of `operation` (see [`Mutation::keyed`]).
    fn keyed<T>(
        &self,
        operation: KeyedOperation,
        request: &Request<T>,
        field_key: &str,
        violations: &mut Violations,
    ) -> Mutation {
        let deadline = self.default_deadline;
        Mutation::keyed(request, operation, field_key, deadline, violations)
    }

    /// A stream of `key` for `caller`, whose turns at the poll budget its poller takes, within
    /// the caller's quota (`quota`, taken from the request before anything is subscribed; held
    /// by the stream until it ends).
    async fn watch(
        &self,
        key: WatchKey,
        caller: Arc<str>,
        mode: Mode,
        metadata: &tonic::metadata::MetadataMap,
        quota: Option<CallerQuota>,
    ) -> Result<EventStream, GatewayError> {
        let held = match &quota {
            Some(quota) => Some(quota.open_stream(&resource_name(&key)).await?),
            None => None,
        };
        let subscription = self.hub.subscribe(key, caller)?;
        subscription.catch_up().await;
        let deadline = grpc_timeout(metadata).map(|t| Instant::now() + t);
        let events = stream::events(
            subscription,
            mode,
            deadline,
            self.hub.config().heartbeat_interval,
        );
        Ok(match held {
            Some(held) => Box::pin(events.map(move |event| {
                let _held = &held;
                event
            })),
            None => events,
        })
    }
}

#[tonic::async_trait]
impl CashInService for CashIns {
    async fn create_cash_in(
        &self,
        request: Request<pb::CreateCashInRequest>,
    ) -> Result<Response<pb::CreateCashInResponse>, Status> {
        let mut violations = Violations::default();
        let field_key = &request.get_ref().idempotency_key;
        let mutation = self.keyed(
            KeyedOperation::CreateCashIn,
            &request,
            field_key,
            &mut violations,
        );
        let span = rpc_span!("CreateCashIn", idempotency_key = %mutation.loggable_key(), caller = %mutation.caller(), cash_in_id = tracing::field::Empty);
        let request = request.into_inner();
        let call = async {
            validate::create_cash_in(&request, &mut violations);
            violations.finish()?;
            let new = NewCashIn::new(&request);
            let cash_in = mutation
                .idempotently(
                    &self.idempotency,
                    &self.hub,
                    new.fingerprint(),
                    true,
                    |key| self.oms.create_cash_in(&new, key, mutation.deadline()),
                )
                .await?;
            tracing::Span::current().record("cash_in_id", cash_in.id.as_str());
            tracing::info!(status = cash_in.status, "cash-in created");
            Ok(pb::CreateCashInResponse {
                cash_in: Some(cash_in),
            })
        };
        let subject = Subject {
            customer_id: &request.customer_id,
            ..Subject::default()
        };
        mutation
            .run(span, subject, call, |r| r.cash_in.as_ref())
            .await
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
            let learned = crate::watch::stamp();
            let mut cash_in = self.oms.get_cash_in(&id, deadline).await?;
            self.hub
                .attach_deliveries(std::slice::from_mut(&mut cash_in))
                .await;
            self.hub.read_delivery_now(&mut cash_in, deadline).await;
            // What OMS says now is news to the watchers if they hold an older state.
            self.hub.learned(&cash_in, learned, false).await;
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
            let learned = crate::watch::stamp();
            let mut page = self.oms.list_cash_ins(&query, deadline).await?;
            self.hub.attach_deliveries(&mut page.cash_ins).await;
            self.hub.learned_page(&page.cash_ins, learned);
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
        let field_key = &request.get_ref().idempotency_key;
        let mutation = self.keyed(
            KeyedOperation::RefreshCashIn,
            &request,
            field_key,
            &mut violations,
        );
        let request = request.into_inner();
        let id = &request.cash_in_id;
        let span = rpc_span!("RefreshCashIn", cash_in_id = %validate::loggable(id), idempotency_key = %mutation.loggable_key(), caller = %mutation.caller());
        let call = async {
            validate::cash_in_id(&mut violations, id);
            validate::idempotency_key(&mut violations, "idempotency_key", &request.idempotency_key);
            violations.finish()?;
            let cash_in = mutation
                .idempotently(
                    &self.idempotency,
                    &self.hub,
                    crate::digest::fingerprint(&[id]),
                    false,
                    |key| self.oms.refresh_cash_in(id, key, mutation.deadline()),
                )
                .await?;
            tracing::info!("deposit code refreshed");
            Ok(pb::RefreshCashInResponse {
                cash_in: Some(cash_in),
            })
        };
        mutation
            .run(span, Subject::cash_in(id), call, |r| r.cash_in.as_ref())
            .await
    }
}

// === the watch RPCs, as `watch_route` serves them ===

impl CashIns {
    /// WatchCashIn: the cash-in's state now, then every change, until it is terminal and its
    /// delivery is over (the cash-in's terminal status alone with `cash_in_only`, or when the
    /// gateway has no source of deliveries: no webhooks, and OMS does not serve its transaction
    /// read).
    pub async fn watch_one(
        &self,
        request: Request<pb::WatchCashInRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let id = request.get_ref().cash_in_id.clone();
        let cash_in_only = request.get_ref().cash_in_only || !self.hub.follows_deliveries();
        let caller = Caller::of(&request);
        let span =
            rpc_span!("WatchCashIn", caller = %caller, cash_in_id = %validate::loggable(&id));
        let mut violations = Violations::default();
        validate::cash_in_id(&mut violations, &id);
        span.in_scope(|| violations.finish())?;
        let stream = self
            .watch(
                WatchKey::CashIn(id),
                caller_of(&request),
                Mode::Single { cash_in_only },
                request.metadata(),
                request.extensions().get::<CallerQuota>().cloned(),
            )
            .instrument(span)
            .await?;
        Ok(Response::new(stream))
    }

    /// WatchCashIns: a customer's cash-ins in the wanted statuses now, then every change.
    pub async fn watch_customer(
        &self,
        request: Request<pb::WatchCashInsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let customer = request.get_ref().customer_id.clone();
        let cash_in_only = request.get_ref().cash_in_only || !self.hub.follows_deliveries();
        let caller = Caller::of(&request);
        let span = rpc_span!("WatchCashIns", caller = %caller, customer_id = %validate::loggable(&customer));
        let mut violations = Violations::default();
        violations.required_id("customer_id", &customer, "cst_");
        let statuses = validate::watch_statuses(&mut violations, &request.get_ref().statuses)
            .into_iter()
            .collect();
        span.in_scope(|| violations.finish())?;
        let stream = self
            .watch(
                WatchKey::Customer(customer),
                caller_of(&request),
                Mode::Filter {
                    statuses,
                    cash_in_only,
                },
                request.metadata(),
                request.extensions().get::<CallerQuota>().cloned(),
            )
            .instrument(span)
            .await?;
        Ok(Response::new(stream))
    }
}

/// The caller of `request` as set by the security layer (anonymous: empty), shared, not copied.
fn caller_of<T>(request: &Request<T>) -> Arc<str> {
    request
        .extensions()
        .get::<Caller>()
        .map(|caller| caller.0.clone())
        .unwrap_or_else(|| "".into())
}

/// The resource a watch key names, as the caller's quota counts it.
fn resource_name(key: &WatchKey) -> String {
    match key {
        WatchKey::CashIn(id) => format!("cash-in:{id}"),
        WatchKey::Customer(id) => format!("customer:{id}"),
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
