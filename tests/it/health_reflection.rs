//! grpc.health.v1 and server reflection (v1 and v1alpha), as grpcurl or a mesh would use them.

use crate::common;

use prost::Message;
use std::time::Duration;
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::ServingStatus;

const SERVICES: &[&str] = &[
    "polygon.oms.v1.CashInService",
    "polygon.oms.v1.CashLocationService",
    "polygon.oms.v1.SandboxService",
];

/// A reflection client module for one protocol version: v1 and v1alpha are the same protocol
/// in different packages, so the types differ and the code does not.
macro_rules! reflection_client {
    ($module:ident, $version:ident) => {
        mod $module {
            use super::*;
            use tonic_reflection::pb::$version::{
                ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
                server_reflection_request::MessageRequest,
                server_reflection_response::MessageResponse,
            };

            async fn ask(channel: Channel, request: MessageRequest) -> MessageResponse {
                let mut client = ServerReflectionClient::new(channel);
                let request = ServerReflectionRequest {
                    host: String::new(),
                    message_request: Some(request),
                };
                let mut answers = client
                    .server_reflection_info(tokio_stream::iter([request]))
                    .await
                    .expect(concat!("reflection ", stringify!($version)))
                    .into_inner();
                answers
                    .message()
                    .await
                    .expect("an answer")
                    .expect("one answer")
                    .message_response
                    .expect("a response")
            }

            pub async fn services(channel: Channel) -> Vec<String> {
                match ask(channel, MessageRequest::ListServices(String::new())).await {
                    MessageResponse::ListServicesResponse(list) => {
                        list.service.into_iter().map(|s| s.name).collect()
                    }
                    other => panic!("unexpected answer {other:?}"),
                }
            }

            pub async fn files_containing(channel: Channel, symbol: &str) -> Vec<Vec<u8>> {
                match ask(channel, MessageRequest::FileContainingSymbol(symbol.into())).await {
                    MessageResponse::FileDescriptorResponse(files) => files.file_descriptor_proto,
                    other => panic!("unexpected answer {other:?}"),
                }
            }

            pub async fn file_named(channel: Channel, name: &str) -> Vec<Vec<u8>> {
                match ask(channel, MessageRequest::FileByFilename(name.into())).await {
                    MessageResponse::FileDescriptorResponse(files) => files.file_descriptor_proto,
                    other => panic!("unexpected answer for {name}: {other:?}"),
                }
            }
        }
    };
}

reflection_client!(reflection_v1, v1);
reflection_client!(reflection_v1alpha, v1alpha);

fn assert_lists_the_gateways_services(services: &[String]) {
    for expected in [
        "polygon.oms.v1.CashInService",
        "polygon.oms.v1.CashLocationService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            services.iter().any(|s| s == expected),
            "{expected} in {services:?}"
        );
    }
}

/// Decodes the file that defines `polygon.oms.v1.CashInService` and checks the service is in it
/// with its proto comments.
fn assert_cash_in_file_has_comments(files: &[Vec<u8>]) {
    let files: Vec<prost_types::FileDescriptorProto> = files
        .iter()
        .map(|bytes| prost_types::FileDescriptorProto::decode(bytes.as_slice()).expect("decodes"))
        .collect();
    let file = files
        .iter()
        .find(|f| f.service.iter().any(|s| s.name() == "CashInService"))
        .expect("the file defining CashInService");
    assert_eq!(file.package(), "polygon.oms.v1");
    let methods: Vec<&str> = file.service[0].method.iter().map(|m| m.name()).collect();
    for rpc in ["CreateCashIn", "GetCashIn", "ListCashIns", "RefreshCashIn"] {
        assert!(methods.contains(&rpc), "{rpc} in {methods:?}");
    }
    let comments: Vec<&str> = file
        .source_code_info
        .as_ref()
        .expect("source info is kept")
        .location
        .iter()
        .filter_map(|l| l.leading_comments.as_deref())
        .collect();
    assert!(
        comments
            .iter()
            .any(|c| c.contains("Creates a cash-in and returns it with its deposit code")),
        "the CreateCashIn comment is visible: {} comments",
        comments.len()
    );
}

/// The names of the files an answer holds, and the messages each defines.
fn decoded(files: &[Vec<u8>]) -> Vec<(String, Vec<String>)> {
    files
        .iter()
        .map(|bytes| prost_types::FileDescriptorProto::decode(bytes.as_slice()).expect("decodes"))
        .map(|f| {
            let messages = f.message_type.iter().map(|m| m.name().to_owned()).collect();
            (f.name().to_owned(), messages)
        })
        .collect()
}

/// What grpcurl asks to print an error's details: each `type.googleapis.com/google.rpc.X` by
/// symbol, then the files it imports by name.
fn assert_the_error_model_is_described(
    details: &[(String, Vec<String>)],
    status: &[(String, Vec<String>)],
    duration: &[(String, Vec<String>)],
) {
    let file = details
        .iter()
        .find(|(name, _)| name == "google/rpc/error_details.proto")
        .unwrap_or_else(|| panic!("google/rpc/error_details.proto in {details:?}"));
    for message in ["ErrorInfo", "BadRequest", "RetryInfo", "ResourceInfo"] {
        assert!(file.1.iter().any(|m| m == message), "{message} in {file:?}");
    }
    assert!(
        status
            .iter()
            .any(|(name, messages)| name == "google/rpc/status.proto" && messages == &["Status"]),
        "{status:?}"
    );
    assert!(
        duration
            .iter()
            .any(|(name, _)| name == "google/protobuf/duration.proto"),
        "RetryInfo's import is served: {duration:?}"
    );
}

