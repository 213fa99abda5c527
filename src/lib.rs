//! oms-gateway: a gRPC gateway in front of the Polygon OMS cash-in REST API.
//!
//! The binary (`src/main.rs`) only parses configuration and starts things. The public surface is
//! what the binary, the benchmark and the black-box tests need: [`config`] (every setting),
//! [`server`] (start and stop a gateway), [`proto`] (the generated contract), [`otlp`] (the
//! binary's optional span export), and, hidden from the docs, [`fuzzing`] (the decoders and validation the property tests drive). Everything else
//! is private, so a test cannot lean on an internal. See `ARCHITECTURE.md` for the module map.

mod access;
mod admin;
mod audit;
mod coalesce;
mod codec;
pub mod config;
mod connect;
mod convert;
mod digest;
mod error;
mod health_port;
mod idempotency;
mod limits;
mod metrics;
mod oms;
pub mod proto;
mod runtime;
mod security;
pub mod server;
mod service;
mod shared;
mod telemetry;
#[cfg(test)]
mod tidy;
mod upstream;
mod validate;
mod watch;
mod webhooks;

pub use telemetry::otlp;

/// What the property-based fuzz tests (`tests/fuzz.rs`) drive directly: the upstream JSON
/// decoders, the REST → proto conversion and request validation. Not an API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::upstream::model::{CashInDto, CashInPageDto, CashLocationListDto};
    pub use crate::validate::Violations;

    /// Caller identities from mesh headers.
    pub mod security {
        pub use crate::config::IdentityHeader;
        pub use crate::security::identity_from_header;
    }

    /// REST → proto conversions.
    pub mod convert {
        pub use crate::convert::{cash_in, cash_location, create_body};
    }

    /// Request validation.
    pub mod validate {
        pub use crate::validate::{create_cash_in, list_cash_locations, parse_decimal};
    }
}
