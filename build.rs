//! Compiles `proto/` with protox (pure Rust: no protoc on the machine) and keeps the encoded
//! descriptor set, source comments included, in OUT_DIR for server reflection.

use protox::prost::Message;
use std::{env, fs, path::PathBuf};

const PROTOS: &[&str] = &[
    "proto/polygon/oms/v1/cash_in.proto",
    "proto/polygon/oms/v1/cash_location.proto",
    "proto/polygon/oms/v1/sandbox.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    // Source info keeps the proto comments, so `grpcurl describe` shows them.
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("oms_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        // Malformed requests are INVALID_ARGUMENT, not INTERNAL (see src/codec.rs).
        .codec_path("crate::codec::Codec")
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
