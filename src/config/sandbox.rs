//! The embedded sandbox's settings (flags of `oms-gateway` without an upstream, and of
//! `oms-gateway sandbox`), mapped onto the sandbox crate's own `SandboxSettings`.

use super::{Secret, flag_defaults};
use clap::{Args, ValueEnum};
use std::net::SocketAddr;
use std::time::Duration;

/// Which of the documentation's two spellings the embedded sandbox emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SpellingArg {
    /// The OpenAPI schema's spellings (`cash.locationId`, `transactionId`, ...).
    Openapi,
    /// The cash-in guide's spellings (`cash.cashLocationId`, `transaction`, nulls present, ...).
    Guide,
}

/// Settings of the embedded sandbox when the gateway starts it.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct EmbeddedSandboxSettings {
    /// Which documented spelling the embedded sandbox emits.
    #[arg(
        long = "sandbox-spelling",
        env = "OMS_SANDBOX_SPELLING",
        value_enum,
        default_value = "openapi"
    )]
    pub spelling: SpellingArg,

    /// Lifetime of a sandbox deposit code.
    #[arg(long = "sandbox-code-ttl", env = "OMS_SANDBOX_CODE_TTL", default_value = "1h", value_parser = super::ranges::positive_duration)]
    pub code_ttl: Duration,

    /// Lifetime of a sandbox access token.
    #[arg(long = "sandbox-token-ttl", env = "OMS_SANDBOX_TOKEN_TTL", default_value = "1h", value_parser = super::ranges::positive_duration)]
    pub token_ttl: Duration,

    /// Seeded fault injection in the sandbox, e.g.
    /// `seed=42,503=0.1,429=0.05,retry_after=1s,reset_before=0.03,reset_after=0.05,latency=0.1:50ms-300ms,revoke=0.01`;
    /// `none` for none. Changeable at run time with `PUT /sandbox/faults`.
    #[arg(long = "sandbox-faults", env = "OMS_SANDBOX_FAULTS", default_value = "none", value_parser = parse_fault_plan)]
    pub faults: oms_sandbox::FaultPlan,
}

fn parse_fault_plan(text: &str) -> Result<oms_sandbox::FaultPlan, String> {
    text.parse()
        .map_err(|e: oms_sandbox::FaultPlanError| e.to_string())
}

impl Default for EmbeddedSandboxSettings {
    fn default() -> Self {
        flag_defaults()
    }
}

// === impl EmbeddedSandboxSettings ===

impl EmbeddedSandboxSettings {
    /// The sandbox's configuration: these options, listening on `listen`, accepting `api_key`
    /// and `api_secret`.
    pub fn sandbox_config(
        &self,
        listen: SocketAddr,
        api_key: &str,
        api_secret: &Secret,
    ) -> oms_sandbox::SandboxSettings {
        oms_sandbox::SandboxSettings {
            listen,
            api_key: api_key.to_owned(),
            api_secret: api_secret.expose().to_owned(),
            token_ttl: self.token_ttl,
            code_ttl: self.code_ttl,
            spelling: match self.spelling {
                SpellingArg::Openapi => oms_sandbox::Spelling::OpenApi,
                SpellingArg::Guide => oms_sandbox::Spelling::Guide,
            },
            faults: self.faults.clone(),
            ..oms_sandbox::SandboxSettings::default()
        }
    }
}

/// `oms-gateway sandbox`: the simulator alone.
#[derive(Debug, Clone, Args)]
pub struct SandboxCommandSettings {
    /// Address the sandbox's REST server listens on.
    #[arg(long, env = "OMS_SANDBOX_LISTEN", default_value = "127.0.0.1:8080", value_parser = super::listen::address)]
    pub listen: SocketAddr,
    /// The API key the sandbox accepts.
    #[arg(
        long = "api-key",
        env = "OMS_SANDBOX_API_KEY",
        default_value = "sk_sdbx_local"
    )]
    pub api_key: String,
    /// The API secret the sandbox accepts.
    #[arg(
        long = "api-secret",
        env = "OMS_SANDBOX_API_SECRET",
        default_value = "sandbox-secret",
        hide_env_values = true
    )]
    pub api_secret: Secret,
    /// Sandbox behaviour.
    #[command(flatten)]
    pub options: EmbeddedSandboxSettings,
}
