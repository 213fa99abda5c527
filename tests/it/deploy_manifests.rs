//! The Kubernetes manifests in `deploy/kubernetes` against the binary they run: the
//! Deployment's container args with the ConfigMap's `config.toml` are accepted (every key a flag,
//! every value one it takes), every file the config names lies under a volume mount, and the
//! termination grace period covers the drain delay plus the shutdown grace; and the Dockerfile's
//! dependency layer stubs every Cargo target. (The manifests' Kubernetes schema and the
//! Dockerfile's lint are `deploy/validate.sh`, in CI.)

use crate::common;
use crate::config_file::{TempConfig, gateway, print_config, run, setting};

use std::path::Path;

// === the Kubernetes manifests ===

fn manifest(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/kubernetes")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The literal block `key: |` of a YAML document, its indentation removed.
fn yaml_block(yaml: &str, key: &str) -> String {
    let mut lines = yaml.lines().skip_while(|l| l.trim() != format!("{key}: |"));
    lines
        .next()
        .unwrap_or_else(|| panic!("no `{key}: |` block"));
    let body: Vec<&str> = lines
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .collect();
    body.iter()
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The value of the first `key: value` line of a YAML text.
fn yaml_scalar<'a>(yaml: &'a str, key: &str) -> &'a str {
    yaml.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("no `{key}:`"))
        .trim()
}

/// The Deployment's container args, with `--config`'s path (a ConfigMap mount there) replaced.
fn deployment_args(deployment: &str, config: &Path) -> Vec<String> {
    let args = yaml_scalar(deployment, "args");
    let args: Vec<String> = args
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .map(|a| a.trim().trim_matches('"').to_owned())
        .collect();
    let at = args
        .iter()
        .position(|a| a == "--config")
        .expect("--config in the args");
    let mut args = args;
    args[at + 1] = config.display().to_string();
    args
}

fn seconds(duration: &str) -> u64 {
    let duration = duration.trim_matches('"');
    let (number, unit) = duration.split_at(duration.find(|c: char| !c.is_ascii_digit()).unwrap());
    let n: u64 = number.parse().unwrap();
    match unit {
        "s" => n,
        "m" => n * 60,
        other => panic!("unit {other}"),
    }
}

type Printout = std::collections::BTreeMap<String, (String, String)>;

/// `--print-config` of the Deployment's container args with the ConfigMap's config.toml.
fn deployment_printout() -> (String, Printout) {
    let toml = yaml_block(&manifest("configmap.yaml"), "config.toml");
    let file = TempConfig::new("deployment", &toml);
    let deployment = manifest("deployment.yaml");
    let printout = print_config(gateway().args(deployment_args(&deployment, &file.path)));
    (deployment, printout)
}

/// The port of a `"host:port"` setting.
fn port_of(value: &str) -> &str {
    value
        .trim_matches('"')
        .rsplit_once(':')
        .expect("host:port")
        .1
}

#[test]
fn the_deployments_args_and_config_are_accepted_and_its_grace_period_covers_the_drain() {
    let (deployment, printout) = deployment_printout();
    assert_eq!(
        setting(&printout, "listen"),
        ("\"0.0.0.0:50051\"".into(), "file".into())
    );
    for key in [
        "tls-cert",
        "tls-key",
        "tls-client-ca",
        "oms-api-key-file",
        "oms-api-secret-file",
    ] {
        let (path, source) = setting(&printout, key);
        assert_eq!(source, "file", "{key}");
        let mounted = deployment
            .lines()
            .filter_map(|l| l.trim().strip_prefix("mountPath: "))
            .any(|mount| path.trim_matches('"').starts_with(&format!("{mount}/")));
        assert!(
            mounted,
            "{key} = {path} is under no volumeMount of deployment.yaml"
        );
    }
    let drain = seconds(&setting(&printout, "drain-delay").0);
    let grace = seconds(&setting(&printout, "shutdown-grace").0);
    let termination: u64 = yaml_scalar(&deployment, "terminationGracePeriodSeconds")
        .parse()
        .unwrap();
    assert!(
        termination > drain + grace,
        "terminationGracePeriodSeconds {termination} <= drain-delay {drain} + shutdown-grace {grace}"
    );
}

