//! Server reflection v1 and v1alpha over the gateway's descriptor set, grpc.health.v1's and
//! `google/rpc/status.proto` and `google/rpc/error_details.proto`, so tools list and describe
//! every method, and decode every error's details, with no proto files.

use crate::proto;
use crate::start::StartError;
use prost::Message;
use prost_types::FileDescriptorSet;

/// Server reflection v1 and v1alpha (grpcurl 1.8 speaks only v1alpha; newer tools v1). The
/// health descriptors are registered too, so `grpcurl ... grpc.health.v1.Health/Check` works
/// with no proto files; and the error model's, so grpcurl and `buf curl` print an error's
/// `ErrorInfo`, `BadRequest`, `RetryInfo` and `ResourceInfo` decoded (they resolve each detail's
/// `type.googleapis.com/google.rpc.…` URL through reflection).
pub fn services() -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    StartError,
> {
    let error_model = error_model()?;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_file_descriptor_set(error_model.clone())
    };
    let v1 = reflection()
        .build_v1()
        .map_err(|e| StartError::Reflection(e.to_string()))?;
    let v1alpha = reflection()
        .build_v1alpha()
        .map_err(|e| StartError::Reflection(e.to_string()))?;
    Ok((v1, v1alpha))
}

/// The descriptors of `google.rpc.Status` and the error details, from the crate that encodes
/// them (tonic-types), so what reflection describes is what `error.rs` sends. tonic-types names
/// its two files `status.proto` and `error_details.proto`; they get their googleapis paths
/// (`google/rpc/…`), the names every other descriptor imports them by.
fn error_model() -> Result<FileDescriptorSet, StartError> {
    let mut set = FileDescriptorSet::decode(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .map_err(|e| StartError::Reflection(format!("google.rpc descriptors: {e}")))?;
    for file in &mut set.file {
        if file.package() == "google.rpc" && !file.name().contains('/') {
            file.name = Some(format!("google/rpc/{}", file.name()));
        }
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_model_is_served_under_its_googleapis_paths() {
        let set = error_model().expect("tonic-types' descriptors decode");
        let names: Vec<&str> = set.file.iter().map(|f| f.name()).collect();
        for name in ["google/rpc/status.proto", "google/rpc/error_details.proto"] {
            assert!(names.contains(&name), "{name} in {names:?}");
        }
        let details = set
            .file
            .iter()
            .find(|f| f.name() == "google/rpc/error_details.proto")
            .expect("error_details.proto");
        let messages: Vec<&str> = details.message_type.iter().map(|m| m.name()).collect();
        for message in ["ErrorInfo", "BadRequest", "RetryInfo", "ResourceInfo"] {
            assert!(messages.contains(&message), "{message} in {messages:?}");
        }
    }
}
