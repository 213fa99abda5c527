//! The Kubernetes manifests in `deploy/kubernetes` against the binary they run: each overlay's
//! `config.toml`, with the base Deployment's container args, passes `--check-config` once the
//! files it names exist (certificates and secrets made up here, as the mounts would hold them), and
//! says it runs the way the overlay claims (native mTLS, behind a mesh, loopback dev); the base
//! Deployment's probes, ports and grace period fit the overlays' configuration; and the
//! Dockerfile's dependency layer stubs every Cargo target of every workspace member, from fully
//! qualified images. (Rendering the overlays with kustomize, their Kubernetes schemas, their
//! custom resources and the Dockerfile's lint are `deploy/validate.sh`, in CI.)

use crate::common;
use crate::config_file::{TempConfig, gateway, print_config, run, setting};

use std::path::Path;

/// The overlays and what `--check-config` must say of each.
const OVERLAYS: [(&str, &str); 3] = [
    ("mtls", "caller identity client certificates (mTLS)"),
    (
        "mesh",
        "caller identity the mesh header x-forwarded-client-cert",
    ),
    ("dev", "upstream the embedded OMS sandbox"),
];

fn deploy_file(path: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/kubernetes")
        .join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The value of the first `key: value` line of a YAML text.
fn yaml_scalar<'a>(yaml: &'a str, key: &str) -> &'a str {
    yaml.lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("no `{key}:`"))
        .trim()
}