#[test]
fn the_deployments_probes_and_ports_are_the_ones_the_config_opens() {
    let (deployment, printout) = deployment_printout();
    let (health_listen, source) = setting(&printout, "health-listen");
    assert_eq!(source, "file");
    let probe_ports: Vec<&str> = deployment
        .lines()
        .filter_map(|l| l.trim().strip_prefix("port: "))
        .collect();
    assert_eq!(probe_ports.len(), 2, "a readiness and a liveness probe");
    for port in probe_ports {
        assert_eq!(port, port_of(&health_listen), "a probe port");
    }
    let services: Vec<&str> = deployment
        .lines()
        .filter_map(|l| l.trim().strip_prefix("service: "))
        .collect();
    assert_eq!(
        services,
        [r#""""#, "liveness"],
        "readiness \"\", liveness `liveness`"
    );
    let container_port = |name: &str| {
        let mut lines = deployment.lines().map(str::trim);
        lines.find(|l| *l == format!("- name: {name}"));
        lines
            .next()
            .and_then(|l| l.strip_prefix("containerPort: "))
            .unwrap_or_else(|| panic!("no containerPort named {name}"))
            .to_owned()
    };
    assert_eq!(
        container_port("grpc"),
        port_of(&setting(&printout, "listen").0)
    );
    assert_eq!(container_port("health"), port_of(&health_listen));
}

/// `--check-config` on the Deployment's args and the ConfigMap's config.toml, the mounts'
/// files (`/etc/oms-gateway/…`) made in a temporary directory when `mounted`.
fn check_shipped_config(mounted: bool) -> (Option<i32>, String, String) {
    let configmap = manifest("configmap.yaml");
    let dir = common::tls::temp_dir("shipped-config");
    let root = dir.display().to_string();
    if mounted {
        let ca = common::tls::Ca::new("deploy test CA");
        let server = ca.server();
        for (folder, name, contents) in [
            ("tls", "tls.crt", server.cert.as_str()),
            ("tls", "tls.key", server.key.as_str()),
            ("tls", "ca.crt", ca.pem.as_str()),
            ("oms", "api-key", "sk_test_deploy\n"),
            ("oms", "api-secret", "deploy-secret\n"),
            (
                "config",
                "policy.toml",
                &yaml_block(&configmap, "policy.toml"),
            ),
        ] {
            std::fs::create_dir_all(dir.join(folder)).unwrap();
            common::tls::write(&dir.join(folder), name, contents);
        }
    }
    let toml = yaml_block(&configmap, "config.toml").replace("/etc/oms-gateway", &root);
    let file = TempConfig::new("check-shipped", &toml);
    let args = deployment_args(&manifest("deployment.yaml"), &file.path);
    let output = run(gateway().arg("--check-config").args(args));
    let _ = std::fs::remove_dir_all(dir);
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn the_shipped_configuration_passes_check_config_and_fails_it_without_its_secrets() {
    let (code, stdout, stderr) = check_shipped_config(true);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.starts_with("# oms-gateway --check-config: OK.")
            && stdout.contains("caller identity client certificates (mTLS)"),
        "{stdout}"
    );
    // A pod whose Secret mounts are missing would not start: the check says so first.
    let (code, _, stderr) = check_shipped_config(false);
    assert_eq!(code, Some(1), "{stderr}");
    for what in ["api-key", "TLS: cannot read", "authorization policy"] {
        assert!(stderr.contains(what), "{what}: {stderr}");
    }
}

#[test]
fn the_dockerfile_stubs_every_cargo_target_so_its_dependency_layer_builds() {
    // Cargo refuses a manifest whose declared targets are missing, so the dependency layer must
    // create every one of them; a target added to Cargo.toml without a stub breaks the image.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    let stage = &dockerfile[..dockerfile.find("COPY src src").expect("the sources' COPY")];
    for manifest in ["Cargo.toml", "sandbox/Cargo.toml"] {
        let text = std::fs::read_to_string(root.join(manifest)).unwrap();
        let manifest_dir = Path::new(manifest).parent().unwrap();
        let table: toml::Table = toml::from_str(&text).unwrap();
        let mut paths: Vec<String> = Vec::new();
        for kind in ["bin", "test", "bench", "example"] {
            for target in table
                .get(kind)
                .and_then(|v| v.as_array())
                .into_iter()
                .flatten()
            {
                if let Some(path) = target.get("path").and_then(|p| p.as_str()) {
                    paths.push(path.to_owned());
                }
            }
        }
        let lib = table.get("lib").and_then(|lib| lib.get("path"));
        paths.push(
            lib.and_then(|p| p.as_str())
                .unwrap_or("src/lib.rs")
                .to_owned(),
        );
        for path in paths {
            let path = manifest_dir.join(path).display().to_string();
            assert!(
                stage.contains(&path),
                "the Dockerfile's dependency layer does not create {path} ({manifest})"
            );
        }
        assert!(
            stage.contains(&format!("COPY {manifest}")),
            "the dependency layer does not copy {manifest}"
        );
    }
}
