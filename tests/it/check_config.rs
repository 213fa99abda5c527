//! `--check-config` through the built binary, as CI runs it before a rollout: a configuration the
//! gateway would refuse at start exits 1 and lists every problem (not only the first), naming the
//! flags to change and never a secret; one it would start with exits 0 and prints the effective
//! configuration, and nothing is bound or called on the way (a port already taken and an OMS that
//! does not answer pass).

use crate::common;
use crate::config_file::{gateway, parse_printout, run};

use std::process::Output;

/// `(exit code, stdout, stderr)` of `--check-config` with `args`.
fn check(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut command = gateway();
    command.arg("--check-config").args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    let Output {
        status,
        stdout,
        stderr,
    } = run(&mut command);
    (
        status.code(),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

// Before: `--print-config` (the only dry run) exited 0 for this, and the start then failed.
#[test]
fn an_api_key_alone_is_refused_naming_the_missing_settings_and_not_the_key() {
    let (code, stdout, stderr) = check(&[], &[("OMS_API_KEY", "sk_live_do_not_print")]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.starts_with("oms-gateway --check-config: 1 problem; the gateway would not start:"),
        "{stderr}"
    );
    for name in ["OMS_BASE_URL", "OMS_API_SECRET"] {
        assert!(stderr.contains(name), "{name}: {stderr}");
    }
    assert!(!stderr.contains("sk_live_do_not_print"), "{stderr}");
}

#[test]
fn every_problem_is_listed_not_only_the_first() {
    let dir = common::tls::temp_dir("check-config");
    let policy = common::tls::write(&dir, "policy.toml", "[[allow]]\ncallers = 3\n");
    let (cert, key) = (dir.join("missing.crt"), dir.join("missing.key"));
    let (code, _, stderr) = check(
        &[
            "--listen",
            "0.0.0.0:50051",
            "--admin-listen",
            "0.0.0.0:50051",
            "--authz-policy",
            policy.to_str().unwrap(),
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(": 5 problems;"), "{stderr}");
    for expected in [
        // No OMS settings beyond loopback: the sandbox is not served there by accident.
        "1. upstream: no OMS settings, and 0.0.0.0:50051 is not a loopback address",
        "2. listener: refusing to listen on 0.0.0.0:50051 (not a loopback address) without a way to identify callers",
        "3. TLS: cannot read",
        "4. authorization policy",
        "5. ports: --listen 0.0.0.0:50051 and --admin-listen 0.0.0.0:50051 are the same port",
    ] {
        assert!(stderr.contains(expected), "{expected}: {stderr}");
    }
    assert!(stderr.contains("line 2"), "the policy's line: {stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn unreadable_files_are_named() {
    let dir = common::tls::temp_dir("check-config-files");
    let key = common::tls::write(&dir, "api-key", "\n");
    let (code, _, stderr) = check(
        &[
            "--oms-base-url",
            "https://oms.example.test/v0.9",
            "--oms-api-key-file",
            key.to_str().unwrap(),
            "--oms-api-secret-file",
            dir.join("absent").to_str().unwrap(),
            "--tls-cert",
            dir.join("tls.crt").to_str().unwrap(),
            "--tls-key",
            dir.join("tls.key").to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("the OMS API key file"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "TLS: cannot read {}",
            dir.join("tls.crt").display()
        )),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_configuration_that_starts_passes_without_binding_or_calling_oms() {
    // The port is taken and nothing answers at the OMS URL: neither is the check's business.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let (code, stdout, stderr) = check(
        &["--listen", &listen, "--admin-listen", "none"],
        &[
            ("OMS_BASE_URL", "http://127.0.0.1:9/v0.9"),
            ("OMS_API_KEY", "sk_test_check"),
            ("OMS_API_SECRET", "a-secret-never-printed"),
        ],
    );
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let first = stdout.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("# oms-gateway --check-config: OK.")
            && first.contains(&format!("on {listen}"))
            && first.contains("upstream OMS at http://127.0.0.1:9/v0.9"),
        "{first}"
    );
    assert!(!stdout.contains("a-secret-never-printed"), "{stdout}");
    // The rest is --print-config's printout.
    let printout = parse_printout(&stdout);
    assert_eq!(
        printout.get("listen"),
        Some(&(format!("\"{listen}\""), "flag".to_owned())),
        "{stdout}"
    );
    assert!(printout.contains_key("# oms-api-secret"), "{stdout}");
    drop(taken);
}

#[test]
fn check_config_and_print_config_do_not_go_together() {
    let (code, _, stderr) = check(&["--print-config"], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("--print-config"), "{stderr}");
}
