//! Seeded random fault injection: a [`FaultPlan`] of per-request probabilities, the generator
//! that draws from it, and the counts of what fired.
//!
//! Where scripted faults ([`super::Fault`]) say "the next N requests", a plan says "about this
//! share of requests", which is what a soak test or a chaos run of the gateway wants. It is
//! reproducible: one generator, seeded by the plan, advances by exactly [`DRAWS_PER_REQUEST`]
//! draws for every request the plan applies to, in the order the requests arrive, so the same
//! sequence of requests meets the same faults. With concurrent requests the arrival order is
//! whatever the scheduler makes it, so only a sequential series is reproducible exactly.
//!
//! The plan is written as a compact spec (see [`FaultPlan`]'s `FromStr`), the same format its
//! `Display` prints, so a plan can travel through a flag, an env var or `PUT /sandbox/faults`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use http::StatusCode;
use serde::Serialize;

/// Random draws per request the plan applies to, whatever fires: five statuses, two resets,
/// latency (whether, and how long), revocation, in that order.
pub(crate) const DRAWS_PER_REQUEST: usize = 10;

/// What a plan applies to unless told otherwise: the cash-in API, not the token exchange.
const DEFAULT_PATH: &str = "/cash-ins";
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Seeded, per-request random faults.
///
/// Each probability is in `[0, 1]` and drawn independently per request, in field order. At most
/// one *answer* fault (a status, 429, `reset_before`, `reset_after`) fires per request: the first
/// whose draw hits, so the effective rate of a later one is its probability times the chance
/// that none before it fired. Latency and revocation combine with any of them.
///
/// The default is no faults, seed 0, `retry_after` 1 s and `paths` `["/cash-ins"]`.
///
/// The same seed gives the same faults to the same *sequence* of requests (counting only those
/// under `paths`); concurrent requests draw in whatever order they reach the sandbox, which can
/// differ from run to run. The journal lists requests in draw order.
///
/// # Spec format
///
/// Comma-separated `key=value` parts, in any order, each key at most once; `none` or an empty
/// string is the default plan:
///
/// ```text
/// seed=42,500=0.05,502=0.05,503=0.1,504=0.02,429=0.05,retry_after=1s,reset_before=0.03,
/// reset_after=0.05,latency=0.1:50ms-300ms,revoke=0.01,paths=/cash-ins|/cash-locations
/// ```
///
/// | key | value |
/// | --- | --- |
/// | `seed` | unsigned integer (default 0) |
/// | `500` `502` `503` `504` `429` `reset_before` `reset_after` `revoke` | probability in `[0, 1]` |
/// | `retry_after` | duration: integer or decimal with a unit `ns` `us` `ms` `s` (`0` alone is fine) |
/// | `latency` | `P:MIN-MAX` or `P:FIXED`, e.g. `0.1:50ms-300ms` |
/// | `paths` | path prefixes separated by `\|`, each starting with `/` |
///
/// Keys may use `-` for `_`, and `status_500` for `500`; `revoke_tokens` is `revoke`. `Display`
/// prints `none` for the default plan and otherwise the seed plus every field that differs from
/// the default, in the order above; parsing that gives back an equal plan.
///
/// A plan never applies to `PUT`/`GET /sandbox/faults`, so a plan can always be switched off.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultPlan {
    pub seed: u64,
    pub status_500: f64,
    pub status_502: f64,
    pub status_503: f64,
    pub status_504: f64,
    pub status_429: f64,
    /// Sent with a 429 as `Retry-After`, in whole seconds rounded up. Default 1 s.
    pub retry_after: Duration,
    /// Close the TCP connection abruptly (RST, no HTTP response) before the request has any
    /// effect.
    pub reset_before: f64,
    /// Process the request fully (a create is committed, its idempotency record stored), then
    /// close the connection abruptly instead of answering. The client cannot tell whether it
    /// happened.
    pub reset_after: f64,
    /// With this probability, sleep a uniform time in `[latency_min, latency_max]` before
    /// answering (for a request that runs, while it holds its Idempotency-Key).
    pub latency: f64,
    pub latency_min: Duration,
    pub latency_max: Duration,
    /// With this probability, revoke every issued token before handling (the request then gets
    /// 401 unless an answer fault answers it first).
    pub revoke_tokens: f64,
    /// The path prefixes the plan applies to (any method). Default `["/cash-ins"]`; empty
    /// applies to nothing.
    pub paths: Vec<String>,
}

