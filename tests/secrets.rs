//! The OMS API secret and the bearer token never reach a caller, a Debug print or a log line.
//!
//! The gateway runs "remote-style" against a separately started sandbox whose secret the test
//! chose, so the test knows every secret in play: the API secret, and each bearer token (read
//! from the sandbox's journal). The failures most likely to carry them are provoked (credentials
//! refused, tokens revoked, upstream errors of every kind), and every status (message, details,
//! metadata), Debug print and log line of this test binary is searched for them.

mod common;

use common::logs::Format;
use oms_gateway::proto::v1 as pb;
use oms_sandbox::{Fault, SandboxHandle};
use tonic::Status;

// === helpers ===

/// A secret that cannot appear anywhere by accident.
fn fresh_secret() -> String {
    format!("sec_{}", uuid::Uuid::new_v4().simple())
}

/// Every bearer token the gateway sent to `sandbox`.
fn bearer_tokens(sandbox: &SandboxHandle) -> Vec<String> {
    let mut tokens: Vec<String> = sandbox
        .journal()
        .into_iter()
        .filter_map(|r| r.authorization)
        .filter_map(|a| a.strip_prefix("Bearer ").map(str::to_owned))
        .collect();
    tokens.sort();
    tokens.dedup();
    tokens
}

/// Everything a caller can read from a status.
fn visible(status: &Status) -> String {
    let metadata: Vec<String> = status
        .metadata()
        .iter()
        .map(|entry| format!("{entry:?}"))
        .collect();
    format!(
        "{} {:?} {} {:?}",
        status.message(),
        status.details(),
        String::from_utf8_lossy(status.details()),
        metadata
    )
}

fn assert_clean(what: &str, text: &str, secrets: &[String]) {
    for secret in secrets {
        assert!(
            !text.contains(secret.as_str()),
            "{what} shows a secret ({secret}): {text}"
        );
    }
}

// === tests ===

