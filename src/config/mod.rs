//! Every setting of the gateway: its flag, its environment variable and its default, in one
//! place. Nothing else in the crate reads the environment.
//!
//! Secrets are held in [`Secret`], whose `Debug` and `Display` print `[redacted]`, so a config
//! dumped into a log or a panic never leaks the OMS API secret.

mod admin;
mod file;
mod help;
mod listen;
mod ranges;
mod redis;
mod runtime;
mod sandbox;
mod security;
mod telemetry;
mod webhooks;

pub use admin::{AdminListen, AdminSettings};
pub use file::{ConfigFileArgs, EffectiveConfig, LoadError, LoadedCli};
/// URLs with their credentials masked, for `--print-config` and log lines: the REST client's own
/// grammar (it shows its base URL the same way).
pub use oms_rest::redact;
pub use redis::RedisSettings;
pub use runtime::{MAX_BUSY_POLL, RuntimeSettings};
pub use sandbox::{EmbeddedSandboxSettings, SandboxCommandSettings, SpellingArg};
pub use security::{IdentityHeader, SecuritySettings};
pub use telemetry::TelemetrySettings;
pub use webhooks::WebhookSettings;

use clap::{Args, FromArgMatches, Parser, Subcommand, ValueEnum};
use std::{net::SocketAddr, path::PathBuf, time::Duration};

/// A string that must never be printed (the OMS API secret, a bearer token): the REST client's
/// own type, so a secret read from a flag or a file reaches the request that sends it unwrapped.
pub use oms_rest::Secret;

/// The defaults of a group of flags: what clap parses from an empty command line with the
/// environment ignored. `Default` uses this, so the defaults in code and in `--help` are one.
fn flag_defaults<T: Args + FromArgMatches>() -> T {
    let command = T::augment_args(clap::Command::new("defaults")).mut_args(|arg| arg.env(None));
    // Only a default literal that does not parse can fail here: a bug the tests catch.
    let matches = command
        .try_get_matches_from(["defaults"])
        .expect("every flag's default parses");
    T::from_arg_matches(&matches).expect("every flag's default parses")
}

/// Parses `200us`, `250ms`, `3s`, `2m`, `1h` (or a bare number of seconds) into a [`Duration`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration such as 500ms, 3s, 2m or 1h"))?;
    let seconds = match unit.trim() {
        "us" | "µs" => value / 1_000_000.0,
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown duration unit `{other}` (use us, ms, s, m or h)"
            ));
        }
    };
    if !seconds.is_finite() || !(0.0..=86_400.0 * 365.0).contains(&seconds) {
        return Err(format!("`{text}` is out of range"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// The command line: `oms-gateway [serve flags]` or `oms-gateway sandbox [flags]`.
#[derive(Debug, Parser)]
#[command(
    name = "oms-gateway",
    version,
    about = "gRPC gateway in front of the Polygon OMS cash-in REST API",
    long_about = "gRPC gateway in front of the Polygon OMS cash-in REST API.\n\n\
        With OMS_BASE_URL, OMS_API_KEY and OMS_API_SECRET it serves the real OMS; without them it \
        starts an embedded OMS sandbox on loopback and serves that, so it works with no credentials \
        (beyond loopback only with --sandbox)."
)]
pub struct Cli {
    /// What to run; with no subcommand, the gateway.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The gateway's settings (when no subcommand is given).
    #[command(flatten)]
    pub gateway: GatewaySettings,
    /// Logging.
    #[command(flatten)]
    pub log: LogSettings,
    /// The configuration file (`--config`) and `--print-config` (see `file.rs`).
    #[command(flatten)]
    pub config_file: ConfigFileArgs,
    /// Span export (OTLP).
    #[command(flatten)]
    pub telemetry: TelemetrySettings,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run only the embedded OMS sandbox (a REST server), for testing REST code against it.
    Sandbox(SandboxCommandSettings),
}

/// Log settings.
#[derive(Debug, Clone, Args)]
pub struct LogSettings {
    /// Log filter, in tracing-subscriber EnvFilter syntax (e.g. `info`, `oms_gateway=debug`).
    #[arg(
        long = "log-level",
        env = "OMS_GATEWAY_LOG",
        default_value = "info",
        global = true
    )]
    pub level: String,
    /// Log format.
    #[arg(
        long = "log-format",
        env = "OMS_GATEWAY_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The gateway's settings.
