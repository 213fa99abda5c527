//! The configuration file and `--print-config`, through the built binary as an operator meets
//! them: precedence flag > env > file > default (each read back from `--print-config`), the
//! errors an unknown key or a wrong type earns, secrets never printed, the printout fed back as
//! a file, and the gateway serving where the file says.

use crate::common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_oms-gateway");

/// A config file in a fresh temporary directory, removed when dropped.
pub(crate) struct TempConfig {
    dir: PathBuf,
    pub(crate) path: PathBuf,
}

impl TempConfig {
    pub(crate) fn new(name: &str, text: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "oms-gateway-config-{}-{name}-{}",
            std::process::id(),
            fastrand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("gateway.toml");
        std::fs::write(&path, text).unwrap();
        Self { dir, path }
    }
}

impl Drop for TempConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn fastrand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

/// The binary with no `OMS_*` variable of the test's own environment.
pub(crate) fn gateway() -> Command {
    let mut command = Command::new(BIN);
    for (name, _) in std::env::vars() {
        if name.starts_with("OMS_") {
            command.env_remove(name);
        }
    }
    command
}

pub(crate) fn run(command: &mut Command) -> Output {
    command
        .stdin(Stdio::null())
        .output()
        .expect("run the binary")
}

/// `--print-config` as `key → (value, source)`; commented settings (secrets, unset) keyed with
/// a leading `#`.
pub(crate) fn print_config(command: &mut Command) -> BTreeMap<String, (String, String)> {
    let output = run(command.arg("--print-config"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "--print-config failed: {}{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    parse_printout(&stdout)
}

pub(crate) fn parse_printout(text: &str) -> BTreeMap<String, (String, String)> {
    text.lines()
        .filter_map(|line| {
            let (setting, source) = line.rsplit_once(" # ")?;
            let setting = setting.trim();
            let (key, value) = match setting.split_once(" = ") {
                Some((key, value)) => (key.to_owned(), value.to_owned()),
                None => (setting.to_owned(), String::new()),
            };
            Some((key, (value, source.trim().to_owned())))
        })
        .collect()
}

pub(crate) fn setting(
    printout: &BTreeMap<String, (String, String)>,
    key: &str,
) -> (String, String) {
    printout
        .get(key)
        .cloned()
        .unwrap_or_else(|| panic!("--print-config has no `{key}`: {printout:#?}"))
}

const LAYERED: &str =
    "drain-delay = \"7s\"\nshutdown-grace = \"11s\"\nwatch-poll-interval = \"3s\"\n";

#[test]
fn a_file_value_beats_the_default() {
    let file = TempConfig::new("file-default", LAYERED);
    let printout = print_config(gateway().arg("--config").arg(&file.path));
    assert_eq!(
        setting(&printout, "watch-poll-interval"),
        ("\"3s\"".into(), "file".into())
    );
    assert_eq!(
        setting(&printout, "upstream-timeout"),
        ("\"10s\"".into(), "default".into())
    );
}

#[test]
fn an_environment_variable_beats_the_file() {
    let file = TempConfig::new("env-file", LAYERED);
    let printout = print_config(
        gateway()
            .arg("--config")
            .arg(&file.path)
            .env("OMS_GATEWAY_SHUTDOWN_GRACE", "13s"),
    );
    assert_eq!(
        setting(&printout, "shutdown-grace"),
        ("\"13s\"".into(), "env".into())
    );
    assert_eq!(
        setting(&printout, "drain-delay"),
        ("\"7s\"".into(), "file".into())
    );
}

#[test]
fn a_flag_beats_the_environment_and_the_file() {
    let file = TempConfig::new("flag-env", LAYERED);
    let printout = print_config(
        gateway()
            .arg("--config")
            .arg(&file.path)
            .env("OMS_GATEWAY_DRAIN_DELAY", "8s")
            .args(["--drain-delay", "9s"]),
    );
    assert_eq!(
        setting(&printout, "drain-delay"),
        ("\"9s\"".into(), "flag".into())
    );
}

#[test]
fn the_file_can_be_named_by_the_environment() {
    let file = TempConfig::new("env-path", LAYERED);
    let printout = print_config(gateway().env("OMS_GATEWAY_CONFIG", &file.path));
    assert_eq!(
        setting(&printout, "drain-delay"),
        ("\"7s\"".into(), "file".into())
    );
}

#[test]
fn an_unknown_key_is_refused_naming_the_file_the_line_the_key_and_the_valid_keys() {
    let file = TempConfig::new(
        "unknown",
        "listen = \"127.0.0.1:0\"\n\ndrain-dealy = \"5s\"\n",
    );
    let output = run(gateway()
        .arg("--config")
        .arg(&file.path)
        .arg("--print-config"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(output.stdout.is_empty(), "nothing printed on stdout");
    let path = file.path.display().to_string();
    assert!(stderr.contains(&path), "{stderr}");
    assert!(
        stderr.contains("line 3: `drain-dealy`: unknown key"),
        "{stderr}"
    );
    assert!(stderr.contains("drain-delay, shutdown-grace"), "{stderr}");
}

#[test]
fn a_value_of_the_wrong_type_is_refused_naming_the_line_and_the_key() {
    let file = TempConfig::new("type", "# comment\nmax-concurrent-calls = true\n");
    let output = run(gateway().arg("--config").arg(&file.path));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("line 2: `max-concurrent-calls`: expected a string or a number"),
        "{stderr}"
    );
    assert!(stderr.contains("found boolean"), "{stderr}");
}

#[test]
fn a_value_its_flag_refuses_is_refused_with_the_flags_own_reason() {
    let file = TempConfig::new("value", "listen = \"localhost\"\n");
    let output = run(gateway().arg("--config").arg(&file.path));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("line 1: `listen`: invalid value 'localhost' for --listen"),
        "{stderr}"
    );
}

#[test]
fn a_secret_in_the_file_or_the_environment_is_never_printed() {
    let file = TempConfig::new(
        "secret",
        "oms-base-url = \"https://oms.example.test/v0.9\"\noms-api-key = \"sk_file\"\n\
         oms-api-secret = \"file-secret-hunter2\"\n",
    );
    let output = run(gateway()
        .arg("--config")
        .arg(&file.path)
        .arg("--print-config"));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "{stderr}");
    assert!(
        !stdout.contains("hunter2") && !stderr.contains("hunter2"),
        "{stdout}{stderr}"
    );
    assert!(
        stdout.contains("# oms-api-secret = \"[redacted]\""),
        "{stdout}"
    );
    assert!(stderr.contains("prefer `oms-api-secret-file`"), "{stderr}");
    let from_env = run(gateway()
        .env("OMS_API_SECRET", "env-secret-hunter3")
        .arg("--print-config"));
    let stdout = String::from_utf8_lossy(&from_env.stdout);
    assert!(!stdout.contains("hunter3"), "{stdout}");
    assert_eq!(
        setting(&parse_printout(&stdout), "# oms-api-secret"),
        ("\"[redacted]\"".into(), "env".into())
    );
}

#[test]
fn a_file_value_satisfies_a_flag_that_requires_it() {
    // --tls-cert requires --tls-key: the key from the file counts, as the flag would.
    let file = TempConfig::new("requires", "tls-key = \"/etc/tls/tls.key\"\n");
    let printout = print_config(
        gateway()
            .arg("--config")
            .arg(&file.path)
            .args(["--tls-cert", "/etc/tls/tls.crt"]),
    );
    assert_eq!(setting(&printout, "tls-key").1, "file");
    assert_eq!(setting(&printout, "tls-cert").1, "flag");
}

#[test]
fn a_file_value_conflicting_with_the_environment_is_refused_naming_the_file() {
    let file = TempConfig::new("conflict", "oms-api-key-file = \"/etc/oms/api-key\"\n");
    let output = run(gateway()
        .arg("--config")
        .arg(&file.path)
        .env("OMS_API_KEY", "sk_env"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cannot be used with"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "--oms-api-key-file comes from the config file {}",
            file.path.display()
        )) && stderr.contains("--oms-api-key comes from the environment variable OMS_API_KEY"),
        "{stderr}"
    );
}

