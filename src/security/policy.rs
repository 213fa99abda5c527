//! The authorization policy (`--authz-policy`, TOML): a list of `[[allow]]` rules, each naming
//! callers (exact, or a prefix ending in `*`, spelled with their kind: a URI, `dns:…` or `cn:…`,
//! see [`super::identity`]) and methods (`package.Service/Method`, or a prefix
//! ending in `*` such as `polygon.oms.v1.CashInService/*` or `grpc.reflection.*`). A call is
//! allowed when one rule matches both its caller and its method; everything else is denied.
//! Unknown keys and a `*` anywhere but at the end are errors, so a typo cannot widen the policy.
//! The same file holds the per-caller quotas (`[[quota]]`, `[default_quota]`: see
//! [`super::quotas`]), reloaded with it.

use super::pattern::Pattern;
use super::quotas::{Quota, QuotaFile, Quotas};
use serde::Deserialize;
use std::sync::Arc;

/// Refuses a caller pattern that does not say which kind of identity it admits (`*` alone
/// admits every caller): a rule written for a URI can then never admit a CN that looks like one,
/// and a bare name from before identities had kinds fails to load instead of matching nothing.
fn caller_kind(pattern: &Pattern) -> Result<(), String> {
    let (name, any) = match pattern {
        Pattern::Exact(name) => (name.as_str(), false),
        Pattern::Prefix(body) => (body.as_str(), body.is_empty()),
    };
    if any || super::identity::names_a_kind(name) {
        return Ok(());
    }
    Err(format!(
        "caller `{name}` does not say which kind of identity it is: write a URI \
         (`spiffe://…`), `dns:{name}` for a DNS SAN or Linkerd identity, or `cn:{name}` for a \
         certificate's common name"
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    allow: Vec<RuleFile>,
    #[serde(default)]
    quota: Vec<QuotaFile>,
    default_quota: Option<QuotaFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    callers: Vec<String>,
    methods: Vec<String>,
}

#[derive(Debug, Clone)]
struct Rule {
    callers: Vec<Pattern>,
    methods: Vec<Pattern>,
}

/// A parsed policy.
#[derive(Debug, Clone)]
pub struct Policy {
    rules: Vec<Rule>,
    quotas: Quotas,
}

// === impl Policy ===

impl Policy {
    /// Parses a policy; the error names the line (and column) of the problem.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: PolicyFile = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
            let message = e.message().trim().to_owned();
            match line {
                Some(line) => format!("line {line}: {message}"),
                None => message,
            }
        })?;
        let quotas = Quotas::build(file.quota, file.default_quota, |callers| {
            callers
                .iter()
                .map(|name| {
                    let pattern = Pattern::parse(name)?;
                    caller_kind(&pattern)?;
                    Ok(pattern)
                })
                .collect::<Result<_, String>>()
                .map_err(|e| format!("callers: {e}"))
        })?;
        let mut rules = Vec::new();
        for (i, rule) in file.allow.into_iter().enumerate() {
            let parse = |names: &[String], what: &str| -> Result<Vec<Pattern>, String> {
                names
                    .iter()
                    .map(|name| {
                        let name = if what == "methods" {
                            name.trim().trim_start_matches('/')
                        } else {
                            name.as_str()
                        };
                        let pattern = Pattern::parse(name)?;
                        if what == "callers" {
                            caller_kind(&pattern)?;
                        }
                        Ok::<_, String>(pattern)
                    })
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("[[allow]] rule {} ({what}): {e}", i + 1))
            };
            rules.push(Rule {
                callers: parse(&rule.callers, "callers")?,
                methods: parse(&rule.methods, "methods")?,
            });
        }
        Ok(Self { rules, quotas })
    }

    /// The quota of `caller` (none for an anonymous caller, or one no rule names without a
    /// `[default_quota]`).
    pub fn quota_of(&self, caller: &str) -> Option<Arc<Quota>> {
        self.quotas.of(caller)
    }

    /// Whether `caller` may call `method` (`package.Service/Method`).
    pub fn allows(&self, caller: &str, method: &str) -> bool {
        self.rules.iter().any(|rule| {
            rule.callers.iter().any(|p| p.matches(caller))
                && rule.methods.iter().any(|p| p.matches(method))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
[[allow]]
callers = ["spiffe://cluster.local/ns/checkout/sa/checkout"]   # exact
methods = ["polygon.oms.v1.CashInService/*", "polygon.oms.v1.CashLocationService/ListCashLocations"]

[[allow]]
callers = ["spiffe://cluster.local/ns/ops/*"]
methods = ["grpc.reflection.*"]
"#;

    #[test]
    fn rules_match_exact_names_and_prefixes() {
        let policy = Policy::parse(POLICY).unwrap();
        let checkout = "spiffe://cluster.local/ns/checkout/sa/checkout";
        assert!(policy.allows(checkout, "polygon.oms.v1.CashInService/CreateCashIn"));
        assert!(policy.allows(
            checkout,
            "polygon.oms.v1.CashLocationService/ListCashLocations"
        ));
        assert!(!policy.allows(checkout, "polygon.oms.v1.SandboxService/ExpireCashIn"));
        assert!(!policy.allows(
            "spiffe://cluster.local/ns/checkout/sa/checkout2",
            "polygon.oms.v1.CashInService/CreateCashIn"
        ));
        let ops = "spiffe://cluster.local/ns/ops/sa/debug";
        assert!(policy.allows(
            ops,
            "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
        ));
        assert!(!policy.allows(ops, "polygon.oms.v1.CashInService/ListCashIns"));
        assert!(!Policy::parse("").unwrap().allows(ops, "a.B/C"));
    }

    #[test]
    fn a_policy_that_does_not_parse_names_the_line() {
        let err =
            Policy::parse("[[allow]]\ncallers = [\"cn:a\"]\nmethods = \"oops\"\n").unwrap_err();
        assert!(err.starts_with("line 3:"), "{err}");
        let err = Policy::parse("[[allow]]\ncallers = [\"cn:a\"]\nmethod = [\"x\"]\n").unwrap_err();
        assert!(err.starts_with("line "), "{err}");
        let err =
            Policy::parse("[[allow]]\ncallers = [\"cn:a*b\"]\nmethods = [\"x\"]\n").unwrap_err();
        assert!(err.contains("only at the end"), "{err}");
    }

    #[test]
    fn a_caller_names_its_kind_and_no_kind_passes_for_another() {
        let err = Policy::parse("[[allow]]\ncallers = [\"legacy-batch\"]\nmethods = [\"*\"]\n")
            .unwrap_err();
        assert!(err.contains("cn:legacy-batch"), "{err}");
        let policy = Policy::parse(
            "[[allow]]\ncallers = [\"spiffe://td/*\", \"cn:legacy-batch\", \"dns:*.example.test\"]\nmethods = [\"a.B/*\"]\n",
        );
        let err = policy.unwrap_err();
        assert!(err.contains("only at the end"), "{err}");
        let policy = Policy::parse(
            "[[allow]]\ncallers = [\"spiffe://td/*\", \"cn:legacy-batch\", \"dns:pay.example.test\"]\nmethods = [\"a.B/*\"]\n",
        )
        .unwrap();
        assert!(policy.allows("spiffe://td/ns/a/sa/a", "a.B/C"));
        assert!(policy.allows("cn:legacy-batch", "a.B/C"));
        assert!(policy.allows("dns:pay.example.test", "a.B/C"));
        assert!(!policy.allows("cn:spiffe://td/ns/a/sa/a", "a.B/C"));
        assert!(!policy.allows("dns:legacy-batch", "a.B/C"));
        assert!(!policy.allows("legacy-batch", "a.B/C"));
    }
}