#[derive(Debug, Clone, Args)]
pub struct GatewaySettings {
    /// Address the gRPC server listens on.
    #[arg(long, env = "OMS_GATEWAY_LISTEN", default_value = "127.0.0.1:50051", value_parser = listen::address)]
    pub listen: SocketAddr,

    /// The OMS REST API base URL, including its version path, e.g.
    /// https://sandbox-api.polygon.technology/v0.9. Unset: start the embedded sandbox.
    #[arg(
        long = "oms-base-url",
        env = "OMS_BASE_URL",
        value_hint = clap::ValueHint::Url,
        hide_env_values = true
    )]
    pub oms_base_url: Option<String>,

    /// The OMS API key (`sk_...`). Never logged.
    #[arg(long = "oms-api-key", env = "OMS_API_KEY", hide_env_values = true)]
    pub oms_api_key: Option<Secret>,

    /// The OMS API secret. Never logged.
    #[arg(
        long = "oms-api-secret",
        env = "OMS_API_SECRET",
        hide_env_values = true
    )]
    pub oms_api_secret: Option<Secret>,

    /// A file holding the OMS API key (a Kubernetes Secret mount); re-read when it changes.
    /// Instead of --oms-api-key.
    #[arg(
        long = "oms-api-key-file",
        env = "OMS_API_KEY_FILE",
        conflicts_with = "oms_api_key"
    )]
    pub oms_api_key_file: Option<PathBuf>,

    /// A file holding the OMS API secret (a Kubernetes Secret mount); re-read when it changes,
    /// and the next token exchange uses the new value. Instead of --oms-api-secret.
    #[arg(
        long = "oms-api-secret-file",
        env = "OMS_API_SECRET_FILE",
        conflicts_with = "oms_api_secret"
    )]
    pub oms_api_secret_file: Option<PathBuf>,

    /// Caller security: TLS, caller identity, authorization.
    #[command(flatten)]
    pub security: SecuritySettings,

    /// Upstream settings.
    #[command(flatten)]
    pub upstream: UpstreamSettings,

    /// Server limits and shutdown.
    #[command(flatten)]
    pub server: ServerSettings,

    /// The gateway's idempotency layer.
    #[command(flatten)]
    pub idempotency: IdempotencySettings,

    /// Watch stream settings.
    #[command(flatten)]
    pub watch: WatchSettings,

    /// State shared by the replicas of a fleet (unset: none).
    #[command(flatten)]
    pub redis: RedisSettings,

    /// The admin HTTP listener: metrics and probes.
    #[command(flatten)]
    pub admin: AdminSettings,

    /// Worker threads and busy polling.
    #[command(flatten)]
    pub runtime: RuntimeSettings,

    /// OMS webhooks and the reconcile interval they allow.
    #[command(flatten)]
    pub webhooks: WebhookSettings,

    /// Serve the embedded OMS sandbox (whose deposit codes are not real) even on an address
    /// beyond loopback, e.g. a shared test environment. Without OMS settings the gateway serves
    /// the sandbox only on loopback; elsewhere it refuses to start and names what is missing.
    #[arg(long = "sandbox", env = "OMS_GATEWAY_SANDBOX")]
    pub serve_sandbox: bool,

    /// The embedded sandbox's settings (used only without OMS_BASE_URL).
    #[command(flatten)]
    pub sandbox: EmbeddedSandboxSettings,
}

/// The gateway's own idempotency layer (see `docs/idempotency-and-guarantees.md`).
#[derive(Debug, Clone, PartialEq, Args)]
pub struct IdempotencySettings {
    /// How long a completed mutation's outcome is replayed for a repeat of its key.
    #[arg(long = "idempotency-window", env = "OMS_GATEWAY_IDEMPOTENCY_WINDOW", default_value = "24h", value_parser = ranges::positive_duration)]
    pub window: Duration,
    /// Most outcomes kept (about one CashIn each); beyond it the oldest are dropped first.
    #[arg(
        long = "idempotency-max-entries",
        env = "OMS_GATEWAY_IDEMPOTENCY_MAX_ENTRIES",
        default_value_t = 10_000,
        value_parser = ranges::within::<usize>(ranges::ENTRIES)
    )]
    pub max_entries: usize,
}

