//! The building blocks every parser here shares: the list of problems found so far, and the
//! walkers that read one member of a JSON object and record what is wrong with it (missing, the
//! wrong JSON type, two spellings that disagree, an amount out of range) instead of stopping.

use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::model::FieldProblem;
use crate::pricing::{self, Cents, DecimalError};

/// Problems found so far.
#[derive(Default)]
pub(super) struct Problems(Vec<FieldProblem>);

impl Problems {
    pub(super) fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldProblem::new(field, message));
    }

    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(super) fn into_error(self) -> ApiError {
        ApiError::validation(self.0)
    }
}

/// The body as a JSON object, or a 400 saying why not.
pub(crate) fn parse_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid_json(
            "the request body must be a JSON object",
        ));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::invalid_json(
            "the request body must be a JSON object",
        )),
        Err(e) => Err(ApiError::invalid_json(format!(
            "the request body is not valid JSON: {e}"
        ))),
    }
}

/// A present, non-null member.
pub(super) fn member<'a>(obj: Option<&'a Map<String, Value>>, key: &str) -> Option<&'a Value> {
    obj?.get(key).filter(|v| !v.is_null())
}

pub(super) fn path(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

/// A required string member; records "is required" or "must be a string".
pub(super) fn required_str<'a>(
    obj: Option<&'a Map<String, Value>>,
    prefix: &str,
    key: &str,
    p: &mut Problems,
) -> Option<&'a str> {
    match member(obj, key) {
        None => {
            p.add(path(prefix, key), "is required");
            None
        }
        Some(v) => string_value(v, &path(prefix, key), p),
    }
}

/// An optional string member.
pub(super) fn optional_str<'a>(
    obj: Option<&'a Map<String, Value>>,
    prefix: &str,
    key: &str,
    p: &mut Problems,
) -> Option<&'a str> {
    member(obj, key).and_then(|v| string_value(v, &path(prefix, key), p))
}

pub(super) fn string_value<'a>(v: &'a Value, field: &str, p: &mut Problems) -> Option<&'a str> {
    match v {
        Value::String(s) => Some(s),
        _ => {
            p.add(field, "must be a string");
            None
        }
    }
}

/// An object member: `Ok(None)` when absent (its required children then report themselves,
/// which names the actual fields), `Err` (already reported) when it is not an object.
pub(super) fn object_member<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    p: &mut Problems,
) -> Result<Option<&'a Map<String, Value>>, ()> {
    match member(Some(obj), key) {
        None => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => {
            p.add(key, "must be an object");
            Err(())
        }
    }
}

/// One of two accepted names for the same field: the value and the name it was sent under.
pub(super) fn aliased<'a>(
    obj: Option<&'a Map<String, Value>>,
    prefix: &str,
    names: [&'static str; 2],
    p: &mut Problems,
) -> Option<(&'a str, String)> {
    let [primary, alias] = names;
    let a = member(obj, primary).map(|v| (v, path(prefix, primary)));
    let b = member(obj, alias).map(|v| (v, path(prefix, alias)));
    match (a, b) {
        (None, None) => {
            p.add(path(prefix, primary), "is required");
            None
        }
        (Some((v, f)), None) | (None, Some((v, f))) => string_value(v, &f, p).map(|s| (s, f)),
        (Some((va, fa)), Some((vb, fb))) => {
            let sa = string_value(va, &fa, p)?;
            let sb = string_value(vb, &fb, p)?;
            if sa == sb {
                Some((sa, fa))
            } else {
                p.add(fa, format!("conflicts with {fb}; send one of them"));
                None
            }
        }
    }
}

pub(super) fn money_problem(e: DecimalError) -> &'static str {
    match e {
        DecimalError::Format => {
            "must be a decimal string with at most 2 fraction digits, e.g. \"200.00\""
        }
        DecimalError::TooLarge => "is too large",
    }
}

/// A cash amount the provider accepts: a decimal string above 0.00 and at most its
/// `max_transaction`, 500.00 (see [`pricing::MAX_AMOUNT`]).
pub(super) fn cash_amount(s: &str, field: &str, p: &mut Problems) -> Option<Cents> {
    match pricing::parse_money(s) {
        Ok(c) if (1..=pricing::MAX_AMOUNT).contains(&c) => Some(c),
        Ok(_) => {
            p.add(
                field,
                format!(
                    "must be more than 0.00 and at most {} (the provider's max_transaction)",
                    pricing::format_cents(pricing::MAX_AMOUNT)
                ),
            );
            None
        }
        Err(e) => {
            p.add(field, money_problem(e));
            None
        }
    }
}

pub(super) fn has_prefix_and_more(s: &str, prefix: &str) -> bool {
    s.len() > prefix.len() && s.starts_with(prefix)
}

pub(super) fn is_evm_address(s: &str) -> bool {
    s.len() == 42
        && s.starts_with("0x")
        && s.get(2..)
            .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
}
