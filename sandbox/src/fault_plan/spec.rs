//! The spec format of a [`FaultPlan`] (see its docs): parsing one `key=value` part at a time,
//! and `Display`, which prints only what differs from the default so that parsing it gives the
//! same plan back.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::{FaultPlan, FaultPlanError};

// === impl FaultPlan ===

impl FromStr for FaultPlan {
    type Err = FaultPlanError;

    fn from_str(spec: &str) -> Result<FaultPlan, FaultPlanError> {
        let mut plan = FaultPlan::default();
        let spec = spec.trim();
        if spec.is_empty() || spec.eq_ignore_ascii_case("none") {
            return Ok(plan);
        }
        let mut seen: Vec<&'static str> = Vec::new();
        for part in spec.split(',').map(str::trim) {
            apply_part(&mut plan, part, &mut seen).map_err(|reason| FaultPlanError {
                part: part.to_owned(),
                reason,
            })?;
        }
        Ok(plan)
    }
}

/// Sets the field one `key=value` part names; `seen` holds the keys of the parts before it.
fn apply_part(
    plan: &mut FaultPlan,
    part: &str,
    seen: &mut Vec<&'static str>,
) -> Result<(), String> {
    if part.is_empty() {
        return Err("empty part (two commas in a row, or a trailing comma)".into());
    }
    let Some((raw_key, value)) = part.split_once('=') else {
        return Err("expected key=value".into());
    };
    let key = canonical_key(raw_key).ok_or_else(|| {
        format!(
            "unknown key `{}` (known: seed, 500, 502, 503, 504, 429, retry_after, \
             reset_before, reset_after, latency, revoke, paths)",
            raw_key.trim()
        )
    })?;
    if seen.contains(&key) {
        return Err(format!("`{key}` is given more than once"));
    }
    seen.push(key);
    set_field(plan, key, value.trim())
}

/// Sets the field of a canonical key (see [`canonical_key`]) from its value.
fn set_field(plan: &mut FaultPlan, key: &'static str, value: &str) -> Result<(), String> {
    let p = || parse_probability(value);
    match key {
        "seed" => {
            plan.seed = value
                .parse()
                .map_err(|_| "the seed must be an unsigned 64-bit integer".to_owned())?;
        }
        "500" => plan.status_500 = p()?,
        "502" => plan.status_502 = p()?,
        "503" => plan.status_503 = p()?,
        "504" => plan.status_504 = p()?,
        "429" => plan.status_429 = p()?,
        "reset_before" => plan.reset_before = p()?,
        "reset_after" => plan.reset_after = p()?,
        "revoke" => plan.revoke_tokens = p()?,
        "retry_after" => plan.retry_after = parse_duration(value)?,
        "latency" => (plan.latency, plan.latency_min, plan.latency_max) = parse_latency(value)?,
        "paths" => plan.paths = parse_paths(value)?,
        _ => unreachable!("canonical_key returned an unhandled key"),
    }
    Ok(())
}

/// The canonical name of a spec key, accepting `-` for `_` and a few long forms.
fn canonical_key(key: &str) -> Option<&'static str> {
    let key = key.trim().to_ascii_lowercase().replace('-', "_");
    let key = key.strip_prefix("status_").unwrap_or(&key);
    Some(match key {
        "seed" => "seed",
        "500" => "500",
        "502" => "502",
        "503" => "503",
        "504" => "504",
        "429" => "429",
        "retry_after" => "retry_after",
        "reset_before" => "reset_before",
        "reset_after" => "reset_after",
        "latency" => "latency",
        "revoke" | "revoke_tokens" => "revoke",
        "paths" | "path" => "paths",
        _ => return None,
    })
}

fn parse_probability(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!(
            "`{value}` is not a probability (a number from 0 to 1, e.g. 0.05)"
        )),
    }
}

/// `P:MIN-MAX` or `P:FIXED`: the probability and the bounds of the delay.
fn parse_latency(value: &str) -> Result<(f64, Duration, Duration), String> {
    let (p, range) = value
        .split_once(':')
        .ok_or("expected P:MIN-MAX or P:DURATION, e.g. latency=0.1:50ms-300ms")?;
    let p = parse_probability(p.trim())?;
    let (min, max) = match range.split_once('-') {
        Some((min, max)) => (min.trim(), max.trim()),
        None => (range.trim(), range.trim()),
    };
    let (lo, hi) = (parse_duration(min)?, parse_duration(max)?);
    if lo > hi {
        return Err(format!(
            "the minimum latency {min} is above the maximum {max}"
        ));
    }
    Ok((p, lo, hi))
}

