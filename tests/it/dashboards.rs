//! The operator's kit against a live scrape: every metric the Grafana dashboard
//! (`deploy/monitoring/dashboard.json`) and the alerting rules (`deploy/monitoring/alerts.yaml`)
//! name is a family the gateway exports, read from `/metrics` of a gateway with every optional
//! family on (webhooks, Redis, a quota); and the families operators expect from any service are there
//! (go-grpc-middleware's, the process's, the build info). The rules' own logic is
//! `promtool test rules` in `deploy/validate.sh`.

use crate::common::{self, prometheus::scrape, prometheus::value};

use oms_gateway::config::{IdentityHeader, Secret};
use std::collections::BTreeSet;
use std::path::Path;
use yaml_rust2::{Yaml, YamlLoader};

/// PromQL words that are not metric names: aggregations and binary operators. Functions are
/// told by the `(` after them.
#[rustfmt::skip]
const KEYWORDS: &[&str] = &[
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "count_values", "group", "and", "or", "unless", "bool", "offset", "group_left", "group_right",
];
/// Keywords followed by a list of label names, not metrics.
const GROUPING: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The metric names an expression reads: its identifiers outside strings, label matchers, range
/// selectors and grouping lists, that are neither a keyword nor a function.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut at = 0;
    // The index just past the group that opens at `at` with `open` and ends with `close`.
    let skip = |mut at: usize, open: char, close: char| {
        let mut depth = 0;
        while at < chars.len() {
            match chars[at] {
                '"' => {
                    at += 1;
                    while at < chars.len() && chars[at] != '"' {
                        at += if chars[at] == '\\' { 2 } else { 1 };
                    }
                }
                c if c == open => depth += 1,
                c if c == close => {
                    depth -= 1;
                    if depth == 0 {
                        return at + 1;
                    }
                }
                _ => {}
            }
            at += 1;
        }
        at
    };
    while at < chars.len() {
        let c = chars[at];
        if c == '{' {
            at = skip(at, '{', '}');
        } else if c == '[' {
            at = skip(at, '[', ']');
        } else if c == '"' {
            at = skip(at, '"', '"');
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = at;
            while at < chars.len()
                && (chars[at].is_ascii_alphanumeric() || "_:".contains(chars[at]))
            {
                at += 1;
            }
            let word: String = chars[start..at].iter().collect();
            let mut next = at;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let call = chars.get(next) == Some(&'(');
            if GROUPING.contains(&word.as_str()) && call {
                at = skip(next, '(', ')');
            } else if !call && !KEYWORDS.contains(&word.as_str()) {
                names.insert(word);
            }
        } else if c == '$' || c.is_ascii_digit() {
            // A Grafana variable, a number or a duration.
            at += 1;
            while at < chars.len() && (chars[at].is_ascii_alphanumeric() || chars[at] == '_') {
                at += 1;
            }
        } else {
            at += 1;
        }
    }
    names
}

fn deploy_file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/monitoring")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every query of the dashboard: its panels' targets and its variables'.
fn dashboard_queries() -> Vec<String> {
    let dashboard: serde_json::Value =
        serde_json::from_str(&deploy_file("dashboard.json")).expect("dashboard.json parses");
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push(target["expr"].as_str().expect("a target's expr").to_owned());
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
    {
        if let Some(query) = variable["query"]["query"].as_str() {
            let inner = query
                .strip_prefix("label_values(")
                .and_then(|q| q.rsplit_once(','))
                .map_or(query, |(metric, _)| metric);
            queries.push(inner.to_owned());
        }
    }
    queries
}

/// Every alerting rule's expression.
fn alert_expressions() -> Vec<(String, String)> {
    let docs = YamlLoader::load_from_str(&deploy_file("alerts.yaml")).expect("alerts.yaml parses");
    let mut rules = Vec::new();
    for group in docs[0]["groups"].as_vec().expect("groups") {
        for rule in group["rules"].as_vec().expect("rules") {
            let (Yaml::String(alert), Yaml::String(expr)) = (&rule["alert"], &rule["expr"]) else {
                panic!("a rule without alert or expr: {rule:?}");
            };
            rules.push((alert.clone(), expr.clone()));
        }
    }
    rules
}