/// The base Deployment's container args, with `--config`'s path (a ConfigMap mount there)
/// replaced.
fn deployment_args(deployment: &str, config: &Path) -> Vec<String> {
    let args = yaml_scalar(deployment, "args");
    let mut args: Vec<String> = args
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .map(|a| a.trim().trim_matches('"').to_owned())
        .collect();
    let at = args
        .iter()
        .position(|a| a == "--config")
        .expect("--config in the args");
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

/// The port of a `"host:port"` setting.
fn port_of(value: &str) -> &str {
    value
        .trim_matches('"')
        .rsplit_once(':')
        .expect("host:port")
        .1
}

/// `--check-config` on the base Deployment's args and `overlay`'s config.toml, the mounts'
/// files (`/etc/oms-gateway/…`) made in a temporary directory when `mounted`.
fn check_overlay(overlay: &str, mounted: bool) -> (Option<i32>, String, String) {
    let dir = common::tls::temp_dir("overlay-config");
    if mounted {
        let ca = common::tls::Ca::new("deploy test CA");
        let server = ca.server();
        let policy = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("deploy/kubernetes/overlays")
            .join(overlay)
            .join("policy.toml");
        let policy = std::fs::read_to_string(policy).unwrap_or_default();
        for (folder, name, contents) in [
            ("tls", "tls.crt", server.cert.as_str()),
            ("tls", "tls.key", server.key.as_str()),
            ("tls", "ca.crt", ca.pem.as_str()),
            ("oms", "api-key", "sk_test_deploy\n"),
            ("oms", "api-secret", "deploy-secret\n"),
            ("config", "policy.toml", &policy),
        ] {
            std::fs::create_dir_all(dir.join(folder)).unwrap();
            common::tls::write(&dir.join(folder), name, contents);
        }
    }
    let toml = deploy_file(&format!("overlays/{overlay}/config.toml"))
        .replace("/etc/oms-gateway", &dir.display().to_string());
    let file = TempConfig::new("check-overlay", &toml);
    let args = deployment_args(&deploy_file("base/deployment.yaml"), &file.path);
    let output = run(gateway().arg("--check-config").args(args));
    let _ = std::fs::remove_dir_all(dir);
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn every_overlays_configuration_passes_check_config_and_runs_as_the_overlay_says() {
    for (overlay, mode) in OVERLAYS {
        let (code, stdout, stderr) = check_overlay(overlay, true);
        assert_eq!(code, Some(0), "{overlay}: {stdout}{stderr}");
        let summary = stdout.lines().next().unwrap_or_default();
        assert!(
            summary.starts_with("# oms-gateway --check-config: OK.") && summary.contains(mode),
            "{overlay}: {summary}"
        );
    }
    // A pod whose Secret mounts are missing would not start: the check says so first.
    let (code, _, stderr) = check_overlay("mtls", false);
    assert_eq!(code, Some(1), "{stderr}");
    for what in ["api-key", "TLS: cannot read", "authorization policy"] {
        assert!(stderr.contains(what), "{what}: {stderr}");
    }
}

#[test]
fn the_base_deployments_probes_ports_and_grace_period_fit_the_overlays() {
    let deployment = deploy_file("base/deployment.yaml");
    let termination: u64 = yaml_scalar(&deployment, "terminationGracePeriodSeconds")
        .parse()
        .unwrap();
    let container_port = |name: &str| {
        let mut lines = deployment.lines().map(str::trim);
        lines.find(|l| *l == format!("- name: {name}"));
        lines
            .next()
            .and_then(|l| l.strip_prefix("containerPort: "))
            .unwrap_or_else(|| panic!("no containerPort named {name}"))
            .to_owned()
    };
    let probe_ports: Vec<&str> = deployment
        .lines()
        .filter_map(|l| l.trim().strip_prefix("port: "))
        .collect();
    assert_eq!(probe_ports.len(), 2, "a readiness and a liveness probe");
    let services: Vec<&str> = deployment
        .lines()
        .filter_map(|l| l.trim().strip_prefix("service: "))
        .collect();
    assert_eq!(
        services,
        [r#""""#, "liveness"],
        "readiness \"\", liveness `liveness`"
    );
    // The dev overlay patches its own grace period and has no gRPC port beyond loopback;
    // deploy/validate.sh checks the rendered objects of every overlay.
    for overlay in ["mtls", "mesh"] {
        let file = TempConfig::new(
            "overlay-ports",
            &deploy_file(&format!("overlays/{overlay}/config.toml")),
        );
        let printout = print_config(gateway().args(deployment_args(&deployment, &file.path)));
        let (health_listen, _) = setting(&printout, "health-listen");
        for port in &probe_ports {
            assert_eq!(*port, port_of(&health_listen), "{overlay}: a probe port");
        }
        assert_eq!(
            container_port("grpc"),
            port_of(&setting(&printout, "listen").0),
            "{overlay}"
        );
        assert_eq!(container_port("health"), port_of(&health_listen));
        assert_eq!(
            container_port("admin"),
            port_of(&setting(&printout, "admin-listen").0)
        );
        let drain = seconds(&setting(&printout, "drain-delay").0);
        let grace = seconds(&setting(&printout, "shutdown-grace").0);
        assert!(
            termination > drain + grace,
            "{overlay}: terminationGracePeriodSeconds {termination} <= drain-delay {drain} + shutdown-grace {grace}"
        );
    }
}

// Before: the dependency layer copied neither oms-rest's manifest nor its sources (the image
// could not build since the REST client became a crate), and the build stage's FROM was a short
// name, which buildah and podman refuse without a registries.conf alias.
#[test]
fn the_dockerfile_stubs_every_workspace_members_targets_from_fully_qualified_images() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    for from in dockerfile.lines().filter(|l| l.starts_with("FROM ")) {
        let image = from.split_whitespace().nth(1).unwrap();
        let registry = image.split('/').next().unwrap();
        assert!(
            image.contains('/') && (registry.contains('.') || registry.contains(':')),
            "not a fully qualified image: {from}"
        );
    }
    let stage = &dockerfile[..dockerfile.find("COPY src src").expect("the sources' COPY")];
    let sources = &dockerfile[dockerfile.find("COPY src src").unwrap()..];
    let workspace: toml::Table =
        toml::from_str(&std::fs::read_to_string(root.join("Cargo.toml")).unwrap()).unwrap();
    let members: Vec<&str> = workspace["workspace"]["members"]
        .as_array()
        .expect("workspace members")
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    assert!(members.len() >= 3, "{members:?}");
    for member in members {
        let manifest = if member == "." {
            "Cargo.toml".to_owned()
        } else {
            format!("{member}/Cargo.toml")
        };
        let text = std::fs::read_to_string(root.join(&manifest)).unwrap();
        let manifest_dir = Path::new(&manifest).parent().unwrap();
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
        let src = manifest_dir.join("src").display().to_string();
        assert!(
            sources.contains(&format!("COPY {src} {src}")),
            "the build stage does not copy {src}"
        );
    }
}
