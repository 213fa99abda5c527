//! Which upstream the gateway serves, and the REST client to it: the OMS the settings name, or
//! the embedded sandbox started here on loopback (an ephemeral port, a random secret only this
//! process knows); with a remote OMS, its credential files followed while the gateway runs.
//!
//! Fail closed: without OMS settings the sandbox is served only when the gRPC listener is on a
//! loopback address or `--sandbox` asks for it (`GatewaySettings::upstream_target`); otherwise
//! the gateway does not start. The sandbox says so at every start (a WARN line), in `/readyz` and
//! in the `oms_gateway_sandbox` gauge (`admin.rs`).

use crate::config::{GatewaySettings, Secret, UpstreamTarget};
use crate::metrics::Metrics;
use crate::security::reload;
use crate::shutdown::Shutdown;
use crate::start::StartError;
use oms_rest::{OmsClient, auth::Credentials};
use oms_sandbox::{self as sandbox, SandboxHandle, SandboxSettings};
use std::net::SocketAddr;
use std::sync::Arc;

/// The upstream, its URL as it may be shown (any password masked, see `config::redact`) and its
/// client (recording into `metrics`); with a remote OMS, its credential files followed by a task
/// `shutdown` owns.
pub(crate) async fn connect_upstream(
    config: &GatewaySettings,
    metrics: &Arc<Metrics>,
    shutdown: &mut Shutdown,
) -> Result<(Option<SandboxHandle>, String, OmsClient), StartError> {
    let (sandbox, base_url, credentials) = resolve_upstream(config).await?;
    let client = crate::upstream::client(&base_url, credentials, &config.upstream, metrics)
        .map_err(StartError::Config)?;
    if sandbox.is_none() {
        follow_credential_files(config, &client, shutdown);
    }
    Ok((sandbox, crate::config::redact::url(&base_url), client))
}

/// The upstream: the configured OMS, or the embedded sandbox started here.
async fn resolve_upstream(
    config: &GatewaySettings,
) -> Result<(Option<SandboxHandle>, String, Credentials), StartError> {
    match config.upstream_target().map_err(StartError::Config)? {
        UpstreamTarget::Remote {
            base_url,
            api_key,
            api_secret,
        } => Ok((
            None,
            base_url,
            Credentials {
                api_key,
                api_secret,
            },
        )),
        UpstreamTarget::Sandbox => {
            // At every start: a deployment that meant OMS sees at once that it is not.
            tracing::warn!(
                listen = %config.listen,
                on_purpose = config.serve_sandbox,
                "serving the embedded OMS sandbox, not OMS: its cash-ins and deposit codes are \
                 not real (no OMS settings; beyond loopback only with --sandbox)"
            );
            let sandbox_config = sandbox_config(config);
            let handle = sandbox::start(sandbox_config.clone())
                .await
                .map_err(|source| StartError::Bind {
                    addr: sandbox_config.listen,
                    flag: "the embedded sandbox's own loopback port",
                    source,
                })?;
            let credentials = Credentials {
                api_key: sandbox_config.api_key.clone(),
                api_secret: oms_rest::Secret::new(sandbox_config.api_secret),
            };
            let base_url = handle.base_url();
            Ok((Some(handle), base_url, credentials))
        }
    }
}

/// Re-reads `--oms-api-key-file` / `--oms-api-secret-file` when they change: the next token
/// exchange uses the new credentials.
fn follow_credential_files(config: &GatewaySettings, client: &OmsClient, shutdown: &mut Shutdown) {
    let files = config.credential_files();
    if files.is_empty() {
        return;
    }
    let (gateway_config, client) = (config.clone(), client.clone());
    shutdown.adopt([reload::spawn(
        "OMS credentials",
        files,
        config.security.reload_interval,
        move |_| {
            let (api_key, api_secret) = gateway_config.api_credentials()?;
            client.token_source().set_credentials(Credentials {
                api_key,
                api_secret,
            });
            Ok(())
        },
    )]);
}

/// The embedded sandbox: loopback, an ephemeral port, a random secret only this process knows.
fn sandbox_config(config: &GatewaySettings) -> SandboxSettings {
    let secret = Secret::new(uuid::Uuid::new_v4().simple().to_string());
    config.sandbox.sandbox_config(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        "sk_sdbx_embedded",
        &secret,
    )
}
