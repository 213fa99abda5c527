//! Caller security as callers and operators meet it, over real TLS with a throwaway CA: the TLS
//! port refuses plaintext, mTLS refuses a missing or foreign client certificate, the caller is
//! the certificate's SPIFFE URI SAN, else DNS SAN, else CN (or the mesh header, only when
//! configured; `x-caller-id` never), the policy allows and denies per method with one ErrorInfo,
//! idempotency keys are scoped per authenticated caller, a rotated certificate is served while an
//! open watch stream lives on, an unauthenticated listen beyond loopback refuses to start, and
//! every mutation and refusal leaves an audit line without a secret.

mod common;

use common::logs::Format;
use common::tls::{self, Ca, Name};
use oms_gateway::proto::v1 as pb;
use oms_gateway::server;
use pb::cash_in_service_client::CashInServiceClient;
use pb::cash_location_service_client::CashLocationServiceClient;
use pb::sandbox_service_client::SandboxServiceClient;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

const CHECKOUT: &str = "spiffe://test.local/ns/checkout/sa/checkout";
const OPS: &str = "spiffe://test.local/ns/ops/sa/debug";

/// Checkout may use CashInService and search locations; ops/* may use reflection and the sandbox.
const POLICY: &str = r#"
[[allow]]
callers = ["spiffe://test.local/ns/checkout/sa/checkout"]
methods = ["polygon.oms.v1.CashInService/*", "polygon.oms.v1.CashLocationService/ListCashLocations"]

[[allow]]
callers = ["spiffe://test.local/ns/ops/*"]
methods = ["grpc.reflection.*", "polygon.oms.v1.SandboxService/*"]
"#;

// === log capture (audit lines) ===

/// The audit lines logged so far, parsed.
fn audit_lines() -> Vec<serde_json::Value> {
    common::logs::captured()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["target"] == "audit")
        .collect()
}

// === helpers ===

async fn health_check(channel: Channel) -> Result<i32, Status> {
    common::health_check(&channel, "").await
}

/// A channel that may fail to connect, then a health check over it: what a client sees first.
async fn probe(channel: Result<Channel, tonic::transport::Error>) -> Result<i32, String> {
    let channel = channel.map_err(|e| format!("connect: {e}"))?;
    tokio::time::timeout(Duration::from_secs(10), health_check(channel))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|s| {
            // The transport's own words (a TLS alert, a reset) sit in the source chain.
            let mut text = format!("{:?}: {}", s.code(), s.message());
            let mut source = std::error::Error::source(&s);
            while let Some(cause) = source {
                text.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            text
        })
}

async fn list_locations(channel: Channel) -> Result<pb::ListCashLocationsResponse, Status> {
    CashLocationServiceClient::new(channel)
        .list_cash_locations(common::guide_point())
        .await
        .map(|r| r.into_inner())
}

/// A policy that allows nobody anything we call: every call is denied, naming the caller.
const DENY_ALL: &str = "[[allow]]\ncallers = [\"cn:nobody\"]\nmethods = [\"none.None/*\"]\n";

/// The caller the gateway saw, read from a PERMISSION_DENIED's ErrorInfo.
async fn seen_caller(channel: Channel) -> String {
    let status = list_locations(channel)
        .await
        .expect_err("the deny-all policy denies");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let info = common::error_info(&status);
    assert_eq!(info.reason, "CALLER_NOT_ALLOWED");
    info.metadata["caller"].clone()
}

/// A create request with this idempotency key (the field, which wins over any metadata).
fn with_key(mut message: pb::CreateCashInRequest, key: &str) -> Request<pb::CreateCashInRequest> {
    message.idempotency_key = key.to_owned();
    Request::new(message)
}

struct Mtls {
    gateway: server::RunningGateway,
    ca: Ca,
    dir: std::path::PathBuf,
}

impl Mtls {
    /// A gateway requiring client certificates from its CA, with `policy` if given.
    async fn start(test: &str, policy: Option<&str>) -> Mtls {
        let ca = Ca::new("test CA");
        let dir = tls::temp_dir(test);
        let mut config = tls::tls_config(&dir, &ca.server(), Some(&ca.pem));
        config.security.authz_policy = policy.map(|p| tls::write(&dir, "policy.toml", p));
        let gateway = tls::start(config).await;
        Mtls { gateway, ca, dir }
    }

    async fn channel_as(&self, name: Name) -> Channel {
        let client = self.ca.client(&name);
        tls::channel(&self.gateway, &self.ca.pem, Some(&client))
            .await
            .expect("mTLS connect")
    }

