//! Upstream drift: the JSON fields and enum values OMS sends that the gateway does not know,
//! counted by where they sit (`oms_upstream_unknown_total{kind, path}`), each logged once, and
//! summed up for the admin listener's `/readyz`.
//!
//! A path names a place in an object, never a value: struct field names joined with dots from a
//! root named after the resource (`cashIn.source.foo`), array indices collapsed (`[]`), a map's
//! keys (data, such as metadata keys) shown as `*`, and a key that is no identifier, or is longer
//! than 64 bytes, shown as `*` too (the decoder that reports unknown fields builds them so; the
//! gateway reports its enum fields by fixed names). The paths are bounded: the first
//! [`MAX_PATHS`] distinct ones (both kinds together) are counted under their own label, and any
//! later one under `path="(other)"` ([`OTHER_PATH`]), so a drifting or hostile OMS cannot grow
//! the scrape. Each admitted path is logged once per [`Drift`] (one per gateway, so once per
//! process) at WARN with its kind and path only: OMS's values (deposit codes among them) never
//! reach a log line. The first overflow of each kind is logged once too.
//!
//! Recording takes a lock, but only when something unknown was met: a body with nothing unknown
//! costs nothing here.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::collections::HashSet;
use std::fmt::{self, Write as _};
use std::sync::Mutex;

/// The most distinct paths counted under their own label, both kinds together.
pub const MAX_PATHS: usize = 64;
/// The label every path past [`MAX_PATHS`] is counted under.
pub const OTHER_PATH: &str = "(other)";
/// The longest path counted under its own label, in bytes; a longer one is [`OTHER_PATH`].
const MAX_PATH_BYTES: usize = 512;

/// What OMS sent that the gateway does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unknown {
    /// An object member no model type names.
    Field,
    /// A value of an enumerated field that the gateway does not map.
    EnumValue,
}

impl Unknown {
    /// The `kind` label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Field => "field",
            Self::EnumValue => "enum_value",
        }
    }

    fn index(self) -> usize {
        match self {
            Self::Field => 0,
            Self::EnumValue => 1,
        }
    }
}

impl EncodeLabelValue for Unknown {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), fmt::Error> {
        encoder.write_str(self.label())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct UnknownLabels {
    kind: Unknown,
    path: String,
}

/// The paths admitted so far, by kind, and whether each kind has overflowed.
#[derive(Debug, Default)]
struct Paths {
    admitted: [HashSet<Box<str>>; 2],
    overflowed: [bool; 2],
}

/// What one unknown turned into: its label, and what to log about it (once).
enum Admission {
    Known,
    New,
    Overflow { first: bool },
}

/// The drift recorder of one gateway: its counter family (registered by
/// [`crate::metrics::UpstreamMetrics::register`]) and the paths it has admitted.
#[derive(Debug, Default)]
pub struct Drift {
    counts: Family<UnknownLabels, Counter>,
    paths: Mutex<Paths>,
}

/// How much drift a gateway has seen: distinct paths of each kind, and whether more came than
/// [`MAX_PATHS`] admits. Its `Display` is `/readyz`'s line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DriftSummary {
    /// Distinct paths of unknown fields counted under their own label.
    pub fields: usize,
    /// Distinct paths of unknown enum values counted under their own label.
    pub enum_values: usize,
    /// Some path was counted under [`OTHER_PATH`].
    pub overflowed: bool,
}

// === impl Drift ===

impl Drift {
    /// The counter family, for the registry.
    pub(crate) fn family(&self) -> Family<UnknownLabels, Counter> {
        self.counts.clone()
    }

    /// OMS sent an object member at `path` that no model type names.
    pub fn unknown_field(&self, path: &str) {
        self.record(Unknown::Field, path);
    }

    /// OMS sent, at `path`, an enum value the gateway does not map. `path` is where (e.g.
    /// `cashIn.subStatus`), never the value.
    pub fn unknown_enum_value(&self, path: &str) {
        self.record(Unknown::EnumValue, path);
    }

    /// Counts one `kind` at `path` (see the module documentation for the cap and the log).
    pub fn record(&self, kind: Unknown, path: &str) {
        let admission = self.admit(kind, path);
        let label = match admission {
            Admission::Known => path,
            Admission::New => {
                tracing::warn!(
                    kind = kind.label(),
                    path,
                    "OMS sent something the gateway does not know; counted in \
                     oms_upstream_unknown_total"
                );
                path
            }
            Admission::Overflow { first } => {
                if first {
                    tracing::warn!(
                        kind = kind.label(),
                        max_paths = MAX_PATHS,
                        "OMS sent unknowns at more paths than are counted apart; further ones \
                         are counted under path=\"(other)\" and not logged"
                    );
                }
                OTHER_PATH
            }
        };
        self.counts
            .get_or_create(&UnknownLabels {
                kind,
                path: label.to_owned(),
            })
            .inc();
    }

