//! The watch hub's metrics, read at scrape time from what the hub keeps: open streams, running
//! pollers, polls made and waiting (with how many callers they wait for, never which), the poll
//! cadence (whether webhooks relax it, and both intervals), and the cash-ins' deliveries
//! learned, by state.

use super::WatchHub;
use crate::metrics::scrape;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Registry;

/// Reads the hub at each scrape.
#[derive(Debug)]
struct HubMetrics(WatchHub);

impl WatchHub {
    /// Registers the hub's metrics with `registry`.
    pub fn register_metrics(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(HubMetrics(self.clone())));
    }
}

impl Collector for HubMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> scrape::Encoded {
        let hub = &self.0;
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        scrape::gauge(
            &mut encoder,
            "oms_gateway_watch_streams",
            "Open watch streams.",
            gauge(hub.streams()),
        )?;
        scrape::gauge(
            &mut encoder,
            "oms_gateway_watch_pollers",
            "Running pollers (one per watched cash-in or customer, shared by its streams).",
            gauge(hub.watched()),
        )?;
        scrape::counter(
            &mut encoder,
            "oms_gateway_watch_polls",
            "Polls of OMS made by the watch pollers.",
            hub.polls(),
        )?;
        let (waiting, callers) = hub.polls_waiting();
        scrape::gauge(
            &mut encoder,
            "oms_gateway_watch_polls_waiting",
            "Polls (and list pages) waiting for their turn at the poll budget.",
            gauge(waiting),
        )?;
        scrape::gauge(
            &mut encoder,
            "oms_gateway_watch_poll_callers_waiting",
            "Callers whose watched resources wait for a poll (the gateway's own re-reads count as one); the budget's turns go round-robin between them.",
            gauge(callers),
        )?;
        scrape::gauge_f64(
            &mut encoder,
            "oms_gateway_watch_max_polls_per_second",
            "--watch-max-polls-per-second: the poll budget (the fleet's with --redis-url), to divide polls by.",
            hub.config().max_polls_per_second,
        )?;
        scrape::gauge(
            &mut encoder,
            "oms_gateway_watch_reconciling",
            "1 while verified OMS webhooks arrive and pollers use --watch-reconcile-interval, else 0.",
            i64::from(hub.reconciling()),
        )?;
        scrape::seconds(
            &mut encoder,
            "oms_gateway_watch_poll_interval_seconds",
            "The interval watch pollers use now (--watch-poll-interval, or --watch-reconcile-interval while webhooks arrive).",
            hub.poll_interval(),
        )?;
        scrape::seconds(
            &mut encoder,
            "oms_gateway_watch_reconcile_interval_seconds",
            "--watch-reconcile-interval: the poll interval while webhooks arrive.",
            hub.reconcile_interval(),
        )?;
        let delivery = hub.deliveries_learned();
        scrape::outcomes(
            &mut encoder,
            "oms_gateway_deliveries",
            "Cash-in deliveries (OMS's fiat-to-crypto transactions) this replica learned (from a transaction webhook, OMS's transaction read or the sandbox's controls), by the state learned: processing, under_review, completed, failed (after the deposit: OMS refunds the cash), refund_completed, unknown.",
            &[
                ("processing", delivery[1]),
                ("under_review", delivery[2]),
                ("completed", delivery[3]),
                ("failed", delivery[4]),
                ("refund_completed", delivery[5]),
                ("unknown", delivery[0]),
            ],
        )
    }
}
