//! The generated gRPC types of `proto/polygon/oms/v1` and the descriptor set for reflection.
//!
//! Nothing here is written by hand except the re-exports and the path of grpc.health.v1: the wire
//! contract lives in `proto/`.

/// `polygon.oms.v1`: messages, enums, and the client and server stubs.
pub mod v1 {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("polygon.oms.v1");
    // The servers, generated apart without the methods served by hand (see build.rs).
    include!(concat!(env!("OUT_DIR"), "/polygon.oms.v1.servers.rs"));
}

/// The encoded `FileDescriptorSet` of every proto file of the gateway (with source comments and
/// the imported well-known types), registered with server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/oms_descriptor.bin"));

/// The HTTP/2 path prefix of every grpc.health.v1 call: always open (no caller identity, no
/// policy) and never shed, so the mesh can always ask.
pub const HEALTH_PATH_PREFIX: &str = "/grpc.health.v1.Health/";