/// The families of a Prometheus text scrape, with a histogram's `_bucket`, `_sum` and `_count`.
fn families(scrape: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in scrape.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        }
        names.insert(name.to_owned());
    }
    names
}

#[test]
fn metric_names_are_read_out_of_promql() {
    let names = metric_names(
        r#"histogram_quantile(0.99, sum by (job, le) (rate(a_bucket{x=~"b{1}", y="c"}[$__rate_interval])))
           / on (job) group_left max(b_total offset 5m) > 0.9 and c:rule or time() - d"#,
    );
    let want: BTreeSet<String> = ["a_bucket", "b_total", "c:rule", "d"]
        .map(String::from)
        .into();
    assert_eq!(names, want);
}

// Before: no dashboard and no alerts were shipped, and neither msg_received nor the process
// families existed to put in them.
#[tokio::test]
async fn the_dashboard_and_the_alerts_name_only_families_the_gateway_exports() {
    let dir = common::tls::temp_dir("dashboards");
    let mut config = common::test_config();
    config.webhooks.secret_file = Some(common::tls::write(
        &dir,
        "whsec",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    ));
    // Nothing listens there: Redis is down, and its families say so.
    config.redis.url = Some(Secret::new("redis://127.0.0.1:1"));
    // A policy with a quota, so the quota families are exported.
    config.security.caller_identity_header = Some(IdentityHeader::LinkerdClientId);
    let quota =
        "[[quota]]\nname = \"batch\"\ncallers = [\"spiffe://td/*\"]\ncalls_per_second = 20\n";
    let policy = crate::quotas::policy(quota);
    config.security.authz_policy = Some(common::tls::write(&dir, "policy.toml", &policy));
    let gateway = common::start_with(config).await;
    // One call, so the per-method families have series.
    let request = crate::quotas::as_caller(common::guide_point(), crate::quotas::CHECKOUT);
    oms_gateway::proto::v1::cash_location_service_client::CashLocationServiceClient::new(
        gateway.channel.clone(),
    )
    .list_cash_locations(request)
    .await
    .expect("ListCashLocations");
    let text = scrape(&gateway).await;
    let exported = families(&text);

    let mut unknown = Vec::new();
    let queries = dashboard_queries();
    assert!(queries.len() >= 25, "{} dashboard queries", queries.len());
    for query in &queries {
        for name in metric_names(query) {
            if !exported.contains(&name) {
                unknown.push(format!("dashboard: {name} in {query}"));
            }
        }
    }
    let alerts = alert_expressions();
    assert!(alerts.len() >= 8, "{} alerts", alerts.len());
    for (alert, expr) in &alerts {
        // `up` is Prometheus's own, for every target.
        for name in metric_names(expr).into_iter().filter(|n| n != "up") {
            if !exported.contains(&name) {
                unknown.push(format!("{alert}: {name}"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "not exported: {unknown:#?}\nexported: {exported:#?}"
    );

    // What an operator expects from any service, and what the issue asked for.
    for family in [
        "grpc_server_msg_received_total",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
        "oms_gateway_build_info",
        "oms_gateway_watch_max_polls_per_second",
    ] {
        assert!(exported.contains(family), "{family} is not exported");
    }
    let used: BTreeSet<String> = queries.iter().flat_map(|q| metric_names(q)).collect();
    for family in [
        "grpc_server_msg_received_total",
        "process_cpu_seconds_total",
    ] {
        assert!(
            used.contains(family),
            "the dashboard does not show {family}"
        );
    }
    let version = [("version", env!("CARGO_PKG_VERSION"))];
    assert_eq!(value(&text, "oms_gateway_build_info", &version), 1.0);
    assert!(value(&text, "process_start_time_seconds", &[]) > 1.6e9);
    assert!(value(&text, "process_open_fds", &[]) >= 3.0);
    gateway.gateway.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
