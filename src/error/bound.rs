//! Keeps every status small, whatever it reports: at most [`MAX_LISTED_VIOLATIONS`] field
//! violations (the message counts the rest), every string of the details cut on a character
//! boundary, and the whole status as it travels (`grpc-message` percent-encoded, and
//! `grpc-status-details-bin` in base64, which holds the message a second time) within
//! [`MAX_STATUS_BYTES`]. A request with a million problems gets an answer of the same few KiB
//! as one with three: a status over a client's header limit (16 KiB in several gRPC stacks)
//! would reach it as a broken connection instead of INVALID_ARGUMENT, and every byte of it is
//! built and held by the gateway first.
//!
//! The details are collected in [`Details`] (the detail kinds the gateway sends), which keeps
//! no more than it will list, so collecting costs no more than sending.

use super::FieldViolation;
use std::collections::HashMap;
use std::time::Duration;
use tonic::{Code, Status};
use tonic_types::ErrorDetails;

/// The most field violations a status lists in its BadRequest (and its message); the message
/// counts the rest ("and N more").
pub const MAX_LISTED_VIOLATIONS: usize = 20;

/// The most bytes a status takes as it travels: `grpc-message` (percent-encoded) plus
/// `grpc-status-details-bin` (base64). Below 8 KiB with room to spare for the rest of the
/// trailers: `grpc-status`, the header names, and the response metadata a call may echo beside
/// it (two idempotency keys of at most 255 characters).
pub const MAX_STATUS_BYTES: usize = 7 * 1024;

/// The message lengths tried in turn, in bytes, until the status fits. The first
/// [`LIMITS_BEFORE_DROPPING`] come before any listed violation is given up; the last ones only
/// once none is left.
const MESSAGE_LIMITS: [usize; 5] = [2048, 1024, 512, 256, 128];
const LIMITS_BEFORE_DROPPING: usize = 3;

/// The longest field path kept in a violation, in bytes.
const MAX_FIELD_BYTES: usize = 256;
/// The longest description kept in a violation, and in a ResourceInfo, in bytes.
const MAX_DESCRIPTION_BYTES: usize = 512;
/// The longest ErrorInfo reason or metadata value, and ResourceInfo name, in bytes.
const MAX_VALUE_BYTES: usize = 256;
/// The most ErrorInfo metadata entries (the gateway sets at most four).
const MAX_METADATA_ENTRIES: usize = 8;

/// The details of a status, before they are bounded and encoded: the kinds the gateway sends.
#[derive(Debug, Default)]
pub struct Details {
    /// Reason, domain, metadata.
    error_info: Option<(String, String, HashMap<String, String>)>,
    /// The BadRequest's violations, at most [`MAX_LISTED_VIOLATIONS`].
    violations: Vec<FieldViolation>,
    /// Violations there were beyond `violations`.
    unlisted: usize,
    /// Whether the message lists the violations after its first part.
    listed_in_message: bool,
    /// ResourceInfo: type, name, description.
    resource: Option<(String, String, String)>,
    /// RetryInfo, when set.
    retry: Option<Option<Duration>>,
    /// QuotaFailure's one violation: subject, description.
    quota: Option<(String, String)>,
}

// === impl Details ===

impl Details {
    /// No details yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the ErrorInfo.
    pub fn set_error_info(
        &mut self,
        reason: impl Into<String>,
        domain: &str,
        metadata: HashMap<String, String>,
    ) {
        self.error_info = Some((reason.into(), domain.to_owned(), metadata));
    }

    /// Adds a BadRequest violation, or counts it when [`MAX_LISTED_VIOLATIONS`] are listed.
    pub fn add_bad_request_violation(&mut self, field: &str, description: &str) {
        if self.violations.len() < MAX_LISTED_VIOLATIONS {
            self.violations.push(FieldViolation {
                field: cut(field, MAX_FIELD_BYTES).to_owned(),
                description: cut(description, MAX_DESCRIPTION_BYTES).to_owned(),
            });
        } else {
            self.unlisted += 1;
        }
    }

    /// Counts `n` violations that were found but never collected.
    pub fn count_unlisted(&mut self, n: usize) {
        self.unlisted = self.unlisted.saturating_add(n);
    }

    /// Lists the violations in the message too, after its first part.
    pub fn list_violations_in_message(&mut self) {
        self.listed_in_message = true;
    }

