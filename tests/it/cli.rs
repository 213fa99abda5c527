//! The binary as a user meets it: `--help` documents every setting `docs/configuration.md` lists,
//! `cargo run` with no OMS settings prints one line saying it serves the embedded sandbox with a
//! grpcurl command to try, and `oms-gateway sandbox` serves the REST simulator alone.

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_oms-gateway");

fn without_oms_env(command: &mut Command) -> &mut Command {
    for (name, _) in std::env::vars() {
        if name.starts_with("OMS_") {
            command.env_remove(name);
        }
    }
    command
}

/// The first stdout line of `child`, within 30 s.
fn first_line(child: &mut Child) -> String {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("a startup line within 30 s")
}

#[test]
fn help_documents_every_setting_of_the_configuration_table() {
    let output = Command::new(BIN)
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    let page = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .unwrap();
    let table: Vec<&str> = page
        .lines()
        .skip_while(|l| !l.starts_with("## Flags and environment variables"))
        .skip(1)
        .take_while(|l| !l.starts_with("## "))
        .filter(|l| l.starts_with("| `--"))
        .collect();
    assert!(
        table.len() >= 30,
        "docs/configuration.md's table has {} rows",
        table.len()
    );
    for row in &table {
        let cells: Vec<&str> = row.split('|').map(|c| c.trim().trim_matches('`')).collect();
        let (flag, env) = (cells[1], cells[2]);
        assert!(help.contains(flag), "--help does not mention {flag}");
        assert!(
            help.contains(env),
            "--help does not mention {env} (for {flag})"
        );
    }
    // And the other way round: every env var --help names has its row in the table.
    let rows = table.join("\n");
    for word in help.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("OMS_") && word.len() > 4 {
            assert!(
                rows.contains(&format!("`{word}`")),
                "docs/configuration.md's table does not document {word}"
            );
        }
    }
}

#[test]
fn with_no_oms_settings_it_prints_one_line_naming_the_sandbox_and_a_grpcurl_command() {
    let port = common::free_port();
    let mut child = without_oms_env(&mut Command::new(BIN))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the gateway");
    let line = first_line(&mut child);
    let _running = common::Running(child);
    assert!(line.contains("embedded OMS sandbox"), "{line}");
    assert!(
        line.contains(&format!("grpcurl -plaintext 127.0.0.1:{port} list")),
        "{line}"
    );
}