/// Path prefixes separated by `|`, each starting with `/`.
fn parse_paths(value: &str) -> Result<Vec<String>, String> {
    let paths: Vec<String> = value.split('|').map(|p| p.trim().to_owned()).collect();
    if let Some(bad) = paths.iter().find(|p| !p.starts_with('/')) {
        return Err(format!(
            "each path must start with `/` (got `{bad}`); use `/` for every path"
        ));
    }
    Ok(paths)
}

/// `250ms`, `1s`, `1.5s`, `500us`, `0`.
fn parse_duration(value: &str) -> Result<Duration, String> {
    let bad = || {
        format!("`{value}` is not a duration (a number and a unit: ns, us, ms or s; e.g. 250ms)")
    };
    if value == "0" {
        return Ok(Duration::ZERO);
    }
    let (number, unit_nanos) = [
        ("ns", 1_u64),
        ("us", 1_000),
        ("µs", 1_000),
        ("ms", 1_000_000),
        ("s", 1_000_000_000),
    ]
    .into_iter()
    .find_map(|(unit, nanos)| value.strip_suffix(unit).map(|n| (n.trim(), nanos)))
    .ok_or_else(bad)?;
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(bad());
    }
    let nanos = if number.contains('.') {
        let n: f64 = number.parse().map_err(|_| bad())?;
        let nanos = (n * unit_nanos as f64).round();
        if !(0.0..=u64::MAX as f64).contains(&nanos) {
            return Err(format!("`{value}` is too long"));
        }
        // In range by the check above.
        nanos as u64
    } else {
        number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(unit_nanos))
            .ok_or_else(|| format!("`{value}` is too long"))?
    };
    Ok(Duration::from_nanos(nanos))
}

/// The largest unit that states the duration exactly, so that parsing gives it back.
fn fmt_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    match nanos {
        0 => "0s".to_owned(),
        n if n % 1_000_000_000 == 0 => format!("{}s", n / 1_000_000_000),
        n if n % 1_000_000 == 0 => format!("{}ms", n / 1_000_000),
        n if n % 1_000 == 0 => format!("{}us", n / 1_000),
        n => format!("{n}ns"),
    }
}

