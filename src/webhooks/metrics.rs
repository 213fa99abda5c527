//! The webhook endpoint's and the reconcile cadence's metrics, read at scrape time by the
//! `Live` collector: deliveries by outcome, re-reads made for them, whether pollers are relaxed
//! to the reconcile interval, and both intervals.

use super::Webhooks;
use crate::metrics::OutcomeLabels;
use crate::watch::WatchHub;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use std::sync::atomic::Ordering;
use std::time::Duration;

fn seconds(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: Duration,
) -> Result<(), std::fmt::Error> {
    let gauge = ConstGauge::new(value.as_secs_f64());
    gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)
}

/// Encodes the metrics of `hub`'s cadence and of `webhooks` (when on).
pub fn encode(
    encoder: &mut DescriptorEncoder,
    hub: &WatchHub,
    webhooks: Option<&Webhooks>,
) -> Result<(), std::fmt::Error> {
    crate::metrics::encode_gauge(
        encoder,
        "oms_gateway_watch_reconciling",
        "1 while verified OMS webhooks arrive and pollers use --watch-reconcile-interval, else 0.",
        i64::from(hub.reconciling()),
    )?;
    seconds(
        encoder,
        "oms_gateway_watch_poll_interval_seconds",
        "The interval watch pollers use now (--watch-poll-interval, or --watch-reconcile-interval while webhooks arrive).",
        hub.poll_interval(),
    )?;
    seconds(
        encoder,
        "oms_gateway_watch_reconcile_interval_seconds",
        "--watch-reconcile-interval: the poll interval while webhooks arrive.",
        hub.reconcile_interval(),
    )?;
    let Some(webhooks) = webhooks else {
        return Ok(());
    };
    crate::metrics::encode_counter(
        encoder,
        "oms_gateway_webhook_reads",
        "Cash-ins re-read from OMS because a webhook named them (coalesced).",
        hub.webhook_reads(),
    )?;
    let counts = webhooks.counts();
    let outcomes = [
        ("accepted", &counts.accepted),
        ("replayed", &counts.replayed),
        ("ignored", &counts.ignored),
        ("refused", &counts.refused),
    ];
    let counter = ConstCounter::new(0u64);
    let mut family = encoder.encode_descriptor(
        "oms_gateway_webhooks",
        "OMS webhook deliveries by outcome: accepted (a cash-in re-read), replayed (webhook-id already processed), ignored (an event not acted on), refused (401/400).",
        None,
        counter.metric_type(),
    )?;
    for (outcome, value) in outcomes {
        ConstCounter::new(value.load(Ordering::Relaxed))
            .encode(family.encode_family(&OutcomeLabels { outcome })?)?;
    }
    Ok(())
}
