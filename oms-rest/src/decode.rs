//! Decoding a 2xx body into its serde type, and saying why one does not decode without quoting
//! it. serde_json's own messages quote the value they met ("invalid type: integer `483291`,
//! expected a string"), and in an OMS answer that value may be a deposit code; what the gateway
//! says instead names the JSON path and the two kinds of value (`at depositInstructions.code:
//! expected a string, found an integer`), never the value itself.
//!
//! A body that decodes costs one serde_json pass, as before. Only a body that does not is read a
//! second time, into a `serde_json::Value`, and deserialized again through [`At`], a deserializer
//! of that tree whose error type ([`Mismatch`]) keeps the path and our wording: every serde
//! error constructor it implements drops the value it is handed.

use crate::drift::Drift;
use crate::error::UpstreamError;
use crate::observe::{self, Answer};
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, EnumAccess, Expected, IntoDeserializer,
    MapAccess, SeqAccess, Unexpected, VariantAccess, Visitor,
};
use serde_json::Value;
use std::fmt;

/// A 2xx body of `operation` as `T`. JSON is UTF-8 (RFC 8259, 8.1), so the body is checked as
/// UTF-8 once, whole, and then read as text: reading bytes, serde_json would check every string
/// and key again on its own (≈ 5 % of a GetCashIn's instructions).
pub(super) fn decode<T: DeserializeOwned>(
    operation: &str,
    bytes: &[u8],
) -> Result<T, UpstreamError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        UpstreamError::BadResponse(format!("{operation}: the body is not UTF-8: {e}"))
    })?;
    serde_json::from_str(text)
        .map_err(|e| UpstreamError::BadResponse(format!("{operation}: {}", why::<T>(text, &e))))
}

/// A 2xx body of `operation` as `T`, as [`decode`] reads it, reporting to `drift` the path of
/// every member `T` does not know (see [`crate::observe`]).
pub(super) fn decode_observed<T: Answer>(
    operation: &str,
    bytes: &[u8],
    drift: &Drift,
) -> Result<T, UpstreamError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        UpstreamError::BadResponse(format!("{operation}: the body is not UTF-8: {e}"))
    })?;
    let report = |path: &str| drift.unknown_field(path);
    // What serde_json::from_str does, through the observing adapter.
    let mut de = serde_json::Deserializer::from_str(text);
    observe::deserialize::<T, _>(&mut de, T::ROOT, &report)
        .and_then(|value| de.end().map(|()| value))
        .map_err(|e| UpstreamError::BadResponse(format!("{operation}: {}", why::<T>(text, &e))))
}

/// Why `text` did not decode as `T` (serde_json said `error`), in words that quote nothing of it.
fn why<T: DeserializeOwned>(text: &str, error: &serde_json::Error) -> String {
    let (line, column) = (error.line(), error.column());
    if !error.is_data() {
        let what = if error.is_eof() {
            "ends too early"
        } else {
            "is not JSON"
        };
        return format!("the body {what} (line {line}, column {column})");
    }
    let mismatch = serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|tree| T::deserialize(At(&tree)).err());
    match mismatch {
        Some(mismatch) => mismatch.to_string(),
        // serde_json reads a few things a tree cannot show (a duplicate key, a number beyond
        // f64); the position is all that can be said without quoting.
        None => {
            format!("the body does not have the documented shape (line {line}, column {column})")
        }
    }
}

/// One step of a JSON path.
#[derive(Debug)]
enum Step {
    Key(String),
    Index(usize),
}

/// A value that does not fit the type: where (innermost step first, as the error travels up)
/// and what was expected there.
#[derive(Debug)]
struct Mismatch {
    path: Vec<Step>,
    problem: String,
}

// === impl Mismatch ===

impl Mismatch {
    fn new(problem: String) -> Self {
        Self {
            path: Vec::new(),
            problem,
        }
    }

    /// The same mismatch, seen from one step further out.
    fn within(mut self, step: Step) -> Self {
        self.path.push(step);
        self
    }
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            return write!(f, "at the top level: {}", self.problem);
        }
        f.write_str("at ")?;
        for (n, step) in self.path.iter().rev().enumerate() {
            match step {
                Step::Index(index) => write!(f, "[{index}]")?,
                Step::Key(key) if n == 0 => f.write_str(crate::observe::shown_key(key))?,
                Step::Key(key) => write!(f, ".{}", crate::observe::shown_key(key))?,
            }
        }
        write!(f, ": {}", self.problem)
    }
}

impl std::error::Error for Mismatch {}