    /// Sets the ResourceInfo.
    pub fn set_resource_info(&mut self, kind: &str, name: &str, description: &str) {
        self.resource = Some((
            kind.to_owned(),
            cut(name, MAX_VALUE_BYTES).to_owned(),
            cut(description, MAX_DESCRIPTION_BYTES).to_owned(),
        ));
    }

    /// Sets the RetryInfo.
    pub fn set_retry_info(&mut self, delay: Option<Duration>) {
        self.retry = Some(delay);
    }

    /// Sets the QuotaFailure (one violation).
    pub fn set_quota_failure(&mut self, subject: &str, description: &str) {
        self.quota = Some((
            cut(subject, MAX_DESCRIPTION_BYTES).to_owned(),
            cut(description, MAX_DESCRIPTION_BYTES).to_owned(),
        ));
    }

    /// Cuts what was set whole (the ErrorInfo) to its bounds.
    fn cut_error_info(&mut self) {
        if let Some((reason, _, metadata)) = &mut self.error_info {
            truncate(reason, MAX_VALUE_BYTES);
            if metadata.len() > MAX_METADATA_ENTRIES {
                let mut keys: Vec<String> = metadata.keys().cloned().collect();
                keys.sort();
                for key in &keys[MAX_METADATA_ENTRIES..] {
                    metadata.remove(key);
                }
            }
            for value in metadata.values_mut() {
                truncate(value, MAX_VALUE_BYTES);
            }
        }
    }

    /// Gives up the last listed violation (it is counted instead); false if none is left.
    fn drop_last_violation(&mut self) -> bool {
        match self.violations.pop() {
            Some(_) => {
                self.unlisted += 1;
                true
            }
            None => false,
        }
    }

    fn to_tonic(&self) -> ErrorDetails {
        let mut details = ErrorDetails::new();
        if let Some((reason, domain, metadata)) = &self.error_info {
            details.set_error_info(reason.clone(), domain.clone(), metadata.clone());
        }
        if !self.violations.is_empty() {
            details.set_bad_request(
                self.violations
                    .iter()
                    .map(|v| {
                        tonic_types::FieldViolation::new(v.field.clone(), v.description.clone())
                    })
                    .collect::<Vec<_>>(),
            );
        }
        if let Some((kind, name, description)) = &self.resource {
            details.set_resource_info(kind.clone(), name.clone(), "", description.clone());
        }
        if let Some(delay) = self.retry {
            details.set_retry_info(delay);
        }
        if let Some((subject, description)) = &self.quota {
            details.add_quota_failure_violation(subject.clone(), description.clone());
        }
        details
    }

    /// The message as sent: `head`, the listed violations when the message lists them, cut to
    /// `limit` bytes, and the count of the unlisted ones, which is never cut.
    fn message(&self, head: &str, limit: usize) -> String {
        let rest = match self.unlisted {
            0 => String::new(),
            n if self.listed_in_message => format!("; and {n} more"),
            n => format!(" (and {n} more field violations, not listed)"),
        };
        let room = limit.saturating_sub(rest.len());
        let mut text = String::with_capacity(limit.min(4096));
        text.push_str(cut(head, room + 1));
        if self.listed_in_message && !self.violations.is_empty() {
            for (i, v) in self.violations.iter().enumerate() {
                if text.len() > room {
                    break;
                }
                text.push_str(if i == 0 { ": " } else { "; " });
                text.push_str(&v.field);
                text.push_str(": ");
                text.push_str(&v.description);
            }
        }
        let mut message = ellipsize(&text, room);
        message.push_str(&rest);
        message
    }
}

/// The status of `code`, `head` and `details`, built by `build` and no larger than
/// [`MAX_STATUS_BYTES`] as it travels: the message is shortened first, then listed violations
/// are given up (and counted) from the last, then the message is shortened further. What is
/// left after that (an ErrorInfo, a ResourceInfo, a RetryInfo, all cut to their bounds, and a
/// message of 128 bytes) fits with room to spare.
pub fn bounded(
    code: Code,
    head: &str,
    mut details: Details,
    build: impl Fn(Code, String, ErrorDetails) -> Status,
) -> Status {
    details.cut_error_info();
    let mut step = 0;
    loop {
        let status = build(
            code,
            details.message(head, MESSAGE_LIMITS[step]),
            details.to_tonic(),
        );
        if travelling_len(&status) <= MAX_STATUS_BYTES {
            return status;
        }
        if step + 1 < LIMITS_BEFORE_DROPPING {
            step += 1;
        } else if details.drop_last_violation() {
        } else if step + 1 < MESSAGE_LIMITS.len() {
            step += 1;
        } else {
            return status;
        }
    }
}