#[test]
fn a_partial_oms_configuration_is_refused_naming_what_is_missing() {
    let output = without_oms_env(&mut Command::new(BIN))
        .args(["--listen", "127.0.0.1:0"])
        .env(
            "OMS_BASE_URL",
            "https://sandbox-api.polygon.technology/v0.9",
        )
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("OMS_API_KEY") && stderr.contains("OMS_API_SECRET"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_sandbox_subcommand_serves_the_rest_simulator_alone() {
    let port = common::free_port();
    let mut child = without_oms_env(&mut Command::new(BIN))
        .args(["sandbox", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--api-key", "sk_sdbx_cli", "--api-secret", "cli-secret"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the sandbox");
    let line = first_line(&mut child);
    let _running = common::Running(child);
    assert!(line.contains(&format!("http://127.0.0.1:{port}")), "{line}");
    assert!(
        !line.contains("cli-secret"),
        "the startup line shows the secret: {line}"
    );

    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let token = loop {
        let answer = http
            .post(format!("{base}/auth/token"))
            .json(&serde_json::json!({"apiKey": "sk_sdbx_cli", "apiSecret": "cli-secret"}))
            .send()
            .await;
        match answer {
            Ok(response) if response.status().is_success() => {
                let body: serde_json::Value = response.json().await.unwrap();
                break body["accessToken"].as_str().unwrap().to_owned();
            }
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            other => panic!("no token from the sandbox: {other:?}"),
        }
    };
    let locations: serde_json::Value = http
        .get(format!(
            "{base}/cash-locations?provider=greendot&latitude=38.495133&longitude=-121.505336"
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let first = &locations["data"][0];
    assert!(first["id"].as_str().unwrap().starts_with("loc_"));
    assert!(first["locReference"].as_str().is_some());
    let unauthenticated = http
        .get(format!("{base}/cash-ins/ci_x"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);
}

// === fail closed: no sandbox beyond loopback unless asked ===

/// Waits at most `limit` for `child` to exit; `None` if it still runs (then it is killed).
fn exit_within(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// Before: with no OMS settings the gateway served the embedded sandbox on any address, so a
// production pod whose Secret mount was missing handed out real-looking deposit codes.
#[test]
fn beyond_loopback_with_no_oms_settings_it_refuses_to_start_naming_what_is_missing() {
    let dir = common::tls::temp_dir("fail-closed");
    let stderr = dir.join("stderr");
    let mut child = without_oms_env(&mut Command::new(BIN))
        .args(["--listen", "0.0.0.0:0", "--admin-listen", "none"])
        .args(["--caller-identity-header", "l5d-client-id"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).expect("a file"))
        .spawn()
        .expect("start the gateway");
    let status = exit_within(&mut child, Duration::from_secs(10));
    let said = std::fs::read_to_string(&stderr).unwrap_or_default();
    assert!(
        status.is_some_and(|s| !s.success()),
        "it must refuse to start ({status:?}): {said}"
    );
    for name in [
        "OMS_BASE_URL",
        "OMS_API_KEY",
        "OMS_API_SECRET",
        "--oms-base-url",
        "--sandbox",
    ] {
        assert!(said.contains(name), "{name} is not named: {said}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn with_sandbox_beyond_loopback_it_starts_warns_and_says_so_in_readyz_and_metrics() {
    let dir = common::tls::temp_dir("sandbox-flag");
    let stderr = dir.join("stderr");
    let admin = common::free_port();
    let mut child = without_oms_env(&mut Command::new(BIN))
        .args(["--listen", "0.0.0.0:0", "--sandbox"])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .args(["--caller-identity-header", "l5d-client-id"])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr).expect("a file"))
        .spawn()
        .expect("start the gateway");
    let line = first_line(&mut child);
    let _running = common::Running(child);
    assert!(line.contains("embedded OMS sandbox"), "{line}");
    let port = line
        .split_whitespace()
        .skip_while(|w| *w != "on")
        .nth(1)
        .and_then(|addr| addr.rsplit_once(':'))
        .map(|(_, port)| port.to_owned())
        .expect("the address");
    // Bound on every interface; called through loopback.
    let channel = common::connect(format!("127.0.0.1:{port}").parse().unwrap()).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health answers");
    let http = reqwest::Client::new();
    let get = async |path: &str| {
        let response = http
            .get(format!("http://127.0.0.1:{admin}{path}"))
            .send()
            .await
            .expect("the admin listener answers");
        (response.status().as_u16(), response.text().await.unwrap())
    };
    common::eventually(Duration::from_secs(10), "/readyz to say 200", async || {
        get("/readyz").await.0 == 200
    })
    .await;
    let (_, ready) = get("/readyz").await;
    assert!(
        ready.starts_with("SERVING\n") && ready.contains("sandbox"),
        "{ready}"
    );
    let (_, metrics) = get("/metrics").await;
    assert!(metrics.contains("\noms_gateway_sandbox 1\n"), "{metrics}");
    let said = std::fs::read_to_string(&stderr).unwrap_or_default();
    assert!(
        said.lines()
            .any(|l| l.contains("WARN") && l.contains("sandbox") && l.contains("--sandbox")),
        "a warning at start: {said}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

// === numeric settings are range-checked ===

// Before: `--watch-max-polls-per-second inf` panicked in tokio's Semaphore at start, and 0, NaN,
// negative or absurd values were taken as given (a zero heartbeat sends heartbeats in a loop).
#[test]
fn numeric_settings_out_of_range_are_configuration_errors_not_panics() {
    let refused: &[(&str, &[&str])] = &[
        (
            "--watch-max-polls-per-second",
            &["inf", "NaN", "0", "-1", "1e300"],
        ),
        ("--retry-budget-ratio", &["NaN", "-0.1", "inf", "2"]),
        ("--retry-budget-floor", &["NaN", "-1", "inf", "1e12"]),
        ("--max-concurrent-calls", &["0", "1000000000000"]),
        ("--max-concurrent-streams-per-connection", &["0"]),
        ("--max-message-bytes", &["0", "1000000000000"]),
        ("--idempotency-max-entries", &["0", "1000000000000"]),
        ("--watch-max-streams", &["0", "1000000000000"]),
        ("--watch-max-watched", &["0", "1000000000000"]),
        ("--breaker-threshold", &["0"]),
        ("--worker-threads", &["0", "100000"]),
        ("--watch-poll-interval", &["0s"]),
        ("--watch-heartbeat-interval", &["0s"]),
        ("--upstream-timeout", &["0s"]),
        ("--upstream-connect-timeout", &["0s"]),
        ("--default-deadline", &["0s"]),
        ("--reload-interval", &["0s"]),
        ("--redis-timeout", &["0s"]),
        ("--redis-lease-ttl", &["0s"]),
        ("--idempotency-window", &["0s"]),
        ("--breaker-cooldown", &["0s"]),
        ("--breaker-max-cooldown", &["0s"]),
        ("--tls-handshake-timeout", &["0s"]),
        ("--sandbox-code-ttl", &["0s"]),
        ("--sandbox-token-ttl", &["0s"]),
        ("--watch-reconcile-interval", &["0s"]),
        ("--webhook-healthy-window", &["0s"]),
    ];
    let print_config = |arg: &str| {
        without_oms_env(&mut Command::new(BIN))
            .args(["--print-config", arg])
            .output()
            .expect("run --print-config")
    };
    let mut accepted = Vec::new();
    for (flag, values) in refused {
        for value in *values {
            let arg = format!("{flag}={value}");
            let output = print_config(&arg);
            let stderr = String::from_utf8_lossy(&output.stderr);
            if output.status.code() != Some(2) || !stderr.contains(flag) {
                accepted.push(format!("{arg}: {:?} {stderr}", output.status.code()));
            }
            assert!(!stderr.contains("panicked"), "{arg}: {stderr}");
        }
    }
    assert!(accepted.is_empty(), "accepted: {accepted:#?}");
    for fine in [
        "--watch-max-polls-per-second=0.5",
        "--retry-budget-ratio=0",
        "--retry-budget-floor=0",
        "--drain-delay=0s",
        "--shutdown-grace=0s",
        "--busy-poll=0s",
        "--watch-unreachable-limit=0s",
        "--max-concurrent-calls=1",
    ] {
        assert!(print_config(fine).status.success(), "{fine} is refused");
    }

    // A real start, and the configuration file (TOML has inf and nan), say the same.
    let output = without_oms_env(&mut Command::new(BIN))
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "none"])
        .args(["--watch-max-polls-per-second", "inf"])
        .output()
        .expect("run the gateway");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--watch-max-polls-per-second") && !stderr.contains("panicked"),
        "{stderr}"
    );
    let dir = common::tls::temp_dir("ranges");
    let file = common::tls::write(&dir, "config.toml", "watch-max-polls-per-second = inf\n");
    let output = without_oms_env(&mut Command::new(BIN))
        .args(["--print-config", "--config"])
        .arg(&file)
        .output()
        .expect("run --print-config");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("watch-max-polls-per-second"), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

// === --help, -h and the listen addresses ===

const HEADINGS: [&str; 10] = [
    "Listener:",
    "OMS upstream:",
    "Security:",
    "Limits:",
    "Watch:",
    "Replicas:",
    "Webhooks:",
    "Embedded sandbox:",
    "Telemetry:",
    "Configuration file:",
];

// Before: `--help` was 365 lines of flags in no order, and `-h` two lines a flag.
#[test]
fn help_groups_the_flags_under_headings_and_dash_h_gives_one_line_a_flag() {
    let help = |flag: &str| {
        let output = Command::new(BIN).arg(flag).output().expect("run");
        assert!(output.status.success());
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    for (flag, text) in [("-h", help("-h")), ("--help", help("--help"))] {
        let at: Vec<usize> = HEADINGS
            .iter()
            .map(|h| {
                text.lines()
                    .position(|l| l == *h)
                    .unwrap_or_else(|| panic!("{flag}: no heading {h}:\n{text}"))
            })
            .collect();
        assert!(at.is_sorted(), "{flag}: headings out of order: {at:?}");
    }
    let short = help("-h");
    let flags: Vec<&str> = short
        .lines()
        .filter(|l| l.trim_start().starts_with("--"))
        .collect();
    assert!(flags.len() >= 60, "{} flags in -h", flags.len());
    for line in &flags {
        // The flag, its value, its summary and its env var, on the one line.
        let words: Vec<&str> = line.split_whitespace().collect();
        assert!(
            words.len() >= 3,
            "a flag with no summary on its line: {line}"
        );
    }
    // No line continues a flag's: each is a heading, a flag, a command or blank.
    let continued: Vec<&str> = short
        .lines()
        .skip_while(|l| *l != "Options:")
        .filter(|l| l.starts_with("     ") && !l.trim_start().starts_with('-'))
        .collect();
    assert!(
        continued.is_empty(),
        "lines continuing a flag: {continued:#?}"
    );
    assert!(short.contains("--listen <ADDR>"), "{short}");
}

// Before: `--listen localhost:50051` was "invalid socket address syntax".
#[test]
fn a_host_name_in_a_listen_address_is_resolved() {
    let mut child = without_oms_env(&mut Command::new(BIN))
        .args(["--listen", "localhost:0", "--admin-listen", "localhost:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the gateway");
    let line = first_line(&mut child);
    let _running = common::Running(child);
    assert!(line.contains("serving gRPC on 127.0.0.1:"), "{line}");
}

// Before: "cannot listen on 127.0.0.1:9090: Address already in use", after the sandbox had
// started, naming no flag.
#[test]
fn a_port_in_use_fails_the_start_at_once_naming_the_flag_to_change() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let output = without_oms_env(&mut Command::new(BIN))
        .args(["--listen", "127.0.0.1:0"])
        .args(["--admin-listen", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .output()
        .expect("run the gateway");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot listen on 127.0.0.1:{port} (--admin-listen)"
        )) && stderr.contains("choose another address with --admin-listen"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("sandbox listening"),
        "nothing starts before the ports are bound: {stderr}"
    );
    drop(taken);
}

// Before: `OMS_GATEWAY_LISTEN=` was a syntax error, followed by a note listing the config
// file's settings as if the file were to blame.
#[test]
fn an_empty_environment_variable_is_unset_and_a_bad_one_is_named() {
    let dir = common::tls::temp_dir("empty-env");
    let file = common::tls::write(&dir, "gateway.toml", "listen = \"127.0.0.1:7001\"\n");
    let run = |value: &str| {
        without_oms_env(&mut Command::new(BIN))
            .env("OMS_GATEWAY_LISTEN", value)
            .env("OMS_GATEWAY_ADMIN_LISTEN", "")
            .arg("--config")
            .arg(&file)
            .arg("--print-config")
            .output()
            .expect("run --print-config")
    };
    let output = run("");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("listen = \"127.0.0.1:7001\"") && l.ends_with("# file")),
        "{stdout}"
    );
    assert!(
        stdout.lines().any(
            |l| l.starts_with("admin-listen = \"127.0.0.1:50053\"") && l.ends_with("# default")
        ),
        "{stdout}"
    );
    let output = run("bogus");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("comes from the environment variable OMS_GATEWAY_LISTEN")
            && !stderr.contains("config file"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
