//! The one path of every mutating RPC (CreateCashIn, RefreshCashIn and the SandboxService RPCs):
//! the call's deadline, caller and idempotency key are read before validation (so even a refusal
//! echoes the key); the handler's call runs inside its RPC span, through the idempotency layer
//! when it is keyed; the cash-in OMS returns (never a replay) is published to watchers at once
//! (not at their poller's next turn); then the key echo, one audit line, and the error as a status carrying
//! the keys. A handler only validates, builds the operation's input and calls it.

use super::deadline;
use super::keys::{
    KeyedOperation, echo_idempotency_keys, idempotency_key, status_with_keys,
    upstream_idempotency_key,
};
use crate::audit;
use crate::error::GatewayError;
use crate::idempotency::IdempotencyLayer;
use crate::oms::WriteKey;
use crate::proto::v1::{self as pb, cash_in_service_server};
use crate::security::Caller;
use crate::validate::{self, Violations};
use crate::watch::WatchHub;
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;
use tonic::{Request, Response, Status};
use tracing::Instrument;

/// One mutating call: who makes it, which method, by when, and with which keys.
pub struct Mutation {
    /// `package.Service/Method`, for the audit line.
    method: String,
    /// The method's name, also the idempotency layer's name of the operation.
    rpc: &'static str,
    deadline: Instant,
    /// The authenticated caller (see `security::CallerLayer`); empty when anonymous.
    caller: String,
    /// The caller's idempotency key; empty for an unkeyed call (the SandboxService RPCs).
    key: String,
    /// The key sent to OMS: `key` scoped to `caller` and the operation (see
    /// `upstream_idempotency_key`); empty for an unkeyed call.
    upstream_key: String,
}

/// What the audit line names, as the request gives it; a field left empty is read from the
/// answer's cash-in (a new cash-in's id, a refreshed one's customer).
#[derive(Clone, Copy, Default)]
pub struct Subject<'a> {
    /// The cash-in addressed.
    pub cash_in_id: &'a str,
    /// The customer it belongs to.
    pub customer_id: &'a str,
}

impl<'a> Subject<'a> {
    /// The cash-in `id`, its customer read from the answer.
    pub fn cash_in(id: &'a str) -> Self {
        Self {
            cash_in_id: id,
            customer_id: "",
        }
    }
}

// === impl Mutation ===

impl Mutation {
    /// A call without an idempotency key: `rpc` of `service`.
    pub fn unkeyed<T>(
        request: &Request<T>,
        service: &str,
        rpc: &'static str,
        default_deadline: Duration,
    ) -> Self {
        Self {
            method: format!("{service}/{rpc}"),
            rpc,
            deadline: deadline(request, default_deadline),
            caller: Caller::of(request),
            key: String::new(),
            upstream_key: String::new(),
        }
    }

    /// A CashInService call of `operation`, whose key is `field_key`, else the request's
    /// metadata; a missing or malformed key is recorded in `violations`.
    pub fn keyed<T>(
        request: &Request<T>,
        operation: KeyedOperation,
        field_key: &str,
        default_deadline: Duration,
        violations: &mut Violations,
    ) -> Self {
        let service = cash_in_service_server::SERVICE_NAME;
        let mut mutation = Self::unkeyed(request, service, operation.rpc(), default_deadline);
        mutation.key = idempotency_key(field_key, request.metadata(), violations);
        mutation.upstream_key =
            upstream_idempotency_key(operation, &mutation.caller, &mutation.key);
        mutation
    }

    /// When the call must be finished.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The authenticated caller; empty when anonymous.
    pub fn caller(&self) -> &str {
        &self.caller
    }

    /// The caller's key for a log line: itself if valid, else a placeholder.
    pub fn loggable_key(&self) -> &str {
        match self.key.as_str() {
            "" => "",
            key if validate::is_idempotency_key(key) => key,
            _ => "<invalid>",
        }
    }

    /// Runs `call` through `layer` (share, replay or refuse; see idempotency.rs) with
    /// `fingerprint`; `call` gets the key to send upstream, which says whether it resumes an
    /// abandoned call with the same key (see [`WriteKey::resumes`]). The cash-in OMS answers
    /// is published to `hub`'s watchers (`created`: a new one), fleet-wide; a replayed or
    /// shared outcome is not (it is no news, and may be older than what watchers have).
    pub async fn idempotently<'a, F, Fut>(
        &'a self,
        layer: &IdempotencyLayer<pb::CashIn>,
        hub: &'a WatchHub,
        fingerprint: u64,
        created: bool,
        call: F,
    ) -> Result<pb::CashIn, GatewayError>
    where
        F: FnOnce(WriteKey<'a>) -> Fut,
        Fut: Future<Output = Result<pb::CashIn, GatewayError>>,
    {
        let key = &self.upstream_key;
        layer
            .run(
                &self.caller,
                self.rpc,
                &self.key,
                fingerprint,
                self.deadline,
                |resumes| async move {
                    let answer = call(WriteKey { key, resumes }).await;
                    if let Ok(cash_in) = &answer {
                        hub.learned(cash_in, crate::watch::stamp(), created).await;
                    }
                    answer
                },
            )
            .await
    }

    /// Runs `call` (validation included) in `span`, echoes the keys, writes the audit line
    /// about `subject` (completed from the cash-in `cash_in` finds in the answer) and converts
    /// an error into a status carrying the keys.
    pub async fn run<T>(
        &self,
        span: tracing::Span,
        subject: Subject<'_>,
        call: impl Future<Output = Result<T, GatewayError>>,
        cash_in: impl Fn(&T) -> Option<&pb::CashIn>,
    ) -> Result<Response<T>, Status> {
        let call = async {
            let answer = call.await?;
            let mut response = Response::new(answer);
            echo_idempotency_keys(response.metadata_mut(), &self.key, &self.upstream_key);
            Ok(response)
        };
        let (result, upstream_request_id) =
            audit::recording_request_id(call.instrument(span)).await;
        let answered = result.as_ref().ok().and_then(|r| cash_in(r.get_ref()));
        let subject = Subject {
            cash_in_id: or_answered(subject.cash_in_id, answered.map(|c| c.id.as_str())),
            customer_id: or_answered(
                subject.customer_id,
                answered.map(|c| c.customer_id.as_str()),
            ),
        };
        self.audit(subject, result.as_ref().map(|_| ()), &upstream_request_id);
        result.map_err(|err| status_with_keys(err, &self.key, &self.upstream_key))
    }

    /// The call's audit line.
    fn audit(
        &self,
        subject: Subject<'_>,
        result: Result<(), &GatewayError>,
        upstream_request_id: &str,
    ) {
        audit::mutation(
            &audit::Mutation {
                caller: &self.caller,
                method: &self.method,
                idempotency_key: self.loggable_key(),
                oms_idempotency_key: if self.loggable_key() == self.key {
                    &self.upstream_key
                } else {
                    ""
                },
                cash_in_id: validate::loggable(subject.cash_in_id),
                customer_id: validate::loggable(subject.customer_id),
            },
            result,
            upstream_request_id,
        );
    }
}

/// `given`, else what the answer says, else "".
fn or_answered<'a>(given: &'a str, answered: Option<&'a str>) -> &'a str {
    if given.is_empty() {
        answered.unwrap_or("")
    } else {
        given
    }
}
