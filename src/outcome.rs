//! Outcomes as bytes, for what the replicas share in Redis: idempotency's stored outcomes and the
//! watch pollers' observations. A success is its prost encoding, a final error a small JSON form
//! that gives back the same `GatewayError` (so the same code, message and details), the REST
//! operation name made `&'static` again through `oms_rest::ops::named`. A leaf under both
//! features, so neither imports the other for it.
//!
//! Only final outcomes (`is_final_outcome`: success, the gateway's INVALID_ARGUMENT, OMS's 400,
//! 403, 404 and 422) are ever stored, so only those have a form here; anything else encodes to
//! `None`. Layout: one tag byte (`o` success, `e` error), then the body.

use crate::error::{
    FieldViolation, GatewayError, HttpFailure, MAX_LISTED_VIOLATIONS, ResourceRef, UpstreamError,
};
use crate::proto::v1 as pb;
use oms_rest::ops;
use prost::Message;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A success that can be stored in Redis.
pub trait Stored: Sized {
    /// The bytes.
    fn encode_stored(&self) -> Vec<u8>;
    /// Back from the bytes; `None` if they do not decode.
    fn decode_stored(bytes: &[u8]) -> Option<Self>;
}

impl Stored for pb::CashIn {
    fn encode_stored(&self) -> Vec<u8> {
        self.encode_to_vec()
    }
    fn decode_stored(bytes: &[u8]) -> Option<Self> {
        Self::decode(bytes).ok()
    }
}

/// A poller's observation: the cash-ins it saw.
impl Stored for Vec<pb::CashIn> {
    fn encode_stored(&self) -> Vec<u8> {
        pb::ListCashInsResponse {
            cash_ins: self.clone(),
            ..Default::default()
        }
        .encode_to_vec()
    }
    fn decode_stored(bytes: &[u8]) -> Option<Self> {
        pb::ListCashInsResponse::decode(bytes)
            .ok()
            .map(|page| page.cash_ins)
    }
}

/// The final errors, in a form that round-trips.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum StoredError {
    Invalid {
        violations: Vec<(String, String)>,
        /// How many there were in all (absent when stored by an earlier version, which listed
        /// every one).
        #[serde(default)]
        total: Option<usize>,
    },
    Http {
        operation: String,
        resource: Option<(String, String)>,
        status: u16,
        message: String,
        code: Option<String>,
        request_id: Option<String>,
        retry_after_ms: Option<u64>,
        field_errors: Vec<(String, String)>,
    },
}

/// The bytes of a final `outcome`, or `None` for an outcome that is never stored.
pub fn encode<T: Stored>(outcome: &Result<T, GatewayError>) -> Option<Vec<u8>> {
    let error = match outcome {
        Ok(value) => {
            let mut bytes = vec![b'o'];
            bytes.extend(value.encode_stored());
            return Some(bytes);
        }
        Err(GatewayError::Invalid { violations, total }) => StoredError::Invalid {
            violations: violations
                .iter()
                .map(|v| (v.field.clone(), v.description.clone()))
                .collect(),
            total: Some(*total),
        },
        Err(GatewayError::Upstream {
            operation,
            resource,
            source: UpstreamError::Http(failure),
        }) if matches!(failure.status, 400 | 403 | 404 | 422) => StoredError::Http {
            operation: (*operation).to_owned(),
            resource: resource
                .as_ref()
                .map(|r| (r.kind.to_owned(), r.name.clone())),
            status: failure.status,
            message: failure.message.clone(),
            code: failure.code.clone(),
            request_id: failure.request_id.clone(),
            retry_after_ms: failure.retry_after.map(|d| d.as_millis() as u64),
            field_errors: failure.field_errors.clone(),
        },
        Err(_) => return None,
    };
    let mut bytes = vec![b'e'];
    bytes.extend(serde_json::to_vec(&error).ok()?);
    Some(bytes)
}

/// The outcome of `bytes` from [`encode`]; `None` if they do not decode (another version's).
pub fn decode<T: Stored>(bytes: &[u8]) -> Option<Result<T, GatewayError>> {
    let (tag, body) = bytes.split_first()?;
    match tag {
        b'o' => T::decode_stored(body).map(Ok),
        b'e' => Some(Err(
            match serde_json::from_slice::<StoredError>(body).ok()? {
                StoredError::Invalid { violations, total } => GatewayError::Invalid {
                    total: total.unwrap_or(0).max(violations.len()),
                    violations: violations
                        .into_iter()
                        .take(MAX_LISTED_VIOLATIONS)
                        .map(|(field, description)| FieldViolation { field, description })
                        .collect(),
                },
                StoredError::Http {
                    operation,
                    resource,
                    status,
                    message,
                    code,
                    request_id,
                    retry_after_ms,
                    field_errors,
                } => GatewayError::Upstream {
                    operation: ops::named(&operation)?,
                    resource: match resource {
                        Some((kind, name)) => {
                            let cash_in = ResourceRef::cash_in(&name);
                            if kind != cash_in.kind {
                                return None;
                            }
                            Some(cash_in)
                        }
                        None => None,
                    },
                    source: UpstreamError::Http(Box::new(HttpFailure {
                        status,
                        message,
                        code,
                        request_id,
                        retry_after: retry_after_ms.map(Duration::from_millis),
                        field_errors,
                    })),
                },
            },
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a client reads of the status, details decoded (ErrorInfo's metadata sorted: it is
    /// a map).
    fn seen<T>(outcome: Result<T, GatewayError>) -> String {
        use tonic_types::StatusExt;
        let status = tonic::Status::from(outcome.err().expect("an error"));
        let details = status.get_error_details();
        let info = details.error_info().map(|i| {
            let metadata: std::collections::BTreeMap<_, _> = i.metadata.iter().collect();
            format!("{} {} {metadata:?}", i.reason, i.domain)
        });
        format!(
            "{:?} {} {info:?} {:?} {:?} {:?}",
            status.code(),
            status.message(),
            details.bad_request(),
            details.resource_info(),
            details.retry_info()
        )
    }

    #[test]
    fn final_errors_round_trip_to_the_same_status() {
        let errors = [
            GatewayError::Invalid {
                violations: vec![FieldViolation {
                    field: "amount".into(),
                    description: "must be positive".into(),
                }],
                total: 30,
            },
            GatewayError::Upstream {
                operation: ops::CREATE_CASH_IN,
                resource: Some(ResourceRef::cash_in("ci_1")),
                source: UpstreamError::Http(Box::new(HttpFailure {
                    status: 422,
                    message: "no".into(),
                    code: Some("invalid_state".into()),
                    request_id: Some("req_1".into()),
                    retry_after: None,
                    field_errors: vec![("amount".into(), "bad".into())],
                })),
            },
        ];
        for error in errors {
            let first: Result<pb::CashIn, _> = Err(error);
            let bytes = encode(&first).expect("final");
            let again = decode::<pb::CashIn>(&bytes).expect("decodes");
            assert_eq!(seen(first), seen(again));
        }
    }

    #[test]
    fn successes_round_trip_and_transient_errors_are_not_stored() {
        let cash_in = pb::CashIn {
            id: "ci_1".into(),
            ..Default::default()
        };
        let bytes = encode(&Ok::<_, GatewayError>(cash_in.clone())).unwrap();
        assert_eq!(decode::<pb::CashIn>(&bytes).unwrap().unwrap(), cash_in);
        let transient: Result<pb::CashIn, _> = Err(GatewayError::Unavailable("down".into()));
        assert!(encode(&transient).is_none());
    }
}
