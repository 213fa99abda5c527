//! Helpers for the black-box tests, on top of `tests/common`: reading a status the way a client
//! would (its one `ErrorInfo`, its BadRequest violations, its retry hint), starting a separate
//! sandbox that a gateway reaches as a "remote" OMS, a port nothing listens on, and waiting for
//! a condition without sleeping blindly.
//!
//! A test file that uses this declares both `mod common;` and `mod support;`.
#![allow(dead_code)]

use oms_gateway::config::{GatewaySettings, Secret};
use oms_sandbox::{self as sandbox, RecordedRequest, SandboxHandle, SandboxSettings};
use std::time::Duration;
use tonic::Status;
use tonic_types::{ErrorDetail, ErrorInfo, StatusExt};

/// The API key of sandboxes started by [`start_remote_sandbox`].
pub const REMOTE_API_KEY: &str = "sk_sdbx_remote_tests";

/// The status's one `ErrorInfo`; fails the test if there is none or more than one.
pub fn error_info(status: &Status) -> ErrorInfo {
    let infos: Vec<ErrorInfo> = status
        .get_error_details_vec()
        .into_iter()
        .filter_map(|detail| match detail {
            ErrorDetail::ErrorInfo(info) => Some(info),
            _ => None,
        })
        .collect();
    assert_eq!(
        infos.len(),
        1,
        "exactly one ErrorInfo expected in {status:?}"
    );
    infos.into_iter().next().expect("one ErrorInfo")
}

/// The `(field, description)` pairs of the status's BadRequest, in order (empty without one).
pub fn violations(status: &Status) -> Vec<(String, String)> {
    status
        .get_error_details()
        .bad_request()
        .map(|bad| {
            bad.field_violations
                .iter()
                .map(|v| (v.field.clone(), v.description.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// The fields of the status's BadRequest violations, in order.
pub fn violation_fields(status: &Status) -> Vec<String> {
    violations(status)
        .into_iter()
        .map(|(field, _)| field)
        .collect()
}

/// The status's RetryInfo delay, if it has a RetryInfo.
pub fn retry_delay(status: &Status) -> Option<Duration> {
    status
        .get_error_details()
        .retry_info()
        .map(|info| info.retry_delay.unwrap_or_default())
}

/// Starts a sandbox of its own (not embedded in a gateway) that accepts [`REMOTE_API_KEY`] with
/// `secret`.
pub async fn start_remote_sandbox(secret: &str) -> SandboxHandle {
    sandbox::start(SandboxSettings {
        api_key: REMOTE_API_KEY.to_owned(),
        api_secret: secret.to_owned(),
        ..SandboxSettings::default()
    })
    .await
    .expect("sandbox starts")
}

/// The test config pointed at `base_url` as a remote OMS with these credentials.
pub fn remote_config(base_url: &str, api_key: &str, api_secret: &str) -> GatewaySettings {
    let mut config = crate::common::test_config();
    config.oms_base_url = Some(base_url.to_owned());
    config.oms_api_key = Some(api_key.to_owned());
    config.oms_api_secret = Some(Secret::new(api_secret));
    config
}

/// `http://127.0.0.1:PORT` where nothing listens (the port was bound, then released).
pub fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let addr = listener.local_addr().expect("local addr");
    drop(listener);
    format!("http://{addr}")
}

/// The journal without the token exchanges: the requests the RPCs caused.
pub fn api_requests(sandbox: &SandboxHandle) -> Vec<RecordedRequest> {
    sandbox
        .journal()
        .into_iter()
        .filter(|r| r.path != "/auth/token")
        .collect()
}

/// Polls `condition` every 10 ms until it holds; fails the test after `limit`.
pub async fn eventually(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The `name=value` pairs of a raw query string, percent-decoded.
pub fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    let url =
        reqwest::Url::parse(&format!("http://x/?{}", query.unwrap_or(""))).expect("query parses");
    url.query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// TLS and mTLS to the gateway's own listener (a throwaway CA, client certificates, channels).
pub mod tls;