/// How many requests a plan saw and what it did to them, since the plan was set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FaultStats {
    /// Requests the plan applied to (each advanced the generator), including those a scripted
    /// fault claimed first.
    pub requests_seen: u64,
    pub status_500: u64,
    pub status_502: u64,
    pub status_503: u64,
    pub status_504: u64,
    pub status_429: u64,
    pub reset_before: u64,
    pub reset_after: u64,
    pub delayed: u64,
    pub revocations: u64,
}

/// A spec that does not parse, naming the part at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid fault plan part `{part}`: {reason}")]
pub struct FaultPlanError {
    part: String,
    reason: String,
}

/// What the plan does to one request.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Decision {
    pub(crate) answer: Option<PlannedAnswer>,
    pub(crate) latency: Option<Duration>,
    pub(crate) revoke: bool,
}

/// The answer fault that replaces (or, for `ResetAfter`, follows) normal handling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PlannedAnswer {
    /// 500, 502, 503 or 504, with no effect.
    Status(StatusCode),
    /// 429 with this `Retry-After`, with no effect.
    TooManyRequests(Duration),
    ResetBefore,
    ResetAfter,
}

/// The active plan, its generator and its counts.
pub(crate) struct PlanState {
    plan: FaultPlan,
    rng: fastrand::Rng,
    stats: FaultStats,
}

// === impl FaultPlan ===

impl Default for FaultPlan {
    fn default() -> Self {
        FaultPlan {
            seed: 0,
            status_500: 0.0,
            status_502: 0.0,
            status_503: 0.0,
            status_504: 0.0,
            status_429: 0.0,
            retry_after: DEFAULT_RETRY_AFTER,
            reset_before: 0.0,
            reset_after: 0.0,
            latency: 0.0,
            latency_min: Duration::ZERO,
            latency_max: Duration::ZERO,
            revoke_tokens: 0.0,
            paths: vec![DEFAULT_PATH.to_owned()],
        }
    }
}

impl FaultPlan {
    /// The plan that injects nothing (the default).
    pub fn none() -> FaultPlan {
        FaultPlan::default()
    }

    /// Whether no fault can ever fire.
    pub fn is_none(&self) -> bool {
        self.probabilities().iter().all(|(_, p)| prob(*p) == 0.0)
    }

