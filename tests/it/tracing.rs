//! Tracing: the caller's W3C trace context reaches OMS, and, with
//! `--otlp-endpoint`, the gateway's spans reach an OTLP collector under the caller's span.
//!
//! Without export (the gateway in-process): the `traceparent` OMS received (read from the
//! sandbox's journal) has the caller's trace id, a parent id of the gateway's own (one per
//! attempt) and the caller's `tracestate`; a malformed `traceparent` starts a new trace and the
//! call succeeds. With export (the built binary, since the exporter is part of the process's one
//! subscriber): a small OTLP collector (a tonic server implementing the collector's
//! `TraceService`) receives the RPC span as a child of the caller's span, the upstream attempt
//! span under it, and the attempt's span id is the parent id OMS received. Run with
//! `--nocapture` to see the trace as the collector received it.

use crate::common;

use oms_gateway::proto::v1 as pb;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::{Instant, sleep};
use tonic::Request;
use tonic::metadata::MetadataValue;

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
const CALLER_STATE: &str = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7";

fn caller_traceparent() -> String {
    format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01")
}

/// `(version, trace id, parent id, flags)` of a `traceparent` OMS received, checked for shape.
fn fields(traceparent: &str) -> (String, String, String, String) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "traceparent {traceparent:?}");
    let hex = |s: &str, len: usize| {
        assert!(
            s.len() == len
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{s:?} in {traceparent:?} is not {len} lower-case hex digits"
        );
        assert!(
            s.bytes().any(|b| b != b'0'),
            "all-zero id in {traceparent:?}"
        );
        s.to_owned()
    };
    (
        parts[0].to_owned(),
        hex(parts[1], 32),
        hex(parts[2], 16),
        parts[3].to_owned(),
    )
}

fn with_trace<T>(message: T, traceparent: &str, tracestate: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    let metadata = request.metadata_mut();
    metadata.insert("traceparent", MetadataValue::try_from(traceparent).unwrap());
    if let Some(state) = tracestate {
        metadata.insert("tracestate", MetadataValue::try_from(state).unwrap());
    }
    request.set_timeout(Duration::from_secs(10));
    request
}

/// The caller's identity as a Linkerd sidecar would pass it (`--caller-identity-header`).
const BILLING: &str = "billing.payments.serviceaccount.identity";

fn from_billing<T>(mut request: Request<T>) -> Request<T> {
    let identity = MetadataValue::from_static(BILLING);
    request.metadata_mut().insert("l5d-client-id", identity);
    request
}

fn keyed(request: pb::CreateCashInRequest, key: &str) -> pb::CreateCashInRequest {
    pb::CreateCashInRequest {
        idempotency_key: key.to_owned(),
        ..request
    }
}

#[tokio::test]
async fn a_callers_traceparent_reaches_oms_with_its_trace_id_a_new_parent_and_its_tracestate() {
    let gateway = common::start().await;
    let location = common::first_location(&gateway.channel).await;
    gateway.sandbox().clear_journal();
    let create = keyed(
        common::create_request(&location, "cst_trace_a"),
        "trace-a-1",
    );
    gateway
        .cash_ins()
        .create_cash_in(with_trace(
            create,
            &caller_traceparent(),
            Some(CALLER_STATE),
        ))
        .await
        .expect("CreateCashIn");
    let requests = common::api_requests(gateway.sandbox());
    assert_eq!(requests.len(), 1, "{requests:?}");
    let sent = requests[0]
        .traceparent
        .as_deref()
        .expect("traceparent sent");
    let (version, trace, parent, flags) = fields(sent);
    assert_eq!(version, "00");
    assert_eq!(trace, CALLER_TRACE, "the caller's trace continues upstream");
    assert_ne!(parent, CALLER_SPAN, "OMS's parent is the gateway's span");
    assert_eq!(flags, "01", "the caller's sampled flag is kept");
    assert_eq!(requests[0].tracestate.as_deref(), Some(CALLER_STATE));
}

