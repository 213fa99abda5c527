//! The mirror, checked against OMS's own OpenAPI schema (`tests/fixtures/oms-openapi.yaml`,
//! API version v26.05.28-0001): the gateway promises a proto that mirrors OMS's `CashIn` and a
//! sandbox that answers as OMS does, and these tests fail when either drifts from the schema.
//!
//! - `proto`: every `CashIn` property (following `$ref`s) has a proto field with that JSON name
//!   and a compatible type, every schema enum value exists in the proto enum, and every proto
//!   field of the mirrored messages is in the schema (or in a short reasoned allow-list). Read
//!   through the descriptor set the gateway serves for reflection.
//! - `sandbox`: every `CashIn` the sandbox renders, in each status and each spelling, validates
//!   against the schema (`schema` holds the loader and a validator for the subset of OpenAPI
//!   the excerpt uses).

mod proto;
mod sandbox;
mod schema;