    fn probabilities(&self) -> [(&'static str, f64); 9] {
        [
            ("500", self.status_500),
            ("502", self.status_502),
            ("503", self.status_503),
            ("504", self.status_504),
            ("429", self.status_429),
            ("reset_before", self.reset_before),
            ("reset_after", self.reset_after),
            ("latency", self.latency),
            ("revoke", self.revoke_tokens),
        ]
    }

    pub(crate) fn applies_to(&self, path: &str) -> bool {
        self.paths
            .iter()
            .any(|prefix| path.starts_with(prefix.as_str()))
    }
}

/// A probability as the generator uses it: out-of-range values (possible in a plan built as a
/// struct rather than parsed) are clamped, NaN never fires.
fn prob(p: f64) -> f64 {
    if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) }
}

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
            let err = |reason: String| FaultPlanError {
                part: part.to_owned(),
                reason,
            };
            if part.is_empty() {
                return Err(err(
                    "empty part (two commas in a row, or a trailing comma)".into()
                ));
            }
            let Some((raw_key, value)) = part.split_once('=') else {
                return Err(err("expected key=value".into()));
            };
            let key = canonical_key(raw_key).ok_or_else(|| {
                err(format!(
                    "unknown key `{}` (known: seed, 500, 502, 503, 504, 429, retry_after, \
                     reset_before, reset_after, latency, revoke, paths)",
                    raw_key.trim()
                ))
            })?;
            if seen.contains(&key) {
                return Err(err(format!("`{key}` is given more than once")));
            }
            seen.push(key);
            let value = value.trim();
            let p = || parse_probability(value).map_err(err);
            match key {
                "seed" => {
                    plan.seed = value
                        .parse()
                        .map_err(|_| err("the seed must be an unsigned 64-bit integer".into()))?;
                }
                "500" => plan.status_500 = p()?,
                "502" => plan.status_502 = p()?,
                "503" => plan.status_503 = p()?,
                "504" => plan.status_504 = p()?,
                "429" => plan.status_429 = p()?,
                "reset_before" => plan.reset_before = p()?,
                "reset_after" => plan.reset_after = p()?,
                "revoke" => plan.revoke_tokens = p()?,
                "retry_after" => plan.retry_after = parse_duration(value).map_err(err)?,
                "latency" => {
                    let (p, range) = value.split_once(':').ok_or_else(|| {
                        err("expected P:MIN-MAX or P:DURATION, e.g. latency=0.1:50ms-300ms".into())
                    })?;
                    plan.latency = parse_probability(p.trim()).map_err(err)?;
                    let (min, max) = match range.split_once('-') {
                        Some((min, max)) => (min.trim(), max.trim()),
                        None => (range.trim(), range.trim()),
                    };
                    plan.latency_min = parse_duration(min).map_err(err)?;
                    plan.latency_max = parse_duration(max).map_err(err)?;
                    if plan.latency_min > plan.latency_max {
                        return Err(err(format!(
                            "the minimum latency {min} is above the maximum {max}"
                        )));
                    }
                }
                "paths" => {
                    let paths: Vec<String> =
                        value.split('|').map(|p| p.trim().to_owned()).collect();
                    if let Some(bad) = paths.iter().find(|p| !p.starts_with('/')) {
                        return Err(err(format!(
                            "each path must start with `/` (got `{bad}`); use `/` for every path"
                        )));
                    }
                    plan.paths = paths;
                }
                _ => unreachable!("canonical_key returned an unhandled key"),
            }
        }
        Ok(plan)
    }
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

// === impl FaultPlanError ===

impl FaultPlanError {
    /// The `key=value` part that is wrong.
    pub fn part(&self) -> &str {
        &self.part
    }

    /// What is wrong with it.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

// === impl Decision ===

impl Decision {
    /// How the journal names this decision: the answer fault, then `latency=…`, then `revoke`,
    /// joined with `+` (e.g. `503+latency=120ms`).
    pub(crate) fn label(&self) -> String {
        let mut parts = Vec::new();
        match self.answer {
            Some(PlannedAnswer::Status(s)) => parts.push(s.as_u16().to_string()),
            Some(PlannedAnswer::TooManyRequests(_)) => parts.push("429".to_owned()),
            Some(PlannedAnswer::ResetBefore) => parts.push("reset_before".to_owned()),
            Some(PlannedAnswer::ResetAfter) => parts.push("reset_after".to_owned()),
            None => {}
        }
        if let Some(d) = self.latency {
            parts.push(format!("latency={d:?}"));
        }
        if self.revoke {
            parts.push("revoke".to_owned());
        }
        parts.join("+")
    }

    fn is_empty(&self) -> bool {
        self.answer.is_none() && self.latency.is_none() && !self.revoke
    }
}

// === impl PlanState ===

impl PlanState {
    pub(crate) fn new(plan: FaultPlan) -> PlanState {
        PlanState {
            rng: fastrand::Rng::with_seed(plan.seed),
            plan,
            stats: FaultStats::default(),
        }
    }

    /// Replaces the plan, reseeding the generator and zeroing the counts.
    pub(crate) fn set(&mut self, plan: FaultPlan) {
        *self = PlanState::new(plan);
    }

    pub(crate) fn plan(&self) -> &FaultPlan {
        &self.plan
    }

    pub(crate) fn stats(&self) -> FaultStats {
        self.stats
    }

