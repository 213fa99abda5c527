//! The process families every Prometheus client library exports, under their standard names
//! (`process_cpu_seconds_total`, `process_resident_memory_bytes`, `process_virtual_memory_bytes`,
//! `process_open_fds`, `process_max_fds`, `process_start_time_seconds`), so the usual dashboards
//! and alerts work; and `oms_gateway_build_info{version}`, 1, to join on. Read at scrape time from
//! `/proc/self` on Linux, as the Go client does (CPU times in USER_HZ ticks, 100 a second on every
//! Linux ABI, again as it assumes); elsewhere only the build info is exported. A file that cannot
//! be read leaves its family out of that scrape rather than failing it.

use super::scrape;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// USER_HZ: the clock ticks a second of `/proc/*/stat`'s times.
const TICKS_PER_SECOND: f64 = 100.0;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// Reads the process at each scrape.
#[derive(Debug)]
struct ProcessMetrics;

/// Registers the process families and the build info with `registry`.
pub(super) fn register(registry: &mut Registry) {
    registry.register_collector(Box::new(ProcessMetrics));
}

impl Collector for ProcessMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> scrape::Encoded {
        let info = ConstGauge::new(1);
        info.encode(
            encoder
                .encode_descriptor(
                    "oms_gateway_build_info",
                    "The gateway's version, as a label of a gauge that is always 1.",
                    None,
                    info.metric_type(),
                )?
                .encode_family(&BuildLabels {
                    version: env!("CARGO_PKG_VERSION"),
                })?,
        )?;
        #[cfg(target_os = "linux")]
        if let Some(process) = linux::read() {
            process.encode(&mut encoder)?;
        }
        Ok(())
    }
}

/// What `/proc/self` says, at one scrape.
#[derive(Debug, Default, PartialEq)]
struct Process {
    cpu_seconds: Option<f64>,
    start_time_seconds: Option<f64>,
    resident_bytes: Option<u64>,
    virtual_bytes: Option<u64>,
    open_fds: Option<u64>,
    max_fds: Option<u64>,
}

// === impl Process ===

impl Process {
    fn encode(&self, encoder: &mut DescriptorEncoder) -> scrape::Encoded {
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        if let Some(cpu) = self.cpu_seconds {
            scrape::counter_f64(
                encoder,
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                cpu,
            )?;
        }
        if let Some(start) = self.start_time_seconds {
            scrape::gauge_f64(
                encoder,
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                start,
            )?;
        }
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                self.resident_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                self.virtual_bytes,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                self.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                self.max_fds,
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(value) = value {
                scrape::gauge(encoder, name, help, gauge(value))?;
            }
        }
        Ok(())
    }
}

/// `/proc/self/stat`'s fields after the command name (which may hold spaces and parentheses):
/// utime, stime (the 14th and 15th), starttime (the 22nd) and vsize (the 23rd), 1-based as
/// proc(5) counts them; and the resident set from `/proc/self/status`'s `VmRSS` (in kB).
fn parse_stat(stat: &str, status: &str, boot_time: Option<f64>) -> Process {
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // `fields[0]` is the 3rd field (state).
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    let cpu_seconds = field(14)
        .zip(field(15))
        .map(|(user, system)| (user + system) as f64 / TICKS_PER_SECOND);
    let start_time_seconds = field(22)
        .zip(boot_time)
        .map(|(ticks, boot)| boot + ticks as f64 / TICKS_PER_SECOND);
    let resident_bytes = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|kb| kb * 1024);
    Process {
        cpu_seconds,
        start_time_seconds,
        resident_bytes,
        virtual_bytes: field(23),
        ..Process::default()
    }
}

/// `/proc/stat`'s `btime`: the boot time, in seconds since the epoch.
fn parse_boot_time(stat: &str) -> Option<f64> {
    stat.lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// `/proc/self/limits`' soft limit of `Max open files`.
fn parse_max_fds(limits: &str) -> Option<u64> {
    limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|soft| soft.parse().ok())
}

#[cfg(target_os = "linux")]
mod linux {
    use super::{Process, parse_boot_time, parse_max_fds, parse_stat};

    /// The process as `/proc` says it now; `None` without `/proc/self/stat`.
    pub(super) fn read() -> Option<Process> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let boot = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|text| parse_boot_time(&text));
        let mut process = parse_stat(&stat, &status, boot);
        process.open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|entries| entries.count() as u64);
        process.max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|text| parse_max_fds(&text));
        Some(process)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_are_read_by_their_fields() {
        // A command name with a space and a parenthesis, as proc(5) allows.
        let stat = "4242 (oms gw) x) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 50 0 0 20 0 3 0 \
                    12345 987654321 2048 18446744073709551615";
        let status = "Name:\toms-gateway\nVmRSS:\t   8192 kB\nThreads:\t3\n";
        let process = parse_stat(stat, status, Some(1_700_000_000.0));
        assert_eq!(process.cpu_seconds, Some(3.0));
        assert_eq!(process.start_time_seconds, Some(1_700_000_123.45));
        assert_eq!(process.virtual_bytes, Some(987_654_321));
        assert_eq!(process.resident_bytes, Some(8192 * 1024));
        assert_eq!(parse_boot_time("cpu 1 2\nbtime 1700000000\n"), Some(1.7e9));
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(parse_max_fds(limits), Some(1024));
        assert_eq!(parse_stat("garbage", "", None), Process::default());
    }
}
