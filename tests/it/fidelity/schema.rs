//! The OpenAPI fixture, read with yaml-rust2 into JSON values, and a validator for the subset of
//! OpenAPI 3.0 schema objects the excerpt uses: `type`, `properties`, `required`, `enum`,
//! `nullable`, `$ref`, `allOf`/`oneOf`/`anyOf`, `items`, `additionalProperties`, and `format:
//! date-time` (loosely: an RFC 3339 instant). A keyword outside that subset fails the load, so a
//! new schema feature is never silently ignored.
//!
//! One deliberate strictness: a property the schema does not declare is an error even where
//! JSON Schema would allow it, because the excerpt is the whole `CashIn` schema and an
//! undeclared property in what the sandbox renders is drift. The one exception is
//! [`NOT_IN_SCHEMA`], a short list of properties other OMS pages document, each with its reason;
//! the proto check allows its fields by the same list.

use serde_json::Value;
use yaml_rust2::{Yaml, YamlLoader};

/// The fixture, as committed.
const FIXTURE: &str = include_str!("../../fixtures/oms-openapi.yaml");

/// The schema keywords the validator understands.
const KEYWORDS: &[&str] = &[
    "type",
    "properties",
    "required",
    "enum",
    "nullable",
    "$ref",
    "allOf",
    "oneOf",
    "anyOf",
    "items",
    "additionalProperties",
    "format",
    "description",
];

/// Properties OMS documents outside the schema, which the proto mirrors and the sandbox
/// renders all the same: (component schema, property, why). Each is a string.
pub const NOT_IN_SCHEMA: &[(&str, &str, &str)] = &[(
    "CashInDestination",
    "amount",
    "every cash-in response of the guide shows destination.amount (null until the deposit, then \
     the crypto delivered, 192.00 in its example); the schema's CashInDestination lacks it",
)];

/// Fields the gateway adds to the mirrored messages, not OMS's CashIn at all: (component schema,
/// property, why). Their messages mirror an object the excerpt has no schema for, so they are
/// not walked.
pub const GATEWAY_ADDITIONS: &[(&str, &str, &str)] = &[(
    "CashIn",
    "delivery",
    "the cash-in's fiat-to-crypto transaction, as OMS's transaction.fiatToCrypto.* webhooks \
     carry it (the guide's Failure Handling): the transaction object is in no schema of the \
     excerpt, and OMS's CashIn links it by transactionId only",
)];

/// Whether `property` of component `schema` is one of [`GATEWAY_ADDITIONS`].
pub fn added_by_the_gateway(schema: Option<&str>, property: &str) -> bool {
    GATEWAY_ADDITIONS
        .iter()
        .any(|(s, p, _)| Some(*s) == schema && *p == property)
}

/// The loaded document.
pub struct Spec {
    pub doc: Value,
}

/// Loads the fixture; panics on a YAML error or a keyword the validator does not know.
pub fn load() -> Spec {
    let docs = YamlLoader::load_from_str(FIXTURE).expect("the fixture is YAML");
    let doc = to_json(docs.first().expect("one document"));
    assert_eq!(
        doc["info"]["version"], "v26.05.28-0001",
        "the fixture's header names the version it holds"
    );
    let spec = Spec { doc };
    for (name, schema) in spec.schemas() {
        check_keywords(&format!("#/components/schemas/{name}"), schema);
    }
    spec
}

fn to_json(yaml: &Yaml) -> Value {
    match yaml {
        Yaml::Real(r) => r
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::Null, Value::Number),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Array(items) => Value::Array(items.iter().map(to_json).collect()),
        Yaml::Hash(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Yaml::String(s) => s.clone(),
                        other => format!("{other:?}"),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        Yaml::Alias(_) | Yaml::Null | Yaml::BadValue => Value::Null,
    }
}

fn check_keywords(at: &str, schema: &Value) {
    let Some(object) = schema.as_object() else {
        panic!("{at}: a schema must be an object");
    };
    for (key, value) in object {
        assert!(
            KEYWORDS.contains(&key.as_str()),
            "{at}: schema keyword `{key}` is not one the fidelity validator knows"
        );
        match key.as_str() {
            "properties" => {
                for (name, sub) in value.as_object().into_iter().flatten() {
                    check_keywords(&format!("{at}.{name}"), sub);
                }
            }
            "items" => check_keywords(&format!("{at}[]"), value),
            "additionalProperties" if value.is_object() => {
                check_keywords(&format!("{at}{{}}"), value);
            }
            "allOf" | "oneOf" | "anyOf" => {
                for (i, sub) in value.as_array().into_iter().flatten().enumerate() {
                    check_keywords(&format!("{at}/{key}/{i}"), sub);
                }
            }
            _ => {}
        }
    }
}

