//! The policy's per-caller quotas: `[[quota]]` rules, each a name (a metric label and part of
//! every refusal), the callers it covers (patterns as in `[[allow]]`; every matching identity
//! gets its own allowance) and its limits, plus an optional `[default_quota]` for identified
//! callers no rule names. The first rule whose callers match applies. Anonymous callers get no
//! quota. A limit left out is not limited by the quota (the gateway's global limits still
//! apply). Values are checked as they are read, so a zero, a negative number, a fraction where a
//! count is expected or a name that is no label all refuse the policy with the line they are on.

use serde::{Deserialize, Deserializer, de};
use std::sync::Arc;

/// The most quotas a policy may name (each name is a metric label value).
pub const MAX_QUOTAS: usize = 64;
/// The largest `calls_per_second`.
pub const MAX_RATE: f64 = 100_000.0;
/// The smallest `calls_per_second` (one call every 100 s), which bounds how long a caller's
/// bucket lives in Redis (until it would be full again).
pub const MIN_RATE: f64 = 0.01;
/// The largest count limit (`concurrent_calls`, `watch_streams`, `watched_resources`).
pub const MAX_COUNT: u32 = 1_000_000;
/// The longest quota name, in characters.
const MAX_NAME_CHARS: usize = 63;

/// A quota's name: lowercase letters, digits, `-` and `_`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaName(pub Arc<str>);

impl<'de> Deserialize<'de> for QuotaName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        let ok = (1..=MAX_NAME_CHARS).contains(&name.len())
            && name
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !ok {
            return Err(de::Error::custom(format!(
                "a quota name is 1 to {MAX_NAME_CHARS} lowercase letters, digits, `-` or `_` \
                 (it is a metric label)"
            )));
        }
        Ok(Self(name.into()))
    }
}

/// `calls_per_second`: calls per second, from [`MIN_RATE`] to [`MAX_RATE`].
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rate(f64);

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let rate = f64::deserialize(deserializer)?;
        if !(MIN_RATE..=MAX_RATE).contains(&rate) {
            return Err(de::Error::custom(format!(
                "calls_per_second must be positive, from {MIN_RATE} to {MAX_RATE}, not {rate}"
            )));
        }
        Ok(Self(rate))
    }
}

/// A count limit: a whole number from 1 to [`MAX_COUNT`].
#[derive(Debug, Clone, Copy, PartialEq)]
struct Count(u32);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let count = i64::deserialize(deserializer)?;
        match u32::try_from(count) {
            Ok(count @ 1..=MAX_COUNT) => Ok(Self(count)),
            _ => Err(de::Error::custom(format!(
                "a quota's count must be a whole number from 1 to {MAX_COUNT}, not {count}"
            ))),
        }
    }
}

/// A quota's limits; `None`: not limited by the quota.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct QuotaLimits {
    /// Unary calls per second: a token bucket whose burst is one second's worth (at least 1).
    pub calls_per_second: Option<f64>,
    /// Unary calls in flight at once.
    pub concurrent_calls: Option<u32>,
    /// Open WatchCashIn and WatchCashIns streams.
    pub watch_streams: Option<u32>,
    /// Distinct cash-ins and customers its open streams watch.
    pub watched_resources: Option<u32>,
}

/// One `[[quota]]` rule, or the `[default_quota]`, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct QuotaFile {
    name: Option<QuotaName>,
    callers: Option<Vec<String>>,
    calls_per_second: Option<Rate>,
    concurrent_calls: Option<Count>,
    watch_streams: Option<Count>,
    watched_resources: Option<Count>,
}

impl QuotaFile {
    fn limits(&self) -> QuotaLimits {
        QuotaLimits {
            calls_per_second: self.calls_per_second.map(|r| r.0),
            concurrent_calls: self.concurrent_calls.map(|c| c.0),
            watch_streams: self.watch_streams.map(|c| c.0),
            watched_resources: self.watched_resources.map(|c| c.0),
        }
    }
}

/// A quota that applies to a caller: its name and limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Quota {
    /// The policy's name for it.
    pub name: Arc<str>,
    /// Its limits, for each caller it covers.
    pub limits: QuotaLimits,
}

/// The quotas of a policy, in the order they are tried.
#[derive(Debug, Clone, Default)]
pub(super) struct Quotas {
    rules: Vec<(Vec<super::pattern::Pattern>, Arc<Quota>)>,
    default: Option<Arc<Quota>>,
}

impl Quotas {
    /// Checks the rules read from the file: callers, names unique, at least one limit each.
    pub(super) fn build(
        rules: Vec<QuotaFile>,
        default: Option<QuotaFile>,
        parse_callers: impl Fn(&[String]) -> Result<Vec<super::pattern::Pattern>, String>,
    ) -> Result<Self, String> {
        let count = rules.len() + usize::from(default.is_some());
        if count > MAX_QUOTAS {
            return Err(format!(
                "{count} quotas: a policy names at most {MAX_QUOTAS}"
            ));
        }
        let mut quotas = Self::default();
        let mut names: Vec<Arc<str>> = Vec::new();
        let mut named = |name: &Arc<str>, what: &str| {
            if names.contains(name) {
                return Err(format!("{what}: the name `{name}` is used twice"));
            }
            names.push(name.clone());
            Ok(())
        };
        for (i, rule) in rules.into_iter().enumerate() {
            let (Some(name), Some(callers)) = (&rule.name, &rule.callers) else {
                return Err(format!(
                    "[[quota]] rule {}: needs a `name` and `callers`",
                    i + 1
                ));
            };
            let what = format!("[[quota]] rule {} (`{}`)", i + 1, name.0);
            named(&name.0, &what)?;
            let callers = parse_callers(callers).map_err(|e| format!("{what}: {e}"))?;
            let quota = quota(name.0.clone(), rule.limits(), &what)?;
            quotas.rules.push((callers, quota));
        }
        if let Some(default) = default {
            if default.callers.is_some() {
                return Err("[default_quota]: takes no `callers` (it applies to every \
                            identified caller no [[quota]] rule names)"
                    .into());
            }
            let name = default
                .name
                .as_ref()
                .map_or_else(|| "default".into(), |n| n.0.clone());
            named(&name, "[default_quota]")?;
            quotas.default = Some(quota(name, default.limits(), "[default_quota]")?);
        }
        Ok(quotas)
    }