#[tokio::test]
async fn the_api_secret_never_appears_in_a_debug_print_of_the_config_or_gateway() {
    let secret = fresh_secret();
    let sandbox = common::start_remote_sandbox(&secret).await;
    let config = common::remote_config(&sandbox.base_url(), common::REMOTE_API_KEY, &secret);
    assert_clean(
        "the config's Debug",
        &format!("{config:?}"),
        std::slice::from_ref(&secret),
    );
    assert_clean(
        "the config's Debug",
        &format!("{config:#?}"),
        std::slice::from_ref(&secret),
    );
    let gateway = common::start_with(config).await;
    common::create_cash_in(&gateway, "cst_secret_debug").await;
    let mut secrets = bearer_tokens(&sandbox);
    assert!(!secrets.is_empty());
    secrets.push(secret);
    // The watch hub holds the REST client, its token source and the cached token.
    let hub = format!("{:?}", gateway.gateway.watch_hub());
    assert_clean("the watch hub's Debug", &hub, &secrets);
    assert_clean(
        "the sandbox handle's Debug",
        &format!("{sandbox:?}"),
        &secrets,
    );
    gateway.gateway.shutdown().await;
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_refused_api_secret_never_appears_in_the_status_or_logs() {
    common::logs::capture("trace", Format::Text);
    let right = fresh_secret();
    let wrong = fresh_secret();
    let sandbox = common::start_remote_sandbox(&right).await;
    let config = common::remote_config(&sandbox.base_url(), common::REMOTE_API_KEY, &wrong);
    let gateway = common::start_unchecked(config).await;
    let status = gateway
        .locations()
        .list_cash_locations(common::guide_point())
        .await
        .expect_err("the secret is refused");
    assert_eq!(common::error_info(&status).reason, "UPSTREAM_AUTH_FAILED");
    let secrets = [right, wrong];
    assert_clean("the status", &visible(&status), &secrets);
    gateway.gateway.shutdown().await;
    sandbox.shutdown().await;
    assert_clean("the logs", &common::logs::captured(), &secrets);
}

#[tokio::test]
async fn secrets_and_tokens_never_appear_in_upstream_error_statuses_or_logs() {
    common::logs::capture("trace", Format::Text);
    let secret = fresh_secret();
    let sandbox = common::start_remote_sandbox(&secret).await;
    let config = common::remote_config(&sandbox.base_url(), common::REMOTE_API_KEY, &secret);
    let gateway = common::start_with(config).await;
    let created = common::create_cash_in(&gateway, "cst_secret_errors").await;

    let mut statuses = Vec::new();
    // A revoked token, then a token refused twice (UPSTREAM_AUTH_FAILED).
    sandbox.revoke_tokens();
    gateway
        .cash_ins()
        .get_cash_in(pb::GetCashInRequest {
            cash_in_id: created.id.clone(),
        })
        .await
        .expect("recovers from the revocation");
    sandbox.inject(Fault::status(Some("GET"), "/cash-locations", 2, 401));
    for code in [400, 403, 404, 409, 422, 429, 500, 502, 503, 504] {
        sandbox.inject(Fault::status(Some("GET"), "/cash-locations", 3, code));
    }
    for _ in 0..11 {
        statuses.push(
            gateway
                .locations()
                .list_cash_locations(common::guide_point())
                .await
                .expect_err("an injected failure"),
        );
    }
    sandbox.clear_faults();
    // Real upstream refusals: unknown cash-in, expired cash-in, a 400 with field details.
    statuses.push(
        gateway
            .cash_ins()
            .get_cash_in(pb::GetCashInRequest {
                cash_in_id: "ci_unknown".into(),
            })
            .await
            .expect_err("404"),
    );
    let location = common::first_location(&gateway.channel).await;
    let mut request = common::create_request(&location, "cst_secret_errors");
    request.source.as_mut().expect("source").indicated_amount = Some("20.00".into());
    request.developer_fees[1].flat_fee = Some("19.00".into());
    statuses.push(
        gateway
            .cash_ins()
            .create_cash_in(request)
            .await
            .expect_err("fees eat the whole amount"),
    );

    let mut secrets = bearer_tokens(&sandbox);
    assert!(
        secrets.len() >= 2,
        "the revocation forced a new token: {secrets:?}"
    );
    secrets.push(secret);
    for status in &statuses {
        common::error_info(status);
        assert_clean("a status", &visible(status), &secrets);
    }
    gateway.gateway.shutdown().await;
    sandbox.shutdown().await;
    assert_clean("the logs", &common::logs::captured(), &secrets);
}

#[tokio::test]
async fn an_upstream_quoting_credentials_back_leaks_them_to_no_caller_and_no_log() {
    common::logs::capture("trace", Format::Text);
    let secret = fresh_secret();
    let sandbox = common::start_remote_sandbox(&secret).await;
    let config = common::remote_config(&sandbox.base_url(), common::REMOTE_API_KEY, &secret);
    let gateway = common::start_with(config).await;
    gateway
        .locations()
        .list_cash_locations(common::guide_point())
        .await
        .expect("ListCashLocations");
    let tokens = bearer_tokens(&sandbox);
    assert_eq!(tokens.len(), 1);
    let secrets = [tokens[0].clone(), secret.clone()];
    // A careless upstream that quotes the request's credentials in its errors: in a body, in
    // field details, in a header, and when refusing a token exchange.
    let quoting = |status: u16, path: &str, method: &str, quoted: &str| {
        common::respond(
            method,
            path,
            1,
            status,
            format!(
                r#"{{"error":{{"code":"forbidden","message":"you sent {quoted}","details":[{{"field":"auth.{quoted}","message":"bad {quoted}"}}]}}}}"#
            ),
            &[("x-request-id", &format!("req_{quoted}"))],
        )
    };
    let both = format!("token {} and apiSecret {}", tokens[0], secret);
    sandbox.inject(quoting(403, "/cash-locations", "GET", &both));
    sandbox.inject(quoting(400, "/cash-locations", "GET", &both));
    let mut statuses = Vec::new();
    for _ in 0..2 {
        statuses.push(
            gateway
                .locations()
                .list_cash_locations(common::guide_point())
                .await
                .expect_err("refused"),
        );
    }
    assert_eq!(statuses[0].code(), tonic::Code::PermissionDenied);
    assert_eq!(statuses[1].code(), tonic::Code::InvalidArgument);
    assert_eq!(common::violations(&statuses[1]).len(), 1);
    // The token is revoked; the fresh exchange is refused with the secret (the only credential
    // an exchange carries) quoted back.
    sandbox.revoke_tokens();
    sandbox.inject(quoting(401, "/auth/token", "POST", &secret));
    statuses.push(
        gateway
            .locations()
            .list_cash_locations(common::guide_point())
            .await
            .expect_err("the exchange is refused"),
    );
    assert_eq!(
        common::error_info(&statuses[2]).reason,
        "UPSTREAM_AUTH_FAILED"
    );
    for status in &statuses {
        assert_clean("the status", &visible(status), &secrets);
    }
    gateway.gateway.shutdown().await;
    sandbox.shutdown().await;
    let logged = common::logs::captured();
    assert!(
        logged.contains("you sent token [redacted] and apiSecret [redacted]"),
        "the upstream's words were logged, redacted"
    );
    assert_clean("the logs", &logged, &secrets);
}

#[tokio::test]
async fn a_whole_run_logs_one_access_line_per_call_and_no_secret_token_or_code() {
    common::logs::capture("trace", Format::Text);
    let secret = fresh_secret();
    let sandbox = common::start_remote_sandbox(&secret).await;
    let config = common::remote_config(&sandbox.base_url(), common::REMOTE_API_KEY, &secret);
    let gateway = common::start_with(config).await;
    let customer = format!("cst_access_{}", uuid::Uuid::new_v4().simple());
    let created = common::create_cash_in(&gateway, &customer).await;
    let mut codes = vec![
        created
            .deposit_instructions
            .as_ref()
            .map(|d| d.code.clone())
            .expect("a deposit code"),
    ];
    // Successes, a refresh (a new code), a revoked token (401, a fresh exchange, the retry), an
    // upstream 503 retried, OMS's 404, our own validation, and a watch stream.
    gateway.get(&created.id).await;
    let refreshed = gateway
        .cash_ins()
        .refresh_cash_in(pb::RefreshCashInRequest {
            cash_in_id: created.id.clone(),
            idempotency_key: "access-refresh-1".into(),
        })
        .await
        .expect("RefreshCashIn")
        .into_inner()
        .cash_in
        .expect("cash_in");
    codes.extend(refreshed.deposit_instructions.map(|d| d.code));
    sandbox.revoke_tokens();
    gateway.get(&created.id).await;
    sandbox.inject(Fault::status(Some("GET"), "/cash-ins", 1, 503));
    gateway
        .cash_ins()
        .list_cash_ins(pb::ListCashInsRequest {
            customer_id: customer.clone(),
            ..Default::default()
        })
        .await
        .expect("ListCashIns after a retry");
    let missing = gateway
        .cash_ins()
        .get_cash_in(pb::GetCashInRequest {
            cash_in_id: "ci_unknown_access".into(),
        })
        .await
        .expect_err("404");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let invalid = gateway
        .cash_ins()
        .get_cash_in(pb::GetCashInRequest {
            cash_in_id: String::new(),
        })
        .await
        .expect_err("no id");
    assert_eq!(invalid.code(), tonic::Code::InvalidArgument);
    let mut watch = gateway
        .cash_ins()
        .watch_cash_in(pb::WatchCashInRequest {
            cash_in_id: created.id.clone(),
        })
        .await
        .expect("WatchCashIn")
        .into_inner();
    watch
        .message()
        .await
        .expect("an event")
        .expect("the initial event");
    drop(watch);
    common::eventually(
        std::time::Duration::from_secs(5),
        "the watch stream to end",
        async || gateway.gateway.watch_hub().streams() == 0,
    )
    .await;
    let mut secrets = bearer_tokens(&sandbox);
    assert!(secrets.len() >= 2, "the revocation forced a fresh exchange");
    secrets.push(secret);
    gateway.gateway.shutdown().await;
    sandbox.shutdown().await;

    let logged = common::logs::captured();
    let access: Vec<&str> = logged
        .lines()
        .filter(|line| line.contains("access: call"))
        .collect();
    let has = |method: &str, rest: &[&str]| {
        access.iter().any(|line| {
            line.contains(&format!("method=\"polygon.oms.v1.{method}\""))
                && rest.iter().all(|part| line.contains(part))
        })
    };
    assert!(
        has(
            "CashInService/CreateCashIn",
            &["code=\"OK\"", "upstream_attempts=1", "latency_ms="]
        ),
        "{access:#?}"
    );
    assert!(
        has("CashInService/RefreshCashIn", &["code=\"OK\""]),
        "{access:#?}"
    );
    assert!(
        has(
            "CashInService/GetCashIn",
            &["code=\"OK\"", "upstream_attempts=2"]
        ),
        "the 401 and its retry: {access:#?}"
    );
    assert!(
        has(
            "CashInService/ListCashIns",
            &["code=\"OK\"", "upstream_attempts=2"]
        ),
        "the 503 and its retry: {access:#?}"
    );
    assert!(
        has("CashInService/GetCashIn", &["code=\"NOT_FOUND\""]),
        "{access:#?}"
    );
    assert!(
        has(
            "CashInService/GetCashIn",
            &["code=\"INVALID_ARGUMENT\"", "upstream_attempts=0"]
        ),
        "{access:#?}"
    );
    assert!(
        has(
            "CashInService/WatchCashIn",
            &["code=\"CANCELLED\"", "grpc_type=\"server_stream\""]
        ),
        "{access:#?}"
    );
    assert_clean("the logs", &logged, &secrets);
    assert_clean("the logs", &logged, &codes);
}