impl Default for IdempotencySettings {
    fn default() -> Self {
        flag_defaults()
    }
}

/// Limits of the gRPC server and its shutdown.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct ServerSettings {
    /// Calls in flight across all connections; beyond it calls are shed with RESOURCE_EXHAUSTED
    /// instead of queuing (health checks are exempt).
    #[arg(
        long = "max-concurrent-calls",
        env = "OMS_GATEWAY_MAX_CONCURRENT_CALLS",
        default_value_t = 1024,
        value_parser = ranges::within::<usize>(ranges::CALLS)
    )]
    pub max_concurrent_calls: usize,
    /// HTTP/2 concurrent streams per connection.
    #[arg(
        long = "max-concurrent-streams-per-connection",
        env = "OMS_GATEWAY_MAX_STREAMS_PER_CONNECTION",
        default_value_t = 256,
        value_parser = ranges::within::<u32>(ranges::STREAMS_PER_CONNECTION)
    )]
    pub max_streams_per_connection: u32,
    /// Largest request or response message, in bytes.
    #[arg(long = "max-message-bytes", env = "OMS_GATEWAY_MAX_MESSAGE_BYTES", default_value_t = 1024 * 1024, value_parser = ranges::within::<usize>(ranges::MESSAGE_BYTES))]
    pub max_message_bytes: usize,
    /// On SIGTERM/SIGINT: time between turning health NOT_SERVING and closing the listener, so
    /// the mesh stops routing here first.
    #[arg(long = "drain-delay", env = "OMS_GATEWAY_DRAIN_DELAY", default_value = "5s", value_parser = parse_duration)]
    pub drain_delay: Duration,
    /// After the listener closes: how long in-flight calls may take to finish.
    #[arg(long = "shutdown-grace", env = "OMS_GATEWAY_SHUTDOWN_GRACE", default_value = "20s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
    /// Also serve grpc.health.v1 alone, in plaintext, on this address: for probes that cannot
    /// speak TLS (the kubelet's native gRPC probes). Its `liveness` service is SERVING until exit.
    #[arg(long = "health-listen", env = "OMS_GATEWAY_HEALTH_LISTEN", value_parser = listen::address)]
    pub health_listen: Option<SocketAddr>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        flag_defaults()
    }
}

/// How watch streams poll OMS.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct WatchSettings {
    /// Time between two polls of one watched resource (jittered by ±10%).
    #[arg(long = "watch-poll-interval", env = "OMS_GATEWAY_WATCH_POLL_INTERVAL", default_value = "2s", value_parser = ranges::positive_duration)]
    pub poll_interval: Duration,
    /// Heartbeat interval of a quiet watch stream (well under Envoy's 5-minute stream idle timeout).
    #[arg(long = "watch-heartbeat-interval", env = "OMS_GATEWAY_WATCH_HEARTBEAT_INTERVAL", default_value = "30s", value_parser = ranges::positive_duration)]
    pub heartbeat_interval: Duration,
    /// Global cap on upstream poll requests per second, shared by all pollers.
    #[arg(
        long = "watch-max-polls-per-second",
        env = "OMS_GATEWAY_WATCH_MAX_POLLS_PER_SECOND",
        default_value_t = 25.0,
        value_parser = ranges::polls_per_second
    )]
    pub max_polls_per_second: f64,
    /// How long OMS may fail before watch streams end with UNAVAILABLE.
    #[arg(long = "watch-unreachable-limit", env = "OMS_GATEWAY_WATCH_UNREACHABLE_LIMIT", default_value = "60s", value_parser = parse_duration)]
    pub unreachable_limit: Duration,
    /// Cap on concurrent watch streams.
    #[arg(
        long = "watch-max-streams",
        env = "OMS_GATEWAY_WATCH_MAX_STREAMS",
        default_value_t = 10_000,
        value_parser = ranges::within::<usize>(ranges::ENTRIES)
    )]
    pub max_streams: usize,
    /// Cap on concurrently watched resources (one poller each).
    #[arg(
        long = "watch-max-watched",
        env = "OMS_GATEWAY_WATCH_MAX_WATCHED",
        default_value_t = 2_000,
        value_parser = ranges::within::<usize>(ranges::ENTRIES)
    )]
    pub max_watched: usize,
}