impl de::Error for Mismatch {
    // A custom message may quote the value (a hand-written deserializer's "`{s}` is not a
    // number"): its words are dropped.
    fn custom<T: fmt::Display>(_message: T) -> Self {
        Self::new("not of the documented form".to_owned())
    }

    fn invalid_type(unexpected: Unexpected<'_>, expected: &dyn Expected) -> Self {
        Self::new(format!("expected {expected}, found {}", kind(&unexpected)))
    }

    fn invalid_value(unexpected: Unexpected<'_>, expected: &dyn Expected) -> Self {
        Self::new(format!(
            "expected {expected}, found {} that is not",
            kind(&unexpected)
        ))
    }

    fn invalid_length(len: usize, expected: &dyn Expected) -> Self {
        Self::new(format!("expected {expected}, found {len} elements"))
    }

    fn unknown_variant(_variant: &str, expected: &'static [&'static str]) -> Self {
        Self::new(format!("expected one of {}", expected.join(", ")))
    }

    fn unknown_field(_field: &str, expected: &'static [&'static str]) -> Self {
        Self::new(format!(
            "an unknown field (expected {})",
            expected.join(", ")
        ))
    }

    fn missing_field(field: &'static str) -> Self {
        Self::new(format!("missing field `{field}`"))
    }

    fn duplicate_field(field: &'static str) -> Self {
        Self::new(format!("duplicate field `{field}`"))
    }
}

/// The kind of a value serde met, without the value.
fn kind(unexpected: &Unexpected<'_>) -> &'static str {
    match unexpected {
        Unexpected::Bool(_) => "a boolean",
        Unexpected::Unsigned(_) | Unexpected::Signed(_) => "an integer",
        Unexpected::Float(_) => "a number",
        Unexpected::Char(_) => "a character",
        Unexpected::Str(_) => "a string",
        Unexpected::Bytes(_) => "bytes",
        Unexpected::Unit => "null",
        Unexpected::Option => "an optional value",
        Unexpected::NewtypeStruct => "a newtype",
        Unexpected::Seq => "an array",
        Unexpected::Map => "an object",
        Unexpected::Enum
        | Unexpected::UnitVariant
        | Unexpected::NewtypeVariant
        | Unexpected::TupleVariant
        | Unexpected::StructVariant => "an enum",
        Unexpected::Other(_) => "another kind of value",
    }
}

/// The kind of a JSON value, for serde's `Unexpected`.
fn unexpected(value: &Value) -> Unexpected<'static> {
    match value {
        Value::Null => Unexpected::Unit,
        Value::Bool(_) => Unexpected::Bool(false),
        Value::Number(_) => Unexpected::Float(0.0),
        Value::String(_) => Unexpected::Str(""),
        Value::Array(_) => Unexpected::Seq,
        Value::Object(_) => Unexpected::Map,
    }
}

/// A deserializer of one node of a parsed body, whose errors carry the path to it.
struct At<'a>(&'a Value);

// === impl At ===

impl<'de> Deserializer<'de> for At<'_> {
    type Error = Mismatch;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Mismatch> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Number(n) => match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => visitor.visit_u64(u),
                (None, Some(i)) => visitor.visit_i64(i),
                (None, None) => visitor.visit_f64(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(s) => visitor.visit_str(s),
            Value::Array(items) => visitor.visit_seq(Items(items.iter().enumerate())),
            Value::Object(fields) => visitor.visit_map(Fields {
                fields: fields.iter(),
                pending: None,
            }),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Mismatch> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Mismatch> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Mismatch> {
        if let Value::String(name) = self.0 {
            return visitor.visit_enum(name.as_str().into_deserializer());
        }
        if let Value::Object(fields) = self.0
            && fields.len() == 1
            && let Some((name, value)) = fields.iter().next()
        {
            return visitor.visit_enum(Variant { name, value });
        }
        Err(de::Error::invalid_type(unexpected(self.0), &visitor))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}

/// The elements of an array, each deserialized at its index.
struct Items<'a>(std::iter::Enumerate<std::slice::Iter<'a, Value>>);

impl<'de> SeqAccess<'de> for Items<'_> {
    type Error = Mismatch;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, Mismatch> {
        match self.0.next() {
            Some((index, value)) => seed
                .deserialize(At(value))
                .map(Some)
                .map_err(|e| e.within(Step::Index(index))),
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

/// The entries of an object, each value deserialized at its key.
struct Fields<'a> {
    fields: serde_json::map::Iter<'a>,
    pending: Option<(&'a str, &'a Value)>,
}

impl<'de> MapAccess<'de> for Fields<'_> {
    type Error = Mismatch;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Mismatch> {
        let Some((key, value)) = self.fields.next() else {
            return Ok(None);
        };
        self.pending = Some((key, value));
        let name: de::value::StrDeserializer<'_, Mismatch> = key.as_str().into_deserializer();
        seed.deserialize(name)
            .map(Some)
            .map_err(|e| e.within(Step::Key(key.clone())))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Mismatch> {
        let (key, value) = self
            .pending
            .take()
            .ok_or_else(|| Mismatch::new("a value without its key".to_owned()))?;
        seed.deserialize(At(value))
            .map_err(|e| e.within(Step::Key(key.to_owned())))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.fields.len())
    }
}