    /// The quota of an identified `caller`: the first rule naming it, else the default.
    pub(super) fn of(&self, caller: &str) -> Option<Arc<Quota>> {
        if caller.is_empty() {
            return None;
        }
        self.rules
            .iter()
            .find(|(callers, _)| callers.iter().any(|p| p.matches(caller)))
            .map(|(_, quota)| quota.clone())
            .or_else(|| self.default.clone())
    }
}

fn quota(name: Arc<str>, limits: QuotaLimits, what: &str) -> Result<Arc<Quota>, String> {
    if limits == QuotaLimits::default() {
        return Err(format!(
            "{what}: sets no limit (calls_per_second, concurrent_calls, watch_streams or \
             watched_resources)"
        ));
    }
    Ok(Arc::new(Quota { name, limits }))
}

#[cfg(test)]
mod tests {
    use super::super::policy::Policy;

    const POLICY: &str = r#"
[[allow]]
callers = ["*"]
methods = ["*"]

[[quota]]
name = "batch"
callers = ["spiffe://cluster.local/ns/recon/*"]
calls_per_second = 20
concurrent_calls = 10
watch_streams = 50
watched_resources = 20

[[quota]]
name = "checkout"
callers = ["spiffe://cluster.local/ns/checkout/sa/checkout", "dns:checkout.example.test"]
calls_per_second = 2.5

[default_quota]
calls_per_second = 5
"#;

    #[test]
    fn the_first_rule_naming_a_caller_applies_else_the_default() {
        let policy = Policy::parse(POLICY).unwrap();
        let batch = policy
            .quota_of("spiffe://cluster.local/ns/recon/sa/job")
            .unwrap();
        assert_eq!(&*batch.name, "batch");
        assert_eq!(batch.limits.calls_per_second, Some(20.0));
        assert_eq!(batch.limits.concurrent_calls, Some(10));
        assert_eq!(batch.limits.watch_streams, Some(50));
        assert_eq!(batch.limits.watched_resources, Some(20));
        let checkout = policy.quota_of("dns:checkout.example.test").unwrap();
        assert_eq!(&*checkout.name, "checkout");
        assert_eq!(checkout.limits.calls_per_second, Some(2.5));
        assert_eq!(checkout.limits.watch_streams, None);
        let other = policy.quota_of("cn:someone").unwrap();
        assert_eq!(&*other.name, "default");
        assert_eq!(policy.quota_of(""), None, "anonymous callers get no quota");
        let none =
            Policy::parse("[[quota]]\nname = \"a\"\ncallers = [\"cn:a\"]\nwatch_streams = 1\n");
        assert_eq!(none.unwrap().quota_of("cn:b"), None, "no default: no quota");
    }

    #[test]
    fn bad_quotas_refuse_the_policy_naming_the_line() {
        let head = "[[quota]]\nname = \"batch\"\ncallers = [\"cn:a\"]\n";
        for (line, bad) in [
            ("calls_per_second = 0", "positive"),
            ("calls_per_second = -3", "positive"),
            ("calls_per_second = 0.001", "from 0.01"),
            ("concurrent_calls = 0", "from 1"),
            ("watch_streams = -1", "from 1"),
            ("watched_resources = 1.5", ""),
            ("watched_resources = 99999999999", "from 1"),
            ("watch_stream = 3", "unknown field"),
        ] {
            let err = Policy::parse(&format!("{head}{line}\n")).unwrap_err();
            assert!(err.starts_with("line 4:"), "{line}: {err}");
            assert!(err.contains(bad), "{line}: {err}");
        }
        let err = Policy::parse("[[quota]]\nname = \"Batch Jobs\"\ncallers = []\n").unwrap_err();
        assert!(
            err.starts_with("line 2:") && err.contains("metric label"),
            "{err}"
        );
        let err = Policy::parse(head).unwrap_err();
        assert!(err.contains("sets no limit"), "{err}");
        let twice = format!("{head}watch_streams = 1\n{head}watch_streams = 2\n");
        assert!(Policy::parse(&twice).unwrap_err().contains("used twice"));
        let err =
            Policy::parse("[[quota]]\ncallers = [\"legacy\"]\nname = \"a\"\nwatch_streams = 1\n")
                .unwrap_err();
        assert!(err.contains("cn:legacy"), "{err}");
        let err = Policy::parse("[default_quota]\ncallers = [\"cn:a\"]\nwatch_streams = 1\n")
            .unwrap_err();
        assert!(err.contains("takes no `callers`"), "{err}");
        let err = Policy::parse("[default_quota]\nwatch_streams = 1\nburst = 3\n").unwrap_err();
        assert!(err.starts_with("line 3:"), "{err}");
    }
}
