//! The webhook settings (issue 13): where the Standard Webhooks secret is read from (its
//! presence turns `POST /webhooks/oms` on), the relaxed poll interval pollers use while webhooks
//! arrive, and how long after the last good delivery webhooks still count as arriving.

use super::parse_duration;
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

/// OMS webhooks and the watch cadence they allow.
#[derive(Debug, Clone, PartialEq, Args)]
pub struct WebhookSettings {
    /// File holding the OMS webhook signing secret(s) (`whsec_` + base64, one per line; several during a rotation); turns `POST /webhooks/oms` on the admin listener on.
    #[arg(long = "webhook-secret-file", env = "OMS_GATEWAY_WEBHOOK_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,
    /// Poll interval of the watch pollers while verified webhooks arrive (polling is then only the safety net).
    #[arg(long = "watch-reconcile-interval", env = "OMS_GATEWAY_WATCH_RECONCILE_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub reconcile_interval: Duration,
    /// Webhooks count as arriving for this long after the last verified delivery; then pollers return to --watch-poll-interval.
    #[arg(long = "webhook-healthy-window", env = "OMS_GATEWAY_WEBHOOK_HEALTHY_WINDOW", default_value = "3m", value_parser = parse_duration)]
    pub healthy_window: Duration,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        super::flag_defaults()
    }
}