impl Default for WatchSettings {
    fn default() -> Self {
        flag_defaults()
    }
}

/// How the gateway talks to OMS.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct UpstreamSettings {
    /// TCP + TLS connect timeout to OMS.
    #[arg(long = "upstream-connect-timeout", env = "OMS_GATEWAY_UPSTREAM_CONNECT_TIMEOUT", default_value = "3s", value_parser = ranges::positive_duration)]
    pub connect_timeout: Duration,

    /// Timeout of one HTTP attempt to OMS (the caller's deadline may cut it shorter).
    #[arg(long = "upstream-timeout", env = "OMS_GATEWAY_UPSTREAM_TIMEOUT", default_value = "10s", value_parser = ranges::positive_duration)]
    pub request_timeout: Duration,

    /// How long an idle pooled connection is kept; below common upstream keep-alives (60 s) so
    /// the gateway never sends on a connection the server is closing.
    #[arg(long = "upstream-pool-idle-timeout", env = "OMS_GATEWAY_UPSTREAM_POOL_IDLE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub pool_idle_timeout: Duration,

    /// A PEM file of extra root CAs to trust for OMS's TLS certificate (a private CA or a TLS
    /// proxy); the public web roots are always trusted.
    #[arg(long = "upstream-ca-file", env = "OMS_GATEWAY_UPSTREAM_CA_FILE")]
    pub ca_file: Option<std::path::PathBuf>,

    /// Attempts per upstream call for reads and keyed writes (1 = no retries).
    #[arg(long = "upstream-max-attempts", env = "OMS_GATEWAY_UPSTREAM_MAX_ATTEMPTS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=10))]
    pub max_attempts: u32,

    /// Retries may add at most this fraction of recent upstream requests (over 10 s).
    #[arg(
        long = "retry-budget-ratio",
        env = "OMS_GATEWAY_RETRY_BUDGET_RATIO",
        default_value_t = 0.2,
        value_parser = ranges::fraction
    )]
    pub retry_budget_ratio: f64,

    /// Retries allowed per second regardless of the ratio, so low traffic can still retry.
    #[arg(
        long = "retry-budget-floor",
        env = "OMS_GATEWAY_RETRY_BUDGET_FLOOR",
        default_value_t = 5.0,
        value_parser = ranges::retries_per_second
    )]
    pub retry_budget_floor: f64,

    /// Consecutive upstream failures (connect errors, resets, timeouts, 5xx, 429) that open the
    /// circuit: calls then fail at once with UNAVAILABLE until a probe succeeds.
    #[arg(
        long = "breaker-threshold",
        env = "OMS_GATEWAY_BREAKER_THRESHOLD",
        default_value_t = 5,
        value_parser = ranges::within::<u32>(ranges::FAILURES)
    )]
    pub breaker_threshold: u32,

    /// First cool-down of an open circuit before a probe; doubles per failed probe.
    #[arg(long = "breaker-cooldown", env = "OMS_GATEWAY_BREAKER_COOLDOWN", default_value = "1s", value_parser = ranges::positive_duration)]
    pub breaker_cooldown: Duration,

    /// Longest cool-down of an open circuit.
    #[arg(long = "breaker-max-cooldown", env = "OMS_GATEWAY_BREAKER_MAX_COOLDOWN", default_value = "15s", value_parser = ranges::positive_duration)]
    pub breaker_max_cooldown: Duration,

    /// The deadline applied to a call whose caller set none, so nothing waits without bound.
    #[arg(long = "default-deadline", env = "OMS_GATEWAY_DEFAULT_DEADLINE", default_value = "30s", value_parser = ranges::positive_duration)]
    pub default_deadline: Duration,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        flag_defaults()
    }
}

