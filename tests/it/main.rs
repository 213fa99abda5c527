//! The gateway's black-box tests in one binary, so that an edit links one test executable
//! instead of one a file. Each module is one area (its own doc says what it covers); they share
//! [`common`]. Three test files stay binaries of their own: `tests/secrets.rs` and
//! `tests/security.rs` each install the process's one log subscriber (trace-level text, and
//! info-level JSON), and `tests/fuzz.rs` keeps its documented command
//! (`cargo test --release --test fuzz`).

#[path = "../common/mod.rs"]
mod common;

mod auth;
mod bounds;
mod cash_in_rpcs;
mod check_config;
mod cli;
mod config_file;
mod dashboards;
mod deliveries;
mod delivery_paths;
mod deploy_manifests;
mod drift;
mod errors;
mod fidelity;
mod fleet_budget;
mod fleet_faults;
mod fleet_kit;
mod fleet_leases;
mod fleet_propagation;
mod health_reflection;
mod idempotency;
mod limits;
mod metrics;
mod money_paths;
mod probe_port;
mod quotas;
mod quotas_fleet;
mod reliability;
mod reliability_malformed;
mod replicas;
mod rest_requests;
mod shutdown;
mod smoke;
mod spelling;
mod tls;
mod token_outage;
mod tracing;
mod validation;
mod watch;
mod watch_fairness;
mod webhooks;
