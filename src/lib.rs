//! oms-gateway: a gRPC gateway in front of the Polygon OMS cash-in REST API.
//!
//! The binary (`src/main.rs`) only parses configuration and starts things. The public surface is
//! what the binary, the benchmark and the black-box tests need: [`config`] (every setting),
//! [`server`] (start and stop a gateway), [`proto`] (the generated contract), [`otlp`] (the
//! binary's optional span export), and, hidden from the docs, [`fuzzing`] (the decoders, validation, statuses and wire bounds the property tests drive). Everything else
//! is private, so a test cannot lean on an internal. See `ARCHITECTURE.md` for the module map.

mod access;
mod admin;
mod arrival;
mod audit;
mod check;
mod coalesce;
mod codec;
pub mod config;
mod connect;
mod convert;
mod digest;
mod error;
mod health;
mod health_port;
mod idempotency;
mod limits;
mod metrics;
mod oms;
mod outcome;
pub mod proto;
mod quota;
mod redis;
mod reflection;
mod runtime;
mod security;
pub mod server;
mod service;
mod shutdown;
mod start;
mod telemetry;
#[cfg(test)]
mod tidy;
mod upstream;
mod validate;
mod watch;
mod webhooks;

pub use telemetry::otlp;

/// What the property-based fuzz tests (`tests/fuzz.rs`) drive directly: the upstream JSON
/// decoders (a transaction's too), the REST → proto conversion, the policy file's parser, request validation, the statuses errors become and
/// the bounds read off the wire. Not an API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::error::{MAX_LISTED_VIOLATIONS, MAX_STATUS_BYTES};
    pub use crate::limits::MAX_REQUEST_MESSAGE_BYTES;
    pub use crate::validate::Violations;
    pub use oms_rest::model::{CashInDto, CashInPageDto, CashLocationListDto, TransactionDto};

    /// Caller identities from mesh headers, and the authorization policy (with its quotas).
    pub mod security {
        pub use crate::config::IdentityHeader;
        pub use crate::security::identity_from_header;
        pub use crate::security::policy::Policy;
    }

    /// Statuses, from the gateway's one conversion (`error.rs`).
    pub mod status {
        use crate::error::{GatewayError, HttpFailure, ResourceRef, UpstreamError};

        /// What OMS said in a non-2xx answer, as the REST client decodes it.
        #[derive(Debug, Clone)]
        pub struct Answer {
            /// The HTTP status.
            pub status: u16,
            /// OMS's message.
            pub message: String,
            /// OMS's error code.
            pub code: Option<String>,
            /// OMS's request id.
            pub request_id: Option<String>,
            /// The fields OMS named, with its messages.
            pub field_errors: Vec<(String, String)>,
        }

        /// The status of GetCashIn on `id` when OMS gives `answer`.
        pub fn of_upstream(id: &str, answer: Answer) -> tonic::Status {
            GatewayError::Upstream {
                operation: oms_rest::ops::GET_CASH_IN,
                resource: Some(ResourceRef::cash_in(id)),
                source: UpstreamError::Http(Box::new(HttpFailure {
                    status: answer.status,
                    message: answer.message,
                    code: answer.code,
                    request_id: answer.request_id,
                    retry_after: None,
                    field_errors: answer.field_errors,
                })),
            }
            .into()
        }

        /// The status of one of the errors the gateway decides (`kind` picks which), carrying
        /// `text` wherever that error carries text.
        pub fn of_own(kind: u8, text: String) -> tonic::Status {
            let upstream = |source| GatewayError::Upstream {
                operation: oms_rest::ops::CREATE_CASH_IN,
                resource: None,
                source,
            };
            match kind % 14 {
                0 => GatewayError::Precondition(text),
                1 => GatewayError::KeyReused(text),
                2 => GatewayError::Aborted(text),
                3 => GatewayError::DeadlineExceeded(text),
                4 => GatewayError::ResourceExhausted(text),
                5 => GatewayError::Unavailable(text),
                6 => GatewayError::MalformedMessage(text),
                7 => GatewayError::MessageTooLarge(text),
                8 => GatewayError::Unauthenticated(text),
                9 => GatewayError::NotAllowed {
                    caller: text.clone(),
                    method: text,
                },
                10 => upstream(UpstreamError::Connect(text)),
                11 => upstream(UpstreamError::Transport(text)),
                12 => upstream(UpstreamError::BadResponse(text)),
                _ => upstream(UpstreamError::AuthFailed {
                    message: text.clone(),
                    request_id: Some(text),
                }),
            }
            .into()
        }
    }

    /// Bounds read off the wire, before anything is decoded.
    pub mod wire {
        use crate::codec::EntryBounds;
        use crate::proto::v1 as pb;

        /// The first message length over [`super::MAX_REQUEST_MESSAGE_BYTES`] declared in a
        /// request body arriving as `chunks`, if any.
        pub fn oversized_message(chunks: &[Vec<u8>]) -> Option<u64> {
            let (mut prefix, mut prefix_len, mut remaining) = ([0; 5], 0, 0);
            chunks.iter().find_map(|chunk| {
                crate::limits::check_prefixes(chunk, &mut prefix, &mut prefix_len, &mut remaining)
                    .err()
            })
        }

        /// The entry-bound check of a CreateCashInRequest's bytes: the status it is refused
        /// with, if it is.
        pub fn create_request_entries(bytes: &[u8]) -> Result<(), tonic::Status> {
            crate::codec::within_bounds(bytes, pb::CreateCashInRequest::BOUNDS).map_err(Into::into)
        }
    }

    /// REST → proto conversions.
    pub mod convert {
        pub use crate::convert::{cash_in, cash_location, create_body, delivery};
    }

    /// Request validation.
    pub mod validate {
        pub use crate::validate::{
            create_cash_in, list_cash_locations, parse_decimal, watch_statuses,
        };
    }
}
