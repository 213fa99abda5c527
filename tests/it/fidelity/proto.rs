//! Proto ⇔ schema: the `polygon.oms.v1` messages that mirror OMS's `CashIn`, read from the
//! descriptor set the gateway registers for reflection (`oms_gateway::proto::FILE_DESCRIPTOR_SET`),
//! walked side by side with the schema from `CashIn` down.
//!
//! Compatible types: `string` ↔ `string`; `string` + `format: date-time` ↔
//! `google.protobuf.Timestamp`; a string `enum` ↔ a proto enum whose values are the schema's in
//! SCREAMING_SNAKE_CASE after the enum's own prefix (`cryptoToCrypto` ↔
//! `TRANSFER_TYPE_CRYPTO_TO_CRYPTO`), both ways, `_UNSPECIFIED` aside (or a plain `string`);
//! `boolean` ↔ `bool`; an object with `properties` ↔ a message (walked in turn); an object with
//! `additionalProperties: {type: string}` ↔ `map<string, string>`; an `array` ↔ a `repeated`
//! field of the item's type. A property the schema does not require must have presence in the
//! proto (`optional`, or a message), so "absent" survives the mapping.

use std::collections::{BTreeMap, HashMap};

use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorSet};
use serde_json::{Value, json};

use super::schema::{self, Spec};

/// Every message and enum of the descriptor set, by full name (`.polygon.oms.v1.CashIn`).
struct Protos {
    messages: HashMap<String, DescriptorProto>,
    enums: HashMap<String, EnumDescriptorProto>,
}

impl Protos {
    fn load() -> Protos {
        let set = FileDescriptorSet::decode(oms_gateway::proto::FILE_DESCRIPTOR_SET)
            .expect("the descriptor set decodes");
        let mut protos = Protos {
            messages: HashMap::new(),
            enums: HashMap::new(),
        };
        for file in &set.file {
            let scope = format!(".{}", file.package());
            for e in &file.enum_type {
                protos
                    .enums
                    .insert(format!("{scope}.{}", e.name()), e.clone());
            }
            for m in &file.message_type {
                protos.add(&scope, m);
            }
        }
        protos
    }

    fn add(&mut self, scope: &str, message: &DescriptorProto) {
        let name = format!("{scope}.{}", message.name());
        for e in &message.enum_type {
            self.enums.insert(format!("{name}.{}", e.name()), e.clone());
        }
        for nested in &message.nested_type {
            self.add(&name, nested);
        }
        self.messages.insert(name, message.clone());
    }

    fn message(&self, name: &str) -> &DescriptorProto {
        self.messages
            .get(name)
            .unwrap_or_else(|| panic!("no message {name} in the descriptor set"))
    }
}