/// An externally tagged enum value: an object of one entry, its key the variant.
struct Variant<'a> {
    name: &'a str,
    value: &'a Value,
}

impl<'de, 'a> EnumAccess<'de> for Variant<'a> {
    type Error = Mismatch;
    type Variant = Variant<'a>;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Self::Variant), Mismatch> {
        let name: de::value::StrDeserializer<'_, Mismatch> = self.name.into_deserializer();
        Ok((seed.deserialize(name)?, self))
    }
}

impl<'de> VariantAccess<'de> for Variant<'_> {
    type Error = Mismatch;

    fn unit_variant(self) -> Result<(), Mismatch> {
        match self.value {
            Value::Null => Ok(()),
            other => Err(de::Error::invalid_type(unexpected(other), &"null")),
        }
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, Mismatch> {
        seed.deserialize(At(self.value))
            .map_err(|e| e.within(Step::Key(self.name.to_owned())))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Mismatch> {
        At(self.value)
            .deserialize_seq(visitor)
            .map_err(|e| e.within(Step::Key(self.name.to_owned())))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Mismatch> {
        At(self.value)
            .deserialize_map(visitor)
            .map_err(|e| e.within(Step::Key(self.name.to_owned())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CashInDto, CashInPageDto, CashLocationListDto};

    fn message<T: DeserializeOwned + fmt::Debug>(body: &str) -> String {
        match decode::<T>("GET /x", body.as_bytes()) {
            Err(UpstreamError::BadResponse(message)) => message,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_value_of_the_wrong_type_is_named_by_its_path_and_kinds_never_quoted() {
        let said = message::<CashInDto>(
            r#"{"id":"ci_1","status":"pending","depositInstructions":{"code":483291}}"#,
        );
        assert_eq!(
            said,
            "GET /x: at depositInstructions.code: expected a string, found an integer"
        );
        let said = message::<CashInPageDto>(
            r#"{"data":[{"id":"ci_1","status":"pending"},{"id":"ci_2","status":["x9y8z7"]}]}"#,
        );
        assert_eq!(
            said,
            "GET /x: at data[1].status: expected a string, found an array"
        );
        let said = message::<CashInDto>(r#"{"id":"ci_1","status":"p","metadata":{"483291":7}}"#);
        assert_eq!(
            said,
            "GET /x: at metadata.*: expected a string, found an integer"
        );
        assert!(!said.contains("483291"));
        let said = message::<CashInDto>(r#"{"status":"pending"}"#);
        assert_eq!(said, "GET /x: at the top level: missing field `id`");
    }

    #[test]
    fn custom_messages_and_untagged_shapes_quote_nothing() {
        let said = message::<CashLocationListDto>(
            r#"{"data":[{"id":"loc_1","coordinates":{"latitude":"48x3291"}}]}"#,
        );
        assert!(!said.contains("48x3291"), "{said}");
        assert!(said.starts_with("GET /x: at "), "{said}");
    }

    #[test]
    fn syntax_errors_and_bad_utf8_give_a_position_only() {
        let said = message::<CashInDto>(r#"{"id": "ci_1", "code": 48329x}"#);
        assert!(
            said.starts_with("GET /x: the body is not JSON (line 1,"),
            "{said}"
        );
        assert!(!said.contains("48329"), "{said}");
        let said = message::<CashInDto>(r#"{"id": "ci_1", "code": "4832"#);
        assert!(
            said.starts_with("GET /x: the body ends too early"),
            "{said}"
        );
        let decoded = decode::<serde_json::Value>("GET /x", b"{\"id\": \"ci_\xff\"}");
        assert!(
            matches!(decoded, Err(UpstreamError::BadResponse(m)) if m.starts_with("GET /x: the body is not UTF-8"))
        );
        assert!(message::<Vec<u8>>("{}").contains("expected a sequence, found an object"));
        let ok: serde_json::Value = decode("GET /x", "{\"name\": \"Café\"}".as_bytes()).unwrap();
        assert_eq!(ok["name"], "Café");
    }
}