    async fn stop(self) {
        self.gateway.shutdown().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// === TLS and mTLS ===

#[tokio::test]
async fn plaintext_to_the_tls_port_fails_and_tls_works() {
    let ca = Ca::new("test CA");
    let dir = tls::temp_dir("plaintext");
    let gateway = tls::start(tls::tls_config(&dir, &ca.server(), None)).await;
    let plaintext = tonic::transport::Endpoint::from_shared(format!("http://{}", gateway.addr()))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5))
        .connect()
        .await;
    let outcome = probe(plaintext).await;
    // Plaintext HTTP/2 to a TLS port: the gateway's TLS side hangs up (what a client sees is a
    // closed connection or an h2 protocol error, never an answer).
    let refused = outcome.expect_err("plaintext got an answer");
    assert!(
        [
            "broken pipe",
            "connection reset",
            "frame with invalid size",
            "unexpected end of file",
            "closed"
        ]
        .iter()
        .any(|why| refused.contains(why)),
        "{refused}"
    );
    let tls_outcome = probe(tls::channel(&gateway, &ca.pem, None).await).await;
    assert_eq!(tls_outcome, Ok(tonic_health::ServingStatus::Serving as i32));
    gateway.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn with_mtls_a_client_without_a_certificate_is_refused() {
    let mtls = Mtls::start("no-client-cert", None).await;
    let outcome = probe(tls::channel(&mtls.gateway, &mtls.ca.pem, None).await).await;
    let refused = outcome.expect_err("no certificate got an answer");
    assert!(refused.contains("CertificateRequired"), "{refused}");
    let with_cert = probe(Ok(mtls.channel_as(Name::Cn("svc".into())).await)).await;
    assert_eq!(with_cert, Ok(tonic_health::ServingStatus::Serving as i32));
    mtls.stop().await;
}

#[tokio::test]
async fn with_mtls_a_certificate_from_another_ca_is_refused() {
    let mtls = Mtls::start("other-ca", None).await;
    let stranger = Ca::new("another CA").client(&Name::Spiffe(CHECKOUT.into()));
    let outcome = probe(tls::channel(&mtls.gateway, &mtls.ca.pem, Some(&stranger)).await).await;
    let refused = outcome.expect_err("a foreign certificate got an answer");
    assert!(refused.contains("UnknownCA"), "{refused}");
    mtls.stop().await;
}

#[tokio::test]
async fn the_caller_is_the_spiffe_uri_san_else_the_first_dns_san_else_the_cn() {
    let mtls = Mtls::start("identity", Some(DENY_ALL)).await;
    let spiffe = mtls.channel_as(Name::Spiffe(CHECKOUT.into())).await;
    assert_eq!(seen_caller(spiffe).await, CHECKOUT);
    let dns = mtls
        .channel_as(Name::Dns("payments.example.test".into()))
        .await;
    assert_eq!(seen_caller(dns).await, "dns:payments.example.test");
    let cn = mtls.channel_as(Name::Cn("legacy-batch".into())).await;
    assert_eq!(seen_caller(cn).await, "cn:legacy-batch");
    mtls.stop().await;
}

#[tokio::test]
async fn a_common_name_that_looks_like_a_spiffe_id_matches_no_uri_rule() {
    let mtls = Mtls::start("cn-spiffe", Some(POLICY)).await;
    // Positive control: the URI SAN is checkout, which may list.
    let checkout = mtls.channel_as(Name::Spiffe(CHECKOUT.into())).await;
    list_locations(checkout)
        .await
        .expect("checkout by its URI SAN may list");
    // A certificate with no SAN whose CN spells checkout's SPIFFE ID is not checkout.
    let forged = mtls.channel_as(Name::Cn(CHECKOUT.into())).await;
    let status = list_locations(forged)
        .await
        .expect_err("a CN never passes for a URI");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let info = common::error_info(&status);
    assert_eq!(info.reason, "CALLER_NOT_ALLOWED");
    assert_eq!(info.metadata["caller"], format!("cn:{CHECKOUT}"));
    mtls.stop().await;
}

// === the policy ===

#[tokio::test]
async fn the_policy_allows_and_denies_per_method_with_one_error_info() {
    let mtls = Mtls::start("policy", Some(POLICY)).await;
    let checkout = mtls.channel_as(Name::Spiffe(CHECKOUT.into())).await;
    let ops = mtls.channel_as(Name::Spiffe(OPS.into())).await;

    // Allowed: a listed method and a Service/* method.
    let location = list_locations(checkout.clone())
        .await
        .expect("checkout may list locations")
        .cash_locations
        .into_iter()
        .next()
        .expect("a location");
    let created = CashInServiceClient::new(checkout.clone())
        .create_cash_in(with_key(
            common::create_request(&location, "cst_policy1"),
            "policy-key-1",
        ))
        .await
        .expect("checkout may create")
        .into_inner()
        .cash_in
        .expect("cash_in");

    // Denied: a method no rule gives checkout.
    let status = SandboxServiceClient::new(checkout.clone())
        .expire_cash_in(pb::ExpireCashInRequest {
            cash_in_id: created.id.clone(),
        })
        .await
        .expect_err("checkout may not drive the sandbox");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let info = common::error_info(&status);
    assert_eq!(
        (info.reason.as_str(), info.domain.as_str()),
        ("CALLER_NOT_ALLOWED", "oms-gateway")
    );
    assert_eq!(info.metadata["caller"], CHECKOUT);
    assert_eq!(
        info.metadata["method"],
        "polygon.oms.v1.SandboxService/ExpireCashIn"
    );
    assert!(status.message().contains(CHECKOUT), "{}", status.message());

    // Ops (by prefix) may use the sandbox but not CashInService.
    SandboxServiceClient::new(ops.clone())
        .expire_cash_in(pb::ExpireCashInRequest {
            cash_in_id: created.id.clone(),
        })
        .await
        .expect("ops may drive the sandbox");
    let status = CashInServiceClient::new(ops.clone())
        .get_cash_in(pb::GetCashInRequest {
            cash_in_id: created.id.clone(),
        })
        .await
        .expect_err("ops may not read cash-ins");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(
        common::error_info(&status).metadata["method"],
        "polygon.oms.v1.CashInService/GetCashIn"
    );

    // Reflection follows the policy: ops (grpc.reflection.*) may, checkout may not.
    use tonic_reflection::pb::v1alpha::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest,
    };
    let list = || ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = ServerReflectionClient::new(ops.clone())
        .server_reflection_info(tokio_stream::iter([list()]))
        .await
        .expect("ops may reflect")
        .into_inner();
    assert!(stream.message().await.expect("reflection answer").is_some());
    let denied = ServerReflectionClient::new(checkout.clone())
        .server_reflection_info(tokio_stream::iter([list()]))
        .await;
    let status = match denied {
        Err(status) => status,
        Ok(response) => response
            .into_inner()
            .message()
            .await
            .expect_err("checkout may not reflect"),
    };
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    // Health is always open, even to a caller the policy gives nothing.
    let stranger = mtls.channel_as(Name::Cn("nobody-allowed".into())).await;
    assert_eq!(
        health_check(stranger).await.expect("health is open"),
        tonic_health::ServingStatus::Serving as i32
    );
    mtls.stop().await;
}