/// The JSON name of a field: the descriptor's, or proto3's lowerCamelCase of its name.
fn json_name(field: &FieldDescriptorProto) -> String {
    if let Some(name) = &field.json_name {
        return name.clone();
    }
    let mut out = String::new();
    let mut upper = false;
    for c in field.name().chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// `cryptoToCrypto`, `order_reserved`, `CashInSubStatus` → `CRYPTO_TO_CRYPTO`, … .
fn screaming(s: &str) -> String {
    let mut out = String::new();
    let mut previous_lower = false;
    for c in s.chars() {
        if c.is_ascii_uppercase() && previous_lower {
            out.push('_');
        }
        previous_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// The side-by-side walk and what it found.
struct Walk<'a> {
    spec: &'a Spec,
    protos: &'a Protos,
    /// Each mirrored message, with the schema object it mirrors, that schema's path, and its
    /// component name.
    mirrored: BTreeMap<String, (String, Value, Option<String>)>,
    problems: Vec<String>,
}

impl Walk<'_> {
    fn object(&mut self, path: &str, schema: &Value, component: Option<&str>, message: &str) {
        if self.mirrored.contains_key(message) {
            return;
        }
        self.mirrored.insert(
            message.to_owned(),
            (
                path.to_owned(),
                schema.clone(),
                component.map(str::to_owned),
            ),
        );
        let fields = self.protos.message(message).field.clone();
        let required: Vec<&str> = schema["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        for (name, property) in schema["properties"].as_object().into_iter().flatten() {
            let at = format!("{path}.{name}");
            match fields.iter().find(|f| json_name(f) == *name) {
                Some(field) => {
                    self.property(&at, property, field, required.contains(&name.as_str()))
                }
                None => self.problems.push(format!(
                    "{at}: no field of {message} has the JSON name `{name}`"
                )),
            }
        }
    }

    fn property(
        &mut self,
        at: &str,
        property: &Value,
        field: &FieldDescriptorProto,
        required: bool,
    ) {
        let (schema, component) = self.spec.resolve(property);
        let repeated = field.label() == Label::Repeated;
        match schema["type"].as_str() {
            Some("array") if repeated && !self.is_map(field) => {
                let (items, component) = self.spec.resolve(&schema["items"]);
                self.single(&format!("{at}[]"), items, component, field);
            }
            Some("object") if schema["additionalProperties"].is_object() => {
                self.map(at, schema, field)
            }
            _ if repeated => self.problems.push(format!(
                "{at}: not an array in the schema, repeated in the proto"
            )),
            _ => {
                self.single(at, schema, component, field);
                let scalar = field.r#type() != Type::Message;
                if !required && scalar && !field.proto3_optional() {
                    self.problems.push(format!(
                        "{at}: optional in the schema, but proto field `{}` has no presence (`optional`)",
                        field.name()
                    ));
                }
            }
        }
    }

    /// One value's type (a field, or a repeated field's item).
    fn single(
        &mut self,
        at: &str,
        schema: &Value,
        component: Option<&str>,
        field: &FieldDescriptorProto,
    ) {
        let kind = field.r#type();
        let ok = match (schema["type"].as_str(), schema["format"].as_str()) {
            (Some("string"), Some("date-time")) => {
                kind == Type::Message && field.type_name() == ".google.protobuf.Timestamp"
            }
            (Some("string"), _) if kind == Type::Enum => {
                let values = schema["enum"].as_array().cloned().unwrap_or_default();
                self.enumeration(at, &values, field.type_name());
                !values.is_empty()
            }
            (Some("string"), _) => kind == Type::String,
            (Some("boolean"), _) => kind == Type::Bool,
            (Some("integer"), _) => matches!(
                kind,
                Type::Int32 | Type::Int64 | Type::Uint32 | Type::Uint64
            ),
            (Some("number"), _) => matches!(kind, Type::Double | Type::Float),
            (Some("object"), _) if kind == Type::Message => {
                self.object(at, schema, component, field.type_name());
                true
            }
            _ => false,
        };
        if !ok {
            self.problems.push(format!(
                "{at}: schema type {} does not fit proto field `{}` ({kind:?} {})",
                json!({"type": schema["type"], "format": schema["format"], "enum": schema["enum"]}),
                field.name(),
                field.type_name()
            ));
        }
    }

    fn is_map(&self, field: &FieldDescriptorProto) -> bool {
        field.r#type() == Type::Message
            && self
                .protos
                .messages
                .get(field.type_name())
                .and_then(|m| m.options.as_ref())
                .is_some_and(|o| o.map_entry())
    }

    fn map(&mut self, at: &str, schema: &Value, field: &FieldDescriptorProto) {
        let entry = self
            .is_map(field)
            .then(|| self.protos.message(field.type_name()));
        let value_is_string = entry
            .and_then(|e| e.field.iter().find(|f| f.name() == "value"))
            .is_some_and(|v| v.r#type() == Type::String);
        if !(value_is_string && schema["additionalProperties"]["type"] == "string") {
            self.problems.push(format!(
                "{at}: a string map in the schema, proto field `{}` is not map<string, string>",
                field.name()
            ));
        }
    }

    fn enumeration(&mut self, at: &str, values: &[Value], name: &str) {
        let Some(e) = self.protos.enums.get(name) else {
            self.problems.push(format!("{at}: no proto enum {name}"));
            return;
        };
        let prefix = format!("{}_", screaming(e.name()));
        let proto: Vec<&str> = e.value.iter().map(|v| v.name()).collect();
        let wanted: Vec<String> = values
            .iter()
            .filter_map(Value::as_str)
            .map(|v| format!("{prefix}{}", screaming(v)))
            .collect();
        for (value, want) in values.iter().zip(&wanted) {
            if !proto.contains(&want.as_str()) {
                self.problems.push(format!(
                    "{at}: schema enum value {value} has no {want} in {name}"
                ));
            }
        }
        for p in proto {
            if p != format!("{prefix}UNSPECIFIED") && !wanted.iter().any(|w| w == p) {
                self.problems
                    .push(format!("{at}: proto enum value {p} is not a schema value"));
            }
        }
    }

    /// Every field of every mirrored message is a schema property, or one of
    /// [`schema::NOT_IN_SCHEMA`] (a string), documented elsewhere with its reason, or one of
    /// [`schema::GATEWAY_ADDITIONS`].
    fn no_extra_fields(&mut self) {
        for (message, (path, schema, component)) in &self.mirrored {
            for field in &self.protos.message(message).field {
                let name = json_name(field);
                let allowed = (schema::documented_elsewhere(component.as_deref(), &name)
                    && field.r#type() == Type::String)
                    || schema::added_by_the_gateway(component.as_deref(), &name);
                if schema["properties"].get(&name).is_none() && !allowed {
                    self.problems.push(format!(
                        "{path}: proto field {message}.{} (`{name}`) is not in the schema",
                        field.name()
                    ));
                }
            }
        }
    }
}

/// Walks `CashIn` in `spec` against the proto; every problem found.
fn problems(spec: &Spec, protos: &Protos) -> (Vec<String>, usize) {
    let mut walk = Walk {
        spec,
        protos,
        mirrored: BTreeMap::new(),
        problems: Vec::new(),
    };
    walk.object(
        "CashIn",
        spec.schema("CashIn"),
        Some("CashIn"),
        ".polygon.oms.v1.CashIn",
    );
    walk.no_extra_fields();
    (walk.problems, walk.mirrored.len())
}

#[test]
fn the_proto_mirrors_every_cash_in_property_and_nothing_else() {
    let spec = schema::load();
    let (problems, mirrored) = problems(&spec, &Protos::load());
    assert!(
        problems.is_empty(),
        "the proto no longer mirrors OMS's CashIn schema:\n{}",
        problems.join("\n")
    );
    // CashIn and the eleven messages under it (source, destination, wallet, fees, ...).
    assert_eq!(mirrored, 12, "the walk reached every mirrored message");
}

#[test]
fn the_check_fails_on_a_proto_field_removed_and_on_a_schema_property_added() {
    let mut spec = schema::load();
    let mut protos = Protos::load();
    let source = ".polygon.oms.v1.CashInSource";
    protos
        .messages
        .get_mut(source)
        .expect("CashInSource")
        .field
        .retain(|f| f.name() != "email");
    spec.doc["components"]["schemas"]["CashInDestinationWallet"]["properties"]["ensName"] =
        json!({"type": "string"});
    let (problems, _) = problems(&spec, &protos);
    assert_eq!(
        problems,
        [
            "CashIn.destination.wallet.ensName: no field of .polygon.oms.v1.CashInDestinationWallet has the JSON name `ensName`",
            "CashIn.source.email: no field of .polygon.oms.v1.CashInSource has the JSON name `email`",
        ]
    );
}

#[test]
fn enum_values_and_presence_are_checked_both_ways() {
    let mut spec = schema::load();
    let statuses = &mut spec.doc["components"]["schemas"]["CashInStatus"]["enum"];
    statuses
        .as_array_mut()
        .expect("enum")
        .retain(|v| v != "expired");
    statuses.as_array_mut().expect("enum").push(json!("onHold"));
    spec.doc["components"]["schemas"]["CashInfo"]["required"] = json!(["locationId"]);
    let (problems, _) = problems(&spec, &Protos::load());
    assert_eq!(
        problems,
        [
            "CashIn.cash.locationReference: optional in the schema, but proto field `location_reference` has no presence (`optional`)",
            "CashIn.status: schema enum value \"onHold\" has no CASH_IN_STATUS_ON_HOLD in .polygon.oms.v1.CashInStatus",
            "CashIn.status: proto enum value CASH_IN_STATUS_EXPIRED is not a schema value",
        ]
    );
}
