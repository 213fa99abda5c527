//! oms-gateway: a gRPC gateway in front of the Polygon OMS cash-in REST API.
//!
//! The binary (`src/main.rs`) only parses configuration and starts things; everything a test or
//! an embedding program needs is reachable from here. See `ARCHITECTURE.md` for the module map.

pub mod audit;
pub mod codec;
pub mod config;
pub mod convert;
pub mod error;
pub mod idempotency;
pub mod limits;
pub mod proto;
pub mod security;
pub mod server;
pub mod service;
pub mod upstream;
pub mod validate;
pub mod watch;
