//! `--check-config`: every rule the start applies to a configuration that parsed, run without
//! binding a port, starting the sandbox or calling OMS, so CI can refuse a configuration before a
//! rollout does. The rules are the start's own functions (`upstream_target`,
//! `security::check_listen`, the TLS and policy loaders, the REST client's constructor, the
//! webhook checks, the OTLP endpoint's), called here one after the other so that every problem is
//! reported, not only the first. What clap checks (types, ranges, mutually exclusive flags, the
//! configuration file's keys) has already passed by then: those errors exit 2 before this runs.

use crate::config::{AdminListen, GatewaySettings, LoadedCli, UpstreamTarget, redact};
use crate::metrics::Metrics;
use crate::security::{self, reload};
use std::fmt;
use std::net::SocketAddr;

/// What `--check-config` found.
#[derive(Debug)]
pub struct Report {
    /// Each rule the start would refuse the configuration by: the gateway would not start.
    pub problems: Vec<String>,
    /// What starts, but deserves a look (the embedded sandbox beyond loopback, no caller
    /// identity on purpose, a log filter that falls back to `info`).
    pub warnings: Vec<String>,
    /// One line on what would run: the upstream, the listeners and how callers are identified.
    pub summary: String,
}

// === impl Report ===

impl Report {
    /// Whether the gateway would start with this configuration.
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for Report {
    /// The problems, numbered, or the summary; warnings after either. Each line is a TOML
    /// comment when the configuration passed, so the report and `--print-config`'s printout
    /// together still read as a configuration file.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.passed() {
            writeln!(f, "# oms-gateway --check-config: OK. {}", self.summary)?;
            for warning in &self.warnings {
                writeln!(f, "# warning: {warning}")?;
            }
            return Ok(());
        }
        let count = self.problems.len();
        let noun = if count == 1 { "problem" } else { "problems" };
        writeln!(
            f,
            "oms-gateway --check-config: {count} {noun}; the gateway would not start:"
        )?;
        for (n, problem) in self.problems.iter().enumerate() {
            writeln!(f, "  {}. {problem}", n + 1)?;
        }
        for warning in &self.warnings {
            writeln!(f, "  warning: {warning}")?;
        }
        Ok(())
    }
}

/// Runs every start-up rule on `loaded`; see the module documentation.
pub fn check_config(loaded: &LoadedCli) -> Report {
    let config = &loaded.cli.gateway;
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let upstream = upstream(config, &mut problems, &mut warnings);
    if let Err(problem) = security::check_listen(config.listen, &config.security) {
        problems.push(format!("listener: {problem}"));
    } else if config.security.insecure_allow_unauthenticated && !config.listen.ip().is_loopback() {
        warnings.push(format!(
            "--insecure-allow-unauthenticated: anyone who reaches {} can call every RPC",
            config.listen
        ));
    }
    match reload::tls_files(&config.security) {
        Ok(Some(files)) => {
            if let Err(problem) = files.load() {
                problems.push(format!("TLS: {problem}"));
            }
        }
        Ok(None) => {}
        Err(problem) => problems.push(format!("TLS: {problem}")),
    }
    if let Some(path) = &config.security.authz_policy
        && let Err(problem) = security::load_policy(path)
    {
        problems.push(problem);
    }
    problems.extend(redis(config));
    let sandbox = matches!(upstream, Some(UpstreamTarget::Sandbox));
    let webhooks = crate::webhooks::check(config, sandbox);
    problems.extend(
        webhooks
            .into_iter()
            .map(|problem| format!("webhooks: {problem}")),
    );
    problems.extend(port_collisions(config));
    if let Some(endpoint) = &loaded.cli.telemetry.otlp_endpoint
        && let Err(problem) = crate::telemetry::otlp::check_endpoint(endpoint)
    {
        problems.push(problem);
    }
    if tracing_subscriber::EnvFilter::try_new(&loaded.cli.log.level).is_err() {
        warnings.push(format!(
            "--log-level `{}` does not parse; the gateway logs at `info`",
            loaded.cli.log.level
        ));
    }
    let summary = summary(config, upstream.as_ref());
    Report {
        problems,
        warnings,
        summary,
    }
}

