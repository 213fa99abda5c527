//! The webhook settings: where the Standard Webhooks secret is read from (its
//! presence turns `POST /webhooks/oms` on), the relaxed poll interval pollers use while webhooks
//! arrive, and how long after the last good delivery webhooks still count as arriving.

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
    #[arg(long = "watch-reconcile-interval", env = "OMS_GATEWAY_WATCH_RECONCILE_INTERVAL", default_value = "30s", value_parser = super::ranges::positive_duration)]
    pub reconcile_interval: Duration,
    /// Webhooks count as arriving for this long after the last verified delivery; then pollers return to --watch-poll-interval.
    #[arg(long = "webhook-healthy-window", env = "OMS_GATEWAY_WEBHOOK_HEALTHY_WINDOW", default_value = "3m", value_parser = super::ranges::positive_duration)]
    pub healthy_window: Duration,
    /// The embedded sandbox delivers signed webhooks of every state change here (`self`: this gateway's own POST /webhooks/oms), signed with the first --webhook-secret-file secret.
    #[arg(
        long = "sandbox-webhook-url",
        env = "OMS_SANDBOX_WEBHOOK_URL",
        value_hint = clap::ValueHint::Url,
        hide_env_values = true
    )]
    pub sandbox_url: Option<String>,
    /// Faults in the embedded sandbox's webhooks, probabilities per event: `drop=0.1,duplicate=0.2,reorder=0.2,bad-signature=0.1` (`none`: none).
    #[arg(long = "sandbox-webhook-faults", env = "OMS_SANDBOX_WEBHOOK_FAULTS", default_value = "none", value_parser = parse_webhook_faults)]
    pub sandbox_faults: oms_sandbox::WebhookFaults,
}

/// Parses `--sandbox-webhook-faults`.
fn parse_webhook_faults(text: &str) -> Result<oms_sandbox::WebhookFaults, String> {
    let mut faults = oms_sandbox::WebhookFaults::default();
    if text.trim().eq_ignore_ascii_case("none") {
        return Ok(faults);
    }
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("`{pair}` is not name=probability"))?;
        let p: f64 = value
            .trim()
            .parse()
            .ok()
            .filter(|p| (0.0..=1.0).contains(p))
            .ok_or_else(|| format!("`{value}` is not a probability between 0 and 1"))?;
        match name.trim() {
            "drop" => faults.drop = p,
            "duplicate" => faults.duplicate = p,
            "reorder" => faults.reorder = p,
            "bad-signature" => faults.bad_signature = p,
            other => {
                return Err(format!(
                    "unknown webhook fault `{other}` (drop, duplicate, reorder, bad-signature)"
                ));
            }
        }
    }
    Ok(faults)
}

impl Default for WebhookSettings {
    fn default() -> Self {
        super::flag_defaults()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_faults_parse_by_name_and_refuse_what_is_not_a_probability() {
        let faults = parse_webhook_faults("drop=0.5, bad-signature=1").unwrap();
        assert_eq!(
            (faults.drop, faults.bad_signature, faults.duplicate),
            (0.5, 1.0, 0.0)
        );
        assert_eq!(parse_webhook_faults("none"), Ok(Default::default()));
        assert!(parse_webhook_faults("drop=2").is_err());
        assert!(
            parse_webhook_faults("lose=0.1")
                .unwrap_err()
                .contains("lose")
        );
    }
}