#[test]
fn the_printout_fed_back_as_a_file_gives_the_same_configuration() {
    let file = TempConfig::new(
        "first",
        "listen = \"127.0.0.1:50055\"\ninsecure-allow-unauthenticated = true\n\
         retry-budget-ratio = 0.3\nsandbox-faults = \"seed=7,503=0.1\"\n",
    );
    let first = run(gateway().arg("--config").arg(&file.path).args([
        "--log-level",
        "info,audit=warn",
        "--print-config",
    ]));
    assert!(first.status.success());
    let printed = String::from_utf8(first.stdout).unwrap();
    let again = TempConfig::new("again", &printed);
    let second = print_config(gateway().arg("--config").arg(&again.path));
    let first = parse_printout(&printed);
    assert_eq!(first.len(), second.len());
    for (key, (value, _)) in &first {
        assert_eq!(&second[key].0, value, "{key}");
    }
    assert_eq!(setting(&second, "insecure-allow-unauthenticated").0, "true");
    assert_eq!(
        setting(&second, "log-level"),
        ("\"info,audit=warn\"".into(), "file".into())
    );
}

#[test]
fn the_gateway_serves_where_the_file_says() {
    let port = common::free_port();
    // Port 0 for the admin listener: other tests start gateways at the same time.
    let file = TempConfig::new(
        "serve",
        &format!("listen = \"127.0.0.1:{port}\"\nadmin-listen = \"127.0.0.1:0\"\n"),
    );
    let mut child = gateway()
        .arg("--config")
        .arg(&file.path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the gateway");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(30));
    let _ = child.kill();
    let _ = child.wait();
    let line = line.expect("a startup line within 30 s");
    assert!(
        line.contains(&format!("serving gRPC on 127.0.0.1:{port}")),
        "{line}"
    );
}