    /// Draws the faults for one request to `path`. Every request the plan applies to costs
    /// exactly [`DRAWS_PER_REQUEST`] draws, whatever fires, so one request's outcome never
    /// shifts the next one's. `claimed` (a scripted fault already owns the request) still draws,
    /// but nothing fires.
    pub(crate) fn decide(&mut self, path: &str, claimed: bool) -> Option<Decision> {
        if !self.plan.applies_to(path) {
            return None;
        }
        self.stats.requests_seen += 1;
        let plan = &self.plan;
        // All draws up front, so their number cannot depend on what fires.
        let u: [f64; DRAWS_PER_REQUEST] = std::array::from_fn(|_| self.rng.f64());
        let answers = [
            (
                PlannedAnswer::Status(StatusCode::INTERNAL_SERVER_ERROR),
                plan.status_500,
            ),
            (
                PlannedAnswer::Status(StatusCode::BAD_GATEWAY),
                plan.status_502,
            ),
            (
                PlannedAnswer::Status(StatusCode::SERVICE_UNAVAILABLE),
                plan.status_503,
            ),
            (
                PlannedAnswer::Status(StatusCode::GATEWAY_TIMEOUT),
                plan.status_504,
            ),
            (
                PlannedAnswer::TooManyRequests(plan.retry_after),
                plan.status_429,
            ),
            (PlannedAnswer::ResetBefore, plan.reset_before),
            (PlannedAnswer::ResetAfter, plan.reset_after),
        ];
        let answer = answers
            .into_iter()
            .zip(u)
            .find(|((_, p), u)| *u < prob(*p))
            .map(|((answer, _), _)| answer);
        let delayed = u[7] < prob(plan.latency);
        let within = u[8];
        let revoke = u[9] < prob(plan.revoke_tokens);

        if claimed {
            return None;
        }
        let latency = delayed.then(|| {
            let (lo, hi) = if plan.latency_min <= plan.latency_max {
                (plan.latency_min, plan.latency_max)
            } else {
                (plan.latency_max, plan.latency_min)
            };
            let extra = Duration::try_from_secs_f64((hi - lo).as_secs_f64() * within)
                .unwrap_or(hi - lo)
                .min(hi - lo);
            lo + extra
        });
        let decision = Decision {
            answer,
            latency,
            revoke,
        };
        let stats = &mut self.stats;
        match decision.answer {
            Some(PlannedAnswer::Status(StatusCode::INTERNAL_SERVER_ERROR)) => stats.status_500 += 1,
            Some(PlannedAnswer::Status(StatusCode::BAD_GATEWAY)) => stats.status_502 += 1,
            Some(PlannedAnswer::Status(StatusCode::SERVICE_UNAVAILABLE)) => stats.status_503 += 1,
            Some(PlannedAnswer::Status(_)) => stats.status_504 += 1,
            Some(PlannedAnswer::TooManyRequests(_)) => stats.status_429 += 1,
            Some(PlannedAnswer::ResetBefore) => stats.reset_before += 1,
            Some(PlannedAnswer::ResetAfter) => stats.reset_after += 1,
            None => {}
        }
        stats.delayed += u64::from(decision.latency.is_some());
        stats.revocations += u64::from(decision.revoke);
        (!decision.is_empty()).then_some(decision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "seed=42,500=0.05,502=0.05,503=0.1,504=0.02,429=0.05,retry_after=1s,\
        reset_before=0.03,reset_after=0.05,latency=0.1:50ms-300ms,revoke=0.01,\
        paths=/cash-ins|/cash-locations";

    fn parse(spec: &str) -> FaultPlan {
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

    fn run(plan: &FaultPlan, n: usize) -> Vec<Option<Decision>> {
        let mut state = PlanState::new(plan.clone());
        (0..n).map(|_| state.decide("/cash-ins", false)).collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_faults() {
        let plan = parse(EXAMPLE);
        let a = run(&plan, 500);
        assert_eq!(a, run(&plan, 500));
        assert!(
            a.iter().flatten().count() > 100,
            "the example plan fires often"
        );
        let other = run(
            &FaultPlan {
                seed: 43,
                ..plan.clone()
            },
            500,
        );
        assert_ne!(a, other);

        // Setting a plan restarts its sequence; requests it does not apply to draw nothing.
        let mut state = PlanState::new(plan.clone());
        let mut b = Vec::new();
        for i in 0..500 {
            assert_eq!(state.decide("/auth/token", false), None);
            b.push(state.decide("/cash-ins", false));
            if i == 250 {
                assert_eq!(b, a[..=250]);
                state.set(plan.clone());
                b.clear();
            }
        }
        assert_eq!(b, a[..249]);
        assert_eq!(state.stats().requests_seen, 249);

        // A request a scripted fault claimed still advances the sequence.
        let mut state = PlanState::new(plan);
        assert_eq!(state.decide("/cash-ins", true), None);
        let rest: Vec<_> = (1..500).map(|_| state.decide("/cash-ins", false)).collect();
        assert_eq!(rest, a[1..]);
    }

    #[test]
    fn every_request_costs_the_same_draws() {
        for spec in [
            "none",
            "503=1",
            "seed=5,latency=1:1ms-9ms,revoke=1",
            EXAMPLE,
        ] {
            let plan = parse(spec);
            let mut state = PlanState::new(plan.clone());
            let mut reference = fastrand::Rng::with_seed(plan.seed);
            for _ in 0..50 {
                state.decide("/cash-ins", false);
                state.decide("/cash-ins", true);
                for _ in 0..2 * DRAWS_PER_REQUEST {
                    reference.f64();
                }
                assert_eq!(state.rng.get_seed(), reference.get_seed(), "{spec}");
            }
        }
    }

    #[test]
    fn rates_hold_and_only_one_answer_fires() {
        let plan = parse(
            "seed=9,500=0.05,502=0.05,503=0.1,504=0.02,429=0.05,reset_before=0.03,\
             reset_after=0.05,latency=0.1:50ms-300ms,revoke=0.01",
        );
        let n = 50_000;
        let mut state = PlanState::new(plan.clone());
        for _ in 0..n {
            if let Some(d) = state.decide("/cash-ins/ci_1", false)
                && let Some(latency) = d.latency
            {
                assert!((plan.latency_min..=plan.latency_max).contains(&latency));
            }
        }
        let stats = state.stats();
        assert_eq!(stats.requests_seen, n);
        // Answer faults are first-hit-wins, so each later one only gets the share that is left.
        let mut left = 1.0;
        let mut expected = Vec::new();
        for p in [0.05, 0.05, 0.1, 0.02, 0.05, 0.03, 0.05] {
            expected.push(left * p);
            left *= 1.0 - p;
        }
        expected.extend([0.1, 0.01]);
        let observed = [
            stats.status_500,
            stats.status_502,
            stats.status_503,
            stats.status_504,
            stats.status_429,
            stats.reset_before,
            stats.reset_after,
            stats.delayed,
            stats.revocations,
        ];
        for (observed, p) in observed.into_iter().zip(expected) {
            let mean = p * n as f64;
            let sd = (mean * (1.0 - p)).sqrt();
            assert!(
                (observed as f64 - mean).abs() < 5.0 * sd,
                "observed {observed}, expected about {mean:.0}: {stats:?}"
            );
        }
    }

    #[test]
    fn certain_and_impossible_faults() {
        let mut state = PlanState::new(parse("503=1,504=1,latency=1:7ms,paths=/"));
        for _ in 0..100 {
            let d = state.decide("/anything", false).expect("fires");
            assert_eq!(
                d.answer,
                Some(PlannedAnswer::Status(StatusCode::SERVICE_UNAVAILABLE))
            );
            assert_eq!(d.latency, Some(Duration::from_millis(7)));
            assert_eq!(d.label(), "503+latency=7ms");
        }
        let mut state = PlanState::new(FaultPlan {
            status_500: f64::NAN,
            status_502: -3.0,
            ..FaultPlan::default()
        });
        assert!((0..100).all(|_| state.decide("/cash-ins", false).is_none()));
        let mut state = PlanState::new(FaultPlan {
            revoke_tokens: 7.0,
            paths: Vec::new(),
            ..FaultPlan::default()
        });
        assert_eq!(state.decide("/cash-ins", false), None);
        assert_eq!(state.stats(), FaultStats::default());
    }
}
