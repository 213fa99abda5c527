//! Request validation: raw JSON bodies and query strings in, validated inputs out, or a 400 that
//! lists every problem found (with the REST field path as the caller spelled it).
//!
//! Bodies are walked as `serde_json::Value` rather than derived into structs because serde stops
//! at the first error, and OMS-style validation reports all of them. A wrong JSON type is a
//! validation problem like any other (400), never a panic or a 422. Unknown fields are ignored.
//! JSON `null` counts as "absent" for optional fields and as "missing" for required ones.
//!
//! `fields` holds the helpers every parser shares; `create` the cash-in create body; `queries`
//! the query strings; `simulate` the deposit simulation and sandbox control bodies.

mod create;
mod fields;
mod queries;
mod simulate;

pub(crate) use create::parse_create;
pub(crate) use fields::parse_object;
pub(crate) use queries::{parse_list_query, parse_locations_query};
pub(crate) use simulate::{
    parse_auth_commit, parse_barcode_auth, parse_delivery_failure, parse_fail,
};

/// The fields a 400 names, in the order it names them: what the tests compare.
#[cfg(test)]
fn problem_fields(e: &crate::error::ApiError) -> Vec<&str> {
    e.details.iter().map(|d| d.field.as_str()).collect()
}
