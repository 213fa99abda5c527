//! The sandbox's error answers: every non-2xx it produces is an `ApiError`, rendered as
//! `{"error": {"code", "message", "details"?}}`.
//!
//! The real OMS error body is undocumented; this shape (a snake_case code, a human message, and
//! for validation failures one `details` entry per problem with the REST field path as sent) is
//! the sandbox's guess, and the gateway is told not to depend on it.

use http::{HeaderName, HeaderValue, StatusCode};

use super::model::{ErrorBody, ErrorEnvelope, FieldProblem};
use super::store::Refusal;

#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
    pub(crate) details: Vec<FieldProblem>,
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
}

// === impl ApiError ===

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
            headers: Vec::new(),
        }
    }

    pub(crate) fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is required; exchange your API key at POST /auth/token",
        )
    }

    pub(crate) fn invalid_credentials() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "apiKey and apiSecret do not match a known API key",
        )
    }

    pub(crate) fn invalid_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_json", message)
    }

    /// A 400 listing every problem found.
    pub(crate) fn validation(details: Vec<FieldProblem>) -> Self {
        let summary = details
            .iter()
            .map(|d| format!("{} {}", d.field, d.message))
            .collect::<Vec<_>>()
            .join("; ");
        ApiError {
            details,
            ..Self::new(
                StatusCode::BAD_REQUEST,
                "validation_error",
                format!("the request is invalid: {summary}"),
            )
        }
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub(crate) fn method_not_allowed(allow: &'static str) -> Self {
        let mut e = Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("this path only accepts {allow}"),
        );
        e.headers
            .push((http::header::ALLOW, HeaderValue::from_static(allow)));
        e
    }

    pub(crate) fn body(&self) -> ErrorEnvelope<'_> {
        ErrorEnvelope {
            error: ErrorBody {
                code: self.code,
                message: &self.message,
                details: &self.details,
            },
        }
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::NotFound => ApiError::not_found("no such cash-in"),
            Refusal::InvalidState { status, action } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_state",
                format!("cannot {action} a cash-in that is {}", status.as_str()),
            ),
            Refusal::DeliveryState { step, action } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_state",
                format!("cannot {action} a transaction that is {step}"),
            ),
            Refusal::UnknownCursor { param } => {
                ApiError::validation(vec![FieldProblem::new(param, "is not the id of a cash-in")])
            }
            Refusal::Mismatch { field, message } => {
                ApiError::validation(vec![FieldProblem::new(field, message)])
            }
        }
    }
}