#[tokio::test]
async fn an_edited_policy_is_picked_up_without_a_restart() {
    let mtls = Mtls::start("policy-reload", Some(DENY_ALL)).await;
    let checkout = mtls.channel_as(Name::Spiffe(CHECKOUT.into())).await;
    assert_eq!(seen_caller(checkout.clone()).await, CHECKOUT);
    tls::write(&mtls.dir, "policy.toml", POLICY);
    common::eventually(Duration::from_secs(5), "the new policy", || {
        let channel = checkout.clone();
        async move { list_locations(channel).await.is_ok() }
    })
    .await;
    // A broken edit keeps the last good policy: once the reloader has tried it and said so.
    common::logs::capture("info", common::logs::Format::Json);
    let path = tls::write(&mtls.dir, "policy.toml", "[[allow]\ncallers = [");
    let path = path.display().to_string();
    common::eventually(
        Duration::from_secs(10),
        "the failed reload's log line",
        async || {
            common::logs::captured()
                .lines()
                .any(|line| line.contains("reload failed") && line.contains(&path))
        },
    )
    .await;
    list_locations(checkout.clone())
        .await
        .expect("the last good policy still applies");
    mtls.stop().await;
}

// Before: a policy file that could not be read was reloaded as empty, which parses as deny-all
// (logged as "reloaded"): a Secret or ConfigMap mount that went away denied every caller.
#[tokio::test]
async fn a_deleted_policy_file_keeps_the_last_good_policy_and_logs_an_error() {
    common::logs::capture("info", Format::Json);
    let mtls = Mtls::start("policy-deleted", Some(POLICY)).await;
    let checkout = mtls.channel_as(Name::Spiffe(CHECKOUT.into())).await;
    list_locations(checkout.clone())
        .await
        .expect("the policy allows checkout");
    let path = mtls.dir.join("policy.toml");
    std::fs::remove_file(&path).expect("delete the policy");
    let shown = path.display().to_string();
    let unreadable = |line: &serde_json::Value| {
        line["level"] == "ERROR"
            && line.to_string().contains("authorization policy")
            && line.to_string().contains(&shown)
    };
    common::eventually(
        Duration::from_secs(5),
        "an error naming the file",
        async || {
            common::logs::captured()
                .lines()
                .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
                .any(|line| unreadable(&line))
        },
    )
    .await;
    // Several reload intervals later, still the last good policy.
    tokio::time::sleep(Duration::from_millis(500)).await;
    list_locations(checkout.clone())
        .await
        .expect("the last good policy still allows checkout");
    mtls.stop().await;
}

