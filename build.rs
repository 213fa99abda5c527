//! Compiles `proto/` with protox (pure Rust: no protoc on the machine) and keeps the encoded
//! descriptor set, source comments included, in OUT_DIR for server reflection.
//!
//! Messages and clients are generated from the whole contract. The server traits are generated
//! from the same descriptors with tonic's manual service definition, minus the methods the
//! gateway routes by hand (`ROUTED_BY_HAND`, served from shared encoded bytes by
//! `service::watch_route`), so no trait method exists that no request can reach.

use protox::prost::Message;
use protox::prost_reflect::prost_types::{FileDescriptorProto, FileDescriptorSet};
use std::{env, fs, path::PathBuf};
use tonic_prost_build::manual;

const PROTOS: &[&str] = &[
    "proto/polygon/oms/v1/cash_in.proto",
    "proto/polygon/oms/v1/cash_location.proto",
    "proto/polygon/oms/v1/sandbox.proto",
];

/// Malformed requests are INVALID_ARGUMENT, not INTERNAL (see src/codec.rs).
const CODEC: &str = "crate::codec::Codec";

/// (service, method) pairs left out of the generated server traits: served by hand.
const ROUTED_BY_HAND: &[(&str, &str)] = &[
    ("CashInService", "WatchCashIn"),
    ("CashInService", "WatchCashIns"),
];

/// Where the generated servers of every service go, included by `src/proto.rs`.
const SERVERS_FILE: &str = "polygon.oms.v1.servers.rs";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    // Source info keeps the proto comments, so `grpcurl describe` shows them.
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("oms_descriptor.bin"), fds.encode_to_vec())?;
    let services = servers(&fds);
    tonic_prost_build::configure()
        .codec_path(CODEC)
        .build_client(true)
        .build_server(false)
        .compile_fds(fds)?;
    // The manual builder writes one file per service; they are joined into one to include.
    // Emptied first: a service renamed or removed must not leave its old file to be joined.
    let dir = out.join("servers");
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    fs::create_dir_all(&dir)?;
    manual::Builder::new()
        .build_client(false)
        .build_server(true)
        .out_dir(&dir)
        .compile(&services);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.sort();
    let mut joined = String::new();
    for file in files {
        joined.push_str(&fs::read_to_string(file)?);
    }
    fs::write(out.join(SERVERS_FILE), joined)?;
    Ok(())
}

/// Every service of the contract, as a manual definition for its server: the same names,
/// comments, codec and message types, without the methods in `ROUTED_BY_HAND`.
fn servers(fds: &FileDescriptorSet) -> Vec<manual::Service> {
    let mut services = Vec::new();
    // The imported well-known types define no service.
    for file in &fds.file {
        let package = file.package();
        for (s, service) in file.service.iter().enumerate() {
            let comment = |path: &[i32]| leading_comment(file, path);
            let mut builder = manual::Service::builder()
                .name(service.name())
                .package(package);
            for line in comment(&[6, s as i32]) {
                builder = builder.comment(line);
            }
            for (m, method) in service.method.iter().enumerate() {
                if ROUTED_BY_HAND.contains(&(service.name(), method.name())) {
                    continue;
                }
                assert!(
                    !method.client_streaming() && !method.server_streaming(),
                    "{}: only unary methods are generated; route a streaming one by hand",
                    method.name()
                );
                let mut method_builder = manual::Method::builder()
                    .name(snake_case(method.name()))
                    .route_name(method.name())
                    .input_type(rust_type(method.input_type()))
                    .output_type(rust_type(method.output_type()))
                    .codec_path(CODEC);
                for line in comment(&[6, s as i32, 2, m as i32]) {
                    method_builder = method_builder.comment(line);
                }
                builder = builder.method(method_builder.build());
            }
            services.push(builder.build());
        }
    }
    services
}

/// A message of the package (`.polygon.oms.v1.CashIn`) as the server module names it.
fn rust_type(proto: &str) -> String {
    let name = proto.rsplit('.').next().unwrap_or(proto);
    format!("super::{name}")
}

/// `CreateCashIn` → `create_cash_in`, as prost-build names the generated clients' methods (heck's
/// snake case, so `GetHTTPStatus` is `get_http_status` on both sides).
fn snake_case(name: &str) -> String {
    heck::ToSnakeCase::to_snake_case(name)
}

/// The leading comment of the element at `path` (descriptor.proto's field numbers), a line
/// each, as prost prints them.
fn leading_comment(file: &FileDescriptorProto, path: &[i32]) -> Vec<String> {
    file.source_code_info
        .iter()
        .flat_map(|info| &info.location)
        .find(|location| location.path == path)
        .and_then(|location| location.leading_comments.as_deref())
        .map(|text| {
            text.lines()
                .map(|line| line.strip_prefix(' ').unwrap_or(line).to_owned())
                .collect()
        })
        .unwrap_or_default()
}