/// The bytes `status` takes as it travels: `grpc-message` percent-encoded as tonic encodes it
/// (controls, non-ASCII bytes and ` "#%<>`?{}` take three bytes each) plus the details in
/// unpadded base64.
pub fn travelling_len(status: &Status) -> usize {
    let message: usize = status
        .message()
        .bytes()
        .map(|b| {
            let escaped = !(0x20..0x7f).contains(&b) || b" \"#%<>`?{}".contains(&b);
            if escaped { 3 } else { 1 }
        })
        .sum();
    let details = status.details().len();
    message + (details * 4).div_ceil(3)
}

/// `text` cut to at most `max` bytes, on a character boundary.
pub fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Cuts `text` in place to at most `max` bytes, on a character boundary.
fn truncate(text: &mut String, max: usize) {
    let end = cut(text, max).len();
    text.truncate(end);
}

/// `text` within `max` bytes: whole if it fits, else cut and ending in "…".
fn ellipsize(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut short = cut(text, max.saturating_sub('…'.len_utf8())).to_owned();
    short.push('…');
    short
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::disallowed_methods)]
    fn build(code: Code, message: String, details: ErrorDetails) -> Status {
        use tonic_types::StatusExt;
        Status::with_error_details(code, message, details)
    }

    /// The bytes of `grpc-message` and `grpc-status-details-bin` as tonic writes them.
    fn written(status: &Status) -> usize {
        let mut headers = http::HeaderMap::new();
        status.add_header(&mut headers).expect("headers");
        ["grpc-message", "grpc-status-details-bin"]
            .iter()
            .filter_map(|name| headers.get(*name))
            .map(|v| v.len())
            .sum()
    }

    #[test]
    fn cuts_fall_on_character_boundaries() {
        assert_eq!(cut("héllo", 2), "h");
        assert_eq!(cut("héllo", 3), "hé");
        assert_eq!(cut("€", 2), "");
        assert_eq!(cut("abc", 10), "abc");
        assert_eq!(ellipsize("abcdef", 4), "a…");
        assert_eq!(ellipsize("abc", 4), "abc");
    }

    #[test]
    fn the_measured_size_is_what_tonic_writes() {
        let mut details = Details::new();
        details.set_error_info("R", "d", HashMap::from([("k".into(), "v é".into())]));
        details.add_bad_request_violation("f", "a \"quoted\" {thing}? 100% é\u{1}");
        let status = bounded(Code::InvalidArgument, "hé? #1 <x> `y`", details, build);
        assert_eq!(travelling_len(&status), written(&status));
    }

    #[test]
    fn the_worst_status_fits_and_still_says_how_many_were_left_out() {
        // Every string at its bound, every character escaped on the wire.
        let huge = "é\u{1}".repeat(100_000);
        let mut details = Details::new();
        let metadata = (0..20).map(|i| (format!("k{i}"), huge.clone())).collect();
        details.set_error_info(huge.clone(), "oms-gateway", metadata);
        for _ in 0..1000 {
            details.add_bad_request_violation(&huge, &huge);
        }
        details.count_unlisted(1_000_000);
        details.list_violations_in_message();
        details.set_resource_info("polygon.oms.v1.CashIn", &huge, &huge);
        details.set_retry_info(Some(Duration::from_secs(1)));
        let status = bounded(Code::InvalidArgument, &huge, details, build);
        assert!(written(&status) <= MAX_STATUS_BYTES, "{}", written(&status));
        let listed = tonic_types::StatusExt::get_error_details(&status)
            .bad_request()
            .map_or(0, |b| b.field_violations.len());
        let left_out = 1_000_000 + 1000 - listed;
        assert!(
            status
                .message()
                .ends_with(&format!("; and {left_out} more")),
            "{}",
            status.message()
        );
    }

    #[test]
    fn a_small_status_is_left_whole() {
        let mut details = Details::new();
        for i in 0..3 {
            details.add_bad_request_violation(&format!("f{i}"), "is required");
        }
        details.list_violations_in_message();
        let status = bounded(Code::InvalidArgument, "invalid request", details, build);
        assert_eq!(
            status.message(),
            "invalid request: f0: is required; f1: is required; f2: is required"
        );
    }
}