#[tokio::test]
async fn health_is_serving_for_the_server_and_every_service_after_start() {
    let gateway = common::start().await;
    let serving = ServingStatus::Serving as i32;
    assert_eq!(gateway.health_status("").await, serving);
    for service in SERVICES {
        assert_eq!(gateway.health_status(service).await, serving, "{service}");
    }
    let unknown = gateway
        .health()
        .check(tonic_health::pb::HealthCheckRequest {
            service: "polygon.oms.v1.NoSuchService".into(),
        })
        .await
        .expect_err("unknown service");
    assert_eq!(unknown.code(), Code::NotFound);
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn a_gateway_with_a_wrong_secret_stays_not_serving_and_calls_fail_upstream_auth_failed() {
    let sandbox = common::start_remote_sandbox("the-right-secret").await;
    let config = common::remote_config(
        &sandbox.base_url(),
        common::REMOTE_API_KEY,
        "the-wrong-secret",
    );
    let gateway = common::start_unchecked(config).await;
    common::eventually(
        Duration::from_secs(3),
        "a refused token exchange",
        async || {
            sandbox
                .journal()
                .iter()
                .any(|r| r.path == "/auth/token" && r.status == 401)
        },
    )
    .await;
    let not_serving = ServingStatus::NotServing as i32;
    assert_eq!(gateway.health_status("").await, not_serving);
    for service in &SERVICES[..2] {
        assert_eq!(
            gateway.health_status(service).await,
            not_serving,
            "{service}"
        );
    }

    let status = gateway
        .locations()
        .list_cash_locations(common::guide_point())
        .await
        .expect_err("OMS refuses the gateway's credentials");
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    let info = common::error_info(&status);
    assert_eq!(info.reason, "UPSTREAM_AUTH_FAILED");
    assert_eq!(info.domain, "oms-gateway");
    assert_eq!(gateway.health_status("").await, not_serving);
    assert_eq!(sandbox.token_exchanges(), 0);
    assert_eq!(
        common::api_requests(&sandbox).len(),
        0,
        "nothing but exchanges"
    );
    gateway.gateway.shutdown().await;
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_gateway_against_a_remote_sandbox_with_the_right_secret_serves() {
    let sandbox = common::start_remote_sandbox("the-right-secret").await;
    let config = common::remote_config(
        &sandbox.base_url(),
        common::REMOTE_API_KEY,
        "the-right-secret",
    );
    let gateway = common::start_with(config).await;
    assert!(gateway.gateway.sandbox().is_none(), "no embedded sandbox");
    assert_eq!(
        gateway.health_status("polygon.oms.v1.CashInService").await,
        ServingStatus::Serving as i32
    );
    // SandboxService is registered only over the embedded sandbox.
    let status = gateway
        .simulator()
        .expire_cash_in(oms_gateway::proto::v1::ExpireCashInRequest {
            cash_in_id: "ci_1".into(),
        })
        .await
        .expect_err("no SandboxService");
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    gateway.gateway.shutdown().await;
    sandbox.shutdown().await;
}

#[tokio::test]
async fn reflection_v1_lists_the_services_and_serves_commented_descriptors() {
    let gateway = common::start().await;
    let services = reflection_v1::services(gateway.channel.clone()).await;
    assert_lists_the_gateways_services(&services);
    let files =
        reflection_v1::files_containing(gateway.channel.clone(), "polygon.oms.v1.CashInService")
            .await;
    assert_cash_in_file_has_comments(&files);
    let health =
        reflection_v1::files_containing(gateway.channel.clone(), "grpc.health.v1.Health").await;
    assert!(!health.is_empty(), "health descriptors are registered");
    gateway.gateway.shutdown().await;
}

#[tokio::test]
async fn reflection_v1alpha_lists_the_services_and_serves_commented_descriptors() {
    let gateway = common::start().await;
    let services = reflection_v1alpha::services(gateway.channel.clone()).await;
    assert_lists_the_gateways_services(&services);
    let files = reflection_v1alpha::files_containing(
        gateway.channel.clone(),
        "polygon.oms.v1.CashInService",
    )
    .await;
    assert_cash_in_file_has_comments(&files);
    let health =
        reflection_v1alpha::files_containing(gateway.channel.clone(), "grpc.health.v1.Health")
            .await;
    assert!(!health.is_empty(), "health descriptors are registered");
    gateway.gateway.shutdown().await;
}

// Before: reflection knew no google.rpc type, so grpcurl and `buf curl` printed each detail of
// an error as `{"@error":"google.rpc.ErrorInfo is not recognized…"}`.
#[tokio::test]
async fn reflection_v1_and_v1alpha_describe_the_error_details_every_error_carries() {
    let gateway = common::start().await;
    let channel = || gateway.channel.clone();
    assert_the_error_model_is_described(
        &decoded(&reflection_v1::files_containing(channel(), "google.rpc.ErrorInfo").await),
        &decoded(&reflection_v1::files_containing(channel(), "google.rpc.Status").await),
        &decoded(&reflection_v1::file_named(channel(), "google/protobuf/duration.proto").await),
    );
    assert_the_error_model_is_described(
        &decoded(&reflection_v1alpha::files_containing(channel(), "google.rpc.RetryInfo").await),
        &decoded(&reflection_v1alpha::file_named(channel(), "google/rpc/status.proto").await),
        &decoded(
            &reflection_v1alpha::file_named(channel(), "google/protobuf/duration.proto").await,
        ),
    );
    gateway.gateway.shutdown().await;
}
