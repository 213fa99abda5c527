//! Helpers for the collectors that read, at scrape time, what a feature already keeps (its
//! atomics, a watch channel): nothing is recorded for those families on the call path. Each
//! feature writes its own `Collector` with these and registers it when it is assembled; this
//! module knows none of them.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use std::time::Duration;

/// What a collector's `encode` returns.
pub type Encoded = Result<(), std::fmt::Error>;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

/// A gauge family of one sample, `value`.
pub fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> Encoded {
    let gauge = ConstGauge::new(value);
    gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)
}

/// A gauge family of one sample, `value` in seconds (the unit is in `name`).
pub fn seconds(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: Duration,
) -> Encoded {
    let gauge = ConstGauge::new(value.as_secs_f64());
    gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)
}

/// A gauge family of one sample, a fraction `value`.
pub fn gauge_f64(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: f64) -> Encoded {
    let gauge = ConstGauge::new(value);
    gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)
}

/// A counter family of one sample, a fraction `value` (CPU seconds).
pub fn counter_f64(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: f64) -> Encoded {
    let counter = ConstCounter::new(value);
    counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)
}

/// A counter family of one sample, `value`.
pub fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> Encoded {
    let counter = ConstCounter::new(value);
    counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)
}

/// A counter family with one sample per `(outcome, value)`, labelled `outcome`.
pub fn outcomes(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: &[(&'static str, u64)],
) -> Encoded {
    let counter = ConstCounter::new(0u64);
    let mut family = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
    for &(outcome, value) in values {
        ConstCounter::new(value).encode(family.encode_family(&Outcome { outcome })?)?;
    }
    Ok(())
}

/// A gauge read by a function at each scrape: for a value that its owner keeps and that needs
/// no collector of its own (the circuit's state, say).
pub struct GaugeFn {
    name: &'static str,
    help: &'static str,
    read: Box<dyn Fn() -> i64 + Send + Sync>,
}

impl GaugeFn {
    /// The gauge `name`, reading `read` at each scrape.
    pub fn new(
        name: &'static str,
        help: &'static str,
        read: impl Fn() -> i64 + Send + Sync + 'static,
    ) -> Self {
        Self {
            name,
            help,
            read: Box::new(read),
        }
    }
}

impl std::fmt::Debug for GaugeFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GaugeFn").field("name", &self.name).finish()
    }
}

impl Collector for GaugeFn {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Encoded {
        gauge(&mut encoder, self.name, self.help, (self.read)())
    }
}
