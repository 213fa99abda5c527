//! The OMS API secret and the bearer token never reach a caller, a Debug print or a log line.
//!
//! The gateway runs "remote-style" against a separately started sandbox whose secret the test
//! chose, so the test knows every secret in play: the API secret, and each bearer token (read
//! from the sandbox's journal). The failures most likely to carry them are provoked (credentials
//! refused, tokens revoked, upstream errors of every kind), and every status (message, details,
//! metadata), Debug print and log line of this test binary is searched for them.
//!
//! The built binary too: every setting that can carry a credential (the OMS URL, key and secret,
//! the Redis and OTLP URLs, the secret files) is set to a value holding a password of its own,
//! by environment and by flag, and `--help`, `--print-config` and the output of a real run are
//! searched for those passwords.

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
            ..Default::default()
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

// === the binary: settings that can carry a credential ===

const BIN: &str = env!("CARGO_BIN_EXE_oms-gateway");

/// `url` (`http://host:port...`) with user information `user:password` written into it.
fn with_password(url: &str, user: &str, password: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    format!("{scheme}://{user}:{password}@{rest}")
}

/// A command for the binary with no OMS or gateway setting inherited from the test's environment.
fn gateway_command() -> std::process::Command {
    let mut command = std::process::Command::new(BIN);
    for (name, _) in std::env::vars() {
        if name.starts_with("OMS_") || name.starts_with("OTEL_") {
            command.env_remove(name);
        }
    }
    command
}