// === impl UpstreamSettings ===

impl UpstreamSettings {
    /// The REST client's settings (all of these but `--default-deadline`, which the services
    /// apply).
    pub fn client(&self) -> oms_rest::Settings {
        oms_rest::Settings {
            connect_timeout: self.connect_timeout,
            request_timeout: self.request_timeout,
            pool_idle_timeout: self.pool_idle_timeout,
            ca_file: self.ca_file.clone(),
            max_attempts: self.max_attempts,
            retry_budget_ratio: self.retry_budget_ratio,
            retry_budget_floor: self.retry_budget_floor,
            breaker_threshold: self.breaker_threshold,
            breaker_cooldown: self.breaker_cooldown,
            breaker_max_cooldown: self.breaker_max_cooldown,
        }
    }
}

/// Where the gateway's upstream is.
#[derive(Debug, Clone)]
pub enum UpstreamTarget {
    /// The real OMS (or any OMS-compatible server).
    Remote {
        /// Base URL without a trailing slash.
        base_url: String,
        /// API key.
        api_key: String,
        /// API secret.
        api_secret: Secret,
    },
    /// Start the embedded sandbox.
    Sandbox,
}

// === impl GatewaySettings ===

impl GatewaySettings {
    /// A configuration for tests and embedding: listen on an ephemeral loopback port, embedded
    /// sandbox, default timeouts, no drain delay.
    pub fn for_tests() -> Self {
        let mut config: Self = flag_defaults();
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.admin.listen = AdminListen::On(SocketAddr::from(([127, 0, 0, 1], 0)));
        config.server.drain_delay = Duration::ZERO;
        config.server.shutdown_grace = Duration::from_secs(5);
        config
    }

