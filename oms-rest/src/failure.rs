//! Turning what came back into an [`UpstreamError`]: transport errors classified, bodies read
//! within [`MAX_RESPONSE_BYTES`], and non-2xx answers decoded (message, code, request id, field
//! errors, `Retry-After`) with the credentials the request carried cut out, in case OMS quotes
//! them back.

use crate::transport::{Response, SendError};
use crate::{HttpFailure, UpstreamError};
use bytes::{Bytes, BytesMut};
use http::StatusCode;
use http_body_util::BodyExt;
use std::time::Duration;

/// Answers larger than this are refused as UPSTREAM_BAD_RESPONSE rather than buffered.
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// Classifies a request that got no answer: it could not connect (nothing was sent), or the
/// connection failed under it.
pub(super) fn classify_transport(err: SendError) -> UpstreamError {
    // The error chain names the failure and may include the host; never a header, so no token
    // can leak here.
    let text = error_chain(&err);
    if err.is_connect() {
        UpstreamError::Connect(text)
    } else {
        UpstreamError::Transport(text)
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// Reads a body, refusing more than [`MAX_RESPONSE_BYTES`]. A body that arrives in one piece
/// (most OMS answers: one read) is returned as that piece, uncopied.
pub(super) async fn read_body(response: Response) -> Result<Bytes, UpstreamError> {
    let too_large = || {
        UpstreamError::BadResponse(format!(
            "the response body is larger than {MAX_RESPONSE_BYTES} bytes"
        ))
    };
    let declared = response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_RESPONSE_BYTES as u64) {
        return Err(too_large());
    }
    let mut body = response.into_body();
    let mut first: Option<Bytes> = None;
    let mut more = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| UpstreamError::Transport(error_chain(&e)))?;
        let Ok(chunk) = frame.into_data() else {
            continue; // trailers
        };
        let held = first.as_ref().map_or(0, Bytes::len) + more.len();
        if held + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(too_large());
        }
        match &first {
            None => first = Some(chunk),
            Some(_) => more.extend_from_slice(&chunk),
        }
    }
    Ok(match first {
        None => Bytes::new(),
        Some(first) if more.is_empty() => first,
        Some(first) => {
            let mut whole = BytesMut::with_capacity(first.len() + more.len());
            whole.extend_from_slice(&first);
            whole.extend_from_slice(&more);
            whole.freeze()
        }
    })
}

/// Decodes a non-2xx answer. OMS's error body is unpublished: the message is looked for where
/// common APIs put it, and a body that is not JSON is kept (shortened) as the message. What OMS
/// says reaches callers and logs, so `secrets` (the credentials the request carried) are cut out
/// first, in case OMS quotes them back.
pub(super) async fn failure_from_response(response: Response, secrets: &[&str]) -> HttpFailure {
    let status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let mut request_id = header("x-request-id")
        .or_else(|| header("request-id"))
        .map(|id| redact(&id, secrets));
    let retry_after = header("retry-after").and_then(|v| parse_retry_after(&v));
    let body = read_body(response).await.unwrap_or_default();
    let body = redact(&String::from_utf8_lossy(&body), secrets).into_bytes();
    let json: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
    let text_at = |pointers: &[&str]| {
        json.as_ref().and_then(|json| {
            pointers
                .iter()
                .find_map(|p| json.pointer(p).and_then(|v| v.as_str()).map(str::to_owned))
        })
    };
    let message = text_at(&[
        "/error/message",
        "/message",
        "/error",
        "/detail",
        "/title",
        "/errors/0/message",
    ])
    .or_else(|| {
        let text = String::from_utf8_lossy(&body).trim().to_owned();
        (!text.is_empty() && json.is_none()).then(|| text.chars().take(300).collect())
    })
    .unwrap_or_else(|| {
        StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("error")
            .to_owned()
    });
    let code = text_at(&["/error/code", "/code", "/error/type", "/type"]);
    if request_id.is_none() {
        request_id = text_at(&["/requestId", "/request_id", "/error/requestId"]);
    }
    let mut field_errors = Vec::new();
    if let Some(json) = &json {
        for pointer in ["/error/details", "/errors", "/details"] {
            if let Some(items) = json.pointer(pointer).and_then(|v| v.as_array()) {
                for item in items {
                    let field = ["field", "param", "path"]
                        .iter()
                        .find_map(|k| item.get(*k).and_then(|v| v.as_str()));
                    let message = item.get("message").and_then(|v| v.as_str());
                    if let (Some(field), Some(message)) = (field, message) {
                        field_errors.push((field.to_owned(), message.to_owned()));
                    }
                }
                break;
            }
        }
    }
    HttpFailure {
        status,
        message,
        code,
        request_id,
        retry_after,
        field_errors,
    }
}

/// OMS's request id (`x-request-id`) of an answer, for spans, with `secrets` (the credentials
/// the request carried) cut out, in case OMS quotes them back, and at most 128 characters.
pub(super) fn request_id(headers: &http::HeaderMap, secrets: &[&str]) -> Option<String> {
    let id = headers.get("x-request-id")?.to_str().ok()?;
    Some(redact(id, secrets).chars().take(128).collect())
}

/// `text` with every occurrence of each non-empty secret replaced by `[redacted]`.
fn redact(text: &str, secrets: &[&str]) -> String {
    secrets
        .iter()
        .filter(|secret| !secret.is_empty())
        .fold(text.to_owned(), |text, secret| {
            text.replace(secret, "[redacted]")
        })
}

/// `Retry-After` as delay-seconds (HTTP-dates are rare from APIs and are ignored).
fn parse_retry_after(value: &str) -> Option<Duration> {
    let seconds: f64 = value.trim().parse().ok()?;
    (seconds.is_finite() && (0.0..=3600.0).contains(&seconds))
        .then(|| Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_only() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }
}