/// What a command printed, stdout and stderr, as one text.
fn output_of(command: &mut std::process::Command) -> String {
    let output = command.output().expect("run the binary");
    assert!(output.status.success(), "{output:?}");
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs the gateway with `command`'s settings until it serves, makes a few calls through it
/// (so it exchanges a token with the upstream using the key and secret), stops it with SIGTERM
/// and returns everything it printed.
async fn a_short_run(mut command: std::process::Command, dir: &std::path::Path) -> String {
    use std::io::BufRead;
    let (out, err) = (dir.join("stdout"), dir.join("stderr"));
    let mut child = command
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args([
            "--log-level",
            "trace",
            "--drain-delay",
            "0s",
            "--shutdown-grace",
            "1s",
        ])
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .spawn()
        .expect("start the gateway");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let line = loop {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        if let Some(line) = text.lines().next().filter(|_| text.contains('\n')) {
            break line.to_owned();
        }
        if std::time::Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            let _ = child.kill();
            panic!(
                "no startup line; stderr: {}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let addr = line
        .split_whitespace()
        .skip_while(|word| *word != "on")
        .nth(1)
        .expect("the address in the startup line")
        .to_owned();
    let channel = common::connect(addr.parse().expect("an address")).await;
    let health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    common::eventually(
        std::time::Duration::from_secs(10),
        "a token exchange",
        async || {
            let status = health
                .clone()
                .check(tonic_health::pb::HealthCheckRequest::default())
                .await;
            status.is_ok_and(|s| s.into_inner().status == 1)
        },
    )
    .await;
    let location = common::first_location(&channel).await;
    pb::cash_in_service_client::CashInServiceClient::new(channel)
        .create_cash_in(common::create_request(&location, "cst_secret_settings"))
        .await
        .expect("CreateCashIn");
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let stopped = tokio::task::spawn_blocking(move || child.wait()).await;
    assert!(matches!(stopped, Ok(Ok(_))), "the gateway stops on SIGTERM");
    let mut printed = String::new();
    for path in [&out, &err] {
        let file = std::fs::File::open(path).expect("the output");
        for line in std::io::BufReader::new(file).lines() {
            printed.push_str(&line.unwrap_or_default());
            printed.push('\n');
        }
    }
    printed
}

#[tokio::test]
async fn no_setting_that_can_carry_a_credential_shows_it_in_help_print_config_or_the_logs() {
    let (key, secret) = (format!("sk_{}", fresh_secret()), fresh_secret());
    let sandbox = oms_sandbox::start(oms_sandbox::SandboxSettings {
        api_key: key.clone(),
        api_secret: secret.clone(),
        ..Default::default()
    })
    .await
    .expect("sandbox starts");
    let dir = common::tls::temp_dir("secret-settings");
    let [url_pw, redis_pw, otlp_pw, hook_pw] = std::array::from_fn(|_| fresh_secret());
    let whsec = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(uuid::Uuid::new_v4().as_bytes())
    };
    let base_url = with_password(&sandbox.base_url(), "oms", &url_pw);
    let redis_url = format!("redis://gw:{redis_pw}@127.0.0.1:{}/0", common::free_port());
    let otlp = format!("http://otel:{otlp_pw}@127.0.0.1:{}", common::free_port());
    let hook = format!("http://hook:{hook_pw}@127.0.0.1:1/hooks");
    let key_file = common::tls::write(&dir, "api-key", &format!("{key}\n"));
    let secret_file = common::tls::write(&dir, "api-secret", &format!("{secret}\n"));
    let whsec_file = common::tls::write(&dir, "whsec", &format!("whsec_{whsec}\n"));
    let passwords = [
        key.clone(),
        secret.clone(),
        url_pw,
        redis_pw,
        otlp_pw,
        hook_pw,
        whsec.clone(),
    ];
    let path = |file: &std::path::PathBuf| file.to_string_lossy().into_owned();
    let env = [
        ("OMS_BASE_URL", base_url.clone()),
        ("OMS_API_KEY", key.clone()),
        ("OMS_API_SECRET", secret.clone()),
        ("OMS_GATEWAY_REDIS_URL", redis_url.clone()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.clone()),
        ("OMS_GATEWAY_WEBHOOK_SECRET_FILE", path(&whsec_file)),
    ];
    let flags = [
        ("--oms-base-url", base_url.clone()),
        ("--oms-api-key-file", path(&key_file)),
        ("--oms-api-secret-file", path(&secret_file)),
        ("--redis-url", redis_url.clone()),
        ("--otlp-endpoint", otlp.clone()),
        ("--webhook-secret-file", path(&whsec_file)),
    ];
    let by_env = || {
        let mut command = gateway_command();
        command.envs(env.iter().cloned());
        command
    };
    let by_flags = |flags: &[(&str, String)]| {
        let mut command = gateway_command();
        for (flag, value) in flags {
            command.arg(format!("{flag}={value}"));
        }
        command
    };

    let help = output_of(by_env().env("OMS_SANDBOX_WEBHOOK_URL", &hook).arg("--help"));
    assert!(help.contains("OMS_GATEWAY_REDIS_URL"), "{help}");
    assert_clean("--help", &help, &passwords);
    let printed = output_of(
        by_env()
            .env("OMS_SANDBOX_WEBHOOK_URL", &hook)
            .arg("--print-config"),
    );
    assert!(
        printed.contains("# redis-url = \"redis://gw:***@"),
        "{printed}"
    );
    assert!(
        printed.contains("# oms-api-key = \"[redacted]\""),
        "{printed}"
    );
    assert_clean("--print-config (env)", &printed, &passwords);
    let printed = output_of(
        by_flags(&[
            ("--oms-base-url", base_url.clone()),
            ("--oms-api-key", key.clone()),
            ("--oms-api-secret", secret.clone()),
            ("--redis-url", redis_url.clone()),
            ("--otlp-endpoint", otlp.clone()),
            ("--webhook-secret-file", path(&whsec_file)),
            ("--sandbox-webhook-url", hook.clone()),
        ])
        .arg("--print-config"),
    );
    assert!(
        printed.contains("# sandbox-webhook-url = \"http://hook:***@"),
        "{printed}"
    );
    assert_clean("--print-config (flags)", &printed, &passwords);

    for (how, command) in [("env", by_env()), ("flags", by_flags(&flags))] {
        let run = dir.join(how);
        std::fs::create_dir_all(&run).expect("a directory");
        let printed = a_short_run(command, &run).await;
        assert!(
            printed.contains("oms:***@127.0.0.1") && printed.contains("redis://gw:***@"),
            "the URLs are shown, masked ({how}): {printed}"
        );
        assert_clean(&format!("a run's output ({how})"), &printed, &passwords);
    }
    sandbox.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

// === what OMS sends is named, never quoted ===

#[tokio::test]
async fn a_deposit_code_sent_as_a_number_is_named_by_its_path_and_never_quoted() {
    common::logs::capture("trace", Format::Text);
    let gateway = common::start().await;
    let created = common::create_cash_in(&gateway, "cst_numeric_code").await;
    // Twelve digits no other value of the answer (or of a log line) holds by chance.
    let code = 908_172_635_400 + u64::from(uuid::Uuid::new_v4().as_bytes()[0] % 100);
    gateway.sandbox().inject(common::respond(
        "GET",
        &format!("/cash-ins/{}", created.id),
        1,
        200,
        format!(
            r#"{{"id":"{}","status":"pending","depositInstructions":{{"code":{code},"expiresAt":"2030-01-01T00:00:00Z"}}}}"#,
            created.id
        ),
        &[],
    ));
    let status = gateway
        .cash_ins()
        .get_cash_in(pb::GetCashInRequest {
            cash_in_id: created.id.clone(),
        })
        .await
        .expect_err("a number where OMS documents a string");
    assert_eq!(status.code(), tonic::Code::Internal, "{status:?}");
    assert_eq!(common::error_info(&status).reason, "UPSTREAM_BAD_RESPONSE");
    let message = status.message();
    assert!(
        message.contains("depositInstructions.code") && message.contains("a string"),
        "the path and the expected type: {message}"
    );
    let code = code.to_string();
    assert_clean("the status", &visible(&status), std::slice::from_ref(&code));
    gateway.gateway.shutdown().await;
    let logged = common::logs::captured();
    assert!(
        logged.contains("depositInstructions.code"),
        "the logs name the path"
    );
    assert_clean("the logs", &logged, &[code]);
}

#[tokio::test]
async fn a_token_answer_of_the_wrong_shape_is_named_by_its_path_and_never_quoted() {
    common::logs::capture("trace", Format::Text);
    let secret = "token-shape-secret";
    let sandbox = common::start_remote_sandbox(secret).await;
    // Twelve digits no other value of the answer (or of a log line) holds by chance.
    let token = 731_904_552_100 + u64::from(uuid::Uuid::new_v4().as_bytes()[0] % 100);
    sandbox.inject(common::respond(
        "POST",
        "/auth/token",
        1_000,
        200,
        format!(r#"{{"accessToken":{token},"expiresIn":3600}}"#),
        &[],
    ));
    let config = common::remote_config(&sandbox.base_url(), common::REMOTE_API_KEY, secret);
    let gateway = common::start_unchecked(config).await;
    let status = gateway
        .locations()
        .list_cash_locations(common::guide_point())
        .await
        .expect_err("no usable token");
    assert!(
        status.message().contains("accessToken"),
        "the path: {status:?}"
    );
    let token = token.to_string();
    assert_clean(
        "the status",
        &visible(&status),
        std::slice::from_ref(&token),
    );
    gateway.gateway.shutdown().await;
    sandbox.shutdown().await;
    assert_clean("the logs", &common::logs::captured(), &[token]);
}