    fn admit(&self, kind: Unknown, path: &str) -> Admission {
        let mut paths = self.paths.lock().unwrap_or_else(|e| e.into_inner());
        if paths.admitted[kind.index()].contains(path) {
            return Admission::Known;
        }
        let admitted = paths.admitted.iter().map(HashSet::len).sum::<usize>();
        if admitted < MAX_PATHS && path.len() <= MAX_PATH_BYTES {
            paths.admitted[kind.index()].insert(path.into());
            return Admission::New;
        }
        let first = !paths.overflowed[kind.index()];
        paths.overflowed[kind.index()] = true;
        Admission::Overflow { first }
    }

    /// What has been seen so far.
    pub fn summary(&self) -> DriftSummary {
        let paths = self.paths.lock().unwrap_or_else(|e| e.into_inner());
        DriftSummary {
            fields: paths.admitted[Unknown::Field.index()].len(),
            enum_values: paths.admitted[Unknown::EnumValue.index()].len(),
            overflowed: paths.overflowed.iter().any(|o| *o),
        }
    }
}

// === impl DriftSummary ===

impl fmt::Display for DriftSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Self::default() {
            return f.write_str("upstream drift: none seen");
        }
        let plural = |n: usize| if n == 1 { "" } else { "s" };
        write!(
            f,
            "upstream drift: {} unknown field{}, {} unknown enum value{}",
            self.fields,
            plural(self.fields),
            self.enum_values,
            plural(self.enum_values)
        )?;
        if self.overflowed {
            write!(
                f,
                ", and more past {MAX_PATHS} paths (path=\"{OTHER_PATH}\")"
            )?;
        }
        f.write_str("; see oms_upstream_unknown_total")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;

    fn scrape(drift: &Drift) -> String {
        let mut registry = Registry::default();
        registry.register("oms_upstream_unknown", "Unknowns", drift.family());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        text
    }

    fn series(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    #[test]
    fn the_path_cap_holds_however_many_distinct_unknowns_arrive() {
        let drift = Drift::default();
        for n in 0..10_000 {
            drift.unknown_field(&format!("cashIn.field{n}"));
            drift.unknown_enum_value(&format!("cashIn.enum{n}"));
        }
        let text = scrape(&drift);
        let series = series(&text);
        // MAX_PATHS of their own (the first fields and enum values, as they came), and one
        // `(other)` series of each kind.
        assert_eq!(series.len(), MAX_PATHS + 2, "{text}");
        let other =
            |kind: &str| format!("oms_upstream_unknown_total{{kind=\"{kind}\",path=\"(other)\"}} ");
        let overflow_count = |kind: &str| -> u64 {
            let line = series
                .iter()
                .find(|l| l.starts_with(&other(kind)))
                .unwrap_or_else(|| panic!("no (other) {kind} series: {text}"));
            line.rsplit(' ').next().unwrap().parse().unwrap()
        };
        let admitted = MAX_PATHS as u64 / 2;
        assert_eq!(overflow_count("field"), 10_000 - admitted);
        assert_eq!(overflow_count("enum_value"), 10_000 - admitted);
        let summary = drift.summary();
        assert_eq!(
            (summary.fields, summary.enum_values, summary.overflowed),
            (MAX_PATHS / 2, MAX_PATHS / 2, true)
        );
        // A path admitted before the cap was reached keeps its own series.
        drift.unknown_field("cashIn.field0");
        assert!(
            scrape(&drift).contains("kind=\"field\",path=\"cashIn.field0\"} 2\n"),
            "{}",
            scrape(&drift)
        );
    }

    #[test]
    fn a_path_counts_every_time_and_the_summary_counts_paths() {
        let drift = Drift::default();
        assert_eq!(drift.summary().to_string(), "upstream drift: none seen");
        for _ in 0..3 {
            drift.unknown_field("cashIn.source.foo");
        }
        drift.unknown_field("cashIn.bar");
        drift.unknown_enum_value("cashIn.subStatus");
        let text = scrape(&drift);
        assert!(
            text.contains(
                "oms_upstream_unknown_total{kind=\"field\",path=\"cashIn.source.foo\"} 3\n"
            ),
            "{text}"
        );
        assert_eq!(
            drift.summary().to_string(),
            "upstream drift: 2 unknown fields, 1 unknown enum value; see \
             oms_upstream_unknown_total"
        );
    }

    #[test]
    fn an_overlong_path_is_counted_as_other() {
        let drift = Drift::default();
        drift.unknown_field(&"a.".repeat(400));
        let text = scrape(&drift);
        assert!(text.contains("path=\"(other)\"} 1"), "{text}");
        assert!(
            drift
                .summary()
                .to_string()
                .contains("and more past 64 paths")
        );
    }
}
