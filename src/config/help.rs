//! How `--help` and `-h` present the flags: each gateway flag under its heading (listener, OMS
//! upstream, security, limits, watch, replicas, webhooks, embedded sandbox, telemetry,
//! configuration file), with a one-line summary for `-h` and a value name that says what it
//! takes; `--help` keeps each flag's whole documentation (its doc comment). One table, so a new
//! flag without a line here fails the unit test below. Flags are listed in the table's order;
//! headings in the order clap first meets them among the settings' fields, which is the table's.

use clap::Command;

/// `(heading, [(long flag, value name or "", one-line summary for -h)])`.
type Group = (
    &'static str,
    &'static [(&'static str, &'static str, &'static str)],
);

#[rustfmt::skip]
const GROUPS: &[Group] = &[
    (
        "Listener",
        &[
            ("listen", "ADDR", "gRPC listen address (a host name is resolved at start)"),
            ("health-listen", "ADDR", "Also serve grpc.health.v1 alone, in plaintext, here (kubelet gRPC probes)"),
            ("admin-listen", "ADDR", "Admin HTTP listener: /metrics, /healthz, /readyz (`none`: off)"),
            ("drain-delay", "DURATION", "On SIGTERM/SIGINT, NOT_SERVING this long before the listener closes"),
            ("shutdown-grace", "DURATION", "Then how long calls in flight may take to finish"),
            ("worker-threads", "N", "Async runtime worker threads (1: the single-threaded scheduler)"),
            ("busy-poll", "DURATION", "Keep workers polling this long after a call instead of sleeping"),
        ],
    ),
    (
        "OMS upstream",
        &[
            ("oms-base-url", "URL", "OMS REST API base URL with its version path (unset: the embedded sandbox)"),
            ("oms-api-key", "KEY", "OMS API key (prefer --oms-api-key-file)"),
            ("oms-api-secret", "SECRET", "OMS API secret (prefer --oms-api-secret-file)"),
            ("oms-api-key-file", "PATH", "File holding the OMS API key, re-read when it changes"),
            ("oms-api-secret-file", "PATH", "File holding the OMS API secret, re-read when it changes"),
            ("upstream-connect-timeout", "DURATION", "TCP + TLS connect timeout to OMS"),
            ("upstream-timeout", "DURATION", "Timeout of one HTTP attempt to OMS"),
            ("upstream-pool-idle-timeout", "DURATION", "How long an idle connection to OMS is kept"),
            ("upstream-ca-file", "PATH", "Extra root CAs (PEM) trusted for OMS's certificate"),
            ("upstream-max-attempts", "N", "Attempts per upstream call (1: no retries)"),
            ("retry-budget-ratio", "FRACTION", "Retries add at most this fraction of recent requests"),
            ("retry-budget-floor", "PER_SECOND", "Retries per second allowed whatever the ratio"),
            ("breaker-threshold", "N", "Consecutive upstream failures that open the circuit"),
            ("breaker-cooldown", "DURATION", "First cool-down of an open circuit (doubles per failed probe)"),
            ("breaker-max-cooldown", "DURATION", "Longest cool-down of an open circuit"),
            ("default-deadline", "DURATION", "Deadline of a call whose caller set none"),
        ],
    ),
    (
        "Security",
        &[
            ("tls-cert", "PATH", "PEM certificate chain of the gRPC port (TLS)"),
            ("tls-key", "PATH", "PEM private key of --tls-cert"),
            ("tls-client-ca", "PATH", "PEM CA bundle: require client certificates (mTLS)"),
            ("caller-identity-header", "HEADER", "Trust a mesh sidecar's header for the caller's identity"),
            ("authz-policy", "PATH", "TOML policy: which callers may call which methods"),
            ("insecure-allow-unauthenticated", "", "Listen beyond loopback with no caller identity"),
            ("reload-interval", "DURATION", "How often TLS, policy and secret files are checked for changes"),
            ("tls-handshake-timeout", "DURATION", "Longest TLS handshake"),
            ("tls-max-handshakes", "N", "Most TLS handshakes in progress at once"),
        ],
    ),
    (
        "Limits",
        &[
            ("max-concurrent-calls", "N", "Calls in flight before more are shed (RESOURCE_EXHAUSTED)"),
            ("max-concurrent-streams-per-connection", "N", "HTTP/2 concurrent streams per connection"),
            ("max-message-bytes", "BYTES", "Largest request or response message"),
            ("idempotency-window", "DURATION", "How long a completed write's outcome is replayed for its key"),
            ("idempotency-max-entries", "N", "Most outcomes kept for replay"),
        ],
    ),
    (
        "Watch",
        &[
            ("watch-poll-interval", "DURATION", "Time between two polls of one watched resource"),
            ("watch-heartbeat-interval", "DURATION", "Heartbeat interval of a quiet watch stream"),
            ("watch-max-polls-per-second", "PER_SECOND", "Cap on upstream polls per second, all pollers together"),
            ("watch-unreachable-limit", "DURATION", "How long OMS may fail before watch streams end UNAVAILABLE"),
            ("watch-max-streams", "N", "Cap on concurrent watch streams"),
            ("watch-max-watched", "N", "Cap on concurrently watched resources (one poller each)"),
        ],
    ),
    (
        "Replicas",
        &[
            ("redis-url", "URL", "Redis shared by the replicas (unset: all state in this process)"),
            ("redis-cluster", "", "--redis-url names the seed nodes of a Redis Cluster"),
            ("redis-lease-ttl", "DURATION", "Lifetime of a replica's lease on a write or a watched resource"),
            ("redis-timeout", "DURATION", "Longest Redis command; past it this replica works alone"),
        ],
    ),
    (
        "Webhooks",
        &[
            ("webhook-secret-file", "PATH", "OMS webhook signing secrets; turns POST /webhooks/oms on"),
            ("watch-reconcile-interval", "DURATION", "Poll interval while verified webhooks arrive"),
            ("webhook-healthy-window", "DURATION", "Webhooks count as arriving this long after the last one"),
        ],
    ),
    (
        "Embedded sandbox",
        &[
            ("sandbox", "", "Serve the embedded sandbox beyond loopback too (its codes are not real)"),
            ("sandbox-spelling", "SPELLING", "Which documented spelling the sandbox emits"),
            ("sandbox-code-ttl", "DURATION", "Lifetime of a sandbox deposit code"),
            ("sandbox-token-ttl", "DURATION", "Lifetime of a sandbox access token"),
            ("sandbox-faults", "PLAN", "Seeded fault injection in the sandbox (`none`: none)"),
            ("sandbox-webhook-url", "URL", "The sandbox delivers signed webhooks here (`self`: this gateway)"),
            ("sandbox-webhook-faults", "PLAN", "Faults in those webhooks (`none`: none)"),
        ],
    ),
    (
        "Telemetry",
        &[
            ("log-level", "FILTER", "Log filter (tracing EnvFilter syntax, e.g. info,oms_gateway=debug)"),
            ("log-format", "FORMAT", "Log format"),
            ("otlp-endpoint", "URL", "OTLP/gRPC collector for the gateway's spans (unset: no export)"),
        ],
    ),
    (
        "Configuration file",
        &[
            ("config", "PATH", "TOML file whose keys are the long flag names"),
            ("print-config", "", "Print the effective configuration and exit"),
            ("check-config", "", "Apply every start-up rule, print the problems or the configuration"),
        ],
    ),
];