    /// Resolves the upstream: all three OMS settings, or none (the sandbox, on a loopback
    /// `--listen` or with `--sandbox`). A partial set, or none beyond loopback without
    /// `--sandbox`, is an error that names what is missing. The key and secret may come from
    /// files (`--oms-api-key-file`, `--oms-api-secret-file`), read here.
    pub fn upstream_target(&self) -> Result<UpstreamTarget, String> {
        let key_set = self.oms_api_key.is_some() || self.oms_api_key_file.is_some();
        let secret_set = self.oms_api_secret.is_some() || self.oms_api_secret_file.is_some();
        let missing = || -> String {
            [
                ("OMS_BASE_URL (--oms-base-url)", self.oms_base_url.is_none()),
                (
                    "OMS_API_KEY (--oms-api-key or --oms-api-key-file)",
                    !key_set,
                ),
                (
                    "OMS_API_SECRET (--oms-api-secret or --oms-api-secret-file)",
                    !secret_set,
                ),
            ]
            .into_iter()
            .filter_map(|(name, absent)| absent.then_some(name))
            .collect::<Vec<_>>()
            .join(", ")
        };
        let none = self.oms_base_url.is_none() && !key_set && !secret_set;
        if none && (self.serve_sandbox || self.listen.ip().is_loopback()) {
            return Ok(UpstreamTarget::Sandbox);
        }
        if none {
            return Err(format!(
                "no OMS settings, and {} is not a loopback address: missing {}. Without them the \
                 gateway serves its embedded OMS sandbox, whose deposit codes are not real, and \
                 only on loopback unless told otherwise: set them to serve OMS, or pass --sandbox \
                 (OMS_GATEWAY_SANDBOX=true) to serve the sandbox here on purpose",
                self.listen,
                missing()
            ));
        }
        if self.serve_sandbox {
            return Err(
                "--sandbox (OMS_GATEWAY_SANDBOX) serves the embedded OMS sandbox, but OMS settings \
                 are set too: drop one or the other"
                    .to_owned(),
            );
        }
        let Some(url) = self.oms_base_url.as_ref().filter(|_| key_set && secret_set) else {
            return Err(format!(
                "set all of OMS_BASE_URL, OMS_API_KEY and OMS_API_SECRET (the key and secret may \
                 be files: OMS_API_KEY_FILE, OMS_API_SECRET_FILE), or none of them for the \
                 embedded sandbox; missing: {}",
                missing()
            ));
        };
        let url = url.trim().trim_end_matches('/').to_owned();
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(format!(
                "OMS_BASE_URL must be an http(s) URL, got `{}`",
                redact::url(&url)
            ));
        }
        let (api_key, api_secret) = self.api_credentials()?;
        Ok(UpstreamTarget::Remote {
            base_url: url,
            api_key,
            api_secret,
        })
    }

    /// The secret files, if any (watched for changes while the gateway runs).
    pub fn credential_files(&self) -> Vec<PathBuf> {
        self.oms_api_key_file
            .iter()
            .chain(self.oms_api_secret_file.iter())
            .cloned()
            .collect()
    }

    /// The API key and secret, from their flags or files (read now, surrounding whitespace
    /// trimmed, as `echo` and editors add a newline).
    pub fn api_credentials(&self) -> Result<(String, Secret), String> {
        let read = |path: &PathBuf, what: &str| {
            std::fs::read_to_string(path)
                .map(|text| text.trim().to_owned())
                .map_err(|e| {
                    format!(
                        "cannot read the OMS API {what} file {}: {e}",
                        path.display()
                    )
                })
                .and_then(|text| {
                    if text.is_empty() {
                        Err(format!(
                            "the OMS API {what} file {} is empty",
                            path.display()
                        ))
                    } else {
                        Ok(text)
                    }
                })
        };
        let api_key = match (&self.oms_api_key_file, &self.oms_api_key) {
            (Some(path), _) => read(path, "key")?,
            (None, Some(key)) => key.expose().to_owned(),
            (None, None) => return Err("OMS_API_KEY is not set".into()),
        };
        let api_secret = match (&self.oms_api_secret_file, &self.oms_api_secret) {
            (Some(path), _) => Secret::new(read(path, "secret")?),
            (None, Some(secret)) => secret.clone(),
            (None, None) => return Err("OMS_API_SECRET is not set".into()),
        };
        Ok((api_key, api_secret))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_every_unit() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("3s").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert!(parse_duration("3 days").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn defaults_come_from_the_flags() {
        let upstream = UpstreamSettings::default();
        assert_eq!(upstream.request_timeout, Duration::from_secs(10));
        assert_eq!(upstream.max_attempts, 3);
        assert_eq!(
            ServerSettings::default().drain_delay,
            Duration::from_secs(5)
        );
        assert_eq!(
            WatchSettings::default().poll_interval,
            Duration::from_secs(2)
        );
        assert!(SecuritySettings::default().tls_cert.is_none());
        assert!(EmbeddedSandboxSettings::default().faults.is_none());
    }

    #[test]
    fn secrets_never_print() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?} {secret}"), "[redacted] [redacted]");
        let mut config = GatewaySettings::for_tests();
        config.oms_api_secret = Some(secret);
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn a_partial_upstream_configuration_names_what_is_missing() {
        let mut config = GatewaySettings::for_tests();
        config.oms_base_url = Some("https://example.test/v0.9".into());
        let err = config.upstream_target().unwrap_err();
        assert!(
            err.contains("OMS_API_KEY") && err.contains("OMS_API_SECRET"),
            "{err}"
        );
        assert!(!err.contains("missing: OMS_BASE_URL"));
    }

    #[test]
    fn without_oms_settings_the_sandbox_serves_loopback_or_whoever_asks() {
        let mut config = GatewaySettings::for_tests();
        assert!(matches!(
            config.upstream_target(),
            Ok(UpstreamTarget::Sandbox)
        ));
        config.listen = SocketAddr::from(([0, 0, 0, 0], 50051));
        let err = config.upstream_target().unwrap_err();
        for name in [
            "OMS_BASE_URL",
            "--oms-api-key-file",
            "OMS_API_SECRET",
            "--sandbox",
        ] {
            assert!(err.contains(name), "{name}: {err}");
        }
        config.serve_sandbox = true;
        assert!(matches!(
            config.upstream_target(),
            Ok(UpstreamTarget::Sandbox)
        ));
        config.oms_base_url = Some("https://example.test/v0.9".into());
        assert!(config.upstream_target().unwrap_err().contains("--sandbox"));
    }
}