/// The upstream the settings name, checked as the start checks it: the OMS settings all or none
/// (their files read), and the REST client built (the base URL, plain http only to loopback, the
/// CA file), without a request.
fn upstream(
    config: &GatewaySettings,
    problems: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Option<UpstreamTarget> {
    let target = match config.upstream_target() {
        Ok(target) => target,
        Err(problem) => {
            problems.push(format!("upstream: {problem}"));
            return None;
        }
    };
    match &target {
        UpstreamTarget::Remote {
            base_url,
            api_key,
            api_secret,
        } => {
            let (metrics, _) = Metrics::registered();
            let credentials = oms_rest::auth::Credentials {
                api_key: api_key.clone(),
                api_secret: api_secret.clone(),
            };
            if let Err(problem) =
                crate::upstream::client(base_url, credentials, &config.upstream, &metrics)
            {
                problems.push(format!("upstream: {problem}"));
            }
        }
        UpstreamTarget::Sandbox if !config.listen.ip().is_loopback() => warnings.push(format!(
            "--sandbox: {} serves the embedded OMS sandbox, whose deposit codes are not real",
            config.listen
        )),
        UpstreamTarget::Sandbox => {}
    }
    Some(target)
}

/// `--redis-url` parses (each seed node's, with `--redis-cluster`). The redis crate's messages
/// do not quote the URL, so its password stays out.
fn redis(config: &GatewaySettings) -> Vec<String> {
    let Some(url) = &config.redis.url else {
        return Vec::new();
    };
    url.expose()
        .split(',')
        .map(str::trim)
        .filter_map(|node| ::redis::Client::open(node).err())
        .map(|e| format!("--redis-url: {e}"))
        .collect()
}

/// Two listeners of this gateway on one port (the same address, or one of them on every
/// interface of the other's family): the second bind would fail.
fn port_collisions(config: &GatewaySettings) -> Vec<String> {
    let mut listeners: Vec<(&str, SocketAddr)> = vec![("--listen", config.listen)];
    if let Some(health) = config.server.health_listen {
        listeners.push(("--health-listen", health));
    }
    if let AdminListen::On(admin) = config.admin.listen {
        listeners.push(("--admin-listen", admin));
    }
    let mut problems = Vec::new();
    for (i, (flag, addr)) in listeners.iter().enumerate() {
        for (other, other_addr) in &listeners[i + 1..] {
            // Every interface covers its family's addresses; `[::]` both families (dual stack).
            let covers = |a: &SocketAddr, b: &SocketAddr| {
                a.ip().is_unspecified() && (a.is_ipv6() || b.is_ipv4())
            };
            let same_host = addr.ip() == other_addr.ip()
                || covers(addr, other_addr)
                || covers(other_addr, addr);
            if addr.port() != 0 && addr.port() == other_addr.port() && same_host {
                problems.push(format!(
                    "ports: {flag} {addr} and {other} {other_addr} are the same port; change one"
                ));
            }
        }
    }
    problems
}

/// What would run, in one line.
fn summary(config: &GatewaySettings, upstream: Option<&UpstreamTarget>) -> String {
    let upstream = match upstream {
        Some(UpstreamTarget::Remote { base_url, .. }) => {
            format!("OMS at {}", redact::url(base_url))
        }
        Some(UpstreamTarget::Sandbox) => "the embedded OMS sandbox".to_owned(),
        None => "none".to_owned(),
    };
    let security = &config.security;
    let callers = match (&security.tls_client_ca, security.caller_identity_header) {
        (Some(_), _) => "client certificates (mTLS)".to_owned(),
        (None, Some(header)) => format!("the mesh header {}", header.name()),
        (None, None) => "none (anonymous callers)".to_owned(),
    };
    let admin = match config.admin.listen {
        AdminListen::On(addr) => addr.to_string(),
        AdminListen::Off => "none".to_owned(),
    };
    let tls = if security.tls_cert.is_some() {
        "TLS"
    } else {
        "plaintext"
    };
    format!(
        "gRPC ({tls}) on {}, upstream {upstream}, caller identity {callers}, authorization \
         policy {}, admin listener {admin}.",
        config.listen,
        if security.authz_policy.is_some() {
            "yes"
        } else {
            "none"
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_collide_on_one_port_of_one_host() {
        let collisions = |grpc: &str, admin: &str| {
            let mut config = GatewaySettings::for_tests();
            config.listen = grpc.parse().unwrap();
            config.admin.listen = AdminListen::On(admin.parse().unwrap());
            port_collisions(&config).len()
        };
        assert_eq!(collisions("0.0.0.0:7000", "127.0.0.1:7000"), 1);
        assert_eq!(collisions("[::]:7000", "127.0.0.1:7000"), 1);
        assert_eq!(collisions("127.0.0.1:7000", "127.0.0.1:7000"), 1);
        assert_eq!(collisions("0.0.0.0:7000", "[::1]:7000"), 0);
        assert_eq!(collisions("127.0.0.1:7000", "127.0.0.2:7000"), 0);
        assert_eq!(collisions("127.0.0.1:0", "127.0.0.1:0"), 0);
    }
}