/// `command` with its gateway flags grouped and summarised (see the module documentation).
pub(super) fn present(command: Command) -> Command {
    command.term_width(0).mut_args(|arg| {
        let Some(long) = arg.get_long() else {
            return arg;
        };
        let Some((order, heading, value, summary)) = entry(long) else {
            return arg;
        };
        let Some(full) = arg.get_long_help().or(arg.get_help()).cloned() else {
            return arg;
        };
        let mut arg = arg
            .help_heading(heading)
            .display_order(order)
            .help(summary)
            .long_help(full);
        if !value.is_empty() && arg.get_action().takes_values() {
            arg = arg.value_name(value);
        }
        arg
    })
}

/// The place in the table, heading, value name and summary of `--long`.
fn entry(long: &str) -> Option<(usize, &'static str, &'static str, &'static str)> {
    GROUPS
        .iter()
        .flat_map(|(heading, flags)| flags.iter().map(move |flag| (*heading, flag)))
        .enumerate()
        .find(|(_, (_, (flag, _, _)))| *flag == long)
        .map(|(order, (heading, (_, value, summary)))| (order, heading, *value, *summary))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn every_gateway_flag_has_a_heading_and_every_line_names_a_flag() {
        let command = super::super::Cli::command();
        let longs: Vec<&str> = command
            .get_arguments()
            .filter_map(|arg| arg.get_long())
            .filter(|long| !["help", "version"].contains(long))
            .collect();
        let missing: Vec<&&str> = longs.iter().filter(|l| entry(l).is_none()).collect();
        assert!(missing.is_empty(), "flags with no heading: {missing:?}");
        let stale: Vec<&str> = GROUPS
            .iter()
            .flat_map(|(_, flags)| flags.iter().map(|(flag, _, _)| *flag))
            .filter(|flag| !longs.contains(flag))
            .collect();
        assert!(stale.is_empty(), "lines naming no flag: {stale:?}");
    }
}