#[tokio::test]
async fn trace_flags_the_spec_does_not_define_are_not_passed_to_oms() {
    let gateway = common::start().await;
    gateway.sandbox().clear_journal();
    for (caller_flags, sent_flags) in [("ff", "01"), ("fe", "00"), ("01", "01")] {
        gateway.sandbox().clear_journal();
        gateway
            .locations()
            .list_cash_locations(with_trace(
                common::guide_point(),
                &format!("00-{CALLER_TRACE}-{CALLER_SPAN}-{caller_flags}"),
                None,
            ))
            .await
            .expect("ListCashLocations");
        let requests = common::api_requests(gateway.sandbox());
        assert_eq!(requests.len(), 1, "{requests:?}");
        let (_, trace, _, flags) = fields(requests[0].traceparent.as_deref().expect("sent"));
        assert_eq!(trace, CALLER_TRACE, "the caller's trace continues");
        assert_eq!(flags, sent_flags, "the caller's flags {caller_flags}");
    }
}

#[tokio::test]
async fn each_upstream_attempt_is_a_span_of_its_own_in_the_callers_trace() {
    let gateway = common::start().await;
    gateway.sandbox().clear_journal();
    gateway
        .sandbox()
        .inject(common::respond("GET", "/cash-locations", 1, 503, "{}", &[]));
    gateway
        .locations()
        .list_cash_locations(with_trace(
            common::guide_point(),
            &caller_traceparent(),
            None,
        ))
        .await
        .expect("ListCashLocations, after one retry");
    let requests = common::api_requests(gateway.sandbox());
    assert_eq!(requests.len(), 2, "a 503, then the retry: {requests:?}");
    let sent: Vec<_> = requests
        .iter()
        .map(|r| fields(r.traceparent.as_deref().expect("traceparent")))
        .collect();
    assert!(
        sent.iter().all(|(_, trace, _, _)| trace == CALLER_TRACE),
        "{sent:?}"
    );
    assert_ne!(sent[0].2, sent[1].2, "each attempt has its own span id");
    assert!(requests.iter().all(|r| r.tracestate.is_none()));
}

#[tokio::test]
async fn a_token_exchange_a_call_needs_is_part_of_the_calls_trace() {
    let gateway = common::start().await;
    // The next call meets a 401, exchanges a fresh token and tries again.
    gateway.sandbox().revoke_tokens();
    gateway.sandbox().clear_journal();
    gateway
        .locations()
        .list_cash_locations(with_trace(
            common::guide_point(),
            &caller_traceparent(),
            None,
        ))
        .await
        .expect("ListCashLocations, after a fresh token");
    let journal = gateway.sandbox().journal();
    let paths: Vec<(&str, u16)> = journal
        .iter()
        .map(|r| (r.path.as_str(), r.status))
        .collect();
    assert_eq!(
        paths,
        [
            ("/cash-locations", 401),
            ("/auth/token", 200),
            ("/cash-locations", 200)
        ],
        "{journal:?}"
    );
    let sent: Vec<_> = journal
        .iter()
        .map(|r| fields(r.traceparent.as_deref().expect("traceparent")))
        .collect();
    assert!(
        sent.iter().all(|(_, trace, _, _)| trace == CALLER_TRACE),
        "{sent:?}"
    );
    let parents: std::collections::HashSet<_> = sent.iter().map(|f| &f.2).collect();
    assert_eq!(parents.len(), 3, "three requests, three spans: {sent:?}");
}