// === impl Spec ===

impl Spec {
    /// `components.schemas`, by name.
    pub fn schemas(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.doc["components"]["schemas"]
            .as_object()
            .expect("components.schemas")
            .iter()
    }

    /// A named component schema.
    pub fn schema(&self, name: &str) -> &Value {
        let schema = &self.doc["components"]["schemas"][name];
        assert!(schema.is_object(), "no schema {name}");
        schema
    }

    /// `schema` with its `$ref` followed (to any depth), and the name of the component it
    /// names, if it was one.
    pub fn resolve<'a>(&'a self, mut schema: &'a Value) -> (&'a Value, Option<&'a str>) {
        let mut name = None;
        while let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
            let target = reference
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("unsupported $ref {reference}"));
            name = Some(target);
            schema = self.schema(target);
        }
        (schema, name)
    }

    /// Every way `value` breaks `schema`, each as `path: problem`.
    pub fn validate(&self, schema: &Value, value: &Value, path: &str) -> Vec<String> {
        let mut problems = Vec::new();
        self.check(schema, value, path, &mut problems);
        problems
    }

    fn check(&self, schema: &Value, value: &Value, path: &str, out: &mut Vec<String>) {
        let (schema, component) = self.resolve(schema);
        if value.is_null() {
            if schema["nullable"] != Value::Bool(true) {
                out.push(format!(
                    "{path}: null, and the schema does not say nullable"
                ));
            }
            return;
        }
        for sub in schema["allOf"].as_array().into_iter().flatten() {
            self.check(sub, value, path, out);
        }
        for (keyword, exactly_one) in [("oneOf", true), ("anyOf", false)] {
            if let Some(options) = schema[keyword].as_array() {
                let fits = options
                    .iter()
                    .filter(|o| self.validate(o, value, path).is_empty())
                    .count();
                if fits == 0 || (exactly_one && fits > 1) {
                    out.push(format!("{path}: fits {fits} of the {keyword} options"));
                }
            }
        }
        if let Some(allowed) = schema["enum"].as_array()
            && !allowed.contains(value)
        {
            out.push(format!("{path}: {value} is not one of {allowed:?}"));
        }
        match schema["type"].as_str() {
            Some("object") => self.check_object(schema, component, value, path, out),
            Some("array") => match value.as_array() {
                Some(items) => {
                    for (i, item) in items.iter().enumerate() {
                        self.check(&schema["items"], item, &format!("{path}[{i}]"), out);
                    }
                }
                None => out.push(format!("{path}: {value} is not an array")),
            },
            Some("string") => match value.as_str() {
                Some(s) if schema["format"] == "date-time" => {
                    if s.parse::<prost_types::Timestamp>().is_err() {
                        out.push(format!("{path}: {s:?} is not an RFC 3339 date-time"));
                    }
                }
                Some(_) => {}
                None => out.push(format!("{path}: {value} is not a string")),
            },
            Some("boolean") if !value.is_boolean() => {
                out.push(format!("{path}: {value} is not a boolean"));
            }
            Some("integer") if !value.is_i64() && !value.is_u64() => {
                out.push(format!("{path}: {value} is not an integer"));
            }
            Some("number") if !value.is_number() => {
                out.push(format!("{path}: {value} is not a number"));
            }
            _ => {}
        }
    }

    fn check_object(
        &self,
        schema: &Value,
        component: Option<&str>,
        value: &Value,
        path: &str,
        out: &mut Vec<String>,
    ) {
        let Some(object) = value.as_object() else {
            out.push(format!("{path}: {value} is not an object"));
            return;
        };
        for name in schema["required"].as_array().into_iter().flatten() {
            let name = name.as_str().unwrap_or_default();
            if !object.contains_key(name) {
                out.push(format!("{path}.{name}: required, and missing"));
            }
        }
        let declared = schema["properties"].as_object();
        let extra = &schema["additionalProperties"];
        for (name, member) in object {
            let at = format!("{path}.{name}");
            match declared.and_then(|d| d.get(name)) {
                Some(sub) => self.check(sub, member, &at, out),
                None if extra.is_object() => self.check(extra, member, &at, out),
                None if documented_elsewhere(component, name) => {
                    if !member.is_string() {
                        out.push(format!("{at}: {member} is not a string"));
                    }
                }
                None => out.push(format!("{at}: not a property of the schema")),
            }
        }
    }
}

/// Whether `property` of component `schema` is in [`NOT_IN_SCHEMA`].
pub fn documented_elsewhere(schema: Option<&str>, property: &str) -> bool {
    NOT_IN_SCHEMA
        .iter()
        .any(|(s, p, _)| Some(*s) == schema && *p == property)
}