impl fmt::Display for FaultPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let default = FaultPlan::default();
        if *self == default {
            return f.write_str("none");
        }
        write!(f, "seed={}", self.seed)?;
        let [
            s500,
            s502,
            s503,
            s504,
            s429,
            reset_before,
            reset_after,
            _,
            revoke,
        ] = self.probabilities();
        for (key, p) in [s500, s502, s503, s504, s429] {
            if p != 0.0 {
                write!(f, ",{key}={p}")?;
            }
        }
        if self.retry_after != default.retry_after {
            write!(f, ",retry_after={}", fmt_duration(self.retry_after))?;
        }
        for (key, p) in [reset_before, reset_after] {
            if p != 0.0 {
                write!(f, ",{key}={p}")?;
            }
        }
        if self.latency != 0.0 || !self.latency_min.is_zero() || !self.latency_max.is_zero() {
            write!(
                f,
                ",latency={}:{}",
                self.latency,
                fmt_duration(self.latency_min)
            )?;
            if self.latency_max != self.latency_min {
                write!(f, "-{}", fmt_duration(self.latency_max))?;
            }
        }
        if revoke.1 != 0.0 {
            write!(f, ",revoke={}", revoke.1)?;
        }
        if self.paths != default.paths {
            write!(f, ",paths={}", self.paths.join("|"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// The spec in `FaultPlan`'s docs; the decision tests use it too.
    pub(in crate::fault_plan) const EXAMPLE: &str = "seed=42,500=0.05,502=0.05,503=0.1,504=0.02,429=0.05,retry_after=1s,\
        reset_before=0.03,reset_after=0.05,latency=0.1:50ms-300ms,revoke=0.01,\
        paths=/cash-ins|/cash-locations";

    pub(in crate::fault_plan) fn parse(spec: &str) -> FaultPlan {
        spec.parse()
            .unwrap_or_else(|e| panic!("{spec:?} should parse: {e}"))
    }

    fn error(spec: &str) -> FaultPlanError {
        match spec.parse::<FaultPlan>() {
            Ok(plan) => panic!("{spec:?} should not parse, got {plan:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn the_example_spec_parses_to_every_field() {
        let plan = parse(EXAMPLE);
        assert_eq!(
            plan,
            FaultPlan {
                seed: 42,
                status_500: 0.05,
                status_502: 0.05,
                status_503: 0.1,
                status_504: 0.02,
                status_429: 0.05,
                retry_after: Duration::from_secs(1),
                reset_before: 0.03,
                reset_after: 0.05,
                latency: 0.1,
                latency_min: Duration::from_millis(50),
                latency_max: Duration::from_millis(300),
                revoke_tokens: 0.01,
                paths: vec!["/cash-ins".into(), "/cash-locations".into()],
            }
        );
        // retry_after=1s and is the default, so Display leaves it out.
        assert_eq!(
            plan.to_string(),
            "seed=42,500=0.05,502=0.05,503=0.1,504=0.02,429=0.05,reset_before=0.03,\
             reset_after=0.05,latency=0.1:50ms-300ms,revoke=0.01,paths=/cash-ins|/cash-locations"
        );
    }

    #[test]
    fn display_round_trips() {
        let odd = FaultPlan {
            seed: u64::MAX,
            status_504: 1e-9,
            retry_after: Duration::new(2, 500),
            latency_min: Duration::from_micros(1500),
            latency_max: Duration::from_micros(1500),
            paths: vec!["/".into()],
            ..FaultPlan::default()
        };
        let only_latency_bounds = FaultPlan {
            latency_max: Duration::from_millis(5),
            ..FaultPlan::default()
        };
        for plan in [
            FaultPlan::default(),
            parse(EXAMPLE),
            parse("seed=7"),
            parse("503=1,retry_after=250ms"),
            parse("429=0.333333333333,retry_after=0"),
            parse("latency=1:20ms"),
            odd,
            only_latency_bounds,
        ] {
            let spec = plan.to_string();
            assert_eq!(parse(&spec), plan, "{spec}");
        }
        assert_eq!(FaultPlan::default().to_string(), "none");
        assert_eq!(parse("none"), FaultPlan::default());
        assert_eq!(parse("  "), FaultPlan::default());
        assert_eq!(parse("NONE"), FaultPlan::none());
        assert!(parse("seed=3").is_none());
        assert!(!parse("revoke=0.5").is_none());
    }

    #[test]
    fn spellings_are_forgiving_where_unambiguous() {
        assert_eq!(
            parse(" seed = 1 , status_503=0.5, reset-after=0.25 ,revoke_tokens=1, path=/x "),
            FaultPlan {
                seed: 1,
                status_503: 0.5,
                reset_after: 0.25,
                revoke_tokens: 1.0,
                paths: vec!["/x".into()],
                ..FaultPlan::default()
            }
        );
        let plan = parse("latency=0.5:1.5s-2500ms,retry_after=0.5s");
        assert_eq!(plan.latency_min, Duration::from_millis(1500));
        assert_eq!(plan.latency_max, Duration::from_millis(2500));
        assert_eq!(plan.retry_after, Duration::from_millis(500));
    }

    #[test]
    fn errors_name_the_bad_part() {
        let cases = [
            ("seed=42,503=1.5", "503=1.5", "probability"),
            ("503=-0.1", "503=-0.1", "probability"),
            ("503=NaN", "503=NaN", "probability"),
            ("seed=-1", "seed=-1", "unsigned"),
            ("seed=1,teapot=0.1", "teapot=0.1", "unknown key `teapot`"),
            ("503", "503", "key=value"),
            ("503=0.1,,", "", "empty part"),
            ("503=0.1,503=0.2", "503=0.2", "more than once"),
            ("retry_after=1x", "retry_after=1x", "not a duration"),
            ("retry_after=5", "retry_after=5", "not a duration"),
            ("retry_after=-1s", "retry_after=-1s", "not a duration"),
            (
                "retry_after=99999999999999s",
                "retry_after=99999999999999s",
                "too long",
            ),
            ("latency=0.1", "latency=0.1", "P:MIN-MAX"),
            (
                "latency=0.1:300ms-50ms",
                "latency=0.1:300ms-50ms",
                "above the maximum",
            ),
            ("latency=2:1ms", "latency=2:1ms", "probability"),
            (
                "paths=/cash-ins|cash-locations",
                "paths=/cash-ins|cash-locations",
                "start with `/`",
            ),
            ("paths=", "paths=", "start with `/`"),
        ];
        for (spec, part, reason) in cases {
            let e = error(spec);
            assert_eq!(e.part(), part, "{spec}");
            assert!(e.reason().contains(reason), "{spec}: {e}");
            assert!(e.to_string().contains(&format!("`{part}`")), "{e}");
        }
    }
}