#[tokio::test]
async fn a_malformed_traceparent_is_ignored_and_the_call_starts_a_new_trace() {
    let gateway = common::start().await;
    for malformed in [
        // Upper-case hex, an all-zero trace id, version ff, and a missing field.
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-01",
    ] {
        gateway.sandbox().clear_journal();
        gateway
            .locations()
            .list_cash_locations(with_trace(
                common::guide_point(),
                malformed,
                Some(CALLER_STATE),
            ))
            .await
            .unwrap_or_else(|status| panic!("{malformed}: {status:?}"));
        let requests = common::api_requests(gateway.sandbox());
        assert_eq!(requests.len(), 1, "{requests:?}");
        let (version, trace, _, flags) =
            fields(requests[0].traceparent.as_deref().expect("traceparent"));
        assert_eq!(version, "00");
        assert_ne!(trace, CALLER_TRACE, "{malformed}: a new trace");
        assert_eq!(flags, "00", "{malformed}: the gateway recorded nothing");
        assert_eq!(
            requests[0].tracestate, None,
            "{malformed}: no state of a broken trace"
        );
    }
}

#[tokio::test]
async fn calls_without_a_traceparent_send_a_new_trace_each() {
    let gateway = common::start().await;
    gateway.sandbox().clear_journal();
    for _ in 0..2 {
        common::first_location(&gateway.channel).await;
    }
    let traces: Vec<String> = common::api_requests(gateway.sandbox())
        .iter()
        .map(|r| fields(r.traceparent.as_deref().expect("traceparent")).1)
        .collect();
    assert_eq!(traces.len(), 2);
    assert_ne!(traces[0], traces[1]);
}

// === OTLP export ===

/// The in-test OTLP collector: keeps every span it is sent.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans = request
            .into_inner()
            .resource_spans
            .into_iter()
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans);
        self.spans.lock().unwrap().extend(spans);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// Starts the collector on a loopback port; returns it and its endpoint URL.