#[tokio::test]
async fn a_policy_that_does_not_parse_refuses_to_start_naming_the_line() {
    let dir = tls::temp_dir("bad-policy");
    let mut config = common::test_config();
    config.security.authz_policy = Some(tls::write(
        &dir,
        "policy.toml",
        "[[allow]]\ncallers = [\"a\"]\nmethods = \"polygon.oms.v1.CashInService/*\"\n",
    ));
    let err = server::start(config)
        .await
        .err()
        .expect("a broken policy refuses to start")
        .to_string();
    assert!(
        err.contains("policy.toml") && err.contains("line 3"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

// === the mesh header, and x-caller-id ===

async fn plain_gateway(
    header: Option<oms_gateway::config::IdentityHeader>,
    dir: &std::path::Path,
) -> (server::RunningGateway, Channel) {
    let mut config = common::test_config();
    config.security.caller_identity_header = header;
    config.security.authz_policy = Some(tls::write(dir, "policy.toml", POLICY));
    let gateway = tls::start(config).await;
    let channel = common::connect(gateway.addr()).await;
    (gateway, channel)
}

fn with_header<T>(message: T, name: &'static str, value: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert(name, value.parse().expect("ASCII header"));
    request
}

#[tokio::test]
async fn the_identity_header_is_honoured_only_when_configured() {
    use oms_gateway::config::IdentityHeader;
    let dir = tls::temp_dir("identity-header");
    let xfcc = format!(
        "By=spiffe://test.local/ns/gw/sa/gw;Hash=1;URI={OPS},By=spiffe://test.local/ns/gw/sa/gw;Hash=2;Subject=\"CN=x, O=y\";URI={CHECKOUT}"
    );

    // Envoy/Istio: the URI of the last XFCC element is the caller.
    let (gateway, channel) = plain_gateway(Some(IdentityHeader::ForwardedClientCert), &dir).await;
    let mut locations = CashLocationServiceClient::new(channel.clone());
    locations
        .list_cash_locations(with_header(
            common::guide_point(),
            "x-forwarded-client-cert",
            &xfcc,
        ))
        .await
        .expect("the last element is checkout, which may list");
    let status = locations
        .list_cash_locations(common::guide_point())
        .await
        .expect_err("no header, no identity");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(common::error_info(&status).reason, "CALLER_UNAUTHENTICATED");
    // Another mesh's header is not this one.
    let status = locations
        .list_cash_locations(with_header(
            common::guide_point(),
            "l5d-client-id",
            CHECKOUT,
        ))
        .await
        .expect_err("l5d-client-id is not the configured header");
    assert_eq!(status.code(), Code::Unauthenticated);
    gateway.shutdown().await;

    // Linkerd: l5d-client-id is the caller.
    let (gateway, channel) = plain_gateway(Some(IdentityHeader::LinkerdClientId), &dir).await;
    CashLocationServiceClient::new(channel)
        .list_cash_locations(with_header(
            common::guide_point(),
            "l5d-client-id",
            CHECKOUT,
        ))
        .await
        .expect("l5d-client-id names checkout");
    gateway.shutdown().await;

    // Not configured: neither header (nor x-caller-id) identifies anyone.
    let (gateway, channel) = plain_gateway(None, &dir).await;
    let mut locations = CashLocationServiceClient::new(channel);
    for (name, value) in [
        ("x-forwarded-client-cert", xfcc.as_str()),
        ("l5d-client-id", CHECKOUT),
        ("x-caller-id", CHECKOUT),
    ] {
        let status = locations
            .list_cash_locations(with_header(common::guide_point(), name, value))
            .await
            .expect_err("an unconfigured header is not an identity");
        assert_eq!(status.code(), Code::Unauthenticated, "{name}: {status:?}");
        assert_eq!(common::error_info(&status).reason, "CALLER_UNAUTHENTICATED");
    }
    gateway.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn an_xfcc_prefix_with_an_open_quote_cannot_swallow_the_sidecars_element() {
    use oms_gateway::config::IdentityHeader;
    let dir = tls::temp_dir("xfcc-forged");
    let (gateway, channel) = plain_gateway(Some(IdentityHeader::ForwardedClientCert), &dir).await;
    let mut locations = CashLocationServiceClient::new(channel.clone());
    // What an Envoy sidecar in APPEND_FORWARD mode appends for the real caller, the attacker.
    let sidecar =
        "By=spiffe://test.local/ns/gw/sa/gw;Hash=2;URI=spiffe://test.local/ns/attacker/sa/attacker";

    // Positive control: a well-formed prefix naming checkout does not make the caller checkout.
    let honest_prefix = format!("URI={CHECKOUT},{sidecar}");
    let status = locations
        .list_cash_locations(with_header(
            common::guide_point(),
            "x-forwarded-client-cert",
            &honest_prefix,
        ))
        .await
        .expect_err("the attacker may not list");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(
        common::error_info(&status).metadata["caller"],
        "spiffe://test.local/ns/attacker/sa/attacker"
    );

    // The forgery: an unterminated quote meant to hide the sidecar's element.
    let forged = format!("URI={CHECKOUT};Subject=\",{sidecar}");
    let status = locations
        .list_cash_locations(with_header(
            common::guide_point(),
            "x-forwarded-client-cert",
            &forged,
        ))
        .await
        .expect_err("a header that does not parse is no identity");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(common::error_info(&status).reason, "CALLER_UNAUTHENTICATED");
    let location = pb::CashLocation {
        id: "loc_forged".into(),
        loc_reference: "UkVG".into(),
        ..Default::default()
    };
    let mut create = common::create_request(&location, "cst_forged");
    create.idempotency_key = "forged-key-1".into();
    let status = CashInServiceClient::new(channel.clone())
        .create_cash_in(with_header(create, "x-forwarded-client-cert", &forged))
        .await
        .expect_err("no create as checkout");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    // Two headers are ambiguous: which one did the sidecar set?
    let mut twice = with_header(
        common::guide_point(),
        "x-forwarded-client-cert",
        &format!("URI={CHECKOUT}"),
    );
    twice
        .metadata_mut()
        .append("x-forwarded-client-cert", sidecar.parse().expect("ASCII"));
    let status = locations
        .list_cash_locations(twice)
        .await
        .expect_err("two identity headers are no identity");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    gateway.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn x_caller_id_is_ignored_for_identity_and_for_idempotency() {
    // Under mTLS the certificate names the caller, whatever x-caller-id says.
    let mtls = Mtls::start("x-caller-id", Some(DENY_ALL)).await;
    let channel = mtls.channel_as(Name::Cn("real-caller".into())).await;
    let status = CashLocationServiceClient::new(channel)
        .list_cash_locations(with_header(common::guide_point(), "x-caller-id", CHECKOUT))
        .await
        .expect_err("denied");
    assert_eq!(
        common::error_info(&status).metadata["caller"],
        "cn:real-caller"
    );
    mtls.stop().await;

    // On loopback dev mode, two "callers" by x-caller-id share one key space: it scopes nothing.
    let gateway = common::start().await;
    let location = common::first_location(&gateway.channel).await;
    let mut ids = Vec::new();
    for claimed in ["svc-a", "svc-b"] {
        let mut request = with_key(common::create_request(&location, "cst_xcid"), "xcid-key");
        request
            .metadata_mut()
            .insert("x-caller-id", claimed.parse().unwrap());
        let created = gateway
            .cash_ins()
            .create_cash_in(request)
            .await
            .expect("create")
            .into_inner()
            .cash_in
            .expect("cash_in");
        ids.push(created.id);
    }
    assert_eq!(ids[0], ids[1], "x-caller-id did not split the key space");
    assert_eq!(gateway.sandbox().cash_in_count(), 1);
    gateway.gateway.shutdown().await;
}

// === idempotency per authenticated caller ===

#[tokio::test]
async fn two_callers_with_the_same_key_get_two_cash_ins_and_neither_replays_the_others() {
    let mtls = Mtls::start("two-callers", None).await;
    let a = mtls
        .channel_as(Name::Spiffe("spiffe://test.local/ns/a/sa/a".into()))
        .await;
    let b = mtls
        .channel_as(Name::Spiffe("spiffe://test.local/ns/b/sa/b".into()))
        .await;
    let location = common::first_location(&a).await;
    let request = common::create_request(&location, "cst_twocallers");
    let create = |channel: Channel| {
        let request = request.clone();
        async move {
            CashInServiceClient::new(channel)
                .create_cash_in(with_key(request, "shared-key-1"))
                .await
                .expect("create")
                .into_inner()
                .cash_in
                .expect("cash_in")
        }
    };
    // Concurrently, so neither can share the other's in-flight call either.
    let (first_a, first_b) = tokio::join!(create(a.clone()), create(b.clone()));
    assert_ne!(first_a.id, first_b.id, "two callers, two cash-ins");
    let (again_a, again_b) = tokio::join!(create(a.clone()), create(b.clone()));
    assert_eq!(again_a.id, first_a.id, "a replays its own");
    assert_eq!(again_b.id, first_b.id, "b replays its own");
    mtls.stop().await;
}

// Before: the key OMS received was `12:zoë-payments:{key}`, not ASCII, which OMS refuses with
// 400 (a final outcome, stored), so this caller could never create a cash-in.
#[tokio::test]
async fn a_caller_named_in_utf8_creates_a_cash_in_and_oms_gets_a_printable_ascii_key() {
    let mtls = Mtls::start("utf8-caller", None).await;
    let zoe = mtls.channel_as(Name::Cn("zoë-payments".into())).await;
    let location = common::first_location(&zoe).await;
    let request = common::create_request(&location, "cst_utf8_caller");
    let create = || {
        let (channel, request) = (zoe.clone(), request.clone());
        async move {
            CashInServiceClient::new(channel)
                .create_cash_in(with_key(request, "order-1"))
                .await
        }
    };
    let response = create().await.expect("CreateCashIn for a UTF-8 caller");
    let sent = response
        .metadata()
        .get("oms-idempotency-key")
        .expect("oms-idempotency-key")
        .to_str()
        .expect("ASCII metadata")
        .to_owned();
    assert!(
        !sent.is_empty() && sent.bytes().all(|b| (0x20..=0x7e).contains(&b)),
        "{sent:?}"
    );
    let created = response.into_inner().cash_in.expect("cash_in");
    let again = create().await.expect("the same key again");
    assert_eq!(again.into_inner().cash_in.expect("cash_in").id, created.id);
    let sandbox = mtls.gateway.sandbox().expect("the embedded sandbox");
    assert_eq!(
        api_post_key(sandbox, "/cash-ins"),
        sent,
        "what OMS received"
    );
    mtls.stop().await;
}

// === certificate rotation ===

#[tokio::test]
async fn a_rotated_certificate_is_served_to_new_connections_while_a_watch_stream_stays_open() {
    let old_ca = Ca::new("old CA");
    let dir = tls::temp_dir("rotation");
    let gateway = tls::start(tls::tls_config(&dir, &old_ca.server(), None)).await;
    let old_channel = tls::channel(&gateway, &old_ca.pem, None)
        .await
        .expect("TLS");
    let location = common::first_location(&old_channel).await;
    let created = CashInServiceClient::new(old_channel.clone())
        .create_cash_in(with_key(
            common::create_request(&location, "cst_rotation"),
            "rotation-key",
        ))
        .await
        .expect("create")
        .into_inner()
        .cash_in
        .expect("cash_in");
    let mut watch = CashInServiceClient::new(old_channel.clone())
        .watch_cash_in(pb::WatchCashInRequest {
            cash_in_id: created.id.clone(),
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("the current state at once")
        .expect("an event")
        .expect("an event");
    assert_eq!(first.cash_in.expect("cash_in").id, created.id);

    // Renew the certificate in place, from another CA, so the client can tell which it got.
    let new_ca = Ca::new("new CA");
    let renewed = new_ca.server();
    tls::write(&dir, "server-key.pem", &renewed.key);
    tls::write(&dir, "server.pem", &renewed.cert);
    common::eventually(Duration::from_secs(5), "the renewed certificate", || {
        let (gateway_addr, ca) = (gateway.addr(), new_ca.pem.clone());
        async move { connect_and_check(gateway_addr, &ca).await.is_ok() }
    })
    .await;
    assert!(
        connect_and_check(gateway.addr(), &old_ca.pem)
            .await
            .is_err(),
        "new connections get the renewed certificate only"
    );

    // The stream opened before the rotation still delivers: expire the cash-in, see it.
    SandboxServiceClient::new(old_channel.clone())
        .expire_cash_in(pb::ExpireCashInRequest {
            cash_in_id: created.id.clone(),
        })
        .await
        .expect("expire over the old connection");
    let expired = loop {
        let event = tokio::time::timeout(Duration::from_secs(10), watch.message())
            .await
            .expect("an event after the rotation")
            .expect("the stream is still open")
            .expect("an event");
        if let Some(cash_in) = event.cash_in
            && cash_in.status == pb::CashInStatus::Expired as i32
        {
            break cash_in;
        }
    };
    assert_eq!(expired.id, created.id);
    gateway.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

async fn connect_and_check(addr: SocketAddr, ca_pem: &str) -> Result<i32, String> {
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await;
    probe(channel).await
}

// === safe defaults ===

#[tokio::test]
async fn a_non_loopback_listen_without_authentication_refuses_to_start_naming_the_flags() {
    let mut config = common::test_config();
    config.listen = SocketAddr::from(([0, 0, 0, 0], 0));
    let err = server::start(config.clone())
        .await
        .err()
        .expect("refuses to start")
        .to_string();
    println!("{err}");
    for flag in [
        "--tls-client-ca",
        "--caller-identity-header",
        "--insecure-allow-unauthenticated",
    ] {
        assert!(err.contains(flag), "{flag} not named in: {err}");
    }
    assert!(err.contains("0.0.0.0"), "{err}");

    // Explicitly accepted: it starts (and warns). With no OMS settings beyond loopback, the
    // embedded sandbox too must be asked for.
    config.security.insecure_allow_unauthenticated = true;
    config.serve_sandbox = true;
    let gateway = server::start(config).await.expect("starts when told to");
    gateway.shutdown().await;
}

// === audit ===

#[tokio::test]
async fn audit_lines_record_each_mutation_and_refusal_without_a_secret() {
    common::logs::capture("info", Format::Json);
    let secret = format!("audit-secret-{}", uuid::Uuid::new_v4().simple());
    let sandbox = common::start_remote_sandbox(&secret).await;
    let ca = Ca::new("audit CA");
    let dir = tls::temp_dir("audit");
    let mut config = tls::tls_config(&dir, &ca.server(), Some(&ca.pem));
    config.oms_base_url = Some(sandbox.base_url());
    config.oms_api_key = Some(oms_gateway::config::Secret::new(common::REMOTE_API_KEY));
    config.oms_api_secret = Some(oms_gateway::config::Secret::new(&secret));
    config.security.authz_policy = Some(tls::write(&dir, "policy.toml", POLICY));
    let gateway = tls::start(config).await;
    let checkout = tls::channel(
        &gateway,
        &ca.pem,
        Some(&ca.client(&Name::Spiffe(CHECKOUT.into()))),
    )
    .await
    .expect("mTLS");
    let location = common::first_location(&checkout).await;
    let created = CashInServiceClient::new(checkout.clone())
        .create_cash_in(with_key(
            common::create_request(&location, "cst_audit1"),
            "audit-key-1",
        ))
        .await
        .expect("create")
        .into_inner()
        .cash_in
        .expect("cash_in");
    let refreshed = CashInServiceClient::new(checkout.clone())
        .refresh_cash_in(pb::RefreshCashInRequest {
            cash_in_id: created.id.clone(),
            idempotency_key: "audit-key-2".into(),
        })
        .await
        .expect("refresh")
        .into_inner()
        .cash_in
        .expect("cash_in");
    let _ = SandboxServiceClient::new(checkout.clone())
        .expire_cash_in(pb::ExpireCashInRequest {
            cash_in_id: created.id.clone(),
        })
        .await
        .expect_err("denied");

    let lines = audit_lines();
    let create = lines
        .iter()
        .find(|l| l["fields"]["idempotency_key"] == "audit-key-1")
        .unwrap_or_else(|| panic!("an audit line for the create in {lines:#?}"));
    println!("{create}");
    let fields = &create["fields"];
    assert_eq!(fields["caller"], CHECKOUT);
    assert_eq!(
        fields["method"],
        "polygon.oms.v1.CashInService/CreateCashIn"
    );
    assert_eq!(fields["cash_in_id"], created.id.as_str());
    assert_eq!(fields["customer_id"], "cst_audit1");
    assert_eq!(fields["outcome"], "OK");
    let oms_key = api_post_key(&sandbox, "/cash-ins");
    assert_eq!(fields["oms_idempotency_key"], oms_key.as_str());
    assert!(create["timestamp"].is_string());
    let request_id = fields["upstream_request_id"].as_str().unwrap_or_default();
    assert!(
        !request_id.is_empty(),
        "OMS's x-request-id of the POST: {create}"
    );

    let refresh = lines
        .iter()
        .find(|l| l["fields"]["idempotency_key"] == "audit-key-2")
        .expect("an audit line for the refresh");
    assert_eq!(
        refresh["fields"]["method"],
        "polygon.oms.v1.CashInService/RefreshCashIn"
    );
    assert_eq!(refresh["fields"]["cash_in_id"], created.id.as_str());
    assert_eq!(refresh["fields"]["customer_id"], "cst_audit1");

    let denied = lines
        .iter()
        .find(|l| {
            l["fields"]["method"] == "polygon.oms.v1.SandboxService/ExpireCashIn"
                && l["fields"]["outcome"] == "PERMISSION_DENIED"
        })
        .expect("an audit line for the refusal");
    assert_eq!(denied["fields"]["caller"], CHECKOUT);

    // No secret, bearer token or deposit code in any audit line.
    let all = serde_json::to_string(&lines).unwrap();
    let bearers: Vec<String> = sandbox
        .journal()
        .into_iter()
        .filter_map(|r| r.authorization)
        .collect();
    assert!(!bearers.is_empty());
    let mut forbidden = vec![secret.clone()];
    forbidden.extend(bearers);
    for cash_in in [&created, &refreshed] {
        let code = &cash_in
            .deposit_instructions
            .as_ref()
            .expect("instructions")
            .code;
        assert!(!code.is_empty());
        forbidden.push(code.clone());
    }
    for needle in &forbidden {
        let bare = needle.trim_start_matches("Bearer ");
        assert!(
            !all.contains(bare),
            "an audit line carries a secret or a code"
        );
    }
    gateway.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

fn api_post_key(sandbox: &oms_sandbox::SandboxHandle, path: &str) -> String {
    sandbox
        .journal()
        .into_iter()
        .find(|r| r.method == "POST" && r.path == path)
        .and_then(|r| r.idempotency_key)
        .expect("the POST carried an Idempotency-Key")
}

// === secrets from files ===

#[tokio::test]
async fn a_renewed_secret_file_is_used_by_the_next_token_exchange() {
    let secret = format!("file-secret-{}", uuid::Uuid::new_v4().simple());
    let sandbox = common::start_remote_sandbox(&secret).await;
    let dir = tls::temp_dir("secret-file");
    let mut config = common::remote_config(&sandbox.base_url(), common::REMOTE_API_KEY, "unused");
    config.oms_api_secret = None;
    config.oms_api_key = None;
    config.oms_api_key_file = Some(tls::write(
        &dir,
        "api-key",
        &format!("{}\n", common::REMOTE_API_KEY),
    ));
    config.oms_api_secret_file = Some(tls::write(&dir, "api-secret", "not-yet-the-secret\n"));
    config.security.reload_interval = Duration::from_millis(100);
    let gateway = server::start(config).await.expect("starts");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(gateway.token_exchanges(), 0, "the wrong secret is refused");

    tls::write(&dir, "api-secret", &format!("{secret}\n"));
    common::eventually(
        Duration::from_secs(20),
        "an exchange with the new secret",
        async || gateway.token_exchanges() > 0,
    )
    .await;
    gateway.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

// === the listener ===

#[tokio::test]
async fn a_silent_client_holds_up_no_one_and_is_dropped_after_the_handshake_timeout() {
    use tokio::io::AsyncReadExt;
    let ca = Ca::new("test CA");
    let dir = tls::temp_dir("handshake-timeout");
    let mut config = tls::tls_config(&dir, &ca.server(), None);
    config.security.handshake_timeout = Duration::from_secs(3);
    let gateway = tls::start(config).await;
    let mut silent = tokio::net::TcpStream::connect(gateway.addr())
        .await
        .expect("TCP connect");
    // Another client connects and is answered while the silent one still sits in its handshake
    // (its connection is still open afterwards: nothing to read, no end of stream).
    let answered = probe(tls::channel(&gateway, &ca.pem, None).await).await;
    assert_eq!(answered, Ok(tonic_health::ServingStatus::Serving as i32));
    let mut buf = [0u8; 16];
    assert!(
        matches!(silent.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the silent connection was still in its handshake when the other client was answered"
    );
    // The silent one is disconnected once its handshake time is up.
    let read = tokio::time::timeout(Duration::from_secs(15), silent.read(&mut buf))
        .await
        .expect("the gateway closes the silent connection");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    gateway.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn tls_handshakes_in_progress_are_bounded_and_new_connections_wait_for_a_slot() {
    let ca = Ca::new("test CA");
    let dir = tls::temp_dir("max-handshakes");
    let mut config = tls::tls_config(&dir, &ca.server(), None);
    config.security.handshake_timeout = Duration::from_secs(3);
    config.security.max_handshakes = 4;
    let gateway = tls::start(config).await;
    // Positive control: below the bound, a client is answered.
    let answered = probe(tls::channel(&gateway, &ca.pem, None).await).await;
    assert_eq!(answered, Ok(tonic_health::ServingStatus::Serving as i32));
    // Four connections that never speak take every handshake slot...
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(
            tokio::net::TcpStream::connect(gateway.addr())
                .await
                .expect("TCP connect"),
        );
    }
    // ...so a fifth client's handshake does not start while they hold them...
    let waiting = tokio::time::timeout(
        Duration::from_millis(1500),
        tls::channel(&gateway, &ca.pem, None),
    )
    .await;
    assert!(
        waiting.is_err() || waiting.as_ref().is_ok_and(|c| c.is_err()),
        "a handshake past the bound was served at once"
    );
    // ...and is served once their handshake time is up.
    let answered = probe(tls::channel(&gateway, &ca.pem, None).await).await;
    assert_eq!(answered, Ok(tonic_health::ServingStatus::Serving as i32));
    drop(silent);
    gateway.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn the_tls_listener_speaks_only_h2_over_tls_1_2_or_later() {
    use tokio_rustls::rustls::{self, pki_types::pem::PemObject};
    let ca = Ca::new("test CA");
    let dir = tls::temp_dir("alpn");
    let gateway = tls::start(tls::tls_config(&dir, &ca.server(), None)).await;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(ca.pem.as_bytes()).unwrap())
        .unwrap();
    let handshake =
        |alpn: Vec<Vec<u8>>, versions: &'static [&'static rustls::SupportedProtocolVersion]| {
            let roots = roots.clone();
            let addr = gateway.addr();
            async move {
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let mut config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_protocol_versions(versions)
                    .unwrap()
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                config.alpn_protocols = alpn;
                let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                tokio_rustls::TlsConnector::from(Arc::new(config))
                    .connect(name, tcp)
                    .await
                    .map(|tls| tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec))
            }
        };
    static TLS13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
    static TLS12: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];
    let h2 = handshake(vec![b"h2".to_vec()], TLS13).await;
    assert_eq!(h2.expect("h2 over TLS 1.3"), Some(b"h2".to_vec()));
    let h2_tls12 = handshake(vec![b"h2".to_vec()], TLS12).await;
    assert_eq!(h2_tls12.expect("h2 over TLS 1.2"), Some(b"h2".to_vec()));
    let http1 = handshake(vec![b"http/1.1".to_vec()], TLS13).await;
    assert!(http1.is_err(), "HTTP/1.1-only ALPN is refused: {http1:?}");
    gateway.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