async fn start_collector() -> (Collector, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let collector = Collector::default();
    let service = TraceServiceServer::new(collector.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    (collector, endpoint)
}

/// The built gateway with `--otlp-endpoint`, against a sandbox of the test's; killed if the test
/// ends before it exits.
struct Gateway {
    child: Child,
    log: std::path::PathBuf,
    /// Set once the gateway takes connections.
    channel: Option<tonic::transport::Channel>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Gateway {
    /// Starts the binary exporting to `otlp_endpoint` and waits (at most 20 s) until it takes
    /// connections.
    async fn start(
        otlp_endpoint: &str,
        sandbox: &oms_sandbox::SandboxHandle,
        args: &[&str],
    ) -> Self {
        let addr = format!("127.0.0.1:{}", common::free_port());
        let log = std::env::temp_dir().join(format!(
            "oms-gateway-otlp-test-{}.log",
            addr.replace(':', "-")
        ));
        let child = Command::new(env!("CARGO_BIN_EXE_oms-gateway"))
            .args(["--listen", &addr, "--otlp-endpoint", otlp_endpoint])
            .args(["--drain-delay", "0s"])
            // Port 0 for the admin listener: other tests start gateways at the same time.
            .args(["--admin-listen", "127.0.0.1:0"])
            .args(args)
            .env("OMS_BASE_URL", sandbox.base_url())
            .env("OMS_API_KEY", common::REMOTE_API_KEY)
            .env("OMS_API_SECRET", sandbox.api_secret())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start the built gateway");
        let mut gateway = Self {
            child,
            log,
            channel: None,
        };
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap();
        let ready_by = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(channel) = endpoint.connect().await {
                gateway.channel = Some(channel);
                return gateway;
            }
            assert!(
                Instant::now() < ready_by,
                "the gateway never started:\n{}",
                gateway.log_text()
            );
            sleep(Duration::from_millis(50)).await;
        }
    }

    fn channel(&self) -> tonic::transport::Channel {
        self.channel.clone().expect("started")
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits (at most 20 s) for a clean exit.
    async fn stop(&mut self) {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill -TERM");
        let exit_by = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < exit_by,
                "the gateway did not exit:\n{}",
                self.log_text()
            );
            sleep(Duration::from_millis(50)).await;
        };
        assert!(status.success(), "exit {status}:\n{}", self.log_text());
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    let value = span
        .attributes
        .iter()
        .find(|kv| kv.key == key)?
        .value
        .as_ref()?;
    Some(match value.value.as_ref()? {
        AnyValue::StringValue(s) => s.clone(),
        AnyValue::IntValue(i) => i.to_string(),
        AnyValue::BoolValue(b) => b.to_string(),
        other => format!("{other:?}"),
    })
}

/// One line per span, the way the collector received it.
fn print_trace(spans: &[Span]) -> String {
    let kinds = [
        "unspecified",
        "internal",
        "server",
        "client",
        "producer",
        "consumer",
    ];
    let mut out = String::new();
    for span in spans {
        let parent = if span.parent_span_id.is_empty() {
            "-".to_owned()
        } else {
            hex(&span.parent_span_id)
        };
        let kind = kinds.get(span.kind as usize).copied().unwrap_or("?");
        out += &format!(
            "{} trace={} span={} parent={} kind={} {:.1}ms\n",
            span.name,
            hex(&span.trace_id),
            hex(&span.span_id),
            parent,
            kind,
            (span
                .end_time_unix_nano
                .saturating_sub(span.start_time_unix_nano)) as f64
                / 1e6,
        );
        for kv in &span.attributes {
            let shown = attribute(span, &kv.key).unwrap_or_default();
            out += &format!("    {} = {shown}\n", kv.key);
        }
    }
    out
}

#[tokio::test]
async fn exported_spans_hang_under_the_callers_span_and_the_attempts_span_is_omss_parent() {
    let (collector, endpoint) = start_collector().await;
    let secret = "otlp-test-secret";
    let sandbox = common::start_remote_sandbox(secret).await;
    // The caller named by a mesh sidecar's header, so the span has one.
    let args = ["--caller-identity-header", "l5d-client-id"];
    let mut gateway = Gateway::start(&endpoint, &sandbox, &args).await;
    let location =
        pb::cash_location_service_client::CashLocationServiceClient::new(gateway.channel())
            .list_cash_locations(from_billing(Request::new(common::guide_point())))
            .await
            .expect("ListCashLocations")
            .into_inner()
            .cash_locations
            .swap_remove(0);
    sandbox.clear_journal();
    let create = keyed(
        common::create_request(&location, "cst_trace_otlp"),
        "trace-otlp-1",
    );
    let cash_in = pb::cash_in_service_client::CashInServiceClient::new(gateway.channel())
        .create_cash_in(from_billing(with_trace(
            create,
            &caller_traceparent(),
            Some(CALLER_STATE),
        )))
        .await
        .expect("CreateCashIn")
        .into_inner()
        .cash_in
        .expect("cash_in");
    let oms_saw = common::api_requests(&sandbox);
    assert_eq!(oms_saw.len(), 1, "{oms_saw:?}");
    let (_, oms_trace, oms_parent, _) = fields(oms_saw[0].traceparent.as_deref().expect("sent"));
    println!(
        "OMS received traceparent {:?}, tracestate {:?}",
        oms_saw[0].traceparent, oms_saw[0].tracestate
    );

    // The batch would go out within 5 s; a clean exit at once must flush it (bounded).
    gateway.stop().await;
    let arrived_by = Instant::now() + Duration::from_secs(10);
    let ours = loop {
        let spans: Vec<Span> = collector
            .spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| hex(&s.trace_id) == CALLER_TRACE)
            .cloned()
            .collect();
        if spans.iter().any(|s| s.name == "oms_attempt") {
            break spans;
        }
        assert!(
            Instant::now() < arrived_by,
            "no attempt span exported: {spans:?}\n{}",
            gateway.log_text()
        );
        sleep(Duration::from_millis(50)).await;
    };
    let printed = print_trace(&ours);
    println!("the trace as the collector received it:\n{printed}");

    let named = |name: &str| {
        ours.iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no {name} span in\n{printed}"))
    };
    let rpc = named("CreateCashIn");
    let call = named("oms_call");
    let attempt = named("oms_attempt");
    assert_eq!(
        hex(&rpc.parent_span_id),
        CALLER_SPAN,
        "the RPC span's parent is the caller's"
    );
    assert_eq!(rpc.kind, 2, "the RPC span is a server span");
    assert_eq!(
        call.parent_span_id, rpc.span_id,
        "the OMS call is part of the RPC"
    );
    assert_eq!(
        attempt.parent_span_id, call.span_id,
        "the attempt is part of the OMS call"
    );
    assert_eq!(attempt.kind, 3, "the attempt is a client span");
    assert_eq!(oms_trace, CALLER_TRACE);
    assert_eq!(
        hex(&attempt.span_id),
        oms_parent,
        "OMS's request hangs under the attempt span"
    );
    assert_eq!(
        attribute(rpc, "method").as_deref(),
        Some("polygon.oms.v1.CashInService/CreateCashIn")
    );
    assert_eq!(
        attribute(rpc, "caller"),
        Some(format!("dns:{BILLING}")),
        "a Linkerd identity is a DNS name"
    );
    assert_eq!(
        attribute(rpc, "idempotency_key").as_deref(),
        Some("trace-otlp-1")
    );
    assert_eq!(
        attribute(rpc, "cash_in_id").as_deref(),
        Some(cash_in.id.as_str())
    );
    assert_eq!(attribute(rpc, "trace_id").as_deref(), Some(CALLER_TRACE));
    let request_id = attribute(attempt, "upstream_request_id").expect("OMS's request id");
    assert_eq!(attribute(rpc, "upstream_request_id"), Some(request_id));
    assert_eq!(attribute(attempt, "http_status").as_deref(), Some("201"));
    assert_eq!(attribute(attempt, "attempt").as_deref(), Some("1"));

    // What went to the collector holds no credential and no deposit code.
    let everything = format!("{:?}", collector.spans.lock().unwrap());
    let bearer = oms_saw[0].authorization.as_deref().expect("authorization");
    let token = bearer.trim_start_matches("Bearer ");
    assert!(!everything.contains(secret), "the API secret was exported");
    assert!(!everything.contains(token), "a bearer token was exported");
    let code = cash_in
        .deposit_instructions
        .as_ref()
        .map(|d| d.code.clone())
        .unwrap_or_default();
    assert!(!code.is_empty(), "the cash-in has a deposit code");
    assert!(!everything.contains(&code), "the deposit code was exported");
}

#[tokio::test]
async fn a_collector_that_is_down_costs_calls_nothing_and_its_failed_export_is_logged() {
    let sandbox = common::start_remote_sandbox("otlp-down-secret").await;
    let nobody = format!("http://127.0.0.1:{}", common::free_port());
    let mut gateway = Gateway::start(&nobody, &sandbox, &[]).await;
    let started = Instant::now();
    for _ in 0..3 {
        common::first_location(&gateway.channel()).await;
    }
    let calls = started.elapsed();
    // An export that held calls up would cost them its 5 s timeout.
    assert!(calls < Duration::from_secs(4), "3 calls took {calls:?}");
    gateway.stop().await;
    let log = gateway.log_text();
    assert!(
        log.contains("BatchSpanProcessor.ExportError"),
        "the failed export is in the log:\n{log}"
    );
    println!("3 calls with the collector down: {calls:?}; the log said:\n{log}");
}

#[test]
fn an_otlp_endpoint_that_is_no_url_is_refused_at_start() {
    let output = Command::new(env!("CARGO_BIN_EXE_oms-gateway"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--otlp-endpoint",
            "collector:4317",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run the gateway");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--otlp-endpoint `collector:4317`"),
        "the error names the flag and its value: {stderr}"
    );
}
